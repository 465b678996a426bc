//! Helpers for `scripts/bench.sh`: load a topic, serve a trivial site, summarise a topic,
//! and time publishing alone. Not part of the product.
//!
//!   bench_tools fill-topic SERVERS TOPIC PARTITIONS EVENTS
//!   bench_tools serve PORT
//!   bench_tools serve-tls PORT CERT KEY
//!   bench_tools topic-stats SERVERS TOPIC
//!   bench_tools publish SERVERS TOPIC EVENTS
//!   bench_tools receive-alerts PORT   (a webhook receiver: one line per POST, "latency_ms kind")
//!   bench_tools hang PORT             (accepts connections and never answers)
//!   bench_tools fill-spool DIR EVENTS (a producer's spool holding EVENTS events)

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checksite::event::CheckEvent;
use checksite::kafka;
use checksite::kafka::KafkaSettings;
use checksite::producer::config::{Compression, PublishSettings};
use checksite::producer::metrics::ProducerMetrics;
use checksite::producer::outbox::{self, Outbox};
use checksite::settings::Settings;
use rskafka::client::partition::Compression as KafkaCompression;
use rskafka::record::Record;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Kafka at `servers`, over TLS as CK_KAFKA_SSL says when it is set (mutual TLS in the
/// benchmarks, as users run it).
fn settings(servers: &str, topic: &str) -> KafkaSettings {
    let mut env = vec![
        ("CK_KAFKA_SERVERS".to_string(), servers.to_string()),
        ("CK_KAFKA_TOPIC".to_string(), topic.to_string()),
    ];
    if let Ok(ssl) = std::env::var("CK_KAFKA_SSL") {
        env.push(("CK_KAFKA_SSL".to_string(), ssl));
    }
    KafkaSettings::from_settings(&Settings::new(env)).unwrap_or_else(|e| panic!("{e}"))
}

fn event(i: u64) -> CheckEvent {
    // One check in 7 of each site fails: the alert states change often (no transition:
    // never 3 failures in a row), as on a day with flaky sites.
    let failed = (i / 1000) % 7 == 3;
    CheckEvent {
        elapsed_ms: 20 + i % 200,
        status: Some(if failed { 503 } else { 200 }),
        content_match: Some("Welcome".into()),
        dns_ms: Some(1),
        connect_ms: Some(3),
        tls_ms: Some(12),
        ttfb_ms: Some(18),
        bytes: Some(15_000),
        // Far enough not to be an alert (CK_ALERT_CERT_DAYS is 14).
        cert_expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::days(90)),
        ip: Some("192.0.2.10".into()),
        body_sha256: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        ..CheckEvent::starting(&format!("https://site-{}.example/", i % 1000), "bench", 0)
    }
}

