//! Deciding: each URL's alert state, followed one stored event at a time, and the
//! notifications its changes make. Pure: the write path loads the states of a
//! transaction's URLs, runs the events through them here, and stores the changed states
//! and the notifications in that same transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::consumer::rollup::RollupInput;

/// When a URL is down, up again, or its certificate worth a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertRules {
    /// Vantage points that must see the URL down (`CK_ALERT_QUORUM`).
    pub quorum: usize,
    /// Consecutive failed checks for a vantage point to see it down (`CK_ALERT_AFTER`).
    pub after: u32,
    /// Consecutive good checks for a vantage point to see it up again (`CK_ALERT_RECOVER_AFTER`).
    pub recover_after: u32,
    /// A certificate expiring within this many days warns, once per certificate
    /// (`CK_ALERT_CERT_DAYS`).
    pub cert_days: i64,
}

impl Default for AlertRules {
    fn default() -> AlertRules {
        AlertRules {
            quorum: 1,
            after: 3,
            recover_after: 2,
            cert_days: 14,
        }
    }
}

/// One vantage point's run of verdicts for a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Streak {
    /// Consecutive failed checks, capped (past the rules' counts it changes nothing, and a
    /// state that stops changing is not written again).
    #[serde(rename = "f")]
    fails: u32,
    /// Consecutive good checks, capped likewise.
    #[serde(rename = "o")]
    oks: u32,
    /// This vantage point sees the URL down: `after` failures set it, `recover_after` good
    /// checks clear it; in between it keeps its last judgement.
    #[serde(rename = "d")]
    down: bool,
    /// The first failed check of the current run of failures (Unix microseconds: the
    /// precision of a timestamptz).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    fail_since: Option<i64>,
    /// The first good check of the current run of good checks (Unix microseconds).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    ok_since: Option<i64>,
}

/// A URL's alert state, as stored in `alert_sites`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UrlAlertState {
    /// An incident is open: `down` was notified, `up` not yet.
    pub(crate) down: bool,
    /// When the open incident started, or when the URL came back.
    pub(crate) since: Option<DateTime<Utc>>,
    /// The certificate (its notAfter) already warned about.
    pub(crate) cert_warned: Option<DateTime<Utc>>,
    /// Per vantage point (the event's `producer`).
    pub(crate) vantage: BTreeMap<String, Streak>,
}

/// What a notification says about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The URL went down.
    Down,
    /// The URL is up again.
    Up,
    /// Its certificate expires within `CK_ALERT_CERT_DAYS`.
    CertExpiring,
}

impl AlertKind {
    /// The name in payloads and in `alert_outbox.kind`.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Down => "down",
            AlertKind::Up => "up",
            AlertKind::CertExpiring => "cert_expiring",
        }
    }
}

/// A decided notification: the webhook's JSON payload, field for field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Stable across every delivery attempt: receivers dedupe on it.
    pub id: uuid::Uuid,
    /// down, up or cert_expiring.
    pub kind: AlertKind,
    /// The URL, its password (if any) redacted.
    pub url: String,
    /// When the incident started (down), the URL came back (up), or the check that saw
    /// the certificate (cert_expiring).
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    pub since: Option<DateTime<Utc>>,
    /// The vantage points that see it so: down for `down`, up for `up`; the deciding one
    /// for `cert_expiring`.
    pub producers: Vec<String>,
    /// The deciding check's HTTP status.
    pub status: Option<i32>,
    /// The deciding check's error.
    pub error: Option<String>,
    /// The deciding check's error kind.
    pub error_kind: Option<&'static str>,
    /// When the deciding check ran.
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub checked_at: DateTime<Utc>,
    /// The site's certificate expiry, as the deciding check saw it.
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    pub cert_expires_at: Option<DateTime<Utc>>,
}

impl Streak {
    /// This vantage point sees the URL down.
    pub(crate) fn is_down(&self) -> bool {
        self.down
    }
}

