//! A topic written in Kafka transactions, some aborted, by librdkafka (the reference
//! producer, tests/transactional_producer.py): the consumer stores exactly the records
//! librdkafka's own read-committed consumer (kcat) reads, and a drain ends although
//! each partition ends with a transaction marker (an offset that holds no record).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::open;

/// Whether Debian's python3 has the Kafka client; strict mode requires it.
fn confluent_kafka() -> bool {
    let found = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !common::strict(),
            "strict mode but python3-confluent-kafka is not installed: run scripts/install-prerequisites.sh"
        );
        eprintln!("SKIPPED: python3-confluent-kafka is not installed");
    }
    found
}

/// The input of transactional_producer.py: 9 transactions of 25 events each over 40
/// sites, every third aborted, a plain record between two; with the ids of the events a
/// read-committed consumer must see.
fn records() -> (String, BTreeSet<String>) {
    let (mut lines, mut committed) = (String::new(), BTreeSet::new());
    let mut n = 0;
    for t in 0..9 {
        let decision = if t % 3 == 1 { "abort" } else { "commit" };
        for _ in 0..25 {
            let url = format!("https://tx-{}.example/", n % 40);
            let ev = common::sample_event(&url, n);
            if decision == "commit" {
                committed.insert(ev.id.to_string());
            }
            let json = String::from_utf8(ev.to_json()).unwrap();
            lines += &format!("{t} {decision}\t{url}\t{json}\n");
            n += 1;
        }
        let url = format!("https://plain-{t}.example/");
        let ev = common::sample_event(&url, n);
        committed.insert(ev.id.to_string());
        let json = String::from_utf8(ev.to_json()).unwrap();
        lines += &format!("plain\t{url}\t{json}\n");
        n += 1;
    }
    (lines, committed)
}

/// The ids of the events in `topic` as kcat reads them with read_committed.
fn read_committed_by_kcat(kcat: &std::path::Path, broker: &str, topic: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(kcat)
        .args(["-C", "-b", broker, "-t", topic, "-e", "-q", "-f", "%s\n"])
        .args(["-X", "isolation.level=read_committed"])
        .output()
        .expect("kcat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("an event");
            v["id"].as_str().expect("an id").to_string()
        })
        .collect()
}

#[tokio::test]
async fn only_committed_transactions_are_stored_as_librdkafka_reads_them() {
    let tb = testbed_or_skip!();
    let Some(kcat) = common::debian_program("kcat") else {
        return;
    };
    if !confluent_kafka() {
        return;
    }
    let topic = common::unique("transactions");
    let (input, committed) = records();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/transactional_producer.py"
    );
    let mut producer = std::process::Command::new("/usr/bin/python3")
        .args([script, &tb.kafka_plaintext, &topic, "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/transactional_producer.py");
    let mut stdin = producer.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let produced = producer.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&produced.stdout).contains("done"),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    // The reference agrees with what was meant (else the test's premise is wrong).
    let by_librdkafka = read_committed_by_kcat(&kcat, &tb.kafka_plaintext, &topic);
    assert_eq!(by_librdkafka, committed);

    let (pg, url) = tb.fresh_database("transactions").await;
    // It ends: every partition's position reaches its end, past its markers.
    let drained = common::drain_output(&tb, &topic, &url, (Duration::from_secs(60), &[])).await;
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let db = open(&pg).await;
    let stored: BTreeSet<String> = db
        .query("SELECT check_id::text FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), by_librdkafka.len());
    assert_eq!(stored, by_librdkafka);
    let rejected = common::query_i64(&db, "SELECT count(*) FROM rejected_events").await;
    assert_eq!(rejected, 0, "markers or aborted records kept as rejects");
}
