//! One measured phase: devices publish at a fixed rate over MQTT while receivers (WebSocket
//! dashboards or MQTT subscribers) record what arrives and when.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::mqtt::{self, Login, Publisher};
use super::report::{Latency, Phase};
use super::stats::Watched;
use super::track::{Seen, Tracker, patient_id, patient_index};

/// Connections opened at once while setting up (the edge admits 64 unauthenticated
/// connections per address, and Argon2 checks run two at a time).
const CONNECT_CONCURRENCY: usize = 32;

/// The drain ends when every expected delivery arrived, or nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(5);

/// Readings are told apart by a millisecond stamp, so a patient sends at most one per ms.
const MAX_RATE_HZ: f64 = 1000.0;

/// The first stamp the next phase may use (see [`phase`]).
static NEXT_BASE_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// How a WebSocket dashboard's messages carry a reading.
#[derive(Debug, Clone, Copy)]
pub enum WsFormat {
    /// The hub's `vitals` event: `{"type":"vitals","patient":…,"ts":…}`.
    Wardlink,
    /// Node-RED's whole message: `{"topic":"patients/…/vitals","payload":{"ts":…}}`.
    NodeRed,
}

/// Which WebSocket client a dashboard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsClient {
    /// `tokio-tungstenite`, in this process.
    Tungstenite,
    /// Python's `websockets` in a child process (`tests/bench/ws_receiver.py`, run by
    /// Debian's `/usr/bin/python3`): a client whose TCP stack delays its ACKs as browsers'
    /// and scripts' do, so a server that leaves Nagle's algorithm on cannot hide.
    Python,
}

/// The Python dashboard, run with `python3 -c`.
const PYTHON_RECEIVER: &str = include_str!("../../bench/ws_receiver.py");

/// Debian's interpreter, which has `python3-websockets` (`deploy/bench-peers.sh`).
const PYTHON: &str = "/usr/bin/python3";

/// Who receives the readings.
#[derive(Debug, Clone)]
pub enum Receivers {
    /// `count` WebSocket dashboards, each seeing every patient.
    Ws {
        /// `ws://…`.
        url: String,
        /// Bearer token, if the server wants one.
        token: Option<String>,
        /// Dashboards.
        count: usize,
        /// Message format.
        format: WsFormat,
        /// The client.
        client: WsClient,
    },
    /// One MQTT subscriber per patient, subscribed to its own patient's topic.
    Mqtt {
        /// The broker.
        addr: SocketAddr,
        /// One login per patient.
        logins: Vec<Login>,
    },
}

impl Receivers {
    /// The same dashboards, as `client`.
    pub fn with_client(mut self, new: WsClient) -> Self {
        if let Receivers::Ws { client, .. } = &mut self {
            *client = new;
        }
        self
    }

    fn count(&self) -> usize {
        match self {
            Receivers::Ws { count, .. } => *count,
            Receivers::Mqtt { logins, .. } => logins.len(),
        }
    }
}

/// Offered load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Readings per second per patient.
    pub rate_hz: f64,
    /// Seconds of publishing, warm-up included.
    pub duration: Duration,
    /// Seconds at the start whose latencies are not recorded (loss still counts).
    pub warmup: Duration,
}

