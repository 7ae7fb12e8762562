//! The embedded MQTT broker (rumqttd 0.20) that bedside devices connect to.
//!
//! rumqttd's hazards (see DESIGN.md) are handled here: every [`rumqttd::RouterConfig`] field is
//! set (its `Default` panics); the in-process link is drained by [`crate::ingest`] straight
//! away.
//!
//! The worst hazard: a connection that passes authentication but is then turned away by the
//! router (an illegal client id, or the connection table full) leaves a dangling entry in the
//! server's will-handler map; when that client reconnects with the same id, the server thread
//! panics holding the map's lock, and from then on every new connection panics: the broker is
//! deaf. So no authenticated connection may ever be turned away by the router. Our
//! authentication handler admits only registered devices whose client id is their device id
//! (`[A-Za-z0-9_-]`, never `/ + # $`), and the registry holds at most `mqtt.max_devices`
//! devices, which is exactly the router's table size beside the ingest link. A device that
//! reconnects takes over its own slot (MQTT session takeover), so the table cannot overflow.

mod devices;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use devices::{AuthRefusal, DeviceEntry, DeviceRegistry, RegistryError, add_device};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::oneshot;

use crate::config::MqttSection;
use crate::metrics::EdgeMetrics;

/// Client id of the in-process consumer. Device ids may not start with this prefix.
pub const RESERVED_PREFIX: &str = "wardlink-";
const INGEST_CLIENT_ID: &str = "wardlink-ingest";

/// The broker's filter for bedside readings.
pub const VITALS_FILTER: &str = "patients/+/vitals";

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The in-process link was refused by the router.
    #[error("broker link: {0}")]
    Link(Box<rumqttd::local::LinkError>),
    /// The broker thread could not be spawned.
    #[error("cannot spawn broker thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl From<rumqttd::local::LinkError> for BrokerError {
    fn from(e: rumqttd::local::LinkError) -> Self {
        BrokerError::Link(Box::new(e))
    }
}

/// A running broker: the in-process link and a signal that fires if the broker stops.
pub struct RunningBroker {
    /// Link used to subscribe.
    pub link_tx: LinkTx,
    /// Link the ingest task drains.
    pub link_rx: LinkRx,
    /// Fires when the broker's server threads have all exited (e.g. the port was taken).
    pub stopped: oneshot::Receiver<()>,
}

/// Router settings. The commit log of the one filter we subscribe to holds at most
/// `SEGMENT_BYTES × SEGMENT_COUNT`; ingest drains it continuously, so this is headroom for a
/// burst, not storage (the outbox is the store).
const SEGMENT_BYTES: usize = 4 * 1024 * 1024;
const SEGMENT_COUNT: usize = 4;
/// Connections the router keeps beside the devices: the ingest link. The router's table size
/// must equal `max_devices` plus this; see the module comment.
const INTERNAL_CONNECTIONS: usize = 1;

fn router_config(mqtt: &MqttSection) -> RouterConfig {
    RouterConfig {
        max_connections: mqtt.max_devices + INTERNAL_CONNECTIONS,
        max_outgoing_packet_count: 200,
        max_segment_size: SEGMENT_BYTES,
        max_segment_count: SEGMENT_COUNT,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

fn connection_settings(
    mqtt: &MqttSection,
    registry: Arc<DeviceRegistry>,
    metrics: Arc<EdgeMetrics>,
) -> ConnectionSettings {
    let mut settings = ConnectionSettings {
        connection_timeout_ms: mqtt.connect_timeout_ms,
        max_payload_size: mqtt.max_payload_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    settings.set_auth_handler(move |client_id: String, user: String, pass: String| {
        let registry = registry.clone();
        let metrics = metrics.clone();
        async move {
            if client_id.starts_with(RESERVED_PREFIX) {
                metrics
                    .auth_refused
                    .with(AuthRefusal::BadClientId.label())
                    .inc();
                return false;
            }
            // Argon2 is deliberately slow; keep it off the broker's accept loop.
            let verdict = tokio::task::spawn_blocking(move || {
                registry.authenticate(&client_id, &user, &pass)
            })
            .await;
            match verdict {
                Ok(Ok(_)) => true,
                Ok(Err(refusal)) => {
                    metrics.auth_refused.with(refusal.label()).inc();
                    tracing::debug!(reason = refusal.label(), "mqtt connection refused");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "authentication task failed");
                    false
                }
            }
        }
    });
    settings
}

/// Starts the broker on `mqtt.listen` (MQTT 3.1.1) and, if set, `mqtt.listen_v5` (MQTT 5).
pub fn start(
    mqtt: &MqttSection,
    registry: Arc<DeviceRegistry>,
    metrics: Arc<EdgeMetrics>,
) -> Result<RunningBroker, BrokerError> {
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: connection_settings(mqtt, registry.clone(), metrics.clone()),
    };
    let v5 = mqtt
        .listen_v5
        .map(|addr| HashMap::from([("v5".to_owned(), server("mqtt-v5", addr))]));
    let config = Config {
        id: 0,
        router: router_config(mqtt),
        v4: Some(HashMap::from([(
            "v4".to_owned(),
            server("mqtt-v4", mqtt.listen),
        )])),
        v5,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = rumqttd::Broker::new(config);
    let (mut link_tx, link_rx) = broker.link(INGEST_CLIENT_ID)?;
    link_tx.subscribe(VITALS_FILTER)?;
    let (stopped_tx, stopped) = oneshot::channel();
    // rumqttd's servers run on threads of their own and have no shutdown; they end with the
    // process. `start` returns only if every server failed (e.g. its port was taken).
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "mqtt broker failed");
            }
            let _ = stopped_tx.send(());
        })?;
    Ok(RunningBroker {
        link_tx,
        link_rx,
        stopped,
    })
}

/// Waits until `addr` accepts TCP connections (the broker binds on its own thread and does not
/// say when it is listening). Gives up after `timeout`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let probe = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        )
    } else {
        addr
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(2);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(probe).await.is_ok() {
            return true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
    false
}
