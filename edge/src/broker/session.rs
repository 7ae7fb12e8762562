//! One device's session, from its CONNACK to its close: the gate answers the device itself.
//!
//! A reading published at QoS 1 or 2 is decoded here and handed to the rules with a durability
//! ticket; its PUBACK (PUBREC) is written only when the ticket fires, in the order the
//! publishes came ("acknowledged means durable"). At most [`MAX_UNACKED`] publishes wait for
//! their acknowledgement: past that the session stops reading the socket, and the device's
//! own in-flight window does the rest. The same happens when the channel to the rules is full,
//! and when the device publishes faster than `mqtt.max_publish_rate`. Nothing is dropped.
//!
//! A session that subscribes gets a [`Relay`] to rumqttd for what it receives; a session that
//! only publishes never touches rumqttd.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wardlink_shared::DeviceId;

use super::gate::{Gate, Rate, send};
use super::policy::{Policy, Topic, Verdict};
use super::relay::{Relay, RelayError};
use super::sessions::{Opened, SessionsError};
use crate::durable::Tickets;
use crate::ingest::{self, Ingested};
use wardlink_shared::mqtt::{self as packet, PacketError, Reply};
use wardlink_shared::payload::Decoded;

/// Publishes of one session waiting for their acknowledgement, at most; also the Receive
/// Maximum announced to MQTT 5 devices. The rules' dedupe window (`outbox::DEDUPE_WINDOW`)
/// holds four sessions' worth.
pub const MAX_UNACKED: usize = 64;
/// How often the gate pings rumqttd on a relay (half its keep alive).
const RELAY_PING: Duration = Duration::from_secs(packet::RELAY_KEEP_ALIVE_S as u64 / 2);

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// The device closed the connection (or a write to it failed).
    Closed,
    /// The device sent DISCONNECT.
    Disconnected,
    /// Taken over by a new connection of the device, the device rebound, or the edge stopping.
    Kicked,
    /// The device published outside its patient's topics.
    Denied,
    /// A malformed or unexpected packet.
    Malformed(PacketError),
    /// Nothing heard for one and a half keep-alive periods.
    KeepAlive,
    /// A reading was lost before it became durable: closing without acknowledging makes the
    /// device send it again.
    Lost,
    /// The relay to rumqttd failed.
    Relay(RelayError),
    /// The device's stored session could not be written.
    Sessions(SessionsError),
    /// The rules are gone (the edge is stopping).
    Pipeline,
}

impl From<PacketError> for End {
    fn from(e: PacketError) -> Self {
        End::Malformed(e)
    }
}

impl From<RelayError> for End {
    fn from(e: RelayError) -> Self {
        End::Relay(e)
    }
}

/// A publish waiting for its acknowledgement.
#[derive(Debug)]
struct Unacked {
    id: u16,
    reply: Reply,
    /// Acknowledged once tickets up to this number fired.
    ticket: u64,
    refused: bool,
}

/// One device's session.
pub struct Session<'g> {
    gate: &'g Gate,
    device: DeviceId,
    id: u64,
    level: u8,
    persistent: bool,
    policy: Policy,
    tickets: Tickets,
    unacked: VecDeque<Unacked>,
    /// Bytes waiting to be written to the device.
    out: Vec<u8>,
    relay: Option<Relay>,
    /// The will (topic, payload), published for local subscribers unless the device
    /// disconnects cleanly.
    will: Option<(Bytes, Bytes)>,
    /// `patients/{own}/vitals` and `…/status`.
    topics: [Bytes; 2],
    /// Silence after which the device is taken for gone: 1.5 keep-alive periods (none for a
    /// keep alive of 0).
    idle: Option<Duration>,
    ingest: mpsc::Sender<Ingested>,
}

