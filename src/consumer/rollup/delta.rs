//! A transaction's rollups as one row of `rollup_deltas` ([`Delta`]; its stored bytes are
//! `stored`'s), and committed deltas merged in order for a fold ([`Folded`]). Pure: it
//! never does I/O.

mod stored;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Bucket, KindCounts, LATENCY_BUCKETS, RecentCheck, SeriesState};
use crate::consumer::series_hash::SeriesMap;
use crate::event::ErrorKind;

/// A transaction's rollups as stored in `rollup_deltas` (JSON): written with the events in
/// their transaction (one row, cheap), folded into the rollup tables later in batches
/// ([`Folded`]), so that a series' buckets are updated once per fold, not once per
/// transaction. Per series: its state and its hours (days are sums of hours, made by the
/// fold). Owned, times in ms since the epoch. Stored in binary (`stored`); its JSON form
/// (one-letter names, as they repeat) is what older builds stored, and what
/// `rollup_rejects` keeps of a refused series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Delta {
    series: Vec<DeltaSeries>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeltaSeries {
    url: String,
    #[serde(rename = "p")]
    producer: String,
    /// The state: as [`SeriesState`].
    #[serde(rename = "up")]
    up: bool,
    #[serde(rename = "since")]
    since_ms: i64,
    #[serde(rename = "chg")]
    changed: bool,
    #[serde(rename = "l")]
    last_ms: i64,
    #[serde(rename = "ls")]
    last_status: Option<i32>,
    #[serde(rename = "err", default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(rename = "kind", default, skip_serializing_if = "Option::is_none")]
    last_error_kind: Option<String>,
    #[serde(rename = "ms")]
    last_elapsed_ms: Option<i32>,
    #[serde(rename = "cert", default, skip_serializing_if = "Option::is_none")]
    cert_ms: Option<i64>,
    #[serde(rename = "hours")]
    hours: Vec<DeltaHour>,
    /// Its newest checks, newest first (absent in deltas of older builds).
    #[serde(rename = "rc", default, skip_serializing_if = "Vec::is_empty")]
    recent: Vec<RecentCheck>,
    /// Only hours, no state: each of its checks here was of a removed target (kept as
    /// history, as the rows are); the state fields above mean nothing then.
    #[serde(rename = "hist", default, skip_serializing_if = "is_false")]
    history_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeltaHour {
    /// Start of the hour.
    #[serde(rename = "t")]
    start_ms: i64,
    #[serde(rename = "c")]
    checks: i64,
    #[serde(rename = "u")]
    up_checks: i64,
    #[serde(rename = "e")]
    error_kinds: KindCounts,
    /// (bucket, count) of the latency histogram's non-zero buckets.
    #[serde(rename = "h")]
    hist: Vec<(u8, i64)>,
    #[serde(rename = "lo", default, skip_serializing_if = "Option::is_none")]
    min: Option<i32>,
    #[serde(rename = "hi", default, skip_serializing_if = "Option::is_none")]
    max: Option<i32>,
    #[serde(rename = "s")]
    sum: i64,
    #[serde(rename = "l")]
    last_ms: i64,
    #[serde(rename = "ls")]
    last_status: Option<i32>,
    /// Checks made during a maintenance window (absent: none, and in older deltas).
    #[serde(rename = "m", default, skip_serializing_if = "is_zero")]
    maint_checks: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
impl super::Rollups<'_> {
    /// The delta these rollups store (`Rollups::to_stored` writes its bytes without making
    /// it): what a fold reads back.
    pub(crate) fn to_delta(&self) -> Delta {
        let series = self
            .series
            .iter()
            .map(|(key, r)| (key, r, r.state.as_ref()))
            .map(|(key, r, s)| DeltaSeries {
                url: key.0.to_string(),
                producer: key.1.to_string(),
                // A series with history only: its state's fields as the reader leaves them.
                up: s.is_some_and(|s| s.up),
                since_ms: s.map_or(0, |s| s.since.timestamp_millis()),
                changed: s.is_some_and(|s| s.changed),
                last_ms: s.map_or(0, |s| s.last_checked_at.timestamp_millis()),
                last_status: s.and_then(|s| s.last_status),
                last_error: s.and_then(|s| s.last_error.clone()),
                last_error_kind: s.and_then(|s| s.last_error_kind.map(str::to_string)),
                last_elapsed_ms: s.and_then(|s| s.last_elapsed_ms),
                cert_ms: s.and_then(|s| s.cert_expires_at.map(|t| t.timestamp_millis())),
                history_only: s.is_none(),
                hours: r
                    .hours
                    .iter()
                    .map(|(start, b)| DeltaHour {
                        start_ms: start.timestamp_millis(),
                        checks: b.checks,
                        up_checks: b.up_checks,
                        error_kinds: b.error_kinds,
                        hist: b
                            .latency_hist
                            .iter()
                            .enumerate()
                            .filter(|(_, n)| **n != 0)
                            .map(|(i, n)| (i as u8, *n))
                            .collect(),
                        min: b.latency_min_ms,
                        max: b.latency_max_ms,
                        sum: b.latency_sum_ms,
                        last_ms: b.last_checked_at.timestamp_millis(),
                        last_status: b.last_status,
                        maint_checks: b.maint_checks,
                    })
                    .collect(),
                recent: r
                    .newest
                    .iter()
                    .flatten()
                    .map(|e| RecentCheck::of(e))
                    .collect(),
            })
            .collect();
        Delta { series }
    }
}

impl Delta {
    /// Its series, each a delta of its own: a fold that PostgreSQL refuses is folded again
    /// in parts, to find the series at fault.
    pub(crate) fn into_parts(self) -> Vec<Delta> {
        self.series
            .into_iter()
            .map(|s| Delta { series: vec![s] })
            .collect()
    }
}

/// Deltas merged, in the order they were committed: what one fold writes, per series
/// (url, producer). Keyed by series, as the deltas are: a delta's series is looked up
/// once, with the names it owns, and its few hours found in a short list.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    series: SeriesMap<(String, String), FoldedSeries>,
}

