//! The real binaries as child processes, for scenarios that kill them (`SIGKILL`, no clean
//! shutdown) and start them again on the same data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

use crate::{PATIENCE, free_port, http_get};

/// A workspace binary built beside the running executable: `target/<profile>/` for a test
/// (`target/<profile>/deps/<test>-<hash>`) or for a binary such as `wardlink-bench`.
/// `cargo test --workspace` builds every binary before it runs any test.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe
        .parent()
        .context("the running executable has no directory")?;
    let candidates = [Some(here), here.parent()];
    for dir in candidates.into_iter().flatten() {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "{name} is missing beside {}: build the binaries first (cargo build --workspace --bins, \
         with --release for the benchmark)",
        here.display()
    )
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    /// Starts `cmd`. With `log`, its stderr is appended to `log/<name>.log` under the program's
    /// own default log filter (as deployed); otherwise it goes to the test's stderr, errors only.
    pub fn spawn(
        name: &'static str,
        cmd: &mut Command,
        log: Option<&Path>,
    ) -> anyhow::Result<Process> {
        match log {
            Some(dir) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{name}.log")))?;
                cmd.stderr(file).env_remove("RUST_LOG");
            }
            None => {
                cmd.stderr(Stdio::inherit()).env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "error,rumqttd=off".into()),
                );
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process { child, name })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        self.child.wait()?;
        Ok(())
    }

    /// Asks the process to stop (SIGTERM) and waits for it; returns its exit status.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .with_context(|| format!("signalling {}", self.name))?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.name);
        }
        Ok(self.child.wait()?)
    }

    /// Polls `GET /healthz` on `addr` until it answers, failing early if the process exits.
    async fn wait_healthy(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut delay = std::time::Duration::from_millis(5);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up: {status}", self.name);
            }
            if http_get(addr, "/healthz").await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} never became healthy on {addr}", self.name);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `wardlink-edge run` as a child process, on fresh loopback ports.
pub struct EdgeProcess {
    /// The process.
    pub process: Process,
    /// Its admin listener (`/healthz`, `/metrics`).
    pub admin: SocketAddr,
    /// Its MQTT 3.1.1 listener.
    pub mqtt: SocketAddr,
}

impl EdgeProcess {
    /// Starts the edge of `config` (an enrolled `edge.toml`) against `hub` and waits until it
    /// is healthy.
    pub async fn start(config: &Path, hub: &str) -> anyhow::Result<EdgeProcess> {
        Self::start_logged(config, hub, None).await
    }

    /// As [`EdgeProcess::start`], logging to `log/wardlink-edge.log` (see `Process::spawn`).
    pub async fn start_logged(
        config: &Path,
        hub: &str,
        log: Option<&Path>,
    ) -> anyhow::Result<EdgeProcess> {
        Self::start_program(Command::new(binary("wardlink-edge")?), config, hub, log).await
    }

    /// As [`EdgeProcess::start_logged`] with another way of starting the edge: `program` is
    /// the command before `run --config …` (e.g. `qemu-aarch64-static -L … wardlink-edge`).
    pub async fn start_program(
        program: Command,
        config: &Path,
        hub: &str,
        log: Option<&Path>,
    ) -> anyhow::Result<EdgeProcess> {
        let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start_program_on(program, config, hub, log, mqtt).await
    }

    /// As [`EdgeProcess::start`] with the MQTT listener on `mqtt`: a restarted edge keeps its
    /// address, so devices reconnect to it by themselves.
    pub async fn start_on(config: &Path, hub: &str, mqtt: SocketAddr) -> anyhow::Result<Self> {
        Self::start_program_on(
            Command::new(binary("wardlink-edge")?),
            config,
            hub,
            None,
            mqtt,
        )
        .await
    }

    /// As [`EdgeProcess::start_program`] with the MQTT listener on `mqtt`.
    pub async fn start_program_on(
        mut program: Command,
        config: &Path,
        hub: &str,
        log: Option<&Path>,
        mqtt: SocketAddr,
    ) -> anyhow::Result<EdgeProcess> {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut process = Process::spawn(
            "wardlink-edge",
            program
                .arg("run")
                .arg("--config")
                .arg(config)
                .env("WARDLINK_MQTT_LISTEN", mqtt.to_string())
                .env("WARDLINK_MQTT_TLS_LISTEN", "127.0.0.1:0")
                .env("WARDLINK_ADMIN_LISTEN", admin.to_string())
                .env("WARDLINK_HUB_ADDR", hub),
            log,
        )?;
        process.wait_healthy(admin).await?;
        Ok(EdgeProcess {
            process,
            admin,
            mqtt,
        })
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        http_get(self.admin, "/metrics").await
    }
}

/// `wardlink-cloud serve` as a child process on fixed loopback ports, so a restart keeps its
/// address.
pub struct HubProcess {
    /// The process.
    pub process: Process,
    /// Its HTTP listener.
    pub http: SocketAddr,
    /// Its QUIC listener.
    pub quic: SocketAddr,
    config: PathBuf,
    log: Option<PathBuf>,
}

impl HubProcess {
    /// Starts the hub of `config` (a `cloud.toml`) on new ports.
    pub async fn start(config: &Path) -> anyhow::Result<HubProcess> {
        Self::start_logged(config, None).await
    }

    /// As [`HubProcess::start`], logging to `log/wardlink-cloud.log` (see `Process::spawn`).
    pub async fn start_logged(config: &Path, log: Option<&Path>) -> anyhow::Result<HubProcess> {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let quic = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        Self::start_on(config, http, quic, log).await
    }

    /// Starts the hub of `config` on the given ports.
    async fn start_on(
        config: &Path,
        http: SocketAddr,
        quic: SocketAddr,
        log: Option<&Path>,
    ) -> anyhow::Result<HubProcess> {
        let mut process = Process::spawn(
            "wardlink-cloud",
            Command::new(binary("wardlink-cloud")?)
                .arg("serve")
                .arg("--config")
                .arg(config)
                .env("WARDLINK_HTTP_LISTEN", http.to_string())
                .env("WARDLINK_QUIC_LISTEN", quic.to_string()),
            log,
        )?;
        process.wait_healthy(http).await?;
        Ok(HubProcess {
            process,
            http,
            quic,
            config: config.to_owned(),
            log: log.map(Path::to_owned),
        })
    }

    /// Kills the hub with SIGKILL and starts it again on the same ports and data.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.process.kill()?;
        let again = Self::start_on(&self.config, self.http, self.quic, self.log.as_deref()).await?;
        *self = again;
        Ok(())
    }

    /// `ws://…/ws` with optional query.
    pub fn ws_url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.http)
        } else {
            format!("ws://{}/ws?{query}", self.http)
        }
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        http_get(self.http, "/metrics").await
    }
}
