//! The uplink: ships the outbox to the hub over QUIC and deletes what the hub acknowledged.
//!
//! States: [`State::Connecting`] → [`State::Online`] → [`State::Waiting`] (backoff) → … Each
//! connection opens a control stream (Hello/Welcome) and one stream per lane. The alarm
//! lane's stream has the higher QUIC priority, so a new alarm overtakes a telemetry backlog.
//! The hub's Welcome says how far it has stored each lane; sending resumes from there, so a
//! reconnect re-sends only what was never acknowledged, and the hub ignores what it has.

mod config;
mod metrics;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use wardlink_io::frames::{FrameIoError, read_frame, write_frame};
use wardlink_shared::wire::{EdgeCommand, ErrorCode, Frame, FrameDecoder, Lane, PROTOCOL_VERSION};
use wardlink_shared::{EdgeId, WardId};

use crate::outbox::{Closed, Outbox, OutboxError};
use crate::rules::CommandRequest;
pub use config::HubSection;
pub use metrics::UplinkMetrics;
pub use tls::{TlsError, client_config};

/// Records per frame.
const BATCH: usize = 256;
/// Connect and handshake must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long a command that could not be applied waits before the next attempt.
const COMMAND_RETRY: Duration = Duration::from_secs(1);

/// A command on its way through the rules task: `true` once applied (and saved).
type Applying = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, Closed>> + Send>>;

/// Why a connection attempt or a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The hub address did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// No UDP socket.
    #[error("udp socket: {0}")]
    Socket(std::io::Error),
    /// QUIC refused to start the connection.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Sending or receiving a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    /// Stream priority could not be set.
    #[error("stream: {0}")]
    Stream(#[from] quinn::ClosedStream),
    /// The hub refused us.
    #[error("hub refused: {code:?}: {message}")]
    Refused {
        /// Reason code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The hub sent something out of protocol.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// Timed out.
    #[error("timed out")]
    Timeout,
    /// The outbox is gone (shutting down).
    #[error(transparent)]
    Closed(#[from] Closed),
    /// The outbox failed to read.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The hub has stored more of this stream than the outbox ever wrote (the outbox was
    /// restored from an older copy); the outbox moved to a new stream.
    #[error(
        "hub holds seq {stored} of lane {lane:?} but the outbox only reached {head}; started a new stream"
    )]
    StreamRewound {
        /// The lane.
        lane: Lane,
        /// What the hub has.
        stored: u64,
        /// What the outbox has written.
        head: u64,
    },
}

/// What the uplink needs.
pub struct Uplink {
    /// Our id (the certificate's CN).
    pub edge: EdgeId,
    /// Our ward.
    pub ward: WardId,
    /// `host:port` of the hub.
    pub hub_addr: String,
    /// Name in the hub's certificate.
    pub server_name: String,
    /// QUIC/TLS client settings.
    pub client: quinn::ClientConfig,
    /// Most unacknowledged records in flight per lane.
    pub max_in_flight: u64,
    /// How often a ping goes up the control stream, so the hub knows the edge is alive.
    pub heartbeat: Duration,
    /// The outbox to drain.
    pub outbox: Outbox,
    /// The uplink's metrics.
    pub metrics: Arc<UplinkMetrics>,
    /// Where the hub's commands go (the rules task).
    pub commands: mpsc::Sender<CommandRequest>,
    /// The hub's token keys, for the ward view (updated from the control stream).
    pub keys: crate::ward::Keys,
}

/// A connection that passed the handshake.
struct Online {
    conn: quinn::Connection,
    /// The hub's stored watermark per lane.
    stored: Vec<(Lane, u64)>,
    /// The control stream.
    control: (quinn::SendStream, quinn::RecvStream),
}

enum State {
    Connecting,
    Online(Online),
    Waiting(Duration),
    Stopped,
}

