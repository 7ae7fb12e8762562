//! The end-to-end harness: real hubs, edges, MQTT devices and WebSocket dashboards, started
//! in-process on loopback with ephemeral ports, in temporary directories.
//!
//! Readiness is always awaited on a real signal (a started listener, a received message, a
//! metric reaching a value), never on a sleep. Waits are bounded by [`PATIENCE`] so a broken
//! build fails instead of hanging; the bound is a safety net, not a timing assertion.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wardlink_cloud::config::CloudConfig;
use wardlink_cloud::pki::{self, InitOptions};
use wardlink_cloud::token::{Role, TokenIssuer};
use wardlink_edge::config::EdgeConfig;
use wardlink_shared::{DeviceId, EdgeId, PatientId, WardId};

pub mod bench;
pub mod browser;
pub mod process;
pub mod relay;
pub mod resending;
pub mod sms;

/// Upper bound for any wait in a scenario.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Installs the process-wide crypto provider and a test log subscriber (once).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A free TCP port on loopback, for a process that must be told its port before it starts.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Initialises a hub directory (CA, keys, `cloud.toml` with ephemeral loopback ports) in a new
/// temporary directory, without starting the hub; returns it and the `cloud.toml` path.
pub fn init_hub_dir() -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf)> {
    init();
    let dir = tempfile::tempdir()?;
    let opts = InitOptions {
        http_listen: "127.0.0.1:0".into(),
        quic_listen: "127.0.0.1:0".into(),
        extra_names: vec![],
    };
    let path = pki::init(dir.path(), &opts)?;
    Ok((dir, path))
}

