//! The `wardlink-edge` command: `run`, `device add`, `simulate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use wardlink_edge::config::EdgeConfig;
use wardlink_edge::simulate::Simulation;
use wardlink_shared::{DeviceId, PatientId};

/// EX_USAGE from sysexits.h: bad configuration or arguments.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "wardlink-edge", version, about = "Wardlink ward edge daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge: MQTT broker, alarm rules, outbox, uplink.
    Run {
        /// Path to edge.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Publish simulated vitals for a ward of patients.
    Simulate {
        /// Path to edge.toml.
        #[arg(long)]
        config: PathBuf,
        /// Number of patients.
        #[arg(long, default_value_t = 24)]
        patients: usize,
        /// Time between readings of one patient, e.g. 3s or 500ms.
        #[arg(long, default_value = "3s", value_parser = duration)]
        interval: Duration,
        /// How many patients deteriorate.
        #[arg(long, default_value_t = 0)]
        deteriorate: usize,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Register a device bound to a patient; prints its MQTT password on the last line.
    Add {
        /// Path to edge.toml.
        #[arg(long)]
        config: PathBuf,
        /// Device id (its MQTT username and client id).
        #[arg(long)]
        device: DeviceId,
        /// The patient it measures.
        #[arg(long)]
        patient: PatientId,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    wardlink_shared::time::parse_duration(s).ok_or_else(|| format!("not a duration: {s:?}"))
}

fn load(path: &std::path::Path) -> Result<EdgeConfig, ExitCode> {
    EdgeConfig::load(path).map_err(|e| {
        eprintln!("wardlink-edge: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    // rumqttc and every TLS user need one process-wide provider: ring (see DESIGN.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wardlink-edge: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            runtime.block_on(run(cfg))
        }
        Command::Device {
            command:
                DeviceCommand::Add {
                    config,
                    device,
                    patient,
                },
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            wardlink_edge::broker::add_device(
                &cfg.devices_path(),
                device.clone(),
                patient,
                cfg.mqtt.max_devices,
            )
            .map(|password| {
                eprintln!("device {device} registered; MQTT username = {device}, password:");
                println!("{password}");
            })
            .map_err(anyhow::Error::from)
        }
        Command::Simulate {
            config,
            patients,
            interval,
            deteriorate,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut broker = cfg.mqtt.listen;
            if broker.ip().is_unspecified() {
                broker.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let sim = Simulation {
                patients,
                interval,
                deteriorate,
                broker,
            };
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wardlink_io::signal::terminated().await;
                    signal.cancel();
                });
                wardlink_edge::simulate::run(
                    sim,
                    &cfg.devices_path(),
                    cfg.mqtt.max_devices,
                    shutdown,
                )
                .await
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardlink-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: EdgeConfig) -> anyhow::Result<()> {
    let mut edge = wardlink_edge::start(cfg).await?;
    tokio::select! {
        () = wardlink_io::signal::terminated() => {
            tracing::info!("signal received; flushing the outbox and stopping");
            edge.shutdown();
            edge.wait().await
        }
        // The edge stopped by itself (its broker or link failed): exit non-zero so the
        // supervisor (systemd) restarts it.
        r = edge.wait() => r.and(Err(anyhow::anyhow!("edge stopped unexpectedly"))),
    }
}
