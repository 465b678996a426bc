//! Deciding: each URL's alert state, followed one stored event at a time, and the
//! notifications its changes make. Pure: the write path loads the states of a
//! transaction's URLs, runs the events through them here, and stores the changed states
//! and the notifications in that same transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::consumer::rollup::RollupInput;
use crate::consumer::series_hash::SeriesMap;

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
    /// A vantage point whose newest check of a URL is this many seconds older than the
    /// URL's newest check (from any vantage point) no longer counts (`CK_ALERT_STALE_AFTER`).
    pub stale_after_s: i64,
}

impl Default for AlertRules {
    fn default() -> AlertRules {
        AlertRules {
            quorum: 1,
            after: 3,
            recover_after: 2,
            cert_days: 14,
            stale_after_s: 600,
        }
    }
}

impl AlertRules {
    /// How finely a vantage point's newest check is kept (a tenth of `stale_after_s`, 1 s
    /// at least): a steady site's state then changes once per step, not at every check.
    fn seen_step_s(&self) -> i64 {
        (self.stale_after_s / 10).max(1)
    }

    /// A vantage point last seen at `seen` (Unix seconds, kept in steps) is stale when the
    /// URL's newest check is `newest`: never early, at most a step late.
    fn is_stale(&self, seen: i64, newest: i64) -> bool {
        newest - seen > self.stale_after_s + self.seen_step_s()
    }
}

/// After this long without a check (event time, against the URL's newest), a vantage
/// point's state is forgotten: a redeployed producer with a new name must not leave one
/// entry behind per URL per deploy.
pub(crate) const FORGET_VANTAGE_AFTER_S: i64 = 30 * 86_400;

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
    /// Its newest check (Unix seconds, in steps of [`AlertRules::seen_step_s`]); None in
    /// states stored before staleness was judged: such a vantage point counts until it
    /// reports again.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    seen: Option<i64>,
    /// Consecutive checks whose certificate is beyond the warning window, capped at
    /// `recover_after`; None until it reports a certificate.
    #[serde(rename = "cf", default, skip_serializing_if = "Option::is_none")]
    certs_far: Option<u32>,
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
    /// The partition its events come in (None in states stored before it was kept).
    pub(crate) partition: Option<i32>,
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
    /// An open incident closed because no vantage point has checked the URL for
    /// `CK_ALERT_STALE_AFTER` (wall-clock time): nobody knows whether it is up.
    Stale,
    /// An open incident closed because its URL was removed from the targets list
    /// (`CK_TARGETS_TOPIC`).
    Removed,
}

impl AlertKind {
    /// The name in payloads and in `alert_outbox.kind`.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Down => "down",
            AlertKind::Up => "up",
            AlertKind::CertExpiring => "cert_expiring",
            AlertKind::Stale => "stale",
            AlertKind::Removed => "removed",
        }
    }
}

/// A decided notification: the webhook's JSON payload, field for field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Stable across every delivery attempt: receivers dedupe on it.
    pub id: uuid::Uuid,
    /// down, up, cert_expiring, stale or removed.
    pub kind: AlertKind,
    /// The URL, its password (if any) redacted.
    pub url: String,
    /// When the incident started (down), the URL came back (up), the check that saw
    /// the certificate (cert_expiring), the URL's last check (stale), or its removal
    /// from the list (removed).
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    pub since: Option<DateTime<Utc>>,
    /// The vantage points that see it so: down for `down`, up for `up`; the deciding one
    /// for `cert_expiring`; the ones gone quiet for `stale`; those it had for `removed`.
    pub producers: Vec<String>,
    /// The deciding check's HTTP status.
    pub status: Option<i32>,
    /// The deciding check's error.
    pub error: Option<String>,
    /// The deciding check's error kind.
    pub error_kind: Option<&'static str>,
    /// When the deciding check ran (for `stale`: the URL's last check).
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

    /// One more verdict of this vantage point.
    fn follow(&mut self, e: &RollupInput, rules: &AlertRules) {
        if e.up {
            self.oks = (self.oks + 1).min(rules.recover_after);
            self.fails = 0;
            self.fail_since = None;
            if self.down {
                self.ok_since = self.ok_since.or(Some(e.ts.timestamp_micros()));
            }
            if self.oks >= rules.recover_after {
                self.down = false;
            }
        } else {
            self.fails = (self.fails + 1).min(rules.after);
            self.oks = 0;
            self.ok_since = None;
            self.fail_since = self.fail_since.or(Some(e.ts.timestamp_micros()));
            if self.fails >= rules.after {
                self.down = true;
            }
        }
        let now = e.ts.timestamp();
        if self
            .seen
            .is_none_or(|seen| now - seen >= rules.seen_step_s())
        {
            self.seen = Some(now);
        }
        if let Some(expires) = e.cert_expires_at {
            self.certs_far = Some(if cert_soon(expires, e.ts, rules) {
                0
            } else {
                (self.certs_far.unwrap_or(0) + 1).min(rules.recover_after)
            });
        }
    }
}

fn cert_soon(expires: DateTime<Utc>, at: DateTime<Utc>, rules: &AlertRules) -> bool {
    expires - at < chrono::TimeDelta::days(rules.cert_days)
}

