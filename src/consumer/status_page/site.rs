//! The page of one URL, `GET /site?url=…` (HTML) and `GET /api/site?url=…` (JSON): per
//! vantage point its state and last check; latency per hour over 48 hours and per day over
//! 90 days, and daily uptime, as charts; its incidents as alerting decided them; its
//! latest checks. Made from the rows read for it (`store::read_site`) when asked for.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde::Serialize;

use super::chart::{Line, line_chart};
use super::html::{self, date, escape, ms, percent, time};
use super::report::{TargetReport, TargetState, uptime};
use super::shown::{UrlShowing, scrub};
use crate::consumer::rollup::{LATENCY_BUCKETS, RecentCheck, combine, percentile};
use crate::consumer::store::{RollupRow, SITE_DAYS, SITE_HOURS, SiteRows};

/// Latest checks listed.
const RECENT_SHOWN: usize = 15;

#[derive(Debug, Serialize)]
struct VantageView {
    producer: String,
    up: bool,
    stale: bool,
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    since: DateTime<Utc>,
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    last_checked_at: DateTime<Utc>,
    last_status: Option<i32>,
    last_error: Option<String>,
    last_error_kind: Option<String>,
    last_elapsed_ms: Option<i32>,
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    cert_expires_at: Option<DateTime<Utc>>,
}

