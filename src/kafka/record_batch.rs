//! Reading Kafka's record batches (format v2, Kafka 0.11 and later) out of a fetch's
//! answer, without a copy: each record's key and value are slices of the answer (or of
//! the batch's decompressed records), so a fetched record costs no allocation. rskafka's
//! own reader copied every key and value into vectors of their own; on the consumer's
//! drain that was ~17 % of its CPU.
//!
//! It owns the wire layout of a batch and of a record and their CRC, and what a
//! read-committed consumer must leave out: transaction markers, and the batches of
//! transactions the fetch's answer lists as aborted ([`Aborts`]); [`codecs`] owns their
//! decompression (gzip, snappy, lz4, zstd). It never trusts a length it read: every slice
//! is checked against what is there, and a decompressed size is bounded.

use bytes::Bytes;

mod codecs;

/// One record of a fetched batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchedRecord {
    pub(crate) offset: i64,
    /// Milliseconds since the epoch: the producer's create time, or the broker's append
    /// time when the topic keeps that.
    pub(crate) timestamp_ms: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
}

/// A batch that cannot be read: the fetch fails with it, and is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchError(pub(crate) String);

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes of a batch before its CRC'd part: base offset, length, leader epoch, magic, CRC.
const BATCH_HEAD: usize = 8 + 4 + 4 + 1 + 4;
/// The CRC'd part's fixed fields: attributes to the record count.
const BATCH_FIELDS: usize = 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4;

/// An aborted transaction as a fetch's answer lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbortedTransaction {
    pub(crate) producer_id: i64,
    /// The offset of its first record.
    pub(crate) first_offset: i64,
}

/// Append to `out` the records in `data` (a partition's `records` in a fetch answer) at
/// or after offset `from`, but those of the `aborted` transactions. Returns the offset
/// after the last whole batch read (`from` when none was): transaction markers and aborted
/// batches hold offsets and no record, and the next fetch starts past them. A batch the
/// broker cut short at the fetch's size limit ends the reading; the next fetch starts
/// with it.
pub(crate) fn read_records(
    data: &Bytes,
    (from, aborted): (i64, &[AbortedTransaction]),
    out: &mut Vec<FetchedRecord>,
) -> Result<i64, BatchError> {
    let mut aborts = Aborts::new(aborted);
    let mut next = from;
    let mut at = 0;
    while data.len() - at >= 12 {
        let base_offset = be_i64(&data[at..]);
        let length = be_i32(&data[at + 8..]);
        let Ok(length) = usize::try_from(length) else {
            return Err(BatchError(format!(
                "a record batch at offset {base_offset} gives a length of {length}"
            )));
        };
        let end = at + 12 + length;
        if end > data.len() {
            break;
        }
        next = next.max(read_batch(data.slice(at..end), from, &mut aborts, out)?);
        at = end;
    }
    Ok(next)
}

/// A fetch's aborted transactions, followed batch by batch in offset order, as Kafka's
/// own consumer follows them: from its first offset on, a producer's transactional
/// batches are dropped, until its abort marker.
struct Aborts {
    /// Those not reached yet, by first offset.
    ahead: Vec<AbortedTransaction>,
    /// The producers inside an aborted transaction at this batch.
    aborting: Vec<i64>,
}

impl Aborts {
    fn new(aborted: &[AbortedTransaction]) -> Aborts {
        let mut ahead = aborted.to_vec();
        // Popped from the end: the lowest first offset last.
        ahead.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
        Aborts {
            ahead,
            aborting: Vec::new(),
        }
    }

    /// Whether the batch (`head`) is of an aborted transaction; its abort marker ends one.
    fn drops(&mut self, head: &BatchHead, abort_marker: bool) -> bool {
        while self
            .ahead
            .last()
            .is_some_and(|a| a.first_offset <= head.last_offset)
        {
            let started = self.ahead.pop().map(|a| a.producer_id);
            self.aborting.extend(started);
        }
        let aborting = self.aborting.contains(&head.producer_id);
        if abort_marker {
            self.aborting.retain(|p| *p != head.producer_id);
        }
        head.transactional && aborting
    }
}

/// The fields of a batch's header that decide whether its records are read.
struct BatchHead {
    last_offset: i64,
    producer_id: i64,
    transactional: bool,
}