impl<'g> Session<'g> {
    /// A session of `device`, accepted with `connect`.
    pub fn new(
        gate: &'g Gate,
        device: DeviceId,
        connect: &packet::Connect,
        policy: Policy,
        opened: &Opened,
        ingest: mpsc::Sender<Ingested>,
    ) -> Self {
        let patient = policy.patient().as_str();
        let topics = ["vitals", "status"].map(|t| Bytes::from(format!("patients/{patient}/{t}")));
        let will = connect.will_topic.as_ref().map(|t| {
            (
                Bytes::from(t.clone()),
                Bytes::from(connect.will_payload.clone()),
            )
        });
        Self {
            gate,
            device,
            id: opened.id,
            level: connect.level,
            persistent: connect.persistent(),
            policy,
            tickets: Tickets::new(),
            unacked: VecDeque::new(),
            out: Vec::with_capacity(256),
            relay: None,
            will,
            topics,
            idle: (connect.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
            ingest,
        }
    }

    /// Restores what a stored session subscribed to, or makes rumqttd forget what an ended
    /// one did.
    pub async fn resume(&mut self, opened: &Opened) -> Result<(), End> {
        if !opened.filters.is_empty() {
            self.relay().await?;
            if let Some(relay) = self.relay.as_mut() {
                relay.restore(self.level, &opened.filters).await?;
            }
        } else if opened.wipe {
            let inner = self.gate.inner();
            Relay::wipe(inner.v4, self.device.as_str(), inner.secret.as_bytes()).await?;
        }
        Ok(())
    }

    /// Runs until the connection ends; `buf` holds what was read after the CONNECT.
    pub async fn run<S>(
        mut self,
        client: S,
        mut buf: BytesMut,
        kick: &CancellationToken,
        rate: Rate,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut rd, mut wr) = tokio::io::split(client);
        let end = self.serve(&mut rd, &mut wr, &mut buf, kick, rate).await;
        // What was answered before the end still goes out (a DISCONNECT 0x87, acknowledgements).
        self.collect_acks();
        if !self.out.is_empty() {
            let _ = send(&mut wr, &self.out).await;
        }
        if !matches!(end, End::Disconnected)
            && let Some((topic, payload)) = self.will.take()
            && self.gate.fanout().wanted()
        {
            self.gate.fanout().offer(topic, payload);
        }
        if let Some(relay) = self.relay.as_mut() {
            // A clean end for rumqttd (a persistent session stays kept there).
            let _ = relay.send(&[0xe0, 0x00]).await;
        }
        self.gate.sessions().closed(&self.device, self.id);
        let _ = tokio::time::timeout(
            super::gate::WRITE_TIMEOUT,
            tokio::io::AsyncWriteExt::shutdown(&mut wr),
        )
        .await;
        end
    }

