//! The write path: events encoded as binary COPY rows where they are decoded
//! ([`RowEncoder`]), and batches written with their partitions' offset moves in one
//! transaction ([`write_batches`]): the exactly-once step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, CopyInSink, Transaction};

use super::{StoreError, alerts, bounded, rollups, sql_error};
use crate::consumer::alert::AlertRules;
use crate::consumer::alert::decide::{Decisions, KnownStates, UrlAlertState, decide};
use crate::consumer::record::StoredEvent;
use crate::consumer::rollup::{RollupInput, Rollups};

/// A record that is not a valid event, kept with its position and the reason.
#[derive(Debug, Clone)]
pub(crate) struct Rejected {
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) reason: String,
    pub(crate) kind: crate::consumer::record::RejectKind,
}

/// The records of one partition from `start_offset` (inclusive) to `next_offset` (exclusive).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) partition: i32,
    pub(crate) start_offset: i64,
    pub(crate) next_offset: i64,
    /// The partition has no row in kafka_offsets yet: create it at `start_offset`.
    pub(crate) new_partition: bool,
    pub(crate) rows: EventRows,
    pub(crate) rejected: Vec<Rejected>,
    /// The earliest record time of the Python-format records among `rows`, if any: the
    /// Python consumer may have stored those already (see [`python_rows_until`]).
    pub(crate) python_from: Option<chrono::DateTime<chrono::Utc>>,
    /// What the rollups and the alerts need of each event row, in offset order.
    pub(crate) inputs: Vec<RollupInput>,
}

/// What a transaction keeps besides the rows, from its batches' `inputs`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Derived {
    /// The rollups' delta (`CK_ROLLUPS`).
    pub(crate) rollups: bool,
    /// Alert states and notifications, decided by these rules (`CK_ALERT_WEBHOOK_URL`).
    pub(crate) alerts: Option<AlertRules>,
}

impl Batch {
    /// Records in the batch: events and rejects.
    pub(crate) fn records(&self) -> usize {
        self.rows.len() + self.rejected.len()
    }

    /// Split into the records before `offset` and those from it on: two batches that
    /// cover the same range, each contiguous, so each can commit its own offset move.
    pub(crate) fn split_at(self, offset: i64) -> (Batch, Batch) {
        let offset = offset.clamp(self.start_offset, self.next_offset);
        let (left_rows, right_rows) = self.rows.split_at_offset(offset);
        let (left_rejects, right_rejects) =
            self.rejected.into_iter().partition(|r| r.offset < offset);
        let (left_inputs, right_inputs) = self.inputs.into_iter().partition(|r| r.offset < offset);
        let left = Batch {
            partition: self.partition,
            start_offset: self.start_offset,
            next_offset: offset,
            new_partition: self.new_partition,
            rows: left_rows,
            rejected: left_rejects,
            python_from: self.python_from,
            inputs: left_inputs,
        };
        let right = Batch {
            partition: self.partition,
            start_offset: offset,
            next_offset: self.next_offset,
            new_partition: false,
            rows: right_rows,
            rejected: right_rejects,
            python_from: self.python_from,
            inputs: right_inputs,
        };
        (left, right)
    }

    /// The offset of the one event row, when the batch holds exactly one.
    pub(crate) fn single_row(&self) -> Option<i64> {
        match self.rows.ends.as_slice() {
            [(offset, _)] => Some(*offset),
            _ => None,
        }
    }

    /// The offset in the middle of the event rows, to split a batch in two halves of rows.
    pub(crate) fn middle_row(&self) -> Option<i64> {
        let ends = &self.rows.ends;
        (ends.len() >= 2).then(|| ends[ends.len() / 2].0)
    }

    /// Turn the batch's one event row ([`Batch::single_row`]) into a reject, kept with the
    /// record's raw bytes.
    pub(crate) fn reject_single_row(&mut self, rejected: Rejected) {
        self.rows = EventRows {
            bytes: Bytes::new(),
            ends: Vec::new(),
        };
        self.inputs.clear();
        self.rejected.push(rejected);
        self.rejected.sort_by_key(|r| r.offset);
    }
}

/// Events as rows of PostgreSQL's binary COPY format, ready to stream. They are encoded
/// where records are decoded ([`RowEncoder`]), off the writer's path: a transaction then
/// only streams bytes, and PostgreSQL is not kept waiting while the consumer encodes.
#[derive(Debug)]
pub(crate) struct EventRows {
    bytes: Bytes,
    /// Per row: its record's offset and where its bytes end, so that a chunk can be split
    /// at any row when PostgreSQL refuses one of them.
    ends: Vec<(i64, usize)>,
}

impl EventRows {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The rows of records before `offset`, and those from it on.
    fn split_at_offset(self, offset: i64) -> (EventRows, EventRows) {
        let n = self.ends.partition_point(|(o, _)| *o < offset);
        let cut = if n == 0 { 0 } else { self.ends[n - 1].1 };
        let mut bytes = self.bytes;
        let right_bytes = bytes.split_off(cut);
        let mut ends = self.ends;
        let right_ends = ends
            .split_off(n)
            .into_iter()
            .map(|(o, e)| (o, e - cut))
            .collect();
        (
            EventRows { bytes, ends },
            EventRows {
                bytes: right_bytes,
                ends: right_ends,
            },
        )
    }
}

/// Builds [`EventRows`] one event at a time.
#[derive(Debug)]
pub(crate) struct RowEncoder {
    bytes: BytesMut,
    ends: Vec<(i64, usize)>,
}

impl RowEncoder {
    pub(crate) fn with_capacity(events: usize) -> RowEncoder {
        RowEncoder {
            // Check events average ~300 bytes as rows.
            bytes: BytesMut::with_capacity(events * 320),
            ends: Vec::with_capacity(events),
        }
    }

