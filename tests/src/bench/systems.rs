//! The systems under test, each started for real as its own process so its memory and CPU
//! can be read: Wardlink (hub and edge, the release binaries), Debian's Mosquitto, and
//! Node-RED from npm running a flow a hospital IT team would write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use wardlink_cloud::config::CloudConfig;
use wardlink_cloud::pki;
use wardlink_cloud::token::Role;
use wardlink_shared::{DeviceId, EdgeId, PatientId, WardId};

use super::mqtt::Login;
use super::run::{Receivers, WsClient, WsFormat};
use super::track::patient_id;
use crate::process::{EdgeProcess, HubProcess, Process};
use crate::{PATIENCE, free_port, init_hub_dir, sign_token, unix_now};

/// The ward every benchmark patient is in.
pub const WARD: &str = "ward-bench";

/// Wardlink: `wardlink-cloud serve` and one `wardlink-edge run`, on loopback.
pub struct Wardlink {
    /// The hub.
    pub hub: HubProcess,
    /// The edge.
    pub edge: EdgeProcess,
    /// The hub's configuration (for tokens).
    pub config: CloudConfig,
    /// One publishing device per patient.
    pub devices: Vec<Login>,
    /// A second device per patient, for subscribing on the edge's broker (MQTT-hop phases).
    pub watchers: Vec<Login>,
    _hub_dir: tempfile::TempDir,
    _edge_dir: tempfile::TempDir,
}

impl Wardlink {
    /// Starts a hub and an edge, with `patients` devices registered (and as many watchers if
    /// `watchers`). `mqtt` is added to the edge's `[mqtt]` section.
    pub async fn start(patients: usize, watchers: bool, mqtt: &str) -> anyhow::Result<Self> {
        let (hub_dir, cloud_toml) = init_hub_dir()?;
        let config = CloudConfig::load_with_env(&cloud_toml, &HashMap::new())?;
        let hub = HubProcess::start(&cloud_toml).await?;

        let edge_dir = tempfile::tempdir()?;
        let edge_toml = pki::enroll(
            &config,
            &EdgeId::new("edge-bench")?,
            &WardId::new(WARD)?,
            edge_dir.path(),
        )?;
        let capacity = patients * 2 + 16;
        let text = std::fs::read_to_string(&edge_toml)?.replacen(
            "[mqtt]\n",
            &format!("[mqtt]\nmax_devices = {capacity}\n{mqtt}\n"),
            1,
        );
        std::fs::write(&edge_toml, text)?;

        let mut wanted = Vec::with_capacity(patients * 2);
        for p in 0..patients {
            wanted.push((
                DeviceId::new(format!("mon-{p:05}"))?,
                PatientId::new(patient_id(p))?,
            ));
            if watchers {
                wanted.push((
                    DeviceId::new(format!("watch-{p:05}"))?,
                    PatientId::new(patient_id(p))?,
                ));
            }
        }
        eprintln!(
            "registering {} devices (Argon2id, as `device add` does)…",
            wanted.len()
        );
        let devices_json = edge_dir.path().join("data").join("devices.json");
        std::fs::create_dir_all(edge_dir.path().join("data"))?;
        let passwords = wardlink_edge::broker::add_devices(&devices_json, &wanted, capacity)?;
        let logins: Vec<Login> = wanted
            .iter()
            .zip(passwords)
            .map(|((id, _), password)| Login {
                client_id: id.as_str().to_owned(),
                password: Some(password),
            })
            .collect();
        let (devices, watchers): (Vec<Login>, Vec<Login>) = logins
            .into_iter()
            .partition(|l| l.client_id.starts_with("mon-"));

        let edge = EdgeProcess::start(&edge_toml, &hub.quic.to_string()).await?;
        crate::wait_for_metric(|| edge.metrics(), "wardlink_edge_uplink_connected", 1).await?;
        Ok(Self {
            hub,
            edge,
            config,
            devices,
            watchers,
            _hub_dir: hub_dir,
            _edge_dir: edge_dir,
        })
    }

