//! A transaction's rollups as one row of `rollup_deltas` ([`Delta`]; its stored bytes are
//! `stored`'s), and committed deltas merged in order for a fold ([`Folded`]). Pure: it
//! never does I/O.

mod stored;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Bucket, KindCounts, LATENCY_BUCKETS, RecentCheck, SeriesState, truncate};
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
            .filter_map(|(key, r)| Some((key, r, r.state.as_ref()?)))
            .map(|(key, r, s)| DeltaSeries {
                url: key.0.to_string(),
                producer: key.1.to_string(),
                up: s.up,
                since_ms: s.since.timestamp_millis(),
                changed: s.changed,
                last_ms: s.last_checked_at.timestamp_millis(),
                last_status: s.last_status,
                last_error: s.last_error.clone(),
                last_error_kind: s.last_error_kind.map(str::to_string),
                last_elapsed_ms: s.last_elapsed_ms,
                cert_ms: s.cert_expires_at.map(|t| t.timestamp_millis()),
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

/// (url, producer, start of the hour or day)
pub(crate) type OwnedBucketKey = (String, String, DateTime<Utc>);

/// Deltas merged, in the order they were committed: what one fold writes.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    pub(crate) hourly: SeriesMap<OwnedBucketKey, Bucket>,
    pub(crate) daily: SeriesMap<OwnedBucketKey, Bucket>,
    pub(crate) states: SeriesMap<(String, String), SeriesState>,
}

impl Folded {
    /// Add the next delta (a later transaction's).
    pub(crate) fn add(&mut self, delta: Delta) {
        for d in delta.series {
            for h in &d.hours {
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
                let hour = from_ms(h.start_ms);
                let day = truncate(hour, 86_400);
                for (table, start) in [(&mut self.daily, day), (&mut self.hourly, hour)] {
                    table
                        .entry((d.url.clone(), d.producer.clone(), start))
                        .and_modify(|e| e.merge(&b))
                        .or_insert_with(|| b.clone());
                }
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
            match self.states.entry((d.url, d.producer)) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().then(s),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(s);
                }
            }
        }
    }

    /// Nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.hourly.is_empty() && self.daily.is_empty() && self.states.is_empty()
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
        for part in [&all[..2], &all[2..3], &all[3..]] {
            let stored = Rollups::of(part).to_stored();
            folded.add(Delta::from_stored(&stored).unwrap());
        }
        let key = ("https://a.example/".to_string(), "p1".to_string());
        let (w, f) = (
            whole.series[&(key.0.as_str(), key.1.as_str())]
                .state
                .as_ref()
                .unwrap(),
            &folded.states[&key],
        );
        assert_eq!((f.up, f.since, f.changed), (w.up, w.since, true));
        assert_eq!(f.last_checked_at, w.last_checked_at);
        let hour = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let w = &whole.series[&(key.0.as_str(), key.1.as_str())].hours[0].1;
        let f = &folded.hourly[&(key.0.clone(), key.1.clone(), hour)];
        assert_eq!(f, w);
        assert_eq!(folded.daily.values().next().unwrap().checks, 5);
        assert_eq!(
            folded.states[&key].recent,
            whole.to_delta().series[0].recent,
            "the five newest of the folded deltas are those of one transaction of everything"
        );
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
        let got: Vec<(i64, bool, Option<i32>)> = folded.states[&key]
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