    async fn serve<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        buf: &mut BytesMut,
        kick: &CancellationToken,
        rate: Rate,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut bucket = Bucket::new(rate);
        let mut ping = tokio::time::interval(RELAY_PING);
        let mut heard = Instant::now();
        loop {
            let mut publishes = 0;
            while self.unacked.len() < MAX_UNACKED {
                let n = match packet::frame(buf, self.gate.max_packet()) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return End::Malformed(e),
                };
                let p = buf.split_to(n).freeze();
                if packet::kind(&p) == packet::PUBLISH {
                    publishes += 1;
                }
                if let Err(end) = self.handle(p, kick).await {
                    return end;
                }
            }
            self.collect_acks();
            if self.tickets.lost() {
                return End::Lost;
            }
            if !self.out.is_empty() {
                if !send(wr, &self.out).await {
                    return End::Closed;
                }
                self.out.clear();
            }
            bucket.take(publishes);
            let pause = bucket.wait();
            if pause.is_some() {
                self.gate.metrics().throttled.inc();
            }
            let reading = self.unacked.len() < MAX_UNACKED && pause.is_none();
            if !reading {
                // Keep alive runs only while the socket is read.
                heard = Instant::now();
            }
            let deadline = self.idle.map(|d| heard + d);
            tokio::select! {
                () = kick.cancelled() => return End::Kicked,
                () = self.tickets.changed(), if !self.unacked.is_empty() => {}
                r = rd.read_buf(buf), if reading => match r {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(_) => heard = Instant::now(),
                },
                () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
                r = read_relay(&mut self.relay) => match r {
                    Ok(bytes) => self.out.extend_from_slice(&bytes),
                    Err(e) => return End::Relay(e),
                },
                _ = ping.tick(), if self.relay.is_some() => {
                    if let Some(relay) = self.relay.as_mut()
                        && let Err(e) = relay.send(&packet::PINGREQ_PACKET).await
                    {
                        return End::Relay(e);
                    }
                }
                () = sleep_until(deadline), if reading && deadline.is_some() => return End::KeepAlive,
            }
        }
    }

    /// One packet from the device.
    async fn handle(&mut self, p: Bytes, kick: &CancellationToken) -> Result<(), End> {
        match packet::kind(&p) {
            packet::PUBLISH => self.publish(&p, kick).await,
            packet::PUBREL => {
                // The reading was acknowledged with PUBREC once durable; nothing is pending.
                let id = packet::packet_id(&p)?;
                self.out.extend_from_slice(&packet::pubcomp(id));
                Ok(())
            }
            packet::PINGREQ => {
                self.out.extend_from_slice(&packet::PINGRESP_PACKET);
                Ok(())
            }
            packet::SUBSCRIBE => self.subscribe(&p).await,
            packet::UNSUBSCRIBE => {
                self.relay().await?;
                self.relay_send(&p).await
            }
            // Acknowledgements of what rumqttd delivered.
            packet::PUBACK | packet::PUBREC | packet::PUBCOMP => {
                if self.relay.is_some() {
                    self.relay_send(&p).await?;
                }
                Ok(())
            }
            packet::DISCONNECT => {
                // MQTT 5 reason 0x04: disconnect, but publish the will.
                if self.level != packet::LEVEL_V5 || p.get(2) != Some(&0x04) {
                    self.will = None;
                }
                Err(End::Disconnected)
            }
            packet::CONNECT => Err(End::Malformed(PacketError::Unexpected("second CONNECT"))),
            _ => Err(End::Malformed(PacketError::Unexpected(
                "packet type from a client",
            ))),
        }
    }

    async fn publish(&mut self, p: &Bytes, kick: &CancellationToken) -> Result<(), End> {
        let publish = packet::parse_publish(p, self.level)?;
        let topic = match self.policy.publish(&publish)? {
            Verdict::Publish(t) => t,
            _ => {
                self.gate.metrics().denied.with("publish").inc();
                tracing::warn!(device = %self.device, "device published outside its patient's topics; connection closed");
                self.out
                    .extend_from_slice(&packet::disconnect_not_authorized(self.level));
                return Err(End::Denied);
            }
        };
        let reply = match publish.qos {
            0 => None,
            1 => Some(Reply::Ack),
            _ => Some(Reply::Received),
        };
        let payload = p.slice_ref(publish.payload);
        let (id, mut refused) = (publish.id, false);
        match topic {
            Topic::Vitals => {
                let vitals = &self.topics[0];
                let name = std::str::from_utf8(vitals).unwrap_or_default();
                match ingest::decode(
                    name,
                    &payload,
                    self.gate.max_age(),
                    self.gate.ingest_metrics(),
                ) {
                    Ok(Decoded {
                        reading,
                        stamped,
                        quality,
                    }) => {
                        let fanout = self
                            .gate
                            .fanout()
                            .wanted()
                            .then(|| (vitals.clone(), payload));
                        let ingested = Ingested {
                            reading,
                            stamped,
                            quality,
                            ticket: reply.map(|_| self.tickets.issue()),
                            fanout,
                        };
                        tokio::select! {
                            r = self.ingest.send(ingested) => r.map_err(|_| End::Pipeline)?,
                            () = kick.cancelled() => return Err(End::Kicked),
                        }
                    }
                    Err(_) => refused = true,
                }
            }
            Topic::Status => {
                if self.gate.fanout().wanted() {
                    self.gate.fanout().offer(self.topics[1].clone(), payload);
                }
            }
        }
        if let Some(reply) = reply {
            self.unacked.push_back(Unacked {
                id,
                reply,
                ticket: self.tickets.issued(),
                refused,
            });
        }
        Ok(())
    }

    async fn subscribe(&mut self, p: &Bytes) -> Result<(), End> {
        let sub = packet::parse_subscribe(p, self.level)?;
        if self.policy.subscribe(&sub) == Verdict::RefuseSubscribe {
            self.gate.metrics().denied.with("subscribe").inc();
            tracing::warn!(device = %self.device, "subscription outside the device's patient refused");
            self.out.extend_from_slice(&packet::suback_refused(
                self.level,
                sub.id,
                sub.filters.len(),
            ));
            return Ok(());
        }
        self.relay().await?;
        // Re-encoded without properties: rumqttd 0.20 miscounts subscription identifiers, and
        // what it reads must be what the gate checked.
        self.relay_send(&packet::encode_subscribe(self.level, &sub))
            .await?;
        self.gate
            .sessions()
            .subscribed(&self.device, self.id, &sub.filters)
            .await
            .map_err(End::Sessions)
    }

    /// Opens the relay to rumqttd if it is not open yet.
    async fn relay(&mut self) -> Result<(), End> {
        if self.relay.is_none() {
            let inner = self.gate.inner();
            let addr = if self.level == packet::LEVEL_V5 {
                inner.v5
            } else {
                inner.v4
            };
            let relay = Relay::open(
                addr,
                self.level,
                self.device.as_str(),
                inner.secret.as_bytes(),
                self.persistent,
            )
            .await?;
            self.relay = Some(relay);
        }
        Ok(())
    }

    async fn relay_send(&mut self, bytes: &[u8]) -> Result<(), End> {
        match self.relay.as_mut() {
            Some(relay) => Ok(relay.send(bytes).await?),
            None => Ok(()),
        }
    }

    /// Moves the acknowledgements now due (in order) to the output.
    fn collect_acks(&mut self) {
        let durable = self.tickets.durable();
        while self.unacked.front().is_some_and(|u| u.ticket <= durable) {
            if let Some(u) = self.unacked.pop_front() {
                packet::publish_reply(self.level, u.reply, u.id, u.refused, &mut self.out);
            }
        }
    }
}

