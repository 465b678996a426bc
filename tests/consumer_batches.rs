//! The consumer reads record batches itself (src/kafka/record_batch.rs): here it reads
//! batches as the clients people use write them, not only as rskafka does. librdkafka
//! (`kcat -z`) writes snappy raw, gzip, lz4 frames and zstd; the broker itself, for a
//! topic whose `compression.type` differs from the producer's, recompresses with the Java
//! libraries (snappy in xerial's framing, lz4-java, zstd-jni). Every event must be stored
//! once, as it was written.

mod common;

use common::{drain, open};

/// A record's key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// `n` events over 20 URLs: (key, JSON value) and their ids, sorted.
fn events(n: u64) -> (Vec<KeyValue>, Vec<String>) {
    let mut ids = Vec::new();
    let records = (0..n)
        .map(|i| {
            let url = format!("https://batch-{}.example/", i % 20);
            let ev = common::sample_event(&url, i);
            ids.push(ev.id.to_string());
            (url.into_bytes(), ev.to_json())
        })
        .collect();
    ids.sort();
    (records, ids)
}

/// Drain `topic` into a fresh database; the ids stored, sorted, and the drain's summary.
async fn stored_ids(tb: &common::Testbed, topic: &str) -> (Vec<String>, [u64; 3]) {
    let (pg, url) = tb.fresh_database("batches").await;
    let out = drain(tb, topic, &url).await;
    let db = open(&pg).await;
    let rows = db
        .query("SELECT check_id::text FROM events ORDER BY 1", &[])
        .await
        .unwrap();
    let ids = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    (ids, common::drain_summary(&out))
}

#[tokio::test]
async fn batches_librdkafka_writes_are_stored_as_written() {
    let tb = testbed_or_skip!();
    let Some(kcat) = common::debian_program("kcat") else {
        return;
    };
    for codec in ["none", "snappy", "gzip", "lz4", "zstd"] {
        let topic = common::unique(&format!("kcat-{codec}"));
        let settings = tb.kafka(common::Listener::Plaintext, &topic);
        let client = checksite::kafka::connect(&settings, std::time::Duration::from_secs(10))
            .await
            .expect("connect");
        checksite::kafka::ensure_topic(&client, &topic, 3, -1)
            .await
            .expect("topic");
        let (records, ids) = events(3_000);
        let mut input = Vec::new();
        for (key, value) in &records {
            input.extend(key);
            input.push(b'\t');
            input.extend(value);
            input.push(b'\n');
        }
        let mut produce = std::process::Command::new(&kcat)
            .args(["-P", "-b", &tb.kafka_plaintext, "-t", &topic, "-K", "\t"])
            .args(["-z", codec, "-X", "partitioner=murmur2_random"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("kcat -P");
        use std::io::Write;
        produce.stdin.take().unwrap().write_all(&input).unwrap();
        assert!(
            produce.wait().unwrap().success(),
            "kcat -P -z {codec} failed"
        );
        let (stored, summary) = stored_ids(&tb, &topic).await;
        assert_eq!(summary, [3_000, 0, 0], "kcat -z {codec}");
        assert_eq!(
            stored, ids,
            "kcat -z {codec}: the events stored are those written"
        );
    }
}

#[tokio::test]
async fn batches_the_broker_recompresses_with_java_are_stored_as_written() {
    let tb = testbed_or_skip!();
    for codec in ["snappy", "gzip", "lz4", "zstd"] {
        let topic = common::unique(&format!("java-{codec}"));
        let settings = tb.kafka(common::Listener::Plaintext, &topic);
        let configs = [("compression.type", codec)];
        checksite::kafka::create_topic_with_configs(&settings, &topic, 2, -1, &configs)
            .await
            .expect("topic with compression.type");
        let (records, ids) = events(2_000);
        // Sent uncompressed: the broker writes each batch again, compressed, in Java.
        common::produce_raw(&tb, &topic, 2, records).await;
        let (stored, summary) = stored_ids(&tb, &topic).await;
        assert_eq!(summary, [2_000, 0, 0], "compression.type={codec}");
        assert_eq!(
            stored, ids,
            "compression.type={codec}: the events stored are those written"
        );
    }
}
