//! checksite-producer as a user runs it: `--once` against local sites of every kind,
//! and configuration errors.

mod common;

use std::time::{Duration, Instant};

use common::sites;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_checksite-producer");

struct Run {
    events: Vec<Value>,
    code: i32,
    stderr: String,
    took: Duration,
}

async fn producer(args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the producer must not hang")
        .expect("run the producer");
    let stdout = String::from_utf8(out.stdout).unwrap();
    Run {
        events: stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect(),
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

async fn once(url: &str, extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["--once"];
    args.extend_from_slice(extra);
    args.push(url);
    let run = producer(&args, &[]).await;
    assert_eq!(run.events.len(), 1, "stderr: {}", run.stderr);
    (run.events[0].clone(), run.code)
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn ok_with_a_match() {
    let site = sites::http_site();
    let (ev, code) = once(&format!("{site}/ok"), &["--regex", "hello (\\w+).status"]).await;
    assert_eq!(code, 0, "{ev}");
    assert_eq!(ev["status"], 200);
    assert_eq!(
        ev["content_match"], "hello checksite\nstatus",
        "'.' matches newlines"
    );
    assert_eq!(ev["body_prefix"], Value::Null);
    assert_eq!(ev["bytes"], sites::OK_BODY.len());
    assert_eq!(ev["body_sha256"], sha256_hex(sites::OK_BODY.as_bytes()));
    assert_eq!(ev["ip"], "127.0.0.1");
    assert_eq!(ev["error_kind"], Value::Null);
    assert_eq!(ev["tls_ms"], Value::Null, "no TLS on http");
    let (elapsed, ttfb) = (
        ev["elapsed_ms"].as_u64().unwrap(),
        ev["ttfb_ms"].as_u64().unwrap(),
    );
    assert!(ttfb <= elapsed, "{ev}");
    assert!(ev["dns_ms"].is_u64() && ev["connect_ms"].is_u64(), "{ev}");
    assert_eq!(ev["v"], 1);
}

#[tokio::test]
async fn chunked_and_gzipped_bodies_are_read_as_the_site_meant_them() {
    let site = sites::http_site();
    for path in ["/chunked", "/gzip"] {
        let (ev, code) = once(&format!("{site}{path}"), &["--regex", "hello (\\w+)"]).await;
        assert_eq!(code, 0, "{path}: {ev}");
        assert_eq!(ev["content_match"], "hello checksite", "{path}: {ev}");
        assert_eq!(ev["bytes"], sites::OK_BODY.len(), "{path}: {ev}");
        assert_eq!(
            ev["body_sha256"],
            sha256_hex(sites::OK_BODY.as_bytes()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_relative_redirect_is_followed_and_an_oversized_head_is_an_http_error() {
    let site = sites::http_site();
    let (ev, code) = once(&format!("{site}/moved"), &[]).await;
    assert_eq!((ev["status"].as_u64(), code), (Some(200), 0), "{ev}");
    assert_eq!(ev["body_sha256"], sha256_hex(sites::OK_BODY.as_bytes()));
    let (ev, code) = once(&format!("{site}/big-head"), &[]).await;
    assert_eq!(code, 1);
    assert_eq!(ev["error_kind"], "http", "{ev}");
    assert_eq!(ev["status"], Value::Null, "{ev}");
}

#[tokio::test]
async fn ok_without_a_match_is_down() {
    let site = sites::http_site();
    let (ev, code) = once(&format!("{site}/ok"), &["--regex", "absent"]).await;
    assert_eq!(code, 1);
    assert_eq!(ev["status"], 200);
    assert_eq!(ev["content_match"], Value::Null);
}

#[tokio::test]
async fn not_found_and_server_error_keep_a_body_prefix() {
    let site = sites::http_site();
    let (ev, code) = once(&format!("{site}/404"), &[]).await;
    assert_eq!((ev["status"].as_u64(), code), (Some(404), 1));
    let prefix = ev["body_prefix"].as_str().unwrap();
    assert_eq!(prefix.chars().count(), 500, "first 500 characters");
    assert!(prefix.starts_with("not here: xxx"));
    let (ev, code) = once(&format!("{site}/500"), &[]).await;
    assert_eq!((ev["status"].as_u64(), code), (Some(500), 1));
    assert_eq!(ev["body_prefix"], "boom");
}

#[tokio::test]
async fn redirect_chain_is_followed_up_to_the_limit() {
    let site = sites::http_site();
    let (ev, code) = once(&format!("{site}/redirect/3"), &["--max-redirects", "5"]).await;
    assert_eq!((ev["status"].as_u64(), code), (Some(200), 0), "{ev}");
    let (ev, _) = once(&format!("{site}/redirect/3"), &["--max-redirects", "2"]).await;
    assert_eq!(ev["error_kind"], "redirect", "{ev}");
    let (ev, code) = once(&format!("{site}/redirect/3"), &["--max-redirects", "0"]).await;
    assert_eq!(
        (ev["status"].as_u64(), code),
        (Some(302), 0),
        "0 = the 3xx itself is the answer: {ev}"
    );
}

#[tokio::test]
async fn redirect_loop_is_an_error() {
    let site = sites::http_site();
    let (ev, code) = once(&format!("{site}/loop"), &[]).await;
    assert_eq!(code, 1);
    assert_eq!(ev["error_kind"], "redirect", "{ev}");
    assert_eq!(ev["status"], Value::Null);
}

#[tokio::test]
async fn connection_refused() {
    let (ev, code) = once(&sites::refused_site(), &[]).await;
    assert_eq!(code, 1);
    assert_eq!(ev["error_kind"], "connect", "{ev}");
    assert!(ev["error"].as_str().unwrap().contains("refused"), "{ev}");
}

#[tokio::test]
async fn unknown_host_is_a_dns_error() {
    let (ev, code) = once("http://no-such-site.invalid/", &[]).await;
    assert_eq!(code, 1);
    assert_eq!(ev["error_kind"], "dns", "{ev}");
    assert_eq!(ev["ip"], Value::Null);
}

#[tokio::test]
async fn a_site_that_never_answers_times_out_within_the_bound() {
    let run = producer(
        &["--once", "--timeout-ms", "1500", &sites::silent_site()],
        &[],
    )
    .await;
    let ev = &run.events[0];
    assert_eq!(ev["error_kind"], "timeout", "{ev}");
    let elapsed = ev["elapsed_ms"].as_u64().unwrap();
    assert!(
        (1400..3000).contains(&elapsed),
        "elapsed {elapsed} ms for a 1500 ms timeout"
    );
    assert!(run.took < Duration::from_secs(5), "{:?}", run.took);
    assert_eq!(run.code, 1);
}

#[tokio::test]
async fn an_endless_body_is_capped() {
    let site = sites::http_site();
    let run = producer(
        &[
            "--once",
            "--body-cap",
            "65536",
            "--timeout-ms",
            "20000",
            &format!("{site}/endless"),
        ],
        &[],
    )
    .await;
    let ev = &run.events[0];
    assert_eq!(ev["status"], 200, "{ev}");
    assert_eq!(ev["bytes"], 65536, "{ev}");
    assert_eq!(run.code, 0);
    assert!(run.took < Duration::from_secs(10), "{:?}", run.took);
}

#[tokio::test]
async fn https_with_an_untrusted_certificate_is_a_tls_error() {
    let tb = testbed_or_skip!();
    let site = sites::https_site(&tb.certs.join("server.cert"), &tb.certs.join("server.key"));
    let (ev, code) = once(&format!("{site}/ok"), &[]).await;
    assert_eq!(code, 1);
    assert_eq!(ev["error_kind"], "tls", "{ev}");
    assert!(
        ev["error"].as_str().unwrap().contains("UnknownIssuer"),
        "{ev}"
    );
}

#[tokio::test]
async fn https_with_a_trusted_ca_reports_the_certificate_expiry() {
    let tb = testbed_or_skip!();
    let cert = tb.certs.join("server.cert");
    let site = sites::https_site(&cert, &tb.certs.join("server.key"));
    let ca = tb.cert("ca.pem");
    let (ev, code) = once(&format!("{site}/ok"), &["--site-ca", &ca]).await;
    assert_eq!(code, 0, "{ev}");
    assert_eq!(ev["status"], 200);
    assert!(ev["tls_ms"].is_u64(), "{ev}");
    // notAfter as openssl reads it, e.g. "notAfter=Dec 28 06:42:00 2026 GMT"
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let not_after = chrono::NaiveDateTime::parse_from_str(
        text.trim().trim_start_matches("notAfter="),
        "%b %e %H:%M:%S %Y GMT",
    )
    .unwrap()
    .and_utc();
    assert_eq!(
        ev["cert_expires_at"],
        checksite::event::format_time(&not_after)
    );
}

#[tokio::test]
async fn bad_configuration_exits_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("checksite-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM at all\n").unwrap();
    let g = garbage.display().to_string();
    let g3 = format!("{g} {g} {g}");
    let kafka = [
        ("CK_SITE_URL", "http://127.0.0.1:9/"),
        ("CK_KAFKA_SERVERS", "127.0.0.1:9092"),
    ];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("CK_SITE_URL", "http://a.example/"),
                ("CK_CONTENT_REGEX", "([a-z"),
            ],
            "CK_CONTENT_REGEX",
        ),
        (vec![("CK_SITE_URL", "not a url")], "CK_SITE_URL"),
        (
            vec![(
                "CK_KAFKA_SSL",
                "/missing/ca.pem /missing/service.cert /missing/service.key",
            )],
            "cannot read /missing/ca.pem",
        ),
        (
            vec![("CK_KAFKA_SSL", g.as_str())],
            "holds no PEM certificate",
        ),
        (
            vec![("CK_KAFKA_SSL", g3.as_str())],
            "holds no PEM certificate",
        ),
        (
            vec![("CK_KAFKA_SASL_MECHANISM", "GSSAPI")],
            "CK_KAFKA_SASL_MECHANISM",
        ),
        (vec![("CK_CHECK_DELAY", "-1")], "CK_CHECK_DELAY"),
    ];
    for (vars, want) in cases {
        let mut env: Vec<(&str, &str)> = kafka.to_vec();
        env.extend(vars.iter().cloned());
        let run = producer(&[], &env).await;
        assert_eq!(run.code, 2, "{vars:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(want),
            "{vars:?}: {:?} lacks {want:?}",
            run.stderr
        );
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "one line: {:?}",
            run.stderr
        );
        assert!(run.took < Duration::from_secs(10));
    }
    // A certificate where the key should be: needs a real CA and cert, from the test bed.
    if let Some(tb) = common::testbed() {
        let ssl = format!(
            "{} {} {}",
            tb.cert("ca.pem"),
            tb.cert("service.cert"),
            tb.cert("service.cert")
        );
        let mut env = kafka.to_vec();
        env.push(("CK_KAFKA_SSL", &ssl));
        let run = producer(&[], &env).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("no PEM private key"), "{}", run.stderr);
        let ssl = format!(
            "{} {} {}",
            tb.cert("ca.pem"),
            tb.cert("service.cert"),
            tb.cert("server.key")
        );
        let mut env = kafka.to_vec();
        env.push(("CK_KAFKA_SSL", &ssl));
        let run = producer(&[], &env).await;
        assert_eq!(run.code, 2, "a key of another certificate: {}", run.stderr);
        assert!(
            run.stderr.contains("does not fit the certificate"),
            "{}",
            run.stderr
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn help_and_version() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("checksite-producer ", env!("CARGO_PKG_VERSION"))
    );
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--once") && help.contains("CK_KAFKA_SSL"),
        "{help}"
    );
}
