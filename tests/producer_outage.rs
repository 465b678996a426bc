//! The broker goes away for 30 s while the producer keeps checking: once it is back,
//! every check made meanwhile is in the topic, none twice.
//!
//! Its own test binary: cargo runs test binaries one at a time, so taking the broker away
//! here cannot disturb the other tests.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Listener, sites};

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

#[tokio::test]
async fn broker_away_for_30s_loses_nothing() {
    let tb = testbed_or_skip!();
    let topic = common::unique("outage");
    let site = sites::http_site();
    let urls = [format!("{site}/ok"), format!("{site}/500")];
    let interval = 0.5;
    let child = tokio::process::Command::new(BIN)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_SITE_URL", urls.join(" "))
        .env("CK_CHECK_DELAY", interval.to_string())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    common::testbed_script("stop-kafka");
    tokio::time::sleep(Duration::from_secs(30)).await;
    common::testbed_script("start-kafka");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let log = common::stop(child, Duration::from_secs(20)).await;
    assert!(
        log.contains("buffering events"),
        "the outage is logged: {log}"
    );

    let records = common::read_topic(&tb, &topic).await;
    let mut ids = HashSet::new();
    for url in &urls {
        let mut times: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
        for (_, _, key, value) in records.iter().filter(|r| &r.2 == url) {
            let json: serde_json::Value = serde_json::from_slice(value).unwrap();
            assert!(
                ids.insert(json["id"].as_str().unwrap().to_string()),
                "an event is in the topic twice"
            );
            times.push(json["checked_at"].as_str().unwrap().parse().unwrap());
            assert_eq!(key, url);
        }
        times.sort();
        // ~45 s of checking at 0.5 s: about 90 checks, with no hole where the broker was away.
        assert!(times.len() >= 80, "{url}: only {} events", times.len());
        for pair in times.windows(2) {
            let gap = (pair[1] - pair[0]).num_milliseconds();
            assert!(
                gap < 900,
                "{url}: a {gap} ms hole between {} and {}",
                pair[0],
                pair[1]
            );
        }
    }
}
