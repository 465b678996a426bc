//! The write path: batches written with their partitions' offset moves in one
//! transaction ([`write_batches`]): the exactly-once step. The rows come encoded
//! (`rows`); a refused row is isolated here and kept with its reason.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, CopyInSink, Transaction};

use super::rows::*;
use super::{StoreError, alerts, bounded, deltas, sql_error};
use crate::consumer::alert::decide::{Decisions, KnownStates, UrlAlertState, decide};
use crate::consumer::rollup::{RollupInput, Rollups};
use crate::consumer::series_hash::SeriesSet;

/// The committed position of each of `partitions` that has one (a partition never
/// consumed has no row yet: its first batch creates it).
pub(crate) async fn committed_offsets(
    client: &Client,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, StoreError> {
    let rows = bounded("offset read", async {
        client
            .query(
                "SELECT partition, next_offset FROM kafka_offsets WHERE topic = $1 AND partition = ANY($2)",
                &[&topic, &partitions],
            )
            .await
            .map_err(|e| sql_error("offset read", &e))
    })
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// What one transaction stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// Rows added to `events`.
    pub(crate) rows: u64,
    /// Events in the batches that were already stored, and were not stored again: a
    /// producer retry (same `check_id` at a new offset), or a record the Python consumer
    /// had stored before the switch.
    pub(crate) already_stored: u64,
    /// Notifications decided (and put in the outbox).
    pub(crate) notifications: usize,
    /// The alert state of every URL of the transaction, as committed.
    pub(crate) alert_states: BTreeMap<String, UrlAlertState>,
}

/// Write `batches` (from one or several partitions, each partition's in offset order) and
/// move each partition's offset from its first batch's `start_offset` to its last batch's
/// `next_offset`, all in one transaction. Each offset move is a compare-and-set: if another
/// consumer moved an offset, nothing is written and [`StoreError::OffsetMoved`] is returned.
///
/// Rows go in with binary COPY. Two kinds of event may already be stored, and those
/// transactions take the checked path (a temporary table, then an INSERT that skips them):
/// a producer retry puts one event in the topic twice, at two offsets (the unique
/// `check_id` refuses the fast COPY, and the transaction is written again); and a
/// Python-format record the Python consumer stored before the switch (known in advance:
/// its time is not after `python_until`, the last of the Python consumer's rows).
pub(crate) async fn write_batches(
    client: &mut Client,
    topic: &str,
    batches: &[Batch],
    python_until: Option<chrono::DateTime<chrono::Utc>>,
    (derived, known): (Derived, &KnownStates),
) -> Result<Written, StoreError> {
    let overlap = python_until.is_some_and(|until| {
        batches
            .iter()
            .any(|b| b.python_from.is_some_and(|from| from <= until))
    });
    // Each attempt is bounded: a server that stops answering mid-transaction is a
    // failure to retry from the committed offsets, never a hang.
    if overlap {
        return bounded(
            "transaction",
            write_once(client, topic, batches, (derived, known), true),
        )
        .await;
    }
    match bounded(
        "transaction",
        write_once(client, topic, batches, (derived, known), false),
    )
    .await
    {
        Err(StoreError::DuplicateEvent { .. }) => {
            bounded(
                "transaction",
                write_once(client, topic, batches, (derived, known), true),
            )
            .await
        }
        other => other,
    }
}

/// The offset moves of a transaction, per partition in partition order.
struct OffsetMoves {
    partitions: Vec<i32>,
    /// Where each partition's batches start: the compare-and-set's expected value.
    starts: Vec<i64>,
    nexts: Vec<i64>,
    /// Partitions without a row in kafka_offsets yet.
    created: Vec<i32>,
}

impl OffsetMoves {
    fn of(batches: &[Batch]) -> OffsetMoves {
        // Per partition: (start offset, next offset, whether its row must be created).
        let mut moves: BTreeMap<i32, (i64, i64, bool)> = BTreeMap::new();
        for b in batches {
            let m = moves.entry(b.partition).or_insert((
                b.start_offset,
                b.start_offset,
                b.new_partition,
            ));
            m.1 = b.next_offset;
        }
        OffsetMoves {
            partitions: moves.keys().copied().collect(),
            starts: moves.values().map(|m| m.0).collect(),
            nexts: moves.values().map(|m| m.1).collect(),
            created: moves.iter().filter(|(_, m)| m.2).map(|(p, _)| *p).collect(),
        }
    }

    /// Rows for partitions never written before. Another consumer may have created one
    /// meanwhile: then the compare-and-set decides, as for any other batch.
    async fn create_missing(&self, tx: &Transaction<'_>, topic: &str) -> Result<(), StoreError> {
        if self.created.is_empty() {
            return Ok(());
        }
        tx.execute_typed(
            "INSERT INTO kafka_offsets (topic, partition, next_offset) \
             SELECT $1, p, s FROM unnest($2::int[], $3::bigint[]) AS m(p, s) \
             WHERE p = ANY($4::int[]) ON CONFLICT DO NOTHING",
            &[
                (&topic, Type::TEXT),
                (&self.partitions, Type::INT4_ARRAY),
                (&self.starts, Type::INT8_ARRAY),
                (&self.created, Type::INT4_ARRAY),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| sql_error("offset set-up", &e))
    }

    /// Move every partition's offset from its start to its next, where it still is at its
    /// start; returns the partitions moved. Rows are locked in partition order (ORDER BY in
    /// the sub-select), as every consumer does, so two consumers racing cannot deadlock.
    async fn compare_and_set(
        &self,
        tx: &Transaction<'_>,
        topic: &str,
    ) -> Result<Vec<i32>, StoreError> {
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&topic, Type::TEXT),
            (&self.partitions, Type::INT4_ARRAY),
            (&self.starts, Type::INT8_ARRAY),
            (&self.nexts, Type::INT8_ARRAY),
        ];
        let rows = tx
            .query_typed(
                "UPDATE kafka_offsets AS o SET next_offset = m.n, updated_at = now() \
                 FROM (SELECT * FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS u(p, s, n) ORDER BY p) AS m \
                 WHERE o.topic = $1 AND o.partition = m.p AND o.next_offset = m.s \
                 RETURNING o.partition",
                &params,
            )
            .await
            .map_err(|e| sql_error("offset update", &e))?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }
}

