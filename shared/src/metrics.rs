//! A small metrics registry rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! Counters and gauges are plain atomics, cheap enough for the per-reading path. A family
//! may carry one label whose values are fixed at registration, so every series exists (at
//! zero) from the start and a scrape shows what could be counted, not only what was.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution over fixed buckets (upper bounds in seconds), for latencies.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, name: &str, out: &mut String) {
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[derive(Debug)]
enum Series {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    label: Option<String>,
    series: Vec<(Option<String>, Series)>,
}

/// A set of metric families.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<Vec<Family>>,
}

/// A gauge family with one label, whose values were fixed at registration.
#[derive(Debug, Clone)]
pub struct LabeledGauge {
    series: Vec<(String, Arc<Gauge>)>,
    other: Arc<Gauge>,
}

impl LabeledGauge {
    /// The gauge for `value`; values not registered share `other`.
    pub fn with(&self, value: &str) -> &Gauge {
        self.series
            .iter()
            .find(|(v, _)| v == value)
            .map_or(&self.other, |(_, g)| g)
    }
}

/// A counter family with one label, whose values were fixed at registration.
#[derive(Debug, Clone)]
pub struct LabeledCounter {
    series: Vec<(String, Arc<Counter>)>,
    other: Arc<Counter>,
}

impl LabeledCounter {
    /// The counter for `value`; values not registered count under `other`.
    pub fn with(&self, value: &str) -> &Counter {
        self.series
            .iter()
            .find(|(v, _)| v == value)
            .map_or(&self.other, |(_, c)| c)
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, family: Family) {
        // A poisoned lock only means another thread panicked mid-push; the Vec is still valid.
        let mut f = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.push(family);
    }

    /// Registers a counter without labels.
    pub fn counter(&self, name: &str, help: &str) -> Arc<Counter> {
        let c = Arc::new(Counter::default());
        self.push(Family {
            name: name.into(),
            help: help.into(),
            label: None,
            series: vec![(None, Series::Counter(c.clone()))],
        });
        c
    }

    /// Registers a gauge without labels.
    pub fn gauge(&self, name: &str, help: &str) -> Arc<Gauge> {
        let g = Arc::new(Gauge::default());
        self.push(Family {
            name: name.into(),
            help: help.into(),
            label: None,
            series: vec![(None, Series::Gauge(g.clone()))],
        });
        g
    }

    /// Registers a histogram without labels; `bounds` are bucket upper bounds in seconds,
    /// ascending.
    pub fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Arc<Histogram> {
        let h = Arc::new(Histogram::new(bounds));
        self.push(Family {
            name: name.into(),
            help: help.into(),
            label: None,
            series: vec![(None, Series::Histogram(h.clone()))],
        });
        h
    }

    /// Registers a counter family with one label and its possible values (plus `other`).
    pub fn labeled_counter(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> LabeledCounter {
        let series: Vec<(String, Arc<Counter>)> = values
            .iter()
            .map(|v| ((*v).to_owned(), Arc::new(Counter::default())))
            .collect();
        let other = Arc::new(Counter::default());
        let mut all: Vec<(Option<String>, Series)> = series
            .iter()
            .map(|(v, c)| (Some(v.clone()), Series::Counter(c.clone())))
            .collect();
        all.push((Some("other".into()), Series::Counter(other.clone())));
        self.push(Family {
            name: name.into(),
            help: help.into(),
            label: Some(label.into()),
            series: all,
        });
        LabeledCounter { series, other }
    }

    /// Registers a gauge family with one label and its possible values (plus `other`).
    pub fn labeled_gauge(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> LabeledGauge {
        let series: Vec<(String, Arc<Gauge>)> = values
            .iter()
            .map(|v| ((*v).to_owned(), Arc::new(Gauge::default())))
            .collect();
        let other = Arc::new(Gauge::default());
        let mut all: Vec<(Option<String>, Series)> = series
            .iter()
            .map(|(v, g)| (Some(v.clone()), Series::Gauge(g.clone())))
            .collect();
        all.push((Some("other".into()), Series::Gauge(other.clone())));
        self.push(Family {
            name: name.into(),
            help: help.into(),
            label: Some(label.into()),
            series: all,
        });
        LabeledGauge { series, other }
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        for f in families.iter() {
            let kind = match f.series.first() {
                Some((_, Series::Gauge(_))) => "gauge",
                Some((_, Series::Histogram(_))) => "histogram",
                _ => "counter",
            };
            // Writing into a String cannot fail.
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (value, s) in &f.series {
                let n = match s {
                    Series::Counter(c) => c.get().to_string(),
                    Series::Gauge(g) => g.get().to_string(),
                    Series::Histogram(h) => {
                        h.render(&f.name, &mut out);
                        continue;
                    }
                };
                match (&f.label, value) {
                    (Some(l), Some(v)) => {
                        let _ = writeln!(out, "{}{{{l}=\"{v}\"}} {n}", f.name);
                    }
                    _ => {
                        let _ = writeln!(out, "{} {n}", f.name);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let r = Registry::new();
        let c = r.counter("x_total", "Things.");
        let g = r.gauge("depth", "Depth.");
        let l = r.labeled_counter("rej_total", "Rejected.", "reason", &["a", "b"]);
        c.add(3);
        g.set(-2);
        l.with("b").inc();
        l.with("zzz").inc();
        let text = r.render();
        assert!(text.contains("# TYPE x_total counter\nx_total 3\n"));
        assert!(text.contains("# TYPE depth gauge\ndepth -2\n"));
        assert!(text.contains("rej_total{reason=\"a\"} 0\n"));
        assert!(text.contains("rej_total{reason=\"b\"} 1\n"));
        assert!(text.contains("rej_total{reason=\"other\"} 1\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let r = Registry::new();
        let h = r.histogram("lat_seconds", "Latency.", &[0.001, 0.01]);
        h.observe(std::time::Duration::from_micros(500));
        h.observe(std::time::Duration::from_millis(5));
        h.observe(std::time::Duration::from_millis(5));
        h.observe(std::time::Duration::from_secs(1));
        assert_eq!(h.count(), 4);
        let text = r.render();
        assert!(text.contains("# TYPE lat_seconds histogram\n"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.01\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_sum 1.0105\n"), "{text}");
        assert!(text.contains("lat_seconds_count 4\n"), "{text}");
    }
}
