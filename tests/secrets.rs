//! No password reaches the output of either binary, whatever goes wrong: every error path a
//! user can meet with a password in CK_POSTGRESQL_URL, --postgresql-url, the SASL settings
//! or a target URL.

mod common;

use std::time::Duration;

use common::Listener;

const PASSWORD: &str = "Sup3r-s3cret-pw";

/// Run a binary with `env` and `args`; returns (exit code, stdout + stderr).
async fn run(bin: &str, env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::process::Command::new(bin)
            .envs(env.iter().cloned())
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("must not hang")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Run a binary that keeps running (the producer waits out a broker it cannot use) for
/// `secs`, then SIGTERM it; returns stdout + stderr.
async fn run_then_stop(bin: &str, env: &[(String, String)], secs: u64) -> String {
    let child = tokio::process::Command::new(bin)
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    common::terminate(&child);
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The README's exit codes: 1 for a failure at run time (a wrong password, nothing
/// listening), 2 for a configuration error (systemd's RestartPreventExitStatus=2).
const RUNTIME: i32 = 1;
const CONFIG: i32 = 2;

fn assert_hidden(case: &str, (code, want): (i32, i32), text: &str) {
    assert_eq!(code, want, "{case}: exit {want} expected: {text}");
    assert_no_password(case, text);
}

fn assert_no_password(case: &str, text: &str) {
    assert!(!text.trim().is_empty(), "{case}: says nothing");
    assert!(
        !text.contains(PASSWORD),
        "{case}: the password is in the output: {text}"
    );
    assert!(
        !text.contains("s3cret"),
        "{case}: part of the password is in the output: {text}"
    );
}

#[tokio::test]
async fn the_consumer_never_prints_the_postgres_password() {
    let tb = testbed_or_skip!();
    let bin = env!("CARGO_BIN_EXE_checksite-consumer");
    let ca = tb.cert("ca.pem");
    let good = url_of(&tb.postgres_url);
    let cases: Vec<(&str, i32, String)> = vec![
        (
            "wrong password",
            RUNTIME,
            format!(
                "postgres://{}:{PASSWORD}@{}?sslmode=verify-full&sslrootcert={ca}",
                good.0, good.1
            ),
        ),
        (
            "nothing listening",
            RUNTIME,
            format!("postgres://ann:{PASSWORD}@127.0.0.1:1/db?sslmode=require"),
        ),
        (
            "unknown sslmode",
            CONFIG,
            format!("postgres://ann:{PASSWORD}@127.0.0.1/db?sslmode=sometimes"),
        ),
        (
            "unknown parameter",
            CONFIG,
            format!("postgres://ann:{PASSWORD}@127.0.0.1/db?sslmdoe=require"),
        ),
        (
            "two @",
            CONFIG,
            format!("postgres://ann:{PASSWORD}@x@127.0.0.1/db"),
        ),
        (
            "raw ? and a bad port",
            CONFIG,
            format!("postgres://ann:{PASSWORD}?x@127.0.0.1:notaport/db"),
        ),
        (
            "missing sslrootcert",
            CONFIG,
            format!("postgres://ann:{PASSWORD}@127.0.0.1/db?sslrootcert=/nowhere/%aé.pem"),
        ),
        (
            "not postgres",
            CONFIG,
            format!("mysql://ann:{PASSWORD}@127.0.0.1/db"),
        ),
        (
            "untrusted server",
            RUNTIME,
            format!(
                "postgres://{}:{PASSWORD}@{}?sslmode=verify-full",
                good.0, good.1
            ),
        ),
    ];
    // Every case at once (each is a process that fails on its own, most within a second;
    // one after the other they took ~25 s), checked in the order above.
    let mut runs = Vec::new();
    for (case, want, url) in cases {
        let mut env = tb.kafka_env(Listener::MutualTls, "secrets");
        env.push(("CK_POSTGRESQL_URL".into(), url.clone()));
        runs.push((
            case.to_string(),
            want,
            tokio::spawn(async move { run(bin, &env, &["--drain"]).await }),
        ));
        // The same URL given as a flag.
        let env = tb.kafka_env(Listener::MutualTls, "secrets");
        runs.push((
            format!("{case} (flag)"),
            want,
            tokio::spawn(
                async move { run(bin, &env, &["--drain", "--postgresql-url", &url]).await },
            ),
        ));
    }
    // Kafka unreachable, the password in the URL.
    let env = vec![
        ("CK_KAFKA_SERVERS".to_string(), "127.0.0.1:1".to_string()),
        (
            "CK_POSTGRESQL_URL".to_string(),
            format!(
                "postgres://{}:{PASSWORD}@{}?sslmode=verify-full&sslrootcert={ca}",
                good.0, good.1
            ),
        ),
    ];
    runs.push((
        "Kafka unreachable".to_string(),
        RUNTIME,
        tokio::spawn(async move { run(bin, &env, &["--drain"]).await }),
    ));
    for (case, want, ran) in runs {
        let (code, text) = ran.await.unwrap();
        assert_hidden(&case, (code, want), &text);
    }
}

/// (user, host:port/db) of the test bed's URL.
fn url_of(url: &str) -> (String, String) {
    let rest = url.split_once("://").unwrap().1;
    let (user, host) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap().to_string();
    let host = host.split('?').next().unwrap().to_string();
    (user, host)
}

#[tokio::test]
async fn the_producer_never_prints_a_sasl_or_site_password() {
    let tb = testbed_or_skip!();
    let bin = env!("CARGO_BIN_EXE_checksite-producer");
    // A wrong SASL password.
    let mut env = tb.kafka_env(Listener::Sasl("SCRAM-SHA-256"), "secrets");
    env.retain(|(k, _)| k != "CK_KAFKA_SASL_PASSWORD");
    env.push(("CK_KAFKA_SASL_PASSWORD".into(), PASSWORD.into()));
    env.push((
        "CK_SITE_URL".into(),
        format!("http://ann:{PASSWORD}@127.0.0.1:1/"),
    ));
    let wrong_password = {
        let env = env.clone();
        tokio::spawn(async move { run_then_stop(bin, &env, 6).await })
    };
    // A SASL password with nothing listening, at the same time (each waits out its
    // flush time after SIGTERM: one after the other took ~30 s).
    env.retain(|(k, _)| k != "CK_KAFKA_SERVERS");
    env.push(("CK_KAFKA_SERVERS".into(), "127.0.0.1:1".into()));
    let text = run_then_stop(bin, &env, 4).await;
    let wrong = wrong_password.await.unwrap();
    assert!(wrong.contains("SaslAuthenticationFailed"), "{wrong}");
    assert_no_password("wrong SASL password", &wrong);
    assert!(text.contains("Connection refused"), "{text}");
    assert_no_password("Kafka unreachable", &text);
    // Bad settings next to a password: the error names the setting, not the secret.
    for (var, value) in [
        ("CK_CHECK_DELAY", "soon"),
        ("CK_KAFKA_SASL_MECHANISM", "MAGIC"),
        ("CK_SITE_URL", "ftp://ann:Sup3r-s3cret-pw@127.0.0.1/"),
        ("CK_SITE_URL", "http://ann:Sup3r-s3cret-pw@/"),
    ] {
        let mut env = env.clone();
        env.retain(|(k, _)| k != var);
        env.push((var.into(), value.into()));
        let (code, text) = run(bin, &env, &[]).await;
        assert_hidden(&format!("{var}={value}"), (code, CONFIG), &text);
    }
    // A running producer with a site password: its /metrics label shows `ann:***@`.
    let port = common::free_port();
    let site = common::sites::http_site().replacen("://", &format!("://ann:{PASSWORD}@"), 1);
    let mut env = tb.kafka_env(Listener::Plaintext, "secrets-metrics");
    env.push(("CK_SITE_URL".into(), format!("{site}/ok")));
    env.push(("CK_HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
    env.push(("CK_CHECK_DELAY".into(), "0.5".into()));
    let child = tokio::process::Command::new(bin)
        .envs(env.iter().cloned())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // A target has no series before its first check ends: wait for it.
    let start = std::time::Instant::now();
    let metrics = loop {
        let (_, metrics) = common::http_get_when_up(port, "/metrics").await;
        if metrics.contains("probe_success{") || start.elapsed() > Duration::from_secs(10) {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = common::stop(child, Duration::from_secs(20)).await;
    assert!(metrics.contains("url=\"http://ann:***@"), "{metrics}");
    assert_no_password("/metrics of a running producer", &metrics);
    assert_no_password("the log of a running producer", &log);
}