/// `PUT /api/patients/{patient}/settings` with `token`; returns the status and body.
pub async fn put_settings(
    addr: SocketAddr,
    token: &str,
    patient: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let auth = format!("Bearer {token}");
    http_send(
        addr,
        "PUT",
        &format!("/api/patients/{patient}/settings"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

/// A hub running in this process.
pub struct Hub {
    /// The directory `init` created (CA, keys, cloud.toml, data).
    pub dir: tempfile::TempDir,
    /// The loaded configuration.
    pub config: CloudConfig,
    /// The running hub.
    pub running: wardlink_cloud::RunningHub,
}

impl Hub {
    /// Initialises a hub in a new temporary directory and starts it on ephemeral ports.
    pub async fn start() -> anyhow::Result<Hub> {
        Hub::start_with("", &[]).await
    }

    /// Initialises a hub with `extra` appended to its `cloud.toml` (e.g. a `[notify]`
    /// section) and `files` written beside it, and starts it.
    pub async fn start_with(extra: &str, files: &[(&str, &str)]) -> anyhow::Result<Hub> {
        let (dir, path) = init_hub_dir()?;
        let mut text = std::fs::read_to_string(&path)?;
        text.push('\n');
        text.push_str(extra);
        std::fs::write(&path, text)?;
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents)?;
        }
        let config = CloudConfig::load_with_env(&path, &HashMap::new())?;
        Hub::restart(dir, config).await
    }

    /// Starts a hub again from what [`Hub::stop`] returned.
    pub async fn restart(dir: tempfile::TempDir, config: CloudConfig) -> anyhow::Result<Hub> {
        let running = wardlink_cloud::start(config.clone()).await?;
        Ok(Hub {
            dir,
            config,
            running,
        })
    }

    /// Stops the hub cleanly; returns what is needed to start it again.
    pub async fn stop(self) -> (tempfile::TempDir, CloudConfig) {
        let Hub {
            dir,
            mut config,
            running,
        } = self;
        config.hub.http_listen = running.http_addr;
        config.hub.quic_listen = running.quic_addr;
        running.shutdown();
        running.wait().await;
        (dir, config)
    }

    /// Starts a hub again from what [`Hub::stop`] returned.
    pub async fn resume(dir: tempfile::TempDir, config: CloudConfig) -> anyhow::Result<Hub> {
        let running = wardlink_cloud::start(config.clone()).await?;
        Ok(Hub {
            dir,
            config,
            running,
        })
    }

    /// `ws://…/ws` with optional query.
    pub fn ws_url(&self, query: &str) -> String {
        let base = format!("ws://{}/ws", self.running.http_addr);
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// A token signed by this hub's key.
    pub fn token(&self, user: &str, role: Role, wards: &[&str], ttl: Duration) -> String {
        self.token_at(user, role, wards, unix_now(), ttl)
    }

    /// A token issued at `iat` (to make expired ones).
    pub fn token_at(
        &self,
        user: &str,
        role: Role,
        wards: &[&str],
        iat: u64,
        ttl: Duration,
    ) -> String {
        sign_token(&self.config, user, role, wards, iat, ttl)
    }

    /// A nurse token for `ward`, valid for an hour.
    pub fn nurse(&self, ward: &str) -> String {
        self.token("nurse", Role::Nurse, &[ward], Duration::from_secs(3600))
    }

    /// An admin token, valid for an hour.
    pub fn admin(&self) -> String {
        self.token("admin", Role::Admin, &[], Duration::from_secs(3600))
    }

    /// The hub's `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        http_get(self.running.http_addr, "/metrics").await
    }

    /// Enrolls an edge for `ward` and returns its loaded config, on free loopback ports,
    /// with `tweak` applied (e.g. shorter alarm delays).
    pub fn enroll_edge(
        &self,
        edge: &str,
        ward: &str,
        tweak: impl FnOnce(&mut EdgeConfig),
    ) -> anyhow::Result<(tempfile::TempDir, EdgeConfig)> {
        let dir = tempfile::tempdir()?;
        let path = pki::enroll(
            &self.config,
            &EdgeId::new(edge)?,
            &WardId::new(ward)?,
            dir.path(),
        )?;
        let env: HashMap<String, String> = [
            ("WARDLINK_MQTT_LISTEN", "127.0.0.1:0".to_owned()),
            ("WARDLINK_MQTT_TLS_LISTEN", "127.0.0.1:0".into()),
            ("WARDLINK_ADMIN_LISTEN", "127.0.0.1:0".into()),
            ("WARDLINK_HUB_ADDR", self.running.quic_addr.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut cfg = EdgeConfig::load_with_env(&path, &env)?;
        tweak(&mut cfg);
        Ok((dir, cfg))
    }

    /// [`Hub::enroll_edge`] with device `mon-1` registered for patient `bed-01`; returns the
    /// device's password too. For tests that start the edge as a process.
    pub fn enroll_edge_with_monitor(
        &self,
        edge: &str,
        ward: &str,
    ) -> anyhow::Result<(tempfile::TempDir, EdgeConfig, String)> {
        let (dir, cfg) = self.enroll_edge(edge, ward, |_| {})?;
        let password = wardlink_edge::broker::add_device(
            &cfg.devices_path(),
            wardlink_shared::DeviceId::new("mon-1")?,
            wardlink_shared::PatientId::new("bed-01")?,
            cfg.mqtt.max_devices,
        )?;
        Ok((dir, cfg, password))
    }

    /// Enrolls and starts an edge whose uplink goes through a [`relay::Relay`], cut at first:
    /// the edge reaches the hub only once the test sets the relay to pass. The edge sends a
    /// heartbeat every 200 ms and raises a heart-rate alarm at the first sample.
    pub async fn edge_behind_relay(
        &self,
        edge: &str,
        ward: &str,
        tweak: impl FnOnce(&mut EdgeConfig),
    ) -> anyhow::Result<(relay::Relay, Edge)> {
        let relay = relay::Relay::start(self.running.quic_addr).await?;
        relay.set(relay::Mode::Cut);
        let addr = relay.addr.to_string();
        let edge = self
            .edge(edge, ward, |cfg| {
                cfg.hub.addr = addr;
                cfg.hub.heartbeat_ms = 200;
                cfg.alarms.hr.delay_s = 0;
                cfg.alarms.hr.extreme_confirm_s = 0;
                tweak(cfg);
            })
            .await?;
        Ok((relay, edge))
    }

    /// Enrolls and starts an edge.
    pub async fn edge(
        &self,
        edge: &str,
        ward: &str,
        tweak: impl FnOnce(&mut EdgeConfig),
    ) -> anyhow::Result<Edge> {
        let (dir, config) = self.enroll_edge(edge, ward, tweak)?;
        Edge::start(dir, config).await
    }
}

/// A token signed with the key of the hub configured by `config`, issued at `iat`. Panics on a
/// harness fault (unreadable key, invalid ward id in the test), which fails the test that asked.
#[allow(clippy::expect_used)]
pub fn sign_token(
    config: &CloudConfig,
    user: &str,
    role: Role,
    wards: &[&str],
    iat: u64,
    ttl: Duration,
) -> String {
    let issuer = TokenIssuer::for_hub(&config.auth).expect("hub signing key");
    let wards = wards
        .iter()
        .map(|w| WardId::new(*w).expect("ward id"))
        .collect();
    issuer.issue(user, role, wards, iat, ttl).expect("token")
}

/// An edge running in this process.
pub struct Edge {
    /// Its directory (certificates, edge.toml, data).
    pub dir: tempfile::TempDir,
    /// Its configuration.
    pub config: EdgeConfig,
    /// The running edge.
    pub running: wardlink_edge::RunningEdge,
}

impl Edge {
    /// Starts an edge from an enrolled directory and config.
    pub async fn start(dir: tempfile::TempDir, config: EdgeConfig) -> anyhow::Result<Edge> {
        let running = wardlink_edge::start(config.clone()).await?;
        Ok(Edge {
            dir,
            config,
            running,
        })
    }

    /// Registers a device and connects it.
    pub async fn device(&self, device: &str, patient: &str) -> anyhow::Result<Device> {
        let password = self.register(device, patient)?;
        Device::connect(self.running.mqtt_addr, device, &password, patient).await
    }

    /// Registers a device; returns its password.
    pub fn register(&self, device: &str, patient: &str) -> anyhow::Result<String> {
        self.register_with_capacity(device, patient, self.config.mqtt.max_devices)
    }

    /// Registers a device as `device add` would under another `mqtt.max_devices`.
    pub fn register_with_capacity(
        &self,
        device: &str,
        patient: &str,
        capacity: usize,
    ) -> anyhow::Result<String> {
        Ok(wardlink_edge::broker::add_device(
            &self.config.devices_path(),
            DeviceId::new(device)?,
            PatientId::new(patient)?,
            capacity,
        )?)
    }

    /// The edge's `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        http_get(self.running.admin_addr, "/metrics").await
    }

    /// Waits until the uplink is connected.
    pub async fn wait_online(&self) -> anyhow::Result<()> {
        wait_for_metric(|| self.metrics(), "wardlink_edge_uplink_connected", 1).await
    }
}

/// A reading payload with heart rate `hr` stamped `ts` (ms since the epoch): the timestamp
/// identifies the reading at the hub.
pub fn stamped(hr: u32, ts: i64) -> String {
    format!(
        r#"{{"hr":{hr},"ts":"{}"}}"#,
        wardlink_shared::time::format_rfc3339(ts)
    )
}

/// Publishes, without waiting for each PUBACK, `each` readings per device, 10 s apart and ending
/// now, as monitors would have over `each / 360` hours; returns how many.
pub async fn queue_backlog(devices: &mut [Device], each: i64) -> anyhow::Result<i64> {
    let now = i64::try_from(unix_now())? * 1000;
    for i in 0..each {
        let ts = now - each * 10_000 + i * 10_000;
        for device in devices.iter_mut() {
            device.publish_nowait(&stamped(72, ts)).await?;
        }
    }
    Ok(i64::try_from(devices.len())? * each)
}

/// Replays the hub's whole event log (`url` must carry `since=0`) up to its event `last` and
/// counts `patient`'s readings by timestamp: a reading stored twice counts 2.
pub async fn stored_readings(
    url: &str,
    token: &str,
    patient: &str,
    last: i64,
) -> anyhow::Result<std::collections::BTreeMap<i64, usize>> {
    let mut dash = Dashboard::connect(url, token).await?;
    let mut counts = std::collections::BTreeMap::new();
    if last == 0 {
        return Ok(counts);
    }
    loop {
        let v = dash.next().await?;
        if is(&v, "vitals", patient) {
            let ts = v["ts"]
                .as_str()
                .and_then(wardlink_shared::time::parse_rfc3339)
                .with_context(|| format!("vitals without a timestamp: {v}"))?;
            *counts.entry(ts).or_default() += 1;
        }
        if v["seq"].as_i64().is_some_and(|s| s >= last) {
            return Ok(counts);
        }
        // Keep memory flat on long replays.
        dash.seen.clear();
    }
}

/// Fails unless every timestamp of `sent` is in `stored` (from [`stored_readings`]) exactly
/// once.
pub fn exactly_once(
    stored: &std::collections::BTreeMap<i64, usize>,
    sent: impl Iterator<Item = i64>,
) -> anyhow::Result<()> {
    let missing: Vec<i64> = sent.filter(|ts| !stored.contains_key(ts)).collect();
    anyhow::ensure!(missing.is_empty(), "never reached the hub: {missing:?}");
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(twice.is_empty(), "stored more than once: {twice:?}");
    Ok(())
}

/// Polls a metrics endpoint until `name` reaches at least `at_least`.
pub async fn wait_for_metric<F, Fut>(fetch: F, name: &str, at_least: i64) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    wait_for_metric_where(fetch, name, &format!("reach {at_least}"), |v| v >= at_least).await
}

/// Polls `fetch` until the series `name` is exactly `value`.
pub async fn wait_for_metric_eq<F, Fut>(fetch: F, name: &str, value: i64) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    wait_for_metric_where(fetch, name, &format!("become {value}"), |v| v == value).await
}

