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

#[derive(Debug)]
enum Series {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
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
                _ => "counter",
            };
            // Writing into a String cannot fail.
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (value, s) in &f.series {
                let n = match s {
                    Series::Counter(c) => c.get().to_string(),
                    Series::Gauge(g) => g.get().to_string(),
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
}
