//! What the status page reads: each site's state, and rollup rows from a given bucket on
//! (the page keeps them, and reads again only what can have changed). Read-only: the
//! page's connection is set read-only too.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_postgres::Client;

use super::{StoreError, bounded, sql_error};

/// A row of `site_status`.
#[derive(Debug, Clone)]
pub struct SiteState {
    /// The target URL, as the producer published it (not yet redacted).
    pub url: String,
    /// The vantage point; empty for the Python program's records.
    pub producer: String,
    /// The latest verdict.
    pub up: bool,
    /// The first check of the run of equal verdicts that is still going on.
    pub since: DateTime<Utc>,
    /// The latest check.
    pub last_checked_at: DateTime<Utc>,
    /// Its HTTP status, if it got one.
    pub last_status: Option<i32>,
    /// Its error, if it failed.
    pub last_error: Option<String>,
    /// Its error's kind.
    pub last_error_kind: Option<String>,
    /// Its elapsed time.
    pub last_elapsed_ms: Option<i32>,
    /// The latest known notAfter of the site's certificate.
    pub cert_expires_at: Option<DateTime<Utc>>,
}

/// A row of `rollups_hourly` or `rollups_daily`, as the page needs it.
#[derive(Debug, Clone)]
pub struct RollupRow {
    /// (url, producer) as in [`SiteState`].
    pub url: String,
    /// The vantage point.
    pub producer: String,
    /// The start of the hour or day.
    pub bucket: DateTime<Utc>,
    /// Checks in it.
    pub checks: i64,
    /// Of which up.
    pub up_checks: i64,
    /// Latency histogram of the up checks (`rollup::LATENCY_BOUNDS_MS`).
    pub latency_hist: Vec<i64>,
    /// Least latency of an up check.
    pub latency_min_ms: Option<i32>,
    /// Greatest latency of an up check.
    pub latency_max_ms: Option<i32>,
}

/// The page's current rows: every series' state, and alerting's incidents.
#[derive(Debug, Clone)]
pub struct StatusRows {
    /// When it was read (the database's clock).
    pub now: DateTime<Utc>,
    /// Every series' state, by url then producer.
    pub states: Vec<SiteState>,
    /// Alerting's open incidents.
    pub incidents: Vec<super::OpenIncident>,
    /// Notifications not yet delivered (nor given up).
    pub alerts_pending: i64,
}

/// Which rollups to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// `rollups_hourly`.
    Hour,
    /// `rollups_daily`.
    Day,
}

/// Read every series' state and the incidents.
pub async fn read_status(client: &Client) -> Result<StatusRows, StoreError> {
    bounded("status page read", async {
        let fail = |e: tokio_postgres::Error| sql_error("status page read", &e);
        let (now, states) = tokio::join!(
            client.query_one("SELECT now()", &[]),
            client.query(
                "SELECT url, producer, up, since, last_checked_at, last_status, last_error, \
                 last_error_kind, last_elapsed_ms, cert_expires_at FROM site_status ORDER BY url, producer",
                &[],
            ),
        );
        let now: DateTime<Utc> = now.map_err(fail)?.try_get(0).map_err(fail)?;
        let states = states
            .map_err(fail)?
            .iter()
            .map(|r| {
                Ok(SiteState {
                    url: r.try_get(0)?,
                    producer: r.try_get(1)?,
                    up: r.try_get(2)?,
                    since: r.try_get(3)?,
                    last_checked_at: r.try_get(4)?,
                    last_status: r.try_get(5)?,
                    last_error: r.try_get(6)?,
                    last_error_kind: r.try_get(7)?,
                    last_elapsed_ms: r.try_get(8)?,
                    cert_expires_at: r.try_get(9)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(fail)?;
        let (incidents, alerts_pending) = super::alerts::open_incidents(client).await?;
        Ok(StatusRows {
            now,
            states,
            incidents,
            alerts_pending,
        })
    })
    .await
}

/// Hand each rollup row of `grain` whose bucket is at or after `from` to `take`, one at a
/// time as they arrive (a month of rows for thousands of series is never all in memory
/// twice).
pub async fn read_rollups(
    client: &Client,
    grain: Grain,
    from: DateTime<Utc>,
    mut take: impl FnMut(RollupRow),
) -> Result<(), StoreError> {
    let sql = match grain {
        Grain::Hour => {
            "SELECT url, producer, bucket, checks, up_checks, latency_hist, latency_min_ms, \
             latency_max_ms FROM rollups_hourly WHERE bucket >= $1"
        }
        Grain::Day => {
            "SELECT url, producer, bucket, checks, up_checks, latency_hist, latency_min_ms, \
             latency_max_ms FROM rollups_daily WHERE bucket >= $1"
        }
    };
    bounded("status page read", async {
        let fail = |e: tokio_postgres::Error| sql_error("status page read", &e);
        let rows = client.query_raw(sql, [&from]).await.map_err(fail)?;
        let mut rows = std::pin::pin!(rows);
        while let Some(r) = rows.next().await {
            let r = r.map_err(fail)?;
            take(RollupRow {
                url: r.try_get(0).map_err(fail)?,
                producer: r.try_get(1).map_err(fail)?,
                bucket: r.try_get(2).map_err(fail)?,
                checks: r.try_get(3).map_err(fail)?,
                up_checks: r.try_get(4).map_err(fail)?,
                latency_hist: r.try_get(5).map_err(fail)?,
                latency_min_ms: r.try_get(6).map_err(fail)?,
                latency_max_ms: r.try_get(7).map_err(fail)?,
            });
        }
        Ok(())
    })
    .await
}

/// A connection for the page: read-only, so that whatever the page's code does, it
/// cannot change the data.
pub async fn read_only(client: &Client) -> Result<(), StoreError> {
    bounded("status page connection", async {
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(|e| sql_error("status page connection", &e))
    })
    .await
}
