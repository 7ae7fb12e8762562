//! The edge's configuration: `edge.toml`, parsed once at startup, then the `WARDLINK_*`
//! environment overrides.
//!
//! A bad configuration is a [`ConfigError`] naming the file, the key and the reason; the binary
//! prints it on one line and exits 64 (EX_USAGE).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wardlink_io::config;
use wardlink_shared::alarm::{
    AlarmLimits, EpisodeSettings, News2Settings, QualitySettings, RuleSettings, SignalSettings,
    SilenceSettings, TrendSettings,
};
pub use wardlink_shared::config::ConfigError;
use wardlink_shared::{EdgeId, WardId};

// Each component owns its section; this file only assembles them.
pub use crate::admin::AdminSection;
pub use crate::broker::MqttSection;
pub use crate::outbox::OutboxSection;
pub use crate::paging::LocalNotifySection;
pub use crate::uplink::HubSection;
pub use crate::ward::WardSection;

/// `edge.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Identity.
    pub edge: EdgeSection,
    /// The device-facing MQTT broker.
    #[serde(default)]
    pub mqtt: MqttSection,
    /// The local admin HTTP listener.
    #[serde(default)]
    pub admin: AdminSection,
    /// The uplink to the hub.
    pub hub: HubSection,
    /// The durable outbox.
    #[serde(default)]
    pub outbox: OutboxSection,
    /// The ward's alarm limits.
    #[serde(default)]
    pub alarms: AlarmLimits,
    /// NEWS2 settings.
    #[serde(default)]
    pub news2: News2Settings,
    /// Technical alarm settings.
    #[serde(default)]
    pub signal: SignalSettings,
    /// Trend pre-alert settings.
    #[serde(default)]
    pub trends: TrendSettings,
    /// Silence settings.
    #[serde(default)]
    pub silence: SilenceSettings,
    /// Episode settings.
    #[serde(default)]
    pub episodes: EpisodeSettings,
    /// Signal quality thresholds.
    #[serde(default)]
    pub quality: QualitySettings,
    /// The ward view (the dashboard served by the edge itself).
    #[serde(default)]
    pub ward: WardSection,
    /// Paging from the edge while the hub is unreachable.
    #[serde(default)]
    pub local_notify: Option<LocalNotifySection>,
}

/// `[edge]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSection {
    /// This edge's id; must match its certificate.
    pub id: EdgeId,
    /// The ward it serves; must match its certificate.
    pub ward: WardId,
    /// Where the outbox and the device registry live.
    pub data_dir: PathBuf,
}

/// The environment variables that override the file.
pub const ENV_KEYS: [&str; 6] = [
    "WARDLINK_MQTT_LISTEN",
    "WARDLINK_WARD_LISTEN",
    "WARDLINK_MQTT_TLS_LISTEN",
    "WARDLINK_ADMIN_LISTEN",
    "WARDLINK_HUB_ADDR",
    "WARDLINK_DATA_DIR",
];

