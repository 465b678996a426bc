//! The reader against rskafka's own writer and reader: the same batches through both must
//! give the same records. Cases are drawn from a seeded generator, not picked by hand.

use super::*;
use rskafka::protocol::record::{
    ControlBatchOrRecords, ControlBatchRecord, Record, RecordBatch, RecordBatchCompression,
    RecordBatchTimestampType, RecordHeader,
};
use rskafka::protocol::traits::{ReadType, WriteType};

/// xorshift64*: reproducible cases without a crate.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, max: u64) -> Option<Vec<u8>> {
        match self.below(5) {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(
                (0..self.below(max))
                    .map(|_| (self.next() % 7) as u8 + b'a')
                    .collect(),
            ),
        }
    }
}

const COMPRESSIONS: [RecordBatchCompression; 3] = [
    RecordBatchCompression::NoCompression,
    RecordBatchCompression::Gzip,
    RecordBatchCompression::Snappy,
];

fn drawn_batch(
    draw: &mut Draw,
    base_offset: i64,
    compression: RecordBatchCompression,
) -> RecordBatch {
    let n = 1 + draw.below(40) as i32;
    let records = (0..n)
        .map(|i| Record {
            timestamp_delta: draw.below(5_000) as i64 - 100,
            offset_delta: i,
            key: draw.bytes(30),
            value: draw.bytes(700),
            headers: (0..draw.below(3))
                .map(|h| RecordHeader {
                    key: format!("h{h}"),
                    value: draw.bytes(20).unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    RecordBatch {
        base_offset,
        partition_leader_epoch: 3,
        last_offset_delta: n - 1,
        first_timestamp: 1_764_000_000_000 + draw.below(1 << 30) as i64,
        max_timestamp: 1_764_000_000_000,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: ControlBatchOrRecords::Records(records),
        compression,
        is_transactional: false,
        timestamp_type: RecordBatchTimestampType::CreateTime,
    }
}

fn written(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    batch.write(&mut out).expect("rskafka writes a batch");
    out
}

/// What rskafka's reader makes of `bytes`, as this module's records, from `from` on.
fn by_rskafka(bytes: &[u8], from: i64) -> Vec<FetchedRecord> {
    let batch = RecordBatch::read(&mut std::io::Cursor::new(bytes)).expect("rskafka reads it");
    let ControlBatchOrRecords::Records(records) = batch.records else {
        return Vec::new();
    };
    records
        .into_iter()
        .map(|r| FetchedRecord {
            offset: batch.base_offset + i64::from(r.offset_delta),
            timestamp_ms: batch.first_timestamp + r.timestamp_delta,
            key: r.key.map(Bytes::from),
            value: r.value.map(Bytes::from),
        })
        .filter(|r| r.offset >= from)
        .collect()
}

fn ours(bytes: &[u8], from: i64) -> Result<Vec<FetchedRecord>, BatchError> {
    let mut out = Vec::new();
    read_records(&Bytes::copy_from_slice(bytes), (from, &[]), &mut out)?;
    Ok(out)
}

#[test]
fn every_drawn_batch_reads_as_rskafka_reads_it() {
    let mut draw = Draw(0x5eed);
    for case in 0..300 {
        let compression = COMPRESSIONS[case % 3];
        let base = draw.below(1 << 40) as i64;
        let batch = drawn_batch(&mut draw, base, compression);
        let bytes = written(&batch);
        let from = base + draw.below(50) as i64 - 5;
        let expected = by_rskafka(&bytes, from);
        assert_eq!(
            ours(&bytes, from).unwrap(),
            expected,
            "case {case} ({compression:?}, from {from})"
        );
    }
}

#[test]
fn batches_in_a_row_read_in_order_and_a_cut_one_ends_the_reading() {
    let mut draw = Draw(42);
    let first = written(&drawn_batch(&mut draw, 100, RecordBatchCompression::Snappy));
    let second = written(&drawn_batch(&mut draw, 200, RecordBatchCompression::Gzip));
    let whole = [first.clone(), second.clone()].concat();
    let mut expected = by_rskafka(&first, 0);
    let of_first = expected.len();
    expected.extend(by_rskafka(&second, 0));
    assert_eq!(ours(&whole, 0).unwrap(), expected);
    // A broker cuts the last batch anywhere at its size limit: what is whole is read.
    for cut in first.len()..whole.len() {
        assert_eq!(
            ours(&whole[..cut], 0).unwrap(),
            expected[..of_first],
            "cut at {cut}"
        );
    }
    assert_eq!(ours(&whole[..first.len() - 1], 0).unwrap(), []);
}

#[test]
fn a_changed_byte_fails_the_crc() {
    let mut draw = Draw(7);
    let bytes = written(&drawn_batch(
        &mut draw,
        0,
        RecordBatchCompression::NoCompression,
    ));
    for at in [BATCH_HEAD, BATCH_HEAD + 3, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let e = ours(&bad, 0).unwrap_err();
        assert!(e.0.contains("CRC"), "{e}");
    }
}

#[test]
fn control_batches_give_no_record() {
    let mut draw = Draw(9);
    let mut batch = drawn_batch(&mut draw, 10, RecordBatchCompression::NoCompression);
    batch.records = ControlBatchOrRecords::ControlBatch(ControlBatchRecord::Commit);
    batch.last_offset_delta = 0;
    let control = written(&batch);
    let data = written(&drawn_batch(
        &mut draw,
        11,
        RecordBatchCompression::NoCompression,
    ));
    let read = ours(&[control, data.clone()].concat(), 0).unwrap();
    assert_eq!(read, by_rskafka(&data, 0));
}

#[test]
fn the_broker_s_append_time_is_every_record_s() {
    let mut draw = Draw(11);
    let mut batch = drawn_batch(&mut draw, 0, RecordBatchCompression::Gzip);
    batch.timestamp_type = RecordBatchTimestampType::LogAppendTime;
    batch.max_timestamp = 1_800_000_000_123;
    let read = ours(&written(&batch), 0).unwrap();
    assert!(!read.is_empty());
    assert!(read.iter().all(|r| r.timestamp_ms == 1_800_000_000_123));
}

/// `batch` written uncompressed, then its records compressed by `compress` under
/// `codec` (the attributes' low bits), its CRC made again.
fn recompressed(batch: &RecordBatch, codec: u8, compress: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let plain = written(batch);
    let mut bytes = plain[..BATCH_HEAD + BATCH_FIELDS].to_vec();
    bytes.extend(compress(&plain[BATCH_HEAD + BATCH_FIELDS..]));
    bytes[BATCH_HEAD + 1] |= codec; // attributes' low byte
    let length = (bytes.len() - 12) as i32; // after base offset and length
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[BATCH_HEAD..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn lz4_and_zstd_batches_read_as_the_same_batch_uncompressed() {
    let lz4 = |records: &[u8]| {
        let mut frame = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut frame, records).unwrap();
        frame.finish().unwrap()
    };
    let zstd = |records: &[u8]| {
        ruzstd::encoding::compress_to_vec(records, ruzstd::encoding::CompressionLevel::Fastest)
    };
    let mut draw = Draw(17);
    let mut records = 0;
    for round in 0..40 {
        let batch = drawn_batch(&mut draw, 0, RecordBatchCompression::NoCompression);
        let from = batch.base_offset + (round % 3);
        let expected = ours(&written(&batch), from).unwrap();
        records += expected.len();
        assert_eq!(ours(&recompressed(&batch, 3, lz4), from).unwrap(), expected);
        assert_eq!(
            ours(&recompressed(&batch, 4, zstd), from).unwrap(),
            expected
        );
    }
    assert!(records > 100, "{records}");
}

#[test]
fn an_unknown_compression_is_refused_by_number() {
    let mut draw = Draw(19);
    let batch = drawn_batch(&mut draw, 0, RecordBatchCompression::NoCompression);
    let bytes = recompressed(&batch, 5, |records| records.to_vec());
    assert!(
        ours(&bytes, 0)
            .unwrap_err()
            .0
            .contains("unknown compression 5")
    );
}

#[test]
fn java_framed_snappy_reads_as_raw_snappy() {
    let mut draw = Draw(13);
    let batch = drawn_batch(&mut draw, 0, RecordBatchCompression::NoCompression);
    let plain = written(&batch);
    let records = &plain[BATCH_HEAD + BATCH_FIELDS..];
    // The Java client's framing, in two chunks.
    let mut framed = codecs::XERIAL_MAGIC.to_vec();
    framed.extend([0, 0, 0, 1, 0, 0, 0, 1]);
    let (a, b) = records.split_at(records.len() / 2);
    for part in [a, b] {
        let chunk = snap::raw::Encoder::new().compress_vec(part).unwrap();
        framed.extend((chunk.len() as u32).to_be_bytes());
        framed.extend(chunk);
    }
    assert_eq!(codecs::decompress(2, &framed).unwrap(), records);
    framed.truncate(framed.len() - 1);
    assert!(codecs::decompress(2, &framed).is_err());
}

#[test]
fn a_declared_size_past_the_bound_is_refused_before_allocating() {
    // A raw snappy block that announces 2^31 bytes (varint), then nothing.
    let lie = [0x80, 0x80, 0x80, 0x80, 0x08];
    let e = codecs::decompress(2, &lie).unwrap_err();
    assert!(e.contains("over"), "{e}");
}

#[test]
fn lz4_and_zstd_cut_short_are_errors() {
    let records: Vec<u8> = (0..20_000u32)
        .flat_map(|i| (i % 251).to_be_bytes())
        .collect();
    let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut lz4, &records).unwrap();
    let lz4 = lz4.finish().unwrap();
    let zstd = ruzstd::encoding::compress_to_vec(
        &records[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    // The batch's CRC covers these bytes: a cut here is a decoder's own check.
    for (codec, whole) in [(3, lz4), (4, zstd)] {
        assert_eq!(codecs::decompress(codec, &whole).unwrap(), records);
        for cut in [1, whole.len() / 2] {
            assert!(
                codecs::decompress(codec, &whole[..cut]).is_err(),
                "codec {codec} cut at {cut} of {}",
                whole.len()
            );
        }
    }
}

#[test]
fn an_lz4_frame_decompressing_past_the_bound_is_refused() {
    // 1 MiB of zeros, 129 times: a few KiB compressed, over the bound decompressed.
    let mut frame = lz4_flex::frame::FrameEncoder::new(Vec::new());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..129 {
        std::io::Write::write_all(&mut frame, &zeros).unwrap();
    }
    let bomb = frame.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let e = codecs::decompress(3, &bomb).unwrap_err();
    assert!(e.contains("over"), "{e}");
}

/// A transactional batch of `n` records of `producer`, from `base`.
fn transactional(base: i64, producer: i64, n: i32) -> Vec<u8> {
    let mut batch = drawn_batch(&mut Draw(base as u64 + 1), base, COMPRESSIONS[0]);
    let record = |i| Record {
        timestamp_delta: i64::from(i),
        offset_delta: i,
        key: Some(b"k".to_vec()),
        value: Some(format!("record {}", base + i64::from(i)).into_bytes()),
        headers: Vec::new(),
    };
    batch.records = ControlBatchOrRecords::Records((0..n).map(record).collect());
    batch.last_offset_delta = n - 1;
    batch.is_transactional = true;
    batch.producer_id = producer;
    written(&batch)
}

/// A transaction's marker as the broker writes it: a control batch of one record whose
/// key is (version 0, type: 0 abort, 1 commit) and value (version, coordinator epoch).
/// rskafka writes the key alone, without the record around it, so the bytes are made here.
fn marker(at: i64, producer: i64, abort: bool) -> Vec<u8> {
    let record = Record {
        timestamp_delta: 0,
        offset_delta: 0,
        key: Some(vec![0, 0, 0, u8::from(!abort)]),
        value: Some(vec![0, 0, 0, 0, 0, 3]),
        headers: Vec::new(),
    };
    let mut batch = drawn_batch(&mut Draw(5), at, COMPRESSIONS[0]);
    batch.records = ControlBatchOrRecords::Records(vec![record]);
    batch.last_offset_delta = 0;
    batch.is_transactional = true;
    batch.producer_id = producer;
    let mut bytes = written(&batch);
    bytes[BATCH_HEAD + 1] |= 0x20; // attributes' low byte: a control batch
    let crc = crc32c::crc32c(&bytes[BATCH_HEAD..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn read_with(data: &[Vec<u8>], from: i64, aborted: &[(i64, i64)]) -> (Vec<i64>, i64) {
    let aborted: Vec<_> = aborted
        .iter()
        .map(|&(producer_id, first_offset)| AbortedTransaction {
            producer_id,
            first_offset,
        })
        .collect();
    let mut out = Vec::new();
    let next = read_records(&Bytes::from(data.concat()), (from, &aborted), &mut out).unwrap();
    (out.iter().map(|r| r.offset).collect(), next)
}

#[test]
fn an_aborted_transaction_s_records_are_left_out_and_its_offsets_passed() {
    let data = [
        transactional(0, 5, 3),
        marker(3, 5, false),
        transactional(4, 5, 3),
        marker(7, 5, true),
        written(&drawn_batch(&mut Draw(3), 8, COMPRESSIONS[1])),
    ];
    let plain = ours(&data[4], 0).unwrap();
    let after: Vec<i64> = plain.iter().map(|r| r.offset).collect();
    let next = 8 + after.len() as i64;
    let kept = [vec![0, 1, 2], after.clone()].concat();
    assert_eq!(read_with(&data, 0, &[(5, 4)]), (kept, next));
    // Listed as not aborted, the same transaction is read: the list decides, not the marker.
    let all = [vec![0, 1, 2, 4, 5, 6], after].concat();
    assert_eq!(read_with(&data, 0, &[]), (all, next));
}

#[test]
fn a_producer_s_abort_ends_at_its_marker_and_others_go_on() {
    let data = [
        transactional(0, 1, 2), // producer 1, aborted
        transactional(2, 2, 2), // producer 2, committed
        marker(4, 1, true),     // producer 1's abort
        marker(5, 2, false),    // producer 2's commit
        transactional(6, 1, 2), // producer 1's next transaction, committed
        marker(8, 1, false),
    ];
    assert_eq!(read_with(&data, 0, &[(1, 0)]), (vec![2, 3, 6, 7], 9));
    // From the middle of the aborted batch (a fetch starts at the batch's start).
    assert_eq!(read_with(&data, 1, &[(1, 0)]), (vec![2, 3, 6, 7], 9));
}

#[test]
fn an_answer_of_markers_alone_moves_the_position_past_them() {
    // A drain whose partition ends with a commit marker: the position must reach the end.
    assert_eq!(read_with(&[marker(17, 4, false)], 17, &[]), (vec![], 18));
    assert_eq!(read_with(&[], 17, &[]), (vec![], 17));
    // A batch cut short at the fetch's size limit is left for the next fetch.
    let cut = transactional(20, 4, 3);
    let data = [marker(19, 4, false), cut[..cut.len() - 1].to_vec()];
    assert_eq!(read_with(&data, 19, &[]), (vec![], 20));
}
