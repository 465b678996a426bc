//! Each series' sliding windows, kept in PostgreSQL (`series_windows`) so that the status
//! page reads one row per series instead of every hourly and daily rollup in its windows
//! (at 10,000 URLs × 3 vantage points that was 1.6 million rows and ~10 s of PostgreSQL's
//! time per whole read): checks, up checks and the latency histogram over the last 24
//! hours, 7 days and 30 days.
//!
//! The windows end at an [`Alignment`] (the current hour and day). A fold adds what it
//! folds into the windows that hold its buckets ([`window_deltas`]); when the hour or the
//! day turns, the buckets that leave are taken out and those that enter are put in, from
//! the rollup tables themselves (`store::windows`). So a window always equals the sum of
//! the rollup rows in its range. Pure: this module never does I/O.

use chrono::{DateTime, TimeDelta, Utc};

use crate::consumer::rollup::{Bucket, Folded, LATENCY_BUCKETS};
use crate::consumer::series_hash::SeriesMap;

/// Days in the daily uptime strip (the page's 90-day bar, read for the URLs shown).
pub(crate) const STRIP_DAYS: usize = 90;

/// Where the windows end: the last hour of the 24-hour window and the last day of the
/// daily ones (the current hour and UTC day when they were last moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Alignment {
    pub(crate) hour: DateTime<Utc>,
    pub(crate) day: DateTime<Utc>,
}

/// Checks, up checks and the latency histogram of the up checks over some buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) checks: i64,
    pub(crate) up: i64,
    pub(crate) hist: [i64; LATENCY_BUCKETS],
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            checks: 0,
            up: 0,
            hist: [0; LATENCY_BUCKETS],
        }
    }
}

impl Figures {
    fn add(&mut self, b: &Bucket) {
        self.checks += b.checks;
        self.up += b.up_checks;
        for (sum, n) in self.hist.iter_mut().zip(&b.latency_hist) {
            *sum += n;
        }
    }
}

/// What a fold adds to one series' windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WindowDelta {
    pub(crate) hours_24: Figures,
    pub(crate) days_7: Figures,
    pub(crate) days_30: Figures,
}

impl Alignment {
    /// The windows' end at `now`.
    pub(crate) fn at(now: DateTime<Utc>) -> Alignment {
        Alignment {
            hour: crate::consumer::rollup::truncate(now, 3600),
            day: crate::consumer::rollup::truncate(now, 86_400),
        }
    }

    /// Whether an hourly bucket starting at `b` is in the 24-hour window.
    pub(crate) fn in_hours(&self, b: DateTime<Utc>) -> bool {
        b <= self.hour && b > self.hour - TimeDelta::hours(24)
    }

    /// Whether a daily bucket starting at `d` is in the window of `days` days.
    pub(crate) fn in_days(&self, d: DateTime<Utc>, days: i64) -> bool {
        d <= self.day && d > self.day - TimeDelta::days(days)
    }
}

/// Per series, what `folded` adds to the windows ending at `at`; series whose buckets
/// all fall outside every window are left out.
pub(crate) fn window_deltas(
    folded: &Folded,
    at: Alignment,
) -> SeriesMap<(&str, &str), WindowDelta> {
    let mut deltas: SeriesMap<(&str, &str), WindowDelta> = SeriesMap::default();
    for ((url, producer, start), b) in folded.hourly() {
        if at.in_hours(start) {
            let d = deltas.entry((url, producer)).or_default();
            d.hours_24.add(b);
        }
    }
    for ((url, producer, start), b) in folded.daily() {
        if !at.in_days(start, 30) {
            continue;
        }
        let d = deltas.entry((url, producer)).or_default();
        d.days_30.add(b);
        if at.in_days(start, 7) {
            d.days_7.add(b);
        }
    }
    deltas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
    }

    fn bucket(checks: i64, up: i64, slot: usize) -> Bucket {
        let mut latency_hist = [0; LATENCY_BUCKETS];
        latency_hist[slot] = up;
        Bucket {
            checks,
            up_checks: up,
            error_kinds: Default::default(),
            latency_hist,
            latency_min_ms: None,
            latency_max_ms: None,
            latency_sum_ms: 0,
            last_checked_at: at("2026-11-30T10:00:00Z"),
            last_status: None,
            maint_checks: 0,
        }
    }

    #[test]
    fn the_windows_take_the_buckets_in_their_range_only() {
        let now = Alignment::at(at("2026-11-30T10:20:00Z"));
        assert_eq!(now.hour, at("2026-11-30T10:00:00Z"));
        assert_eq!(now.day, at("2026-11-30T00:00:00Z"));
        let mut folded = Folded::default();
        let key = |t: &str| ("u", "p", at(t));
        // Hours: the current one, the oldest still in, the first out, one in the future.
        for (t, n) in [
            ("2026-11-30T10:00:00Z", 1),
            ("2026-11-29T11:00:00Z", 10),
            ("2026-11-29T10:00:00Z", 100),
            ("2026-11-30T11:00:00Z", 1000),
        ] {
            folded.insert(false, key(t), bucket(n, n, 3));
        }
        // Days: today, 6 and 7 days back, 29 and 30 back, 89 and 90 back.
        for (days, n) in [
            (0, 1),
            (6, 2),
            (7, 4),
            (29, 8),
            (30, 16),
            (89, 32),
            (90, 64),
        ] {
            let d = now.day - TimeDelta::days(days);
            folded.insert(true, ("u", "p", d), bucket(n, n - 1, 5));
        }
        let deltas = window_deltas(&folded, now);
        let d = &deltas[&("u", "p")];
        assert_eq!((d.hours_24.checks, d.hours_24.hist[3]), (11, 11));
        assert_eq!((d.days_7.checks, d.days_7.up), (1 + 2, 1));
        assert_eq!(d.days_30.checks, 1 + 2 + 4 + 8);
        assert_eq!(d.days_30.hist[5], 1 + 3 + 7);
    }
}