/// One series' part of a fold.
#[derive(Debug, Default)]
struct FoldedSeries {
    hours: Vec<(DateTime<Utc>, Bucket)>,
    days: Vec<(DateTime<Utc>, Bucket)>,
    /// None only until its first delta is added.
    state: Option<SeriesState>,
}

/// A bucket's key in the rollup tables: (url, producer, start of the hour or day).
pub(crate) type BucketKey<'a> = (&'a str, &'a str, DateTime<Utc>);

impl Folded {
    /// Add the next delta (a later transaction's).
    pub(crate) fn add(&mut self, delta: Delta) {
        for d in delta.series {
            let folded = self.series.entry((d.url, d.producer)).or_default();
            for h in &d.hours {
                let b = Bucket::of_hour(h);
                // A day starts at a whole second: its start in ms is exact.
                let day_ms = h.start_ms - h.start_ms.rem_euclid(86_400_000);
                merge_bucket(&mut folded.days, from_ms(day_ms), &b);
                merge_bucket(&mut folded.hours, from_ms(h.start_ms), &b);
            }
            if d.history_only {
                continue;
            }
            let kind = d
                .last_error_kind
                .as_deref()
                .map(|k| ErrorKind::from_name(k).unwrap_or(ErrorKind::Other).as_str());
            let s = SeriesState {
                up: d.up,
                since: from_ms(d.since_ms),
                changed: d.changed,
                last_checked_at: from_ms(d.last_ms),
                last_status: d.last_status,
                last_error: d.last_error,
                last_error_kind: kind,
                last_elapsed_ms: d.last_elapsed_ms,
                cert_expires_at: d.cert_ms.map(from_ms),
                recent: d.recent,
            };
            match &mut folded.state {
                Some(state) => state.then(s),
                None => folded.state = Some(s),
            }
        }
    }

    /// The hourly buckets (`rollups_hourly`), in no order.
    pub(crate) fn hourly(&self) -> impl Iterator<Item = (BucketKey<'_>, &Bucket)> {
        self.series.iter().flat_map(|((url, producer), f)| {
            f.hours
                .iter()
                .map(move |(t, b)| ((url.as_str(), producer.as_str(), *t), b))
        })
    }

    /// The daily buckets (`rollups_daily`), in no order.
    pub(crate) fn daily(&self) -> impl Iterator<Item = (BucketKey<'_>, &Bucket)> {
        self.series.iter().flat_map(|((url, producer), f)| {
            f.days
                .iter()
                .map(move |(t, b)| ((url.as_str(), producer.as_str(), *t), b))
        })
    }

