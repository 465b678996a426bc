//! Retention's statements: delete a step of old events (the oldest inserted, through the
//! primary key, or any, through the BRIN index on `ts`), vacuum the table, and the
//! advisory lock that lets one consumer prune at a time.

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

/// Delete at most `most` rejected records kept since before `cutoff`; returns how many
/// went. They were inserted in `received_at` order, so the old ones are found first.
pub(crate) async fn prune_rejects(
    client: &Client,
    cutoff: DateTime<Utc>,
    most: i64,
) -> Result<u64, StoreError> {
    bounded("retention delete of rejects", async {
        client
            .execute_typed(
                "DELETE FROM rejected_events WHERE ctid = ANY(ARRAY( \
                   SELECT ctid FROM rejected_events WHERE received_at < $1 LIMIT $2))",
                &[(&cutoff, Type::TIMESTAMPTZ), (&most, Type::INT8)],
            )
            .await
            .map_err(|e| sql_error("retention delete of rejects", &e))
    })
    .await
}

/// One step in insertion order: of the `most` events inserted first after `after` (by
/// `event_id`, which grows with insertion), those checked before `cutoff` go. Found through
/// the primary key, so a step costs the same on any size of table.
pub(crate) struct OldestStep {
    /// Events deleted.
    pub(crate) deleted: u64,
    /// Events of the step checked at or after `cutoff` (kept).
    pub(crate) young: u64,
    /// Events the step looked at (fewer than asked: the end of the table).
    pub(crate) seen: u64,
    /// The last `event_id` it looked at: the next step starts after it.
    pub(crate) last: i32,
}

/// Delete the old events among the `most` inserted first after `after`.
pub(crate) async fn prune_oldest(
    client: &Client,
    cutoff: DateTime<Utc>,
    most: i64,
    after: i32,
) -> Result<OldestStep, StoreError> {
    let cutoff = cutoff.naive_utc();
    let row = bounded("retention delete", async {
        client
            .query_typed(
                "WITH head AS ( \
                   SELECT event_id, ts FROM events WHERE event_id > $3 ORDER BY event_id LIMIT $2), \
                 gone AS ( \
                   DELETE FROM events e USING head WHERE e.event_id = head.event_id AND head.ts < $1 \
                   RETURNING 1) \
                 SELECT (SELECT count(*) FROM gone), \
                   (SELECT count(*) FROM head WHERE ts >= $1), \
                   (SELECT count(*) FROM head), \
                   (SELECT coalesce(max(event_id), $3) FROM head)",
                &[
                    (&cutoff, Type::TIMESTAMP),
                    (&most, Type::INT8),
                    (&after, Type::INT4),
                ],
            )
            .await
            .map_err(|e| sql_error("retention delete", &e))
    })
    .await?;
    let row = row.first().ok_or_else(|| StoreError::Sql {
        what: "retention delete",
        detail: "no row in the answer".into(),
    })?;
    let count = |i: usize| -> Result<u64, StoreError> {
        row.try_get::<_, i64>(i)
            .map(|n| n.max(0) as u64)
            .map_err(|e| sql_error("retention delete", &e))
    };
    Ok(OldestStep {
        deleted: count(0)?,
        young: count(1)?,
        seen: count(2)?,
        last: row
            .try_get(3)
            .map_err(|e| sql_error("retention delete", &e))?,
    })
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
