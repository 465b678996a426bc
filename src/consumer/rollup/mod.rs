//! Rollups: per (url, producer), hourly and daily counts and latency histograms, and each
//! series' current state (up or down, since when, the last error). The status page reads
//! these instead of the raw events, so that it stays fast over a long history.
//!
//! This module computes them from the events a transaction stores (`Rollups::of`); the
//! delta that transaction stores with them, and the merging of committed deltas for a
//! fold, are `delta`'s: so a retried or duplicated event is counted exactly as often as it
//! is stored: once. It never does I/O.

mod delta;
mod recent;

use chrono::{DateTime, Utc};

use crate::consumer::series_hash::SeriesMap;
use crate::event::ErrorKind;
pub(crate) use delta::{BucketKey, Delta, Folded};
use recent::add_newest;
pub(crate) use recent::{Newest, RECENT_CHECKS, RECENT_ERROR_CHARS, RecentCheck, merge_recent};

/// Failed checks per kind, in [`ErrorKind::ALL`] order (the `error_kinds` column).
type KindCounts = [i64; ErrorKind::ALL.len()];

/// Upper bounds (exclusive, milliseconds) of the latency histogram's buckets; a last
/// bucket holds everything from 56 s up. Roughly ×1.4 apart: a percentile read from it is
/// within its bucket, and min/max per bucket row narrow the ends.
pub const LATENCY_BOUNDS_MS: [i32; 32] = [
    1, 2, 3, 4, 5, 7, 10, 14, 20, 28, 40, 56, 80, 110, 160, 220, 320, 450, 640, 900, 1300, 1800,
    2500, 3600, 5000, 7000, 10000, 14000, 20000, 28000, 40000, 56000,
];

/// Buckets in a latency histogram: one per bound, and one above the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// What the rollups need of one stored event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RollupInput {
    /// The record's partition: a URL's alert state remembers it (the stale sweep is done
    /// by the consumer holding it).
    pub(crate) partition: i32,
    /// The record's offset: the checked write path keeps only the inputs of rows it stored.
    pub(crate) offset: i64,
    pub(crate) url: std::sync::Arc<str>,
    /// The vantage point; empty for the Python program's records, which had none.
    pub(crate) producer: std::sync::Arc<str>,
    pub(crate) ts: DateTime<Utc>,
    pub(crate) up: bool,
    pub(crate) elapsed: Option<i32>,
    pub(crate) status: Option<i32>,
    pub(crate) error: Option<String>,
    pub(crate) error_kind: Option<&'static str>,
    pub(crate) cert_expires_at: Option<DateTime<Utc>>,
    /// DNS, connect, TLS and time to first byte, ms (the site page's latest checks).
    pub(crate) phases: [Option<i32>; 4],
    /// Checked before its URL was removed from the targets list (and read after): kept in
    /// the rollups (history), left out of the URL's state and alerts.
    pub(crate) removed: bool,
    /// The target's name, group and visibility.
    pub(crate) labels: crate::consumer::labels::Labels,
    /// Made during a maintenance window of its URL: counted apart in the rollups (no
    /// uptime, latency or error counts of it), never deciding an alert.
    pub(crate) maintenance: bool,
}

/// One series' figures over one hour or one day.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) checks: i64,
    pub(crate) up_checks: i64,
    pub(crate) error_kinds: KindCounts,
    /// The elapsed time of the up checks (a timeout's time says nothing of the site's speed).
    pub(crate) latency_hist: [i64; LATENCY_BUCKETS],
    pub(crate) latency_min_ms: Option<i32>,
    pub(crate) latency_max_ms: Option<i32>,
    pub(crate) latency_sum_ms: i64,
    pub(crate) last_checked_at: DateTime<Utc>,
    pub(crate) last_status: Option<i32>,
    /// Checks made during a maintenance window: counted apart, in no figure above.
    pub(crate) maint_checks: i64,
}

