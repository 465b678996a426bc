//! Unit tests of `report`: hand-made rows, and the figures worked out by hand.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::*;
use crate::consumer::rollup::{LATENCY_BUCKETS, latency_bucket};
use crate::consumer::store::{OpenIncident, WindowRow};
use crate::consumer::windows::Alignment;

const NOW: i64 = 10_000;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn state(url: &str, producer: &str, up: bool, last_checked: i64) -> SiteState {
    SiteState {
        url: url.into(),
        producer: producer.into(),
        up,
        since: t(0),
        last_checked_at: t(last_checked),
        last_status: Some(if up { 200 } else { 503 }),
        last_error: None,
        last_error_kind: None,
        last_elapsed_ms: Some(12),
        cert_expires_at: None,
    }
}

/// `checks`, `up` of them, the up ones' latencies.
fn figures(checks: i64, up: i64, latencies_ms: &[i32]) -> Figures {
    let mut hist = [0; LATENCY_BUCKETS];
    for ms in latencies_ms {
        hist[latency_bucket(*ms)] += 1;
    }
    Figures { checks, up, hist }
}

fn data(states: Vec<SiteState>) -> PageData {
    let mut d = PageData::default();
    for s in states {
        d.states.insert((s.url.clone(), s.producer.clone()), s);
    }
    d
}

fn rows() -> StatusRows {
    StatusRows {
        now: t(NOW),
        states: Vec::new(),
        next_from: 0,
        forgotten: Vec::new(),
        waiting: Vec::new(),
        labels: HashMap::new(),
        maintenance_now: HashMap::new(),
        windows: Vec::new(),
        incidents: Vec::new(),
        alerts_pending: 0,
    }
}

fn rules(alerting: bool) -> Rules {
    Rules {
        stale_after_s: 600,
        alerting,
        showing: UrlShowing::Redacted,
    }
}

fn labels(name: Option<&str>, group: Option<&str>, public: bool) -> Labels {
    Labels {
        name: name.map(String::from),
        group: group.map(String::from),
        public,
    }
}

fn incident(url: &str) -> OpenIncident {
    OpenIncident {
        url: url.into(),
        since: Some(t(5)),
        producers: vec!["eu".into()],
    }
}

#[test]
fn each_state_has_the_page_s_word_and_css_class() {
    let words: Vec<(&str, &str)> = [
        TargetState::Down,
        TargetState::Degraded,
        TargetState::Up,
        TargetState::NoData,
        TargetState::Waiting,
        TargetState::Maintenance,
    ]
    .into_iter()
    .map(|s| (s.label(), s.class()))
    .collect();
    assert_eq!(
        words,
        [
            ("DOWN", "down"),
            ("DEGRADED", "degraded"),
            ("UP", "up"),
            ("NO DATA", "nodata"),
            ("WAITING", "waiting"),
            ("MAINTENANCE", "maint"),
        ]
    );
}

#[test]
fn uptime_is_up_checks_in_percent_of_checks() {
    assert_eq!(uptime(0, 0), None);
    assert_eq!(uptime(8, 6), Some(75.0));
    assert_eq!(uptime(3, 3), Some(100.0));
    assert_eq!(uptime(4, 0), Some(0.0));
}

#[test]
fn a_target_sums_its_vantage_points_windows() {
    let url = "https://a.example/";
    let mut d = data(vec![
        state(url, "eu", true, NOW),
        state(url, "us", true, NOW),
    ]);
    let window = |producer: &str, h24: Figures| WindowRow {
        url: url.into(),
        producer: producer.into(),
        hours_24: h24,
        days_7: figures(100, if producer == "eu" { 90 } else { 100 }, &[]),
        days_30: figures(1_000, if producer == "eu" { 700 } else { 800 }, &[]),
    };
    // eu: 8 of 10 up, at 12 ms ([10, 14)); us: 10 of 10 up at 27 ms ([20, 28)).
    let eu = window("eu", figures(10, 8, &[12; 8]));
    let us = window("us", figures(10, 10, &[27; 10]));
    d.windows.insert((url.into(), "eu".into()), eu);
    d.windows.insert((url.into(), "us".into()), us);
    let r = Report::of(&d, &rows(), rules(false));
    let target = &r.targets[0];
    assert_eq!(
        (target.uptime_24h, target.uptime_7d, target.uptime_30d),
        (Some(90.0), Some(95.0), Some(75.0))
    );
    // Rank 9 of the 18 up checks: the first of the ten in [20, 28), 20.8 ms, shown 21.
    assert_eq!(target.p50_ms_24h, Some(21.0));
    let eu = r.sites.iter().find(|s| s.producer == "eu").unwrap();
    assert_eq!(
        (eu.uptime_24h, eu.uptime_7d, eu.uptime_30d),
        (Some(80.0), Some(90.0), Some(70.0))
    );
    // Rank 4 of 8 in [10, 14): 12 ms; rank 7.6: 13.8, shown rounded.
    assert_eq!((eu.p50_ms_24h, eu.p95_ms_24h), (Some(12.0), Some(14.0)));
    let us = r.sites.iter().find(|s| s.producer == "us").unwrap();
    assert_eq!(
        (us.p50_ms_30d, us.p95_ms_30d),
        (None, None),
        "no latency in 30 d"
    );
    assert_eq!((us.p50_ms_24h, us.p95_ms_24h), (Some(24.0), Some(28.0)));
}

