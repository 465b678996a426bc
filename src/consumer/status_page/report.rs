//! The figures the page shows, from the rows kept: per URL (a target) its overall state
//! across vantage points, each vantage point's view, uptimes and latency; per series (a
//! URL from one vantage point, `/api/status`'s `sites`, as before) its state, uptimes over
//! 24 h / 7 d / 30 d and latency percentiles. Pure: no I/O, no HTML.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::data::PageData;
use super::shown::{UrlShowing, scrub, shown_url, target_id};
use crate::consumer::labels::Labels;
use crate::consumer::rollup::percentile;
use crate::consumer::store::{SiteState, StatusRows};
use crate::consumer::windows::Figures;

/// One URL from one vantage point: an `/api/status` `sites` entry.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SiteReport {
    /// The target's id (`shown::target_id`).
    pub(crate) id: String,
    /// Its name, when it has one.
    pub(crate) name: Option<String>,
    /// As shown (`shown::shown_url`); null when it has a name (and `CK_STATUS_URLS` is
    /// not `full`).
    pub(crate) url: Option<String>,
    pub(crate) producer: String,
    pub(crate) up: bool,
    /// No check from this vantage point for `CK_ALERT_STALE_AFTER`: its verdict is old
    /// news (shown grey, counted neither up nor down).
    pub(crate) stale: bool,
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub(crate) since: DateTime<Utc>,
    pub(crate) uptime_24h: Option<f64>,
    pub(crate) uptime_7d: Option<f64>,
    pub(crate) uptime_30d: Option<f64>,
    pub(crate) p50_ms_24h: Option<f64>,
    pub(crate) p95_ms_24h: Option<f64>,
    pub(crate) p50_ms_30d: Option<f64>,
    pub(crate) p95_ms_30d: Option<f64>,
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub(crate) last_checked_at: DateTime<Utc>,
    pub(crate) last_status: Option<i32>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_kind: Option<String>,
    pub(crate) last_elapsed_ms: Option<i32>,
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    pub(crate) cert_expires_at: Option<DateTime<Utc>>,
}

/// A URL's state across its vantage points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TargetState {
    /// Down as alerting decides it (the quorum), or, alerting off, from every vantage
    /// point that reports.
    Down,
    /// Down from some vantage points, fewer than that.
    Degraded,
    /// Up from every vantage point that reports.
    Up,
    /// No vantage point reports (every one is stale).
    NoData,
    /// In the targets list, never checked yet.
    Waiting,
    /// In a maintenance window now: its checks notify nothing and count apart.
    Maintenance,
}

impl TargetState {
    /// As the page writes it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            TargetState::Down => "DOWN",
            TargetState::Degraded => "DEGRADED",
            TargetState::Up => "UP",
            TargetState::NoData => "NO DATA",
            TargetState::Waiting => "WAITING",
            TargetState::Maintenance => "MAINTENANCE",
        }
    }

    /// As CSS classes and badges name it.
    pub(crate) fn class(self) -> &'static str {
        match self {
            TargetState::Down => "down",
            TargetState::Degraded => "degraded",
            TargetState::Up => "up",
            TargetState::NoData => "nodata",
            TargetState::Waiting => "waiting",
            TargetState::Maintenance => "maint",
        }
    }
}

/// One vantage point's view of a URL.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VantageReport {
    pub(crate) producer: String,
    pub(crate) up: bool,
    pub(crate) stale: bool,
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub(crate) last_checked_at: DateTime<Utc>,
    #[serde(skip)]
    pub(crate) last_status: Option<i32>,
    #[serde(skip)]
    pub(crate) last_error_kind: Option<String>,
    #[serde(skip)]
    pub(crate) last_elapsed_ms: Option<i32>,
}

