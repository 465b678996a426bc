//! The consumer's status page (`GET /`, `GET /api/status` on `CK_HTTP_ADDR`): its figures
//! against the same figures computed in SQL from the raw rows, the page in a real browser
//! (Debian's headless Chromium), and data that must show as text (markup, passwords).

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Listener, http_get, sites};
use tokio::process::Command;

const PRODUCER: &str = env!("CARGO_BIN_EXE_checksite-producer");

/// `/api/status` once the consumer has stored `want` events and the page's 2 s cache has
/// passed since; the sites by (url, producer).
async fn api_status_after(
    db: &tokio_postgres::Client,
    port: u16,
    want: i64,
) -> (
    serde_json::Value,
    HashMap<(String, String), serde_json::Value>,
) {
    let started = Instant::now();
    let stored = async || match db.query_one("SELECT count(*) FROM events", &[]).await {
        Ok(row) => row.get::<_, i64>(0),
        Err(_) => 0, // not migrated yet
    };
    while stored().await < want {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the consumer did not store {want} events in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rollups are folded from the transactions' deltas every second.
    while common::query_i64(db, "SELECT count(*) FROM rollup_deltas").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rollup deltas were not folded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = common::api_status_as_of(port, chrono::Utc::now()).await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let sites = json["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| {
            // Keyed by the target's id (as the README defines it), not by its URL as shown.
            let key = (
                s["id"].as_str().unwrap().to_string(),
                s["producer"].as_str().unwrap().to_string(),
            );
            (key, s.clone())
        })
        .collect();
    (json, sites)
}