/// The batches' rejected records into rejected_events, raw bytes and reason.
async fn insert_rejects(
    tx: &Transaction<'_>,
    topic: &str,
    batches: &[Batch],
) -> Result<(), StoreError> {
    let rejected: Vec<(i32, &Rejected)> = batches
        .iter()
        .flat_map(|b| b.rejected.iter().map(move |r| (b.partition, r)))
        .collect();
    if rejected.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i32> = rejected.iter().map(|(p, _)| *p).collect();
    let offsets: Vec<i64> = rejected.iter().map(|(_, r)| r.offset).collect();
    let keys: Vec<Option<&[u8]>> = rejected.iter().map(|(_, r)| r.key.as_deref()).collect();
    let values: Vec<Option<&[u8]>> = rejected.iter().map(|(_, r)| r.value.as_deref()).collect();
    let reasons: Vec<&str> = rejected.iter().map(|(_, r)| r.reason.as_str()).collect();
    tx.execute_typed(
        "INSERT INTO rejected_events (topic, partition, \"offset\", key, value, reason) \
         SELECT $1, p, o, k, v, r \
         FROM unnest($2::int[], $3::bigint[], $4::bytea[], $5::bytea[], $6::text[]) AS u(p, o, k, v, r) \
         ON CONFLICT DO NOTHING",
        &[
            (&topic, Type::TEXT),
            (&partitions, Type::INT4_ARRAY),
            (&offsets, Type::INT8_ARRAY),
            (&keys, Type::BYTEA_ARRAY),
            (&values, Type::BYTEA_ARRAY),
            (&reasons, Type::TEXT_ARRAY),
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| sql_error("rejected_events insert", &e))
}

/// The COPY of the rows into `table`, started; None when there are no rows.
async fn start_copy(
    tx: &Transaction<'_>,
    table: &str,
    has_rows: bool,
) -> Result<Option<CopyInSink<Bytes>>, StoreError> {
    if !has_rows {
        return Ok(None);
    }
    let statement = format!("COPY {table} ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)");
    tx.copy_in(&statement)
        .await
        .map(Some)
        .map_err(|e| sql_error("copy", &e))
}

/// The checked path's table: only the columns, none of the constraints (`LIKE events`
/// would copy the NOT NULL of `event_id`, which the COPY leaves to its identity default).
async fn create_incoming_table(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS events_incoming ON COMMIT DELETE ROWS AS \
         SELECT {EVENT_COLUMNS} FROM events WITH NO DATA"
    ))
    .await
    .map_err(|e| sql_error("dedupe table", &e))
}

