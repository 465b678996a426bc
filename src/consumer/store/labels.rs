//! `target_labels`: each URL's name, group and visibility as its newest check says; the
//! status page reads the rows changed since its last read.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use super::{StoreError, bounded, sql_error};
use crate::consumer::labels::{LabelRow, Labels};

/// Write `rows`; a row older than the one stored changes nothing.
pub(crate) async fn save_labels(client: &Client, rows: &[LabelRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let urls: Vec<&str> = rows.iter().map(|r| r.url.as_str()).collect();
    let names: Vec<Option<&str>> = rows.iter().map(|r| r.labels.name.as_deref()).collect();
    let groups: Vec<Option<&str>> = rows.iter().map(|r| r.labels.group.as_deref()).collect();
    let public: Vec<bool> = rows.iter().map(|r| r.labels.public).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
    let params: [(&(dyn ToSql + Sync), Type); 5] = [
        (&urls, Type::TEXT_ARRAY),
        (&names, Type::TEXT_ARRAY),
        (&groups, Type::TEXT_ARRAY),
        (&public, Type::BOOL_ARRAY),
        (&at, Type::TIMESTAMPTZ_ARRAY),
    ];
    bounded("target labels", async {
        client
            .execute_typed(
                "INSERT INTO target_labels (url, name, grp, public, at, changed) \
                 SELECT u, n, g, p, a, txid_current() FROM unnest($1::text[], $2::text[], \
                   $3::text[], $4::bool[], $5::timestamptz[]) AS x(u, n, g, p, a) \
                 ON CONFLICT ((md5(url))) DO UPDATE SET name = EXCLUDED.name, grp = EXCLUDED.grp, \
                   public = EXCLUDED.public, at = EXCLUDED.at, changed = EXCLUDED.changed \
                 WHERE target_labels.at <= EXCLUDED.at \
                   AND (target_labels.name, target_labels.grp, target_labels.public) \
                   IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.grp, EXCLUDED.public)",
                &params,
            )
            .await
            .map(|_| ())
            .map_err(|e| sql_error("target labels", &e))
    })
    .await
}

/// The labels changed from `since` on (every one from -1; see `status::change_horizon`),
/// by URL.
pub(crate) async fn read_labels(
    client: &Client,
    since: i64,
) -> Result<HashMap<String, Labels>, StoreError> {
    let fail = |e: tokio_postgres::Error| sql_error("target labels read", &e);
    let rows = client
        .query(
            "SELECT url, name, grp, public FROM target_labels WHERE changed >= $1",
            &[&since],
        )
        .await
        .map_err(fail)?;
    let mut labels = HashMap::with_capacity(rows.len());
    for r in &rows {
        labels.insert(
            r.try_get(0).map_err(fail)?,
            Labels {
                name: r.try_get(1).map_err(fail)?,
                group: r.try_get(2).map_err(fail)?,
                public: r.try_get(3).map_err(fail)?,
            },
        );
    }
    Ok(labels)
}