    /// Each series' state after the fold (`site_status`), in no order.
    pub(crate) fn states(&self) -> impl Iterator<Item = ((&str, &str), &SeriesState)> {
        self.series.iter().filter_map(|((url, producer), f)| {
            Some(((url.as_str(), producer.as_str()), f.state.as_ref()?))
        })
    }

    /// Nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// One series' state, for tests.
    #[cfg(test)]
    pub(crate) fn state(&self, url: &str, producer: &str) -> Option<&SeriesState> {
        self.states()
            .find(|(k, _)| *k == (url, producer))
            .map(|(_, s)| s)
    }

    /// A bucket as made by a fold, for tests: `daily` or hourly.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, daily: bool, (url, producer, t): BucketKey<'_>, b: Bucket) {
        let f = self
            .series
            .entry((url.into(), producer.into()))
            .or_default();
        let list = if daily { &mut f.days } else { &mut f.hours };
        list.push((t, b));
    }
}

/// `b` added to the bucket of `list` starting at `start`, or its first.
fn merge_bucket(list: &mut Vec<(DateTime<Utc>, Bucket)>, start: DateTime<Utc>, b: &Bucket) {
    match list.iter_mut().find(|(t, _)| *t == start) {
        Some((_, e)) => e.merge(b),
        None => list.push((start, b.clone())),
    }
}

