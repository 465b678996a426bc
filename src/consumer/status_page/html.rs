//! The page as HTML: one self-contained document (inline CSS and SVG, no script, no font,
//! nothing fetched from elsewhere) that refreshes itself every 30 s, reads on a phone, and
//! says in text what every colour and chart shows.
//!
//! Every text from the data goes through [`escape`]: a URL holding `<script>` or quotes is
//! shown as text, never run.

use std::fmt::Write;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::report::{DAYS, HOURS, Point, Report, SiteReport};

/// A certificate closer to its end than this is flagged.
const CERT_WARNING_DAYS: i64 = 14;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;color:#1b1b1b;background:#fafafa}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1rem;margin:0 0 .3rem;word-break:break-all}\
.summary{font-size:1.1rem}.site{background:#fff;border:1px solid #ccc;border-left:.5rem solid #2e7d32;border-radius:.3rem;padding:.6rem .8rem;margin:.6rem 0}\
.site.down{border-left-color:#c62828}.badge{font-weight:700;padding:0 .3rem;border-radius:.2rem;color:#fff;background:#2e7d32}\
.down .badge{background:#c62828}.site.stale{border-left-color:#9e9e9e}.stale .badge{background:#757575}.meta,.figures{margin:.2rem 0;font-size:.9rem}.error{color:#8e0000;font-size:.9rem;word-break:break-word}\
.warn{color:#8a4b00;font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:.8rem;align-items:flex-end}\
.charts figure{margin:0}.charts figcaption{font-size:.75rem;color:#555}svg{display:block}\
.ok{fill:#2e7d32}.bad{fill:#c62828}.some{fill:#f9a825}.none{fill:#ddd}.p50{stroke:#1565c0}.p95{stroke:#8e24aa;stroke-dasharray:3 2}\
polyline{fill:none;stroke-width:2;stroke-linecap:round}.frame{fill:#f4f4f4}.pager{margin:.6rem 0;line-height:1.8}.pager a,.pager b{padding:0 .25rem}";

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-29 23:03:55 UTC`. By hand: chrono's `format` brings its whole strftime
/// machinery into the binary (the image must stay under 10 MB).
fn time(t: &DateTime<Utc>) -> String {
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        date(t),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-11-29`.
fn date(t: &DateTime<Utc>) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

fn percent(v: Option<f64>) -> String {
    v.map_or("no checks".into(), |v| format!("{v:.2} %"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} ms"))
}

/// Sites (cards) per page: a page stays small enough for a phone, and quick to make,
/// whatever the number of sites (down ones come first, so page 1 shows them).
pub(crate) const PER_PAGE: usize = 50;

/// The page asked for by `?page=N` (1 when absent or not a number).
pub(crate) fn page_number(query: Option<&str>) -> usize {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("page="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// The whole document: the summary of every site, then page `page` of the cards.
pub(crate) fn render(report: &Report, page: usize) -> String {
    let up = report.sites.iter().filter(|s| s.up && !s.stale).count();
    let stale = report.sites.iter().filter(|s| s.stale).count();
    let down = report.sites.len() - up - stale;
    let pages = report.sites.len().div_ceil(PER_PAGE).max(1);
    let page = page.min(pages);
    let start = ((page - 1) * PER_PAGE).min(report.sites.len());
    let shown = &report.sites[start..(start + PER_PAGE).min(report.sites.len())];
    let mut out = String::with_capacity(4096 + shown.len() * 6144);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>checksite status: {up} up, {down} down</title>\
         <style>{STYLE}</style></head><body><header><h1>checksite status</h1>\
         <p class=\"summary\" id=\"summary\"><span id=\"summary-up\">{up} up</span>, \
         <span id=\"summary-down\">{down} down</span>, <span id=\"summary-stale\">{stale} without news</span> \
         (sites × vantage points), as of {}. \
         The page reloads every 30 s; the same figures as JSON: <a href=\"/api/status\">/api/status</a>.</p>\
         </header><main>",
        time(&report.generated_at)
    );
    incidents(&mut out, report);
    if report.sites.is_empty() {
        out.push_str("<p>No checks stored yet.</p>");
    }
    pager(&mut out, page, pages);
    for site in shown {
        site_card(&mut out, site, &report.generated_at);
    }
    pager(&mut out, page, pages);
    out.push_str("</main></body></html>\n");
    out
}

/// Links to every page, when there is more than one (plain links: no script).
fn pager(out: &mut String, page: usize, pages: usize) {
    if pages <= 1 {
        return;
    }
    let _ = write!(
        out,
        "<nav class=\"pager\" aria-label=\"pages\"><span>Page {page} of {pages} ({PER_PAGE} per page, down first):</span>"
    );
    for n in 1..=pages {
        if n == page {
            let _ = write!(out, " <b aria-current=\"page\">{n}</b>");
        } else {
            let _ = write!(out, " <a href=\"/?page={n}\">{n}</a>");
        }
    }
    out.push_str("</nav>");
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
            "<li class=\"incident\">▼ DOWN <span class=\"url\">{}</span> since {since}, seen by {}</li>",
            escape(&i.url),
            escape(&i.producers.join(", "))
        );
    }
    let _ = write!(
        out,
        "</ul><p>{} notification(s) waiting for delivery.</p></section>",
        report.alerts_pending
    );
}

fn site_card(out: &mut String, s: &SiteReport, now: &DateTime<Utc>) {
    let (class, state, arrow) = match (s.stale, s.up) {
        (true, _) => ("stale", "NO DATA", "●"),
        (false, true) => ("up", "UP", "▲"),
        (false, false) => ("down", "DOWN", "▼"),
    };
    let (url, producer) = (escape(&s.url), escape(&s.producer));
    let shown_producer = if producer.is_empty() {
        "(no vantage point name)".to_string()
    } else {
        producer.clone()
    };
    let _ = write!(
        out,
        "<article class=\"site {class}\" data-url=\"{url}\" data-producer=\"{producer}\" data-state=\"{class}\" \
         data-uptime-24h=\"{}\"><h2><span class=\"badge\">{arrow} {state}</span> <span class=\"url\">{url}</span></h2>\
         <p class=\"meta\">from <b>{shown_producer}</b> · {} · last check {}{}</p>\
         <p class=\"figures\">uptime: 24 h <b class=\"uptime-24h\">{}</b> · 7 d <b>{}</b> · 30 d <b>{}</b> · \
         latency p50/p95: 24 h {} / {} · 30 d {} / {}</p>",
        s.uptime_24h.map_or(String::new(), |v| format!("{v:.2}")),
        if s.stale {
            format!("no check since {}", time(&s.last_checked_at))
        } else {
            format!("{class} since {}", time(&s.since))
        },
        time(&s.last_checked_at),
        s.last_status
            .map_or(String::new(), |c| format!(", HTTP {c}")),
        percent(s.uptime_24h),
        percent(s.uptime_7d),
        percent(s.uptime_30d),
        ms(s.p50_ms_24h),
        ms(s.p95_ms_24h),
        ms(s.p50_ms_30d),
        ms(s.p95_ms_30d),
    );
    if let Some(error) = &s.last_error {
        let kind = s
            .last_error_kind
            .as_deref()
            .map_or(String::new(), |k| format!(" ({})", escape(k)));
        let _ = write!(
            out,
            "<p class=\"error\">last error{kind}: {}</p>",
            escape(error)
        );
    }
    if let Some(expires) = &s.cert_expires_at {
        let days = (*expires - *now).num_days();
        let (class, sign) = if days < CERT_WARNING_DAYS {
            ("warn", "⚠ ")
        } else {
            ("", "")
        };
        let _ = write!(
            out,
            "<p class=\"meta cert {class}\">{sign}certificate expires in {days} day(s), {}</p>",
            date(expires)
        );
    }
    out.push_str("<div class=\"charts\">");
    uptime_strip(out, &s.days);
    latency_chart(out, &s.hours, "last 24 h, per hour", HOURS);
    latency_chart(out, &s.days, "last 30 days, per day", DAYS);
    out.push_str("</div></article>");
}

/// One cell per day, coloured by uptime, each with its figure as a tooltip and the whole
/// strip summed up in text.
fn uptime_strip(out: &mut String, days: &[Point]) {
    let (w, h) = (6, 24);
    let full = days
        .iter()
        .filter(|d| d.checks > 0 && d.up_checks == d.checks)
        .count();
    let with_checks = days.iter().filter(|d| d.checks > 0).count();
    let _ = write!(
        out,
        "<figure><svg role=\"img\" width=\"{}\" height=\"{h}\" viewBox=\"0 0 {} {h}\"><title>Uptime per day, last {DAYS} days: {full} of {with_checks} days with checks fully up</title>",
        days.len() * w,
        days.len() * w
    );
    // A day's own title only where it was not fully up: the strip's title says the rest,
    // and a page of thousands of sites stays small.
    for (i, d) in days.iter().enumerate() {
        let (class, text) = match (d.checks, d.up_checks) {
            (0, _) => ("none", None),
            (c, u) if u == c => ("ok", None),
            (c, 0) => ("bad", Some(format!("0 % up ({c} checks)"))),
            (c, u) => (
                "some",
                Some(format!("{:.2} % up", 100.0 * u as f64 / c as f64)),
            ),
        };
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{}\" width=\"{}\" height=\"{h}\">",
            i * w,
            w - 1
        );
        if let Some(text) = text {
            let ago = days.len() - 1 - i;
            let _ = write!(out, "<title>{ago} day(s) ago: {text}</title>");
        }
        out.push_str("</rect>");
    }
    let _ = write!(
        out,
        "</svg><figcaption>uptime per day, {DAYS} days</figcaption></figure>"
    );
}

/// p50 (solid) and p95 (dashed) over the points, with the range in text.
fn latency_chart(out: &mut String, points: &[Point], what: &str, slots: usize) {
    let (w, h) = (180.0, 40.0);
    let top = points
        .iter()
        .filter_map(|p| p.p95_ms.or(p.p50_ms))
        .fold(1.0f64, f64::max);
    let line = |pick: fn(&Point) -> Option<f64>| {
        let mut coords = Vec::new();
        for (i, p) in points.iter().enumerate() {
            if let Some(v) = pick(p) {
                let x = 2.0 + (w - 4.0) * i as f64 / (slots.max(2) - 1) as f64;
                let y = h - 2.0 - (h - 4.0) * v / top;
                coords.push(format!("{x:.1},{y:.1}"));
            }
        }
        // A lone point is drawn as a dot (a zero-length line with round caps).
        if coords.len() == 1 {
            coords.push(coords[0].clone());
        }
        coords.join(" ")
    };
    let range = |pick: fn(&Point) -> Option<f64>| {
        let vs: Vec<f64> = points.iter().filter_map(pick).collect();
        match (
            vs.iter().cloned().reduce(f64::min),
            vs.iter().cloned().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) => format!("{lo:.0} to {hi:.0} ms"),
            _ => "no data".into(),
        }
    };
    let _ = write!(
        out,
        "<figure><svg role=\"img\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><title>Latency, {what}: p50 {}, p95 {}</title>\
         <rect class=\"frame\" width=\"{w}\" height=\"{h}\"/><polyline class=\"p95\" points=\"{}\"/><polyline class=\"p50\" points=\"{}\"/></svg>\
         <figcaption>latency p50 (solid) / p95 (dashed), {what}; top {top:.0} ms</figcaption></figure>",
        range(|p| p.p50_ms),
        range(|p| p.p95_ms),
        line(|p| p.p95_ms),
        line(|p| p.p50_ms),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(n: usize) -> SiteReport {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        SiteReport {
            url: format!("https://site-{n:03}.example/"),
            producer: "eu".into(),
            up: n % 10 != 0,
            stale: false,
            since: now,
            uptime_24h: Some(99.0),
            uptime_7d: None,
            uptime_30d: None,
            p50_ms_24h: None,
            p95_ms_24h: None,
            p50_ms_30d: None,
            p95_ms_30d: None,
            last_checked_at: now,
            last_status: Some(200),
            last_error: None,
            last_error_kind: None,
            last_elapsed_ms: None,
            cert_expires_at: None,
            hours: vec![Point::default(); HOURS],
            days: vec![Point::default(); DAYS],
        }
    }

    #[test]
    fn many_sites_are_paged_and_the_summary_counts_them_all() {
        let report = Report {
            generated_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            sites: (0..120).map(site).collect(),
            incidents: Vec::new(),
            alerts_pending: 0,
        };
        let cards = |html: &str| html.matches("<article ").count();
        let first = render(&report, 1);
        assert_eq!(cards(&first), PER_PAGE);
        assert!(
            first.contains("108 up</span>") && first.contains("12 down</span>"),
            "{first}"
        );
        assert!(first.contains("<a href=\"/?page=3\">3</a>"));
        let last = render(&report, 3);
        assert_eq!(cards(&last), 20);
        assert!(last.contains("site-119"));
        assert_eq!(render(&report, 9), last, "past the end: the last page");
        assert_eq!(page_number(Some("x=1&page=3")), 3);
        assert_eq!(page_number(Some("page=zero")), 1);
        assert_eq!(page_number(Some("page=0")), 1);
        assert_eq!(page_number(None), 1);
    }

    #[test]
    fn markup_in_data_is_shown_as_text() {
        assert_eq!(
            escape(r#"https://x/"><script>alert('x')</script>&"#),
            "https://x/&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
    }
}
