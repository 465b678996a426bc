//! The producer's memory buffer when Kafka cannot be reached, through the binary: it
//! keeps checking, keeps the newest `CK_BUFFER_EVENTS` events, drops the oldest (counted
//! in `/metrics` and logged), and publishes what it kept once Kafka answers. Kafka is
//! reached through a gate of the test's (a TCP relay that refuses connections until it
//! is opened), so the broker itself is never touched.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Listener;
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

/// A relay on 127.0.0.1 to `upstream`: connections are closed at once until `open`.
async fn gate(upstream: String, open: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !open.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_and_publishes_the_rest() {
    let tb = testbed_or_skip!();
    let topic = common::unique("buffer");
    let open = Arc::new(AtomicBool::new(false));
    // The bootstrap goes through the gate; once open, the broker's metadata sends the
    // client to the broker itself.
    let port = gate(tb.kafka_plaintext.clone(), open.clone()).await;
    let site = common::sites::http_site();
    let http = common::free_port();
    let mut env = tb.kafka_env(Listener::Plaintext, &topic);
    env.retain(|(k, _)| k != "CK_KAFKA_SERVERS");
    let child = tokio::process::Command::new(BIN)
        .envs(env)
        .env("CK_KAFKA_SERVERS", format!("127.0.0.1:{port}"))
        .env("CK_SITE_URL", format!("{site}/ok"))
        .env("CK_CHECK_DELAY", "0.1")
        .env("CK_BUFFER_EVENTS", "10")
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // ~30 checks while Kafka cannot be reached: 10 kept, the rest dropped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = common::http_get_when_up(http, "/metrics").await;
    let made = sample(&metrics, "checksite_producer_checks_total{result=\"up\"}");
    let dropped = sample(&metrics, "checksite_producer_events_dropped_total");
    assert_eq!(
        sample(&metrics, "checksite_producer_events_buffered"),
        10.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "checksite_producer_events_published_total"),
        0.0
    );
    // (A check may be between its count and its buffer, or started and not ended, as
    // the scrape reads: one either way.)
    assert!((made - 11.0..=made - 10.0).contains(&dropped), "{metrics}");
    // Every check started has its lateness observed, once.
    let late = sample(
        &metrics,
        "checksite_producer_schedule_lateness_seconds_count",
    );
    assert!((made..=made + 1.0).contains(&late), "{metrics}");
    open.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = common::stop(child, Duration::from_secs(20)).await;
    assert!(
        log.contains("event buffer full (10 events, CK_BUFFER_EVENTS): dropping the oldest"),
        "{log}"
    );
    let records = common::read_topic(&tb, &topic).await;
    let mut times: Vec<chrono::DateTime<chrono::Utc>> = records
        .iter()
        .map(|(_, _, _, v)| {
            let ev: serde_json::Value = serde_json::from_slice(v).unwrap();
            ev["checked_at"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    times.sort();
    // What was dropped is the oldest: the topic holds every check from some moment on,
    // without a hole (checks every 0.1 s), and each check is published or dropped.
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(
            gap < 400,
            "a hole of {gap} ms after {}: not the oldest dropped",
            pair[0]
        );
    }
    let stopped = log
        .lines()
        .find_map(|l| l.split_once("stopped: ").map(|(_, s)| s.to_string()))
        .unwrap();
    let numbers: Vec<u64> = stopped
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [made_total, published, dropped_total] = numbers[..] else {
        panic!("{stopped}");
    };
    assert_eq!(published as usize, times.len(), "{stopped}");
    assert_eq!(published + dropped_total, made_total, "{stopped}");
    assert!(
        dropped_total as f64 >= dropped,
        "{stopped}: {dropped} dropped at 3 s"
    );
}