impl EdgeConfig {
    /// Reads `path`, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &config::env_overrides(&ENV_KEYS))
    }

    /// Reads `path`, applies `env`, validates. Relative paths are relative to the file.
    pub fn load_with_env(path: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut cfg: EdgeConfig = config::read(path)?;
        config::resolve_relative(
            path,
            &mut [
                &mut cfg.edge.data_dir,
                &mut cfg.hub.ca_cert,
                &mut cfg.hub.cert,
                &mut cfg.hub.key,
            ],
        );
        let token = cfg
            .local_notify
            .as_mut()
            .and_then(|n| n.sms.auth_token_file.as_mut());
        let mut optional: Vec<&mut PathBuf> = [&mut cfg.mqtt.tls_cert, &mut cfg.mqtt.tls_key]
            .into_iter()
            .flatten()
            .chain(token)
            .collect();
        config::resolve_relative(path, &mut optional);
        cfg.apply_env(env)?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Applies the `WARDLINK_*` overrides found in `env`.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(v) = env.get("WARDLINK_MQTT_LISTEN") {
            self.mqtt.listen = config::parse_override("WARDLINK_MQTT_LISTEN", v)?;
            // Whoever moves the plain listener (several edges on one host, a test) moves the
            // TLS one too, unless told where: to the same address on a free port (logged at
            // start), so that two edges never contend for the configured TLS port.
            if let Some(tls) = &mut self.mqtt.listen_tls
                && !env.contains_key("WARDLINK_MQTT_TLS_LISTEN")
            {
                *tls = SocketAddr::new(self.mqtt.listen.ip(), 0);
            }
        }
        if let Some(v) = env.get("WARDLINK_MQTT_TLS_LISTEN") {
            self.mqtt.listen_tls = Some(config::parse_override("WARDLINK_MQTT_TLS_LISTEN", v)?);
        }
        if let Some(v) = env.get("WARDLINK_ADMIN_LISTEN") {
            self.admin.listen = config::parse_override("WARDLINK_ADMIN_LISTEN", v)?;
        }
        if let Some(v) = env.get("WARDLINK_WARD_LISTEN") {
            self.ward.listen = Some(config::parse_override("WARDLINK_WARD_LISTEN", v)?);
        }
        if let Some(v) = env.get("WARDLINK_HUB_ADDR") {
            self.hub.addr = v.clone();
        }
        if let Some(v) = env.get("WARDLINK_DATA_DIR") {
            self.edge.data_dir = PathBuf::from(v);
        }
        Ok(())
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| ConfigError {
            file: file.into(),
            key: key.into(),
            reason: reason.into(),
        };
        self.hub
            .validate()
            .and(self.mqtt.validate())
            .and(self.outbox.validate())
            .and(self.ward.validate())
            .map_err(|(key, reason)| bad(key, reason))?;
        if let Some(n) = &self.local_notify {
            n.validate().map_err(|(key, reason)| bad(&key, &reason))?;
        }
        self.rules()
            .validate()
            .map_err(|(key, reason)| bad(&key, reason))
    }

    /// The alarm engine's settings.
    pub fn rules(&self) -> RuleSettings {
        RuleSettings {
            limits: self.alarms,
            news2: self.news2,
            signal: self.signal,
            trends: self.trends,
            silence: self.silence,
            episodes: self.episodes,
            quality: self.quality,
        }
    }

    /// The outbox database file.
    pub fn outbox_path(&self) -> PathBuf {
        self.edge.data_dir.join("outbox.redb")
    }

    /// The device registry file.
    pub fn devices_path(&self) -> PathBuf {
        self.edge.data_dir.join("devices.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[edge]
id = "edge-a"
ward = "ward-a"
data_dir = "data"

[hub]
addr = "127.0.0.1:4433"
ca_cert = "ca.pem"
cert = "edge.pem"
key = "edge.key"
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let (dir, path) = write(GOOD);
        let cfg = EdgeConfig::load_with_env(&path, &HashMap::new()).unwrap();
        assert_eq!(cfg.edge.data_dir, dir.path().join("data"));
        assert_eq!(cfg.admin.listen.ip().to_string(), "127.0.0.1");
        assert_eq!(cfg.hub.server_name, "wardlink-hub");
        assert_eq!(cfg.alarms, AlarmLimits::default());
    }

    #[test]
    fn env_overrides() {
        let (_dir, path) = write(GOOD);
        let env: HashMap<String, String> = [
            ("WARDLINK_MQTT_LISTEN", "127.0.0.1:1999"),
            ("WARDLINK_ADMIN_LISTEN", "127.0.0.1:0"),
            ("WARDLINK_HUB_ADDR", "hub.example:5000"),
            ("WARDLINK_DATA_DIR", "/var/lib/x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let cfg = EdgeConfig::load_with_env(&path, &env).unwrap();
        assert_eq!(cfg.mqtt.listen.port(), 1999);
        // A TLS listener moves with the plain one unless told where.
        let (_dir2, tls_path) = write(&format!(
            "{GOOD}\n[mqtt]\nlisten_tls = \"0.0.0.0:8883\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"
        ));
        let moved = EdgeConfig::load_with_env(&tls_path, &env).unwrap();
        assert_eq!(moved.mqtt.listen_tls, Some("127.0.0.1:0".parse().unwrap()));
        let mut told = env.clone();
        told.insert("WARDLINK_MQTT_TLS_LISTEN".into(), "127.0.0.1:8884".into());
        let kept = EdgeConfig::load_with_env(&tls_path, &told).unwrap();
        assert_eq!(
            kept.mqtt.listen_tls,
            Some("127.0.0.1:8884".parse().unwrap())
        );
        assert_eq!(cfg.admin.listen.port(), 0);
        assert_eq!(cfg.hub.addr, "hub.example:5000");
        assert_eq!(cfg.edge.data_dir, PathBuf::from("/var/lib/x"));

        let bad: HashMap<String, String> =
            [("WARDLINK_MQTT_LISTEN".to_owned(), "nope".to_owned())].into();
        let err = EdgeConfig::load_with_env(&path, &bad).unwrap_err();
        assert_eq!(err.key, "WARDLINK_MQTT_LISTEN");
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            (GOOD.replace("edge-a", "edge/a"), "edge.id"),
            (GOOD.replace("ward = \"ward-a\"", "ward = 3"), "edge.ward"),
            (
                format!("{GOOD}\n[mqtt]\nlisten = \"here\"\n"),
                "mqtt.listen",
            ),
            (format!("{GOOD}\n[mqtt]\ncolour = 1\n"), "mqtt.colour"),
            (
                format!(
                    "{GOOD}\n[alarms.hr]\nlow = 150.0\nhigh = 100.0\ndelay_s = 1\nhysteresis = 1.0\npriority = \"high\"\nlow_extreme = 10.0\nhigh_extreme = 200.0\n"
                ),
                "alarms.hr.low",
            ),
        ];
        for (text, key) in cases {
            let (_dir, path) = write(&text);
            let err = EdgeConfig::load_with_env(&path, &HashMap::new()).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.file.ends_with("edge.toml"));
            assert!(!err.to_string().contains('\n'));
        }
    }
}
