//! Results: a table on stdout, `report.json`, and a latency plot (`latency.svg`) per run.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::stats::Usage;

/// Latency percentiles of a phase, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// (percentile, ms) pairs for the plot, from 0 to 99.999.
    pub curve: Vec<(f64, f64)>,
}

/// Percentiles plotted: evenly spaced on the "number of nines" axis.
const CURVE: [f64; 15] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.975, 99.99, 99.999,
];

impl Latency {
    /// Summarises a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            curve: CURVE
                .iter()
                .map(|&p| (p, ms(h.value_at_quantile(p / 100.0))))
                .collect(),
        }
    }
}

/// One measured phase: one system under one load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    /// System under test, e.g. `wardlink` or `mosquitto+node-red`.
    pub system: String,
    /// What it measures, e.g. `publish -> dashboard`.
    pub path: String,
    /// Simulated devices (one per patient).
    pub patients: usize,
    /// Readings per second offered, all patients together.
    pub offered_per_s: f64,
    /// Receivers (dashboards or MQTT subscribers).
    pub receivers: usize,
    /// Seconds of publishing.
    pub duration_s: f64,
    /// Readings the schedule called for.
    pub scheduled: u64,
    /// Readings published (fewer than scheduled if a device lost its connection).
    pub sent: u64,
    /// Largest delay of a publish behind its schedule: the load generator falling behind.
    pub max_send_lag_ms: f64,
    /// Deliveries expected: each receiver expects every scheduled reading it may see, so a
    /// reading never sent counts as lost.
    pub expected: u64,
    /// Distinct deliveries received.
    pub delivered: u64,
    /// Expected deliveries never received.
    pub lost: u64,
    /// Deliveries received more than once.
    pub duplicated: u64,
    /// Readings delivered per receiver per second (all subscribers together for per-patient
    /// MQTT subscribers), from the first send to the last receipt.
    pub sustained_per_s: f64,
    /// Publish → receive latency.
    pub latency: Latency,
    /// Publish → PUBACK latency seen by the devices (after the same warm-up).
    #[serde(default)]
    pub ack_latency: Latency,
    /// Processes under test.
    pub processes: Vec<Usage>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The command line.
    pub command: String,
    /// UTC date and time of the run.
    pub date: String,
    /// CPU model, cores and kernel.
    pub machine: String,
    /// Every phase in the order run.
    pub phases: Vec<Phase>,
    /// Ratios between systems (e.g. Node-RED p99 / Wardlink p99), as text.
    pub ratios: Vec<String>,
    /// Verdicts against the issue's targets.
    pub notes: Vec<String>,
}

/// CPU model, core count and kernel of this machine.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, Linux {}", kernel.trim())
}

impl Report {
    /// Prints the table.
    pub fn print(&self) {
        println!(
            "\n{} — {} — {}\n{}",
            self.scenario, self.date, self.machine, self.command
        );
        println!(
            "{:<20} {:<22} {:>6} {:>8} {:>6} {:>9} {:>6} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8}  processes (peak RSS MiB, CPU %, CPU per reading)",
            "system",
            "path",
            "pts",
            "offer/s",
            "recv",
            "sent",
            "lost",
            "dup",
            "sust/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        for p in &self.phases {
            let procs: Vec<String> = p
                .processes
                .iter()
                .map(|u| {
                    format!(
                        "{} {:.1} / {:.0}% / {:.0} us",
                        u.name, u.peak_rss_mib, u.cpu_percent, u.cpu_us_per_reading
                    )
                })
                .collect();
            println!(
                "{:<20} {:<22} {:>6} {:>8.0} {:>6} {:>9} {:>6} {:>5} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {}",
                p.system,
                p.path,
                p.patients,
                p.offered_per_s,
                p.receivers,
                p.sent,
                p.lost,
                p.duplicated,
                p.sustained_per_s,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.p999_ms,
                p.latency.max_ms,
                procs.join(", ")
            );
            if p.ack_latency.count > 0 {
                println!(
                    "{:<20} {:<22} {:>63} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                    "",
                    "  publish -> PUBACK",
                    "",
                    p.ack_latency.p50_ms,
                    p.ack_latency.p99_ms,
                    p.ack_latency.p999_ms,
                    p.ack_latency.max_ms,
                );
            }
        }
        for r in &self.ratios {
            println!("ratio: {r}");
        }
        for n in &self.notes {
            println!("{n}");
        }
    }

