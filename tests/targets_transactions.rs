//! A targets topic (`CK_TARGETS_TOPIC`) written in Kafka transactions by librdkafka (the
//! reference producer, tests/transactional_producer.py): `checksite-producer targets
//! list` shows what librdkafka's read-committed consumer (kcat) reads, an aborted
//! transaction's entries left out, and its markers passed.

mod common;

use common::Listener;

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

#[test]
fn a_list_written_in_transactions_is_read_as_committed() {
    let Some(tb) = common::testbed() else {
        return;
    };
    let Some(kcat) = common::debian_program("kcat") else {
        return;
    };
    if !common::confluent_kafka() {
        return;
    }
    let list = common::unique("list-transactions");
    let entry = |name: &str| format!(r#"{{"url":"https://{name}.example/","interval_s":30}}"#);
    let url = |name: &str| format!("https://{name}.example/");
    // a and b committed; c aborted; d plain; b removed (an empty value) in a commit.
    let lines = [
        ("0 commit", url("a"), entry("a")),
        ("0 commit", url("b"), entry("b")),
        ("1 abort", url("c"), entry("c")),
        ("plain", url("d"), entry("d")),
        ("2 commit", url("b"), String::new()),
    ];
    let input: String = lines
        .iter()
        .map(|(kind, key, value)| format!("{kind}\t{key}\t{value}\n"))
        .collect();
    common::produce_with_transactions(&tb.kafka_plaintext, &list, 1, &input);

    // The reference: the last value of each key, as read committed.
    let out = std::process::Command::new(kcat)
        .args(["-C", "-b", &tb.kafka_plaintext, "-t", &list, "-e", "-q"])
        .args(["-f", "%k\t%s\n", "-X", "isolation.level=read_committed"])
        .output()
        .expect("kcat");
    let mut by_kcat = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (key, value) = line.split_once('\t').unwrap_or((line, ""));
        by_kcat.insert(key.to_string(), value.to_string());
    }
    by_kcat.retain(|_, v| !v.is_empty());
    let expected: Vec<String> = by_kcat.keys().cloned().collect();
    assert_eq!(expected, [url("a"), url("d")], "the reference's premise");

    let listed = std::process::Command::new(BIN)
        .args(["targets", "list"])
        .env_clear()
        .envs(tb.kafka_env(Listener::MutualTls, "unused"))
        .env("CK_TARGETS_TOPIC", &list)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(listed.status.success(), "targets list failed: {stderr}");
    let shown: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("targets list prints JSON");
    let urls: Vec<&str> = shown
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["url"].as_str())
        .collect();
    assert_eq!(urls, expected, "{shown}");
}
