//! Names that never resolve do not fail healthy checks. The shipped (static, musl)
//! producer runs with a resolv.conf whose name server drops every query (bind-mounted
//! over /etc/resolv.conf in a mount namespace of its own: `unshare -m`, as root), checking
//! 100 such names beside 1,000 healthy targets (`localhost`, from /etc/hosts) every
//! second. Every healthy check must resolve, and none may wait for the others.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::Listener;

const STATIC_PRODUCER: &str = "target/x86_64-unknown-linux-musl/release/checksite-producer";
/// A loopback address of its own for the silent name server's port 53.
const NAME_SERVER: &str = "127.53.53.53";

fn ready() -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let unshare = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let ready = root && unshare && Path::new(STATIC_PRODUCER).exists();
    if !ready {
        assert!(
            !common::strict(),
            "strict mode (CI=true or `just test`): this test needs root (unshare -m, port 53) and `just build-static`"
        );
        eprintln!("SKIPPED: needs root (unshare -m, port 53) and `just build-static`");
    }
    ready
}

#[tokio::test]
async fn names_that_never_resolve_leave_healthy_checks_alone() {
    let tb = testbed_or_skip!();
    if !ready() {
        return;
    }
    // A name server that reads every query and never answers.
    let silent = UdpSocket::bind((NAME_SERVER, 53)).expect("bind 127.53.53.53:53");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while silent.recv_from(&mut buf).is_ok() {}
    });
    let work = std::env::temp_dir().join(common::unique("dns"));
    std::fs::create_dir_all(&work).unwrap();
    let resolv = work.join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {NAME_SERVER}\n")).unwrap();
    // Each healthy check counted where it lands: at the site (the events in the topic
    // count only what Kafka took before the producer's exit).
    let (port, answered) = common::sites::recording_site();
    let mut urls: Vec<String> = (0..1000)
        .map(|i| format!("http://localhost:{port}/ok?target={i}"))
        .collect();
    urls.extend((0..100).map(|i| format!("http://hang-{i}.never-answers.test/")));
    let topic = common::unique("dns");
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} \"$@\"",
        resolv.display(),
        std::fs::canonicalize(STATIC_PRODUCER).unwrap().display()
    );
    let spawned = chrono::Utc::now();
    let producer = tokio::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script, "producer"])
        .envs(tb.kafka_env(Listener::Plaintext, &topic))
        .env("CK_SITE_URL", urls.join(" "))
        .env("CK_CHECK_DELAY", "1")
        .env("CK_PRODUCER_ID", "dns-test")
        .env("CK_LOG_LEVEL", "warn")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(14)).await;
    let log = common::stop(producer, Duration::from_secs(30)).await;
    let mut lags = Vec::new();
    let mut dns_failures = 0;
    let mut published = std::collections::HashMap::<String, usize>::new();
    let mut hanging = 0;
    for (_, _, key, value) in common::read_topic(&tb, &topic).await {
        let ev: serde_json::Value = serde_json::from_slice(&value).unwrap();
        if key.contains("never-answers") {
            hanging += 1;
            assert_eq!(ev["up"], false, "{ev}");
            continue;
        }
        if ev["error_kind"] == "dns" || ev["error_kind"] == "timeout" {
            dns_failures += 1;
        }
        lags.push(ev["schedule_lag_ms"].as_i64().unwrap());
        *published.entry(key).or_default() += 1;
    }
    let mut checked = std::collections::HashMap::<String, usize>::new();
    // Healthy checks answered in each second since the start: a stall shows as a gap.
    let mut per_second = std::collections::BTreeMap::<i64, usize>::new();
    for (path, at) in answered.lock().unwrap().iter() {
        *checked.entry(path.clone()).or_default() += 1;
        *per_second
            .entry((*at - spawned).num_milliseconds() / 1000)
            .or_default() += 1;
    }
    assert!(hanging > 0, "the hanging names were checked too");
    assert_eq!(dns_failures, 0, "healthy checks failed on DNS");
    assert_eq!(checked.len(), 1000, "every healthy target checked");
    assert_eq!(
        published.len(),
        1000,
        "every healthy target's events published"
    );
    // 14 s at 1 s, less the start and the stop: no target missed its seconds.
    let fewest = checked.values().min().copied().unwrap_or(0);
    let short = checked.values().filter(|n| **n < 11).count();
    let fewest_published = published.values().min().copied().unwrap_or(0);
    assert!(
        fewest >= 11,
        "a healthy target was checked only {fewest} times ({short} targets under 11; fewest in the topic {fewest_published}); checks answered per second since the start: {per_second:?}; log: {}",
        log.lines().rev().take(20).collect::<Vec<_>>().join(" | ")
    );
    assert!(
        fewest_published >= 11,
        "a healthy target has only {fewest_published} events in the topic (checked {fewest} times at least); log: {}",
        log.lines().rev().take(20).collect::<Vec<_>>().join(" | ")
    );
    lags.sort_unstable();
    let p99 = lags[lags.len() * 99 / 100];
    // Starved, this is seconds; `just bench` measures it for real.
    assert!(p99 <= 250, "p99 lateness {p99} ms");
    let _ = std::fs::remove_dir_all(&work);
}
