//! The home page, `GET /`: one row per URL (its state across vantage points, a dot per
//! vantage point, 90 days of uptime, uptimes and latency), down and degraded first, 50 a
//! page, searchable server-side (`?q=`, works without script; a few lines of script
//! filter the rows as you type).

use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Utc};

use super::html::{self, date, escape, ms, percent, query_value, time};
use super::report::{Report, TargetReport, TargetState, uptime};
use crate::consumer::windows::STRIP_DAYS;

/// URLs per page: quick to make and small enough for a phone, whatever the number of
/// URLs (down and degraded ones come first, so page 1 shows them).
pub(crate) const PER_PAGE: usize = 50;

/// What a visitor asked for: `?page=N&q=text`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HomeQuery {
    pub(crate) page: usize,
    /// Lower case; empty: every URL.
    pub(crate) search: String,
}

impl HomeQuery {
    /// From the request's query string.
    pub(crate) fn of(query: Option<&str>) -> HomeQuery {
        HomeQuery {
            page: html::query_param(query, "page")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1usize)
                .max(1),
            search: html::query_param(query, "q")
                .unwrap_or_default()
                .trim()
                .to_lowercase(),
        }
    }
}

/// The URLs `query` matches, and of them the page it asks for (with its number and the
/// number of pages).
fn select<'a>(
    report: &'a Report,
    query: &HomeQuery,
) -> (Vec<&'a TargetReport>, usize, usize, usize) {
    let shown: Vec<&TargetReport> = report
        .targets
        .iter()
        .filter(|t| query.search.is_empty() || matches(t, &query.search))
        .collect();
    let matched = shown.len();
    let pages = matched.div_ceil(PER_PAGE).max(1);
    let page = query.page.min(pages);
    let start = ((page - 1) * PER_PAGE).min(matched);
    let rows = shown[start..(start + PER_PAGE).min(matched)].to_vec();
    (rows, page, pages, matched)
}

/// Whether `t` is found by `search` (lower case): only in what the page shows of it
/// (its name, group and URL as shown), so that a search cannot probe what is hidden.
fn matches(t: &TargetReport, search: &str) -> bool {
    [Some(&t.title), t.url.as_ref(), t.group.as_ref()]
        .into_iter()
        .flatten()
        .any(|text| text.to_lowercase().contains(search))
}

/// The URLs (as stored) of the rows the page for `query` shows: whose strips to read.
pub(crate) fn shown_urls(report: &Report, query: &HomeQuery) -> Vec<String> {
    select(report, query)
        .0
        .iter()
        .map(|t| t.stored_url.clone())
        .collect()
}

/// The document for `query`, with the 90-day strips of its rows by URL (as stored).
pub(crate) fn render(report: &Report, query: &HomeQuery, strips: &Strips) -> String {
    let (rows, page, pages, matched) = select(report, query);
    let rows = &rows[..];
    let count = |s: TargetState| report.targets.iter().filter(|t| t.state == s).count();
    let (down, degraded, up, nodata) = (
        count(TargetState::Down),
        count(TargetState::Degraded),
        count(TargetState::Up),
        count(TargetState::NoData),
    );
    let mut out = String::with_capacity(8192 + rows.len() * 4096);
    let title = format!("checksite status: {down} down, {degraded} degraded, {up} up");
    html::open(&mut out, &title, true);
    let _ = write!(
        out,
        "<header><h1>checksite status</h1><p class=\"summary\" id=\"summary\">{} site(s): \
         <span id=\"summary-down\">{down} down</span>, <span id=\"summary-degraded\">{degraded} degraded</span>, \
         <span id=\"summary-up\">{up} up</span>, <span id=\"summary-nodata\">{nodata} without data</span> \
         · as of {} · <a href=\"/api/status\">JSON</a></p>\
         <form class=\"search\" method=\"get\" action=\"/\" role=\"search\"><input id=\"q\" name=\"q\" \
         type=\"search\" placeholder=\"search sites\" aria-label=\"search sites\" value=\"{}\"> \
         <button type=\"submit\">Search</button></form></header><main>",
        report.targets.len(),
        time(&report.generated_at),
        escape(&query.search)
    );
    incidents(&mut out, report);
    maintenance(&mut out, report);
    if matched == 0 {
        out.push_str(if report.targets.is_empty() {
            "<p>No checks stored yet.</p>"
        } else {
            "<p>No URL matches the search.</p>"
        });
    } else {
        // The pager only below the rows: above, it would push a row off a laptop's screen.
        table(&mut out, rows, report, strips);
        pager(&mut out, page, pages, &query.search);
    }
    out.push_str(FILTER_SCRIPT);
    out.push_str("</main>");
    html::close(&mut out);
    out
}

