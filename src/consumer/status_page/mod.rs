//! The status page, served with the metrics (`CK_HTTP_ADDR`) or on an address of its own
//! (`CK_STATUS_ADDR`): `GET /` (one row per URL), `GET /site?url=…` (one URL),
//! `GET /api/status` and `/api/site?url=…` (JSON), `GET /badge/…svg`. Read from
//! `site_status`, the windows (`series_windows`) and, for one URL's page, its rollups, so
//! any consumer of a topic shows every URL, not only its own partitions'.
//!
//! It owns its own read-only connection (never the writer's), reads at most once per
//! `FRESH_FOR` (2 s) whatever the number of visitors, and then only the rows changed since
//! (`data`); it builds the figures off the runtime's thread, and renders `/api/status`
//! once per read: a visitor never slows the writing of events, and fifty visitors cost
//! what one does. What it says when PostgreSQL fails is "temporarily unavailable" (the
//! reason goes to the log, never to the public).

mod badge;
mod chart;
mod data;
mod home;
mod html;
mod report;
pub mod shown;
mod site;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::metrics::ConsumerMetrics;
use super::store::{self, PostgresSettings};
use super::windows;
use crate::observe::{Endpoints, Page, PageFuture};
use data::PageData;
use report::{Report, Rules};

/// A page read this recently is served again as it is.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// A read this recent is served while the next one is made.
const SERVE_STALE_FOR: Duration = Duration::from_secs(30);

/// Longest wait for PostgreSQL to connect, per attempt.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// Pages made at once at most; past it a visitor gets a quick 503 (the metrics and
/// health never wait for pages).
const PAGES_AT_ONCE: usize = 32;

/// Badges may be cached this long by whoever shows them.
const BADGE_MAX_AGE: u32 = 60;

/// The figures of one read, and what is rendered of them once.
struct Rendered {
    report: Report,
    json: OnceLock<Bytes>,
    /// The home pages made from it, by what was asked (a few: page 1 and searches).
    homes: Mutex<std::collections::HashMap<home::HomeQuery, Bytes>>,
}

impl Rendered {
    /// `/api/status`, rendered once per read.
    fn json(&self) -> Bytes {
        // Plain numbers, strings and times: serialising cannot fail.
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.report).unwrap_or_default()))
            .clone()
    }
}

/// Home pages kept per read at most (each visitor asking for another page or search
/// costs one more).
const HOMES_KEPT: usize = 64;

/// The consumer's endpoints: its metrics and health, and the status page.
pub struct StatusPage {
    metrics: Arc<ConsumerMetrics>,
    postgres: PostgresSettings,
    rules: Rules,
    /// The page's own connection; one read at a time.
    db: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    latest: Mutex<Option<(Instant, Arc<Rendered>)>>,
    /// The rows read so far (changed only under `db`'s lock).
    data: Arc<Mutex<PageData>>,
    pages: Arc<tokio::sync::Semaphore>,
    /// A failure to read is logged once until a read works again.
    failing: std::sync::atomic::AtomicBool,
    /// A read started beside a visitor served an older one.
    refreshing: std::sync::atomic::AtomicBool,
}