/// A series' latest state in this transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeriesState {
    pub(crate) up: bool,
    /// The first check of the latest run of equal verdicts seen here.
    pub(crate) since: DateTime<Utc>,
    /// The verdict changed within this transaction: `since` stands whatever is stored.
    pub(crate) changed: bool,
    pub(crate) last_checked_at: DateTime<Utc>,
    pub(crate) last_status: Option<i32>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_kind: Option<&'static str>,
    pub(crate) last_elapsed_ms: Option<i32>,
    pub(crate) cert_expires_at: Option<DateTime<Utc>>,
    /// Its newest checks, newest first (at most [`RECENT_CHECKS`]).
    pub(crate) recent: Vec<RecentCheck>,
}

/// (url, producer), borrowed from the inputs.
pub(crate) type SeriesKey<'a> = (&'a str, &'a str);

/// What one transaction adds, per series: its hourly buckets (the days are their sums,
/// made when folding), its latest state and its newest checks. One map, so that an event
/// costs one lookup.
#[derive(Debug, Default)]
pub(crate) struct Rollups<'a> {
    pub(crate) series: SeriesMap<SeriesKey<'a>, SeriesRollup<'a>>,
}

/// One series in one transaction.
#[derive(Debug)]
pub(crate) struct SeriesRollup<'a> {
    /// (start of the hour, its bucket): a transaction spans an hour or two, a short list.
    pub(crate) hours: Vec<(DateTime<Utc>, Bucket)>,
    /// Its state (its `recent` left empty: see `newest`); None when each of its checks
    /// here was of a removed target.
    pub(crate) state: Option<SeriesState>,
    pub(crate) newest: Newest<'a>,
}