/// The bounds of the histogram bucket that holds `exact` (the nearest-rank percentile,
/// SQL's `percentile_disc`, which the page's figure must fall in), a margin of 1 ms for
/// rounding.
fn bucket_range(exact: f64) -> (f64, f64) {
    let bounds = common::README_LATENCY_BOUNDS_MS;
    let bucket = |v: f64| bounds.partition_point(|b| *b <= v);
    let low = bucket(exact.floor());
    let high = bucket(exact.ceil());
    let lo = if low == 0 { 0.0 } else { bounds[low - 1] };
    let hi = bounds.get(high).copied().unwrap_or(f64::MAX);
    (lo - 1.0, hi + 1.0)
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// The page as Chromium sees it once loaded (`--dump-dom`), and a screenshot.
fn chromium(port: u16, screenshot: &std::path::Path) -> Option<String> {
    let chromium = common::debian_program("chromium")?;
    let url = format!("http://127.0.0.1:{port}/");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let dom = std::process::Command::new(&chromium)
        .args(flags)
        .args(["--virtual-time-budget=2000", "--dump-dom", &url])
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(dom.status.success(), "chromium --dump-dom failed");
    let shot = std::process::Command::new(&chromium)
        .args(flags)
        .arg(format!("--screenshot={}", screenshot.display()))
        .args(["--window-size=1280,800", &url])
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(shot.status.success(), "chromium --screenshot failed");
    Some(String::from_utf8_lossy(&dom.stdout).into_owned())
}

#[tokio::test]
async fn the_page_and_its_api_agree_with_the_raw_rows_and_a_browser() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status");
    let (pg, db_url) = tb.fresh_database("status").await;
    let site = sites::http_site();
    let tls_site = sites::https_site(&tb.certs.join("server.cert"), &tb.certs.join("server.key"));
    let back_at = chrono::Utc::now().timestamp_millis() + 2_500;
    let targets = [
        format!("{site}/ok"),
        format!("{site}/slow/120"),
        format!("{site}/up-after/{back_at}"),
        sites::refused_site(),
        format!("{tls_site}/ok"),
    ];
    let page_port = common::free_port();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{page_port}"))
        .spawn()
        .unwrap();
    // Two vantage points checking the same sites.
    let producer = |name: &str| {
        Command::new(PRODUCER)
            .envs(tb.kafka_env(Listener::MutualTls, &topic))
            .env("CK_SITE_URL", targets.join(" "))
            .env("CK_SITE_CA", tb.cert("ca.pem"))
            .env("CK_CHECK_DELAY", "0.25")
            .env("CK_PRODUCER_ID", name)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let (a, b) = (producer("vantage-a"), producer("vantage-b"));
    // A first read while checks still arrive: the page keeps those rollups, and what
    // it shows at the end must still be every event's (it reads only what changed).
    let early = Instant::now() + Duration::from_secs(3);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let read = http_get(page_port, "/api/status");
        if let Some((200, body)) = &read
            && body.contains("vantage-a")
            && body.contains("vantage-b")
        {
            break;
        }
        assert!(Instant::now() < early + Duration::from_secs(10), "{read:?}");
    }
    tokio::time::sleep_until(early.into()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let published = |log: &str| -> i64 {
        let line = log
            .lines()
            .find(|l| l.contains("event(s) published"))
            .unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "event(s)").unwrap();
        words[at - 1].parse().unwrap()
    };
    let want = published(&common::stop(a, Duration::from_secs(20)).await)
        + published(&common::stop(b, Duration::from_secs(20)).await);
    let db = common::open(&pg).await;
    let (json, api) = api_status_after(&db, page_port, want).await;
    assert_eq!(api.len(), targets.len() * 2, "{json}");

    // The same figures from the raw rows (all of them fall in the last 24 h).
    let rows = db
        .query(
            "SELECT url, producer, count(*), count(*) FILTER (WHERE up), \
               percentile_disc(0.5) WITHIN GROUP (ORDER BY elapsed) FILTER (WHERE up)::float8, \
               percentile_disc(0.95) WITHIN GROUP (ORDER BY elapsed) FILTER (WHERE up)::float8, \
               max(cert_expires_at), \
               min(ts) FILTER (WHERE up = (SELECT l.up FROM events l WHERE l.url = e.url \
                 AND l.producer = e.producer ORDER BY l.ts DESC LIMIT 1) AND ts > coalesce(( \
                 SELECT max(o.ts) FROM events o WHERE o.url = e.url AND o.producer = e.producer \
                 AND o.up <> (SELECT l.up FROM events l WHERE l.url = e.url \
                 AND l.producer = e.producer ORDER BY l.ts DESC LIMIT 1)), '-infinity')) \
                 AT TIME ZONE 'UTC' \
             FROM events AS e GROUP BY url, producer",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), api.len());
    for row in rows {
        let (url, producer): (String, String) = (row.get(0), row.get(1));
        let s = &api[&(common::target_id(&url), producer.clone())];
        let (checks, up): (i64, i64) = (row.get(2), row.get(3));
        let uptime = 100.0 * up as f64 / checks as f64;
        for field in ["uptime_24h", "uptime_7d", "uptime_30d"] {
            let got = s[field].as_f64().unwrap();
            assert!(
                (got - uptime).abs() < 1e-9,
                "{url} {producer} {field}: {got} != {uptime}"
            );
        }
        for (field, exact) in [
            ("p50_ms_24h", row.get::<_, Option<f64>>(4)),
            ("p95_ms_24h", row.get(5)),
        ] {
            match exact {
                None => assert!(s[field].is_null(), "{url} {producer} {field}: {s}"),
                Some(exact) => {
                    let got = s[field].as_f64().unwrap();
                    let (lo, hi) = bucket_range(exact);
                    assert!(
                        (lo..=hi).contains(&got),
                        "{url} {producer} {field}: {got}, SQL {exact}"
                    );
                }
            }
        }
        let cert: Option<DateTime<Utc>> = row.get(6);
        assert_eq!(
            cert.map(|c| c.timestamp_millis()),
            s["cert_expires_at"]
                .as_str()
                .map(|_| time(&s["cert_expires_at"]).timestamp_millis()),
            "{url} {producer}"
        );
        let since: DateTime<Utc> = row.get(7);
        assert_eq!(time(&s["since"]), since, "{url} {producer} since");
    }
    // What each kind of site looks like.
    let of = |path: &str, producer: &str| {
        let url = targets.iter().find(|t| t.contains(path)).unwrap();
        &api[&(common::target_id(url), producer.to_string())]
    };
    for vantage in ["vantage-a", "vantage-b"] {
        assert_eq!(of("/ok", vantage)["up"], true);
        assert_eq!(of("/ok", vantage)["uptime_24h"], 100.0);
        assert!(of("/slow/120", vantage)["p50_ms_24h"].as_f64().unwrap() >= 110.0);
        let back = of("/up-after/", vantage);
        assert_eq!(back["up"], true, "{back}");
        let partly = back["uptime_24h"].as_f64().unwrap();
        assert!(partly > 10.0 && partly < 90.0, "{back}");
        let down = &api[&(common::target_id(&targets[3]), vantage.to_string())];
        assert_eq!(down["up"], false);
        assert_eq!(down["uptime_24h"], 0.0);
        assert!(down["last_error"].as_str().is_some(), "{down}");
        assert!(of(&tls_site, vantage)["cert_expires_at"].is_string());
    }

    // The page in a real browser: one row per URL, its state and uptime as in the API.
    let targets_api: Vec<serde_json::Value> = json["targets"].as_array().unwrap().clone();
    assert_eq!(targets_api.len(), targets.len(), "{json}");
    if let Some(dom) = chromium(page_port, &shots().0) {
        let rows: Vec<&str> = dom.split("<tr class=\"t ").skip(1).collect();
        assert_eq!(rows.len(), targets.len(), "{dom}");
        for t in &targets_api {
            let url = t["url"].as_str().unwrap();
            let row = rows
                .iter()
                .find(|r| r.contains(&format!("data-url=\"{url}\"")))
                .unwrap_or_else(|| panic!("no row for {url}"));
            let state = t["state"].as_str().unwrap().replace('_', "");
            assert!(
                row.contains(&format!("data-state=\"{state}\"")),
                "{state}: {row}"
            );
            let uptime = format!("{:.2} %", t["uptime_24h"].as_f64().unwrap());
            assert!(
                row.contains(&format!(
                    "<td class=\"uptime-24h\" data-label=\"24 h\">{uptime}</td>"
                )),
                "{uptime}: {row}"
            );
            // Colour is never the only signal: the state is written out.
            let label = ["UP", "DOWN", "DEGRADED", "NO DATA"]
                .into_iter()
                .find(|l| l.to_lowercase().replace(' ', "_") == t["state"].as_str().unwrap())
                .unwrap();
            assert!(row.contains(&format!(" {label}</span>")), "{label}: {row}");
            // One dot per vantage point, each saying its own state.
            for v in t["vantage"].as_array().unwrap() {
                let p = v["producer"].as_str().unwrap();
                assert!(
                    row.contains(&format!("data-producer=\"{p}\"")),
                    "{p}: {row}"
                );
            }
        }
        let down = targets_api.iter().filter(|t| t["state"] == "down").count();
        assert!(dom.contains(&format!(">{down} down</span>")), "summary");
        let png = std::fs::read(shots().0).expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} bytes",
            png.len()
        );
    }
    common::stop(consumer, Duration::from_secs(20)).await;
}