/// One hour or day, every vantage point together.
#[derive(Debug, Clone, Serialize)]
struct SlotView {
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    start: DateTime<Utc>,
    checks: i64,
    up_checks: i64,
    uptime: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct IncidentView {
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    start: Option<DateTime<Utc>>,
    /// None while it is open.
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    end: Option<DateTime<Utc>>,
    /// Start to end (or to now, while open).
    duration_s: Option<i64>,
    /// How it ended: up, stale, or open.
    ended: &'static str,
    producers: Vec<String>,
    first_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct RecentView {
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    checked_at: DateTime<Utc>,
    producer: String,
    up: bool,
    status: Option<i32>,
    elapsed_ms: Option<i32>,
    error_kind: Option<String>,
    error: Option<String>,
    dns_ms: Option<i32>,
    connect_ms: Option<i32>,
    tls_ms: Option<i32>,
    ttfb_ms: Option<i32>,
}

/// The site page's figures (also its JSON).
#[derive(Debug, Serialize)]
pub(crate) struct SiteView {
    id: String,
    name: Option<String>,
    /// As shown; null when it has a name (and `CK_STATUS_URLS` is not `full`).
    url: Option<String>,
    /// Its name, or its URL as shown.
    #[serde(skip)]
    title: String,
    state: TargetState,
    vantage: Vec<VantageView>,
    hours: Vec<SlotView>,
    days: Vec<SlotView>,
    /// Newest first; empty with alerting off.
    incidents: Vec<IncidentView>,
    alerting: bool,
    /// Newest first.
    recent: Vec<RecentView>,
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    generated_at: DateTime<Utc>,
}

impl SiteView {
    /// From the rows of the URL `target` reports on.
    pub(crate) fn of(
        target: &TargetReport,
        rows: SiteRows,
        alerting: bool,
        showing: UrlShowing,
    ) -> SiteView {
        let scrubbed = |e: &Option<String>| e.as_deref().map(|e| scrub(e, showing));
        let now = rows.now.unwrap_or_else(Utc::now);
        let stale: BTreeMap<&str, bool> = target
            .vantage
            .iter()
            .map(|v| (v.producer.as_str(), v.stale))
            .collect();
        let mut recent = Vec::new();
        let mut vantage = Vec::new();
        for (s, json) in &rows.states {
            let checks: Vec<RecentCheck> = serde_json::from_str(json).unwrap_or_default();
            recent.extend(checks.into_iter().map(|mut c| {
                c.error = scrubbed(&c.error);
                recent_view(&s.producer, c)
            }));
            vantage.push(VantageView {
                producer: s.producer.clone(),
                up: s.up,
                stale: stale.get(s.producer.as_str()).copied().unwrap_or(false),
                since: s.since,
                last_checked_at: s.last_checked_at,
                last_status: s.last_status,
                last_error: scrubbed(&s.last_error),
                last_error_kind: s.last_error_kind.clone(),
                last_elapsed_ms: s.last_elapsed_ms,
                cert_expires_at: s.cert_expires_at,
            });
        }
        recent.sort_by_key(|c| std::cmp::Reverse(c.checked_at));
        recent.truncate(RECENT_SHOWN);
        let hour = crate::consumer::rollup::truncate(now, 3600);
        let day = crate::consumer::rollup::truncate(now, 86_400);
        SiteView {
            id: target.id.clone(),
            name: target.name.clone(),
            url: target.url.clone(),
            title: target.title.clone(),
            state: target.state,
            vantage,
            hours: slots(&rows.hours, hour, TimeDelta::hours(1), SITE_HOURS as usize),
            days: slots(&rows.days, day, TimeDelta::days(1), SITE_DAYS as usize),
            incidents: incidents(&rows.decisions, now)
                .into_iter()
                .map(|mut i| {
                    i.first_error = scrubbed(&i.first_error);
                    i
                })
                .collect(),
            alerting,
            recent,
            generated_at: now,
        }
    }
}

fn recent_view(producer: &str, c: RecentCheck) -> RecentView {
    let [dns_ms, connect_ms, tls_ms, ttfb_ms] = c.phases.unwrap_or([None; 4]);
    RecentView {
        checked_at: DateTime::from_timestamp_millis(c.at_ms).unwrap_or_default(),
        producer: producer.to_string(),
        up: c.up,
        status: c.status,
        elapsed_ms: c.elapsed_ms,
        error_kind: c.error_kind,
        error: c.error,
        dns_ms,
        connect_ms,
        tls_ms,
        ttfb_ms,
    }
}

/// Checks, up checks, latency histogram, least and greatest latency of a slot.
type SlotSum = (i64, i64, [i64; LATENCY_BUCKETS], Option<i32>, Option<i32>);

/// `n` slots of `step` ending with the one starting at `last`, each the sum of its rows
/// (every vantage point).
fn slots(rows: &[RollupRow], last: DateTime<Utc>, step: TimeDelta, n: usize) -> Vec<SlotView> {
    let first = last - step * (n as i32 - 1);
    let mut sums: Vec<SlotSum> = vec![(0, 0, [0; LATENCY_BUCKETS], None, None); n];
    for r in rows {
        let Ok(i) = usize::try_from((r.bucket - first).num_seconds() / step.num_seconds()) else {
            continue;
        };
        let Some(s) = sums.get_mut(i) else { continue };
        s.0 += r.checks;
        s.1 += r.up_checks;
        for (a, b) in s.2.iter_mut().zip(&r.latency_hist) {
            *a += b;
        }
        s.3 = combine(s.3, r.latency_min_ms, i32::min);
        s.4 = combine(s.4, r.latency_max_ms, i32::max);
    }
    sums.into_iter()
        .enumerate()
        .map(|(i, (checks, up, hist, lo, hi))| SlotView {
            start: first + step * i as i32,
            checks,
            up_checks: up,
            uptime: uptime(checks, up),
            p50_ms: percentile(&hist, 0.5, lo, hi).map(f64::round),
            p95_ms: percentile(&hist, 0.95, lo, hi).map(f64::round),
        })
        .collect()
}

/// Alerting's decisions (oldest first) as incidents (newest first): a `down` opens one,
/// the next `up` or `stale` ends it.
fn incidents(decisions: &[(String, String)], now: DateTime<Utc>) -> Vec<IncidentView> {
    let at = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.to_utc())
    };
    let mut out: Vec<IncidentView> = Vec::new();
    for (kind, payload) in decisions {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
        match kind.as_str() {
            "down" => {
                let first_error = match (
                    v["error_kind"].as_str(),
                    v["error"].as_str(),
                    v["status"].as_i64(),
                ) {
                    (Some(k), Some(e), _) => Some(format!("{k}: {e}")),
                    (None, Some(e), _) => Some(e.to_string()),
                    (_, None, Some(s)) => Some(format!("HTTP {s}")),
                    _ => None,
                };
                let producers = v["producers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(IncidentView {
                    start: at(&v["since"]),
                    end: None,
                    duration_s: None,
                    ended: "open",
                    producers,
                    first_error,
                });
            }
            ended @ ("up" | "stale") => {
                if let Some(open) = out.last_mut().filter(|i| i.end.is_none()) {
                    open.end = at(&v["since"]);
                    open.ended = if ended == "up" { "up" } else { "stale" };
                }
            }
            _ => {}
        }
    }
    for i in &mut out {
        i.duration_s = i.start.map(|s| (i.end.unwrap_or(now) - s).num_seconds());
    }
    out.reverse();
    out
}

