//! What the page of one URL reads, when it is asked for: its states and latest checks per
//! vantage point, its hourly rollups of the last 48 hours and daily ones of the last 90
//! days, and its incidents as alerting decided them. Every read goes through an index on
//! `md5(url)`; nothing here scans a table.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::status::{RollupRow, SiteState};
use super::{StoreError, bounded, sql_error};

/// Days of daily rollups the site page shows.
pub const SITE_DAYS: i32 = 90;
/// Hours of hourly rollups the site page shows.
pub const SITE_HOURS: i32 = 48;
/// Incidents the site page lists at most (the newest).
const SITE_INCIDENTS: i64 = 50;

/// One URL's rows.
#[derive(Debug, Clone, Default)]
pub struct SiteRows {
    /// When they were read (the database's clock).
    pub now: Option<DateTime<Utc>>,
    /// Per vantage point: its state and its latest checks (JSON, newest first).
    pub states: Vec<(SiteState, String)>,
    /// Hourly rollups, oldest first.
    pub hours: Vec<RollupRow>,
    /// Daily rollups, oldest first.
    pub days: Vec<RollupRow>,
    /// Alerting's decisions for it, oldest first: (kind, payload JSON).
    pub decisions: Vec<(String, String)>,
}

/// Per URL of `urls` (as stored), per day of the `days` ending with `last_day`, oldest
/// first: (checks, up checks), every vantage point together. For the rows a page shows.
pub async fn read_strips(
    client: &Client,
    urls: &[&str],
    (last_day, days): (DateTime<Utc>, usize),
) -> Result<std::collections::HashMap<String, Vec<(i64, i64)>>, StoreError> {
    if urls.is_empty() {
        return Ok(Default::default());
    }
    bounded("status page read", async {
        let fail = |e: tokio_postgres::Error| sql_error("status page read", &e);
        let span = days as i32;
        let rows = client
            .query(
                "SELECT url, bucket, sum(checks)::bigint, sum(up_checks)::bigint FROM rollups_daily \
                 WHERE md5(url) IN (SELECT md5(u) FROM unnest($1::text[]) AS u) AND url = ANY($1) \
                 AND bucket > $2::timestamptz - make_interval(days => $3::int) \
                 AND bucket <= $2::timestamptz GROUP BY url, bucket",
                &[&urls, &last_day, &span],
            )
            .await
            .map_err(fail)?;
        let mut strips: std::collections::HashMap<String, Vec<(i64, i64)>> = Default::default();
        for r in &rows {
            let url: String = r.try_get(0).map_err(fail)?;
            let bucket: DateTime<Utc> = r.try_get(1).map_err(fail)?;
            let back = usize::try_from((last_day - bucket).num_days()).unwrap_or(usize::MAX);
            let Some(slot) = days.checked_sub(back + 1) else {
                continue;
            };
            let strip = strips.entry(url).or_insert_with(|| vec![(0, 0); days]);
            strip[slot] = (r.try_get(2).map_err(fail)?, r.try_get(3).map_err(fail)?);
        }
        Ok(strips)
    })
    .await
}

/// The rows of `url` (as stored) whose notifications carry `shown` (the URL as the
/// notifications show it, its password hidden).
pub async fn read_site(client: &Client, url: &str, shown: &str) -> Result<SiteRows, StoreError> {
    bounded("site page read", async {
        let fail = |e: tokio_postgres::Error| sql_error("site page read", &e);
        let rollups = |table: &str, unit: &str, back: i32| {
            format!(
                "SELECT producer, bucket, checks, up_checks, latency_hist, latency_min_ms, \
                 latency_max_ms FROM {table} WHERE md5(url) = md5($1) AND url = $1 \
                 AND bucket > date_trunc('{unit}', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                 - interval '{back} {unit}s' ORDER BY bucket, producer"
            )
        };
        let (hours_sql, days_sql) = (
            rollups("rollups_hourly", "hour", SITE_HOURS),
            rollups("rollups_daily", "day", SITE_DAYS),
        );
        let by_url: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&url];
        let by_shown: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&shown, &SITE_INCIDENTS];
        let (now, states, hours, days, decisions) = tokio::join!(
            client.query_one("SELECT now()", &[]),
            client.query(
                "SELECT url, producer, up, since, last_checked_at, last_status, last_error, \
                 last_error_kind, last_elapsed_ms, cert_expires_at, coalesce(recent, '[]')::text \
                 FROM site_status WHERE md5(url) = md5($1) AND url = $1 ORDER BY producer",
                &by_url,
            ),
            client.query(&hours_sql, &by_url),
            client.query(&days_sql, &by_url),
            client.query(
                "SELECT kind, payload::text FROM (SELECT DISTINCT ON (seq_of_id) seq_of_id AS seq, \
                   kind, payload FROM (SELECT min(seq) OVER (PARTITION BY id) AS seq_of_id, kind, \
                   payload FROM alert_outbox WHERE md5(url) = md5($1) AND url = $1 \
                   AND kind IN ('down', 'up', 'stale', 'removed')) AS per_receiver \
                 ORDER BY seq_of_id DESC LIMIT $2) AS newest ORDER BY seq",
                &by_shown,
            ),
        );
        let row_of = |r: &tokio_postgres::Row| -> Result<RollupRow, tokio_postgres::Error> {
            Ok(RollupRow {
                producer: r.try_get(0)?,
                bucket: r.try_get(1)?,
                checks: r.try_get(2)?,
                up_checks: r.try_get(3)?,
                latency_hist: r.try_get(4)?,
                latency_min_ms: r.try_get(5)?,
                latency_max_ms: r.try_get(6)?,
            })
        };
        let collect = |rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>| {
            rows.and_then(|rows| rows.iter().map(row_of).collect::<Result<Vec<_>, _>>())
                .map_err(fail)
        };
        let states = states
            .and_then(|rows| {
                rows.iter()
                    .map(|r| Ok((super::status::site_state(r)?, r.try_get(10)?)))
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            })
            .map_err(fail)?;
        let decisions = decisions
            .and_then(|rows| {
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            })
            .map_err(fail)?;
        Ok(SiteRows {
            now: Some(now.and_then(|r| r.try_get(0)).map_err(fail)?),
            states,
            hours: collect(hours)?,
            days: collect(days)?,
            decisions,
        })
    })
    .await
}
