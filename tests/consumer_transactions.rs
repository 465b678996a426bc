//! A topic written in Kafka transactions, some aborted, by librdkafka (the reference
//! producer, tests/transactional_producer.py): the consumer stores exactly the records
//! librdkafka's own read-committed consumer (kcat) reads, and a drain ends although
//! each partition ends with a transaction marker (an offset that holds no record); a row
//! PostgreSQL refuses there is read again from Kafka and kept with its bytes; the records
//! of a transaction still open are not counted as lag.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use common::open;

/// An event as produced: its URL and its JSON, by id.
type Produced = BTreeMap<String, (String, Vec<u8>)>;

/// The input of transactional_producer.py: 9 transactions of 25 events each over 40
/// sites, every third aborted, a plain record between two; with the events a
/// read-committed consumer must see.
fn records() -> (String, Produced) {
    let (mut lines, mut committed) = (String::new(), Produced::new());
    let mut n = 0;
    for t in 0..9 {
        let decision = if t % 3 == 1 { "abort" } else { "commit" };
        for i in 0..26 {
            let (kind, url) = match i {
                25 => ("plain".to_string(), format!("https://plain-{t}.example/")),
                _ => (
                    format!("{t} {decision}"),
                    format!("https://tx-{}.example/", n % 40),
                ),
            };
            let ev = common::sample_event(&url, n);
            let json = ev.to_json();
            lines += &format!("{kind}\t{url}\t{}\n", String::from_utf8_lossy(&json));
            if kind == "plain" || decision == "commit" {
                committed.insert(ev.id.to_string(), (url, json));
            }
            n += 1;
        }
    }
    (lines, committed)
}

/// A new topic of 2 partitions written by tests/transactional_producer.py; the events a
/// read-committed consumer must see.
fn produce_in_transactions(tb: &common::Testbed, topic: &str) -> Produced {
    let (input, committed) = records();
    common::produce_with_transactions(&tb.kafka_plaintext, topic, 2, &input);
    committed
}

/// The ids of the events stored.
async fn stored_ids(db: &tokio_postgres::Client) -> BTreeSet<String> {
    db.query("SELECT check_id::text FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
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
    if !common::confluent_kafka() {
        return;
    }
    let topic = common::unique("transactions");
    let committed = produce_in_transactions(&tb, &topic);
    // The reference agrees with what was meant (else the test's premise is wrong).
    let by_librdkafka = read_committed_by_kcat(&kcat, &tb.kafka_plaintext, &topic);
    assert!(by_librdkafka.iter().eq(committed.keys()));

    let (pg, url) = tb.fresh_database("transactions").await;
    // It ends: every partition's position reaches its end, past its markers.
    let drained = common::drain_output(&tb, &topic, &url, (Duration::from_secs(60), &[])).await;
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let db = open(&pg).await;
    let stored = stored_ids(&db).await;
    assert_eq!(stored.len(), by_librdkafka.len());
    assert_eq!(stored, by_librdkafka);
    let rejected = common::query_i64(&db, "SELECT count(*) FROM rejected_events").await;
    assert_eq!(rejected, 0, "markers or aborted records kept as rejects");
}

#[tokio::test]
async fn a_row_postgres_refuses_in_a_transactional_topic_is_kept_as_it_came() {
    let tb = testbed_or_skip!();
    if !common::confluent_kafka() {
        return;
    }
    let topic = common::unique("transactions-refused");
    let committed = produce_in_transactions(&tb, &topic);
    let (pg, url) = tb.fresh_database("transactions_refused").await;
    // A rule a DBA added that some events break: each refused row is read again from
    // Kafka, whose answer around it holds markers, to be kept with its raw bytes.
    let mut db = open(&pg).await;
    checksite::consumer::store::migrate(&mut db).await.unwrap();
    db.batch_execute(
        "ALTER TABLE events ADD CONSTRAINT not_seven CHECK (url <> 'https://tx-7.example/')",
    )
    .await
    .unwrap();
    let drained = common::drain_output(&tb, &topic, &url, (Duration::from_secs(60), &[])).await;
    let log = String::from_utf8_lossy(&drained.stderr);
    assert!(drained.status.success(), "{log}");
    let (refused, kept): (Produced, Produced) = committed
        .into_iter()
        .partition(|(_, (url, _))| url == "https://tx-7.example/");
    assert!(!refused.is_empty());
    assert!(stored_ids(&db).await.iter().eq(kept.keys()));
    let rejected: BTreeSet<(String, Vec<u8>)> = db
        .query("SELECT reason, value FROM rejected_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rejected.len(), refused.len(), "{log}");
    for (reason, value) in &rejected {
        assert!(reason.contains("not_seven"), "{reason}");
        assert!(
            refused.values().any(|(_, json)| json == value),
            "raw bytes kept as they came"
        );
    }
}

/// The value of the sample `name` in a scrape's text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn records_of_a_transaction_still_open_are_not_lag() {
    let tb = testbed_or_skip!();
    if !common::confluent_kafka() {
        return;
    }
    let topic = common::unique("transactions-open");
    let mut producer = common::transactional_producer(&tb.kafka_plaintext, &topic, 1);
    // 20 events committed, then 15 in a transaction left open.
    let mut input = String::new();
    for n in 0..35u64 {
        let tx = if n < 20 { "0 commit" } else { "1 commit" };
        let url = format!("https://open-{}.example/", n % 5);
        let json = common::sample_event(&url, n).to_json();
        input += &format!("{tx}\t{url}\t{}\n", String::from_utf8_lossy(&json));
    }
    input += "hold\t-\t-\n";
    let mut stdin = producer.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    let mut out = std::io::BufReader::new(producer.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "holding");

    let (pg, url) = tb.fresh_database("transactions_open").await;
    let port = common::free_port();
    let mut consumer = common::consumer(&tb, &topic, &url, &[]);
    let consumer = consumer
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let db = open(&pg).await;
    let lag = format!("checksite_consumer_lag{{topic=\"{topic}\",partition=\"0\"}}");
    let end = format!("checksite_consumer_log_end_offset{{topic=\"{topic}\",partition=\"0\"}}");
    // All that can be read is stored, and nothing is left to read: lag 0, the end at
    // the open transaction's first record (20 events and a commit marker before it).
    let started = std::time::Instant::now();
    loop {
        let stored: i64 = match db.query_one("SELECT count(*) FROM events", &[]).await {
            Ok(row) => row.get(0),
            Err(_) => 0, // not migrated yet
        };
        let (_, m) = common::http_get_when_up(port, "/metrics").await;
        if stored == 20 && sample(&m, &lag) == Some(0.0) {
            assert_eq!(sample(&m, &end), Some(21.0), "{m}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{stored} stored; not lag 0 while a transaction is open: {m}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Committed, its 15 events are stored.
    stdin.write_all(b"go\t-\t-\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(
        producer.wait().unwrap().success() && rest.contains("done"),
        "{rest}"
    );
    common::wait_stored_and_folded(&db, 35).await;
    common::stop(consumer, Duration::from_secs(30)).await;
}