impl Uplink {
    /// Runs until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut state = State::Connecting;
        let mut failures: u32 = 0;
        loop {
            state = match state {
                State::Connecting => {
                    let attempt = tokio::select! {
                        () = shutdown.cancelled() => break,
                        r = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => r,
                    };
                    match attempt.unwrap_or(Err(UplinkError::Timeout)) {
                        Ok(online) => {
                            failures = 0;
                            tracing::info!(hub = %self.hub_addr, "uplink online");
                            State::Online(online)
                        }
                        Err(e) => {
                            self.metrics.connect_failures.inc();
                            failures = failures.saturating_add(1);
                            tracing::warn!(hub = %self.hub_addr, error = %e, "uplink connect failed");
                            State::Waiting(backoff(failures))
                        }
                    }
                }
                State::Online(online) => {
                    let conn = online.conn.clone();
                    self.metrics.connected.set(1);
                    let result = self.online(online, &shutdown).await;
                    self.metrics.connected.set(0);
                    if shutdown.is_cancelled() {
                        conn.close(0u32.into(), b"edge shutting down");
                        State::Stopped
                    } else {
                        match result {
                            Ok(()) => tracing::warn!("uplink closed"),
                            Err(e) => tracing::warn!(error = %e, "uplink lost"),
                        }
                        conn.close(1u32.into(), b"error");
                        failures = failures.saturating_add(1);
                        State::Waiting(backoff(failures))
                    }
                }
                State::Waiting(delay) => tokio::select! {
                    () = shutdown.cancelled() => State::Stopped,
                    () = tokio::time::sleep(delay) => State::Connecting,
                },
                State::Stopped => break,
            };
        }
    }

    async fn connect(&self) -> Result<Online, UplinkError> {
        let addr: SocketAddr = tokio::net::lookup_host(&self.hub_addr)
            .await
            .map_err(|_| UplinkError::Resolve(self.hub_addr.clone()))?
            .next()
            .ok_or_else(|| UplinkError::Resolve(self.hub_addr.clone()))?;
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(bind).map_err(UplinkError::Socket)?;
        let conn = endpoint
            .connect_with(self.client.clone(), addr, &self.server_name)?
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let stream = self.outbox.heads().borrow().stream;
        write_frame(
            &mut send,
            &Frame::Hello {
                version: PROTOCOL_VERSION,
                edge: self.edge.clone(),
                ward: self.ward.clone(),
                stream,
            },
        )
        .await?;
        let mut dec = FrameDecoder::new();
        match read_frame(&mut recv, &mut dec).await? {
            Some(Frame::Welcome { stored, .. }) => {
                let heads = *self.outbox.heads().borrow();
                for &(lane, seq) in &stored {
                    if seq > heads.of(lane) {
                        // Acknowledging would delete records the hub never got, and the hub
                        // would discard new ones as duplicates: start afresh instead.
                        self.outbox.new_stream().await?;
                        conn.close(0u32.into(), b"new stream");
                        return Err(UplinkError::StreamRewound {
                            lane,
                            stored: seq,
                            head: heads.of(lane),
                        });
                    }
                }
                Ok(Online {
                    conn,
                    stored,
                    control: (send, recv),
                })
            }
            Some(Frame::Error { code, message }) => Err(UplinkError::Refused { code, message }),
            Some(_) => Err(UplinkError::Protocol("expected Welcome")),
            None => Err(UplinkError::Protocol("hub closed the control stream")),
        }
    }

    async fn online(
        &self,
        online: Online,
        shutdown: &CancellationToken,
    ) -> Result<(), UplinkError> {
        let Online {
            conn,
            stored,
            control: (control_send, control_recv),
        } = online;
        let conn = &conn;
        let start = |lane: Lane| {
            stored
                .iter()
                .find(|(l, _)| *l == lane)
                .map_or(0, |(_, s)| *s)
        };
        for lane in Lane::ALL {
            let s = start(lane);
            if s > 0 {
                self.outbox.ack(lane, s);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => Ok(()),
            r = self.control(control_send, control_recv) => r,
            r = self.lane(conn, Lane::Alarms, start(Lane::Alarms)) => r,
            r = self.lane(conn, Lane::Telemetry, start(Lane::Telemetry)) => r,
            e = conn.closed() => Err(e.into()),
        }
    }

    /// Applies the hub's commands (via the rules task) and confirms them; sends a heartbeat
    /// ping every `heartbeat`.
    async fn control(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), UplinkError> {
        let mut dec = FrameDecoder::new();
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nonce = 0u64;
        // Commands received and not yet applied, in order. One that cannot be applied (its
        // settings cannot be saved on a full disk) is retried; the connection, and with it
        // the alarms, carries on meanwhile. Applying runs beside the heartbeat, so a slow
        // rules task never makes the edge look silent.
        let mut queue: std::collections::VecDeque<(u64, EdgeCommand)> = Default::default();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut applying: Option<(u64, Applying)> = None;
        loop {
            if applying.is_none()
                && retry_at.is_none()
                && let Some((seq, command)) = queue.front().cloned()
            {
                // Confirmed only once applied (and saved): the hub re-sends what is not
                // confirmed, and commands are idempotent.
                let commands = self.commands.clone();
                applying = Some((
                    seq,
                    Box::pin(async move {
                        let (applied, done) = oneshot::channel();
                        commands
                            .send(CommandRequest {
                                command,
                                applied,
                                from_ward: false,
                            })
                            .await
                            .map_err(|_| Closed)?;
                        Ok(done.await.unwrap_or(false))
                    }),
                ));
            }
            let apply = async {
                match applying.as_mut() {
                    Some((_, f)) => f.await,
                    None => std::future::pending().await,
                }
            };
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let frame = tokio::select! {
                f = read_frame(&mut recv, &mut dec) => f?,
                _ = beat.tick() => {
                    nonce += 1;
                    write_frame(&mut send, &Frame::Ping { nonce }).await?;
                    continue;
                }
                () = retry => {
                    retry_at = None;
                    continue;
                }
                applied = apply => {
                    let seq = applying.take().map_or(0, |(seq, _)| seq);
                    if applied? {
                        queue.pop_front();
                        write_frame(&mut send, &Frame::CommandAck { seq }).await?;
                    } else {
                        self.metrics.commands_failed.inc();
                        retry_at = Some(tokio::time::Instant::now() + COMMAND_RETRY);
                    }
                    continue;
                }
            };
            match frame {
                Some(Frame::Command { seq, command }) => queue.push_back((seq, command)),
                Some(Frame::Tokens(keys)) => self.keys.update(keys).await,
                Some(Frame::Pong { .. }) => {}
                Some(Frame::Error { code, message }) => {
                    return Err(UplinkError::Refused { code, message });
                }
                Some(_) => {
                    return Err(UplinkError::Protocol(
                        "unexpected frame on the control stream",
                    ));
                }
                None => return Err(UplinkError::Protocol("hub closed the control stream")),
            }
        }
    }

    /// Streams one lane from `start` and applies the hub's acks.
    async fn lane(
        &self,
        conn: &quinn::Connection,
        lane: Lane,
        start: u64,
    ) -> Result<(), UplinkError> {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.set_priority(if lane == Lane::Alarms { 1 } else { 0 })?;
        write_frame(&mut send, &Frame::OpenLane { lane }).await?;
        let (acked_tx, mut acked_rx) = watch::channel(start);
        // (last seq, records) of each frame sent and not yet acknowledged, to count acks in
        // records (seqs jump at gaps).
        let unacked = std::sync::Mutex::new(std::collections::VecDeque::<(u64, u64)>::new());
        let reader = async {
            let mut dec = FrameDecoder::new();
            loop {
                match read_frame(&mut recv, &mut dec).await? {
                    Some(Frame::Ack { seq }) => {
                        let before = *acked_tx.borrow();
                        if seq > before {
                            self.outbox.ack(lane, seq);
                            let mut n = 0;
                            {
                                let mut q = unacked
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                while q.front().is_some_and(|(last, _)| *last <= seq) {
                                    n += q.pop_front().map_or(0, |(_, k)| k);
                                }
                            }
                            self.metrics.acked.with(lane.label()).add(n);
                            acked_tx.send_replace(seq);
                        }
                    }
                    Some(Frame::Error { code, message }) => {
                        return Err(UplinkError::Refused { code, message });
                    }
                    Some(_) => return Err(UplinkError::Protocol("unexpected frame on lane")),
                    None => return Err(UplinkError::Protocol("hub closed the lane")),
                }
            }
        };
        let writer = async {
            let mut cursor = start;
            let mut heads = self.outbox.heads();
            loop {
                // Flow control: at most `max_in_flight` unacknowledged records (counted in
                // records, not seqs: a gap record spans many seqs).
                let window = self.max_in_flight;
                let in_flight = || {
                    unacked
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .iter()
                        .map(|(_, k)| k)
                        .sum::<u64>()
                };
                acked_rx
                    .wait_for(|_| in_flight() < window)
                    .await
                    .map_err(|_| Closed)?;
                heads
                    .wait_for(|h| h.of(lane) > cursor)
                    .await
                    .map_err(|_| Closed)?;
                let records = match self.outbox.read(lane, cursor, BATCH).await {
                    Ok(r) => r,
                    Err(OutboxError::Unavailable) => {
                        // The outbox is reopening its database after a failed commit.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let Some(last) = records.last().map(|r| r.seq) else {
                    // Everything up to the head was acknowledged and deleted meanwhile.
                    cursor = heads.borrow().of(lane);
                    continue;
                };
                let n = records.len() as u64;
                write_frame(&mut send, &Frame::Records { records }).await?;
                unacked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_back((last, n));
                self.metrics.sent.with(lane.label()).add(n);
                cursor = last;
            }
        };
        tokio::select! {
            r = reader => r,
            r = writer => r,
        }
    }
}

/// Exponential backoff with full jitter, so a ward of edges does not reconnect in lockstep
/// after a hub restart.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << failures.min(10));
    let cap = exp.min(BACKOFF_MAX);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 0..40 {
            let d = backoff(failures);
            assert!(d <= BACKOFF_MAX, "{failures}: {d:?}");
            assert!(d >= Duration::from_millis(50), "{failures}: {d:?}");
        }
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }
}
