//! The rollup rows the page has read, kept between reads: a read asks PostgreSQL only for
//! the buckets that can still change (this hour, today), and everything again every
//! [`FULL_EVERY`] (what a backlog written late changed in older buckets shows by then).
//!
//! This module owns what is kept and when it is stale. It never talks to PostgreSQL and
//! never computes a window (that is `super::report`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::report::{DAYS, HOURS, Point};
use crate::consumer::rollup::{LATENCY_BUCKETS, percentile, truncate};
use crate::consumer::store::{Grain, RollupRow};

/// Every rollup of the windows is read again this often.
pub(crate) const FULL_EVERY: Duration = Duration::from_secs(300);

/// How late an event may be folded after it was made and still be read at once (a later
/// one is read by the next whole read).
const AFTER_TURN: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// One hour's or day's rollup, with its chart point worked out once.
#[derive(Debug, Clone)]
pub(crate) struct KeptRow {
    pub(crate) checks: i64,
    pub(crate) up_checks: i64,
    pub(crate) hist: [i64; LATENCY_BUCKETS],
    pub(crate) min: Option<i32>,
    pub(crate) max: Option<i32>,
    /// None until [`RollupCache::work_out_points`]: the percentiles are worked out off the
    /// runtime's thread, not while the rows stream in on it.
    pub(crate) point: Option<Point>,
}

impl KeptRow {
    fn of(r: &RollupRow) -> KeptRow {
        let mut hist = [0; LATENCY_BUCKETS];
        for (slot, n) in hist.iter_mut().zip(&r.latency_hist) {
            *slot = *n;
        }
        KeptRow {
            checks: r.checks,
            up_checks: r.up_checks,
            hist,
            min: r.latency_min_ms,
            max: r.latency_max_ms,
            point: None,
        }
    }

    fn point(&self) -> Point {
        let q = |q| percentile(&self.hist, q, self.min, self.max).map(f64::round);
        Point {
            checks: self.checks,
            up_checks: self.up_checks,
            p50_ms: q(0.5),
            p95_ms: q(0.95),
        }
    }
}

/// One series' kept rows, by bucket.
#[derive(Debug, Default)]
pub(crate) struct SeriesRows {
    pub(crate) hours: BTreeMap<DateTime<Utc>, KeptRow>,
    pub(crate) days: BTreeMap<DateTime<Utc>, KeptRow>,
}

/// The kept rows of every series, by (url, producer).
#[derive(Debug, Default)]
pub(crate) struct RollupCache {
    pub(crate) series: HashMap<(String, String), SeriesRows>,
    /// When everything was last read.
    full_at: Option<Instant>,
    /// The database's time at the last read.
    last_now: Option<DateTime<Utc>>,
}

/// The rollups a read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadPlan {
    pub(crate) hours_from: DateTime<Utc>,
    pub(crate) days_from: DateTime<Utc>,
    /// Everything the windows hold (not only what can still change).
    pub(crate) whole: bool,
}

/// The first hour and the first day the page shows at `now`.
pub(crate) fn windows(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (
        truncate(now, 3600) - chrono::Duration::hours(HOURS as i64 - 1),
        truncate(now, 86_400) - chrono::Duration::days(DAYS as i64 - 1),
    )
}

impl RollupCache {
    /// What to read at `now`: the whole windows when everything is due again (then the
    /// kept rows are dropped), otherwise the buckets that can have changed since the last
    /// read: from the one that held its time less [`AFTER_TURN`] (events are folded a
    /// little after they were made), so the current hour and day alone most of the time.
    pub(crate) fn plan_read(&mut self, now: DateTime<Utc>) -> ReadPlan {
        let (first_hour, first_day) = windows(now);
        if self.full_at.is_none_or(|at| at.elapsed() >= FULL_EVERY) {
            self.series.clear();
            self.full_at = None;
            return ReadPlan {
                hours_from: first_hour,
                days_from: first_day,
                whole: true,
            };
        }
        let since = self.last_now.unwrap_or(now).min(now) - AFTER_TURN;
        let from = |seconds: i64| truncate(since, seconds);
        ReadPlan {
            hours_from: from(3600).max(first_hour),
            days_from: from(86_400).max(first_day),
            whole: false,
        }
    }

