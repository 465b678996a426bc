//! Unit tests of `decide`.

use super::*;

fn check(producer: &str, up: bool, second: i64) -> RollupInput {
    let ts = DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap();
    RollupInput {
        offset: second,
        status: Some(if up { 200 } else { 503 }),
        ..crate::consumer::rollup::tests::check_input(
            "https://user:pw@a.example/",
            producer,
            ts,
            up,
        )
    }
}

/// `checks` (up, second, in maintenance) of producer "a", through one state.
fn decided(checks: &[(bool, i64, bool)]) -> Vec<&'static str> {
    let rules = AlertRules::default();
    let events: Vec<RollupInput> = checks
        .iter()
        .map(|(up, second, maintenance)| RollupInput {
            maintenance: *maintenance,
            ..check("a", *up, *second)
        })
        .collect();
    decide(&BTreeMap::new(), &events, &rules)
        .notifications
        .iter()
        .map(|n| n.kind.name())
        .collect()
}

#[test]
fn a_maintenance_window_notifies_nothing_and_its_end_decides() {
    let (up, down, window, outside) = (true, false, true, false);
    // Down and back within the window: nothing, then nothing after it.
    let within: Vec<_> = (0..6)
        .map(|i| (if (1..4).contains(&i) { down } else { up }, i, window))
        .chain([(up, 6, outside)])
        .collect();
    assert!(decided(&within).is_empty());
    // Down in the window and still down at its end: one `down`, at the first check after.
    let still_down: Vec<_> = (0..4)
        .map(|i| (down, i, window))
        .chain([(down, 4, outside)])
        .collect();
    assert_eq!(decided(&still_down), ["down"]);
    // An incident from before the window that ends within it: its `up` after the window.
    let before: Vec<_> = (0..3)
        .map(|i| (down, i, outside))
        .chain((3..6).map(|i| (up, i, window)))
        .chain([(up, 6, outside)])
        .collect();
    assert_eq!(decided(&before), ["down", "up"]);
    // The same without windows: the usual down and up.
    let plain: Vec<_> = within.iter().map(|(u, s, _)| (*u, *s, outside)).collect();
    assert_eq!(decided(&plain), ["down", "up"]);
}

fn kinds(d: &Decisions) -> Vec<(&'static str, Vec<String>)> {
    d.notifications
        .iter()
        .map(|n| (n.kind.name(), n.producers.clone()))
        .collect()
}

#[test]
fn down_after_three_failures_up_after_two_good_checks() {
    let rules = AlertRules::default();
    let ups = [
        true, false, false, true, false, false, false, false, true, true, true,
    ];
    let events: Vec<_> = (0..).zip(ups).map(|(i, up)| check("a", up, i)).collect();
    let d = decide(&BTreeMap::new(), &events, &rules);
    assert_eq!(
        kinds(&d),
        [("down", vec!["a".into()]), ("up", vec!["a".into()])]
    );
    let down = &d.notifications[0];
    // The incident started at the first failure of the run, and was decided at the third.
    assert_eq!(down.since, Some(events[4].ts));
    assert_eq!(down.checked_at, events[6].ts);
    assert_eq!(down.status, Some(503));
    assert_eq!(down.url, "https://user:***@a.example/");
    assert_eq!(d.notifications[1].since, Some(events[8].ts));
    assert_eq!(d.notifications[1].checked_at, events[9].ts);
}

#[test]
fn split_across_transactions_decides_the_same() {
    let rules = AlertRules::default();
    let ups = [false, false, true, false, false, false, true, true];
    let events: Vec<_> = (0..).zip(ups).map(|(i, up)| check("a", up, i)).collect();
    let whole = decide(&BTreeMap::new(), &events, &rules);
    let mut stored = BTreeMap::new();
    let mut parts = Vec::new();
    for e in &events {
        let d = decide(&stored, [e], &rules);
        stored.extend(d.changed);
        parts.extend(d.notifications);
    }
    let names = |n: &[Notification]| n.iter().map(|n| n.kind.name()).collect::<Vec<_>>();
    assert_eq!(names(&whole.notifications), names(&parts));
    assert_eq!(names(&parts), ["down", "up"]);
}

