//! The figures the page shows, from the rows the store read: per site and vantage point,
//! its state, uptimes over 24 h / 7 d / 30 d, latency percentiles, and the hourly and
//! daily points of its charts. Pure: no I/O, no HTML.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::cache::{KeptRow, RollupCache, SeriesRows, windows};
use crate::consumer::rollup::{LATENCY_BUCKETS, combine, percentile};
use crate::consumer::store::StatusRows;

/// Hours in the short window, days in the long one.
pub(crate) const HOURS: usize = 24;
pub(crate) const DAYS: usize = 30;
/// The week, in days, counted back from today (today included).
const WEEK: usize = 7;

/// One hour's or day's figures of a series.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Point {
    pub(crate) checks: i64,
    pub(crate) up_checks: i64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
}

/// Checks, up checks and the merged latency histogram over some buckets.
#[derive(Debug, Clone)]
struct Window {
    checks: i64,
    up_checks: i64,
    hist: [i64; LATENCY_BUCKETS],
    min: Option<i32>,
    max: Option<i32>,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            checks: 0,
            up_checks: 0,
            hist: [0; LATENCY_BUCKETS],
            min: None,
            max: None,
        }
    }
}

impl Window {
    fn add(&mut self, r: &KeptRow) {
        self.checks += r.checks;
        self.up_checks += r.up_checks;
        for (sum, n) in self.hist.iter_mut().zip(&r.hist) {
            *sum += n;
        }
        self.min = combine(self.min, r.min, i32::min);
        self.max = combine(self.max, r.max, i32::max);
    }

    /// Up checks in percent of checks; None without checks.
    fn uptime(&self) -> Option<f64> {
        (self.checks > 0).then(|| 100.0 * self.up_checks as f64 / self.checks as f64)
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        percentile(&self.hist, q, self.min, self.max).map(|v| v.round())
    }
}

/// One site as seen from one vantage point: the `/api/status` entry (the charts' points
/// are for the HTML only).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SiteReport {
    /// With any user:password replaced (`user:***@`).
    pub(crate) url: String,
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
    /// The last 24 hours, oldest first (the current hour last).
    #[serde(skip)]
    pub(crate) hours: Vec<Point>,
    /// The last 30 days, oldest first (today last).
    #[serde(skip)]
    pub(crate) days: Vec<Point>,
}

/// An open alert incident: a URL alerting decided down and not up again.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IncidentReport {
    /// Redacted like the sites'.
    pub(crate) url: String,
    #[serde(serialize_with = "crate::event::rfc3339_opt::serialize")]
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) producers: Vec<String>,
}

/// The whole page's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(serialize_with = "crate::event::rfc3339_millis::serialize")]
    pub(crate) generated_at: DateTime<Utc>,
    pub(crate) sites: Vec<SiteReport>,
    /// Alerting's open incidents (none when alerting is off).
    pub(crate) incidents: Vec<IncidentReport>,
    /// Notifications decided and not yet delivered (nor given up).
    pub(crate) alerts_pending: i64,
}

/// One series' figures: its points, and its three windows.
struct Series {
    hours: Vec<Point>,
    days: Vec<Point>,
    day: Window,
    week: Window,
    month: Window,
}

impl Series {
    /// From the kept rows of one series (none: a series with no rollups yet).
    fn of(
        rows: Option<&SeriesRows>,
        (first_hour, first_day): (DateTime<Utc>, DateTime<Utc>),
    ) -> Series {
        let mut f = Series {
            hours: vec![Point::default(); HOURS],
            days: vec![Point::default(); DAYS],
            day: Window::default(),
            week: Window::default(),
            month: Window::default(),
        };
        let Some(rows) = rows else { return f };
        let slot = |bucket: DateTime<Utc>, first: DateTime<Utc>, seconds: i64, len: usize| {
            let at = usize::try_from((bucket - first).num_seconds() / seconds).ok()?;
            (at < len).then_some(at)
        };
        for (bucket, r) in rows.hours.range(first_hour..) {
            if let Some(at) = slot(*bucket, first_hour, 3600, HOURS) {
                f.hours[at] = r.point.clone().unwrap_or_default();
                f.day.add(r);
            }
        }
        for (bucket, r) in rows.days.range(first_day..) {
            if let Some(at) = slot(*bucket, first_day, 86_400, DAYS) {
                f.days[at] = r.point.clone().unwrap_or_default();
                f.month.add(r);
                if at >= DAYS - WEEK {
                    f.week.add(r);
                }
            }
        }
        f
    }
}

impl Report {
    /// Down first, then stale, then up; each by url and vantage point. A series is stale
    /// when its newest check is older than `stale_after_s`.
    pub(crate) fn of(rows: &StatusRows, cache: &RollupCache, stale_after_s: i64) -> Report {
        let first = windows(rows.now);
        let mut sites: Vec<SiteReport> = rows
            .states
            .iter()
            .map(|s| {
                let kept = cache.series.get(&(s.url.clone(), s.producer.clone()));
                let f = Series::of(kept, first);
                SiteReport {
                    url: crate::secret::redact_url(&s.url).into_owned(),
                    producer: s.producer.clone(),
                    up: s.up,
                    stale: (rows.now - s.last_checked_at).num_seconds() > stale_after_s,
                    since: s.since,
                    uptime_24h: f.day.uptime(),
                    uptime_7d: f.week.uptime(),
                    uptime_30d: f.month.uptime(),
                    p50_ms_24h: f.day.quantile(0.5),
                    p95_ms_24h: f.day.quantile(0.95),
                    p50_ms_30d: f.month.quantile(0.5),
                    p95_ms_30d: f.month.quantile(0.95),
                    last_checked_at: s.last_checked_at,
                    last_status: s.last_status,
                    last_error: s.last_error.clone(),
                    last_error_kind: s.last_error_kind.clone(),
                    last_elapsed_ms: s.last_elapsed_ms,
                    cert_expires_at: s.cert_expires_at,
                    hours: f.hours,
                    days: f.days,
                }
            })
            .collect();
        let rank = |s: &SiteReport| match (s.stale, s.up) {
            (false, false) => 0,
            (true, _) => 1,
            (false, true) => 2,
        };
        sites.sort_by(|a, b| (rank(a), &a.url, &a.producer).cmp(&(rank(b), &b.url, &b.producer)));
        Report {
            generated_at: rows.now,
            sites,
            incidents: incidents(rows),
            alerts_pending: rows.alerts_pending,
        }
    }
}

/// Alerting's open incidents, their URLs redacted.
fn incidents(rows: &StatusRows) -> Vec<IncidentReport> {
    rows.incidents
        .iter()
        .map(|i| IncidentReport {
            url: crate::secret::redact_url(&i.url).into_owned(),
            since: i.since,
            producers: i.producers.clone(),
        })
        .collect()
}