/// One URL across its vantage points: an `/api/status` `targets` entry.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetReport {
    /// Stable, to link and key on (`shown::target_id`).
    pub(crate) id: String,
    /// Its name, when it has one.
    pub(crate) name: Option<String>,
    /// Its group on the page, when it has one.
    pub(crate) group: Option<String>,
    /// As shown (`shown::shown_url`); null when it has a name (and `CK_STATUS_URLS` is
    /// not `full`).
    pub(crate) url: Option<String>,
    /// What the page calls it: its name, or its URL as shown.
    #[serde(skip)]
    pub(crate) title: String,
    pub(crate) state: TargetState,
    pub(crate) vantage: Vec<VantageReport>,
    pub(crate) uptime_24h: Option<f64>,
    pub(crate) uptime_7d: Option<f64>,
    pub(crate) uptime_30d: Option<f64>,
    pub(crate) p50_ms_24h: Option<f64>,
    /// The earliest certificate expiry any vantage point saw.
    #[serde(skip)]
    pub(crate) cert_expires_at: Option<DateTime<Utc>>,
    /// In a maintenance window now: until when, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maintenance: Option<MaintenanceReport>,
    /// The URL as stored (for the site page's reads).
    #[serde(skip)]
    pub(crate) stored_url: String,
}

/// A maintenance window, as the page shows it (never with its URLs or pattern).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MaintenanceReport {
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub(crate) starts_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub(crate) ends_at: DateTime<Utc>,
    pub(crate) reason: String,
    /// "every URL", "3 URL(s)", "URLs by pattern".
    pub(crate) scope: String,
}

/// An open alert incident: a URL alerting decided down and not up again.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IncidentReport {
    /// The target's id.
    pub(crate) id: String,
    /// Its name, when it has one.
    pub(crate) name: Option<String>,
    /// As shown; null when it has a name (and `CK_STATUS_URLS` is not `full`).
    pub(crate) url: Option<String>,
    /// What the page calls it: its name, or its URL as shown.
    #[serde(skip)]
    pub(crate) title: String,
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) producers: Vec<String>,
}

/// The whole page's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub(crate) generated_at: DateTime<Utc>,
    /// Per series, down first (as before targets existed).
    pub(crate) sites: Vec<SiteReport>,
    /// Per URL, down and degraded first, then by URL.
    pub(crate) targets: Vec<TargetReport>,
    /// Alerting's open incidents (none when alerting is off).
    pub(crate) incidents: Vec<IncidentReport>,
    /// Notifications decided and not yet delivered (nor given up).
    pub(crate) alerts_pending: i64,
    /// The maintenance windows going on and to come.
    pub(crate) maintenance: Vec<MaintenanceReport>,
    /// The current day of the windows (the last of the page's 90-day strips).
    #[serde(skip)]
    pub(crate) strip_end: Option<DateTime<Utc>>,
}

/// Up checks in percent of checks; None without checks.
pub(crate) fn uptime(checks: i64, up: i64) -> Option<f64> {
    (checks > 0).then(|| 100.0 * up as f64 / checks as f64)
}

fn quantile(f: &Figures, q: f64) -> Option<f64> {
    percentile(&f.hist, q, None, None).map(f64::round)
}

/// How a report is made: the rules that are not in the rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// `CK_ALERT_STALE_AFTER`.
    pub(crate) stale_after_s: i64,
    /// Alerting is on: a URL is down when alerting decided so.
    pub(crate) alerting: bool,
    /// How much of a URL is shown (`CK_STATUS_URLS`).
    pub(crate) showing: UrlShowing,
}

/// What the public sees of the URL `url` labelled `labels`: (id, name, URL or None, title).
fn public_view(
    url: &str,
    labels: Option<&Labels>,
    showing: UrlShowing,
) -> (String, Option<String>, Option<String>, String) {
    let name = labels.and_then(|l| l.name.clone());
    let shown = shown_url(url, showing);
    let title = name.clone().unwrap_or_else(|| shown.clone());
    let shown = (name.is_none() || showing == UrlShowing::Full).then_some(shown);
    (target_id(url), name, shown, title)
}

/// Whether the URL `url` may be shown at all (`"public": false` may not).
fn public(data: &PageData, url: &str) -> bool {
    data.labels.get(url).is_none_or(|l| l.public)
}