async fn write_once(
    client: &mut Client,
    topic: &str,
    batches: &[Batch],
    (derived, known): (Derived, &KnownStates),
    checked: bool,
) -> Result<Written, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| sql_error("begin", &e))?;
    let moves = OffsetMoves::of(batches);
    moves.create_missing(&tx, topic).await?;
    let table = if checked {
        create_incoming_table(&tx).await?;
        "events_incoming"
    } else {
        "events"
    };
    let has_rows = batches.iter().any(|b| !b.rows.is_empty());
    // The alert states this consumer does not know yet are read in the transaction.
    let (mut states, unknown) = match derived.alerts {
        Some(_) => split_known(urls_of(batches), known),
        None => (BTreeMap::new(), Vec::new()),
    };
    // The offsets' compare-and-set, the rejected records, the alert states and the start
    // of the COPY go out together (tokio-postgres pipelines concurrent requests on one
    // connection, in this order: the states' answer comes before the COPY's end): every
    // round trip waited for here is time PostgreSQL sits idle. A failure in any of them
    // aborts the transaction, so nothing of it can be committed. The alert states need
    // no row lock: only the transaction that moves the partition's offset commits, and a
    // URL's events are all in one partition (the key).
    let (moved, rejects, loaded, sink) = tokio::join!(
        moves.compare_and_set(&tx, topic),
        insert_rejects(&tx, topic, batches),
        alerts::load_states(&tx, &unknown),
        start_copy(&tx, table, has_rows)
    );
    let (moved, sink) = (moved?, sink?);
    states.extend(loaded?);
    rejects?;
    if let Some(&partition) = moves.partitions.iter().find(|p| !moved.contains(p)) {
        // Dropping the unfinished COPY aborts it, and the transaction rolls back.
        return Err(StoreError::OffsetMoved { partition });
    }
    let Some(sink) = sink else {
        tx.commit().await.map_err(|e| sql_error("commit", &e))?;
        return Ok(Written::default());
    };
    let states = &mut states;
    let mut sink = std::pin::pin!(sink);
    stream_rows(sink.as_mut(), batches)
        .await
        .map_err(|e| sql_error("copy", &e))?;
    if checked {
        finish_checked(tx, sink, batches, derived, states).await
    } else {
        finish_fast(tx, sink, batches, derived, states).await
    }
}

/// The fast path's end: the rollups and the decisions follow the end of the COPY without
/// waiting for its answer (the connection sends requests in order, and if the COPY failed
/// the transaction is aborted, so they fail too and the COPY's error is returned), then
/// COMMIT.
async fn finish_fast(
    tx: Transaction<'_>,
    mut sink: Pin<&mut CopyInSink<Bytes>>,
    batches: &[Batch],
    derived: Derived,
    states: &mut BTreeMap<String, UrlAlertState>,
) -> Result<Written, StoreError> {
    let inputs = || batches.iter().flat_map(|b| &b.inputs);
    let rollups = rollups_with(derived, inputs());
    let decisions = decide_with(derived, states, inputs());
    let (copied, added, saved) = tokio::join!(
        sink.as_mut().finish(),
        deltas::add_delta(&tx, &rollups),
        alerts::save_decisions(&tx, &decisions)
    );
    let copied = copied.map_err(|e| sql_error("copy", &e))?;
    added.and(saved)?;
    tx.commit().await.map_err(|e| sql_error("commit", &e))?;
    let notifications = decisions.notifications.len();
    states.extend(decisions.changed);
    Ok(Written {
        rows: copied,
        already_stored: 0,
        notifications,
        alert_states: std::mem::take(states),
    })
}

/// Of `urls`, the states `known` holds (copied) and the URLs it does not.
fn split_known<'b>(
    urls: Vec<&'b str>,
    known: &KnownStates,
) -> (BTreeMap<String, UrlAlertState>, Vec<&'b str>) {
    let mut found = BTreeMap::new();
    let mut unknown = Vec::new();
    for url in urls {
        match known.get(url) {
            Some(state) => {
                found.insert(url.to_string(), state.clone());
            }
            None => unknown.push(url),
        }
    }
    (found, unknown)
}

