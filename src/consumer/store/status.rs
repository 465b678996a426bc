//! What the status page reads: each site's state, and its rollups over the last 24 hours
//! (hourly) and 30 days (daily). Read-only: the page's connection is set read-only too.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

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

/// Everything the page shows, as read in one go.
#[derive(Debug, Clone)]
pub struct StatusRows {
    /// When it was read (the database's clock).
    pub now: DateTime<Utc>,
    /// Every series' state, by url then producer.
    pub states: Vec<SiteState>,
    /// Hourly rollups from the start of the hour 23 hours ago.
    pub hourly: Vec<RollupRow>,
    /// Daily rollups from the start of the day 29 days ago.
    pub daily: Vec<RollupRow>,
    /// Alerting's open incidents.
    pub incidents: Vec<super::OpenIncident>,
    /// Notifications not yet delivered (nor given up).
    pub alerts_pending: i64,
}

/// Read the page's rows; the three queries go out together.
pub async fn read_status(client: &Client) -> Result<StatusRows, StoreError> {
    bounded("status page read", async {
        let now: DateTime<Utc> = client
            .query_one("SELECT now()", &[])
            .await
            .map_err(|e| sql_error("status page read", &e))?
            .get(0);
        let hours_from = crate::consumer::rollup::truncate(now, 3600) - chrono::Duration::hours(23);
        let days_from = crate::consumer::rollup::truncate(now, 86_400) - chrono::Duration::days(29);
        let (hours, days): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
            ([&hours_from], [&days_from]);
        let (states, hourly, daily) = tokio::join!(
            client.query(
                "SELECT url, producer, up, since, last_checked_at, last_status, last_error, \
                 last_error_kind, last_elapsed_ms, cert_expires_at FROM site_status ORDER BY url, producer",
                &[],
            ),
            client.query(
                "SELECT url, producer, bucket, checks, up_checks, latency_hist, latency_min_ms, \
                 latency_max_ms FROM rollups_hourly WHERE bucket >= $1",
                &hours,
            ),
            client.query(
                "SELECT url, producer, bucket, checks, up_checks, latency_hist, latency_min_ms, \
                 latency_max_ms FROM rollups_daily WHERE bucket >= $1",
                &days,
            ),
        );
        let fail = |e: tokio_postgres::Error| sql_error("status page read", &e);
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
        let rollups = |rows: Vec<tokio_postgres::Row>| {
            rows.iter()
                .map(|r| {
                    Ok(RollupRow {
                        url: r.try_get(0)?,
                        producer: r.try_get(1)?,
                        bucket: r.try_get(2)?,
                        checks: r.try_get(3)?,
                        up_checks: r.try_get(4)?,
                        latency_hist: r.try_get(5)?,
                        latency_min_ms: r.try_get(6)?,
                        latency_max_ms: r.try_get(7)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        };
        let (incidents, alerts_pending) = super::alerts::open_incidents(client).await?;
        Ok(StatusRows {
            now,
            incidents,
            alerts_pending,
            states,
            hourly: rollups(hourly.map_err(fail)?).map_err(fail)?,
            daily: rollups(daily.map_err(fail)?).map_err(fail)?,
        })
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
