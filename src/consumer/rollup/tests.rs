//! Unit tests of the hourly and daily rollups: what a check adds to its buckets and state, how buckets and states merge, percentiles.

use super::*;
use chrono::TimeZone;

/// A check of `url` from `producer` at `ts`: 200 and 12 ms when up, 500 when down; the
/// other fields empty. For the tests of what reads rollup inputs (here and `decide`'s).
pub(crate) fn check_input(url: &str, producer: &str, ts: DateTime<Utc>, up: bool) -> RollupInput {
    RollupInput {
        partition: 0,
        offset: 0,
        url: url.into(),
        producer: producer.into(),
        ts,
        up,
        elapsed: Some(12),
        status: Some(if up { 200 } else { 500 }),
        error: None,
        error_kind: None,
        cert_expires_at: None,
        phases: [None; 4],
        removed: false,
        labels: Default::default(),
        maintenance: false,
    }
}

pub(super) fn input(offset: i64, minute: u32, up: bool, elapsed: i32) -> RollupInput {
    let ts = Utc.with_ymd_and_hms(2026, 11, 29, 10, minute, 0).unwrap();
    RollupInput {
        offset,
        elapsed: Some(elapsed),
        ..check_input("https://a.example/", "p1", ts, up)
    }
}

#[test]
fn buckets_count_checks_and_latency_of_up_checks() {
    let inputs = [
        input(1, 0, true, 12),
        input(2, 30, false, 900),
        input(3, 59, true, 30),
    ];
    let r = Rollups::of(&inputs);
    let hours = &r.series.values().next().unwrap().hours;
    assert_eq!(hours.len(), 1);
    let (key, b) = hours.iter().next().unwrap();
    assert_eq!(*key, Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap());
    assert_eq!((b.checks, b.up_checks), (3, 2));
    assert_eq!(
        (b.latency_min_ms, b.latency_max_ms, b.latency_sum_ms),
        (Some(12), Some(30), 42)
    );
    assert_eq!(b.latency_hist.iter().sum::<i64>(), 2);
    assert_eq!(b.last_status, Some(200));
}

#[test]
fn checks_in_a_maintenance_window_are_counted_apart() {
    let mut down_in_window = input(4, 40, false, 900);
    down_in_window.maintenance = true;
    let inputs = [
        input(1, 0, true, 12),
        down_in_window,
        input(3, 59, true, 30),
    ];
    let r = Rollups::of(&inputs);
    let b = &r.series.values().next().unwrap().hours[0].1;
    assert_eq!((b.checks, b.up_checks, b.maint_checks), (2, 2, 1));
    assert_eq!(b.error_kinds.iter().sum::<i64>(), 0);
    assert_eq!(b.latency_hist.iter().sum::<i64>(), 2);
    // The state follows it all the same: the page says what the site does.
    assert_eq!(r.series.len(), 1);
}

#[test]
fn the_state_is_the_latest_run_and_knows_if_it_changed() {
    let inputs = [input(1, 0, true, 1), input(2, 1, true, 1)];
    let r = Rollups::of(&inputs);
    let s = r.series.values().next().unwrap().state.as_ref().unwrap();
    assert!(s.up && !s.changed);
    assert_eq!(s.since, input(0, 0, true, 1).ts);
    let inputs = [
        input(1, 0, true, 1),
        input(2, 1, false, 1),
        input(3, 2, false, 1),
    ];
    let r = Rollups::of(&inputs);
    let s = r.series.values().next().unwrap().state.as_ref().unwrap();
    assert!(!s.up && s.changed);
    assert_eq!(s.since, input(0, 1, true, 1).ts);
    // An older event arriving late does not move the state back.
    let inputs = [input(1, 5, true, 1), input(2, 1, false, 1)];
    let r = Rollups::of(&inputs);
    let s = r.series.values().next().unwrap().state.as_ref().unwrap();
    assert!(s.up && !s.changed);
    assert_eq!(r.series.values().next().unwrap().hours[0].1.checks, 2);
}

#[test]
fn failed_checks_are_counted_per_error_kind_in_the_readme_s_order() {
    let failed = |offset, kind: Option<&'static str>, error: Option<&str>| {
        let mut e = input(offset, offset as u32, false, 10_000);
        e.error_kind = kind;
        e.error = error.map(String::from);
        e
    };
    let inputs = [
        failed(1, Some("timeout"), Some("timed out")),
        failed(2, Some("timeout"), Some("timed out")),
        failed(3, Some("dns"), Some("no such host")),
        // The Python program's records: an error and no kind: "other".
        failed(4, None, Some("Connection refused")),
        // A kind this build does not know (a newer producer): "other" too.
        failed(5, Some("quic"), Some("?")),
        // Down by its status, no error: no kind counted.
        failed(6, None, None),
    ];
    let r = Rollups::of(&inputs);
    let b = &r.series.values().next().unwrap().hours[0].1;
    // dns, connect, tls, timeout, http, body, redirect, other
    assert_eq!(b.error_kinds, [1, 0, 0, 2, 0, 0, 0, 2]);
    assert_eq!((b.checks, b.up_checks), (6, 0));
}

#[test]
fn of_a_check_at_the_same_instant_the_later_one_is_the_state() {
    // Offset order decides between equal times, as it does for the bucket's last status.
    let mut down = input(2, 0, false, 1);
    down.error = Some("boom".into());
    let inputs = [input(1, 0, true, 1), down];
    let r = Rollups::of(&inputs);
    let series = r.series.values().next().unwrap();
    let s = series.state.as_ref().unwrap();
    assert!(!s.up && s.changed, "{s:?}");
    assert_eq!(s.last_error.as_deref(), Some("boom"));
    assert_eq!(series.hours[0].1.last_status, Some(500));
}

