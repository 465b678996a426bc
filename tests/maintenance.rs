//! Maintenance windows through the binaries: `checksite-consumer maintenance add|list|end`
//! against the test bed's PostgreSQL, a running consumer applying them within 5 s: a site
//! down and back within its window sends nothing; a window ended while its site is still
//! down sends one `down` at the first check after; `--match` catches only its URLs; the
//! checks in a window count apart, so the uptime equals SQL over the raw rows without
//! them; the page shows MAINTENANCE and the windows.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::webhook::{Answer, Receiver};

const CONSUMER: &str = env!("CARGO_BIN_EXE_checksite-consumer");

/// `checksite-consumer maintenance ARGS`: (exit code, stdout, stderr).
fn maintenance(db_url: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(CONSUMER)
        .arg("maintenance")
        .args(args)
        .env_clear()
        .env("CK_POSTGRESQL_URL", db_url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(url: &str, up: bool, at: chrono::DateTime<Utc>) -> common::TimedRecord {
    common::eu_check(url, up, at, Utc::now())
}

#[tokio::test]
async fn windows_silence_alerts_count_apart_and_show_on_the_page() {
    let tb = testbed_or_skip!();
    let topic = common::unique("maintenance");
    let (pg, db_url) = tb.fresh_database("maintenance").await;
    let (receiver_port, page) = (common::free_port(), common::free_port());
    let receiver = Receiver::start_on(receiver_port, Answer::Ok);
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_ALERT_WEBHOOK_URL", Receiver::url(receiver_port))
        .env("CK_ALERT_AFTER", "1")
        .env("CK_ALERT_RECOVER_AFTER", "1")
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{page}"))
        .spawn()
        .unwrap();
    let (a, b, c) = (
        "https://a.example/",
        "https://b.example/",
        "https://c.example/",
    );
    // Up half an hour before the window: that check counts.
    let before = Utc::now() - TimeDelta::minutes(30);
    common::produce_timed(&tb, &topic, 3, vec![check(a, true, before)]).await;
    common::http_get_when_up(page, "/healthz").await;
    // Bad input: exit 2, one line, nothing written.
    let (code, _, err) = maintenance(
        &db_url,
        &["add", "--match", "(", "--for", "1h", "--reason", "x"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a regular expression"), "{err}");
    let (code, out, err) = maintenance(
        &db_url,
        &[
            "add",
            "--url",
            a,
            "--for",
            "1h",
            "--reason",
            "database upgrade",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("maintenance window "), "{out}");
    let (code, out, _) = maintenance(
        &db_url,
        &[
            "add",
            "--match",
            "^https://b\\.",
            "--for",
            "1h",
            "--reason",
            "b's move",
        ],
    );
    assert_eq!(code, 0);
    let b_window: String = out
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .into();
    let (_, listed, _) = maintenance(&db_url, &["list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("database upgrade") && listed.contains("\tnow\t"),
        "{listed}"
    );
    // In force within 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let now = Utc::now();
    let mut records = Vec::new();
    for (i, up) in [false, false, true].into_iter().enumerate() {
        let at = now + TimeDelta::milliseconds(100 * i as i64);
        records.push(check(a, up, at));
        records.push(check(b, false, at));
        records.push(check(c, false, at));
    }
    common::produce_timed(&tb, &topic, 3, records).await;
    // Only c, outside every window, is decided down.
    let sent = receiver.wait_for_ids(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_now: Vec<(String, String)> = receiver
        .delivered()
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap().into(),
                n["url"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(sent_now, [("down".to_string(), c.to_string())], "{sent:?}");
    // The page: a and b in maintenance, with the reason; the windows listed.
    let start = Instant::now();
    let api = loop {
        let (_, body) = common::http_get_when_up(page, "/api/status").await;
        let api: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let state = |url: &str| {
            api["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["url"] == url)
                .map(|t| t["state"].as_str().unwrap_or("").to_string())
        };
        if state(a).as_deref() == Some("maintenance") && state(b).as_deref() == Some("maintenance")
        {
            assert_eq!(state(c).as_deref(), Some("down"));
            break api;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (_, html) = common::http_get_when_up(page, "/").await;
    assert!(
        html.contains("maintenance until") && html.contains("database upgrade"),
        "{html}"
    );
    assert!(html.contains("<section id=\"maintenance\""), "{html}");
    // a's checks in the window count apart: its uptime is that of the check before.
    let db = common::open(&pg).await;
    let sql_uptime = common::query_i64(
        &db,
        "SELECT (100 * count(*) FILTER (WHERE up) / count(*))::bigint FROM events \
         WHERE url = 'https://a.example/' AND ts < (SELECT starts_at AT TIME ZONE 'UTC' FROM maintenance_windows \
           WHERE urls @> ARRAY['https://a.example/'])",
    )
    .await;
    let a_target = api["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["url"] == a)
        .unwrap();
    assert_eq!(
        a_target["uptime_24h"].as_f64(),
        Some(sql_uptime as f64),
        "{a_target}"
    );
    assert_eq!(
        common::query_i64(
            &db,
            "SELECT sum(maint_checks)::bigint FROM rollups_hourly WHERE url = 'https://a.example/'"
        )
        .await,
        3
    );
    // b's window ends with b still down: one `down` at its next check.
    let (code, out, _) = maintenance(&db_url, &["end", &b_window]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("maintenance window {b_window} ended").as_str())
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    common::produce_timed(&tb, &topic, 3, vec![check(b, false, Utc::now())]).await;
    let sent = receiver.wait_for_ids(2, Duration::from_secs(30)).await;
    assert_eq!(
        (&sent[1]["kind"], &sent[1]["url"]),
        (&"down".into(), &b.into()),
        "{sent:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.delivered().len(),
        2,
        "a sent nothing, before or after"
    );
    common::stop(consumer, Duration::from_secs(20)).await;
}