/// Connects one publisher per login, `CONNECT_CONCURRENCY` at a time.
pub async fn connect_devices(addr: SocketAddr, logins: &[Login]) -> anyhow::Result<Vec<Publisher>> {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(logins.len());
    for (p, login) in logins.iter().enumerate() {
        let gate = gate.clone();
        let login = login.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let topic = format!("patients/{}/vitals", patient_id(p));
            Publisher::connect(addr, &login, &topic).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Progress on stderr: one line rewritten in place on a terminal, a line every 5 s otherwise.
struct Progress {
    tty: bool,
    label: String,
}

impl Progress {
    fn show(&self, elapsed: f64, total: f64, sent: u64, delivered: u64, receivers: usize) {
        let line = format!(
            "{}: {elapsed:>5.1}/{total:.0} s  sent {sent}  delivered {delivered} ({:.0}/receiver)",
            self.label,
            delivered as f64 / receivers.max(1) as f64
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else if (elapsed as u64).is_multiple_of(5) {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Shared receive counters.
#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    last_ns: AtomicU64,
}

/// Runs one phase and returns its measurements. `publishers` (one per patient, from
/// [`connect_devices`]) are returned for the next phase.
pub async fn phase(
    system: &str,
    path: &str,
    mut publishers: Vec<Publisher>,
    receivers: &Receivers,
    load: Load,
    watched: &[(String, u32)],
) -> anyhow::Result<(Phase, Vec<Publisher>)> {
    let patients = publishers.len();
    if patients == 0 || !(load.rate_hz > 0.0 && load.rate_hz <= MAX_RATE_HZ) {
        anyhow::bail!(
            "a phase needs at least one patient and a rate in (0, {MAX_RATE_HZ}] Hz per patient"
        );
    }
    // Less a hair, so 0.3 Hz × 10 s is 3 readings, not 4.
    let per_patient = (load.rate_hz * load.duration.as_secs_f64() - 1e-6)
        .ceil()
        .max(1.0) as usize;
    let warmup = (load.rate_hz * load.warmup.as_secs_f64()).floor() as usize;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    // Each phase's stamps (base + k ms) start after the previous phase's, so a late reading
    // of one phase is never counted in the next.
    let base_ms = now_ms.max(NEXT_BASE_MS.load(Ordering::Relaxed));
    NEXT_BASE_MS.store(base_ms + per_patient as i64 + 1, Ordering::Relaxed);
    let tracker = Arc::new(Tracker::new(patients, per_patient, warmup, base_ms));
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();

    // Receivers first, each ready before anything is sent.
    let receiver_tasks = start_receivers(receivers, &tracker, &counters, &stop).await?;
    let mut watched: Vec<Watched> = watched
        .iter()
        .map(|(name, pid)| Watched::start(name, *pid))
        .collect();

    let progress = Progress {
        tty: std::io::stderr().is_terminal(),
        label: format!("{system} {path} {patients}x{}Hz", load.rate_hz),
    };
    let period = Duration::from_secs_f64(1.0 / load.rate_hz);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut senders = Vec::with_capacity(patients);
    for (p, mut publisher) in publishers.drain(..).enumerate() {
        let tracker = tracker.clone();
        // Patients spread evenly over one period, as unsynchronised monitors are.
        let offset = period.mul_f64(p as f64 / patients as f64);
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut failed = None;
            for k in 0..tracker.per_patient() {
                let due = tick.tick().await;
                tracker.lagged(due.elapsed());
                let payload = tracker.payload(p, k);
                tracker.mark_sent(p, k);
                let measured = k >= tracker.warmup();
                if let Err(e) = publisher.publish(payload.as_bytes(), measured).await {
                    failed = Some(e);
                    break;
                }
            }
            (publisher, failed)
        }));
    }

    let started = Instant::now();
    let send_start_ns = tracker.now_ns() + 50_000_000;
    let total = load.duration.as_secs_f64();
    let mut every = tokio::time::interval(Duration::from_millis(500));
    let mut ticks = 0u64;
    let deadline = started + load.duration + crate::PATIENCE;
    while !senders.iter().all(|s| s.is_finished()) {
        if Instant::now() > deadline {
            for s in &senders {
                s.abort();
            }
            anyhow::bail!("{system}: the devices could not publish their readings in time");
        }
        every.tick().await;
        ticks += 1;
        for w in &mut watched {
            w.sample();
        }
        if ticks.is_multiple_of(2) {
            progress.show(
                started.elapsed().as_secs_f64(),
                total,
                tracker.sent(),
                counters.delivered.load(Ordering::Relaxed),
                receivers.count(),
            );
        }
    }
    let publishing = started.elapsed().as_secs_f64();
    let mut publishers = Vec::with_capacity(patients);
    for s in senders {
        let (publisher, failed) = s.await?;
        if let Some(e) = failed {
            eprintln!("\na device lost its connection: {e}");
        }
        publishers.push(publisher);
    }

    // The last PUBACKs may still be on their way.
    let acks_due = Instant::now() + DRAIN_QUIET;
    while Instant::now() < acks_due
        && publishers
            .iter()
            .any(|d| d.acked.load(Ordering::Relaxed) < d.published() && !d.is_closed())
    {
        every.tick().await;
    }
    let mut ack_latency = super::track::histogram();
    for d in &publishers {
        d.take_ack_latency(&mut ack_latency);
    }

    // Drain: until every expected delivery arrived or nothing moved for DRAIN_QUIET.
    let expected = match receivers {
        Receivers::Ws { count, .. } => tracker.scheduled() * *count as u64,
        // One subscriber per patient, each expecting its own patient's readings.
        Receivers::Mqtt { .. } => tracker.scheduled(),
    };
    let mut last = (counters.delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = counters.delivered.load(Ordering::Relaxed);
        if now >= expected {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > DRAIN_QUIET {
            break;
        }
        for w in &mut watched {
            w.sample();
        }
        every.tick().await;
    }
    progress.show(
        started.elapsed().as_secs_f64(),
        total,
        tracker.sent(),
        counters.delivered.load(Ordering::Relaxed),
        receivers.count(),
    );
    progress.done();
    stop.cancel();
    let mut delivered = 0;
    let mut duplicated = 0;
    for t in receiver_tasks {
        let seen = t.await?;
        delivered += seen.unique;
        duplicated += seen.duplicated;
    }
    let sent = tracker.sent();
    let first_receiver_span = counters
        .last_ns
        .load(Ordering::Relaxed)
        .saturating_sub(send_start_ns) as f64
        / 1e9;
    let per_receiver = delivered as f64 / receivers.count().max(1) as f64;
    let phase = Phase {
        system: system.to_owned(),
        path: path.to_owned(),
        patients,
        offered_per_s: load.rate_hz * patients as f64,
        receivers: receivers.count(),
        duration_s: publishing,
        scheduled: tracker.scheduled(),
        sent,
        max_send_lag_ms: tracker.max_lag_ms(),
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicated,
        sustained_per_s: match receivers {
            // Every dashboard sees every patient: readings per second reaching one of them.
            Receivers::Ws { .. } if first_receiver_span > 0.0 => per_receiver / first_receiver_span,
            // One subscriber per patient: readings per second reaching all of them.
            _ if first_receiver_span > 0.0 => delivered as f64 / first_receiver_span,
            _ => 0.0,
        },
        latency: Latency::of(&tracker.latency()),
        ack_latency: Latency::of(&ack_latency),
        processes: watched
            .iter_mut()
            .map(|w| w.finish().per_reading(sent))
            .collect(),
    };
    Ok((phase, publishers))
}

/// The hub's `vitals` event, or any other message (which lacks the fields).
#[derive(Deserialize)]
struct HubEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    patient: Option<&'a str>,
    #[serde(borrow)]
    ts: Option<&'a str>,
}

/// Node-RED's websocket-out node sending the whole message.
#[derive(Deserialize)]
struct NodeRedMessage<'a> {
    #[serde(borrow)]
    topic: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<NodeRedPayload<'a>>,
}

#[derive(Deserialize)]
struct NodeRedPayload<'a> {
    #[serde(borrow)]
    ts: Option<&'a str>,
}

