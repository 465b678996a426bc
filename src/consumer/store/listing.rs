//! The targets list as the consumer keeps it (`listed_targets`): what is listed, what was
//! removed and when, and cleaning a removed URL's state once (its open incident closed
//! with a `removed` notification, its states and windows deleted, the page told to
//! forget its series).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use super::alerts::{load_states, save_decisions};
use super::{StoreError, bounded, sql_error};
use crate::consumer::alert::decide::{Decisions, UrlAlertState};

/// One change of the list to keep: listed (with its entry) or removed, at a time.
#[derive(Debug, Clone)]
pub(crate) struct ListChange {
    pub(crate) url: String,
    /// False: removed.
    pub(crate) listed: bool,
    /// The entry (None when removed, or not JSON).
    pub(crate) entry: Option<serde_json::Value>,
    pub(crate) at: DateTime<Utc>,
}

/// Keep `changes`; with `whole` (the list as a whole, read from the topic's start), every
/// listed URL the list no longer holds at all (its tombstone compacted away while no
/// consumer ran) is removed as of now.
pub(crate) async fn keep_changes(
    client: &mut Client,
    changes: &[ListChange],
    whole: Option<&[&str]>,
) -> Result<(), StoreError> {
    bounded("targets list", async {
        let fail = |e: tokio_postgres::Error| sql_error("targets list", &e);
        let tx = client.transaction().await.map_err(fail)?;
        let (listed, removed): (Vec<&ListChange>, Vec<&ListChange>) =
            changes.iter().partition(|c| c.listed);
        if !listed.is_empty() {
            let urls: Vec<&str> = listed.iter().map(|c| c.url.as_str()).collect();
            let entries: Vec<String> = listed
                .iter()
                .map(|c| c.entry.as_ref().map_or("null".into(), |e| e.to_string()))
                .collect();
            let at: Vec<DateTime<Utc>> = listed.iter().map(|c| c.at).collect();
            let params: [(&(dyn ToSql + Sync), Type); 3] = [
                (&urls, Type::TEXT_ARRAY),
                (&entries, Type::TEXT_ARRAY),
                (&at, Type::TIMESTAMPTZ_ARRAY),
            ];
            tx.execute_typed(
                "INSERT INTO listed_targets (url, entry, listed_at) \
                 SELECT u, e::jsonb, a FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS n(u, e, a) \
                 ON CONFLICT ((md5(url))) DO UPDATE SET entry = EXCLUDED.entry, \
                   listed_at = EXCLUDED.listed_at, removed_at = NULL, cleaned = false",
                &params,
            )
            .await
            .map_err(fail)?;
        }
        if !removed.is_empty() {
            let urls: Vec<&str> = removed.iter().map(|c| c.url.as_str()).collect();
            let at: Vec<DateTime<Utc>> = removed.iter().map(|c| c.at).collect();
            tx.execute_typed(
                "UPDATE listed_targets AS l SET removed_at = n.a FROM \
                 unnest($1::text[], $2::timestamptz[]) AS n(u, a) \
                 WHERE md5(l.url) = md5(n.u) AND l.url = n.u AND l.removed_at IS NULL",
                &[(&urls, Type::TEXT_ARRAY), (&at, Type::TIMESTAMPTZ_ARRAY)],
            )
            .await
            .map_err(fail)?;
        }
        if let Some(all) = whole {
            tx.execute_typed(
                "UPDATE listed_targets SET removed_at = now() \
                 WHERE removed_at IS NULL AND NOT (url = ANY($1))",
                &[(&all, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    })
    .await
}

/// Every removal kept: URL → when it was removed (what the writer's gate needs at start).
pub(crate) async fn removals(
    client: &Client,
) -> Result<BTreeMap<String, DateTime<Utc>>, StoreError> {
    bounded("targets list", async {
        let rows = client
            .query(
                "SELECT url, removed_at FROM listed_targets WHERE removed_at IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| sql_error("targets list", &e))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| sql_error("targets list", &e))
    })
    .await
}

/// The removed URLs whose state is not cleaned yet.
pub(crate) async fn not_cleaned(client: &Client) -> Result<Vec<String>, StoreError> {
    bounded("targets list", async {
        let rows = client
            .query(
                "SELECT url FROM listed_targets WHERE removed_at IS NOT NULL AND NOT cleaned",
                &[],
            )
            .await
            .map_err(|e| sql_error("targets list", &e))?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(|e| sql_error("targets list", &e))
    })
    .await
}

/// Clean the state of the removed `urls` (of partitions this consumer holds), once:
/// open incidents close with a `removed` notification; alert states, series states and
/// windows are deleted, and the page is told to forget the series. Returns the URLs
/// cleaned by this call and the notifications made.
pub(crate) async fn clean_removed(
    client: &mut Client,
    urls: &[String],
) -> Result<(Vec<String>, usize), StoreError> {
    if urls.is_empty() {
        return Ok((Vec::new(), 0));
    }
    bounded("removed targets", async {
        let fail = |e: tokio_postgres::Error| sql_error("removed targets", &e);
        let tx = client.transaction().await.map_err(fail)?;
        // Whoever marks it cleaned first does it: once.
        let rows = tx
            .query_typed(
                "UPDATE listed_targets SET cleaned = true \
                 WHERE md5(url) IN (SELECT md5(u) FROM unnest($1::text[]) AS u) \
                   AND url = ANY($1) AND removed_at IS NOT NULL AND NOT cleaned \
                 RETURNING url, removed_at",
                &[(&urls, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(fail)?;
        let cleaned: BTreeMap<String, DateTime<Utc>> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(fail)?;
        let names: Vec<&str> = cleaned.keys().map(String::as_str).collect();
        let mut decisions = Decisions::default();
        let states: BTreeMap<String, UrlAlertState> = load_states(&tx, &names).await?;
        for (url, mut state) in states {
            if let Some(n) = state.close_removed(&url, cleaned[&url]) {
                decisions.notifications.push(n);
                decisions.changed.insert(url, state);
            }
        }
        save_decisions(&tx, &decisions).await?;
        for sql in [
            "DELETE FROM alert_sites WHERE md5(url) IN (SELECT md5(u) FROM unnest($1::text[]) AS u) AND url = ANY($1)",
            "DELETE FROM series_windows WHERE md5(url) IN (SELECT md5(u) FROM unnest($1::text[]) AS u) AND url = ANY($1)",
            "WITH gone AS (DELETE FROM site_status \
               WHERE md5(url) IN (SELECT md5(u) FROM unnest($1::text[]) AS u) AND url = ANY($1) \
               RETURNING url, producer) \
             INSERT INTO page_forgotten (url, producer) SELECT url, producer FROM gone",
        ] {
            tx.execute_typed(sql, &[(&names, Type::TEXT_ARRAY)])
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok((cleaned.into_keys().collect(), decisions.notifications.len()))
    })
    .await
}

/// Removals cleaned over 30 days ago, and the page's forgotten series read long ago, go.
pub(crate) async fn prune(client: &Client) -> Result<(), StoreError> {
    bounded("targets list", async {
        client
            .batch_execute(
                "DELETE FROM listed_targets WHERE cleaned AND removed_at < now() - interval '30 days'; \
                 DELETE FROM page_forgotten WHERE forgotten_at < now() - interval '1 day'",
            )
            .await
            .map_err(|e| sql_error("targets list", &e))
    })
    .await
}