impl<'a> Rollups<'a> {
    /// The rollups of `inputs`, each series' in the order they were stored (offset order).
    pub(crate) fn of(inputs: impl IntoIterator<Item = &'a RollupInput>) -> Rollups<'a> {
        let mut r = Rollups::default();
        for e in inputs {
            let s = r
                .series
                .entry((&*e.url, &*e.producer))
                .or_insert_with(|| SeriesRollup {
                    hours: Vec::with_capacity(1),
                    state: None,
                    newest: [None; RECENT_CHECKS],
                });
            add(&mut s.hours, truncate(e.ts, 3600), e);
            if e.removed {
                continue;
            }
            match &mut s.state {
                Some(state) => state.follow(e),
                None => s.state = Some(SeriesState::first(e)),
            }
            add_newest(&mut s.newest, e);
        }
        r
    }

    /// Nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

fn add(hours: &mut Vec<(DateTime<Utc>, Bucket)>, hour: DateTime<Utc>, e: &RollupInput) {
    let at = match hours.iter().position(|(h, _)| *h == hour) {
        Some(at) => at,
        None => {
            hours.push((hour, Bucket::starting(e)));
            hours.len() - 1
        }
    };
    let b = &mut hours[at].1;
    if e.maintenance {
        b.maint_checks += 1;
        return;
    }
    b.checks += 1;
    if e.ts >= b.last_checked_at {
        b.last_checked_at = e.ts;
        b.last_status = e.status;
    }
    if let Some(kind) = error_kind(e) {
        b.error_kinds[kind] += 1;
    }
    if !e.up {
        return;
    }
    b.up_checks += 1;
    if let Some(ms) = e.elapsed {
        b.latency_hist[latency_bucket(ms)] += 1;
        b.latency_min_ms = Some(b.latency_min_ms.map_or(ms, |m| m.min(ms)));
        b.latency_max_ms = Some(b.latency_max_ms.map_or(ms, |m| m.max(ms)));
        b.latency_sum_ms += i64::from(ms);
    }
}

impl Bucket {
    /// An empty bucket whose first check is `e`.
    fn starting(e: &RollupInput) -> Bucket {
        Bucket {
            checks: 0,
            up_checks: 0,
            error_kinds: [0; ErrorKind::ALL.len()],
            latency_hist: [0; LATENCY_BUCKETS],
            latency_min_ms: None,
            latency_max_ms: None,
            latency_sum_ms: 0,
            last_checked_at: e.ts,
            last_status: e.status,
            maint_checks: 0,
        }
    }
}

/// The index in [`ErrorKind::ALL`] of a failed check's kind; an error without a kind (the
/// Python program's) is "other".
fn error_kind(e: &RollupInput) -> Option<usize> {
    match (e.error_kind, &e.error) {
        (Some(kind), _) => Some(ErrorKind::from_name(kind).unwrap_or(ErrorKind::Other) as usize),
        (None, Some(_)) => Some(ErrorKind::Other as usize),
        (None, None) => None,
    }
}

impl SeriesState {
    fn first(e: &RollupInput) -> SeriesState {
        SeriesState {
            up: e.up,
            since: e.ts,
            changed: false,
            last_checked_at: e.ts,
            last_status: e.status,
            last_error: e.error.clone(),
            last_error_kind: e.error_kind,
            last_elapsed_ms: e.elapsed,
            cert_expires_at: e.cert_expires_at,
            recent: Vec::new(),
        }
    }

    /// The next event of the series. One arriving older than the latest (a producer's
    /// clock, a retry) counts in the buckets but does not move the state back.
    fn follow(&mut self, e: &RollupInput) {
        if e.ts < self.last_checked_at {
            return;
        }
        if e.up != self.up {
            self.up = e.up;
            self.since = e.ts;
            self.changed = true;
        }
        self.last_checked_at = e.ts;
        self.last_status = e.status;
        self.last_error = e.error.clone();
        self.last_error_kind = e.error_kind;
        self.last_elapsed_ms = e.elapsed;
        if e.cert_expires_at.is_some() {
            self.cert_expires_at = e.cert_expires_at;
        }
    }
}

impl Bucket {
    fn merge(&mut self, o: &Bucket) {
        self.maint_checks += o.maint_checks;
        self.checks += o.checks;
        self.up_checks += o.up_checks;
        for (a, b) in self.error_kinds.iter_mut().zip(&o.error_kinds) {
            *a += b;
        }
        for (a, b) in self.latency_hist.iter_mut().zip(&o.latency_hist) {
            *a += b;
        }
        self.latency_min_ms = combine(self.latency_min_ms, o.latency_min_ms, i32::min);
        self.latency_max_ms = combine(self.latency_max_ms, o.latency_max_ms, i32::max);
        self.latency_sum_ms += o.latency_sum_ms;
        if o.last_checked_at >= self.last_checked_at {
            self.last_checked_at = o.last_checked_at;
            self.last_status = o.last_status;
        }
    }
}

/// `f` of both when both are there, else whichever is (a least or greatest of the two).
pub(crate) fn combine(a: Option<i32>, b: Option<i32>, f: fn(i32, i32) -> i32) -> Option<i32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

impl SeriesState {
    /// The state after a later transaction's `later` (its own `since` and `changed`
    /// relative to its first check).
    fn then(&mut self, mut later: SeriesState) {
        merge_recent(&mut self.recent, std::mem::take(&mut later.recent));
        if later.last_checked_at < self.last_checked_at {
            return;
        }
        if later.changed || later.up != self.up {
            self.since = later.since;
            self.changed = true;
        }
        let cert = later.cert_expires_at.or(self.cert_expires_at);
        let (since, changed) = (self.since, self.changed);
        let recent = std::mem::take(&mut self.recent);
        *self = SeriesState {
            since,
            changed,
            cert_expires_at: cert,
            recent,
            ..later
        };
    }
}

/// The start of the hour or day (UTC) that `t` is in.
pub(crate) fn truncate(t: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(seconds), 0).unwrap_or(t)
}

/// The histogram bucket of a latency.
pub(crate) fn latency_bucket(ms: i32) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|b| *b <= ms)
}

/// The `q` quantile (0..1) of a latency histogram, in ms: linear within the bucket it
/// falls in, kept within the observed `min`..`max`. None for an empty histogram.
pub fn percentile(hist: &[i64], q: f64, min: Option<i32>, max: Option<i32>) -> Option<f64> {
    let total: i64 = hist.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0i64;
    for (i, &n) in hist.iter().enumerate() {
        if n <= 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let low = if i == 0 {
                0.0
            } else {
                f64::from(LATENCY_BOUNDS_MS[i - 1])
            };
            let high = LATENCY_BOUNDS_MS.get(i).map_or(low, |b| f64::from(*b));
            let within = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
            let mut v = low + (high - low) * within;
            if let Some(m) = min {
                v = v.max(f64::from(m));
            }
            if let Some(m) = max {
                v = v.min(f64::from(m));
            }
            return Some(v);
        }
        seen += n;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests;
