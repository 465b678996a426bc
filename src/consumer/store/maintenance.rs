//! `maintenance_windows`: planned windows during which a URL's checks notify nothing and
//! count apart. Written by `checksite-consumer maintenance`, read by every writer (every
//! 5 s) and by the status page. Matching a URL against a window's pattern is PostgreSQL's
//! (`~`): the consumer carries no regex engine.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::{StoreError, bounded, sql_error};

/// A window as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    /// Its id (`maintenance end ID`).
    pub id: i64,
    /// Every URL.
    pub every_url: bool,
    /// These URLs, exactly.
    pub urls: Vec<String>,
    /// URLs matching this regular expression (PostgreSQL's).
    pub pattern: Option<String>,
    /// From.
    pub starts_at: DateTime<Utc>,
    /// Until (excluded).
    pub ends_at: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

impl MaintenanceWindow {
    /// Whether a check at `at` is in it (its URL matching aside).
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }

    /// What it applies to, in words that show no URL (for the public page).
    pub fn scope(&self) -> String {
        match (self.every_url, self.urls.len(), &self.pattern) {
            (true, _, _) => "every URL".into(),
            (_, 0, Some(_)) => "URLs by pattern".into(),
            (_, n, _) => format!("{n} URL(s)"),
        }
    }
}

const COLUMNS: &str = "id, every_url, coalesce(urls, '{}'), pattern, starts_at, ends_at, reason";

fn window(r: &tokio_postgres::Row) -> Result<MaintenanceWindow, tokio_postgres::Error> {
    Ok(MaintenanceWindow {
        id: r.try_get(0)?,
        every_url: r.try_get(1)?,
        urls: r.try_get(2)?,
        pattern: r.try_get(3)?,
        starts_at: r.try_get(4)?,
        ends_at: r.try_get(5)?,
        reason: r.try_get(6)?,
    })
}

/// Add a window (its id is ignored); its pattern checked by PostgreSQL. Its new id.
pub async fn add_window(client: &Client, w: &MaintenanceWindow) -> Result<i64, StoreError> {
    bounded("maintenance window", async {
        let fail = |e: tokio_postgres::Error| sql_error("maintenance window", &e);
        if let Some(p) = &w.pattern {
            client.query_one("SELECT '' ~ $1", &[p]).await.map_err(|e| {
                StoreError::Url(format!(
                    "--match {p:?} is not a regular expression PostgreSQL reads: {}",
                    e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())
                ))
            })?;
        }
        let urls = (!w.urls.is_empty()).then_some(&w.urls);
        let row = client
            .query_one(
                "INSERT INTO maintenance_windows (every_url, urls, pattern, starts_at, ends_at, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&w.every_url, &urls, &w.pattern, &w.starts_at, &w.ends_at, &w.reason],
            )
            .await
            .map_err(fail)?;
        row.try_get(0).map_err(fail)
    })
    .await
}

/// The windows not ended by `after`, by start.
pub async fn windows_after(
    client: &Client,
    after: DateTime<Utc>,
) -> Result<Vec<MaintenanceWindow>, StoreError> {
    bounded("maintenance windows", async {
        let fail = |e: tokio_postgres::Error| sql_error("maintenance windows", &e);
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM maintenance_windows WHERE ends_at > $1 ORDER BY starts_at, id"),
                &[&after],
            )
            .await
            .map_err(fail)?;
        rows.iter().map(window).collect::<Result<_, _>>().map_err(fail)
    })
    .await
}

/// End the window `id` now (a window not started yet is ended before it starts). False
/// when there is no such window still going or to come.
pub async fn end_window(client: &Client, id: i64) -> Result<bool, StoreError> {
    bounded("maintenance window", async {
        let n = client
            .execute(
                "UPDATE maintenance_windows SET ends_at = now(), \
                   starts_at = least(starts_at, now() - interval '1 millisecond') \
                 WHERE id = $1 AND ends_at > now()",
                &[&id],
            )
            .await
            .map_err(|e| sql_error("maintenance window", &e))?;
        Ok(n == 1)
    })
    .await
}

/// Of `urls`, those matching `pattern` (PostgreSQL's regular expressions).
pub(crate) async fn matching(
    client: &Client,
    pattern: &str,
    urls: &[&str],
) -> Result<Vec<String>, StoreError> {
    bounded("maintenance windows", async {
        let fail = |e: tokio_postgres::Error| sql_error("maintenance windows", &e);
        let rows = client
            .query_typed(
                "SELECT u FROM unnest($2::text[]) AS u WHERE u ~ $1",
                &[(&pattern, Type::TEXT), (&urls, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(fail)?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(fail)
    })
    .await
}

/// The URLs (with a state on the page) in a window now: URL → (until, reason).
pub(crate) async fn in_maintenance_now(
    client: &Client,
) -> Result<Vec<(String, DateTime<Utc>, String)>, StoreError> {
    let fail = |e: tokio_postgres::Error| sql_error("maintenance windows", &e);
    let now_on = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM maintenance_windows WHERE starts_at <= now() AND now() < ends_at)",
            &[],
        )
        .await
        .map_err(fail)?;
    if !now_on.try_get::<_, bool>(0).map_err(fail)? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT DISTINCT ON (s.url) s.url, w.ends_at, w.reason \
             FROM maintenance_windows AS w JOIN (SELECT DISTINCT url FROM site_status) AS s \
               ON w.every_url OR s.url = ANY(w.urls) OR (w.pattern IS NOT NULL AND s.url ~ w.pattern) \
             WHERE w.starts_at <= now() AND now() < w.ends_at ORDER BY s.url, w.ends_at DESC",
            &[],
        )
        .await
        .map_err(fail)?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(fail)
}
