//! Retention's statements: delete a step of old events (found through the BRIN index on
//! `ts`), vacuum the table, and the advisory lock that lets one consumer prune at a time.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::{StoreError, bounded, sql_error};

/// Held (per session) by the consumer pruning now.
const RETENTION_LOCK: i64 = 0x636b_7369_7465_0003;

/// Take the pruning lock if free; false when another consumer holds it.
pub(crate) async fn retention_lock(client: &Client) -> Result<bool, StoreError> {
    bounded("retention lock", async {
        client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| sql_error("retention lock", &e))
    })
    .await
}

/// Give the pruning lock back (a lost connection gives it back too).
pub(crate) async fn retention_unlock(client: &Client) {
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK])
        .await;
}

/// Delete at most `most` events checked before `cutoff`; returns how many went.
pub(crate) async fn prune_events(
    client: &Client,
    cutoff: DateTime<Utc>,
    most: i64,
) -> Result<u64, StoreError> {
    // `events.ts` is UTC wall time without a zone (the Python program's column).
    let cutoff = cutoff.naive_utc();
    bounded("retention delete", async {
        client
            .execute_typed(
                "DELETE FROM events WHERE ctid = ANY(ARRAY( \
                   SELECT ctid FROM events WHERE ts < $1 LIMIT $2))",
                &[(&cutoff, Type::TIMESTAMP), (&most, Type::INT8)],
            )
            .await
            .map_err(|e| sql_error("retention delete", &e))
    })
    .await
}

/// `VACUUM events`: the deleted rows' space becomes reusable now rather than when
/// autovacuum comes by. It takes no lock the writer's inserts wait for.
pub(crate) async fn vacuum_events(client: &Client) -> Result<(), StoreError> {
    // Far longer than a step: a vacuum after a first pass over a large table takes minutes.
    tokio::time::timeout(std::time::Duration::from_secs(3600), async {
        client
            .batch_execute("VACUUM events")
            .await
            .map_err(|e| sql_error("vacuum", &e))
    })
    .await
    .unwrap_or_else(|_| {
        Err(StoreError::Sql {
            what: "vacuum",
            detail: "not finished within 1 h".into(),
        })
    })
}
