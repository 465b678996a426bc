//! The disk spool (`CK_SPOOL_DIR`) against the test bed: Kafka stopped, 200 targets
//! checked, the producer killed (SIGKILL, then separately SIGTERM), Kafka started, the
//! producer started again on the same spool: every check the site answered before the
//! kill is in the topic, and the consumer stores each once. And one spool, one producer.
//! (The torn-record and full-spool cases are the spool module's own tests.)

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Listener;

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

fn producer(
    tb: &common::Testbed,
    topic: &str,
    targets: &std::path::Path,
    spool: &std::path::Path,
    buffer_events: usize,
) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .envs(tb.kafka_env(Listener::MutualTls, topic))
        .env("CK_TARGETS", targets)
        .env("CK_BUFFER_EVENTS", buffer_events.to_string())
        .env("CK_SPOOL_DIR", spool)
        .env("CK_PRODUCER_ID", "spooled")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// One outage: Kafka stopped, checks for `seconds`, the producer stopped by `signal`,
/// Kafka started, the producer started again on its spool. Every request the site answered
/// 100 ms before the stop has its event in the topic; the consumer stores each id once.
/// With `buffer_events` below what the outage brings, most events wait on disk only.
async fn outage_then_restart(
    tb: &common::Testbed,
    signal: &str,
    seconds: u64,
    buffer_events: usize,
) {
    let topic = common::unique("spool");
    let (port, seen) = common::sites::recording_site();
    let dir = std::env::temp_dir().join(common::unique("spool-test"));
    std::fs::create_dir_all(&dir).unwrap();
    let targets: Vec<serde_json::Value> = (0..200)
        .map(|i| serde_json::json!({"url": format!("http://127.0.0.1:{port}/t/{i}"), "interval_s": 1}))
        .collect();
    let targets_file = dir.join("targets.json");
    std::fs::write(&targets_file, serde_json::Value::from(targets).to_string()).unwrap();
    let spool = dir.join("spool");
    // The topic exists first: the events' partitions are known.
    common::produce_raw(tb, &topic, 3, vec![]).await;
    common::testbed_script("stop-kafka");
    // Kafka comes back whatever happens here (a failing assertion too).
    let _kafka_back = common::BackOnPanic("start-kafka");
    let first = producer(tb, &topic, &targets_file, &spool, buffer_events);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let pid = first.id().unwrap().to_string();
    let stopped_at = Utc::now();
    assert!(
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let ended = tokio::time::timeout(Duration::from_secs(30), first.wait_with_output())
        .await
        .expect("the producer ends")
        .unwrap();
    let log = String::from_utf8_lossy(&ended.stderr).into_owned();
    common::testbed_script("start-kafka");
    let answered: Vec<(String, DateTime<Utc>)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < stopped_at - chrono::TimeDelta::milliseconds(100))
        .cloned()
        .collect();
    assert!(
        answered.len() >= 200 * (seconds as usize - 2),
        "{} checks",
        answered.len()
    );
    let mut wanted: HashMap<String, usize> = HashMap::new();
    for (path, _) in &answered {
        *wanted.entry(path.clone()).or_default() += 1;
    }
    let again = producer(tb, &topic, &targets_file, &spool, buffer_events);
    // Until every answered check is in the topic (at most 30 s), not a fixed wait: the
    // spool is published in a second or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let published = loop {
        let (published, _) = published_before(tb, &topic, port, stopped_at).await;
        let short = wanted
            .iter()
            .any(|(path, n)| published.get(path).copied().unwrap_or(0) < *n);
        if !short || std::time::Instant::now() >= deadline {
            break published;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log_again = common::stop(again, Duration::from_secs(30)).await;
    assert!(
        log_again.contains("spool:") && log_again.contains("from before the start"),
        "{log_again}"
    );
    // Per URL: every answered request's check made before the stop is in the topic.
    for (path, n) in &wanted {
        let got = published.get(path).copied().unwrap_or(0);
        assert!(
            got >= *n,
            "{signal}: {path}: {n} answered before the stop, {got} in the topic; log: {log}"
        );
    }
    // Every id in the topic once the producer stopped: each stored once.
    let (_, ids) = published_before(tb, &topic, port, stopped_at).await;
    // The consumer stores each id once.
    let (pg, db_url) = tb.fresh_database("spool").await;
    let out = common::drain(tb, &topic, &db_url).await;
    let db = common::open(&pg).await;
    let stored = common::query_i64(&db, "SELECT count(*) FROM events").await;
    let distinct = common::query_i64(&db, "SELECT count(DISTINCT check_id) FROM events").await;
    assert_eq!(
        (stored, distinct),
        (ids.len() as i64, ids.len() as i64),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The topic's events made before `stopped_at`, counted per path, and every id in it.
async fn published_before(
    tb: &common::Testbed,
    topic: &str,
    port: u16,
    stopped_at: DateTime<Utc>,
) -> (HashMap<String, usize>, HashSet<String>) {
    let mut published: HashMap<String, usize> = HashMap::new();
    let mut ids = HashSet::new();
    for (_, _, _, value) in common::read_topic(tb, topic).await {
        let ev: serde_json::Value = serde_json::from_slice(&value).unwrap();
        ids.insert(ev["id"].as_str().unwrap().to_string());
        let at: DateTime<Utc> = ev["checked_at"].as_str().unwrap().parse().unwrap();
        if at < stopped_at - chrono::TimeDelta::milliseconds(50) {
            let path = ev["url"]
                .as_str()
                .unwrap()
                .split(&format!("{port}"))
                .nth(1)
                .unwrap()
                .to_string();
            *published.entry(path).or_default() += 1;
        }
    }
    (published, ids)
}

#[tokio::test]
async fn a_restart_during_a_kafka_outage_loses_nothing() {
    let tb = testbed_or_skip!();
    // One after the other: each stops the broker.
    outage_then_restart(&tb, "-KILL", 10, 100_000).await;
    // A memory buffer of 100 events: ~1,100 of the ~1,200 wait on disk only.
    outage_then_restart(&tb, "-TERM", 6, 100).await;
}

#[tokio::test]
async fn one_spool_one_producer() {
    let tb = testbed_or_skip!();
    let dir = std::env::temp_dir().join(common::unique("spool-lock"));
    let env = tb.kafka_env(Listener::MutualTls, "spool-lock");
    let start = || {
        tokio::process::Command::new(BIN)
            .envs(env.iter().cloned())
            .env("CK_SITE_URL", "http://127.0.0.1:9/")
            .env("CK_SPOOL_DIR", &dir)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let first = start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = start().wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("another producer uses this spool"), "{err}");
    common::stop(first, Duration::from_secs(20)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_while_kafka_accepts_and_never_answers_exits_within_the_grace() {
    // A "broker" that takes connections and never says a word: a connection attempt to it
    // waits for its own timeouts (~20 s), the exit must not.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().flatten().collect();
        drop(held);
    });
    let dir = std::env::temp_dir().join(common::unique("spool-silent"));
    let producer = tokio::process::Command::new(BIN)
        .env("CK_KAFKA_SERVERS", format!("127.0.0.1:{port}"))
        .env("CK_KAFKA_TOPIC", "silent")
        .env("CK_SITE_URL", "http://127.0.0.1:9/")
        .env("CK_SPOOL_DIR", &dir)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    // GRACE (10 s) for the flush, and a second of slack.
    let log = common::stop(producer, Duration::from_secs(11)).await;
    assert!(started.elapsed() >= Duration::from_secs(9), "{log}");
    assert!(log.contains("kept in the spool"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
