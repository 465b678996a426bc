//! checksite-producer publishing to the test bed's Kafka over mutual TLS and SASL/SCRAM:
//! events in the partition the Java client would choose, with exactly the documented JSON.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Listener, sites};

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

async fn publish_for(
    tb: &common::Testbed,
    listener: Listener,
    run_for: Duration,
) -> (String, Vec<String>) {
    let topic = common::unique("producer");
    let site = sites::http_site();
    let urls = vec![
        format!("{site}/ok"),
        format!("{site}/404"),
        sites::refused_site(),
    ];
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.envs(tb.kafka_env(listener, &topic))
        .env("CK_SITE_URL", urls.join(" "))
        .env("CK_CHECK_DELAY", "0.3")
        .env("CK_PRODUCER_ID", "test-vantage")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(run_for).await;
    common::stop(child, Duration::from_secs(20)).await;
    (topic, urls)
}

/// The v1 event's fields as the README lists them.
const FIELDS: [&str; 21] = [
    "v",
    "id",
    "url",
    "checked_at",
    "elapsed_ms",
    "status",
    "error",
    "error_kind",
    "content_match",
    "body_prefix",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "ttfb_ms",
    "bytes",
    "cert_expires_at",
    "ip",
    "body_sha256",
    "schedule_lag_ms",
    "producer",
    "up",
];

async fn check_topic(tb: &common::Testbed, topic: &str, urls: &[String], min_per_url: usize) {
    let records = common::read_topic(tb, topic).await;
    // librdkafka's murmur2 partitioner (Java's) puts each key where checksite did.
    let Some(oracle) = common::kcat_partitions(tb, urls, 3).await else {
        return;
    };
    assert_eq!(oracle.len(), urls.len(), "kcat placed every key");
    let mut ids = HashSet::new();
    for url in urls {
        let n = records.iter().filter(|r| &r.2 == url).count();
        assert!(n >= min_per_url, "{url}: {n} events, want >= {min_per_url}");
    }
    for (partition, _, key, value) in &records {
        assert_eq!(
            Some(partition),
            oracle.get(key),
            "{key} in the Java partitioner's partition (as kcat puts it)"
        );
        let json: serde_json::Value = serde_json::from_slice(value).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        let mut want = FIELDS.to_vec();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(json["url"], key.as_str());
        assert_eq!(json["producer"], "test-vantage");
        assert!(
            ids.insert(json["id"].as_str().unwrap().to_string()),
            "id published twice"
        );
    }
}

#[tokio::test]
async fn publishes_over_mutual_tls() {
    let tb = testbed_or_skip!();
    let (topic, urls) = publish_for(&tb, Listener::MutualTls, Duration::from_secs(4)).await;
    check_topic(&tb, &topic, &urls, 5).await;
}

#[tokio::test]
async fn publishes_over_sasl_every_mechanism() {
    let tb = testbed_or_skip!();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let (topic, urls) =
            publish_for(&tb, Listener::Sasl(mechanism), Duration::from_secs(3)).await;
        check_topic(&tb, &topic, &urls, 4).await;
    }
}

#[tokio::test]
async fn sigterm_publishes_the_checks_in_flight() {
    let tb = testbed_or_skip!();
    let topic = common::unique("sigterm");
    let site = sites::http_site();
    // 10 targets at 1 s on a site that answers in 2 s: at SIGTERM (3.5 s) the second
    // round of checks is under way, and its events must reach the topic too.
    let urls: Vec<String> = (0..10).map(|i| format!("{site}/slow/2000?t={i}")).collect();
    let child = tokio::process::Command::new(BIN)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_SITE_URL", urls.join(" "))
        .env("CK_CHECK_DELAY", "1")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let log = common::stop(child, Duration::from_secs(30)).await;
    let events = common::read_topic(&tb, &topic).await;
    assert_eq!(events.len(), 20, "two rounds of 10 checks: {log}");
    assert!(log.contains("20 event(s) published, 0 dropped"), "{log}");
}

#[tokio::test]
async fn a_backlog_larger_than_a_kafka_request_is_published_in_order() {
    use checksite::producer::config::{Compression, PublishSettings};
    use checksite::producer::metrics::ProducerMetrics;
    use checksite::producer::outbox::{self, Outbox};
    use std::sync::Arc;
    let tb = testbed_or_skip!();
    let topic = common::unique("backlog");
    // 6,000 events of ~1.2 KB on one partition, uncompressed: ~7 MB, seven times the
    // broker's largest request (message.max.bytes, 1 MiB by default).
    let outbox = Outbox::new(10_000);
    let url = "https://one-partition.example/";
    for n in 0..6_000u64 {
        let mut ev = common::sample_event(url, n);
        ev.body_prefix = Some(format!("{n:06}{}", "x".repeat(1_000)));
        outbox.push(ev);
    }
    let settings = PublishSettings {
        kafka: tb.kafka(Listener::Plaintext, &topic),
        partitions: 1,
        replication: -1,
        compression: Compression::None,
        buffer_events: 10_000,
        linger: Duration::from_millis(0),
        spool: None,
    };
    let metrics = Arc::new(ProducerMetrics::new("test", outbox.clone()));
    outbox.close();
    tokio::time::timeout(
        Duration::from_secs(60),
        outbox::publish(outbox.clone(), settings, metrics, Duration::from_secs(30)),
    )
    .await
    .expect("the backlog is published within 60 s");
    assert_eq!((outbox.published(), outbox.dropped()), (6_000, 0));
    let records = common::read_topic(&tb, &topic).await;
    let order: Vec<u64> = records
        .iter()
        .map(|(_, _, _, value)| {
            let json: serde_json::Value = serde_json::from_slice(value).unwrap();
            json["body_prefix"].as_str().unwrap()[..6].parse().unwrap()
        })
        .collect();
    assert_eq!(
        order,
        (0..6_000).collect::<Vec<u64>>(),
        "all, once, in order"
    );
}