#[test]
fn a_target_s_state_is_judged_across_its_vantage_points() {
    let url = "https://a.example/";
    let judged = |eu: (bool, i64), us: (bool, i64), alerting: bool, down: bool| {
        let d = data(vec![
            state(url, "eu", eu.0, eu.1),
            state(url, "us", us.0, us.1),
        ]);
        let mut rows = rows();
        if down {
            rows.incidents.push(incident(url));
        }
        Report::of(&d, &rows, rules(alerting)).targets[0].state
    };
    let (fresh, stale) = (NOW - 600, NOW - 601);
    use TargetState::*;
    assert_eq!(judged((true, fresh), (true, fresh), false, false), Up);
    assert_eq!(
        judged((false, fresh), (true, fresh), false, false),
        Degraded
    );
    assert_eq!(judged((false, fresh), (false, fresh), false, false), Down);
    // A stale vantage point counts neither way.
    assert_eq!(judged((false, stale), (true, fresh), false, false), Up);
    assert_eq!(judged((false, stale), (false, fresh), false, false), Down);
    assert_eq!(judged((true, stale), (false, stale), false, false), NoData);
    // Alerting on: down is what alerting decided (its quorum), whatever one sees.
    assert_eq!(judged((false, fresh), (true, fresh), true, true), Down);
    assert_eq!(
        judged((false, fresh), (false, fresh), true, false),
        Degraded
    );
}

#[test]
fn a_series_is_stale_past_ck_alert_stale_after_not_at_it() {
    let d = data(vec![
        state("https://a.example/", "at", true, NOW - 600),
        state("https://a.example/", "past", true, NOW - 601),
    ]);
    let r = Report::of(&d, &rows(), rules(false));
    let mut stale: Vec<(&str, bool)> = r
        .sites
        .iter()
        .map(|s| (s.producer.as_str(), s.stale))
        .collect();
    stale.sort();
    assert_eq!(stale, [("at", false), ("past", true)]);
}

#[test]
fn series_come_down_first_then_stale_then_up_by_url_and_vantage_point() {
    let d = data(vec![
        state("https://a.example/", "eu", true, NOW),
        state("https://b.example/", "us", false, NOW),
        state("https://b.example/", "eu", false, NOW),
        state("https://c.example/", "eu", true, NOW - 1_000),
        state("https://d.example/", "eu", false, NOW - 1_000),
    ]);
    let r = Report::of(&d, &rows(), rules(false));
    let order: Vec<(String, &str)> = r
        .sites
        .iter()
        .map(|s| (s.url.clone().unwrap(), s.producer.as_str()))
        .collect();
    let o = |u: &str, p| (format!("https://{u}.example/"), p);
    assert_eq!(
        order,
        [
            o("b", "eu"),
            o("b", "us"),
            o("c", "eu"),
            o("d", "eu"),
            o("a", "eu")
        ]
    );
}

#[test]
fn a_hidden_target_is_nowhere_and_a_checked_one_is_not_waiting_too() {
    let (shown, hidden) = ("https://shown.example/", "https://hidden.example/");
    let mut d = data(vec![
        state(shown, "eu", false, NOW),
        state(hidden, "eu", false, NOW),
    ]);
    d.labels.insert(hidden.into(), labels(None, None, false));
    let hidden_new = "https://hidden-new.example/";
    d.labels
        .insert(hidden_new.into(), labels(None, None, false));
    let mut rows = rows();
    rows.incidents = vec![incident(shown), incident(hidden)];
    let new = "https://new.example/";
    rows.waiting = vec![shown.into(), hidden_new.into(), new.into()];
    let r = Report::of(&d, &rows, rules(true));
    let urls = |v: Vec<Option<String>>| v.into_iter().map(Option::unwrap).collect::<Vec<_>>();
    assert_eq!(
        urls(r.sites.iter().map(|s| s.url.clone()).collect()),
        [shown]
    );
    let targets: Vec<(String, TargetState)> = r
        .targets
        .iter()
        .map(|t| (t.url.clone().unwrap(), t.state))
        .collect();
    assert_eq!(
        targets,
        [
            (shown.to_string(), TargetState::Down),
            (new.to_string(), TargetState::Waiting)
        ]
    );
    assert_eq!(
        urls(r.incidents.iter().map(|i| i.url.clone()).collect()),
        [shown]
    );
    assert_eq!(r.incidents[0].since, Some(t(5)));
    assert_eq!(r.incidents[0].producers, ["eu"]);
}