/// One series (a URL from one vantage point) as the page reports it.
fn site(
    s: &SiteState,
    w: Option<&crate::consumer::store::WindowRow>,
    data: &PageData,
    rules: Rules,
    stale: bool,
) -> SiteReport {
    let empty = Figures::default();
    let (id, name, url, _) = public_view(&s.url, data.labels.get(&s.url), rules.showing);
    let (h24, d7, d30) = w.map_or((&empty, &empty, &empty), |w| {
        (&w.hours_24, &w.days_7, &w.days_30)
    });
    SiteReport {
        id,
        name,
        url,
        producer: s.producer.clone(),
        up: s.up,
        stale,
        since: s.since,
        uptime_24h: uptime(h24.checks, h24.up),
        uptime_7d: uptime(d7.checks, d7.up),
        uptime_30d: uptime(d30.checks, d30.up),
        p50_ms_24h: quantile(h24, 0.5),
        p95_ms_24h: quantile(h24, 0.95),
        p50_ms_30d: quantile(d30, 0.5),
        p95_ms_30d: quantile(d30, 0.95),
        last_checked_at: s.last_checked_at,
        last_status: s.last_status,
        last_error: s.last_error.as_deref().map(|e| scrub(e, rules.showing)),
        last_error_kind: s.last_error_kind.clone(),
        last_elapsed_ms: s.last_elapsed_ms,
        cert_expires_at: s.cert_expires_at,
    }
}

/// The targets in a maintenance window now show it.
fn mark_maintenance(targets: &mut [TargetReport], rows: &StatusRows) {
    for t in targets.iter_mut() {
        if let Some((until, reason)) = rows.maintenance_now.get(&t.stored_url) {
            t.state = TargetState::Maintenance;
            t.maintenance = Some(MaintenanceReport {
                starts_at: rows.now,
                ends_at: *until,
                reason: reason.clone(),
                scope: String::new(),
            });
        }
    }
}

impl Report {
    /// The figures of the kept rows, at `rows.now`.
    pub(crate) fn of(data: &PageData, rows: &StatusRows, rules: Rules) -> Report {
        let stale =
            |s: &SiteState| (rows.now - s.last_checked_at).num_seconds() > rules.stale_after_s;
        let mut sites = Vec::with_capacity(data.states.len());
        let mut by_url: BTreeMap<&str, Vec<&SiteState>> = BTreeMap::new();
        for (key, s) in data.states.iter().filter(|(_, s)| public(data, &s.url)) {
            sites.push(site(s, data.windows.get(key), data, rules, stale(s)));
            by_url.entry(s.url.as_str()).or_default().push(s);
        }
        let rank = |s: &SiteReport| match (s.stale, s.up) {
            (false, false) => 0,
            (true, _) => 1,
            (false, true) => 2,
        };
        sites.sort_by(|a, b| (rank(a), &a.url, &a.producer).cmp(&(rank(b), &b.url, &b.producer)));
        let hidden: std::collections::HashSet<&str> = data
            .labels
            .iter()
            .filter(|(_, l)| !l.public)
            .map(|(u, _)| u.as_str())
            .collect();
        let down: std::collections::HashSet<&str> =
            rows.incidents.iter().map(|i| i.url.as_str()).collect();
        let mut targets: Vec<TargetReport> = by_url
            .into_iter()
            .map(|(url, series)| target(url, series, data, (&stale, down.contains(url), rules)))
            .collect();
        mark_maintenance(&mut targets, rows);
        for url in rows.waiting.iter().filter(|u| !hidden.contains(u.as_str())) {
            if !targets.iter().any(|t| t.stored_url == *url) {
                targets.push(waiting(url, data.labels.get(url), rules.showing));
            }
        }
        // By group (ungrouped last); in each, down, then degraded, then the rest, by title.
        targets.sort_by(|a, b| {
            let rank = |t: &TargetReport| {
                (
                    t.group.is_none(),
                    t.group.clone(),
                    t.state.min(TargetState::Up),
                )
            };
            (rank(a), &a.title).cmp(&(rank(b), &b.title))
        });
        Report {
            generated_at: rows.now,
            sites,
            targets,
            incidents: incidents(rows, data, rules.showing),
            maintenance: rows
                .windows
                .iter()
                .map(|w| MaintenanceReport {
                    starts_at: w.starts_at,
                    ends_at: w.ends_at,
                    reason: w.reason.clone(),
                    scope: w.scope(),
                })
                .collect(),
            alerts_pending: rows.alerts_pending,
            strip_end: data.alignment.map(|a| a.day),
        }
    }
}

