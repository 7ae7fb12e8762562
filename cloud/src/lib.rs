//! `wardlink-cloud`: the hub. Accepts ward edges over QUIC with mutual TLS, stores their
//! records exactly once, and pushes them live to dashboards over WebSocket.
//!
//! ```text
//! edges ─QUIC─▶ ingress ─▶ store (redb, one writer) ─▶ bus ─▶ /ws sessions
//!                                  ▲                           │ replay (?since=)
//!                                  └───────────────────────────┘
//! ```

pub mod api;
pub mod audit;
pub mod bus;
pub mod config;
pub mod ingress;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod revocation;
pub mod store;
pub mod token;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::CloudConfig;
use crate::metrics::HubMetrics;
use crate::store::Store;

/// A running hub.
pub struct RunningHub {
    /// HTTP: `/ws`, `/healthz`, `/metrics`.
    pub http_addr: SocketAddr,
    /// QUIC (UDP) for edges.
    pub quic_addr: SocketAddr,
    /// Live metrics.
    pub metrics: Arc<HubMetrics>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl RunningHub {
    /// Asks every task to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the hub has stopped and its store is closed.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Starts the hub and returns once it is ready.
pub async fn start(cfg: CloudConfig) -> anyhow::Result<RunningHub> {
    let metrics = Arc::new(HubMetrics::new());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let bus = Bus::new(cfg.hub.bus_capacity);
    let pseudonyms =
        audit::Pseudonymiser::load_or_create(&cfg.audit.hmac_key, cfg.audit.key_version)
            .with_context(|| format!("loading the audit key {}", cfg.audit.hmac_key.display()))?;
    let pseudonyms = Arc::new(pseudonyms);
    let plan = Arc::new(
        cfg.notify
            .plan()
            .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.reason))?,
    );
    let sms_provider = match &cfg.notify.sms {
        Some(sms) if !plan.routes.is_empty() => {
            let nonce = store_nonce(&cfg.hub.data_dir.join("sms_key_nonce"))
                .context("reading the SMS key nonce")?;
            Some(notify::sms::Provider::new(sms, &nonce).context("setting up the SMS provider")?)
        }
        _ => None,
    };
    let (store, store_thread) = Store::open(
        &cfg.store_path(),
        bus.clone(),
        metrics.clone(),
        pseudonyms.clone(),
    )
    .with_context(|| format!("opening store {}", cfg.store_path().display()))?;
    let verifier =
        crate::token::hub_verifier(&cfg.auth).context("loading the token verification keys")?;

    let quic = ingress::server_config(
        &cfg.tls.ca_cert,
        &cfg.tls.cert,
        &cfg.tls.key,
        cfg.edge_offline_after(),
    )
    .context("loading the hub's TLS credentials")?;
    let endpoint = ingress::bind(quic, cfg.hub.quic_listen)
        .with_context(|| format!("binding QUIC listener {}", cfg.hub.quic_listen))?;
    let quic_addr = endpoint.local_addr()?;
    let (revoked, revocation_watch) = revocation::watch(revocation::path(&cfg), shutdown.clone())
        .context("loading the edge revocation list")?;
    tracker.spawn(revocation_watch);
    let (revoked_tokens, token_watch) =
        revocation::watch(revocation::tokens_path(&cfg), shutdown.clone())
            .context("loading the token revocation list")?;
    tracker.spawn(token_watch);
    tracker.spawn(ingress::run(
        endpoint,
        store.clone(),
        metrics.clone(),
        ingress::Limits {
            offline_after: cfg.edge_offline_after(),
            revoked,
            token_keys: Arc::new(wardlink_shared::wire::TokenKeys {
                issuer: cfg.auth.issuer.clone(),
                audience: cfg.auth.audience.clone(),
                keys: token::public_keys(&cfg.auth).context("reading the token public keys")?,
                revoked: Vec::new(),
            }),
            revoked_tokens: revoked_tokens.clone(),
        },
        shutdown.clone(),
    ));

    let watchers = Arc::new(notify::Watchers::default());
    let wake = Arc::new(tokio::sync::Notify::new());
    tracker.spawn(
        notify::Notifier {
            plan: plan.clone(),
            store: store.clone(),
            bus: bus.clone(),
            watchers: watchers.clone(),
            pseudonyms: pseudonyms.clone(),
            metrics: metrics.clone(),
            wake: wake.clone(),
        }
        .run(shutdown.clone()),
    );
    if let Some(provider) = sms_provider {
        tracker.spawn(
            notify::sms::Sender {
                provider,
                store: store.clone(),
                metrics: metrics.clone(),
                wake,
            }
            .run(shutdown.clone()),
        );
    }

    let listener = tokio::net::TcpListener::bind(cfg.hub.http_listen)
        .await
        .with_context(|| format!("binding HTTP listener {}", cfg.hub.http_listen))?;
    let http_addr = listener.local_addr()?;
    let app = api::router(api::AppState {
        store: store.clone(),
        bus,
        verifier: Arc::new(verifier),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        allowed_origins: Arc::new(cfg.hub.allowed_origins.clone()),
        revoked_tokens,
        watchers,
        pseudonyms: pseudonyms.clone(),
    });
    let http_shutdown = shutdown.clone();
    tracker.spawn(async move {
        let serve = axum::serve(
            // Without TCP_NODELAY a client that delays its TCP acknowledgements (browsers,
            // Python clients) sees Nagle's algorithm hold small frames for tens of ms.
            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP listener failed");
        }
    });

    tracker.spawn(log_audit_head(store.clone(), shutdown.clone()));

    metrics.ready.store(true, Ordering::Release);
    tracing::info!(http = %http_addr, quic = %quic_addr, "hub ready");

    let supervisor = shutdown.clone();
    let done = tokio::spawn(async move {
        supervisor.cancelled().await;
        tracker.close();
        tracker.wait().await;
        // Last handle: the writer finishes what is queued and exits.
        drop(store);
        let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
        tracing::info!("hub stopped");
    });
    Ok(RunningHub {
        http_addr,
        quic_addr,
        metrics,
        shutdown,
        done,
    })
}

/// How often the audit chain's head is written to the hub's log.
const AUDIT_ANCHOR_INTERVAL: Duration = Duration::from_secs(60);

/// Writes the audit chain's head to the hub's log (at start, then every minute when it moved,
/// and at shutdown). Logs shipped off the box (journald, syslog) so hold anchors that
/// `audit verify --anchor SEQ:HASH` checks an export against: entries cut off the end of the
/// log after an anchor was written are then detected.
async fn log_audit_head(store: Store, shutdown: CancellationToken) {
    let mut last = None;
    let mut tick = tokio::time::interval(AUDIT_ANCHOR_INTERVAL);
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        match store.audit_head().await {
            Ok(Some((seq, hash))) if last != Some(seq) => {
                tracing::info!(anchor = %format!("{seq}:{hash}"), "audit chain head");
                last = Some(seq);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit chain head unreadable"),
        }
        if stopping {
            return;
        }
    }
}

/// A random identity written once beside the store, part of every SMS idempotency key.
fn store_nonce(path: &std::path::Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is empty",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngExt as _;
            let bytes: [u8; 8] = rand::rng().random();
            let nonce: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            wardlink_io::fs::write_atomic(path, nonce.as_bytes())?;
            Ok(nonce)
        }
        Err(e) => Err(e),
    }
}
