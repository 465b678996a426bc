//! `CK_HTTP_CONFIG`: the exporter-toolkit web config on both programs, checked with the
//! programs users will point at it: `promtool check web-config` accepts the file,
//! `htpasswd -B` writes its hashes, Debian's Prometheus scrapes both programs over TLS with
//! basic auth (and the consumer with a client certificate), curl without credentials gets
//! 401, with the wrong CA fails the handshake; `/healthz` is left open on request; an
//! invalid file is exit 2 naming the field.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Listener, sites};

const PRODUCER: &str = env!("CARGO_BIN_EXE_checksite-producer");
const PASSWORD: &str = "correct horse battery staple";

/// `htpasswd -nbB -C 10 USER PASSWORD`'s hash.
fn htpasswd(user: &str) -> Option<String> {
    let htpasswd = common::debian_program("htpasswd")?;
    let out = Command::new(htpasswd)
        .args(["-nbB", "-C", "10", user, PASSWORD])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    Some(line.trim().split_once(':').unwrap().1.to_string())
}

/// curl's HTTP status for `url` with `args` (0 when it got no answer), and its exit code.
fn curl(url: &str, args: &[&str]) -> (u16, i32) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
    (code, out.status.code().unwrap_or(-1))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `up` of each job, as Prometheus scrapes them, once both are 1 (or panics after 60 s).