impl Report {
    /// The target a site page or badge asks for: `?id=`, or `?url=` (as the page shows it).
    pub(crate) fn find(&self, query: Option<&str>) -> Option<&TargetReport> {
        if let Some(id) = super::html::query_param(query, "id") {
            return self.targets.iter().find(|t| t.id == id);
        }
        let url = super::html::query_param(query, "url")?;
        self.targets
            .iter()
            .find(|t| t.url.as_deref() == Some(url.as_str()))
    }
}

/// Whether a series is stale now.
type IsStale<'a> = dyn Fn(&SiteState) -> bool + 'a;

/// One URL's report from its series.
fn target(
    url: &str,
    mut series: Vec<&SiteState>,
    data: &PageData,
    (stale, alert_down, rules): (&IsStale<'_>, bool, Rules),
) -> TargetReport {
    series.sort_by(|a, b| a.producer.cmp(&b.producer));
    let (mut h24, mut d7, mut d30) = (Figures::default(), Figures::default(), Figures::default());
    for s in &series {
        let Some(w) = data.windows.get(&(s.url.clone(), s.producer.clone())) else {
            continue;
        };
        for (sum, f) in [
            (&mut h24, &w.hours_24),
            (&mut d7, &w.days_7),
            (&mut d30, &w.days_30),
        ] {
            sum.checks += f.checks;
            sum.up += f.up;
            for (a, b) in sum.hist.iter_mut().zip(&f.hist) {
                *a += b;
            }
        }
    }
    let vantage: Vec<VantageReport> = series
        .iter()
        .map(|s| VantageReport {
            producer: s.producer.clone(),
            up: s.up,
            stale: stale(s),
            last_checked_at: s.last_checked_at,
            last_status: s.last_status,
            last_error_kind: s.last_error_kind.clone(),
            last_elapsed_ms: s.last_elapsed_ms,
        })
        .collect();
    let reporting: Vec<&VantageReport> = vantage.iter().filter(|v| !v.stale).collect();
    let seeing_down = reporting.iter().filter(|v| !v.up).count();
    let state = if reporting.is_empty() {
        TargetState::NoData
    } else if (rules.alerting && alert_down) || (!rules.alerting && seeing_down == reporting.len())
    {
        TargetState::Down
    } else if seeing_down > 0 {
        TargetState::Degraded
    } else {
        TargetState::Up
    };
    let labels = data.labels.get(url);
    let (id, name, shown, title) = public_view(url, labels, rules.showing);
    TargetReport {
        id,
        name,
        group: labels.and_then(|l| l.group.clone()),
        url: shown,
        title,
        state,
        vantage,
        uptime_24h: uptime(h24.checks, h24.up),
        uptime_7d: uptime(d7.checks, d7.up),
        uptime_30d: uptime(d30.checks, d30.up),
        p50_ms_24h: quantile(&h24, 0.5),
        cert_expires_at: series.iter().filter_map(|s| s.cert_expires_at).min(),
        maintenance: None,
        stored_url: url.to_string(),
    }
}

/// A listed URL never checked yet.
fn waiting(url: &str, labels: Option<&Labels>, showing: UrlShowing) -> TargetReport {
    let (id, name, shown, title) = public_view(url, labels, showing);
    TargetReport {
        id,
        name,
        group: labels.and_then(|l| l.group.clone()),
        url: shown,
        title,
        state: TargetState::Waiting,
        vantage: Vec::new(),
        uptime_24h: None,
        uptime_7d: None,
        uptime_30d: None,
        p50_ms_24h: None,
        cert_expires_at: None,
        maintenance: None,
        stored_url: url.to_string(),
    }
}

/// Alerting's open incidents of the targets shown, as the public sees them.
fn incidents(rows: &StatusRows, data: &PageData, showing: UrlShowing) -> Vec<IncidentReport> {
    rows.incidents
        .iter()
        .filter(|i| public(data, &i.url))
        .map(|i| {
            let (id, name, url, title) = public_view(&i.url, data.labels.get(&i.url), showing);
            IncidentReport {
                id,
                name,
                url,
                title,
                since: i.since,
                producers: i.producers.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