async fn wait_for_metric_where<F, Fut>(
    fetch: F,
    name: &str,
    what: &str,
    ok: impl Fn(i64) -> bool,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut delay = Duration::from_millis(5);
    loop {
        let text = fetch().await?;
        if metric(&text, name).is_some_and(&ok) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} did not {what}:\n{text}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// The value of the series `name` (with labels, exactly as rendered) in a metrics text.
pub fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A minimal HTTP/1.1 GET; returns the body of a 200, an error otherwise.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, body) = http_request(addr, path, &[]).await?;
    if status != 200 {
        bail!("GET {path}: {status}");
    }
    Ok(body)
}

/// A minimal HTTP/1.1 GET with headers; returns status and body.
pub async fn http_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    http_send(addr, "GET", path, headers, "").await
}

/// A minimal HTTP/1.1 request with a body; returns status and body.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(addr).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A bedside device: a real MQTT client with a persistent session.
pub struct Device {
    client: AsyncClient,
    topic: String,
    acks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    /// Connects as `device` (client id and username) and waits for the CONNACK.
    pub async fn connect(
        broker: SocketAddr,
        device: &str,
        password: &str,
        patient: &str,
    ) -> anyhow::Result<Device> {
        Self::connect_as(broker, device, device, password, patient).await
    }

