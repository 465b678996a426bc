//! Alerts when the set of vantage points changes, and when what they report is unusual:
//! a producer replaced during an outage (a new container, a new name), every vantage
//! point falling silent, two certificates served in turn, URLs of 8 KB, and rollups that
//! PostgreSQL refuses. Real
//! producers where a site is checked, the test bed's Kafka (mutual TLS) and PostgreSQL,
//! and a local webhook receiver.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::raw_site::{self, Request, Step, whole};
use common::webhook::{Answer, Receiver};
use common::{Listener, query_i64};
use tokio::process::{Child, Command};

const PRODUCER: &str = env!("CARGO_BIN_EXE_checksite-producer");

fn producer(tb: &common::Testbed, topic: &str, id: &str, urls: &str) -> Child {
    Command::new(PRODUCER)
        .envs(tb.kafka_env(Listener::MutualTls, topic))
        .env("CK_SITE_URL", urls)
        .env("CK_CHECK_DELAY", "0.25")
        .env("CK_PRODUCER_ID", id)
        .env("CK_SITE_CA", tb.cert("ca.pem"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn alerting_consumer(
    tb: &common::Testbed,
    topic: &str,
    db_url: &str,
    receiver: u16,
    extra: &[(&str, &str)],
) -> Child {
    let mut cmd = common::consumer(tb, topic, db_url, &[]);
    cmd.env("CK_ALERT_WEBHOOK_URL", Receiver::url(receiver));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn kinds(delivered: &[serde_json::Value]) -> Vec<String> {
    delivered
        .iter()
        .map(|n| n["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// `/window/FROM/TO/...`: 503 from Unix ms FROM to TO, 200 otherwise (the rest of the
/// path and the query do not matter: a long URL can pad there).
fn down_between(r: &Request, _: u16) -> Vec<Step> {
    let mut parts = r.path.split(['/', '?']).skip(2);
    let mut at = || {
        parts
            .next()
            .and_then(|p| p.parse::<u128>().ok())
            .unwrap_or(0)
    };
    let (from, to) = (at(), at());
    if (from..to).contains(&unix_ms()) {
        whole("503 Service Unavailable", "", b"down for a while")
    } else {
        whole("200 OK", "", b"fine")
    }
}

#[tokio::test]
async fn a_producer_replaced_during_an_outage_ends_the_incident_with_one_up() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-replaced");
    let (_pg, db_url) = tb.fresh_database("alerts_replaced").await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Ok);
    let site = raw_site::serve(None, down_between);
    let now = unix_ms();
    // Down from now to 9 s from now, then up.
    let url = format!("http://127.0.0.1:{site}/window/{}/{}", now, now + 9_000);
    let consumer = alerting_consumer(&tb, &topic, &db_url, port, &[("CK_ALERT_STALE_AFTER", "3")]);
    let old = producer(&tb, &topic, "producer-old", &url);
    receiver.wait_for_ids(1, Duration::from_secs(30)).await;
    // Redeployed while the site is still down: the old name stops, a new one starts.
    common::stop(old, Duration::from_secs(20)).await;
    let new = producer(&tb, &topic, "producer-new", &url);
    let started = Instant::now();
    receiver.wait_for_ids(2, Duration::from_secs(40)).await;
    // Anything decided twice would show by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    common::stop(new, Duration::from_secs(20)).await;
    common::stop(consumer, Duration::from_secs(30)).await;
    let delivered = receiver.delivered();
    assert_eq!(kinds(&delivered), ["down", "up"], "{delivered:#?}");
    assert_eq!(
        delivered[0]["producers"],
        serde_json::json!(["producer-old"])
    );
    assert_eq!(
        delivered[1]["producers"],
        serde_json::json!(["producer-new"])
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the up came {:?} after the new producer started",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_incident_nobody_reports_on_any_more_closes_once_as_stale() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-stale");
    let (pg, db_url) = tb.fresh_database("alerts_stale").await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Ok);
    let url = "https://gone-quiet.example/";
    let start = Utc::now() - TimeDelta::seconds(5);
    let mut records = Vec::new();
    for i in 0..4 {
        for p in ["eu", "us"] {
            let mut ev = common::sample_event(url, i);
            ev.producer = p.to_string();
            ev.checked_at = start + TimeDelta::seconds(i as i64);
            ev.up = Some(false);
            ev.status = Some(503);
            records.push((url.as_bytes().to_vec(), Some(ev.to_json()), ev.checked_at));
        }
    }
    common::produce_timed(&tb, &topic, 3, records).await;
    let page = common::free_port();
    let address = format!("127.0.0.1:{page}");
    let consumer = alerting_consumer(
        &tb,
        &topic,
        &db_url,
        port,
        &[("CK_ALERT_STALE_AFTER", "5"), ("CK_HTTP_ADDR", &address)],
    );
    let delivered = receiver.wait_for_ids(2, Duration::from_secs(40)).await;
    assert_eq!(kinds(&delivered), ["down", "stale"], "{delivered:#?}");
    let stale = &delivered[1];
    assert_eq!(stale["producers"], serde_json::json!(["eu", "us"]));
    assert_eq!(stale["url"], url);
    // The page shows both series as without news, neither up nor down.
    let json = common::api_status_as_of(page, Utc::now()).await;
    let api: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sites = api["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 2, "{json}");
    assert!(sites.iter().all(|s| s["stale"] == true), "{json}");
    assert_eq!(api["incidents"], serde_json::json!([]), "{json}");
    assert_eq!(api["targets"][0]["state"], "no_data", "{json}");
    let (_, html) = common::http_get_when_up(page, "/").await;
    assert!(html.contains(">0 down</span>"), "{html}");
    assert!(html.contains(">1 without data</span>"), "{html}");
    // One more sweep (every 10 s): nothing decided again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    common::stop(consumer, Duration::from_secs(30)).await;
    assert_eq!(kinds(&receiver.delivered()), ["down", "stale"]);
    let db = common::open(&pg).await;
    assert_eq!(query_i64(&db, "SELECT count(*) FROM alert_outbox").await, 2);
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM alert_sites WHERE down").await,
        0
    );
}

#[tokio::test]
async fn two_certificates_served_in_turn_warn_once() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-certs");
    let (_pg, db_url) = tb.fresh_database("alerts_certs").await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Ok);
    // Two backends behind one name, each with a certificate expiring within 14 days.
    let configs = ["site-soon-a", "site-soon-b"]
        .iter()
        .map(|c| {
            common::sites::tls_server_config(
                &tb.certs.join(format!("{c}.cert")),
                &tb.certs.join(format!("{c}.key")),
            )
        })
        .collect();
    let site = raw_site::serve_in_turn(configs, |_, _| whole("200 OK", "", b"fine"));
    let url = format!("https://localhost:{site}/");
    let consumer = alerting_consumer(&tb, &topic, &db_url, port, &[]);
    let checking = producer(&tb, &topic, "eu", &url);
    receiver.wait_for_ids(1, Duration::from_secs(30)).await;
    // 24 more checks (12 alternations) at 0.25 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    common::stop(checking, Duration::from_secs(20)).await;
    // Their decisions have been made by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    common::stop(consumer, Duration::from_secs(30)).await;
    let delivered = receiver.delivered();
    assert_eq!(kinds(&delivered), ["cert_expiring"], "{delivered:#?}");
}

#[tokio::test]
async fn a_url_of_8000_bytes_has_rollups_a_card_and_alerts() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-long-url");
    let (pg, db_url) = tb.fresh_database("alerts_long_url").await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Ok);
    let site = raw_site::serve(None, down_between);
    let now = unix_ms();
    let head = format!(
        "http://127.0.0.1:{site}/window/{}/{}?sig=",
        now,
        now + 3_000
    );
    // A pre-signed URL's signature: random letters and digits, which do not compress.
    let mut random = vec![0u8; 8_000];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).unwrap();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let pad: String = random
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let url = format!("{head}{pad}");
    let url = &url[..8_000];
    // From another producer: a URL over 8192 bytes is stored, and kept out of the rest.
    let too_long = format!("https://example.com/?q={}", "x".repeat(9_000));
    let mut ev = common::sample_event(&too_long, 1);
    ev.up = Some(false);
    let at = ev.checked_at;
    common::produce_timed(
        &tb,
        &topic,
        3,
        vec![(too_long.clone().into_bytes(), Some(ev.to_json()), at)],
    )
    .await;
    let page = common::free_port();
    let address = format!("127.0.0.1:{page}");
    let mut consumer = alerting_consumer(&tb, &topic, &db_url, port, &[("CK_HTTP_ADDR", &address)]);
    let checking = producer(&tb, &topic, "eu", url);
    receiver.wait_for_ids(2, Duration::from_secs(40)).await;
    common::stop(checking, Duration::from_secs(20)).await;
    let delivered = receiver.delivered();
    assert_eq!(kinds(&delivered), ["down", "up"]);
    assert!(delivered.iter().all(|n| n["url"] == url));
    // Past the fold and the page's 2 s cache.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let json = common::api_status_as_of(page, Utc::now()).await;
    let api: serde_json::Value = serde_json::from_str(&json).unwrap();
    let card = api["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == common::target_id(url))
        .unwrap_or_else(|| panic!("no card for the long URL: {json}"));
    // Its signature is a query value: not shown.
    assert_eq!(card["url"], format!("{head}…"), "{json}");
    assert!(!json.contains(&url[head.len()..head.len() + 100]));
    let uptime = card["uptime_24h"].as_f64().unwrap();
    assert!(uptime > 0.0 && uptime < 100.0, "{uptime}");
    assert!(!json.contains(&too_long));
    let db = common::open(&pg).await;
    let rows = |sql: &'static str| {
        let db = &db;
        async move { query_i64(db, sql).await }
    };
    assert_eq!(
        rows("SELECT count(*) FROM events WHERE length(url) > 8192").await,
        1
    );
    assert_eq!(
        rows("SELECT count(*) FROM rollups_hourly WHERE length(url) > 8192").await,
        0
    );
    assert_eq!(
        rows("SELECT count(*) FROM alert_sites WHERE length(url) > 8192").await,
        0
    );
    assert_eq!(rows("SELECT count(*) FROM rollup_deltas").await, 0);
    // Every stored check of the long URL counted in the rollups.
    let stored = rows("SELECT count(*) FROM events WHERE length(url) = 8000").await;
    let rolled =
        rows("SELECT sum(checks)::bigint FROM rollups_hourly WHERE length(url) = 8000").await;
    assert_eq!(stored, rolled);
    common::terminate(&consumer);
    let out = tokio::time::timeout(Duration::from_secs(30), consumer.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(out.success());
    let mut log = String::new();
    if let Some(mut stderr) = consumer.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = stderr.read_to_string(&mut log).await;
    }
    assert_eq!(
        log.matches("left out of rollups and alerts").count(),
        1,
        "{log}"
    );
}