impl UrlAlertState {
    /// Follow one stored event of this URL (in offset order) and say what it decides.
    pub(crate) fn follow(&mut self, e: &RollupInput, rules: &AlertRules) -> Vec<Notification> {
        let mut decided = Vec::new();
        // Counts stop at the rules' thresholds, and `ok_since` is kept only while it can
        // still be needed (the vantage point sees the URL down): a state that means the
        // same is the same, so a steady or blipping site's state is rarely written again.
        if !self.vantage.contains_key(&e.producer) {
            self.vantage.insert(e.producer.clone(), Streak::default());
        }
        let Some(streak) = self.vantage.get_mut(&e.producer) else {
            return decided;
        };
        if e.up {
            streak.oks = (streak.oks + 1).min(rules.recover_after);
            streak.fails = 0;
            streak.fail_since = None;
            if streak.down {
                streak.ok_since = streak.ok_since.or(Some(e.ts.timestamp_micros()));
            }
            if streak.oks >= rules.recover_after {
                streak.down = false;
            }
        } else {
            streak.fails = (streak.fails + 1).min(rules.after);
            streak.oks = 0;
            streak.ok_since = None;
            streak.fail_since = streak.fail_since.or(Some(e.ts.timestamp_micros()));
            if streak.fails >= rules.after {
                streak.down = true;
            }
        }
        let seeing_down = self.vantage.values().filter(|s| s.down).count();
        let names = |down: bool| -> Vec<String> {
            self.vantage
                .iter()
                .filter(|(_, s)| s.down == down)
                .map(|(p, _)| p.clone())
                .collect()
        };
        if !self.down && seeing_down >= rules.quorum.max(1) {
            self.down = true;
            self.since = self
                .vantage
                .values()
                .filter(|s| s.down)
                .filter_map(|s| s.fail_since)
                .min()
                .and_then(DateTime::from_timestamp_micros)
                .or(Some(e.ts));
            let producers = names(true);
            decided.push(self.notification(AlertKind::Down, producers, e));
        } else if self.down && seeing_down < rules.quorum.max(1) {
            self.down = false;
            self.since = self
                .vantage
                .get(&e.producer)
                .and_then(|s| s.ok_since)
                .and_then(DateTime::from_timestamp_micros);
            let producers = names(false);
            decided.push(self.notification(AlertKind::Up, producers, e));
        }
        if let Some(streak) = self.vantage.get_mut(&e.producer) {
            if !streak.down {
                streak.ok_since = None;
            }
        }
        if let Some(expires) = e.cert_expires_at {
            let soon = expires - e.ts < chrono::TimeDelta::days(rules.cert_days);
            if soon && self.cert_warned != Some(expires) {
                self.cert_warned = Some(expires);
                let mut warning =
                    self.notification(AlertKind::CertExpiring, vec![e.producer.clone()], e);
                warning.since = Some(e.ts);
                decided.push(warning);
            }
        }
        decided
    }

    fn notification(
        &self,
        kind: AlertKind,
        producers: Vec<String>,
        e: &RollupInput,
    ) -> Notification {
        Notification {
            id: uuid::Uuid::now_v7(),
            kind,
            url: crate::secret::redact_url(&e.url).into_owned(),
            since: self.since,
            producers,
            status: e.status,
            error: e.error.clone(),
            error_kind: e.error_kind,
            checked_at: e.ts,
            cert_expires_at: e.cert_expires_at,
        }
    }
}

/// The committed alert states this consumer knows, by URL: read once, then kept up to
/// date from its own commits. Only the consumer holding a URL's partition writes its state,
/// so they stay exact while it holds its partitions; they are dropped whenever the
/// partitions held change or PostgreSQL was lost.
pub(crate) type KnownStates = std::collections::HashMap<String, UrlAlertState>;

/// A transaction's decisions: every URL's state after its events, and the notifications
/// made, in the order decided.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    /// The states that changed (only those are written).
    pub(crate) changed: BTreeMap<String, UrlAlertState>,
    pub(crate) notifications: Vec<Notification>,
}

/// Run `inputs` (each URL's in offset order) through the `stored` states.
pub(crate) fn decide<'a>(
    stored: &BTreeMap<String, UrlAlertState>,
    inputs: impl IntoIterator<Item = &'a RollupInput>,
    rules: &AlertRules,
) -> Decisions {
    let mut states: std::collections::HashMap<&str, UrlAlertState> =
        std::collections::HashMap::new();
    let mut notifications = Vec::new();
    for e in inputs {
        let state = states
            .entry(e.url.as_str())
            .or_insert_with(|| stored.get(&e.url).cloned().unwrap_or_default());
        notifications.extend(state.follow(e, rules));
    }
    let changed = states
        .into_iter()
        .filter(|(url, s)| stored.get(*url) != Some(s))
        .map(|(url, s)| (url.to_string(), s))
        .collect();
    Decisions {
        changed,
        notifications,
    }
}

/// Streaks to and from their stored JSON (`alert_sites.vantage`).
pub(crate) fn vantage_json(vantage: &BTreeMap<String, Streak>) -> String {
    serde_json::to_string(vantage).unwrap_or_else(|_| "{}".to_string())
}

/// A stored `alert_sites.vantage`; a value this build cannot read starts over (empty
/// streaks) rather than stopping the writer.
pub(crate) fn vantage_from_json(json: &str) -> BTreeMap<String, Streak> {
    serde_json::from_str(json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(producer: &str, up: bool, second: i64) -> RollupInput {
        RollupInput {
            offset: second,
            url: "https://user:pw@a.example/".to_string(),
            producer: producer.to_string(),
            ts: DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap(),
            up,
            elapsed: Some(12),
            status: Some(if up { 200 } else { 503 }),
            error: None,
            error_kind: None,
            cert_expires_at: None,
        }
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
    fn a_certificate_warns_once_per_not_after() {
        let rules = AlertRules::default();
        let mut events: Vec<_> = (0..4).map(|i| check("a", true, i)).collect();
        let soon = events[0].ts + chrono::TimeDelta::days(10);
        let later = events[0].ts + chrono::TimeDelta::days(13);
        let far = events[0].ts + chrono::TimeDelta::days(90);
        events[0].cert_expires_at = Some(far);
        events[1].cert_expires_at = Some(soon);
        events[2].cert_expires_at = Some(soon);
        events[3].cert_expires_at = Some(later);
        let d = decide(&BTreeMap::new(), &events, &rules);
        let warned: Vec<_> = d.notifications.iter().map(|n| n.cert_expires_at).collect();
        assert_eq!(warned, [Some(soon), Some(later)]);
        assert!(
            d.notifications
                .iter()
                .all(|n| n.kind == AlertKind::CertExpiring)
        );
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
}