    /// Connects with a client id and a username that may differ.
    pub async fn connect_as(
        broker: SocketAddr,
        device: &str,
        user: &str,
        password: &str,
        patient: &str,
    ) -> anyhow::Result<Device> {
        let mut opts = MqttOptions::new(device, broker.ip().to_string(), broker.port());
        opts.set_credentials(user, password);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 256);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (conn_tx, mut connected) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = conn_tx.send(Ok(()));
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = conn_tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(PATIENCE, connected.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => bail!("device {device} could not connect: {e}"),
            _ => bail!("device {device}: no CONNACK"),
        }
        Ok(Device {
            client,
            topic: format!("patients/{patient}/vitals"),
            acks,
            task,
        })
    }

    /// Publishes a payload (QoS 1) on the device's patient topic and waits for the PUBACK.
    pub async fn publish(&mut self, payload: &str) -> anyhow::Result<()> {
        self.publish_to(&self.topic.clone(), payload).await
    }

    /// Queues a QoS 1 publish without waiting for its PUBACK.
    pub async fn publish_nowait(&mut self, payload: &str) -> anyhow::Result<()> {
        let queued = self.client.publish(
            &self.topic,
            QoS::AtLeastOnce,
            false,
            payload.as_bytes().to_vec(),
        );
        tokio::time::timeout(PATIENCE, queued)
            .await
            .context("the device's event loop took no publish")??;
        // Keep the PUBACK channel from growing without bound.
        while self.acks.try_recv().is_ok() {}
        Ok(())
    }

    /// Publishes on any topic and waits for the PUBACK.
    pub async fn publish_to(&mut self, topic: &str, payload: &str) -> anyhow::Result<()> {
        let queued =
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec());
        tokio::time::timeout(PATIENCE, queued)
            .await
            .context("the device's event loop took no publish")??;
        tokio::time::timeout(PATIENCE, self.acks.recv())
            .await
            .context("no PUBACK")?
            .context("device disconnected")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a WebSocket, failing (instead of hanging the test) if no answer comes in time.
