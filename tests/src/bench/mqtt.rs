//! A lean MQTT 3.1.1 client for load generation: one TCP connection, packets written straight
//! to the socket (no client-side queue to add latency), QoS 1 publishes whose PUBACKs are
//! counted by a reader task, and subscribers that hand each delivery to a callback.
//!
//! It speaks only what a monitor needs (CONNECT, PUBLISH, PUBACK, SUBSCRIBE, PINGREQ), so the
//! same code drives the edge's broker and Mosquitto: the load is identical on both.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::PATIENCE;

/// Keep-alive announced at CONNECT: the largest MQTT allows (18 h), so a device idle while a
/// scenario sets up is not dropped (rumqttd refuses 0, "no keep-alive").
pub const KEEP_ALIVE_S: u16 = u16::MAX;

/// What a device needs to log in.
#[derive(Debug, Clone)]
pub struct Login {
    /// Client id (and username when `password` is set).
    pub client_id: String,
    /// Password; `None` connects anonymously.
    pub password: Option<String>,
}

fn put_len(buf: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if len == 0 {
            return;
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

/// Reads one packet: (first byte, body). Bodies larger than 1 MiB are refused.
async fn read_packet<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
) -> std::io::Result<u8> {
    let first = r.read_u8().await?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = r.read_u8().await?;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(std::io::Error::other("malformed remaining length"));
        }
    }
    if len > 1 << 20 {
        return Err(std::io::Error::other("packet too large"));
    }
    body.resize(len, 0);
    r.read_exact(body).await?;
    Ok(first)
}

/// Opens a connection and completes CONNECT/CONNACK.
async fn connect(addr: SocketAddr, login: &Login) -> anyhow::Result<TcpStream> {
    let mut stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, b"MQTT");
    body.push(4);
    // Clean session: the bench measures live delivery, not session resumption.
    let mut flags = 0x02;
    if login.password.is_some() {
        flags |= 0xc0;
    }
    body.push(flags);
    body.extend_from_slice(&KEEP_ALIVE_S.to_be_bytes());
    put_str(&mut body, login.client_id.as_bytes());
    if let Some(password) = &login.password {
        put_str(&mut body, login.client_id.as_bytes());
        put_str(&mut body, password.as_bytes());
    }
    let mut packet = vec![0x10];
    put_len(&mut packet, body.len());
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await?;
    let mut reply = Vec::new();
    let first = tokio::time::timeout(PATIENCE, read_packet(&mut stream, &mut reply))
        .await
        .with_context(|| format!("{}: no CONNACK", login.client_id))?
        .with_context(|| format!("{}: connection closed before CONNACK", login.client_id))?;
    if first != 0x20 || reply.len() != 2 {
        bail!("{}: expected CONNACK, got {first:#04x}", login.client_id);
    }
    if reply[1] != 0 {
        bail!(
            "{}: CONNACK refused with code {}",
            login.client_id,
            reply[1]
        );
    }
    Ok(stream)
}

/// Publish → PUBACK times of one device.
///
/// Brokers acknowledge QoS 1 publishes in the order they came (MQTT 3.1.1 §4.6), so the
/// sends waiting for their PUBACK form a queue and each PUBACK answers its front.
struct AckClock {
    /// (packet id, sent at, measured) of every publish not yet acknowledged.
    waiting: Mutex<VecDeque<(u16, Instant, bool)>>,
    /// Publish → PUBACK, nanoseconds, for measured publishes.
    latency: Mutex<Histogram<u64>>,
}

impl AckClock {
    fn new() -> Self {
        Self {
            waiting: Mutex::new(VecDeque::with_capacity(64)),
            latency: Mutex::new(super::track::histogram()),
        }
    }

    fn sent(&self, id: u16, measured: bool) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((id, Instant::now(), measured));
    }

    /// A PUBACK for `id`: times it if it answers the oldest waiting publish. An id not at the
    /// front (a broker answering out of order) drops the entries before it untimed.
    fn acked(&self, id: u16) {
        let now = Instant::now();
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((front, at, measured)) = waiting.pop_front() {
            if front == id {
                if measured {
                    let ns = u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX);
                    self.latency
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .saturating_record(ns.max(1));
                }
                return;
            }
        }
    }
}

