//! Resident memory and CPU time of the processes under test, read from `/proc`.

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// Resident set size of `pid` in bytes, and its peak so far (`VmRSS`, `VmHWM`).
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU seconds `pid` has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

/// A process measured during a phase.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Name in the report (`wardlink-edge`, `mosquitto`, …).
    pub name: String,
    /// Its pid.
    pub pid: u32,
    cpu_start: f64,
    started: std::time::Instant,
    peak_rss: u64,
}

/// What a process used during a phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    /// Process name.
    pub name: String,
    /// Highest resident set size sampled during the phase, MiB.
    pub peak_rss_mib: f64,
    /// Resident set size at the end of the phase, MiB.
    pub rss_mib: f64,
    /// CPU used over the phase (publishing and draining), percent of one core.
    pub cpu_percent: f64,
    /// CPU seconds used over the phase.
    #[serde(default)]
    pub cpu_s: f64,
    /// CPU time per reading sent in the phase, microseconds (set by the phase, which knows
    /// how many were sent).
    #[serde(default)]
    pub cpu_us_per_reading: f64,
}

impl Usage {
    /// Sets [`Usage::cpu_us_per_reading`] for `readings` readings.
    pub fn per_reading(mut self, readings: u64) -> Self {
        if readings > 0 {
            self.cpu_us_per_reading = self.cpu_s * 1e6 / readings as f64;
        }
        self
    }
}

impl Watched {
    /// Starts measuring `pid`.
    pub fn start(name: &str, pid: u32) -> Self {
        Self {
            name: name.to_owned(),
            pid,
            cpu_start: cpu_seconds(pid).unwrap_or(0.0),
            started: std::time::Instant::now(),
            peak_rss: rss(pid).map_or(0, |(now, _)| now),
        }
    }

    /// Takes one memory sample.
    pub fn sample(&mut self) {
        if let Some((now, _)) = rss(self.pid) {
            self.peak_rss = self.peak_rss.max(now);
        }
    }

    /// What the process used since [`Watched::start`].
    pub fn finish(&mut self) -> Usage {
        self.sample();
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let cpu = cpu_seconds(self.pid).unwrap_or(self.cpu_start) - self.cpu_start;
        Usage {
            name: self.name.clone(),
            peak_rss_mib: mib(self.peak_rss),
            rss_mib: mib(rss(self.pid).map_or(0, |(now, _)| now)),
            cpu_percent: if elapsed_s > 0.0 {
                100.0 * cpu / elapsed_s
            } else {
                0.0
            },
            cpu_s: cpu,
            cpu_us_per_reading: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let (now, peak) = rss(pid).unwrap();
        assert!(now > 0 && peak >= now);
        // Burn a little CPU so the counter can move; it must never go backwards.
        let before = cpu_seconds(pid).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(pid).unwrap() >= before);
    }
}
