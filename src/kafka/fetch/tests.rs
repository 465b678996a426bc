//! A Fetch v4 answer's layout, as the protocol's reference gives it
//! (kafka.apache.org/protocol#The_Messages_Fetch), built by hand.

use super::*;

/// One partition's part: index, error, high watermark, aborted transactions, records.
fn partition(index: i32, error: i16, high: i64, aborted: i32, records: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(index.to_be_bytes());
    out.extend(error.to_be_bytes());
    out.extend(high.to_be_bytes());
    out.extend((high - 1).to_be_bytes()); // last stable offset
    out.extend(aborted.to_be_bytes());
    for i in 0..aborted.max(0) {
        out.extend(i64::from(i).to_be_bytes());
        out.extend(7i64.to_be_bytes());
    }
    match records {
        None => out.extend((-1i32).to_be_bytes()),
        Some(r) => {
            out.extend((r.len() as i32).to_be_bytes());
            out.extend(r);
        }
    }
    out
}

fn answer(topics: &[(&str, Vec<Vec<u8>>)]) -> Bytes {
    let mut out = 0i32.to_be_bytes().to_vec(); // throttle time
    out.extend((topics.len() as i32).to_be_bytes());
    for (name, partitions) in topics {
        out.extend((name.len() as i16).to_be_bytes());
        out.extend(name.as_bytes());
        out.extend((partitions.len() as i32).to_be_bytes());
        for p in partitions {
            out.extend(p);
        }
    }
    Bytes::from(out)
}

#[test]
fn the_partition_asked_for_is_found_past_the_others() {
    let body = answer(&[
        ("other", vec![partition(2, 0, 5, 0, Some(b"no"))]),
        (
            "checks",
            vec![
                partition(1, 0, 9, 2, Some(b"not this")),
                partition(2, 0, 42, -1, Some(b"these records")),
            ],
        ),
    ]);
    let found = partition_answer(&body, "checks", 2).unwrap();
    assert_eq!(
        found,
        PartitionAnswer {
            error: 0,
            high_watermark: 42,
            last_stable: 41,
            aborted: Vec::new(),
            records: Bytes::from_static(b"these records"),
        }
    );
    // The aborted transactions listed before a partition's records, each kept.
    let found = partition_answer(&body, "checks", 1).unwrap();
    let aborted = |producer_id| AbortedTransaction {
        producer_id,
        first_offset: 7,
    };
    assert_eq!(found.aborted, [aborted(0), aborted(1)]);
    assert_eq!(found.records, Bytes::from_static(b"not this"));
}

#[test]
fn an_error_and_no_records_are_read_as_such() {
    let body = answer(&[("checks", vec![partition(0, 1, 100, -1, None)])]);
    let found = partition_answer(&body, "checks", 0).unwrap();
    assert_eq!(
        (found.error, found.high_watermark, found.records.len()),
        (1, 100, 0)
    );
}

#[test]
fn a_missing_partition_or_a_cut_answer_is_an_error_not_a_panic() {
    let body = answer(&[("checks", vec![partition(0, 0, 3, 1, Some(b"abc"))])]);
    assert!(
        partition_answer(&body, "checks", 1)
            .unwrap_err()
            .contains("no partition 1")
    );
    for cut in 0..body.len() {
        assert!(
            partition_answer(&body.slice(..cut), "checks", 0).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn only_errors_a_new_leader_may_fix_are_retried() {
    for (code, expected) in [(6, true), (3, true), (1, false), (29, false), (87, false)] {
        assert_eq!(retriable(code), expected, "error {code}");
    }
}

#[test]
fn the_answer_is_taken_whole_and_the_messenger_sees_it_all_read() {
    let mut frame = Cursor::new(b"HEADthe answer's body".to_vec());
    frame.set_position(4); // the response header, read by the messenger
    let version = ApiVersion(rskafka::protocol::primitives::Int16(4));
    let answer = RawFetchAnswer::read_versioned(&mut frame, version).unwrap();
    assert_eq!(answer.0, Bytes::from_static(b"the answer's body"));
    // The messenger's check after reading an answer: its position is its length.
    assert_eq!(frame.position(), frame.get_ref().len() as u64);
    let mut short = Cursor::new(b"HE".to_vec());
    short.set_position(4);
    assert!(RawFetchAnswer::read_versioned(&mut short, version).is_err());
}

fn listed(
    topic: &str,
    partition: i32,
    error: i16,
    v0: Option<Vec<i64>>,
    v1: Option<i64>,
) -> ListOffsetsResponse {
    use rskafka::protocol::messages::{ListOffsetsResponsePartition, ListOffsetsResponseTopic};
    use rskafka::protocol::primitives::Array;
    ListOffsetsResponse {
        throttle_time_ms: None,
        topics: vec![ListOffsetsResponseTopic {
            name: String_(topic.into()),
            partitions: vec![ListOffsetsResponsePartition {
                partition_index: Int32(partition),
                error_code: ProtocolError::new(error),
                old_style_offsets: v0.map(|o| Array(Some(o.into_iter().map(Int64).collect()))),
                timestamp: v1.map(|_| Int64(-1)),
                offset: v1.map(Int64),
            }],
        }],
    }
}

#[test]
fn an_offsets_answer_gives_the_partitions_offset_in_either_version() {
    assert_eq!(
        listed_offset(&listed("t", 2, 0, None, Some(42)), "t", 2),
        Ok(42)
    );
    assert_eq!(
        listed_offset(&listed("t", 2, 0, Some(vec![7]), None), "t", 2),
        Ok(7)
    );
}

#[test]
fn an_offsets_answer_without_the_offset_is_an_error_not_a_panic() {
    // The partition's error code, for the caller to retry (6: not the leader) or not.
    assert_eq!(
        listed_offset(&listed("t", 2, 6, None, Some(-1)), "t", 2),
        Err(Listed::Error(6))
    );
    for (answer, topic, partition) in [
        (listed("t", 2, 0, None, Some(42)), "t", 3),
        (listed("t", 2, 0, None, Some(42)), "u", 2),
        (listed("t", 2, 0, Some(vec![]), None), "t", 2),
        (listed("t", 2, 0, Some(vec![1, 2]), None), "t", 2),
    ] {
        assert!(
            matches!(
                listed_offset(&answer, topic, partition),
                Err(Listed::Malformed(_))
            ),
            "{answer:?}"
        );
    }
}

#[test]
fn a_committed_read_ends_at_the_last_stable_offset_when_the_broker_gives_it() {
    let answer = |high_watermark, last_stable| PartitionAnswer {
        error: 0,
        high_watermark,
        last_stable,
        aborted: Vec::new(),
        records: Bytes::new(),
    };
    // A transaction open from offset 20 on: what follows cannot be read yet.
    assert_eq!(answer(35, 20).readable_end(), 20);
    assert_eq!(answer(35, 35).readable_end(), 35);
    // Unknown (-1): the high watermark.
    assert_eq!(answer(35, -1).readable_end(), 35);
}