impl UrlAlertState {
    /// Follow one stored event of this URL (in offset order) and say what it decides.
    pub(crate) fn follow(&mut self, e: &RollupInput, rules: &AlertRules) -> Vec<Notification> {
        let mut decided = Vec::new();
        self.partition = Some(e.partition);
        let now = e.ts.timestamp();
        let newest = self
            .vantage
            .values()
            .filter_map(|s| s.seen)
            .fold(now, i64::max);
        // Vantage points quiet for a month are forgotten; one back from being stale starts
        // a new run (what it saw before says nothing of now).
        self.vantage.retain(|_, s| {
            s.seen
                .is_none_or(|seen| newest - seen <= FORGET_VANTAGE_AFTER_S)
        });
        let streak = self.vantage.entry(e.producer.to_string()).or_default();
        if streak.seen.is_some_and(|seen| rules.is_stale(seen, now)) {
            *streak = Streak::default();
        }
        // Counts stop at the rules' thresholds, and `ok_since` is kept only while it can
        // still be needed (the vantage point sees the URL down): a state that means the
        // same is the same, so a steady or blipping site's state is rarely written again.
        streak.follow(e, rules);
        let counted = |s: &Streak| s.seen.is_none_or(|seen| !rules.is_stale(seen, newest));
        let seeing_down = self
            .vantage
            .values()
            .filter(|s| counted(s) && s.down)
            .count();
        let names = |down: bool| -> Vec<String> {
            self.vantage
                .iter()
                .filter(|(_, s)| counted(s) && s.down == down)
                .map(|(p, _)| p.clone())
                .collect()
        };
        // In a maintenance window nothing is notified: the streaks follow the checks, and
        // the first check after the window decides what the state then is (a site still
        // down then gets its `down`; one back within the window, nothing).
        if e.maintenance {
            return decided;
        }
        if !self.down && seeing_down >= rules.quorum.max(1) {
            self.down = true;
            self.since = self
                .vantage
                .values()
                .filter(|s| counted(s) && s.down)
                .filter_map(|s| s.fail_since)
                .min()
                .and_then(DateTime::from_timestamp_micros)
                .or(Some(e.ts));
            let producers = names(true);
            decided.push(self.notification(AlertKind::Down, producers, e));
        } else if self.down && seeing_down < rules.quorum.max(1) {
            self.down = false;
            // When the deciding vantage point came back; or, when the incident ends because
            // the ones that saw it down went quiet, this check.
            self.since = self
                .vantage
                .get(&*e.producer)
                .and_then(|s| s.ok_since)
                .and_then(DateTime::from_timestamp_micros)
                .or(Some(e.ts));
            let producers = names(false);
            decided.push(self.notification(AlertKind::Up, producers, e));
        }
        if let Some(streak) = self.vantage.get_mut(&*e.producer)
            && !streak.down
        {
            streak.ok_since = None;
        }
        decided.extend(self.follow_certificate(e, rules, newest));
        decided
    }

    /// `cert_expiring` at most once per URL per expiry: again only for a strictly earlier
    /// notAfter, or once every vantage point reporting a certificate has seen it renewed
    /// (`recover_after` checks in a row beyond the window). Two certificates served in
    /// turn (two backends, two vantage points) warn once, not at every turn.
    fn follow_certificate(
        &mut self,
        e: &RollupInput,
        rules: &AlertRules,
        newest: i64,
    ) -> Option<Notification> {
        let expires = e.cert_expires_at?;
        if !cert_soon(expires, e.ts, rules) {
            let renewed = self
                .vantage
                .values()
                .filter(|s| s.seen.is_none_or(|seen| !rules.is_stale(seen, newest)))
                .filter_map(|s| s.certs_far)
                .all(|far| far >= rules.recover_after);
            if renewed {
                self.cert_warned = None;
            }
            return None;
        }
        if self.cert_warned.is_some_and(|warned| expires >= warned) {
            return None;
        }
        self.cert_warned = Some(expires);
        let mut warning =
            self.notification(AlertKind::CertExpiring, vec![e.producer.to_string()], e);
        warning.since = Some(e.ts);
        Some(warning)
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

    /// The URL's newest check from any vantage point (Unix seconds, to a step).
    pub(crate) fn newest_check(&self) -> Option<i64> {
        self.vantage.values().filter_map(|s| s.seen).max()
    }

    /// Every vantage point went quiet (wall-clock): close the open incident with a `stale`
    /// notification. None when there is no open incident.
    pub(crate) fn close_stale(&mut self, url: &str) -> Option<Notification> {
        let last = self
            .newest_check()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .unwrap_or_default();
        self.close(url, AlertKind::Stale, last)
    }

    /// The URL was removed from the targets list at `at`: close the open incident with a
    /// `removed` notification. None when there is no open incident.
    pub(crate) fn close_removed(&mut self, url: &str, at: DateTime<Utc>) -> Option<Notification> {
        self.close(url, AlertKind::Removed, at)
    }

    fn close(&mut self, url: &str, kind: AlertKind, at: DateTime<Utc>) -> Option<Notification> {
        if !self.down {
            return None;
        }
        self.down = false;
        self.since = Some(at);
        Some(Notification {
            id: uuid::Uuid::now_v7(),
            kind,
            url: crate::secret::redact_url(url).into_owned(),
            since: Some(at),
            producers: self.vantage.keys().cloned().collect(),
            status: None,
            error: None,
            error_kind: None,
            checked_at: at,
            cert_expires_at: None,
        })
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
    let mut states: SeriesMap<&str, UrlAlertState> = SeriesMap::default();
    let mut notifications = Vec::new();
    for e in inputs {
        let state = states
            .entry(&*e.url)
            .or_insert_with(|| stored.get(&*e.url).cloned().unwrap_or_default());
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
mod tests;
