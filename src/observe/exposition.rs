//! The Prometheus text exposition format (0.0.4): the metric types both programs keep
//! ([`Counter`], [`Gauge`], [`Histogram`], lock-free, updated on hot paths) and the
//! writer that renders them for a scrape ([`Exposition`]).
//!
//! Why not the `prometheus-client` crate: it writes OpenMetrics only, whose counter
//! `# TYPE` lines name the family without `_total`; read as the 0.0.4 text format (what
//! `promtool check metrics` reads, and what a scraper gets without an OpenMetrics
//! `Accept`), every counter then comes out untyped and fails the lint. The format is a
//! few line rules, kept here with their tests.
//!
//! This module owns the format only: it knows no metric of either program.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type of what [`Exposition::finish`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (an `f64`, stored as its bits).
#[derive(Debug)]
pub struct Gauge(AtomicU64);

impl Default for Gauge {
    fn default() -> Gauge {
        Gauge::new(0.0)
    }
}

impl Gauge {
    /// A gauge at `v`.
    pub fn new(v: f64) -> Gauge {
        Gauge(AtomicU64::new(v.to_bits()))
    }

    /// Set it to `v`.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Observations counted into fixed buckets (upper bounds, ascending), with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, plus one for what is above the last bound: not cumulative, so an
    /// observation is one increment; the cumulative counts are made when rendering.
    counts: Box<[AtomicU64]>,
    sum: Gauge,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds; +Inf is implied).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: Gauge::default(),
        }
    }

    /// Count one observation of `v`.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        // The sum is the only read-modify-write of a float: a CAS loop, uncontended in practice.
        let _ = self
            .sum
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

/// The type of a metric family, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// `_bucket`, `_sum` and `_count` series.
    Histogram,
}

/// A scrape's text, written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition, with room for about `bytes`.
    pub fn with_capacity(bytes: usize) -> Exposition {
        Exposition {
            out: String::with_capacity(bytes),
        }
    }

    /// Start a family: its `# HELP` and `# TYPE` lines. Every sample of it follows.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample. `labels` is what [`labels`] made (or empty).
    pub fn sample(&mut self, name: &str, labels: &str, value: f64) {
        self.sample_with(name, labels, "", value);
    }

    /// One sample with one more label, e.g. `phase="tls"` (both parts already escaped):
    /// no label string is built per sample.
    pub fn sample_with(&mut self, name: &str, labels: &str, more: &str, value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() || !more.is_empty() {
            self.out.push('{');
            self.out.push_str(labels);
            if !labels.is_empty() && !more.is_empty() {
                self.out.push(',');
            }
            self.out.push_str(more);
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A histogram's samples: cumulative `_bucket`s up to `le="+Inf"`, `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, labels: &str, h: &Histogram) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match h.bounds.get(i) {
                Some(b) => {
                    let mut s = String::new();
                    push_value(&mut s, *b);
                    s
                }
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                self.out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        self.out.push_str(name);
        self.out.push_str("_sum");
        self.out.push_str(&braces(labels));
        self.out.push(' ');
        push_value(&mut self.out, h.sum.get());
        // The +Inf bucket's count, read once above: _count always equals it.
        let _ = writeln!(self.out, "\n{name}_count{} {cumulative}", braces(labels));
    }

    /// The text to serve, with [`CONTENT_TYPE`].
    pub fn finish(self) -> String {
        self.out
    }
}

/// `name="value",...` with the values escaped as the format wants (`\\`, `\"`, `\n`).
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str(r"\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str(r"\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Integers as integers: counts, offsets and timestamps read as they are.
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("url", "https://a/\"x\"\\\n"), ("producer", "p1")]),
            r#"url="https://a/\"x\"\\\n",producer="p1""#
        );
    }

    #[test]
    fn a_family_and_its_samples() {
        let mut e = Exposition::default();
        e.family("probe_success", Kind::Gauge, "Whether the check\nsucceeded");
        e.sample("probe_success", &labels(&[("url", "u")]), 1.0);
        e.sample("probe_duration_seconds", "", 0.25);
        e.sample("x", "", f64::NAN);
        assert_eq!(
            e.finish(),
            "# HELP probe_success Whether the check\\nsucceeded\n# TYPE probe_success gauge\n\
             probe_success{url=\"u\"} 1\nprobe_duration_seconds 0.25\nx NaN\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_equals_inf() {
        static BOUNDS: [f64; 3] = [0.01, 0.1, 1.0];
        let h = Histogram::new(&BOUNDS);
        for v in [0.005, 0.01, 0.05, 0.5, 3.0] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        e.histogram("lat_seconds", "p=\"1\"", &h);
        let text = e.finish();
        assert_eq!(
            text,
            "lat_seconds_bucket{p=\"1\",le=\"0.01\"} 2\nlat_seconds_bucket{p=\"1\",le=\"0.1\"} 3\n\
             lat_seconds_bucket{p=\"1\",le=\"1\"} 4\nlat_seconds_bucket{p=\"1\",le=\"+Inf\"} 5\n\
             lat_seconds_sum{p=\"1\"} 3.565\nlat_seconds_count{p=\"1\"} 5\n"
        );
    }
}