impl StatusPage {
    /// The endpoints of a consumer writing with `metrics`, reading from `postgres`; a
    /// series without a check for `stale_after_s` is stale; `alerting`: URLs are down as
    /// alerting decides.
    pub fn new(
        metrics: Arc<ConsumerMetrics>,
        postgres: PostgresSettings,
        (stale_after_s, alerting, showing): (i64, bool, shown::UrlShowing),
    ) -> Arc<StatusPage> {
        Arc::new(StatusPage {
            metrics,
            postgres,
            rules: Rules {
                stale_after_s,
                alerting,
                showing,
            },
            db: tokio::sync::Mutex::new(None),
            latest: Mutex::new(None),
            data: Arc::default(),
            pages: Arc::new(tokio::sync::Semaphore::new(PAGES_AT_ONCE)),
            failing: std::sync::atomic::AtomicBool::new(false),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn fresh(&self) -> Option<Arc<Rendered>> {
        self.latest_within(FRESH_FOR)
    }

    fn latest_within(&self, age: Duration) -> Option<Arc<Rendered>> {
        let latest = lock(&self.latest);
        match &*latest {
            Some((at, r)) if at.elapsed() < age => Some(r.clone()),
            _ => None,
        }
    }

    /// The figures as a visitor gets them: read at most `FRESH_FOR` (2 s) ago; or, when the
    /// last read is older but less than `SERVE_STALE_FOR`, that one at once while a read
    /// starts beside (a visitor never waits for the figures to be summed, except the
    /// first after start or a long quiet); why not, in one line.
    async fn rendered(self: &Arc<Self>) -> Result<Arc<Rendered>, String> {
        if let Some(r) = self.fresh() {
            return Ok(r);
        }
        if let Some(r) = self.latest_within(SERVE_STALE_FOR) {
            if !self
                .refreshing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let page = self.clone();
                tokio::spawn(async move {
                    if let Err(why) = page.read_now().await {
                        log::warn!("status page: cannot read the figures: {why}");
                    }
                    page.refreshing
                        .store(false, std::sync::atomic::Ordering::Release);
                });
            }
            return Ok(r);
        }
        self.read_now().await
    }

    /// Read and sum the figures now (unless another visitor just did).
    async fn read_now(&self) -> Result<Arc<Rendered>, String> {
        let mut db = self.db.lock().await;
        // Another visitor may have read it while this one waited.
        if let Some(r) = self.fresh() {
            return Ok(r);
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
                lock(&self.data).forget();
                return Err(e.to_string());
            }
        };
        let read = started.elapsed();
        let (data, rules) = (self.data.clone(), self.rules);
        // /api/status asked for lately: rendered now too, not by its next visitor.
        let json_wanted = lock(&self.latest)
            .as_ref()
            .is_some_and(|(_, r)| r.json.get().is_some());
        let rendered = tokio::task::spawn_blocking(move || {
            let rendered = Rendered {
                report: Report::of(&lock(&data), &rows, rules),
                json: OnceLock::new(),
                homes: Mutex::default(),
            };
            if json_wanted {
                rendered.json();
            }
            Arc::new(rendered)
        })
        .await
        .map_err(|e| format!("building the page failed: {e}"))?;
        log::debug!(
            "status page: {} URL(s) read in {} ms, summed in {} ms",
            rendered.report.targets.len(),
            read.as_millis(),
            (started.elapsed() - read).as_millis()
        );
        *lock(&self.latest) = Some((Instant::now(), rendered.clone()));
        Ok(rendered)
    }

    /// The states and windows changed since the last read (everything, when due).
    async fn read(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<store::StatusRows, store::StoreError> {
        loop {
            let from = lock(&self.data).read_from();
            // Its horizon is taken before any row is read: the windows' too.
            let mut rows = store::read_status(client, from).await?;
            let data = &self.data;
            let at = store::read_windows(client, from, |w| lock(data).keep_window(w)).await?;
            let mut data = lock(&self.data);
            data.keep_states(
                std::mem::take(&mut rows.states),
                (&rows.forgotten, std::mem::take(&mut rows.labels)),
                rows.next_from,
            );
            // The windows moved: every row changed, and some may have left: all again.
            if !data.windows_read(at) {
                return Ok(rows);
            }
        }
    }

    /// A page made by `make` from the figures (off the runtime's thread).
    async fn serve(
        self: Arc<Self>,
        content_type: &'static str,
        make: impl FnOnce(&Rendered) -> Page + Send + 'static,
    ) -> Page {
        let Ok(_permit) = self.pages.clone().try_acquire_owned() else {
            return unavailable("busy");
        };
        match self.rendered().await {
            Ok(rendered) => {
                self.failing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                tokio::task::spawn_blocking(move || make(&rendered))
                    .await
                    .unwrap_or_else(|e| {
                        log::error!("status page: {content_type} failed: {e}");
                        unavailable("failed")
                    })
            }
            Err(why) => {
                if !self
                    .failing
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    log::warn!("status page: cannot read the figures: {why}");
                }
                unavailable("no figures")
            }
        }
    }

    /// The home page for `query`: from the read's figures, with the 90-day strips of the
    /// rows it shows read for them; kept with the read, so that visitors of the same page
    /// within `FRESH_FOR` cost nothing more.
    async fn home(self: Arc<Self>, query: Option<String>) -> Page {
        let Ok(_permit) = self.pages.clone().try_acquire_owned() else {
            return unavailable("busy");
        };
        let rendered = match self.rendered().await {
            Ok(r) => r,
            Err(why) => {
                if !self
                    .failing
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    log::warn!("status page: cannot read the figures: {why}");
                }
                return unavailable("no figures");
            }
        };
        let query = home::HomeQuery::of(query.as_deref());
        if let Some(body) = lock(&rendered.homes).get(&query) {
            return page(200, "text/html; charset=utf-8", body.clone());
        }
        let urls = home::shown_urls(&rendered.report, &query);
        let strips = match rendered.report.strip_end {
            Some(end) => {
                let db = self.db.lock().await;
                let Some(client) = db.as_ref() else {
                    return unavailable("no connection");
                };
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                match store::read_strips(client, &urls, (end, windows::STRIP_DAYS)).await {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("status page: cannot read the daily uptimes: {e}");
                        return unavailable("no figures");
                    }
                }
            }
            None => Default::default(),
        };
        let made = tokio::task::spawn_blocking(move || {
            let body = Bytes::from(home::render(&rendered.report, &query, &strips));
            let mut homes = lock(&rendered.homes);
            if homes.len() < HOMES_KEPT {
                homes.insert(query, body.clone());
            }
            page(200, "text/html; charset=utf-8", body)
        });
        made.await.unwrap_or_else(|_| unavailable("failed"))
    }

    /// One URL's page (`json`: its figures as JSON).
    async fn site(self: Arc<Self>, query: Option<String>, json: bool) -> Page {
        let Ok(_permit) = self.pages.clone().try_acquire_owned() else {
            return unavailable("busy");
        };
        let rendered = match self.rendered().await {
            Ok(r) => r,
            Err(why) => {
                log::warn!("status page: cannot read the figures: {why}");
                return unavailable("no figures");
            }
        };
        let Some(target) = rendered.report.find(query.as_deref()).cloned() else {
            return page(
                404,
                "text/plain; charset=utf-8",
                "unknown URL: see / for the URLs checked\n",
            );
        };
        let rows = {
            let db = self.db.lock().await;
            let Some(client) = db.as_ref() else {
                return unavailable("no connection");
            };
            let in_payloads = crate::secret::redact_url(&target.stored_url);
            store::read_site(client, &target.stored_url, &in_payloads).await
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                log::warn!("status page: cannot read a site's figures: {e}");
                return unavailable("no figures");
            }
        };
        let (alerting, showing) = (self.rules.alerting, self.rules.showing);
        let made = tokio::task::spawn_blocking(move || {
            let view = site::SiteView::of(&target, rows, alerting, showing);
            if json {
                page(
                    200,
                    "application/json",
                    serde_json::to_vec(&view).unwrap_or_default(),
                )
            } else {
                page(200, "text/html; charset=utf-8", site::render(&view))
            }
        });
        made.await.unwrap_or_else(|_| unavailable("failed"))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn page(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Page {
    Page {
        status,
        content_type,
        body: body.into(),
        max_age: None,
    }
}

/// What the public sees when the figures cannot be had (the reason is logged, not shown).
fn unavailable(_why: &str) -> Page {
    page(
        503,
        "text/plain; charset=utf-8",
        "the status page is temporarily unavailable; try again in a moment\n",
    )
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
        let query = query.map(str::to_string);
        match path {
            "/" => Some(Box::pin(self.home(query))),
            "/api/status" => {
                let make = |r: &Rendered| page(200, "application/json", r.json());
                Some(Box::pin(self.serve("application/json", make)))
            }
            "/site" => Some(Box::pin(self.site(query, false))),
            "/api/site" => Some(Box::pin(self.site(query, true))),
            p => {
                let kind = badge::BadgeKind::of(p);
                let make = move |r: &Rendered| {
                    let target = r.report.find(query.as_deref());
                    let svg = match kind {
                        Some(kind) => badge::render(kind, target),
                        None => badge::render(badge::BadgeKind::Status, None),
                    };
                    Page {
                        max_age: Some(BADGE_MAX_AGE),
                        ..page(200, "image/svg+xml", svg)
                    }
                };
                p.starts_with("/badge/")
                    .then(|| Box::pin(self.serve("image/svg+xml", make)) as PageFuture)
            }
        }
    }
}
