//! `CK_HTTP_ADDR`: both programs scraped by a real Prometheus (Debian's `prometheus`) on
//! the test bed, their output checked by `promtool check metrics`, their health endpoints,
//! and the endpoint's behaviour with bad input (a busy address, hostile clients).

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Listener, http_get, sites};
use tokio::process::Command;

const PRODUCER: &str = env!("CARGO_BIN_EXE_checksite-producer");

/// Held by the tests that measure a rate or wait on a load, so that they do not share the
/// two cores with each other (a rate measured next to a 15,000-event drain says little).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Prometheus server of our own, scraping `targets` (job name, port) every second.
struct Prometheus {
    port: u16,
    _child: tokio::process::Child,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    fn start(binary: &std::path::Path, targets: &[(&str, u16)]) -> Prometheus {
        let dir = std::env::temp_dir().join(common::unique("prometheus"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, port) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = common::free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            port,
            _child: child,
            _dir: TempDir(dir),
        }
    }

    /// An instant query through the HTTP API: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(HashMap<String, String>, f64)> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let path = format!(
            "/api/v1/query?query={}",
            utf8_percent_encode(promql, NON_ALPHANUMERIC)
        );
        let Some((200, body)) = http_get(self.port, &path) else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut out = Vec::new();
        for r in json["data"]["result"].as_array().into_iter().flatten() {
            let labels = serde_json::from_value(r["metric"].clone()).unwrap();
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            out.push((labels, value));
        }
        out
    }

    /// Poll `promql` until `done` holds for its result (within `within`); the last result.
    async fn until(
        &self,
        promql: &str,
        within: Duration,
        done: impl Fn(&[(HashMap<String, String>, f64)]) -> bool,
    ) -> Vec<(HashMap<String, String>, f64)> {
        let start = Instant::now();
        loop {
            let result = self.query(promql);
            if done(&result) || start.elapsed() > within {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `promtool check metrics` on what the endpoint on `port` serves: no problem reported.
fn promtool_passes(promtool: &std::path::Path, port: u16) {
    use std::io::Write;
    let (status, body) = http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
}

fn value_of(result: &[(HashMap<String, String>, f64)], label: &str, value: &str) -> Option<f64> {
    result
        .iter()
        .find(|(l, _)| l.get(label).map(String::as_str) == Some(value))
        .map(|(_, v)| *v)
}

fn total(result: &[(HashMap<String, String>, f64)]) -> f64 {
    result.iter().map(|(_, v)| v).sum()
}

#[tokio::test]
async fn prometheus_scrapes_both_programs() {
    let tb = testbed_or_skip!();
    let _alone = HEAVY.lock().await;
    let Some(prometheus) = common::debian_program("prometheus") else {
        return;
    };
    let Some(promtool) = common::debian_program("promtool") else {
        return;
    };
    let topic = common::unique("metrics");
    let (db, db_url) = tb.fresh_database("metrics").await;
    let site = sites::http_site();
    let tls_site = sites::https_site(&tb.certs.join("server.cert"), &tb.certs.join("server.key"));
    let (up, down, tls_up) = (
        format!("{site}/ok"),
        sites::refused_site(),
        format!("{tls_site}/ok"),
    );
    let (producer_port, consumer_port) = (common::free_port(), common::free_port());
    let producer = Command::new(PRODUCER)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_SITE_URL", format!("{up} {down} {tls_up}"))
        .env("CK_SITE_CA", tb.cert("ca.pem"))
        .env("CK_CHECK_DELAY", "1")
        .env("CK_PRODUCER_ID", "vantage-1")
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{producer_port}"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{consumer_port}"))
        .spawn()
        .unwrap();
    let prom = Prometheus::start(
        &prometheus,
        &[("producer", producer_port), ("consumer", consumer_port)],
    );

    // The blackbox exporter's name and meaning: 1 for the site that answers, 0 for the other.
    let success = prom
        .until("probe_success", Duration::from_secs(60), |r| r.len() == 3)
        .await;
    assert_eq!(value_of(&success, "url", &up), Some(1.0), "{success:?}");
    assert_eq!(value_of(&success, "url", &down), Some(0.0), "{success:?}");
    assert_eq!(value_of(&success, "url", &tls_up), Some(1.0), "{success:?}");
    assert!(success.iter().all(|(l, _)| l["producer"] == "vantage-1"));
    let status = prom.query("probe_http_status_code");
    assert_eq!(value_of(&status, "url", &up), Some(200.0));
    assert_eq!(value_of(&status, "url", &down), Some(0.0));
    let expiry = prom.query("probe_ssl_earliest_cert_expiry - time()");
    let left = value_of(&expiry, "url", &tls_up).expect("cert expiry of the https site");
    assert!(left > 86_400.0, "the test certificate expires in {left} s?");
    assert!(
        value_of(&expiry, "url", &up).is_none(),
        "no certificate over http"
    );
    let phases = prom.query(&format!("probe_http_duration_seconds{{url=\"{tls_up}\"}}"));
    assert_eq!(
        phases.len(),
        5,
        "resolve, connect, tls, processing, transfer"
    );
    assert!(
        value_of(&phases, "phase", "tls").is_some_and(|s| s > 0.0),
        "{phases:?}"
    );
    let errors =
        prom.query("checksite_producer_checks_total{result=\"error\",error_kind=\"connect\"}");
    assert!(total(&errors) >= 1.0, "{errors:?}");

    for port in [producer_port, consumer_port] {
        promtool_passes(&promtool, port);
        assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
        assert_eq!(http_get(port, "/readyz"), Some((200, "ok\n".into())));
    }

    // A drain-sized load on top of the producer's events, then no more events (a producer
    // still checking would keep a lag of 1 at some scrapes): the lag gets back to 0.
    let produced = common::produce_events(&tb, &topic, 3, 5_000, 50).await as f64;
    common::stop(producer, Duration::from_secs(20)).await;
    let written = prom
        .until(
            "sum(checksite_consumer_events_written_total)",
            Duration::from_secs(90),
            |r| total(r) >= produced,
        )
        .await;
    assert!(total(&written) >= produced, "{written:?}");
    let lag = prom
        .until("checksite_consumer_lag", Duration::from_secs(30), |r| {
            r.len() == 3 && total(r) == 0.0
        })
        .await;
    assert_eq!((lag.len(), total(&lag)), (3, 0.0), "{lag:?}");
    let held = prom.query("checksite_consumer_leases_held");
    assert_eq!(total(&held), 3.0);
    // The rows folded into the rollups: folds were timed, each within its bound.
    let folds = prom
        .until(
            "checksite_consumer_rollup_fold_duration_seconds_count",
            Duration::from_secs(30),
            |r| total(r) >= 1.0,
        )
        .await;
    assert!(total(&folds) >= 1.0, "{folds:?}");
    let slow = prom.query("checksite_consumer_rollup_fold_duration_seconds_bucket{le=\"60\"}");
    assert_eq!(total(&slow), total(&folds), "{slow:?}");
    promtool_passes(&promtool, consumer_port);

    // What the consumer says it wrote is what the table holds, once everything is in.
    let db = common::open(&db).await;
    let start = Instant::now();
    loop {
        let stored = common::query_i64(&db, "SELECT count(*) FROM events").await;
        let (_, body) = http_get(consumer_port, "/metrics").unwrap();
        let said = metric(&body, "checksite_consumer_events_written_total");
        let lag = metric(&body, "checksite_consumer_lag");
        if (said == stored as f64 && lag == 0.0) || start.elapsed() > Duration::from_secs(30) {
            assert_eq!(said, stored as f64, "written_total against count(*)");
            assert_eq!(lag, 0.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    common::stop(consumer, Duration::from_secs(20)).await;
}

/// The sum of a family's samples in a scrape's text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn readyz_says_why_while_kafka_is_unreachable() {
    let _tb = testbed_or_skip!();
    let site = sites::http_site();
    let port = common::free_port();
    let producer = Command::new(PRODUCER)
        .env("CK_KAFKA_SERVERS", "127.0.0.1:1")
        .env("CK_KAFKA_TOPIC", "nowhere")
        .env("CK_SITE_URL", format!("{site}/ok"))
        .env("CK_CHECK_DELAY", "0.5")
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Not ready from the start (nothing reached Kafka), and saying why once it failed.
    let (status, why) = common::http_get_when_up(port, "/readyz").await;
    assert_eq!(status, 503, "{why}");
    let start = Instant::now();
    let body = loop {
        let (_, body) = http_get(port, "/metrics").unwrap_or_default();
        if metric(&body, "checksite_producer_publish_errors_total") >= 1.0
            || start.elapsed() > Duration::from_secs(30)
        {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        metric(&body, "checksite_producer_publish_errors_total") >= 1.0,
        "{body}"
    );
    assert!(
        metric(&body, "checksite_producer_events_buffered") >= 3.0,
        "checks go on and wait in the buffer"
    );
    assert_eq!(http_get(port, "/healthz"), Some((200, "ok\n".into())));
    let (status, why) = http_get(port, "/readyz").unwrap();
    assert_eq!(status, 503);
    assert!(
        why.starts_with("Kafka failed") && why.trim().lines().count() == 1,
        "{why:?}"
    );
    common::stop(producer, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_busy_or_bad_address_is_a_one_line_configuration_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    for (addr, want) in [
        (busy.as_str(), "another program listens there"),
        ("localhost:9464", "give IP:PORT"),
        ("192.0.2.1:9464", "no such address"),
    ] {
        for program in [PRODUCER, env!("CARGO_BIN_EXE_checksite-consumer")] {
            let out = std::process::Command::new(program)
                .env("CK_KAFKA_SERVERS", "127.0.0.1:1")
                .env("CK_KAFKA_TOPIC", "t")
                .env("CK_SITE_URL", "http://127.0.0.1:1/")
                .env("CK_POSTGRESQL_URL", "postgres://u@127.0.0.1:1/db")
                .env("CK_HTTP_ADDR", addr)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{program} {addr}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            assert!(err.contains("CK_HTTP_ADDR") && err.contains(want), "{err}");
        }
    }
}

#[tokio::test]
async fn hostile_clients_never_stall_the_checks() {
    use std::io::Write;
    let tb = testbed_or_skip!();
    let _alone = HEAVY.lock().await;
    let topic = common::unique("hostile");
    let site = sites::http_site();
    let port = common::free_port();
    let producer = Command::new(PRODUCER)
        .envs(tb.kafka_env(Listener::Plaintext, &topic))
        .env("CK_SITE_URL", format!("{site}/ok"))
        .env("CK_CHECK_DELAY", "0.2")
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let checks = |body: &str| metric(body, "checksite_producer_checks_total");
    // The rate of checks on this machine now, unflooded: what the flooded rate is held to.
    let first = checks(&common::http_get_when_up(port, "/metrics").await.1);
    let calm = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = checks(&http_get(port, "/metrics").expect("/metrics").1);
    let calm_rate = (before - first) / calm.elapsed().as_secs_f64();
    let flood = Instant::now();
    // 600 clients that start a request and never finish it (more than the connection cap
    // of 512), and one whose header never ends.
    let addr = format!("127.0.0.1:{port}");
    let mut held = Vec::new();
    for _ in 0..600 {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
            held.push(s);
        }
    }
    let mut huge = std::net::TcpStream::connect(&addr).unwrap();
    let _ = huge.write_all(b"GET /metrics HTTP/1.1\r\n");
    let _ = huge.write_all(format!("X-Big: {}\r\n", "a".repeat(64 * 1024)).as_bytes());
    let started = Instant::now();
    // The slow clients are cut off after the head timeout; /metrics answers again.
    let body = loop {
        if let Some((200, body)) = http_get(port, "/metrics") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "/metrics never answered again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Over 4 s of the flood at least (an answer may come at once).
    let body = match Duration::from_secs(4).checked_sub(flood.elapsed()) {
        Some(left) => {
            tokio::time::sleep(left).await;
            http_get(port, "/metrics").expect("/metrics").1
        }
        None => body,
    };
    let flooded_rate = (checks(&body) - before) / flood.elapsed().as_secs_f64();
    // Checks went on at their rate meanwhile: a stalled runtime would make none in 5 s.
    eprintln!("checks/s: {calm_rate:.1} before, {flooded_rate:.1} while flooded");
    assert!(
        flooded_rate >= calm_rate * 0.6,
        "{flooded_rate:.1} checks/s while the endpoint was flooded, {calm_rate:.1}/s before"
    );
    // Beyond the cap, connections were closed at once; the rest once their head was late.
    // Closed: end of stream, a reset, or a 4xx answer; a read that times out means the
    // server still holds the connection, and is not counted as closed.
    let closed_by_server = |s: &mut std::net::TcpStream| {
        use std::io::{ErrorKind, Read};
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => buf.starts_with(b"HTTP/1.1 4"),
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    };
    let cut = held.iter_mut().map(closed_by_server).filter(|c| *c).count();
    assert_eq!(cut, held.len(), "every slow client is cut off");
    assert!(closed_by_server(&mut huge), "a 64 KiB header is refused");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "within the head timeout"
    );
    drop(held);
    common::stop(producer, Duration::from_secs(20)).await;
}