/// Where the screenshots go (1280×800, 390×844): `target/tmp`, what `just demo` copies
/// next to the README.
fn shots() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    (
        dir.join("status-page.png"),
        dir.join("status-page-phone.png"),
    )
}

#[tokio::test]
async fn markup_and_passwords_in_urls_are_shown_as_text() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status-xss");
    let (pg, db_url) = tb.fresh_database("statusxss").await;
    let hostile = r#"https://example.com/"><script>alert('x')</script>"#;
    let secret = "https://admin:hunter2@example.com/private";
    let mut records = Vec::new();
    let named = "https://named.example/";
    for url in [hostile, secret, named] {
        let mut ev = common::sample_event(url, 1);
        ev.producer = r#"<b onmouseover="alert(1)">vp</b>"#.into();
        ev.up = Some(true);
        if url == named {
            // A name is shown as it is given: as text.
            ev.name = Some("<script>alert('x')</script>".into());
        }
        records.push((url.as_bytes().to_vec(), ev.to_json()));
    }
    common::produce_raw(&tb, &topic, 1, records).await;
    let port = common::free_port();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let db = common::open(&pg).await;
    let (json, _) = api_status_after(&db, port, 3).await;
    let (_, html) = http_get(port, "/").expect("/ answers");
    for text in [&html, &json.to_string()] {
        assert!(!text.contains("hunter2"), "a password shown: {text}");
    }
    // The user information is not shown at all.
    let shown: Vec<&str> = json["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["url"].as_str())
        .collect();
    assert!(shown.contains(&"https://example.com/private"), "{json}");
    assert!(!json.to_string().contains("admin"), "{json}");
    // The page's own filter script is the one script element.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("<b onmouseover"), "{html}");
    // A URL is shown as the URL standard writes it: its markup percent-encoded.
    assert!(
        html.contains("https://example.com/%22%3E%3Cscript%3E"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{html}"
    );
    if let Some(dom) = chromium(port, &std::env::temp_dir().join(common::unique("xss.png"))) {
        assert_eq!(
            dom.matches("<script").count(),
            1,
            "the browser built another script element: {dom}"
        );
        assert!(
            dom.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
            "{dom}"
        );
    }
    common::stop(consumer, Duration::from_secs(20)).await;
}
