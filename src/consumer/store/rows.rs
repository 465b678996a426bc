//! The rows of `events` as they are decoded: each event encoded once, on the fetcher,
//! as a binary COPY tuple ([`RowEncoder`]), gathered into a partition's [`Batch`] with
//! what the writer derives from it (rollup inputs, alert inputs) and the records refused.
//! It never talks to PostgreSQL (that is `write`).

use bytes::{BufMut, Bytes, BytesMut};

use super::row_fields::FieldWriter;

use crate::consumer::alert::AlertRules;
use crate::consumer::record::StoredEvent;
use crate::consumer::rollup::RollupInput;

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
    pub(super) bytes: Bytes,
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
        e: &StoredEvent<'_>,
    ) -> Result<(), String> {
        let texts = [
            ("url", Some(&*e.url)),
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
        let written = write_fields(&mut FieldWriter(&mut self.bytes), partition, offset, e);
        if let Err(reason) = written {
            self.bytes.truncate(start);
            return Err(reason);
        }
        self.ends.push((offset, self.bytes.len()));
        Ok(())
    }
}

/// An event's row: the field count, then each field in [`EVENT_COLUMNS`]' order (`ts` is
/// the Python program's `timestamp`, no zone: UTC wall time).
fn write_fields(
    w: &mut FieldWriter<'_>,
    partition: i32,
    offset: i64,
    e: &StoredEvent<'_>,
) -> Result<(), String> {
    w.0.put_i16(22);
    w.time(Some(&e.ts))?;
    w.text(Some(&e.url))?;
    w.int4(e.elapsed);
    w.text(e.error.as_deref())?;
    w.int4(e.status);
    w.text(e.body_prefix.as_deref())?;
    w.text(e.content_match.as_deref())?;
    w.uuid(e.id.as_ref());
    w.text(e.error_kind)?;
    w.int4(e.dns_ms);
    w.int4(e.connect_ms);
    w.int4(e.tls_ms);
    w.int4(e.ttfb_ms);
    w.int8(e.bytes);
    w.time(e.cert_expires_at.as_ref())?;
    w.text(e.ip.as_deref())?;
    w.text(e.body_sha256.as_deref())?;
    w.int8(e.schedule_lag_ms);
    w.text(e.producer.as_deref())?;
    w.boolean(e.up);
    w.int4(Some(partition));
    w.int8(Some(offset));
    Ok(())
}

/// The columns each row fills, in the COPY tuple's order.
pub(super) const EVENT_COLUMNS: &str = "ts, url, elapsed, error, status, body_prefix, content_match, check_id, error_kind, \
    dns_ms, connect_ms, tls_ms, ttfb_ms, bytes, cert_expires_at, ip, body_sha256, schedule_lag_ms, producer, \
    up, kafka_partition, kafka_offset";

/// The binary COPY stream's header (signature, flags, no extension) and trailer.
pub(super) const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub(super) const COPY_TRAILER: &[u8] = &[0xff, 0xff];

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::Type;

    fn stored(url: &str) -> StoredEvent<'static> {
        let json = crate::event::CheckEvent::starting(url, "test", 0).to_json();
        // Leaked: a test's few bytes, so that the row may borrow them.
        let json: &'static [u8] = Vec::leak(json);
        crate::consumer::record::decode(Some(json), chrono::Utc::now()).unwrap()
    }

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

    /// The reference: the row as postgres-types' `ToSql` writes it (what `push` wrote
    /// before its fields were written by hand).
    fn row_by_to_sql(partition: i32, offset: i64, e: &StoredEvent<'_>) -> Vec<u8> {
        use tokio_postgres::types::{IsNull, ToSql};
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
        let mut bytes = BytesMut::new();
        bytes.put_i16(22);
        for (value, ty) in fields.iter().zip(EVENT_TYPES.iter()) {
            let at = bytes.len();
            bytes.put_i32(-1);
            if let IsNull::No = value.to_sql_checked(ty, &mut bytes).unwrap() {
                let len = (bytes.len() - at - 4) as i32;
                bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        bytes.to_vec()
    }

    #[test]
    fn every_field_is_written_as_to_sql_writes_it() {
        use std::borrow::Cow;
        let full = stored("https://a.example/ü");
        let mut rows = vec![full.clone()];
        let mut all = full.clone();
        all.error = Some(Cow::Borrowed("refused"));
        all.error_kind = Some("connect");
        all.status = Some(-1);
        all.body_prefix = Some(Cow::Borrowed(""));
        all.content_match = Some(Cow::Borrowed("Welcome"));
        (all.dns_ms, all.connect_ms, all.tls_ms, all.ttfb_ms) =
            (Some(0), Some(i32::MAX), Some(i32::MIN), Some(7));
        (all.bytes, all.schedule_lag_ms) = (Some(i64::MAX), Some(i64::MIN));
        all.cert_expires_at = chrono::DateTime::from_timestamp(-5_000_000_000, 999_999_000);
        all.ip = Some(Cow::Borrowed("2001:db8::1"));
        all.body_sha256 = Some(Cow::Borrowed("ab"));
        all.up = false;
        rows.push(all);
        let mut legacy = full;
        legacy.id = None;
        legacy.producer = None;
        legacy.elapsed = None;
        legacy.ts = chrono::DateTime::from_timestamp(946_684_799, 1_000).unwrap();
        rows.push(legacy.clone());
        // Before 2000 by a time that is not whole microseconds: rounded toward zero.
        legacy.ts = chrono::DateTime::from_timestamp(946_684_799, 1_500).unwrap();
        rows.push(legacy);
        for (i, e) in rows.iter().enumerate() {
            let mut encoder = RowEncoder::with_capacity(1);
            encoder.push(i as i32, 1 << 40, e).unwrap();
            let ours = encoder.finish().bytes.to_vec();
            assert_eq!(ours, row_by_to_sql(i as i32, 1 << 40, e), "row {i}");
        }
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