#[tokio::test]
async fn a_series_postgres_refuses_never_stops_the_fold() {
    let tb = testbed_or_skip!();
    let topic = common::unique("fold-refused");
    let (pg, db_url) = tb.fresh_database("fold_refused").await;
    let mut db = common::open(&pg).await;
    checksite::consumer::store::migrate(&mut db).await.unwrap();
    // A rule a DBA added: rows of this URL are refused (as an index entry too large was).
    db.batch_execute(
        "ALTER TABLE rollups_hourly ADD CONSTRAINT no_refused_url CHECK (url <> 'https://refused.example/')",
    )
    .await
    .unwrap();
    let start = Utc::now() - TimeDelta::minutes(10);
    let mut records = Vec::new();
    for i in 0..300u32 {
        let url = if i % 50 == 7 {
            "https://refused.example/".to_string()
        } else {
            format!("https://site-{}.example/", i % 20)
        };
        let mut ev = common::sample_event(&url, u64::from(i));
        ev.checked_at = start + TimeDelta::seconds(i64::from(i));
        records.push((url.into_bytes(), Some(ev.to_json()), ev.checked_at));
    }
    common::produce_timed(&tb, &topic, 3, records).await;
    let out = common::consumer(&tb, &topic, &db_url, &["--drain"])
        .output()
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, 300);
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM rollup_deltas").await,
        0,
        "{log}"
    );
    // The refused URL's one series (one vantage point) is kept aside with the reason.
    let rejects = db
        .query(
            "SELECT series->'series'->0->>'url', reason FROM rollup_rejects",
            &[],
        )
        .await
        .unwrap();
    assert!(!rejects.is_empty(), "{log}");
    for r in &rejects {
        assert_eq!(r.get::<_, String>(0), "https://refused.example/");
        assert!(
            r.get::<_, String>(1).contains("no_refused_url"),
            "{}",
            r.get::<_, String>(1)
        );
    }
    // Every other series is folded, to the check.
    let folded = query_i64(
        &db,
        "SELECT sum(checks)::bigint FROM rollups_hourly WHERE url <> 'https://refused.example/'",
    )
    .await;
    assert_eq!(folded, 294);
    assert!(log.contains("finding the series at fault"), "{log}");
}