#[test]
fn quorum_two_needs_both_vantage_points() {
    let rules = AlertRules {
        quorum: 2,
        ..AlertRules::default()
    };
    let mut events = Vec::new();
    for i in 0..6 {
        events.push(check("a", false, i));
        events.push(check("b", true, i));
    }
    let d = decide(&BTreeMap::new(), &events, &rules);
    assert!(d.notifications.is_empty(), "{:?}", kinds(&d));
    for i in 6..10 {
        events.push(check("a", false, i));
        events.push(check("b", false, i));
    }
    let d = decide(&BTreeMap::new(), &events, &rules);
    assert_eq!(kinds(&d), [("down", vec!["a".into(), "b".into()])]);
    // One vantage point recovering brings the count under the quorum: up.
    events.push(check("b", true, 10));
    events.push(check("b", true, 11));
    let d = decide(&BTreeMap::new(), &events, &rules);
    assert_eq!(kinds(&d)[1], ("up", vec!["b".into()]));
}

#[test]
fn a_steady_site_stops_changing_state() {
    let rules = AlertRules::default();
    let events: Vec<_> = (0..5).map(|i| check("a", true, i)).collect();
    let first = decide(&BTreeMap::new(), &events, &rules);
    let more: Vec<_> = (5..9).map(|i| check("a", true, i)).collect();
    let second = decide(&first.changed, &more, &rules);
    assert!(second.changed.is_empty());
    assert!(second.notifications.is_empty());
}

#[test]
fn a_blip_leaves_the_state_as_it_was_once_past() {
    let rules = AlertRules::default();
    let steady = decide(
        &BTreeMap::new(),
        &[check("a", true, 0), check("a", true, 1)],
        &rules,
    );
    let blip = [
        check("a", false, 2),
        check("a", true, 3),
        check("a", true, 4),
    ];
    let after = decide(&steady.changed, &blip, &rules);
    assert!(after.notifications.is_empty());
    assert!(after.changed.is_empty(), "{:?}", after.changed);
}

#[test]
fn a_certificate_warns_once_per_not_after_and_again_for_an_earlier_one() {
    let rules = AlertRules::default();
    let mut events: Vec<_> = (0..5).map(|i| check("a", true, i)).collect();
    let soon = events[0].ts + chrono::TimeDelta::days(10);
    let later = events[0].ts + chrono::TimeDelta::days(13);
    let earlier = events[0].ts + chrono::TimeDelta::days(3);
    let far = events[0].ts + chrono::TimeDelta::days(90);
    events[0].cert_expires_at = Some(far);
    events[1].cert_expires_at = Some(soon);
    events[2].cert_expires_at = Some(soon);
    events[3].cert_expires_at = Some(later);
    events[4].cert_expires_at = Some(earlier);
    let d = decide(&BTreeMap::new(), &events, &rules);
    let warned: Vec<_> = d.notifications.iter().map(|n| n.cert_expires_at).collect();
    assert_eq!(warned, [Some(soon), Some(earlier)]);
    assert!(
        d.notifications
            .iter()
            .all(|n| n.kind == AlertKind::CertExpiring)
    );
}