/// A publishing device.
pub struct Publisher {
    writer: OwnedWriteHalf,
    topic: Vec<u8>,
    packet: Vec<u8>,
    next_id: u16,
    published: u64,
    /// PUBACKs received.
    pub acked: Arc<AtomicU64>,
    /// Set when the broker closed the connection.
    pub closed: Arc<AtomicBool>,
    clock: Arc<AckClock>,
    reader: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects and starts counting PUBACKs.
    pub async fn connect(addr: SocketAddr, login: &Login, topic: &str) -> anyhow::Result<Self> {
        let stream = connect(addr, login).await?;
        let (read, writer) = stream.into_split();
        let acked = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let clock = Arc::new(AckClock::new());
        let reader = tokio::spawn(count_acks(
            read,
            acked.clone(),
            closed.clone(),
            clock.clone(),
        ));
        Ok(Self {
            writer,
            topic: topic.as_bytes().to_vec(),
            packet: Vec::with_capacity(256),
            next_id: 0,
            published: 0,
            acked,
            closed,
            clock,
            reader,
        })
    }

    /// Publishes written so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Whether the broker closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Moves the publish → PUBACK times recorded so far into `into` (nanoseconds; made by
    /// [`super::track::histogram`]).
    pub fn take_ack_latency(&self, into: &mut Histogram<u64>) {
        let mut mine = self
            .clock
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = into.add(&*mine);
        mine.reset();
    }

    /// Writes one QoS 1 PUBLISH to the socket; `measured` times its PUBACK.
    pub async fn publish(&mut self, payload: &[u8], measured: bool) -> std::io::Result<()> {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.packet.clear();
        self.packet.push(0x32);
        put_len(&mut self.packet, 2 + self.topic.len() + 2 + payload.len());
        put_str(&mut self.packet, &self.topic);
        self.packet.extend_from_slice(&self.next_id.to_be_bytes());
        self.packet.extend_from_slice(payload);
        self.clock.sent(self.next_id, measured);
        self.published += 1;
        match tokio::time::timeout(PATIENCE, self.writer.write_all(&self.packet)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the broker stopped reading",
            )),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn count_acks(
    read: OwnedReadHalf,
    acked: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    clock: Arc<AckClock>,
) {
    let mut read = BufReader::new(read);
    let mut body = Vec::new();
    while let Ok(first) = read_packet(&mut read, &mut body).await {
        if first & 0xf0 == 0x40 {
            if let Some(&[hi, lo]) = body.get(..2) {
                clock.acked(u16::from_be_bytes([hi, lo]));
            }
            acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    closed.store(true, Ordering::Relaxed);
}

/// Subscribes `login` to `filter` at QoS 1 and calls `deliver(topic, payload)` for every
/// PUBLISH received, acknowledging each; returns when the connection ends. The SUBACK must
/// grant the subscription.
pub async fn subscribe(
    addr: SocketAddr,
    login: &Login,
    filter: &str,
    ready: tokio::sync::oneshot::Sender<()>,
    mut deliver: impl FnMut(&[u8], &[u8]),
) -> anyhow::Result<()> {
    let stream = connect(addr, login).await?;
    let (read, mut writer) = stream.into_split();
    let mut body = Vec::with_capacity(16 + filter.len());
    body.extend_from_slice(&1u16.to_be_bytes());
    put_str(&mut body, filter.as_bytes());
    body.push(1);
    let mut packet = vec![0x82];
    put_len(&mut packet, body.len());
    packet.extend_from_slice(&body);
    writer.write_all(&packet).await?;
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let mut body = Vec::new();
    let mut ready = Some(ready);
    loop {
        let first = if ready.is_some() {
            tokio::time::timeout(PATIENCE, read_packet(&mut read, &mut body))
                .await
                .with_context(|| format!("{}: no SUBACK", login.client_id))??
        } else {
            read_packet(&mut read, &mut body).await?
        };
        match first & 0xf0 {
            0x90 => {
                if body.get(2).is_none_or(|&code| code & 0x80 != 0) {
                    bail!("{}: subscription to {filter} refused", login.client_id);
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            0x30 => {
                let qos = (first >> 1) & 0x03;
                let Some(topic_len) = body
                    .get(..2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                else {
                    bail!("truncated PUBLISH");
                };
                let mut at = 2 + topic_len;
                let topic = body.get(2..at).context("truncated PUBLISH topic")?;
                let mut id = None;
                if qos > 0 {
                    id = body.get(at..at + 2).map(|b| [b[0], b[1]]);
                    at += 2;
                }
                let payload = body.get(at..).context("truncated PUBLISH payload")?;
                deliver(topic, payload);
                if let Some([hi, lo]) = id {
                    writer.write_all(&[0x40, 2, hi, lo]).await?;
                }
            }
            _ => {}
        }
    }
}
