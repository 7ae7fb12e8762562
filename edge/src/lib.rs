//! `wardlink-edge`: the per-ward daemon. Devices publish to its embedded MQTT broker; it
//! validates every reading, runs the alarm rules locally (also with no uplink), keeps every
//! record in a durable outbox, and ships the outbox to the hub over QUIC.
//!
//! ```text
//! gate (sessions decode) ─(readings + tickets)─▶ rules ─(records)─▶ outbox (redb) ─▶ uplink ─QUIC─▶ hub
//!   ▲ PUBACK once durable ◀───────────── ticket fired ◀───────────────┘
//! ```
//!
//! Shutdown order keeps every accepted reading: the gate's sessions stop reading, rules
//! drain their channel into the outbox, the outbox commits what is queued and closes; the
//! uplink closes its connection, and what the hub has not acknowledged stays on disk.

pub mod admin;
pub mod broker;
mod clock;
pub mod config;
pub mod durable;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod paging;
pub mod rules;
pub mod simulate;
mod state_file;
pub mod uplink;
pub mod ward;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::DeviceRegistry;
use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::outbox::Outbox;
use crate::uplink::Uplink;

/// Commands from the hub waiting for the rules task. When full, the uplink's control stream
/// waits (the hub re-sends what is not confirmed, so nothing is lost).
const COMMANDS_QUEUE: usize = 256;

/// A running edge.
pub struct RunningEdge {
    /// Where `/healthz` and `/metrics` are served.
    pub admin_addr: SocketAddr,
    /// The plain MQTT listener (3.1.1 and 5), as bound.
    pub mqtt_addr: SocketAddr,
    /// The second plain listener (`mqtt.listen_v5`), as bound.
    pub mqtt_v5_addr: Option<SocketAddr>,
    /// The MQTT-over-TLS listener, as bound.
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// The ward view's listener, as bound (if configured).
    pub ward_addr: Option<SocketAddr>,
    /// Live metrics.
    pub metrics: Arc<EdgeMetrics>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningEdge {
    /// Asks every task to stop (the outbox is flushed first).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the edge has stopped; an error means it stopped on a failure. Cancel-safe:
    /// may be polled again after another branch of a `select!` won.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.done).await.context("edge supervisor panicked")?
    }
}