#[test]
fn two_certificates_served_in_turn_warn_once_and_again_after_renewal() {
    let rules = AlertRules::default();
    let t0 = check("a", true, 0).ts;
    let (soon_a, soon_b) = (
        t0 + chrono::TimeDelta::days(5),
        t0 + chrono::TimeDelta::days(9),
    );
    let far = t0 + chrono::TimeDelta::days(90);
    let mut events = Vec::new();
    for i in 0..40 {
        let mut e = check(if i % 3 == 0 { "b" } else { "a" }, true, i);
        e.cert_expires_at = Some(if i % 2 == 0 { soon_a } else { soon_b });
        events.push(e);
    }
    let d = decide(&BTreeMap::new(), &events, &rules);
    let warned: Vec<_> = d.notifications.iter().map(|n| n.cert_expires_at).collect();
    assert_eq!(warned, [Some(soon_a)]);
    // Renewed: every vantage point sees the new one twice; then a new short one warns.
    let mut more = Vec::new();
    for (i, p) in (40..).zip(["a", "b", "a", "b"]) {
        let mut e = check(p, true, i);
        e.cert_expires_at = Some(far);
        more.push(e);
    }
    let mut again = check("a", true, 50);
    again.cert_expires_at = Some(soon_b);
    more.push(again);
    let d2 = decide(&d.changed, &more, &rules);
    let warned: Vec<_> = d2.notifications.iter().map(|n| n.cert_expires_at).collect();
    assert_eq!(warned, [Some(soon_b)]);
    // Renewed for one vantage point only: not renewed, and the same expiry again
    // does not warn again.
    let mut b_soon = check("b", true, 60);
    b_soon.cert_expires_at = Some(soon_b);
    let mut half = vec![b_soon];
    for i in 61..65 {
        let mut e = check("a", true, i);
        e.cert_expires_at = Some(far);
        half.push(e);
    }
    let mut soon = check("a", true, 65);
    soon.cert_expires_at = Some(soon_b);
    half.push(soon);
    assert!(decide(&d2.changed, &half, &rules).notifications.is_empty());
}

#[test]
fn a_replaced_vantage_point_stops_counting_and_the_incident_ends_once() {
    let rules = AlertRules::default();
    // The old producer sees the site down, then is replaced (a new container, a new name).
    let mut events: Vec<_> = (0..3).map(|i| check("old", false, i)).collect();
    events.extend((10..13).map(|i| check("new", false, i)));
    // Back up at 100 s: the old one's last word still counts (600 s), no `up` yet.
    events.extend((100..110).map(|i| check("new", true, i)));
    let d = decide(&BTreeMap::new(), &events, &rules);
    assert_eq!(kinds(&d), [("down", vec!["old".into()])]);
    // 600 s (and a step) after the old one's last check, the new one decides alone.
    let later: Vec<_> = (700..740).map(|i| check("new", true, i)).collect();
    let d2 = decide(&d.changed, &later, &rules);
    assert_eq!(kinds(&d2), [("up", vec!["new".into()])]);
    assert_eq!(d2.notifications[0].since, Some(later[0].ts));
    // And a later outage seen by the new one alerts again.
    let outage: Vec<_> = (800..803).map(|i| check("new", false, i)).collect();
    let state = d2.changed.clone();
    let d3 = decide(&state, &outage, &rules);
    assert_eq!(kinds(&d3), [("down", vec!["new".into()])]);
}

#[test]
fn a_steady_site_is_written_once_per_step_not_per_check() {
    let rules = AlertRules::default();
    let mut stored = BTreeMap::new();
    let mut writes = 0;
    for i in 0..600 {
        let d = decide(&stored, &[check("a", true, i)], &rules);
        writes += d.changed.len();
        stored.extend(d.changed);
    }
    // The first two checks (the run's count), then one per 60 s step (the default
    // 600 s over ten): 11 writes in 600 checks.
    assert_eq!(writes, 11);
}

#[test]
fn an_incident_nobody_reports_on_closes_as_stale_once() {
    let rules = AlertRules::default();
    let events: Vec<_> = (0..3).map(|i| check("a", false, i)).collect();
    let d = decide(&BTreeMap::new(), &events, &rules);
    let mut state = d.changed["https://user:pw@a.example/"].clone();
    let stale = state.close_stale("https://user:pw@a.example/").unwrap();
    assert_eq!(stale.kind, AlertKind::Stale);
    assert_eq!(stale.url, "https://user:***@a.example/");
    assert_eq!(stale.producers, ["a"]);
    // Since the URL's newest check (kept to a 60 s step), not some default time.
    let since = stale.since.unwrap();
    let (first, last) = (check("a", false, 0).ts, check("a", false, 2).ts);
    assert!(
        since > first - chrono::TimeDelta::seconds(60) && since <= last,
        "{since}"
    );
    assert!(!state.down);
    assert!(state.close_stale("https://user:pw@a.example/").is_none());
}

#[test]
fn streaks_survive_their_json() {
    let rules = AlertRules::default();
    let events: Vec<_> = (0..2).map(|i| check("a", false, i)).collect();
    let d = decide(&BTreeMap::new(), &events, &rules);
    let state = &d.changed["https://user:pw@a.example/"];
    let back = vantage_from_json(&vantage_json(&state.vantage));
    assert_eq!(back, state.vantage);
}

