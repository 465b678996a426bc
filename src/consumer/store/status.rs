//! What the status page reads: each series' state (only what changed since the last read),
//! and for one URL's page its rollups, incidents and latest checks (`site`). Read-only:
//! the page's connection is set read-only too.
//!
//! What changed since the last read: every row the page reads in part carries in
//! `changed` the id of the transaction that last wrote it (`txid_current()`), and a read
//! takes everything from the oldest transaction still running when it began (the
//! [`change_horizon`]) on. Those writers commit on several connections (the folder's, the
//! writer's, other consumers'), in any order: a number drawn from a sequence, read as
//! "after the greatest seen", hid a change that committed after a later-numbered one (a
//! fold's verdicts, behind a new target's labels) until the page's next whole read.

use chrono::{DateTime, Utc};
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

/// A row of `rollups_hourly` or `rollups_daily`, as the site page needs it.
#[derive(Debug, Clone)]
pub struct RollupRow {
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

/// The page's current rows: the states changed since the last read, and alerting's
/// incidents.
#[derive(Debug, Clone)]
pub struct StatusRows {
    /// When it was read (the database's clock).
    pub now: DateTime<Utc>,
    /// The series' states changed since the read asked for (all of them from -1).
    pub states: Vec<SiteState>,
    /// Where the next read of what changed starts: the horizon (`change_horizon`) taken before
    /// this read's rows (and before the windows read after it).
    pub next_from: i64,
    /// The series deleted since the read asked for (url, producer): their URL was removed
    /// from the targets list.
    pub forgotten: Vec<(String, String)>,
    /// The URLs of the targets list never checked yet.
    pub waiting: Vec<String>,
    /// The names, groups and visibility changed since the read asked for, by URL.
    pub(crate) labels: std::collections::HashMap<String, crate::consumer::labels::Labels>,
    /// The URLs in a maintenance window now: URL → (until, reason).
    pub(crate) maintenance_now: std::collections::HashMap<String, (DateTime<Utc>, String)>,
    /// The maintenance windows going on and to come.
    pub(crate) windows: Vec<super::MaintenanceWindow>,
    /// Alerting's open incidents.
    pub incidents: Vec<super::OpenIncident>,
    /// Notifications not yet delivered (nor given up).
    pub alerts_pending: i64,
}

/// Where a read of what changed starts next time: the oldest transaction still running
/// now (every one before it has ended, so what it wrote is seen by the reads that
/// follow). Rows written from it on are read again next time: a read may see a row twice,
/// never miss one.
async fn change_horizon(client: &Client) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one("SELECT txid_snapshot_xmin(txid_current_snapshot())", &[])
        .await?
        .try_get(0)
}

/// Every series' state changed from `since` on (every one from -1), and the incidents.
pub async fn read_status(client: &Client, since: i64) -> Result<StatusRows, StoreError> {
    bounded("status page read", async {
        let fail = |e: tokio_postgres::Error| sql_error("status page read", &e);
        // Before the rows: see `change_horizon`.
        let next_from = change_horizon(client).await.map_err(fail)?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&since];
        let (now, states, forgotten, waiting) = tokio::join!(
            client.query_one("SELECT now()", &[]),
            client.query(
                "SELECT url, producer, up, since, last_checked_at, last_status, last_error, \
                 last_error_kind, last_elapsed_ms, cert_expires_at FROM site_status \
                 WHERE changed >= $1",
                &params,
            ),
            client.query(
                "SELECT url, producer FROM page_forgotten WHERE changed >= $1",
                &params,
            ),
            client.query(
                "SELECT url FROM listed_targets AS l WHERE removed_at IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM site_status AS s WHERE md5(s.url) = md5(l.url) AND s.url = l.url)",
                &[],
            ),
        );
        let now: DateTime<Utc> = now.map_err(fail)?.try_get(0).map_err(fail)?;
        let states = states
            .map_err(fail)?
            .iter()
            .map(site_state)
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(fail)?;
        let forgotten = forgotten
            .map_err(fail)?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(fail)?;
        let waiting = waiting
            .map_err(fail)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        let labels = super::labels::read_labels(client, since).await?;
        let (incidents, alerts_pending) = super::alerts::open_incidents(client).await?;
        let maintenance_now = super::in_maintenance_now(client)
            .await?
            .into_iter()
            .map(|(url, until, reason)| (url, (until, reason)))
            .collect();
        let windows = super::windows_after(client, now).await?;
        Ok(StatusRows {
            labels,
            maintenance_now,
            windows,
            now,
            states,
            next_from,
            forgotten,
            waiting,
            incidents,
            alerts_pending,
        })
    })
    .await
}

pub(super) fn site_state(r: &tokio_postgres::Row) -> Result<SiteState, tokio_postgres::Error> {
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