/// The document.
pub(crate) fn render(v: &SiteView) -> String {
    let mut out = String::with_capacity(32 * 1024);
    html::open(&mut out, &format!("checksite: {}", v.title), true);
    let _ = write!(
        out,
        "<header><p><a href=\"/\">← all URLs</a></p><h1 class=\"{class}\"><span class=\"badge\">{label}</span> <span class=\"url\">{title}</span></h1>\
         <p class=\"summary\">{url}as of {at} · <a href=\"/api/site?id={id}\">JSON</a></p></header><main>",
        class = v.state.class(),
        label = v.state.label(),
        title = escape(&v.title),
        url = match (&v.name, &v.url) {
            (Some(_), Some(url)) => format!("{} · ", escape(url)),
            _ => String::new(),
        },
        at = time(&v.generated_at),
        id = v.id,
    );
    vantage_table(&mut out, v);
    out.push_str("<h2>Latency and uptime</h2><div class=\"charts\">");
    let tick_hours: Vec<(usize, String)> = (0..v.hours.len())
        .filter(|i| v.hours[*i].start.hour().is_multiple_of(12))
        .map(|i| {
            (
                i,
                format!(
                    "{} {:02}:00",
                    &date(&v.hours[i].start)[5..],
                    v.hours[i].start.hour()
                ),
            )
        })
        .collect();
    chart(
        &mut out,
        &v.hours,
        &tick_hours,
        "latency per hour, last 48 hours (every vantage point)",
    );
    let tick_days: Vec<(usize, String)> = (0..v.days.len())
        .rev()
        .step_by(15)
        .map(|i| (i, date(&v.days[i].start)[5..].to_string()))
        .collect();
    chart(
        &mut out,
        &v.days,
        &tick_days,
        "latency per day, last 90 days (every vantage point)",
    );
    out.push_str("</div><figure>");
    let strip: Vec<(i64, i64)> = v.days.iter().map(|d| (d.checks, d.up_checks)).collect();
    super::home::strip(&mut out, &strip, v.days.last().map(|d| d.start), 6);
    let checks: i64 = strip.iter().map(|d| d.0).sum();
    let up: i64 = strip.iter().map(|d| d.1).sum();
    let _ = write!(
        out,
        "<figcaption>uptime per day, last 90 days: {} over {checks} checks</figcaption></figure>",
        percent(uptime(checks, up))
    );
    incident_table(&mut out, v);
    recent_table(&mut out, v);
    out.push_str("</main>");
    html::close(&mut out);
    out
}

fn chart(out: &mut String, slots: &[SlotView], ticks: &[(usize, String)], title: &str) {
    let lines = [
        Line {
            label: "p50",
            class: "p50",
            values: slots.iter().map(|s| s.p50_ms).collect(),
        },
        Line {
            label: "p95",
            class: "p95",
            values: slots.iter().map(|s| s.p95_ms).collect(),
        },
    ];
    line_chart(out, title, ticks, &lines, "ms");
}

