//! The `wardlink-cloud` command: `init`, `enroll`, `revoke`, `revoke-token`, `audit verify`,
//! `token`, `serve`, `watch`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use wardlink_cloud::config::CloudConfig;
use wardlink_cloud::pki::{self, InitOptions};
use wardlink_cloud::token::{Role, TokenIssuer};
use wardlink_shared::{EdgeId, WardId};

/// EX_USAGE from sysexits.h: bad configuration or arguments.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "wardlink-cloud", version, about = "Wardlink hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check an NDJSON export (GET /api/audit): every entry's hash and the chain between them.
    /// Exit 0 if intact, 1 with the first broken entry otherwise.
    Verify {
        /// The export.
        file: PathBuf,
        /// A chain head recorded earlier, `SEQ:HASH` (from the hub's log line "audit chain
        /// head" or `GET /api/audit/head`); the export must contain that entry unchanged
        /// (repeatable).
        #[arg(long = "anchor")]
        anchors: Vec<wardlink_cloud::audit::Anchor>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Create a CA, the hub certificate, the token signing key and DIR/cloud.toml.
    Init {
        /// Directory to create.
        dir: PathBuf,
        /// HTTP listen address written into cloud.toml.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_listen: String,
        /// QUIC listen address written into cloud.toml.
        #[arg(long, default_value = "0.0.0.0:4433")]
        quic_listen: String,
        /// Extra DNS name or IP for the hub certificate (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Issue an edge certificate and write EDGE_DIR/edge.toml.
    Enroll {
        /// The hub directory made by `init`.
        dir: PathBuf,
        /// Edge id.
        #[arg(long)]
        edge: EdgeId,
        /// Ward the edge serves.
        #[arg(long)]
        ward: WardId,
        /// Where to write the edge's files.
        #[arg(long)]
        out: PathBuf,
        /// A host name or IP address devices use to reach the edge (repeatable); written
        /// into the MQTT listener's certificate.
        #[arg(long = "mqtt-name")]
        mqtt_names: Vec<String>,
    },
    /// Revoke an edge: a running hub closes its connection and refuses it from then on
    /// (within a second, without a restart).
    Revoke {
        /// The hub directory made by `init`.
        dir: PathBuf,
        /// Edge id.
        #[arg(long)]
        edge: EdgeId,
        /// Lift the revocation instead.
        #[arg(long)]
        restore: bool,
    },
    /// Revoke a dashboard token: a running hub closes its sessions and refuses it from then
    /// on (within a second, without a restart).
    RevokeToken {
        /// The hub directory made by `init`.
        dir: PathBuf,
        /// The token (as `token` printed it).
        #[arg(long)]
        token: String,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a dashboard token (the JWT alone on stdout).
    Token {
        /// The hub directory made by `init`.
        dir: PathBuf,
        /// User name.
        #[arg(long)]
        user: String,
        /// Role.
        #[arg(long, value_enum)]
        role: Role,
        /// Ward the token covers (repeatable).
        #[arg(long = "ward")]
        wards: Vec<WardId>,
        /// Lifetime, e.g. 8h or 30m.
        #[arg(long, default_value = "8h", value_parser = duration)]
        ttl: Duration,
    },
    /// Run the hub.
    Serve {
        /// Path to cloud.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the live feed a dashboard receives.
    Watch {
        /// WebSocket URL, e.g. ws://127.0.0.1:8080/ws?since=0
        #[arg(long)]
        url: String,
        /// Dashboard token.
        #[arg(long, env = "WARDLINK_TOKEN", hide_env_values = true)]
        token: String,
        /// Also print every vitals message.
        #[arg(long)]
        vitals: bool,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    wardlink_shared::time::parse_duration(s).ok_or_else(|| format!("not a duration: {s:?}"))
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("wardlink-cloud: {message}");
    ExitCode::from(EXIT_CONFIG)
}

fn load(path: &Path) -> Result<CloudConfig, ExitCode> {
    CloudConfig::load(path).map_err(usage)
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            dir,
            http_listen,
            quic_listen,
            sans,
        } => {
            let opts = InitOptions {
                http_listen,
                quic_listen,
                extra_names: sans,
            };
            pki::init(&dir, &opts)
                .map(|path| eprintln!("hub initialised: {}", path.display()))
                .map_err(anyhow::Error::from)
        }
        Command::Enroll {
            dir,
            edge,
            ward,
            out,
            mqtt_names,
        } => {
            let cfg = match load(&dir.join("cloud.toml")) {
                Ok(c) => c,
                Err(code) => return code,
            };
            pki::enroll_with_names(&cfg, &edge, &ward, &out, &mqtt_names)
                .map(|path| eprintln!("edge {edge} enrolled for ward {ward}: {}", path.display()))
                .map_err(anyhow::Error::from)
        }
        Command::Audit {
            command: AuditCommand::Verify { file, anchors },
        } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return usage(format!("{}: {e}", file.display())),
            };
            return match wardlink_cloud::audit::verify_anchored(&text, &anchors) {
                Ok(n) => {
                    let anchored = match anchors.len() {
                        0 => String::new(),
                        k => format!(", {k} anchor(s) found"),
                    };
                    println!("{}: {n} entries, chain intact{anchored}", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("{}: {e}", file.display());
                    ExitCode::FAILURE
                }
            };
        }
        Command::RevokeToken { dir, token } => {
            let cfg = match load(&dir.join("cloud.toml")) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let Some((jti, exp)) = wardlink_cloud::token::peek(&token) else {
                return usage("--token is not a token this hub issued (no token id)");
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            wardlink_cloud::revocation::revoke_token(&cfg, &jti, exp, now)
                .map(|added| {
                    if added {
                        eprintln!("token {jti} revoked");
                    } else {
                        eprintln!("token {jti} was already revoked");
                    }
                })
                .map_err(anyhow::Error::from)
        }
        Command::Revoke { dir, edge, restore } => {
            let cfg = match load(&dir.join("cloud.toml")) {
                Ok(c) => c,
                Err(code) => return code,
            };
            wardlink_cloud::revocation::set(&cfg, &edge, restore)
                .map(|changed| match (restore, changed) {
                    (false, true) => eprintln!("edge {edge} revoked"),
                    (false, false) => eprintln!("edge {edge} was already revoked"),
                    (true, true) => eprintln!("edge {edge} restored"),
                    (true, false) => eprintln!("edge {edge} was not revoked"),
                })
                .map_err(anyhow::Error::from)
        }
        Command::Token {
            dir,
            user,
            role,
            wards,
            ttl,
        } => {
            let cfg = match load(&dir.join("cloud.toml")) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if matches!(role, Role::Nurse | Role::Doctor) && wards.is_empty() {
                return usage("nurse and doctor tokens need at least one --ward");
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            TokenIssuer::for_hub(&cfg.auth)
                .and_then(|issuer| issuer.issue(&user, role, wards, now, ttl))
                .map(|token| println!("{token}"))
                .map_err(anyhow::Error::from)
        }
        Command::Serve { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            runtime().and_then(|rt| rt.block_on(serve(cfg)))
        }
        Command::Watch { url, token, vitals } => runtime().and_then(|rt| {
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wardlink_io::signal::terminated().await;
                    signal.cancel();
                });
                wardlink_cloud::watch::run(&url, &token, vitals, shutdown).await
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardlink-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

async fn serve(cfg: CloudConfig) -> anyhow::Result<()> {
    let hub = wardlink_cloud::start(cfg).await?;
    wardlink_io::signal::terminated().await;
    tracing::info!("signal received; stopping");
    hub.shutdown();
    hub.wait().await;
    Ok(())
}