/// The patient of a `patients/{id}/vitals` topic.
fn topic_patient(topic: &str) -> Option<&str> {
    topic.strip_prefix("patients/")?.strip_suffix("/vitals")
}

fn on_text(format: WsFormat, text: &str, tracker: &Tracker, seen: &mut Seen, c: &Counters) {
    let reading = match format {
        WsFormat::Wardlink => serde_json::from_str::<HubEvent>(text)
            .ok()
            .filter(|e| e.kind == Some("vitals"))
            .and_then(|e| Some((e.patient?, e.ts?))),
        WsFormat::NodeRed => serde_json::from_str::<NodeRedMessage>(text)
            .ok()
            .and_then(|m| Some((topic_patient(m.topic?)?, m.payload?.ts?))),
    };
    match reading {
        Some((patient, ts)) => record(tracker, seen, c, patient, ts),
        None => seen.other += 1,
    }
}

fn record(tracker: &Tracker, seen: &mut Seen, c: &Counters, patient: &str, ts: &str) {
    let before = seen.unique;
    seen.receive(tracker, patient, ts);
    if seen.unique > before {
        c.delivered.fetch_add(1, Ordering::Relaxed);
        c.last_ns.fetch_max(tracker.now_ns(), Ordering::Relaxed);
    }
}

type ReceiverTask = tokio::task::JoinHandle<Seen>;