/// The records of one whole batch (`batch`: from its base offset to its end), unless it
/// is a marker or of an aborted transaction; returns the offset after it.
fn read_batch(
    batch: Bytes,
    from: i64,
    aborts: &mut Aborts,
    out: &mut Vec<FetchedRecord>,
) -> Result<i64, BatchError> {
    let base_offset = be_i64(&batch);
    let bad = |what: String| BatchError(format!("record batch at offset {base_offset}: {what}"));
    if batch.len() < BATCH_HEAD + BATCH_FIELDS {
        return Err(bad(format!("{} bytes, too short", batch.len())));
    }
    let magic = batch[16];
    if magic != 2 {
        return Err(bad(format!(
            "message format v{magic} (Kafka before 0.11), which checksite does not read"
        )));
    }
    let fields = &batch[BATCH_HEAD..];
    let attributes = be_i16(fields);
    let head = BatchHead {
        last_offset: base_offset.saturating_add(i64::from(be_i32(&fields[2..]))),
        producer_id: be_i64(&fields[22..]),
        transactional: attributes & 0x10 != 0,
    };
    let next = head.last_offset.saturating_add(1);
    let control = attributes & 0x20 != 0;
    if head.last_offset < from && !control {
        return Ok(next); // all before the position: the broker starts at a batch's start
    }
    let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
    let actual = crc32c::crc32c(fields);
    if crc != actual {
        return Err(bad(format!("CRC 0x{actual:08x}, expected 0x{crc:08x}")));
    }
    let first_timestamp = be_i64(&fields[6..]);
    let max_timestamp = be_i64(&fields[14..]);
    let log_append_time = attributes & 0x08 != 0;
    let count = be_i32(&fields[36..]).max(0) as usize;
    let body = batch.slice(BATCH_HEAD + BATCH_FIELDS..);
    let records = match attributes & 0x07 {
        0 => body,
        codec => Bytes::from(codecs::decompress(codec, &body).map_err(bad)?),
    };
    let batch_time = BatchTime {
        first: first_timestamp,
        // The broker's append time is the batch's, whatever the records say.
        log_append: log_append_time.then_some(max_timestamp),
    };
    let abort_marker = control && is_abort_marker(&records, count, base_offset, batch_time);
    // A marker is followed even before the position: it may end an abort.
    if aborts.drops(&head, abort_marker) || control || head.last_offset < from {
        return Ok(next);
    }
    read_batch_records(&records, count, (base_offset, from), batch_time, out).map_err(bad)?;
    Ok(next)
}

/// Whether a control batch marks a transaction's abort (its one record's key: version,
/// then type 0; a commit is type 1). One that cannot be read is passed over as any other
/// marker would be (a failed fetch would stop the partition, and nothing of ours is in it).
fn is_abort_marker(records: &Bytes, count: usize, base_offset: i64, time: BatchTime) -> bool {
    let mut control = Vec::new();
    let read = read_batch_records(
        records,
        count.min(1),
        (base_offset, i64::MIN),
        time,
        &mut control,
    );
    let key = control.first().and_then(|r| r.key.as_deref());
    read.is_ok() && key.and_then(|k| k.get(2..4)) == Some(&[0, 0])
}

/// How a batch's records get their timestamps.
#[derive(Clone, Copy)]
struct BatchTime {
    first: i64,
    log_append: Option<i64>,
}

/// `count` records from `records` (a batch's, decompressed); those before `from` skipped.
fn read_batch_records(
    records: &Bytes,
    count: usize,
    (base_offset, from): (i64, i64),
    time: BatchTime,
    out: &mut Vec<FetchedRecord>,
) -> Result<(), String> {
    out.reserve(count.min(records.len()));
    let mut at = 0;
    for _ in 0..count {
        let mut cursor = Cursor { data: records, at };
        let length = cursor.varint()?;
        let length = usize::try_from(length).map_err(|_| format!("a record length of {length}"))?;
        let end = cursor
            .at
            .checked_add(length)
            .filter(|&e| e <= records.len());
        let end = end.ok_or_else(|| format!("a record of {length} bytes past the batch's end"))?;
        let mut record = Cursor {
            data: &records[..end],
            at: cursor.at,
        };
        record.skip(1)?; // attributes: unused
        let timestamp_delta = record.varint()?;
        let offset_delta = record.varint()?;
        let offset = base_offset.saturating_add(offset_delta);
        if offset >= from {
            let key = record.bytes(records)?;
            let value = record.bytes(records)?;
            // Headers are not read: nothing of checksite's travels in them.
            let timestamp_ms = time
                .log_append
                .unwrap_or_else(|| time.first.saturating_add(timestamp_delta));
            out.push(FetchedRecord {
                offset,
                timestamp_ms,
                key,
                value,
            });
        }
        at = end;
    }
    Ok(())
}

/// A position in a batch's records, reading Kafka's zig-zag varints.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.data.get(self.at) else {
                return Err("a record cut short".into());
            };
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("a varint of more than 10 bytes".into())
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.data.len() - self.at < n {
            return Err("a record cut short".into());
        }
        self.at += n;
        Ok(())
    }

    /// A length-prefixed key or value (-1: none), as a slice of `whole`.
    fn bytes(&mut self, whole: &Bytes) -> Result<Option<Bytes>, String> {
        let length = self.varint()?;
        if length < 0 {
            return Ok(None);
        }
        let start = self.at;
        self.skip(length as usize)?;
        Ok(Some(whole.slice(start..self.at)))
    }
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests;