    pub(crate) fn finish(self) -> EventRows {
        EventRows {
            bytes: self.bytes.freeze(),
            ends: self.ends,
        }
    }

    /// Append one event as the row it becomes, or say why it cannot be stored (then
    /// nothing is appended): a record PostgreSQL would refuse must become a reject,
    /// never a COPY that fails again on every retry.
    pub(crate) fn push(
        &mut self,
        partition: i32,
        offset: i64,
        e: &StoredEvent,
    ) -> Result<(), String> {
        // `events.ts` is the Python program's `timestamp` (no zone): UTC wall time.
        let ts = e.ts.naive_utc();
        let fields: [&(dyn ToSql + Sync); 22] = [
            &ts,
            &e.url,
            &e.elapsed,
            &e.error,
            &e.status,
            &e.body_prefix,
            &e.content_match,
            &e.id,
            &e.error_kind,
            &e.dns_ms,
            &e.connect_ms,
            &e.tls_ms,
            &e.ttfb_ms,
            &e.bytes,
            &e.cert_expires_at,
            &e.ip,
            &e.body_sha256,
            &e.schedule_lag_ms,
            &e.producer,
            &e.up,
            &partition,
            &offset,
        ];
        let texts = [
            ("url", Some(e.url.as_str())),
            ("error", e.error.as_deref()),
            ("body_prefix", e.body_prefix.as_deref()),
            ("content_match", e.content_match.as_deref()),
            ("ip", e.ip.as_deref()),
            ("body_sha256", e.body_sha256.as_deref()),
            ("producer", e.producer.as_deref()),
        ];
        for (column, text) in texts {
            if text.is_some_and(|t| t.contains('\0')) {
                return Err(format!(
                    "{column} contains a NUL character (\\u0000), which PostgreSQL text cannot hold"
                ));
            }
        }
        let start = self.bytes.len();
        self.bytes.put_i16(fields.len() as i16);
        for (value, ty) in fields.iter().zip(EVENT_TYPES.iter()) {
            let at = self.bytes.len();
            self.bytes.put_i32(-1);
            let encoded = value.to_sql_checked(ty, &mut self.bytes);
            let len = self.bytes.len() - at - 4;
            match (encoded, i32::try_from(len)) {
                (Ok(IsNull::Yes), _) => {}
                (Ok(IsNull::No), Ok(len)) => {
                    self.bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
                (Ok(IsNull::No), Err(_)) => {
                    self.bytes.truncate(start);
                    return Err(format!("a field of {len} bytes is too large to store"));
                }
                (Err(err), _) => {
                    self.bytes.truncate(start);
                    return Err(format!("cannot be stored as a {ty} column: {err}"));
                }
            }
        }
        self.ends.push((offset, self.bytes.len()));
        Ok(())
    }
}

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

const EVENT_COLUMNS: &str = "ts, url, elapsed, error, status, body_prefix, content_match, check_id, error_kind, \
    dns_ms, connect_ms, tls_ms, ttfb_ms, bytes, cert_expires_at, ip, body_sha256, schedule_lag_ms, producer, \
    up, kafka_partition, kafka_offset";

/// The binary COPY stream's header (signature, flags, no extension) and trailer.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// The columns' types: the Python program's first (varchar and integer milliseconds).
const EVENT_TYPES: [Type; 22] = [
    Type::TIMESTAMP,
    Type::VARCHAR,
    Type::INT4,
    Type::VARCHAR,
    Type::INT4,
    Type::VARCHAR,
    Type::VARCHAR,
    Type::UUID,
    Type::TEXT,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::BOOL,
    Type::INT4,
    Type::INT8,
];

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
        rollups::add_delta(&tx, &rollups),
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
    let mut seen = HashSet::new();
    batches
        .iter()
        .flat_map(|b| b.inputs.iter().map(|e| e.url.as_str()))
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
        rollups::add_delta(&tx, &rollups),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(url: &str) -> StoredEvent {
        let json = crate::event::CheckEvent::starting(url, "test", 0).to_json();
        crate::consumer::record::decode(Some(&json), chrono::Utc::now()).unwrap()
    }

    #[test]
    fn rows_are_binary_copy_tuples() {
        let mut rows = RowEncoder::with_capacity(2);
        rows.push(3, 41, &stored("https://a.example/")).unwrap();
        rows.push(3, 42, &stored("https://b.example/")).unwrap();
        let rows = rows.finish();
        assert_eq!(rows.len(), 2);
        // Each tuple starts with its field count; the first field is the 8-byte timestamp.
        assert_eq!(&rows.bytes[..2], &22i16.to_be_bytes());
        assert_eq!(&rows.bytes[2..6], &8i32.to_be_bytes());
        // The last two fields are the partition (4 bytes) and the offset (8 bytes).
        let end = rows.bytes.len();
        assert_eq!(&rows.bytes[end - 8..], &42i64.to_be_bytes());
        assert_eq!(&rows.bytes[end - 12..end - 8], &8i32.to_be_bytes());
        assert_eq!(&rows.bytes[end - 16..end - 12], &3i32.to_be_bytes());
    }

    #[test]
    fn an_event_postgres_cannot_hold_is_refused_and_leaves_no_trace() {
        let mut rows = RowEncoder::with_capacity(2);
        rows.push(0, 1, &stored("https://a.example/")).unwrap();
        let before = rows.bytes.len();
        let reason = rows
            .push(0, 2, &stored("https://a.example/\u{0}"))
            .unwrap_err();
        assert!(reason.contains("url contains a NUL character"), "{reason}");
        assert_eq!(rows.bytes.len(), before);
        assert_eq!(rows.finish().len(), 1);
    }
}