fn prometheus_scrapes(prometheus: &Path, dir: &Path, jobs: &str) -> String {
    let config = write(
        dir,
        "prometheus.yml",
        &format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}"),
    );
    let port = common::free_port();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let start = Instant::now();
    let answer = loop {
        let got = common::http_get(port, "/api/v1/query?query=up");
        if let Some((200, body)) = &got
            && body.matches("\"1\"]").count() == 2
        {
            break body.clone();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "prometheus exited: is its configuration right? {got:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not scraped: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = child.kill();
    let _ = child.wait();
    answer
}

#[tokio::test]
async fn tls_basic_auth_and_client_certificates_as_prometheus_uses_them() {
    let tb = testbed_or_skip!();
    let (Some(hash), Some(promtool), Some(prometheus)) = (
        htpasswd("prometheus"),
        common::debian_program("promtool"),
        common::debian_program("prometheus"),
    ) else {
        return;
    };
    let dir = std::env::temp_dir().join(common::unique("web-config"));
    std::fs::create_dir_all(&dir).unwrap();
    // As the README shows it: TLS and one user; the consumer also asks for a client cert.
    let plain = write(
        &dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {hash}\n",
            tb.cert("server.cert"),
            tb.cert("server.key")
        ),
    );
    let mutual = write(
        &dir,
        "web-mtls.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\nbasic_auth_users:\n  prometheus: {hash}\n",
            tb.cert("server.cert"),
            tb.cert("server.key"),
            tb.cert("ca.pem")
        ),
    );
    // The README's own example, beside the files it names.
    let readme = include_str!("../README.md");
    let example = readme
        .split("```yaml\n")
        .find(|block| block.starts_with("tls_server_config:"))
        .and_then(|block| block.split("```").next())
        .expect("the README shows a web config");
    for (name, from) in [
        ("server.crt", "server.cert"),
        ("server.key", "server.key"),
        ("ca.pem", "ca.pem"),
    ] {
        std::fs::copy(tb.cert(from), dir.join(name)).unwrap();
    }
    let readme_file = write(&dir, "readme-web.yml", example);
    for file in [&plain, &mutual, &readme_file] {
        let out = Command::new(&promtool)
            .args(["check", "web-config"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let topic = common::unique("web-config");
    let (_pg, db_url) = tb.fresh_database("web_config").await;
    let (producer_port, consumer_port) = (common::free_port(), common::free_port());
    let producer = tokio::process::Command::new(PRODUCER)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_SITE_URL", format!("{}/ok", sites::http_site()))
        .env("CK_CHECK_DELAY", "1")
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{producer_port}"))
        .env("CK_HTTP_CONFIG", &plain)
        .env("CK_HTTP_OPEN_HEALTH", "on")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{consumer_port}"))
        .env("CK_HTTP_CONFIG", &mutual)
        .spawn()
        .unwrap();
    let ca = tb.cert("ca.pem");
    let producer_url = |path: &str| format!("https://localhost:{producer_port}{path}");
    let consumer_url = |path: &str| format!("https://localhost:{consumer_port}{path}");
    let user = format!("prometheus:{PASSWORD}");
    let start = Instant::now();
    while curl(&producer_url("/healthz"), &["--cacert", &ca]).0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the producer never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No credentials, or the wrong ones: 401; the right ones: 200.
    let metrics = producer_url("/metrics");
    assert_eq!(curl(&metrics, &["--cacert", &ca]).0, 401);
    assert_eq!(
        curl(&metrics, &["--cacert", &ca, "-u", "prometheus:wrong"]).0,
        401
    );
    assert_eq!(curl(&metrics, &["--cacert", &ca, "-u", "nobody:x"]).0, 401);
    assert_eq!(curl(&metrics, &["--cacert", &ca, "-u", &user]).0, 200);
    // A CA that did not sign the server's certificate: no handshake (curl exit 60).
    let wrong_ca = tb.cert("other-ca.pem");
    assert_eq!(
        curl(&metrics, &["--cacert", &wrong_ca, "-u", &user]),
        (0, 60)
    );
    // Plain HTTP to the TLS port: no answer.
    assert_eq!(
        curl(&format!("http://127.0.0.1:{producer_port}/metrics"), &[]).0,
        0
    );
    // The consumer: a client certificate is required, then the password.
    let identity = [
        "--cert",
        &tb.cert("service.cert"),
        "--key",
        &tb.cert("service.key"),
    ];
    let with_cert: Vec<&str> = ["--cacert", ca.as_str()]
        .iter()
        .copied()
        .chain(identity)
        .collect();
    let start = Instant::now();
    while curl(&consumer_url("/healthz"), &with_cert).0 != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the consumer never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        curl(&consumer_url("/metrics"), &["--cacert", &ca, "-u", &user]).0,
        0
    );
    let mut authed = with_cert.clone();
    authed.extend(["-u", user.as_str()]);
    assert_eq!(curl(&consumer_url("/metrics"), &authed).0, 200);
    assert_eq!(curl(&consumer_url("/"), &authed).0, 200);

    // Debian's Prometheus, configured as its documentation says, scrapes both.
    let job = |name: &str, port: u16, client: &str| {
        [
            format!("  - job_name: {name}"),
            "    scheme: https".into(),
            "    tls_config:".into(),
            format!("      ca_file: {ca}"),
            client.to_string(),
            "    basic_auth:".into(),
            "      username: prometheus".into(),
            format!("      password: '{PASSWORD}'"),
            "    static_configs:".into(),
            format!("      - targets: ['localhost:{port}']"),
        ]
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| l + "\n")
        .collect::<String>()
    };
    let client = format!(
        "      cert_file: {}\n      key_file: {}",
        tb.cert("service.cert"),
        tb.cert("service.key")
    );
    let jobs = job("producer", producer_port, "") + &job("consumer", consumer_port, &client);
    let up = prometheus_scrapes(&prometheus, &dir, &jobs);
    assert!(
        up.contains("\"job\":\"producer\"") && up.contains("\"job\":\"consumer\""),
        "{up}"
    );
    common::stop(consumer, Duration::from_secs(20)).await;
    common::stop(producer, Duration::from_secs(20)).await;

    // An invalid file: exit 2, one line naming the field; nothing starts.
    let bad = write(&dir, "bad.yml", "basic_auth_users:\n  bob: notahash\n");
    let out = Command::new(PRODUCER)
        .env_clear()
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_SITE_URL", "https://example.com/")
        .env("CK_HTTP_ADDR", "127.0.0.1:0")
        .env("CK_HTTP_CONFIG", &bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("basic_auth_users.bob: not a bcrypt hash"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