async fn fill_topic(servers: &str, topic: &str, partitions: i32, events: u64) {
    let client = kafka::connect(&settings(servers, topic), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = kafka::ensure_topic(&client, topic, partitions, -1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut per: Vec<Vec<Record>> = (0..n).map(|_| Vec::new()).collect();
    for i in 0..events {
        let ev = event(i);
        let p = kafka::partition_for(ev.url.as_bytes(), n) as usize;
        per[p].push(Record {
            key: Some(ev.url.clone().into_bytes()),
            value: Some(ev.to_json()),
            headers: Default::default(),
            timestamp: ev.checked_at,
        });
    }
    for (p, records) in per.into_iter().enumerate() {
        let pc = kafka::partition_client(&client, topic, p as i32)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut it = records.into_iter().peekable();
        while it.peek().is_some() {
            // 500 per request: about the batches checksite-producer makes at 1,000 checks/s.
            let chunk: Vec<Record> = it.by_ref().take(500).collect();
            pc.produce(chunk, KafkaCompression::Snappy)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The bench site's answer: a small page, and the connection closes. `/flap/N` is down
/// (503) 10 s out of 20, shifted by N seconds: a site that goes down and comes back.
fn site_response(request: &[u8]) -> String {
    let path = String::from_utf8_lossy(request)
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let down = path
        .strip_prefix("/flap/")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| ((now + n) / 10) % 2 == 1);
    let status = if down {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    let body = "<html><body>Welcome to the bench site</body></html>";
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Accept connections on 127.0.0.1:`port` for ever; each is handled by `handle` in a task.
async fn accept_each<F, Fut>(port: u16, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    loop {
        if let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    }
}

/// One HTTP request: its head and its body (by Content-Length); None if the peer left.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..at]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= at + 4 + length {
                let body = seen[at + 4..at + 4 + length].to_vec();
                seen.truncate(at);
                return Some((seen, body));
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A webhook receiver: for each POSTed notification, "latency_ms kind" on stdout, the
/// latency from the deciding check's `checked_at` to now.
async fn receive_alerts(port: u16) {
    accept_each(port, |mut s| async move {
        let Some((_, body)) = read_request(&mut s).await else {
            return;
        };
        let _ = s
            .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let checked = v["checked_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let Some(checked) = checked {
            let ms = chrono::Utc::now().timestamp_millis() - checked.timestamp_millis();
            println!("{ms} {}", v["kind"].as_str().unwrap_or("?"));
        }
    })
    .await
}

/// A receiver that is down the worst way: it accepts, reads, and never answers.
async fn hang(port: u16) {
    accept_each(port, |mut s| async move {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

/// A spool at `dir` holding `events` events (on disk only, as after a long outage); prints
/// its bytes.
fn fill_spool(dir: &str, events: u64) {
    use checksite::producer::spool::{SEGMENT_BYTES, Spool, SpoolSettings};
    let settings = SpoolSettings {
        dir: dir.into(),
        sync_always: false,
        max_bytes: 4 << 30,
        segment_bytes: SEGMENT_BYTES,
    };
    let (spool, _) = Spool::open(settings).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..events {
        spool.append(&event(i), true);
    }
    spool.sync();
    println!("{}", spool.bytes());
}

async fn serve(port: u16) {
    accept_each(port, |mut s| async move {
        if let Some((head, _)) = read_request(&mut s).await {
            let resp = site_response(&head);
            let _ = s.write_all(resp.as_bytes()).await;
        }
    })
    .await
}

/// The same site over TLS (a thread per connection: the handshakes measured are the
/// producer's, not this server's speed).
fn serve_tls(port: u16, cert: &str, key: &str) {
    use std::io::{Read, Write};
    let chain =
        checksite::tls::load_certs(std::path::Path::new(cert)).unwrap_or_else(|e| panic!("{e}"));
    let key = checksite::tls::load_key(std::path::Path::new(key)).unwrap_or_else(|e| panic!("{e}"));
    let config = rustls::ServerConfig::builder_with_provider(checksite::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .unwrap_or_else(|e| panic!("{e}"));
    let config = std::sync::Arc::new(config);
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    for stream in listener.incoming().flatten() {
        let config = config.clone();
        std::thread::spawn(move || {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let resp = site_response(&seen);
            let _ = tls.write_all(resp.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
    }
}

async fn topic_stats(servers: &str, topic: &str) {
    let client = kafka::connect(&settings(servers, topic), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let partitions = kafka::topic_partitions(&client, topic)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut lags = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for p in partitions {
        let pc = kafka::partition_client(&client, topic, p)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut offset = 0;
        loop {
            let (records, high) = pc
                .fetch_records(offset, 1..50_000_000, 100)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            for r in &records {
                offset = r.offset + 1;
                keys.insert(r.record.key.clone());
                let Some(v) = &r.record.value else { continue };
                let Ok(json) = serde_json::from_slice::<serde_json::Value>(v) else {
                    continue;
                };
                lags.push(json["schedule_lag_ms"].as_i64().unwrap_or(0));
                let t = r.record.timestamp.timestamp_millis();
                first = first.min(t);
                last = last.max(t);
            }
            if offset >= high || records.is_empty() {
                break;
            }
        }
    }
    lags.sort_unstable();
    let pct = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let span = (last - first).max(1) as f64 / 1000.0;
    // count, span in seconds, lateness p50 and p99 (ms), distinct keys (URLs)
    println!(
        "{} {:.1} {} {} {}",
        lags.len(),
        span,
        pct(0.50),
        pct(0.99),
        keys.len()
    );
}

async fn publish(servers: &str, topic: &str, events: u64) {
    let kafka = settings(servers, topic);
    let client = kafka::connect(&kafka, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    kafka::ensure_topic(&client, topic, 6, -1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let outbox = Outbox::new(events as usize);
    for i in 0..events {
        outbox.push(event(i));
    }
    let publish = PublishSettings {
        kafka,
        partitions: 6,
        replication: -1,
        compression: Compression::Snappy,
        buffer_events: events as usize,
        linger: Duration::from_millis(0),
        spool: None,
    };
    outbox.close(); // flush what is there, then return
    let started = Instant::now();
    let metrics = Arc::new(ProducerMetrics::new("bench", outbox.clone()));
    outbox::publish(outbox.clone(), publish, metrics, Duration::from_secs(600)).await;
    let secs = started.elapsed().as_secs_f64();
    // events published, seconds
    println!("{} {:.3}", outbox.published(), secs);
}

// The producer's allocator, so that `publish` measures what the producer does.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["fill-topic", servers, topic, partitions, events] => {
            fill_topic(
                servers,
                topic,
                partitions.parse().unwrap_or(6),
                events.parse().unwrap_or(0),
            )
            .await
        }
        ["serve", port] => serve(port.parse().unwrap_or(18700)).await,
        ["serve-tls", port, cert, key] => serve_tls(port.parse().unwrap_or(18702), cert, key),
        ["topic-stats", servers, topic] => topic_stats(servers, topic).await,
        ["receive-alerts", port] => receive_alerts(port.parse().unwrap_or(18705)).await,
        ["hang", port] => hang(port.parse().unwrap_or(18706)).await,
        ["fill-spool", dir, events] => fill_spool(dir, events.parse().unwrap_or(0)),
        ["publish", servers, topic, events] => {
            publish(servers, topic, events.parse().unwrap_or(0)).await
        }
        _ => {
            eprintln!(
                "usage: bench_tools fill-topic|serve|serve-tls|topic-stats|publish|receive-alerts|hang|fill-spool ... (see the source)"
            );
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