    /// Keep `row` (in place of the same bucket's older copy).
    pub(crate) fn keep(&mut self, grain: Grain, row: RollupRow) {
        let kept = KeptRow::of(&row);
        let series = self.series.entry((row.url, row.producer)).or_default();
        let buckets = match grain {
            Grain::Hour => &mut series.hours,
            Grain::Day => &mut series.days,
        };
        buckets.insert(row.bucket, kept);
    }

    /// The read planned at `now` is done: forget what left the windows; a whole read
    /// counts from now.
    pub(crate) fn read_done(&mut self, now: DateTime<Utc>, whole: bool) {
        let (first_hour, first_day) = windows(now);
        for series in self.series.values_mut() {
            series.hours.retain(|bucket, _| *bucket >= first_hour);
            series.days.retain(|bucket, _| *bucket >= first_day);
        }
        self.series
            .retain(|_, s| !s.hours.is_empty() || !s.days.is_empty());
        if whole {
            self.full_at = Some(Instant::now());
        }
        self.last_now = Some(now);
    }

    /// The chart point of every row read since the last call.
    pub(crate) fn work_out_points(&mut self) {
        for series in self.series.values_mut() {
            for row in series.hours.values_mut().chain(series.days.values_mut()) {
                if row.point.is_none() {
                    row.point = Some(row.point());
                }
            }
        }
    }

    /// Everything is read again next time (after a failed read: what was read may be half).
    pub(crate) fn forget(&mut self) {
        self.series.clear();
        self.full_at = None;
        self.last_now = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(url: &str, bucket: DateTime<Utc>, checks: i64) -> RollupRow {
        RollupRow {
            url: url.into(),
            producer: "p".into(),
            bucket,
            checks,
            up_checks: checks,
            latency_hist: vec![0, checks],
            latency_min_ms: Some(1),
            latency_max_ms: Some(2),
        }
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
    }

    #[test]
    fn the_first_read_is_whole_then_only_buckets_that_can_change() {
        let mut cache = RollupCache::default();
        let now = at("2026-11-30T10:20:00Z");
        let first = cache.plan_read(now);
        assert_eq!(
            (first.hours_from, first.days_from, first.whole),
            (windows(now).0, windows(now).1, true)
        );
        cache.keep(Grain::Hour, row("a", at("2026-11-30T09:00:00Z"), 5));
        cache.read_done(now, true);
        let next = cache.plan_read(now);
        assert_eq!(
            (next.hours_from, next.days_from, next.whole),
            (
                at("2026-11-30T10:00:00Z"),
                at("2026-11-30T00:00:00Z"),
                false
            )
        );
        // The next read after the hour and the day turned: the hour and day before too.
        cache.read_done(at("2026-11-30T23:59:30Z"), false);
        let turned = cache.plan_read(at("2026-12-01T00:00:30Z"));
        assert_eq!(
            (turned.hours_from, turned.days_from),
            (at("2026-11-30T23:00:00Z"), at("2026-11-30T00:00:00Z"))
        );
        // However long nobody looked: from where the last read was.
        let later = cache.plan_read(at("2026-12-01T00:04:00Z"));
        assert_eq!(later.hours_from, at("2026-11-30T23:00:00Z"));
        // A newer copy of a bucket replaces the kept one.
        cache.keep(Grain::Hour, row("a", at("2026-11-30T09:00:00Z"), 7));
        cache.work_out_points();
        let kept = &cache.series[&("a".to_string(), "p".to_string())].hours;
        let points: Vec<_> = kept.values().map(|r| r.point.clone()).collect();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].as_ref().map(|p| p.checks), Some(7));
    }

    #[test]
    fn rows_that_left_the_window_are_forgotten() {
        let mut cache = RollupCache::default();
        let now = at("2026-11-30T10:20:00Z");
        cache.plan_read(now);
        cache.keep(Grain::Hour, row("a", at("2026-11-29T11:00:00Z"), 1));
        cache.keep(Grain::Hour, row("b", at("2026-11-30T10:00:00Z"), 1));
        cache.read_done(at("2026-11-30T11:00:00Z"), true);
        assert_eq!(cache.series.len(), 1, "a's only hour is 24 h old now");
        cache.forget();
        assert!(cache.series.is_empty());
        assert!(cache.plan_read(now).whole, "whole again after forget");
    }
}
