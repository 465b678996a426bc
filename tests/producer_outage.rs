//! The broker hangs for 8 s, then goes away for 15 s, while the producer keeps checking:
//! each outage is said when it starts and when it ends, and once the broker is back every
//! check made meanwhile is in the topic, none twice.
//!
//! Its own test binary: cargo runs test binaries one at a time, so taking the broker away
//! here cannot disturb the other tests.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use common::Listener;
use common::raw_site::{self, Request, Step, whole};

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

/// Requests the site received, per path: what the producer's events are counted against.
static RECEIVED: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn counting_site(r: &Request, _: u16) -> Vec<Step> {
    *RECEIVED.lock().unwrap().entry(r.path.clone()).or_default() += 1;
    match r.path.as_str() {
        "/ok" => whole("200 OK", "", b"fine"),
        _ => whole("500 Internal Server Error", "", b"boom"),
    }
}

#[tokio::test]
async fn broker_hung_then_away_loses_nothing_and_says_so() {
    let tb = testbed_or_skip!();
    let topic = common::unique("outage");
    let site = format!("http://127.0.0.1:{}", raw_site::serve(None, counting_site));
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
    // Hung (a long GC pause, a frozen VM): its connections stay open and nothing answers.
    // 8 s: past the producer's 5 s, under the broker's 9 s session timeout (it wakes as it was).
    common::testbed_script("pause-kafka");
    tokio::time::sleep(Duration::from_secs(8)).await;
    common::testbed_script("resume-kafka");
    tokio::time::sleep(Duration::from_secs(2)).await;
    common::testbed_script("stop-kafka");
    // 30 checks a URL meanwhile, well past a connection's first retries.
    tokio::time::sleep(Duration::from_secs(15)).await;
    common::testbed_script("start-kafka");
    // Until the checks made while the broker was away are in the topic (at most 30 s),
    // not a fixed wait.
    let made_meanwhile = RECEIVED.lock().unwrap().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let records = common::read_topic(&tb, &topic).await;
        let caught_up = urls.iter().zip(["/ok", "/500"]).all(|(url, path)| {
            let ids: HashSet<&[u8]> = records
                .iter()
                .filter(|r| &r.2 == url)
                .map(|r| r.3.as_slice())
                .collect();
            ids.len() >= made_meanwhile.get(path).copied().unwrap_or(0)
        });
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = common::stop(child, Duration::from_secs(20)).await;
    // Both ends of the outage are said, whether or not a request failed meanwhile (rskafka
    // retries a broker that went away inside the request, for up to ~25 s, without an
    // error reaching the producer).
    assert!(
        log.contains("Kafka has not answered a produce request for 5 s"),
        "the hung broker is logged: {log}"
    );
    assert!(
        log.matches("buffering events").count() >= 2,
        "both outages are logged: {log}"
    );
    assert!(
        log.matches("Kafka is back: delivering").count() >= 2,
        "the broker's return is logged, both times: {log}"
    );

    // Nothing lost: every check the producer made is in the topic. A produce request the
    // broker wrote but could not answer as it stopped is sent again (no idempotent producer,
    // see the README): that event is then in the topic twice, same id, and the consumer
    // stores it once. So ids are counted, not records.
    let records = common::read_topic(&tb, &topic).await;
    let ids: HashSet<String> = records
        .iter()
        .map(|(_, _, _, value)| {
            let json: serde_json::Value = serde_json::from_slice(value).unwrap();
            json["id"].as_str().unwrap().to_string()
        })
        .collect();
    let stopped = log
        .lines()
        .find_map(|l| l.split_once("stopped: ").map(|(_, said)| said.to_string()))
        .expect("the producer says what it made and published");
    assert_eq!(
        stopped,
        format!(
            "{n} check(s) made, {n} event(s) published, 0 dropped",
            n = ids.len()
        ),
        "{log}"
    );
    assert!(
        records.len() - ids.len() <= 5,
        "{} records for {} events: more than a retried request's worth",
        records.len(),
        ids.len()
    );
    // Independently of the producer's own count: one event (id) per request the site got.
    let received = RECEIVED.lock().unwrap().clone();
    for (url, path) in urls.iter().zip(["/ok", "/500"]) {
        let ids_of_url: HashSet<String> = records
            .iter()
            .filter(|r| &r.2 == url)
            .filter_map(|(_, _, _, value)| {
                let json: serde_json::Value = serde_json::from_slice(value).ok()?;
                Some(json["id"].as_str()?.to_string())
            })
            .collect();
        assert_eq!(
            ids_of_url.len(),
            received.get(path).copied().unwrap_or(0),
            "{url}: events in the topic against requests the site received"
        );
    }
    for url in &urls {
        // (checked_at, the event): a hole's two ends say whether one check overran (its
        // elapsed_ms) or the loop started late (the next one's schedule_lag_ms).
        let mut checks: Vec<(chrono::DateTime<chrono::Utc>, serde_json::Value)> = Vec::new();
        for (_, _, key, value) in records.iter().filter(|r| &r.2 == url) {
            let json: serde_json::Value = serde_json::from_slice(value).unwrap();
            let at = json["checked_at"].as_str().unwrap().parse().unwrap();
            checks.push((at, json));
            assert_eq!(key, url);
        }
        checks.sort_by_key(|c| c.0);
        checks.dedup_by_key(|c| c.0);
        // ~35 s of checking at 0.5 s (3 before, 8 hung, 2, 15 away, the broker's start and
        // the catching up): about 70 checks, and checking went on while the broker was away.
        // (A slot is skipped, not lost, when a check overruns: the broker's JVM starting
        // up takes this machine's two cores for a while.)
        assert!(checks.len() >= 50, "{url}: only {} events", checks.len());
        for pair in checks.windows(2) {
            let gap = (pair[1].0 - pair[0].0).num_milliseconds();
            assert!(
                gap < 2_500,
                "{url}: a {gap} ms hole between\n{}\nand\n{}\nproducer's log:\n{log}",
                pair[0].1,
                pair[1].1
            );
        }
    }
}
