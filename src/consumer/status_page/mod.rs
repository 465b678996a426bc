//! The status page, served with the metrics on `CK_HTTP_ADDR`: `GET /` (HTML) and
//! `GET /api/status` (JSON), read from the rollups and `site_status` in PostgreSQL, so any
//! consumer of a topic shows every site, not only its own partitions'.
//!
//! It owns its own read-only connection (never the writer's), reads at most once per
//! `FRESH_FOR` (2 s) whatever the number of visitors, and builds the page off the runtime's
//! thread: a visitor never slows the writing of events.

mod cache;
mod html;
mod report;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::metrics::ConsumerMetrics;
use super::store::{self, Grain, PostgresSettings};
use crate::observe::{Endpoints, Page, PageFuture};
use cache::RollupCache;
use report::Report;

/// A page read this recently is served again as it is.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// Longest wait for PostgreSQL to connect, per attempt.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// The consumer's endpoints: its metrics and health, and the status page.
pub struct StatusPage {
    metrics: Arc<ConsumerMetrics>,
    postgres: PostgresSettings,
    /// The page's own connection; one read at a time.
    db: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    latest: Mutex<Option<(Instant, Arc<Report>)>>,
    /// The rollup rows read so far (changed only under `db`'s lock).
    kept: Arc<Mutex<RollupCache>>,
    /// `CK_ALERT_STALE_AFTER`: a series this long without a check is shown stale.
    stale_after_s: i64,
}

impl StatusPage {
    /// The endpoints of a consumer writing with `metrics`, reading from `postgres`.
    pub fn new(
        metrics: Arc<ConsumerMetrics>,
        postgres: PostgresSettings,
        stale_after_s: i64,
    ) -> Arc<StatusPage> {
        Arc::new(StatusPage {
            metrics,
            postgres,
            stale_after_s,
            db: tokio::sync::Mutex::new(None),
            latest: Mutex::new(None),
            kept: Arc::default(),
        })
    }

    fn fresh(&self) -> Option<Arc<Report>> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match &*latest {
            Some((at, report)) if at.elapsed() < FRESH_FOR => Some(report.clone()),
            _ => None,
        }
    }

    /// The figures, read now or at most `FRESH_FOR` (2 s) ago; why not, in one line.
    async fn report(&self) -> Result<Arc<Report>, String> {
        if let Some(report) = self.fresh() {
            return Ok(report);
        }
        let mut db = self.db.lock().await;
        // Another visitor may have read it while this one waited.
        if let Some(report) = self.fresh() {
            return Ok(report);
        }
        if db.as_ref().is_none_or(|c| c.is_closed()) {
            let client = self
                .postgres
                .connect(CONNECT_WITHIN)
                .await
                .map_err(|e| e.to_string())?;
            store::read_only(&client).await.map_err(|e| e.to_string())?;
            *db = Some(client);
        }
        let Some(client) = db.as_ref() else {
            return Err("no connection to PostgreSQL".into());
        };
        let started = Instant::now();
        let rows = match self.read(client).await {
            Ok(rows) => rows,
            Err(e) => {
                *db = None;
                lock(&self.kept).forget();
                return Err(e.to_string());
            }
        };
        let read = started.elapsed();
        let (kept, stale_after) = (self.kept.clone(), self.stale_after_s);
        let report = tokio::task::spawn_blocking(move || {
            let mut kept = lock(&kept);
            kept.work_out_points();
            Report::of(&rows, &kept, stale_after)
        })
        .await
        .map(Arc::new)
        .map_err(|e| format!("building the page failed: {e}"))?;
        log::debug!(
            "status page: {} site(s) read in {} ms, summed in {} ms",
            report.sites.len(),
            read.as_millis(),
            (started.elapsed() - read).as_millis()
        );
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), report.clone()));
        Ok(report)
    }

    /// The states, and into the kept rollups what can have changed since the last read.
    async fn read(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<store::StatusRows, store::StoreError> {
        let rows = store::read_status(client).await?;
        let plan = lock(&self.kept).plan_read(rows.now);
        for (grain, from) in [(Grain::Hour, plan.hours_from), (Grain::Day, plan.days_from)] {
            store::read_rollups(client, grain, from, |r| lock(&self.kept).keep(grain, r)).await?;
        }
        lock(&self.kept).read_done(rows.now, plan.whole);
        Ok(rows)
    }

    /// The page at `path` made by `make` from the figures (off the runtime's thread).
    async fn serve(
        self: Arc<Self>,
        content_type: &'static str,
        make: impl FnOnce(&Report) -> Bytes + Send + 'static,
    ) -> Page {
        let started = Instant::now();
        let made = match self.report().await {
            Ok(report) => tokio::task::spawn_blocking(move || {
                let made = make(&report);
                log::debug!(
                    "status page: {content_type} of {} KiB made in {} ms",
                    made.len() / 1024,
                    started.elapsed().as_millis()
                );
                made
            })
            .await
            .map_err(|e| format!("building the page failed: {e}")),
            Err(why) => Err(why),
        };
        match made {
            Ok(body) => Page {
                status: 200,
                content_type,
                body,
            },
            Err(why) => Page {
                status: 503,
                content_type: "text/plain; charset=utf-8",
                body: Bytes::from(format!(
                    "status page unavailable: {}\n",
                    why.replace('\n', " ")
                )),
            },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_page(report: &Report) -> Bytes {
    // Plain numbers, strings and times: serialising cannot fail.
    Bytes::from(serde_json::to_vec(report).unwrap_or_default())
}

impl Endpoints for StatusPage {
    fn metrics(&self) -> String {
        self.metrics.render()
    }
    fn live(&self) -> Result<(), String> {
        Endpoints::live(self.metrics.as_ref())
    }
    fn ready(&self) -> Result<(), String> {
        self.metrics.ready()
    }
    fn page(self: Arc<Self>, path: &str, query: Option<&str>) -> Option<PageFuture> {
        match path {
            "/" => {
                let page = html::page_number(query);
                let make = move |report: &Report| Bytes::from(html::render(report, page));
                Some(Box::pin(self.serve("text/html; charset=utf-8", make)))
            }
            "/api/status" => Some(Box::pin(self.serve("application/json", json_page))),
            _ => None,
        }
    }
}