/// Filters the rows shown as the visitor types (the server-side search is the same
/// without script, across every page).
const FILTER_SCRIPT: &str = "<script>document.getElementById('q').addEventListener('input',function(e){\
var q=e.target.value.toLowerCase();document.querySelectorAll('tr.t').forEach(function(r){\
r.hidden=q!==''&&r.dataset.search.indexOf(q)<0;});});</script>";

/// Per URL (as stored), per day of the strip: (checks, up checks).
pub(crate) type Strips = std::collections::HashMap<String, Vec<(i64, i64)>>;

fn table(out: &mut String, rows: &[&TargetReport], report: &Report, strips: &Strips) {
    out.push_str(
        "<table class=\"targets\"><thead><tr><th>state</th><th>site</th><th>vantage points</th>\
         <th>last 90 days</th><th>24 h</th><th>30 d</th><th>p50 24 h</th></tr></thead><tbody>",
    );
    let groups = group_states(report);
    let mut group: Option<Option<&str>> = None;
    for t in rows {
        if !groups.is_empty() && group != Some(t.group.as_deref()) {
            group = Some(t.group.as_deref());
            group_heading(out, t.group.as_deref(), &groups);
        }
        let search: Vec<String> = [Some(&t.title), t.url.as_ref(), t.group.as_ref()]
            .into_iter()
            .flatten()
            .map(|s| s.to_lowercase())
            .collect();
        let _ = write!(
            out,
            "<tr class=\"t {class}\" data-id=\"{id}\" data-url=\"{url}\" data-search=\"{search}\" data-state=\"{class}\" data-uptime-24h=\"{u24}\">\
             <td><span class=\"badge\">{arrow} {label}</span></td>\
             <td class=\"url\"><a href=\"/site?id={id}\">{title}</a>{shown}{cert}</td><td class=\"dots\">",
            id = t.id,
            url = escape(t.url.as_deref().unwrap_or("")),
            search = escape(&search.join(" ")),
            title = escape(&t.title),
            shown = match (&t.name, &t.url) {
                (Some(_), Some(url)) =>
                    format!(" <span class=\"shown-url\">{}</span>", escape(url)),
                _ => String::new(),
            },
            cert = cert_warning(t, report),
            class = t.state.class(),
            u24 = t.uptime_24h.map_or(String::new(), |v| format!("{v:.4}")),
            arrow = arrow(t.state),
            label = t.state.label(),
        );
        if t.state == TargetState::Waiting {
            out.push_str("<span class=\"note\">waiting for the first check</span>");
        }
        if let Some(m) = &t.maintenance {
            let _ = write!(
                out,
                "<span class=\"note maint-note\">maintenance until {}: {}</span> ",
                time(&m.ends_at),
                escape(&m.reason)
            );
        }
        vantage_dots(out, t);
        out.push_str("</td><td class=\"bar\">");
        let none = vec![(0, 0); STRIP_DAYS];
        strip(
            out,
            strips.get(&t.stored_url).unwrap_or(&none),
            report.strip_end,
            2,
        );
        let _ = write!(
            out,
            "</td><td class=\"uptime-24h\" data-label=\"24 h\">{}</td><td data-label=\"30 d\">{}</td>\
             <td data-label=\"p50\">{}</td></tr>",
            percent(t.uptime_24h),
            percent(t.uptime_30d),
            ms(t.p50_ms_24h)
        );
    }
    out.push_str("</tbody></table>");
}