#[test]
fn nothing_in_nothing_out() {
    assert!(Rollups::of(&[]).is_empty());
    assert!(!Rollups::of(&[input(1, 0, true, 1)]).is_empty());
}

#[test]
fn merged_buckets_add_up() {
    let bucket = |inputs: &[RollupInput]| {
        Rollups::of(inputs).series.values().next().unwrap().hours[0]
            .1
            .clone()
    };
    let mut timeout = input(3, 20, false, 10_000);
    timeout.error_kind = Some("timeout");
    timeout.error = Some("timed out".into());
    let mut maint = input(4, 30, true, 5);
    maint.maintenance = true;
    let first = [input(1, 0, true, 12), timeout.clone()];
    let second = [input(2, 10, true, 300), timeout, maint];
    let mut merged = bucket(&first);
    merged.merge(&bucket(&second));
    let whole: Vec<RollupInput> = first.iter().chain(&second).cloned().collect();
    let all = bucket(&whole);
    assert_eq!(merged, all);
    assert_eq!(
        (merged.checks, merged.maint_checks, merged.up_checks),
        (4, 1, 2)
    );
    assert_eq!(merged.error_kinds[ErrorKind::Timeout as usize], 2);
}

#[test]
fn a_percentile_is_linear_within_its_bucket_and_kept_within_min_and_max() {
    // 10 checks in [10, 14) ms and 10 in [20, 28) ms (the README's bounds).
    let mut hist = [0i64; LATENCY_BUCKETS];
    hist[latency_bucket(10)] = 10;
    hist[latency_bucket(27)] = 10;
    assert_eq!(latency_bucket(13), latency_bucket(10));
    assert_eq!(latency_bucket(14), latency_bucket(10) + 1);
    // Rank 5 of 20: half way through the first bucket.
    assert_eq!(percentile(&hist, 0.25, None, None), Some(12.0));
    // Rank 15: half way through the second, past the 10 of the first.
    assert_eq!(percentile(&hist, 0.75, None, None), Some(24.0));
    assert_eq!(percentile(&hist, 1.0, None, None), Some(28.0));
    assert_eq!(percentile(&hist, 0.25, Some(13), None), Some(13.0));
    assert_eq!(percentile(&hist, 0.75, None, Some(22)), Some(22.0));
}

#[test]
fn a_later_transaction_s_state_follows_an_earlier_one() {
    let at = |minute| Utc.with_ymd_and_hms(2026, 11, 29, 10, minute, 0).unwrap();
    let state = |minute, up, cert: Option<u32>| {
        let mut e = input(1, minute, up, 1);
        e.cert_expires_at = cert.map(|d| at(0) + chrono::TimeDelta::days(d.into()));
        SeriesState::first(&e)
    };
    // Down since minute 1, still down at 5 with no certificate (a timeout): down since
    // minute 1, the certificate kept.
    let mut s = state(1, false, Some(30));
    s.then(state(5, false, None));
    assert_eq!((s.up, s.since, s.last_checked_at), (false, at(1), at(5)));
    assert_eq!(s.cert_expires_at, Some(at(0) + chrono::TimeDelta::days(30)));
    // Up at the same instant: the later transaction's (offset order) stands.
    s.then(state(5, true, Some(31)));
    assert!(s.up && s.changed);
    assert_eq!((s.since, s.last_checked_at), (at(5), at(5)));
    assert_eq!(s.cert_expires_at, Some(at(0) + chrono::TimeDelta::days(31)));
    // An older one does not move it back.
    s.then(state(3, false, None));
    assert!(s.up);
    assert_eq!((s.since, s.last_checked_at), (at(5), at(5)));
}

#[test]
fn percentiles_fall_in_the_right_bucket() {
    let mut hist = [0i64; LATENCY_BUCKETS];
    for ms in 1..=100 {
        hist[latency_bucket(ms)] += 1;
    }
    let p50 = percentile(&hist, 0.5, Some(1), Some(100)).unwrap();
    assert!((40.0..=56.0).contains(&p50), "{p50}");
    let p95 = percentile(&hist, 0.95, Some(1), Some(100)).unwrap();
    assert!((80.0..=100.0).contains(&p95), "{p95}");
    assert_eq!(percentile(&[0; LATENCY_BUCKETS], 0.5, None, None), None);
    assert_eq!(latency_bucket(0), 0);
    assert_eq!(latency_bucket(1), 1);
    assert_eq!(latency_bucket(100_000), LATENCY_BUCKETS - 1);
}

#[test]
fn recent_checks_merge_as_a_sort_of_both_would() {
    // Differential: the merge against the sort it replaced, over lists of every length up
    // to RECENT_CHECKS, newest first, with times drawn from a small range (ties included).
    let check = |at_ms: i64, tag: i32| RecentCheck {
        at_ms,
        up: true,
        status: Some(tag),
        elapsed_ms: None,
        error_kind: None,
        error: None,
        phases: None,
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n) as i64
    };
    for _ in 0..2_000 {
        let list = |tag: i32, next: &mut dyn FnMut(u64) -> i64| {
            let len = next(RECENT_CHECKS as u64 + 1);
            let mut v: Vec<_> = (0..len).map(|_| check(next(8), tag)).collect();
            v.sort_by_key(|c| std::cmp::Reverse(c.at_ms));
            v
        };
        let held = list(1, &mut next);
        let more = list(2, &mut next);
        let mut want = held.clone();
        want.extend(more.clone());
        want.sort_by_key(|c| std::cmp::Reverse(c.at_ms));
        want.truncate(RECENT_CHECKS);
        let mut got = held;
        merge_recent(&mut got, more);
        assert_eq!(got, want);
    }
}