async fn start_receivers(
    receivers: &Receivers,
    tracker: &Arc<Tracker>,
    counters: &Arc<Counters>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<ReceiverTask>> {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY * 2));
    let mut pending = Vec::with_capacity(receivers.count());
    match receivers {
        Receivers::Ws {
            url,
            token,
            count,
            format,
            client,
        } => {
            for n in 0..*count {
                let (url, token, format, client) = (url.clone(), token.clone(), *format, *client);
                let (tracker, counters, stop, gate) = (
                    tracker.clone(),
                    counters.clone(),
                    stop.clone(),
                    gate.clone(),
                );
                let (ready_tx, ready) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(async move {
                    let mut seen = Seen::new(&tracker, n);
                    let texts = {
                        let _permit = gate.acquire().await;
                        open_dashboard(client, &url, token.as_deref()).await
                    };
                    let mut texts = match texts {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return seen;
                        }
                    };
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            text = texts.next() => match text {
                                Some(text) => on_text(format, &text, &tracker, &mut seen, &counters),
                                None => break,
                            },
                        }
                    }
                    seen.flush(&tracker);
                    seen
                });
                pending.push((task, ready));
            }
        }
        Receivers::Mqtt { addr, logins } => {
            for (p, login) in logins.iter().enumerate() {
                let (addr, login) = (*addr, login.clone());
                let (tracker, counters, stop, gate) = (
                    tracker.clone(),
                    counters.clone(),
                    stop.clone(),
                    gate.clone(),
                );
                let (ready_tx, ready) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(async move {
                    let mut seen = Seen::new(&tracker, p);
                    let filter = format!("patients/{}/vitals", patient_id(p));
                    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
                    let mut permit = gate.acquire_owned().await.ok();
                    let run = mqtt::subscribe(addr, &login, &filter, sub_tx, |topic, payload| {
                        let reading = std::str::from_utf8(topic)
                            .ok()
                            .and_then(topic_patient)
                            .filter(|id| patient_index(id) == Some(p))
                            .zip(
                                serde_json::from_slice::<NodeRedPayload>(payload)
                                    .ok()
                                    .and_then(|pl| pl.ts),
                            );
                        match reading {
                            Some((patient, ts)) => {
                                record(&tracker, &mut seen, &counters, patient, ts);
                            }
                            None => seen.other += 1,
                        }
                    });
                    let mut ready_tx = Some(ready_tx);
                    let result = {
                        tokio::pin!(run);
                        let mut sub_rx = sub_rx;
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => break Ok(()),
                                r = &mut run => break r,
                                r = &mut sub_rx, if ready_tx.is_some() => {
                                    if r.is_ok() {
                                        permit.take();
                                        if let Some(tx) = ready_tx.take() {
                                            let _ = tx.send(Ok(()));
                                        }
                                    }
                                }
                            }
                        }
                    };
                    if let (Some(tx), Err(e)) = (ready_tx.take(), &result) {
                        let _ = tx.send(Err(anyhow::anyhow!("{e:#}")));
                    }
                    // `run` borrowed `seen` mutably; it is gone now.
                    seen.flush(&tracker);
                    seen
                });
                pending.push((task, ready));
            }
        }
    }
    let mut tasks = Vec::with_capacity(pending.len());
    for (task, ready) in pending {
        ready
            .await
            .context("a receiver ended before it was ready")??;
        tasks.push(task);
    }
    Ok(tasks)
}

/// The text messages a dashboard receives, until its connection ends.
type Texts = std::pin::Pin<Box<dyn futures_util::Stream<Item = String> + Send>>;

/// Connects one dashboard of kind `client`.
async fn open_dashboard(client: WsClient, url: &str, token: Option<&str>) -> anyhow::Result<Texts> {
    Ok(match client {
        WsClient::Tungstenite => {
            let socket = ws_connect(url, token).await?;
            Box::pin(futures_util::stream::unfold(
                socket,
                |mut socket| async move {
                    loop {
                        match socket.next().await? {
                            Ok(Message::Text(t)) => return Some((t.as_str().to_owned(), socket)),
                            Ok(_) => {}
                            Err(_) => return None,
                        }
                    }
                },
            ))
        }
        WsClient::Python => {
            let (child, lines) = python_dashboard(url, token).await?;
            // The child lives as long as the stream; `kill_on_drop` ends it.
            Box::pin(futures_util::stream::unfold(
                (child, lines),
                |(child, mut lines)| async move {
                    let line = lines.next_line().await.ok().flatten()?;
                    Some((line, (child, lines)))
                },
            ))
        }
    })
}

/// Starts one Python dashboard and waits for its "ready" line; returns the child and its
/// remaining output, one received message per line.
async fn python_dashboard(
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<(
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
)> {
    let mut command = tokio::process::Command::new(PYTHON);
    command
        .arg("-c")
        .arg(PYTHON_RECEIVER)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.arg(token);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {PYTHON} (deploy/bench-peers.sh installs it)"))?;
    let stdout = child.stdout.take().context("the receiver's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(crate::PATIENCE, lines.next_line())
        .await
        .context("the Python dashboard did not connect in time")??;
    if first.as_deref() != Some("ready") {
        anyhow::bail!("the Python dashboard failed to connect (is python3-websockets installed?)");
    }
    Ok((child, lines))
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str, token: Option<&str>) -> anyhow::Result<WsStream> {
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (socket, _) = tokio::time::timeout(
        crate::PATIENCE,
        tokio_tungstenite::connect_async_with_config(
            request,
            // 16 KiB read buffers rather than 128 KiB: 10,000 dashboards fit in memory.
            Some(WebSocketConfig::default().read_buffer_size(16 * 1024)),
            true,
        ),
    )
    .await
    .context("WebSocket connect timed out")??;
    Ok(socket)
}
