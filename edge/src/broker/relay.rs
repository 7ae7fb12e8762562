//! A subscribing device's relay to rumqttd, on loopback.
//!
//! Devices that only publish never reach rumqttd: the gate answers them. A device gets a relay
//! when it first subscribes (or reconnects to a stored session with subscriptions). The gate
//! logs in to rumqttd as the device with the per-start secret, without the device's will (the
//! gate publishes wills itself), and from then on relays the device's SUBSCRIBE (re-encoded),
//! UNSUBSCRIBE and acknowledgements of what it receives; rumqttd's packets go back to the
//! device whole, except its CONNACK and PINGRESPs (the gate answers the device's own) and the
//! SUBACK of a subscription the gate restored on the device's behalf.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use wardlink_shared::mqtt::{self as packet, LEVEL_V4};

/// How long rumqttd may take to answer the relay's CONNECT.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Packet id of the SUBSCRIBE that restores a stored session (its SUBACK is not relayed).
const RESTORE_ID: u16 = 1;

/// rumqttd refused or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The connection failed.
    #[error("relay to rumqttd: {0}")]
    Io(#[from] std::io::Error),
    /// No CONNACK, or a write not taken, in time.
    #[error("relay to rumqttd: timed out")]
    Timeout,
    /// rumqttd refused the CONNECT.
    #[error("relay to rumqttd refused (code {0})")]
    Refused(u8),
    /// rumqttd sent something that is not MQTT.
    #[error("relay to rumqttd: {0}")]
    Packet(#[from] packet::PacketError),
}

/// An open relay.
pub struct Relay {
    stream: TcpStream,
    buf: BytesMut,
    /// SUBACKs still to swallow (answers to restored subscriptions).
    swallow: usize,
}

impl Relay {
    /// Logs in to rumqttd at `addr` as `device`, keeping rumqttd's session across connections
    /// when `persistent`.
    pub async fn open(
        addr: SocketAddr,
        level: u8,
        device: &str,
        secret: &[u8],
        persistent: bool,
    ) -> Result<Relay, RelayError> {
        let opening = async {
            let mut stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            stream
                .write_all(&packet::encode_connect(level, device, secret, persistent))
                .await?;
            let mut buf = BytesMut::with_capacity(256);
            loop {
                if let Some(n) = packet::frame(&buf, 1 << 16)? {
                    let connack = buf.split_to(n);
                    let code = if packet::kind(&connack) == packet::CONNACK {
                        connack.get(3).copied().unwrap_or(0xff)
                    } else {
                        0xff
                    };
                    if code != 0 {
                        return Err(RelayError::Refused(code));
                    }
                    return Ok(Relay {
                        stream,
                        buf,
                        swallow: 0,
                    });
                }
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(RelayError::Refused(0xff));
                }
            }
        };
        tokio::time::timeout(OPEN_TIMEOUT, opening)
            .await
            .map_err(|_| RelayError::Timeout)?
    }

    /// Subscribes again to a stored session's `filters` (at QoS 1); the SUBACK is not relayed.
    pub async fn restore(&mut self, level: u8, filters: &[String]) -> Result<(), RelayError> {
        if filters.is_empty() {
            return Ok(());
        }
        let sub = packet::Subscribe {
            id: RESTORE_ID,
            filters: filters.iter().map(String::as_str).collect(),
            options: vec![1; filters.len()],
        };
        self.send(&packet::encode_subscribe(level, &sub)).await?;
        self.swallow += 1;
        Ok(())
    }

    /// Writes packets to rumqttd; a write rumqttd does not take within the gate's write
    /// timeout ends the relay (and its session), so a stalled broker pins nothing.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        tokio::time::timeout(super::gate::WRITE_TIMEOUT, self.stream.write_all(bytes))
            .await
            .map_err(|_| RelayError::Timeout)??;
        Ok(())
    }

    /// The next whole packets from rumqttd for the device (never empty). Cancel-safe.
    pub async fn read(&mut self) -> Result<BytesMut, RelayError> {
        loop {
            let mut out = BytesMut::new();
            while let Some(n) = packet::frame(&self.buf, usize::MAX)? {
                let p = self.buf.split_to(n);
                match packet::kind(&p) {
                    packet::PINGRESP => {}
                    packet::CONNACK => {}
                    0x09 if self.swallow > 0 && packet::packet_id(&p) == Ok(RESTORE_ID) => {
                        self.swallow -= 1;
                    }
                    _ => out.extend_from_slice(&p),
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(RelayError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Makes rumqttd forget `device`'s session and subscriptions: a clean MQTT 3.1.1 login
    /// (`addr` is rumqttd's 3.1.1 listener), then DISCONNECT.
    pub async fn wipe(addr: SocketAddr, device: &str, secret: &[u8]) -> Result<(), RelayError> {
        let mut relay = Relay::open(addr, LEVEL_V4, device, secret, false).await?;
        relay.send(&[0xe0, 0x00]).await?;
        let _ = relay.stream.shutdown().await;
        Ok(())
    }
}