fn vantage_table(out: &mut String, v: &SiteView) {
    out.push_str("<h2>Vantage points</h2><table class=\"vantage\"><thead><tr><th>vantage point</th><th>state</th><th>since</th><th>last check</th><th>result</th><th>elapsed</th><th>certificate</th></tr></thead><tbody>");
    for p in &v.vantage {
        let (class, label) = match (p.stale, p.up) {
            (true, _) => ("stale", "NO DATA"),
            (false, true) => ("up", "UP"),
            (false, false) => ("down", "DOWN"),
        };
        let result = match (&p.last_error_kind, &p.last_error, p.last_status) {
            (kind, Some(e), _) => format!(
                "<span class=\"error\">{}: {}</span>",
                escape(kind.as_deref().unwrap_or("error")),
                escape(e)
            ),
            (_, None, Some(s)) => format!("HTTP {s}"),
            _ => String::new(),
        };
        let cert = p.cert_expires_at.map_or(String::new(), |c| {
            let days = (c - v.generated_at).num_days();
            let warn = if days < 14 { " class=\"warn\"" } else { "" };
            format!("<span{warn}>expires {} ({days} days)</span>", date(&c))
        });
        let _ = write!(
            out,
            "<tr class=\"{class}\" data-producer=\"{prod}\"><td>{prod}</td><td><span class=\"badge\">{label}</span></td><td>{since}</td><td>{last}</td><td>{result}</td><td>{ms}</td><td>{cert}</td></tr>",
            prod = escape(&p.producer),
            since = time(&p.since),
            last = time(&p.last_checked_at),
            ms = ms(p.last_elapsed_ms.map(f64::from)),
        );
    }
    out.push_str("</tbody></table>");
}

fn incident_table(out: &mut String, v: &SiteView) {
    out.push_str("<h2>Incidents</h2>");
    if !v.alerting {
        out.push_str("<p>Alerting is off (CK_ALERT_WEBHOOK_URL): no incidents are decided.</p>");
        return;
    }
    if v.incidents.is_empty() {
        out.push_str("<p>None recorded.</p>");
        return;
    }
    out.push_str("<table class=\"incidents\"><thead><tr><th>start</th><th>end</th><th>duration</th><th>seen by</th><th>first error</th></tr></thead><tbody>");
    for i in &v.incidents {
        let end = match (i.end, i.ended) {
            (Some(e), "stale") => format!("{} (no data since)", time(&e)),
            (Some(e), _) => time(&e),
            (None, _) => "open".into(),
        };
        let _ = write!(
            out,
            "<tr class=\"incident\" data-duration-s=\"{d}\"><td>{start}</td><td>{end}</td><td>{dur}</td><td>{by}</td><td class=\"error\">{err}</td></tr>",
            d = i.duration_s.unwrap_or(0),
            start = i.start.as_ref().map(time).unwrap_or_default(),
            dur = i.duration_s.map(duration).unwrap_or_default(),
            by = escape(&i.producers.join(", ")),
            err = escape(i.first_error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>");
}

fn recent_table(out: &mut String, v: &SiteView) {
    out.push_str("<h2>Latest checks</h2><table class=\"recent\"><thead><tr><th>time</th><th>vantage point</th><th>result</th><th>elapsed</th><th>DNS / connect / TLS / first byte</th></tr></thead><tbody>");
    for c in &v.recent {
        let result = match (&c.error_kind, &c.error, c.status) {
            (k, Some(e), _) => format!(
                "<span class=\"error\">{}: {}</span>",
                escape(k.as_deref().unwrap_or("error")),
                escape(e)
            ),
            (_, None, Some(s)) => format!("HTTP {s}{}", if c.up { "" } else { " (down)" }),
            _ => String::new(),
        };
        let phase = |p: Option<i32>| p.map_or("–".into(), |v| v.to_string());
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{result}</td><td>{}</td><td>{} / {} / {} / {} ms</td></tr>",
            if c.up { "up" } else { "down" },
            time(&c.checked_at),
            escape(&c.producer),
            ms(c.elapsed_ms.map(f64::from)),
            phase(c.dns_ms),
            phase(c.connect_ms),
            phase(c.tls_ms),
            phase(c.ttfb_ms),
        );
    }
    out.push_str("</tbody></table>");
}

/// `1 h 02 min`, `3 min 05 s`, `12 s`.
fn duration(s: i64) -> String {
    match s {
        s if s >= 3600 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}