/// Starts every subsystem and returns once the edge is ready.
pub async fn start(cfg: EdgeConfig) -> anyhow::Result<RunningEdge> {
    let metrics = Arc::new(EdgeMetrics::new());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    // Patient data, device password hashes and keys live here: the owner's only.
    let data_dir = &cfg.edge.data_dir;
    if wardlink_io::fs::private_dir(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?
    {
        tracing::warn!(dir = %data_dir.display(), "data directory was readable by others; now 0700");
    }
    let (outbox, outbox_thread) = Outbox::open(
        &cfg.outbox_path(),
        cfg.outbox.settings(),
        metrics.outbox.clone(),
    )
    .with_context(|| format!("opening outbox {}", cfg.outbox_path().display()))?;
    wardlink_io::fs::restrict(&cfg.outbox_path(), 0o600)?;
    for (name, addr) in [
        ("mqtt.listen", Some(cfg.mqtt.listen)),
        ("mqtt.listen_v5", cfg.mqtt.listen_v5),
    ] {
        if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
            tracing::warn!(key = name, %addr, "plain MQTT beyond loopback: device passwords cross the network in clear; prefer mqtt.listen_tls");
        }
    }
    let registry = Arc::new(DeviceRegistry::new(
        cfg.devices_path(),
        cfg.mqtt.max_devices,
    ));
    let client = uplink::client_config(&cfg.hub).context("loading the edge's TLS credentials")?;

    let tls = match (&cfg.mqtt.listen_tls, &cfg.mqtt.tls_cert, &cfg.mqtt.tls_key) {
        (Some(_), Some(cert), Some(key)) => {
            Some((cert.as_path(), key.as_path(), cfg.hub.ca_cert.as_path()))
        }
        _ => None,
    };
    let (readings_tx, readings_rx) = mpsc::channel(ingest::QUEUE);
    let broker = broker::start(
        broker::BrokerParts {
            mqtt: &cfg.mqtt,
            tls,
            registry,
            sessions: &cfg.edge.data_dir.join("sessions.json"),
            ingest: readings_tx,
            metrics: metrics.broker.clone(),
            ingest_metrics: metrics.ingest.clone(),
        },
        shutdown.clone(),
    )
    .await
    .context("starting MQTT broker")?;
    let listening = broker.listening;
    let (commands_tx, commands_rx) = mpsc::channel(COMMANDS_QUEUE);
    let (active_tx, active_rx) = tokio::sync::watch::channel(Vec::new());
    let first_seq = u64::try_from(clock::now_ms())
        .unwrap_or(0)
        .saturating_mul(1000);
    let view = ward::Feed::new(cfg.edge.ward.clone(), cfg.ward.history_max, first_seq);
    let keys = ward::Keys::load(cfg.edge.data_dir.join("token_keys.json"));
    let rules = tracker.spawn(rules::run(
        rules::Rules {
            settings: cfg.rules(),
            patient_settings: cfg.edge.data_dir.join("patient_settings.json"),
            edge_id: cfg.edge.id.to_string(),
            outbox: outbox.clone(),
            metrics: metrics.rules.clone(),
            active: active_tx,
            fanout: broker.fanout,
            view: view.clone(),
        },
        readings_rx,
        commands_rx,
    ));
    let uplink = Uplink {
        edge: cfg.edge.id.clone(),
        ward: cfg.edge.ward.clone(),
        hub_addr: cfg.hub.addr.clone(),
        server_name: cfg.hub.server_name.clone(),
        client,
        max_in_flight: cfg.outbox.max_in_flight,
        heartbeat: Duration::from_millis(cfg.hub.heartbeat_ms),
        outbox: outbox.clone(),
        metrics: metrics.uplink.clone(),
        commands: commands_tx.clone(),
        keys: keys.clone(),
    };
    tracker.spawn(uplink.run(shutdown.clone()));

    if let Some(local) = &cfg.local_notify {
        let client = wardlink_io::sms::SmsClient::new(&local.sms)
            .map_err(|e| anyhow::anyhow!("local_notify.sms: {e}"))?;
        tracker.spawn(
            paging::Paging {
                config: local.clone(),
                client,
                edge: cfg.edge.id.clone(),
                ward: cfg.edge.ward.clone(),
                feed: view.clone(),
                uplink: metrics.uplink.connected.clone(),
                outbox: outbox.clone(),
                path: cfg.edge.data_dir.join("local_pages.json"),
                max_high_s: cfg.silence.max_high_s,
                metrics: metrics.paging.clone(),
            }
            .run(shutdown.clone()),
        );
    }

    let ward_addr = match cfg.ward.listen {
        Some(addr) => {
            let (bound, serve) = ward::serve(
                addr,
                ward::WardState {
                    edge: cfg.edge.id.clone(),
                    index: ward::page(&cfg.edge.id, &cfg.edge.ward),
                    feed: view,
                    keys,
                    commands: commands_tx,
                    outbox: outbox.clone(),
                    uplink: metrics.uplink.connected.clone(),
                    metrics: metrics.ward.clone(),
                    allowed_origins: Arc::new(cfg.ward.allowed_origins.clone()),
                    shutdown: shutdown.clone(),
                },
            )
            .await?;
            tracker.spawn(serve);
            Some(bound)
        }
        None => None,
    };

    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("binding admin listener {}", cfg.admin.listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_app = admin::router(admin::AdminState {
        metrics: metrics.clone(),
        active: active_rx,
    });
    let admin_shutdown = shutdown.clone();
    tracker.spawn(async move {
        let serve = axum::serve(
            // Without TCP_NODELAY a client that delays its TCP acknowledgements (browsers,
            // Python clients) sees Nagle's algorithm hold small frames for tens of ms.
            axum::serve::ListenerExt::tap_io(admin_listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            admin_app,
        )
        .with_graceful_shutdown(async move { admin_shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });

    metrics.ready.store(true, Ordering::Release);
    tracing::info!(
        edge = %cfg.edge.id,
        ward = %cfg.edge.ward,
        mqtt = %listening.plain,
        mqtt_tls = ?listening.tls,
        ward = ?ward_addr,
        admin = %admin_addr,
        hub = %cfg.hub.addr,
        "edge ready"
    );

    let supervisor_shutdown = shutdown.clone();
    let mut broker_stopped = broker.stopped;
    let done = tokio::spawn(async move {
        let failure = tokio::select! {
            () = supervisor_shutdown.cancelled() => None,
            _ = &mut broker_stopped => Some(anyhow::anyhow!("MQTT broker stopped")),
        };
        supervisor_shutdown.cancel();
        // Rules end once every session has dropped its sender and the channel is drained.
        let _ = rules.await;
        tracker.close();
        tracker.wait().await;
        // Last handle: the outbox thread commits what is queued, then exits.
        drop(outbox);
        let _ = tokio::task::spawn_blocking(move || outbox_thread.join()).await;
        tracing::info!("edge stopped");
        failure.map_or(Ok(()), Err)
    });
    Ok(RunningEdge {
        admin_addr,
        mqtt_addr: listening.plain,
        mqtt_v5_addr: listening.v5,
        mqtt_tls_addr: listening.tls,
        ward_addr,
        metrics,
        shutdown,
        done,
    })
}