/// One dot per vantage point, coloured by its state, its last check in the title.
fn vantage_dots(out: &mut String, t: &TargetReport) {
    for v in &t.vantage {
        let state = if v.stale {
            "stale"
        } else if v.up {
            "up"
        } else {
            "down"
        };
        let how = match (v.last_status, &v.last_error_kind) {
            (_, Some(kind)) => escape(kind),
            (Some(status), None) => format!("HTTP {status}"),
            (None, None) => String::new(),
        };
        let _ = write!(
            out,
            "<span class=\"dot {state}\" data-producer=\"{p}\" title=\"{p}: {state}, last check {at}, {how}, {ms}\">●</span>",
            p = escape(&v.producer),
            at = time(&v.last_checked_at),
            ms = ms(v.last_elapsed_ms.map(f64::from)),
        );
    }
}

/// A certificate closer to its end than this is flagged.
const CERT_WARNING_DAYS: i64 = 14;

fn cert_warning(t: &TargetReport, report: &Report) -> String {
    match t.cert_expires_at {
        Some(at) if (at - report.generated_at).num_days() < CERT_WARNING_DAYS => format!(
            " <span class=\"warn cert\">⚠ certificate expires {}</span>",
            date(&at)
        ),
        _ => String::new(),
    }
}

/// Each group's state (the worst of its targets'), by name; empty when no target has a
/// group (then the page has no headings).
fn group_states(report: &Report) -> std::collections::BTreeMap<Option<&str>, TargetState> {
    let mut states = std::collections::BTreeMap::new();
    if report.targets.iter().all(|t| t.group.is_none()) {
        return states;
    }
    for t in &report.targets {
        states
            .entry(t.group.as_deref())
            .and_modify(|s: &mut TargetState| *s = worst(*s, t.state))
            .or_insert(t.state);
    }
    states
}

/// The worse of two states: down, degraded, no data, up, waiting.
fn worst(a: TargetState, b: TargetState) -> TargetState {
    let rank = |s: TargetState| match s {
        TargetState::Down => 0,
        TargetState::Degraded => 1,
        TargetState::NoData => 2,
        TargetState::Maintenance => 3,
        TargetState::Up => 4,
        TargetState::Waiting => 5,
    };
    if rank(a) <= rank(b) { a } else { b }
}

/// A group's heading row, with its state.
fn group_heading(
    out: &mut String,
    group: Option<&str>,
    states: &std::collections::BTreeMap<Option<&str>, TargetState>,
) {
    let state = states.get(&group).copied().unwrap_or(TargetState::Up);
    let _ = write!(
        out,
        "<tr class=\"group {class}\" data-group=\"{name}\"><th colspan=\"7\"><span class=\"badge\">{arrow} {label}</span> {name}</th></tr>",
        class = state.class(),
        arrow = arrow(state),
        label = state.label(),
        name = escape(group.unwrap_or("Other")),
    );
}

fn arrow(state: TargetState) -> &'static str {
    match state {
        TargetState::Up => "▲",
        TargetState::Down => "▼",
        TargetState::Degraded => "◆",
        TargetState::NoData => "●",
        TargetState::Waiting => "○",
        TargetState::Maintenance => "■",
    }
}

