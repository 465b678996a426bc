//! Reading Kafka's record batches (format v2, Kafka 0.11 and later) out of a fetch's
//! answer, without a copy: each record's key and value are slices of the answer (or of
//! the batch's decompressed records), so a fetched record costs no allocation. rskafka's
//! own reader copied every key and value into vectors of their own; on the consumer's
//! drain that was ~17 % of its CPU.
//!
//! It owns the wire layout of a batch and of a record and their CRC; [`codecs`] owns
//! their decompression (gzip, snappy, lz4, zstd). It never trusts a length it read: every
//! slice is checked against what is there, and a decompressed size is bounded.

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

/// Append to `out` the records in `data` (a partition's `records` in a fetch answer) at
/// or after offset `from`. A batch the broker cut short at the fetch's size limit ends
/// the reading; the next fetch starts with it.
pub(crate) fn read_records(
    data: &Bytes,
    from: i64,
    out: &mut Vec<FetchedRecord>,
) -> Result<(), BatchError> {
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
        read_batch(data.slice(at..end), from, out)?;
        at = end;
    }
    Ok(())
}

/// The records of one whole batch (`batch`: from its base offset to its end).
fn read_batch(batch: Bytes, from: i64, out: &mut Vec<FetchedRecord>) -> Result<(), BatchError> {
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
    let last_offset_delta = be_i32(&fields[2..]);
    if base_offset.saturating_add(i64::from(last_offset_delta)) < from {
        return Ok(()); // all before the position: the broker starts at a batch's start
    }
    let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
    let actual = crc32c::crc32c(fields);
    if crc != actual {
        return Err(bad(format!("CRC 0x{actual:08x}, expected 0x{crc:08x}")));
    }
    let is_control = attributes & 0x20 != 0;
    if is_control {
        return Ok(()); // transaction markers: no record of ours
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
    read_batch_records(&records, count, (base_offset, from), batch_time, out).map_err(bad)
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