#[test]
fn a_vantage_point_is_stale_past_its_600_s_and_one_60_s_step_never_before() {
    // The README's default CK_ALERT_STALE_AFTER (600 s), kept in steps of a tenth.
    let rules = AlertRules::default();
    assert!(!rules.is_stale(0, 600));
    assert!(!rules.is_stale(0, 660));
    assert!(rules.is_stale(0, 661));
}

#[test]
fn a_vantage_point_quiet_for_29_days_is_kept_for_30_forgotten() {
    let rules = AlertRules::default();
    let first = decide(&BTreeMap::new(), &[check("old", true, 0)], &rules);
    let days = |d: i64| d * 86_400;
    let kept = decide(&first.changed, &[check("new", true, days(29))], &rules);
    let state = &kept.changed["https://user:pw@a.example/"];
    assert_eq!(state.vantage.keys().collect::<Vec<_>>(), ["new", "old"]);
    let d = decide(
        &first.changed,
        &[check("new", true, days(30) + 100)],
        &rules,
    );
    let state = &d.changed["https://user:pw@a.example/"];
    assert_eq!(state.vantage.keys().collect::<Vec<_>>(), ["new"]);
}

#[test]
fn a_vantage_point_is_down_from_its_third_failure_to_its_second_good_check() {
    let rules = AlertRules::default();
    let mut stored = BTreeMap::new();
    let mut seen = Vec::new();
    for (i, up) in [false, false, false, true, true].into_iter().enumerate() {
        let d = decide(&stored, &[check("a", up, i as i64)], &rules);
        stored.extend(d.changed);
        seen.push(stored["https://user:pw@a.example/"].vantage["a"].is_down());
    }
    assert_eq!(seen, [false, false, true, true, false]);
}

#[test]
fn a_certificate_warns_when_it_expires_within_14_days_not_in_exactly_14() {
    let rules = AlertRules::default();
    let warned = |left: chrono::TimeDelta| {
        let mut e = check("a", true, 0);
        e.cert_expires_at = Some(e.ts + left);
        decide(&BTreeMap::new(), &[e], &rules).notifications.len()
    };
    assert_eq!(warned(chrono::TimeDelta::days(14)), 0);
    assert_eq!(
        warned(chrono::TimeDelta::days(14) - chrono::TimeDelta::seconds(1)),
        1
    );
}

#[test]
fn an_incident_is_down_since_the_first_failure_of_the_vantage_points_that_count() {
    let rules = AlertRules {
        quorum: 2,
        ..AlertRules::default()
    };
    // "old" sees the site down alone (no quorum), then goes quiet.
    let mut events: Vec<_> = (0..3).map(|i| check("old", false, i)).collect();
    // 1,000 s later "a" and "b" see it down: the incident is theirs, since their first
    // failure, not since "old"'s (stale: 600 s and a step behind the newest check).
    for i in 1_000..1_003 {
        events.push(check("a", false, i));
        events.push(check("b", false, i));
    }
    let d = decide(&BTreeMap::new(), &events, &rules);
    assert_eq!(kinds(&d), [("down", vec!["a".into(), "b".into()])]);
    assert_eq!(d.notifications[0].since, Some(check("a", false, 1_000).ts));
}

#[test]
fn a_removed_url_s_open_incident_closes_once_as_removed() {
    let rules = AlertRules::default();
    let events: Vec<_> = (0..3).map(|i| check("a", false, i)).collect();
    let d = decide(&BTreeMap::new(), &events, &rules);
    let mut state = d.changed["https://user:pw@a.example/"].clone();
    let at = check("a", false, 100).ts;
    let removed = state
        .close_removed("https://user:pw@a.example/", at)
        .unwrap();
    assert_eq!(removed.kind, AlertKind::Removed);
    assert_eq!(removed.url, "https://user:***@a.example/");
    assert_eq!(removed.since, Some(at));
    assert!(!state.down);
    assert!(
        state
            .close_removed("https://user:pw@a.example/", at)
            .is_none()
    );
}