/// One segment per day, coloured by uptime, each titled with the day, its uptime and its
/// checks; days without checks in a row are one grey segment. Kept small: a page shows
/// 50 of them (sizes come from the CSS, the day as `MM-DD`).
pub(crate) fn strip(out: &mut String, days: &[(i64, i64)], end: Option<DateTime<Utc>>, w: usize) {
    let h = 16;
    let day_of = |i: usize| {
        end.map(|e| date(&(e - TimeDelta::days((STRIP_DAYS - 1 - i) as i64)))[5..].to_string())
    };
    let _ = write!(
        out,
        "<svg role=\"img\" class=\"strip\" width=\"{}\" height=\"{h}\" viewBox=\"0 0 {} {h}\" preserveAspectRatio=\"none\"><title>uptime per day, last {STRIP_DAYS} days</title>",
        days.len() * w,
        days.len() * w
    );
    let mut i = 0;
    while i < days.len() {
        let (checks, up) = days[i];
        if checks == 0 {
            let run = days[i..].iter().take_while(|d| d.0 == 0).count();
            let _ = write!(
                out,
                "<rect class=\"n\" x=\"{}\" width=\"{}\"><title>{}: no checks</title></rect>",
                i * w,
                run * w,
                day_of(i).unwrap_or_default()
            );
            i += run;
            continue;
        }
        let u = uptime(checks, up).unwrap_or(0.0);
        let class = match u {
            u if u >= 100.0 => "g",
            u if u >= 99.0 => "y",
            u if u >= 90.0 => "o",
            _ => "r",
        };
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{}\" width=\"{w}\"><title>{} {u:.2}% {checks}</title></rect>",
            i * w,
            day_of(i).unwrap_or_default()
        );
        i += 1;
    }
    out.push_str("</svg>");
}

/// Links to every page, when there is more than one (plain links: no script).
fn pager(out: &mut String, page: usize, pages: usize, search: &str) {
    if pages <= 1 {
        return;
    }
    let q = if search.is_empty() {
        String::new()
    } else {
        format!("&amp;q={}", query_value(search))
    };
    let _ = write!(
        out,
        "<nav class=\"pager\" aria-label=\"pages\"><span>Page {page} of {pages} ({PER_PAGE} per page, down first):</span>"
    );
    for n in 1..=pages {
        if n == page {
            let _ = write!(out, " <b aria-current=\"page\">{n}</b>");
        } else {
            let _ = write!(out, " <a href=\"/?page={n}{q}\">{n}</a>");
        }
    }
    out.push_str("</nav>");
}

/// The maintenance windows going on and to come, when there are any.
fn maintenance(out: &mut String, report: &Report) {
    if report.maintenance.is_empty() {
        return;
    }
    out.push_str("<section id=\"maintenance\" aria-label=\"maintenance\"><h2>Maintenance</h2><ul>");
    for w in &report.maintenance {
        let now = w.starts_at <= report.generated_at;
        let _ = write!(
            out,
            "<li class=\"window\">{} {} to {} ({}): {}</li>",
            if now { "now," } else { "planned," },
            time(&w.starts_at),
            time(&w.ends_at),
            escape(&w.scope),
            escape(&w.reason)
        );
    }
    out.push_str("</ul></section>");
}

/// Alerting's open incidents, when there are any (or notifications wait).
fn incidents(out: &mut String, report: &Report) {
    if report.incidents.is_empty() && report.alerts_pending == 0 {
        return;
    }
    let _ = write!(
        out,
        "<section id=\"incidents\" aria-label=\"open incidents\"><h2>Open incidents: {}</h2><ul>",
        report.incidents.len()
    );
    for i in &report.incidents {
        let since = i.since.as_ref().map(time).unwrap_or_default();
        let _ = write!(
            out,
            "<li class=\"incident\">▼ DOWN <a href=\"/site?id={}\">{}</a> since {since}, seen by {}</li>",
            i.id,
            escape(&i.title),
            escape(&i.producers.join(", "))
        );
    }
    let _ = write!(
        out,
        "</ul><p>{} notification(s) waiting for delivery.</p></section>",
        report.alerts_pending
    );
}