    /// A nurse token for the benchmark ward.
    pub fn token(&self) -> String {
        sign_token(
            &self.config,
            "bench-nurse",
            Role::Nurse,
            &[WARD],
            unix_now(),
            Duration::from_secs(24 * 3600),
        )
    }

    /// The dashboards' WebSocket URL.
    pub fn ws_url(&self) -> String {
        self.hub.ws_url("")
    }

    /// `count` nurse dashboards of the benchmark ward.
    pub fn dashboards(&self, count: usize) -> Receivers {
        Receivers::Ws {
            url: self.ws_url(),
            token: Some(self.token()),
            count,
            format: WsFormat::Wardlink,
            client: WsClient::Tungstenite,
        }
    }

    /// One MQTT subscriber per patient on the edge's broker (the watcher devices).
    pub fn subscribers(&self) -> Receivers {
        Receivers::Mqtt {
            addr: self.edge.mqtt,
            logins: self.watchers.clone(),
        }
    }

    /// Processes to measure.
    pub fn watched(&self) -> Vec<(String, u32)> {
        vec![
            ("wardlink-edge".into(), self.edge.process.id()),
            ("wardlink-cloud".into(), self.hub.process.id()),
        ]
    }
}

/// Waits until `addr` accepts TCP connections, failing early if `process` exits.
async fn wait_listening(process: &mut Process, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut delay = Duration::from_millis(5);
    loop {
        process.check_running()?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Debian's Mosquitto broker on a loopback port, anonymous, no persistence.
pub struct Mosquitto {
    /// The broker process.
    pub process: Process,
    /// Its listener.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` (from `PATH`; Debian package `mosquitto`).
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = dir.path().join("mosquitto.conf");
        // Queues deep enough that a slow subscriber is measured, not dropped by a default.
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 1000000\nmax_inflight_messages 0\n\
                 log_dest stderr\nlog_type error\n",
                addr.port()
            ),
        )?;
        let program = which("mosquitto").context(
            "mosquitto is not installed (apt-get install mosquitto, or deploy/bench-peers.sh)",
        )?;
        let mut process = Process::spawn(
            "mosquitto",
            Command::new(program).arg("-c").arg(&conf),
            Some(dir.path()),
        )?;
        wait_listening(&mut process, addr).await?;
        Ok(Self {
            process,
            addr,
            _dir: dir,
        })
    }

    /// Anonymous logins, one per patient, with the same client ids as Wardlink's devices.
    pub fn logins(prefix: &str, patients: usize) -> Vec<Login> {
        (0..patients)
            .map(|p| Login {
                client_id: format!("{prefix}-{p:05}"),
                password: None,
            })
            .collect()
    }
}

/// The Node-RED flow: MQTT in (QoS 1, parsed JSON) → threshold switch on the heart rate
/// (an alarm mark above 130/min) → WebSocket out sending the whole message to every client.
fn flow(mqtt: SocketAddr) -> serde_json::Value {
    serde_json::json!([
        {"id": "tab", "type": "tab", "label": "ward vitals"},
        {"id": "broker", "type": "mqtt-broker", "name": "mosquitto",
         "broker": mqtt.ip().to_string(), "port": mqtt.port().to_string(),
         "clientid": "node-red-ward", "autoConnect": true, "usetls": false,
         "protocolVersion": "4", "keepalive": "60", "cleansession": true},
        {"id": "in", "type": "mqtt in", "z": "tab", "name": "vitals",
         "topic": "patients/+/vitals", "qos": "1", "datatype": "json", "broker": "broker",
         "nl": false, "rap": true, "rh": 0, "inputs": 0, "wires": [["threshold"]]},
        {"id": "threshold", "type": "switch", "z": "tab", "name": "hr threshold",
         "property": "payload.hr", "propertyType": "msg",
         "rules": [{"t": "gt", "v": "130", "vt": "num"}, {"t": "else"}],
         "checkall": "false", "repair": false, "outputs": 2,
         "wires": [["mark"], ["out"]]},
        {"id": "mark", "type": "change", "z": "tab", "name": "mark alarm",
         "rules": [{"t": "set", "p": "alarm", "pt": "msg", "to": "hr_high", "tot": "str"}],
         "wires": [["out"]]},
        {"id": "out", "type": "websocket out", "z": "tab", "name": "dashboards",
         "server": "listener", "client": "", "wires": []},
        {"id": "listener", "type": "websocket-listener", "path": "/ws/vitals",
         "wholemsg": "true"}
    ])
}