async fn connect_within(
    request: tungstenite::handshake::client::Request,
) -> Result<
    (
        WebSocketStream<MaybeTlsStream<TcpStream>>,
        tungstenite::handshake::client::Response,
    ),
    tungstenite::Error,
> {
    tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| {
            tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer to the WebSocket upgrade",
            ))
        })?
}

/// A dashboard: a real WebSocket client.
pub struct Dashboard {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every message received so far.
    pub seen: Vec<Value>,
}

impl Dashboard {
    /// Connects with the token in the Authorization header.
    pub async fn connect(url: &str, token: &str) -> Result<Dashboard, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(|_| {
                tungstenite::Error::Url(tungstenite::error::UrlError::UnsupportedUrlScheme)
            })?,
        );
        let (socket, _) = connect_within(request).await?;
        Ok(Dashboard {
            socket,
            seen: Vec::new(),
        })
    }

    /// Connects with a bearer token and extra request headers (e.g. `Origin`).
    pub async fn connect_with(
        url: &str,
        token: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Dashboard, tungstenite::Error> {
        let bad = || tungstenite::Error::Url(tungstenite::error::UrlError::UnsupportedUrlScheme);
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(|_| bad())?,
        );
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, value.parse().map_err(|_| bad())?);
        }
        let (socket, _) = connect_within(request).await?;
        Ok(Dashboard {
            socket,
            seen: Vec::new(),
        })
    }

    /// Sends raw WebSocket messages (text or binary) as fast as the socket takes them.
    pub async fn send_raw(&mut self, message: Message) -> anyhow::Result<()> {
        self.socket.send(message).await?;
        Ok(())
    }

    /// Reads until the server closes; returns its close code (`None`: no close frame).
    pub async fn closed_with(&mut self) -> anyhow::Result<Option<u16>> {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .context("the hub did not close the connection")?;
            match msg {
                Some(Ok(Message::Close(frame))) => return Ok(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }

    /// Connects with `?token=` in the URL (as browsers do).
    pub async fn connect_query(url: &str) -> Result<Dashboard, tungstenite::Error> {
        let (socket, _) = connect_within(url.into_client_request()?).await?;
        Ok(Dashboard {
            socket,
            seen: Vec::new(),
        })
    }

    /// The next JSON message.
    pub async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .context("no message from the hub")?
                .context("hub closed the WebSocket")??;
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    self.seen.push(v.clone());
                    return Ok(v);
                }
                Message::Close(f) => bail!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// Reads until a message matches `pred`; returns it.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            let v = self.next().await?;
            if pred(&v) {
                return Ok(v);
            }
        }
    }

    /// Sends a text message.
    pub async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(PATIENCE, self.socket.close(None)).await;
    }
}

/// The HTTP status of a refused WebSocket upgrade, if it was refused.
pub fn refused_status(result: &Result<Dashboard, tungstenite::Error>) -> Option<u16> {
    match result {
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// True for a message of `kind` about `patient`.
pub fn is(v: &Value, kind: &str, patient: &str) -> bool {
    v["type"] == kind && v["patient"] == patient
}