/// The distinct URLs of the batches' events.
fn urls_of(batches: &[Batch]) -> Vec<&str> {
    // A transaction holds ~10 events per URL: a set, not a sort of all of them.
    let mut seen = SeriesSet::default();
    batches
        .iter()
        .flat_map(|b| b.inputs.iter().map(|e| &*e.url))
        .filter(|url| seen.insert(*url))
        .collect()
}

/// The rollups of `inputs`, when kept.
fn rollups_with<'a>(
    derived: Derived,
    inputs: impl IntoIterator<Item = &'a RollupInput>,
) -> Rollups<'a> {
    if derived.rollups {
        Rollups::of(inputs)
    } else {
        Rollups::default()
    }
}

/// The alerts' decisions over `inputs`, when alerting is on.
fn decide_with<'a>(
    derived: Derived,
    states: &BTreeMap<String, UrlAlertState>,
    inputs: impl IntoIterator<Item = &'a RollupInput>,
) -> Decisions {
    match derived.alerts {
        Some(rules) => decide(states, inputs.into_iter().filter(|e| !e.removed), &rules),
        None => Decisions::default(),
    }
}

/// The binary COPY stream: header, every batch's pre-encoded rows, trailer.
async fn stream_rows(
    mut sink: Pin<&mut CopyInSink<Bytes>>,
    batches: &[Batch],
) -> Result<(), tokio_postgres::Error> {
    sink.feed(Bytes::from_static(COPY_HEADER)).await?;
    for b in batches.iter().filter(|b| !b.rows.is_empty()) {
        sink.feed(b.rows.bytes.clone()).await?;
    }
    sink.feed(Bytes::from_static(COPY_TRAILER)).await
}

/// The checked path's end: the rows from the temporary table into `events`, except those
/// already stored (a producer retry's `check_id`; a Python-format record the Python
/// consumer stored), the rollups of exactly the rows inserted, then COMMIT.
async fn finish_checked(
    tx: Transaction<'_>,
    sink: Pin<&mut CopyInSink<Bytes>>,
    batches: &[Batch],
    derived: Derived,
    states: &mut BTreeMap<String, UrlAlertState>,
) -> Result<Written, StoreError> {
    let copied = sink.finish().await.map_err(|e| sql_error("copy", &e))?;
    // The Python consumer wrote `ts` in the server's TimeZone: the record's time (here
    // UTC wall time) is converted the same way before it is compared.
    let inserted = tx
        .query(
            &format!(
                "INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM events_incoming AS i \
                 WHERE i.check_id IS NOT NULL OR NOT EXISTS ( \
                   SELECT 1 FROM events AS e WHERE e.kafka_offset IS NULL \
                   AND e.ts = (i.ts AT TIME ZONE 'UTC')::timestamp AND e.url = i.url) \
                 ON CONFLICT (check_id) DO NOTHING \
                 RETURNING kafka_partition, kafka_offset"
            ),
            &[],
        )
        .await
        .map_err(|e| sql_error("dedupe insert", &e))?;
    let stored: HashSet<(i32, i64)> = inserted
        .iter()
        .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
        .collect();
    let stored_ref = &stored;
    let inputs = || {
        batches.iter().flat_map(|b| {
            let (partition, stored) = (b.partition, stored_ref);
            b.inputs
                .iter()
                .filter(move |e| stored.contains(&(partition, e.offset)))
        })
    };
    let rollups = rollups_with(derived, inputs());
    let decisions = decide_with(derived, states, inputs());
    let (added, saved) = tokio::join!(
        deltas::add_delta(&tx, &rollups),
        alerts::save_decisions(&tx, &decisions)
    );
    added.and(saved)?;
    tx.commit().await.map_err(|e| sql_error("commit", &e))?;
    let notifications = decisions.notifications.len();
    states.extend(decisions.changed);
    let inserted = stored.len() as u64;
    Ok(Written {
        rows: inserted,
        already_stored: copied.saturating_sub(inserted),
        notifications,
        alert_states: std::mem::take(states),
    })
}
