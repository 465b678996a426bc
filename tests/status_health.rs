//! Health never waits for the page: with 200 visitors holding page connections (half of
//! them reading a large `/api/status` a byte now and then, half sending nothing), the
//! consumer's `/healthz`, `/readyz` and `/metrics` still answer at once; a separate
//! `CK_STATUS_ADDR` serves only the pages, and `CK_HTTP_ADDR` then only the metrics and
//! health.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The time `path` takes to answer on `port`, and its status.
fn timed_get(port: u16, path: &str) -> (Duration, u16) {
    let started = Instant::now();
    let status = common::http_get(port, path).map_or(0, |(s, _)| s);
    (started.elapsed(), status)
}

#[tokio::test]
async fn health_answers_at_once_while_visitors_hold_the_page() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status-health");
    let (pg, db_url) = tb.fresh_database("status_health").await;
    // Enough series for an /api/status of several MB: larger than a socket's buffers.
    let n = common::produce_events(&tb, &topic, 3, 12_000, 6_000).await as i64;
    let port = common::free_port();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let db = common::open(&pg).await;
    let started = Instant::now();
    // (Until the consumer has made its tables, the queries fail: not there yet.)
    let count = async |sql: &str| {
        db.query_one(sql, &[])
            .await
            .map_or(-1, |r| r.get::<_, i64>(0))
    };
    while count("SELECT count(*) FROM rollup_deltas").await != 0
        || count("SELECT count(*) FROM events").await < n
    {
        assert!(started.elapsed() < Duration::from_secs(60), "not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = common::api_status_as_of(port, chrono::Utc::now()).await;
    assert!(
        body.len() > 2_000_000,
        "/api/status is {} bytes",
        body.len()
    );
    // 100 slow readers of /api/status, 100 that open a connection and say nothing.
    let mut held = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut byte = [0u8; 1];
            let _ = s.read(&mut byte);
        }
        held.push(s);
    }
    let mut times = Vec::new();
    for _ in 0..10 {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let (took, status) = timed_get(port, path);
            assert_eq!(status, 200, "{path} while the page is held");
            times.push(took);
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    eprintln!("health while 200 visitors hold the page: median {median:?}, worst {worst:?}");
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");
    drop(held);
    common::stop(consumer, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_status_address_of_its_own_serves_only_the_pages() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status-addr");
    let (_pg, db_url) = tb.fresh_database("status_addr").await;
    common::produce_events(&tb, &topic, 1, 10, 2).await;
    let (http, status) = (common::free_port(), common::free_port());
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("CK_STATUS_ADDR", format!("127.0.0.1:{status}"))
        .spawn()
        .unwrap();
    assert_eq!(common::http_get_when_up(http, "/healthz").await.0, 200);
    assert_eq!(common::http_get_when_up(http, "/metrics").await.0, 200);
    assert_eq!(common::http_get_when_up(http, "/").await.0, 404);
    assert_eq!(common::http_get_when_up(status, "/healthz").await.0, 404);
    assert_eq!(common::http_get_when_up(status, "/metrics").await.0, 404);
    // The page answers once the consumer has made its tables.
    let started = Instant::now();
    let page = loop {
        match common::http_get(status, "/") {
            Some((200, page)) => break page,
            other => assert!(started.elapsed() < Duration::from_secs(30), "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains("checksite status"));
    common::stop(consumer, Duration::from_secs(30)).await;
}