async fn read_relay(relay: &mut Option<Relay>) -> Result<BytesMut, RelayError> {
    match relay {
        Some(r) => r.read().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A token bucket: a device over its rate is not refused but slowed down, by not reading
/// from its socket until the bucket refills (TCP backpressure), so one device's flood cannot
/// crowd out the others' readings.
struct Bucket {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        Self {
            tokens: f64::from(rate.burst.max(1)),
            at: Instant::now(),
            rate,
        }
    }

    fn take(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * f64::from(self.rate.per_s);
        self.tokens = (self.tokens + refill).min(f64::from(self.rate.burst.max(1)));
        self.at = now;
        self.tokens -= f64::from(n);
    }

    /// How long to stop reading, if the bucket is overdrawn.
    fn wait(&self) -> Option<Duration> {
        if self.tokens >= 0.0 || self.rate.per_s == 0 {
            return None;
        }
        let owed = Duration::from_secs_f64(-self.tokens / f64::from(self.rate.per_s));
        let elapsed = self.at.elapsed();
        (owed > elapsed).then(|| owed - elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_paces_to_the_rate() {
        let mut b = Bucket::new(Rate {
            per_s: 10,
            burst: 5,
        });
        b.take(5);
        assert_eq!(b.wait(), None, "the burst is free");
        b.take(5);
        let pause = b.wait().unwrap_or_default();
        // Five over the budget at 10/s: about half a second (less the instant that passed).
        assert!(
            pause > Duration::from_millis(450) && pause <= Duration::from_millis(500),
            "{pause:?}"
        );
    }
}