    /// Writes `report.json` and `latency.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("latency.svg"), self.svg())?;
        println!(
            "wrote {}/report.json and {}/latency.svg",
            dir.display(),
            dir.display()
        );
        Ok(())
    }

    /// Latency by percentile, one line per phase; the x axis counts nines (0 %, 90 %, 99 %,
    /// 99.9 %, …) as HdrHistogram's plots do, the y axis is logarithmic milliseconds.
    pub fn svg(&self) -> String {
        const W: f64 = 1000.0;
        const H: f64 = 520.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 340.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 50.0;
        const COLOURS: [&str; 8] = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        ];
        let nines = |p: f64| -(1.0 - p / 100.0).max(1e-5).log10();
        let x_max = 5.0;
        let curves: Vec<&Phase> = self.phases.iter().filter(|p| p.latency.count > 0).collect();
        let values = curves
            .iter()
            .flat_map(|p| p.latency.curve.iter().map(|&(_, ms)| ms));
        let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let lo = if lo.is_finite() && lo > 0.0 {
            10f64.powf(lo.log10().floor())
        } else {
            0.01
        };
        let hi = if hi > lo {
            10f64.powf(hi.log10().ceil())
        } else {
            lo * 10.0
        };
        let px = |n: f64| LEFT + (W - LEFT - RIGHT) * n / x_max;
        let py = |ms: f64| {
            let f = (ms.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
            H - BOTTOM - (H - TOP - BOTTOM) * f
        };
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15">{} — latency by percentile ({})</text>
"#,
            escape(&self.scenario),
            escape(&self.date)
        );
        for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
            .iter()
            .enumerate()
        {
            let x = px(i as f64);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 18.0
            );
        }
        let mut decade = lo;
        while decade <= hi * 1.0001 {
            let y = py(decade);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                trim(decade)
            );
            decade *= 10.0;
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 12.0
        );
        for (i, p) in curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = p
                .latency
                .curve
                .iter()
                .map(|&(pct, ms)| format!("{:.1},{:.1}", px(nines(pct)), py(ms)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            let y = TOP + 10.0 + 34.0 * i as f64;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" fill="#555">{} pts, {:.0}/s, {} recv: p99 {:.3} ms</text>"##,
                W - RIGHT + 12.0,
                y - 4.0,
                W - RIGHT + 32.0,
                y,
                escape(&p.system),
                W - RIGHT + 32.0,
                y + 15.0,
                p.patients,
                p.offered_per_s,
                p.receivers,
                p.latency.p99_ms
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_plot() {
        let mut h = super::super::track::histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 0.5).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 0.99).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 1.0).abs() < 0.01, "{l:?}");
        let report = Report {
            scenario: "steady <test>".into(),
            command: String::new(),
            date: "today".into(),
            machine: machine(),
            phases: vec![Phase {
                system: "wardlink".into(),
                path: "publish -> dashboard".into(),
                patients: 1,
                offered_per_s: 1.0,
                receivers: 1,
                duration_s: 1.0,
                scheduled: 1000,
                sent: 1000,
                max_send_lag_ms: 0.0,
                expected: 1000,
                delivered: 1000,
                lost: 0,
                duplicated: 0,
                sustained_per_s: 1.0,
                latency: l.clone(),
                ack_latency: l,
                processes: vec![],
            }],
            ratios: vec![],
            notes: vec![],
        };
        let svg = report.svg();
        assert!(svg.contains("<polyline") && svg.contains("steady &lt;test&gt;"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