impl Bucket {
    /// A delta's hour as a bucket.
    fn of_hour(h: &DeltaHour) -> Bucket {
        let mut b = Bucket {
            checks: h.checks,
            up_checks: h.up_checks,
            error_kinds: h.error_kinds,
            latency_hist: [0; LATENCY_BUCKETS],
            latency_min_ms: h.min,
            latency_max_ms: h.max,
            latency_sum_ms: h.sum,
            last_checked_at: from_ms(h.last_ms),
            last_status: h.last_status,
            maint_checks: h.maint_checks,
        };
        for (i, n) in &h.hist {
            if let Some(slot) = b.latency_hist.get_mut(usize::from(*i)) {
                *slot += n;
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rollups;
    use super::super::tests::input;
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn deltas_folded_in_order_equal_one_transaction_of_everything() {
        let all = [
            input(1, 0, true, 12),
            input(2, 10, false, 900),
            input(3, 20, false, 40),
            input(4, 30, true, 30),
            input(5, 40, true, 7),
        ];
        let whole = Rollups::of(&all);
        let mut folded = Folded::default();
        assert!(folded.is_empty());
        for part in [&all[..2], &all[2..3], &all[3..]] {
            let stored = Rollups::of(part).to_stored();
            folded.add(Delta::from_stored(&stored).unwrap());
        }
        assert!(!folded.is_empty());
        let key = ("https://a.example/".to_string(), "p1".to_string());
        let (w, f) = (
            whole.series[&(key.0.as_str(), key.1.as_str())]
                .state
                .as_ref()
                .unwrap(),
            folded.state(&key.0, &key.1).unwrap(),
        );
        assert_eq!((f.up, f.since, f.changed), (w.up, w.since, true));
        assert_eq!(f.last_checked_at, w.last_checked_at);
        let hour = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let w = &whole.series[&(key.0.as_str(), key.1.as_str())].hours[0].1;
        let f = folded.hourly().find(|(k, _)| k.2 == hour).unwrap().1;
        assert_eq!(f, w);
        let (day, daily) = folded.daily().next().unwrap();
        assert_eq!(day.2, Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap());
        assert_eq!(daily.checks, 5);
        assert_eq!(
            folded.state(&key.0, &key.1).unwrap().recent,
            whole.to_delta().series[0].recent,
            "the five newest of the folded deltas are those of one transaction of everything"
        );
    }

    #[test]
    fn a_delta_in_parts_folds_as_the_whole() {
        // A refused fold is done again in parts, one series each.
        let mut inputs = vec![input(1, 0, true, 12), input(2, 10, false, 900)];
        let mut b = input(3, 20, true, 40);
        b.url = "https://b.example/".into();
        inputs.push(b);
        let delta = Delta::from_stored(&Rollups::of(&inputs).to_stored()).unwrap();
        let parts = delta.clone().into_parts();
        assert_eq!(
            parts.iter().map(|p| p.series.len()).collect::<Vec<_>>(),
            [1, 1]
        );
        let (mut whole, mut in_parts) = (Folded::default(), Folded::default());
        whole.add(delta);
        parts.into_iter().for_each(|p| in_parts.add(p));
        let sorted = |f: &Folded| {
            let mut v: Vec<_> = f
                .hourly()
                .map(|(k, b)| (k.0.to_string(), k.2, b.clone()))
                .collect();
            v.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
            v
        };
        assert_eq!(sorted(&in_parts), sorted(&whole));
        assert_eq!(in_parts.states().count(), 2);
    }

    #[test]
    fn the_json_form_of_an_ordinary_delta_has_no_keys_older_builds_did_not_write() {
        // `rollup_rejects` keeps a refused series as this JSON.
        let delta = Rollups::of(&[input(1, 0, true, 12)]).to_delta();
        let json = serde_json::to_string(&delta).unwrap();
        assert!(
            !json.contains("\"m\":") && !json.contains("\"hist\":"),
            "{json}"
        );
    }

    #[test]
    fn a_removed_targets_checks_are_counted_in_its_hours_and_leave_its_state_alone() {
        // One transaction of a removed target's checks alone, then one of checks made
        // before its removal was known (which set its state).
        let mut gone = input(1, 9, false, 20);
        gone.removed = true;
        let kept = [input(2, 5, true, 30), input(3, 6, true, 40)];
        let mut folded = Folded::default();
        for part in [&kept[..], std::slice::from_ref(&gone)] {
            folded.add(Delta::from_stored(&Rollups::of(part).to_stored()).unwrap());
        }
        let hour = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let b = folded.hourly().find(|(k, _)| k.2 == hour).unwrap().1;
        assert_eq!((b.checks, b.up_checks), (3, 2));
        assert_eq!(folded.daily().next().unwrap().1.checks, 3);
        let state = folded.state("https://a.example/", "p1").unwrap();
        assert!(state.up, "a removed target's check does not move the state");
        assert_eq!(state.recent.len(), 2);
        // Alone, it makes no state at all (the page shows no card for it).
        let mut alone = Folded::default();
        alone.add(Delta::from_stored(&Rollups::of([&gone]).to_stored()).unwrap());
        assert_eq!(alone.hourly().count(), 1);
        assert_eq!(alone.states().count(), 0);
    }

    #[test]
    fn a_fold_keeps_the_five_newest_checks_of_all_its_deltas() {
        // Three transactions' checks (minutes); the second holds a late one (3), the third
        // one older than all (1) and the newest (9).
        let parts: [&[u32]; 3] = [&[5, 8], &[3], &[9, 1, 7]];
        let mut folded = Folded::default();
        let mut offset = 0;
        for minutes in parts {
            let inputs: Vec<super::super::RollupInput> = minutes
                .iter()
                .map(|m| {
                    offset += 1;
                    input(offset, *m, *m != 3, 100 + *m as i32)
                })
                .collect();
            folded.add(Delta::from_stored(&Rollups::of(&inputs).to_stored()).unwrap());
        }
        let hour = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let key = ("https://a.example/".to_string(), "p1".to_string());
        let got: Vec<(i64, bool, Option<i32>)> = folded
            .state(&key.0, &key.1)
            .unwrap()
            .recent
            .iter()
            .map(|c| {
                (
                    (c.at_ms - hour.timestamp_millis()) / 60_000,
                    c.up,
                    c.elapsed_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (9, true, Some(109)),
                (8, true, Some(108)),
                (7, true, Some(107)),
                (5, true, Some(105)),
                (3, false, Some(103))
            ]
        );
    }

    #[test]
    fn a_series_keeps_its_five_newest_checks_newest_first() {
        // Minutes of the checks in the order stored: a late one (3), two at the same time
        // (8; the one stored later goes after).
        let minutes = [1, 2, 5, 8, 3, 8, 4, 0, 9];
        let inputs: Vec<super::super::RollupInput> = minutes
            .iter()
            .enumerate()
            .map(|(i, m)| input(i as i64, *m, true, 10 + i as i32))
            .collect();
        let delta = Rollups::of(&inputs).to_delta();
        let hour = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let got: Vec<(i64, Option<i32>)> = delta.series[0]
            .recent
            .iter()
            .map(|c| ((c.at_ms - hour.timestamp_millis()) / 60_000, c.elapsed_ms))
            .collect();
        assert_eq!(
            got,
            [
                (9, Some(18)),
                (8, Some(13)),
                (8, Some(15)),
                (5, Some(12)),
                (4, Some(16))
            ]
        );
    }
}