/// Where `deploy/bench-peers.sh` installs Node-RED: `target/bench-peers/node_modules`.
fn node_red_script() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("WARDLINK_NODE_RED") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("the benchmark has no target directory")?;
    let script = target.join("bench-peers/node_modules/node-red/red.js");
    if !script.is_file() {
        bail!(
            "Node-RED is not installed at {} (run deploy/bench-peers.sh, or set \
             WARDLINK_NODE_RED to its red.js)",
            script.display()
        );
    }
    Ok(script)
}

/// Node-RED running [`flow`] against a Mosquitto broker.
pub struct NodeRed {
    /// The `node` process.
    pub process: Process,
    /// Its HTTP port (WebSocket at `/ws/vitals`).
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl NodeRed {
    /// Starts Node-RED with the flow wired to `mqtt`, the editor off, and waits until its
    /// WebSocket endpoint answers.
    pub async fn start(mqtt: SocketAddr) -> anyhow::Result<Self> {
        let script = node_red_script()?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        std::fs::write(
            dir.path().join("flows.json"),
            serde_json::to_vec_pretty(&flow(mqtt))?,
        )?;
        std::fs::write(
            dir.path().join("settings.js"),
            format!(
                "module.exports = {{ uiPort: {port}, uiHost: '127.0.0.1', \
                 flowFile: 'flows.json', httpAdminRoot: false, \
                 logging: {{ console: {{ level: 'warn' }} }} }};\n"
            ),
        )?;
        let mut process = Process::spawn(
            "node-red",
            Command::new("node")
                .arg(script)
                .arg("--userDir")
                .arg(dir.path())
                .arg("--settings")
                .arg(dir.path().join("settings.js")),
            Some(dir.path()),
        )?;
        wait_listening(&mut process, SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let node_red = Self {
            process,
            port,
            _dir: dir,
        };
        node_red.probe(mqtt).await?;
        Ok(node_red)
    }

    /// Publishes a probe reading every 100 ms until a WebSocket client receives one: the flow
    /// subscribes to the broker in the background after start-up.
    async fn probe(&self, mqtt: SocketAddr) -> anyhow::Result<()> {
        use futures_util::StreamExt as _;
        let (mut socket, _) = tokio_tungstenite::connect_async(self.ws_url()).await?;
        let login = Login {
            client_id: "probe".into(),
            password: None,
        };
        let mut device =
            super::mqtt::Publisher::connect(mqtt, &login, "patients/probe/vitals").await?;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if tokio::time::Instant::now() > deadline {
                        bail!("Node-RED never forwarded a reading to its WebSocket clients");
                    }
                    device.publish(br#"{"hr":70}"#, false).await?;
                }
                msg = socket.next() => match msg {
                    Some(Ok(m)) if m.to_text().is_ok_and(|t| t.contains("patients/probe/vitals")) => {
                        return Ok(());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("Node-RED closed the WebSocket"),
                },
            }
        }
    }

    /// The dashboards' WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/vitals", self.port)
    }

    /// `count` WebSocket clients of the flow.
    pub fn dashboards(&self, count: usize) -> Receivers {
        Receivers::Ws {
            url: self.ws_url(),
            token: None,
            count,
            format: WsFormat::NodeRed,
            client: WsClient::Tungstenite,
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}