#[test]
fn a_name_replaces_the_url_unless_urls_are_shown_in_full() {
    let url = "https://user:pw@a.example/path?key=secret";
    let named = labels(Some("Shop"), None, true);
    let (id, name, shown, title) = public_view(url, Some(&named), UrlShowing::Redacted);
    assert_eq!(id, target_id(url));
    assert_eq!(
        (name.as_deref(), shown, title.as_str()),
        (Some("Shop"), None, "Shop")
    );
    let (_, _, shown, title) = public_view(url, Some(&named), UrlShowing::Full);
    let full = "https://user:***@a.example/path?key=secret";
    assert_eq!((shown.as_deref(), title.as_str()), (Some(full), "Shop"));
    let (_, name, shown, title) = public_view(url, None, UrlShowing::Redacted);
    let redacted = shown_url(url, UrlShowing::Redacted);
    assert!(
        !redacted.contains("pw") && !redacted.contains("secret"),
        "{redacted}"
    );
    assert_eq!(
        (name, shown.as_deref(), title.as_str()),
        (None, Some(redacted.as_str()), redacted.as_str())
    );
}

#[test]
fn targets_go_by_group_ungrouped_last_down_first_then_by_title() {
    let urls = [
        "https://a.example/",
        "https://b.example/",
        "https://c.example/",
        "https://d.example/",
    ];
    let mut d = data(vec![
        state(urls[0], "eu", true, NOW),
        state(urls[1], "eu", false, NOW),
        state(urls[2], "eu", true, NOW),
        state(urls[3], "eu", true, NOW),
    ]);
    d.labels
        .insert(urls[0].into(), labels(Some("Zed"), Some("Web"), true));
    d.labels
        .insert(urls[1].into(), labels(Some("Yak"), Some("Web"), true));
    d.labels
        .insert(urls[2].into(), labels(Some("Alpha"), None, true));
    d.labels
        .insert(urls[3].into(), labels(Some("Mid"), Some("Api"), true));
    let r = Report::of(&d, &rows(), rules(false));
    let titles: Vec<&str> = r.targets.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(titles, ["Mid", "Yak", "Zed", "Alpha"]);
    assert_eq!(r.targets[1].group.as_deref(), Some("Web"));
}

#[test]
fn a_target_in_a_maintenance_window_now_says_so() {
    let url = "https://a.example/";
    let d = data(vec![state(url, "eu", false, NOW)]);
    let mut rows = rows();
    rows.maintenance_now
        .insert(url.into(), (t(NOW + 3_600), "deploy".into()));
    rows.alerts_pending = 3;
    let r = Report::of(&d, &rows, rules(false));
    let target = &r.targets[0];
    assert_eq!(target.state, TargetState::Maintenance);
    let m = target.maintenance.as_ref().unwrap();
    assert_eq!(
        (m.starts_at, m.ends_at, m.reason.as_str()),
        (t(NOW), t(NOW + 3_600), "deploy")
    );
    assert_eq!((r.generated_at, r.alerts_pending), (t(NOW), 3));
}

#[test]
fn a_site_page_finds_its_target_by_id_or_shown_url() {
    let (a, b) = ("https://a.example/", "https://b.example/");
    let mut d = data(vec![state(a, "eu", true, NOW), state(b, "eu", true, NOW)]);
    d.alignment = Some(Alignment::at(t(NOW)));
    let r = Report::of(&d, &rows(), rules(false));
    assert_eq!(r.strip_end, Some(Alignment::at(t(NOW)).day));
    let id = format!("id={}", target_id(b));
    assert_eq!(r.find(Some(&id)).map(|t| t.stored_url.as_str()), Some(b));
    assert_eq!(
        r.find(Some("url=https%3A%2F%2Fb.example%2F"))
            .map(|t| t.stored_url.as_str()),
        Some(b)
    );
    assert!(r.find(Some("id=0000")).is_none());
    assert!(r.find(Some("url=https://c.example/")).is_none());
    assert!(r.find(None).is_none());
}
