//! The status page as a visitor meets it: each URL's state across vantage points (down
//! everywhere, down from one of two with a quorum of two, up, stale), the search, the
//! badges (parsed as SVG by an XML parser, their numbers the API's), the layout in
//! headless Chromium at 1280×800 and 390×844, and one URL's page against SQL over the
//! raw rows (daily uptimes, incident durations).

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use common::raw_site;
use common::webhook::{Answer, Receiver};

/// A v1 event of `url` from `producer` at `at`, up (200, `ms`) or down (503).
fn check(url: &str, producer: &str, up: bool, at: DateTime<Utc>, ms: u64) -> common::TimedRecord {
    with_cert(url, producer, up, at, ms, None)
}

/// As [`check`], with the certificate's end the producer saw.
fn with_cert(
    url: &str,
    producer: &str,
    up: bool,
    at: DateTime<Utc>,
    ms: u64,
    cert_expires_at: Option<DateTime<Utc>>,
) -> common::TimedRecord {
    let mut ev = common::sample_event(url, 1);
    ev.producer = producer.to_string();
    ev.checked_at = at;
    ev.up = Some(up);
    ev.elapsed_ms = ms;
    ev.status = Some(if up { 200 } else { 503 });
    ev.cert_expires_at = cert_expires_at;
    (url.as_bytes().to_vec(), Some(ev.to_json()), at)
}

fn page_consumer(
    tb: &common::Testbed,
    topic: &str,
    db_url: &str,
    http: u16,
    extra: &[(&str, String)],
) -> tokio::process::Child {
    let receiver = common::free_port();
    let _ = Receiver::start_on(receiver, Answer::Ok);
    let mut cmd = common::consumer(tb, topic, db_url, &[]);
    cmd.env("CK_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("CK_ALERT_WEBHOOK_URL", Receiver::url(receiver));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Wait until every event is stored and folded; then the API as of now.
async fn api_when_stored(db: &tokio_postgres::Client, port: u16, n: i64) -> serde_json::Value {
    common::wait_stored_and_folded(db, n).await;
    serde_json::from_str(&common::api_status_as_of(port, Utc::now()).await).unwrap()
}

/// The texts of an SVG, read by Python's XML parser (a badge that is not XML fails).
fn svg_texts(svg: &str) -> Vec<String> {
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E\nt = E.parse(sys.stdin)\nassert t.getroot().tag == '{http://www.w3.org/2000/svg}svg'\nprint('\\n'.join(x.text or '' for x in t.iter('{http://www.w3.org/2000/svg}text')))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(svg.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not SVG as XML reads it: {} {svg}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The consumer's page port, for [`same_origin`].
static PAGE_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
/// The frame's size, for the probe page.
static FRAME: std::sync::Mutex<(u32, u32)> = std::sync::Mutex::new((0, 0));

/// The status page and a probe page of the test's own, from one origin (a script may read
/// a frame's document only from its own origin): `/probe.html` holds the page in a frame
/// of the screen's size and writes how many URL rows are wholly on it and how wide the
/// page is; any other path is the consumer's, relayed.
fn same_origin(r: &raw_site::Request, _: u16) -> Vec<raw_site::Step> {
    if r.path == "/probe.html" {
        let (width, height) = *FRAME.lock().unwrap();
        let probe = format!(
            "<!doctype html><body style=\"margin:0\"><iframe id=f src=\"/\" \
             style=\"border:0;width:{width}px;height:{height}px\"></iframe><div id=out>waiting</div><script>\
             document.getElementById('f').onload=function(){{var d=this.contentDocument;\
             var rows=[].filter.call(d.querySelectorAll('tr.t'),function(r){{var b=r.getBoundingClientRect();return b.top>=0&&b.bottom<={height};}});\
             document.getElementById('out').textContent='rows='+rows.length+' width='+d.documentElement.scrollWidth;}};</script>"
        );
        return raw_site::whole("200 OK", "Content-Type: text/html\r\n", probe.as_bytes());
    }
    let port = PAGE_PORT.load(std::sync::atomic::Ordering::SeqCst);
    match common::http_get(port, &r.path) {
        Some((status, body)) => raw_site::whole(
            &format!("{status} X"),
            "Content-Type: text/html; charset=utf-8\r\n",
            body.as_bytes(),
        ),
        None => raw_site::whole("502 Bad Gateway", "", b""),
    }
}

/// The page on `port` in headless Chromium sized `width`×`height`: how many URL rows are
/// wholly on the screen, and how wide the page is (it must not scroll sideways); and a
/// screenshot. None (said) without Chromium.
fn layout(
    port: u16,
    (width, height): (u32, u32),
    screenshot: &std::path::Path,
) -> Option<(usize, i64)> {
    let chromium = common::debian_program("chromium")?;
    PAGE_PORT.store(port, std::sync::atomic::Ordering::SeqCst);
    *FRAME.lock().unwrap() = (width, height);
    let relay = raw_site::serve(None, same_origin);
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let dom = std::process::Command::new(&chromium)
        .args(flags)
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("http://127.0.0.1:{relay}/probe.html"))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let out = dom
        .split("<div id=\"out\">")
        .nth(1)
        .and_then(|d| d.split('<').next())
        .unwrap_or_else(|| panic!("no measure in the probe's page: {dom}"))
        .to_string();
    let shot = std::process::Command::new(&chromium)
        .args(flags)
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(shot.status.success());
    let number = |key: &str| {
        out.split(key)
            .nth(1)
            .and_then(|n| n.split(' ').next())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("the probe said {out:?}"))
    };
    eprintln!("{width}x{height}: {out}");
    Some((number("rows=") as usize, number("width=")))
}

#[tokio::test]
async fn states_search_badges_and_a_browser() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status-sites");
    let (pg, db_url) = tb.fresh_database("status_sites").await;
    let now = Utc::now() - TimeDelta::seconds(10);
    let mut records = Vec::new();
    for i in 0..52 {
        let url = format!("https://site-{i:02}.example/");
        for (n, p) in ["eu", "us"].iter().enumerate() {
            for s in 0..4 {
                // site-03's certificate ends in five days: flagged on its row.
                let cert = (i == 3).then(|| now + TimeDelta::days(5));
                records.push(with_cert(
                    &url,
                    p,
                    s != 1 || i % 5 != 0,
                    now + TimeDelta::seconds(s),
                    20 + i + n as u64,
                    cert,
                ));
            }
        }
    }
    for s in 0..4 {
        let at = now + TimeDelta::seconds(s);
        records.push(check(
            "https://down-everywhere.example/",
            "eu",
            false,
            at,
            0,
        ));
        records.push(check(
            "https://down-everywhere.example/",
            "us",
            false,
            at,
            0,
        ));
        records.push(check("https://down-from-eu.example/", "eu", false, at, 0));
        records.push(check("https://down-from-eu.example/", "us", true, at, 30));
        let hour_ago = at - TimeDelta::hours(1);
        records.push(check(
            "https://gone-quiet.example/",
            "eu",
            true,
            hour_ago,
            30,
        ));
        records.push(check(
            "https://gone-quiet.example/",
            "us",
            true,
            hour_ago,
            30,
        ));
    }
    let n = common::produce_timed(&tb, &topic, 3, records).await as i64;
    let port = common::free_port();
    let consumer = page_consumer(
        &tb,
        &topic,
        &db_url,
        port,
        &[("CK_ALERT_QUORUM", "2".into())],
    );
    let db = common::open(&pg).await;
    let api = api_when_stored(&db, port, n).await;
    let targets = api["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 55);
    let state = |url: &str| {
        targets
            .iter()
            .find(|t| t["url"] == url)
            .map(|t| t["state"].clone())
    };
    assert_eq!(
        state("https://down-everywhere.example/"),
        Some("down".into())
    );
    assert_eq!(
        state("https://down-from-eu.example/"),
        Some("degraded".into())
    );
    assert_eq!(state("https://gone-quiet.example/"), Some("no_data".into()));
    assert_eq!(state("https://site-07.example/"), Some("up".into()));
    // Down, then degraded, first.
    assert_eq!(targets[0]["url"], "https://down-everywhere.example/");
    assert_eq!(targets[1]["url"], "https://down-from-eu.example/");
    // 55 URLs, 50 per page: the second page holds the last five, and says so.
    let (_, html) = common::http_get_when_up(port, "/?page=2").await;
    let rows: Vec<&str> = html.split("<tr class=\"t ").skip(1).collect();
    assert_eq!(rows.len(), 5, "{html}");
    assert!(html.contains("Page 2 of 2"), "{html}");
    assert!(rows[4].contains("data-url=\"https://site-51.example/\""));
    // Exactly one row warns of its certificate: site-03's.
    let (_, html) = common::http_get_when_up(port, "/").await;
    let warned: Vec<&str> = html
        .split("<tr class=\"t ")
        .filter(|r| r.contains("⚠ certificate expires"))
        .collect();
    assert_eq!(warned.len(), 1, "{html}");
    assert!(warned[0].contains("data-url=\"https://site-03.example/\""));
    // The search finds one URL among the 55, server-side.
    let (_, html) = common::http_get_when_up(port, "/?q=SITE-17").await;
    let rows: Vec<&str> = html.split("<tr class=\"t ").skip(1).collect();
    assert_eq!(rows.len(), 1, "{html}");
    assert!(rows[0].contains("data-url=\"https://site-17.example/\""));
    // Every badge is SVG, and says what the API says.
    let site = targets
        .iter()
        .find(|t| t["url"] == "https://site-10.example/")
        .unwrap();
    let url = "https%3A%2F%2Fsite-10.example%2F";
    for (badge, field) in [
        ("uptime-24h", "uptime_24h"),
        ("uptime-7d", "uptime_7d"),
        ("uptime-30d", "uptime_30d"),
    ] {
        let (_, svg) =
            common::http_get_when_up(port, &format!("/badge/{badge}.svg?url={url}")).await;
        let want = format!("{:.2}%", site[field].as_f64().unwrap());
        assert_eq!(svg_texts(&svg), [badge.replace('-', " "), want]);
    }
    let (_, svg) =
        common::http_get_when_up(port, &format!("/badge/response-time.svg?url={url}")).await;
    assert_eq!(
        svg_texts(&svg),
        [
            "response time".to_string(),
            format!("{:.0} ms", site["p50_ms_24h"].as_f64().unwrap())
        ]
    );
    let (_, svg) = common::http_get_when_up(
        port,
        "/badge/status.svg?url=https%3A%2F%2Fdown-everywhere.example%2F",
    )
    .await;
    assert_eq!(svg_texts(&svg), ["status", "down"]);
    let (status, svg) = common::http_get_when_up(
        port,
        "/badge/status.svg?url=https%3A%2F%2Fnowhere.example%2F",
    )
    .await;
    assert_eq!(
        (status, svg_texts(&svg)),
        (200, vec!["status".to_string(), "unknown".to_string()])
    );
    // In a real browser: at least 25 URLs on a 1280x800 screen; nothing wider than a phone.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Some((rows, width)) = layout(port, (1280, 800), &dir.join("status-page.png")) {
        assert!(rows >= 25, "{rows} URLs on a 1280x800 screen");
        assert!(width <= 1280, "{width} px wide");
        let (_, width) = layout(port, (390, 844), &dir.join("status-page-phone.png")).unwrap();
        assert!(width <= 390, "{width} px wide on a phone");
    }
    common::stop(consumer, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_site_page_equals_sql_over_the_raw_rows() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status-site");
    let (pg, db_url) = tb.fresh_database("status_site").await;
    let url = "https://shop.example/";
    // Four days, each with its own share of failures; today one incident seen from eu
    // (quorum 1): six failures in a row, then good checks.
    let today = utc_day(Utc::now());
    let mut records = Vec::new();
    for back in (1..4).rev() {
        let day = today - TimeDelta::days(back);
        for i in 0..40i64 {
            let at = day + TimeDelta::hours(2) + TimeDelta::minutes(i);
            for p in ["eu", "us"] {
                records.push(check(url, p, i % (back + 2) != 0, at, 40 + i as u64));
            }
        }
    }
    let start = (Utc::now() - TimeDelta::minutes(30)).max(today + TimeDelta::minutes(1));
    for i in 0..20i64 {
        let at = start + TimeDelta::seconds(30 * i);
        records.push(check(url, "eu", !(5..11).contains(&i), at, 50));
        records.push(check(url, "us", true, at, 55));
    }
    let n = common::produce_timed(&tb, &topic, 1, records).await as i64;
    let port = common::free_port();
    let consumer = page_consumer(&tb, &topic, &db_url, port, &[]);
    let db = common::open(&pg).await;
    api_when_stored(&db, port, n).await;
    let (status, body) =
        common::http_get_when_up(port, "/api/site?url=https%3A%2F%2Fshop.example%2F").await;
    assert_eq!(status, 200, "{body}");
    let site: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Daily uptimes and checks, against the raw rows.
    let days = db
        .query(
            "SELECT date_trunc('day', ts) AT TIME ZONE 'UTC', count(*), \
             (100.0 * count(*) FILTER (WHERE up) / count(*))::float8 FROM events GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    let shown = site["days"].as_array().unwrap();
    assert_eq!(shown.len(), 90);
    for r in &days {
        let day: DateTime<Utc> = r.get(0);
        let slot = shown
            .iter()
            .find(|d| DateTime::parse_from_rfc3339(d["start"].as_str().unwrap()).unwrap() == day)
            .unwrap_or_else(|| panic!("no {day} on the page"));
        assert_eq!(slot["checks"].as_i64(), Some(r.get::<_, i64>(1)), "{day}");
        let uptime = slot["uptime"].as_f64().unwrap();
        assert!(
            (uptime - r.get::<_, f64>(2)).abs() < 1e-9,
            "{day}: {uptime}"
        );
    }
    assert_eq!(
        shown
            .iter()
            .filter(|d| d["checks"].as_i64() > Some(0))
            .count(),
        days.len()
    );
    // The incident: from eu's first failure to its first good check after the run.
    let row = db
        .query_one(
            "SELECT min(ts) AT TIME ZONE 'UTC' FROM events WHERE producer = 'eu' AND NOT up \
             AND ts >= $1::timestamptz AT TIME ZONE 'UTC'",
            &[&start],
        )
        .await
        .unwrap();
    let first_down: DateTime<Utc> = row.get(0);
    let back_up: DateTime<Utc> = db
        .query_one(
            "SELECT min(ts) AT TIME ZONE 'UTC' FROM events WHERE producer = 'eu' AND up \
             AND ts > $1::timestamptz AT TIME ZONE 'UTC'",
            &[&first_down],
        )
        .await
        .unwrap()
        .get(0);
    let incidents = site["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{body}");
    let i = &incidents[0];
    let at = |v: &serde_json::Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(at(&i["start"]), first_down);
    assert_eq!(at(&i["end"]), back_up);
    assert_eq!(
        i["duration_s"].as_i64(),
        Some((back_up - first_down).num_seconds())
    );
    assert_eq!(i["producers"], serde_json::json!(["eu"]));
    assert_eq!(i["first_error"], "HTTP 503");
    // Its latest checks, newest first, from both vantage points.
    let recent = site["recent"].as_array().unwrap();
    assert!(recent.len() >= 10, "{body}");
    let times: Vec<_> = recent.iter().map(|c| at(&c["checked_at"])).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    let (_, html) = common::http_get_when_up(port, "/site?url=https%3A%2F%2Fshop.example%2F").await;
    for text in [
        "Vantage points",
        "latency per hour, last 48 hours",
        "Incidents",
        "Latest checks",
        " ms</text>",
    ] {
        assert!(html.contains(text), "{text}");
    }
    common::stop(consumer, Duration::from_secs(30)).await;
}

/// The start of `t`'s UTC day.
fn utc_day(t: DateTime<Utc>) -> DateTime<Utc> {
    t - TimeDelta::seconds(i64::from(t.num_seconds_from_midnight()))
        - TimeDelta::nanoseconds(i64::from(t.nanosecond()))
}

#[tokio::test]
async fn the_latest_checks_are_each_vantage_points_newest_five_across_folds() {
    let tb = testbed_or_skip!();
    let topic = common::unique("status-recent");
    let (pg, db_url) = tb.fresh_database("status_recent").await;
    let url = "https://shop.example/";
    let base = Utc::now() - TimeDelta::minutes(10);
    // (vantage point, seconds after `base`): the elapsed ms tell the checks apart.
    let wave = |checks: &[(&str, i64)]| -> Vec<common::TimedRecord> {
        checks
            .iter()
            .map(|(p, s)| {
                check(
                    url,
                    p,
                    s % 20 != 0,
                    base + TimeDelta::seconds(*s),
                    (100 + *s) as u64,
                )
            })
            .collect()
    };
    let first: Vec<(&str, i64)> = (0..8)
        .flat_map(|k| [("eu", 10 * k), ("us", 10 * k + 3)])
        .collect();
    let n = common::produce_timed(&tb, &topic, 1, wave(&first)).await as i64;
    let port = common::free_port();
    let consumer = page_consumer(&tb, &topic, &db_url, port, &[]);
    let db = common::open(&pg).await;
    api_when_stored(&db, port, n).await;
    // Folded after the first: late checks, one among eu's newest five (65 s) and one
    // not (35 s); one newer for us, and one older than all it has.
    let second = [("eu", 65), ("eu", 35), ("us", 100), ("us", -50)];
    let n = n + common::produce_timed(&tb, &topic, 1, wave(&second)).await as i64;
    api_when_stored(&db, port, n).await;
    // Five at once: all newer than eu's newest (they replace its five); four newer than
    // us' newest and one late (95 s) that is not among its newest five.
    let third = [
        ("eu", 200),
        ("eu", 210),
        ("eu", 220),
        ("eu", 230),
        ("eu", 240),
        ("us", 110),
        ("us", 120),
        ("us", 130),
        ("us", 140),
        ("us", 95),
    ];
    let n = n + common::produce_timed(&tb, &topic, 1, wave(&third)).await as i64;
    api_when_stored(&db, port, n).await;
    // Fewer than five, all newer than the newest stored (a fold keeping up): they go in
    // front of the stored ones, the oldest of which drop out.
    let fourth = [("eu", 250), ("eu", 260), ("us", 150)];
    let n = n + common::produce_timed(&tb, &topic, 1, wave(&fourth)).await as i64;
    api_when_stored(&db, port, n).await;
    let (status, body) =
        common::http_get_when_up(port, "/api/site?url=https%3A%2F%2Fshop.example%2F").await;
    assert_eq!(status, 200, "{body}");
    let site: serde_json::Value = serde_json::from_str(&body).unwrap();
    for p in ["eu", "us"] {
        let shown: Vec<(DateTime<Utc>, i64, bool)> = site["recent"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["producer"] == p)
            .map(|c| {
                let at = DateTime::parse_from_rfc3339(c["checked_at"].as_str().unwrap());
                (
                    at.unwrap().into(),
                    c["elapsed_ms"].as_i64().unwrap(),
                    c["up"] == true,
                )
            })
            .collect();
        let newest: Vec<(DateTime<Utc>, i64, bool)> = db
            .query(
                "SELECT ts AT TIME ZONE 'UTC', elapsed::bigint, up FROM events \
                 WHERE url = $1 AND producer = $2 ORDER BY ts DESC LIMIT 5",
                &[&url, &p],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(shown, newest, "{p}'s latest checks");
    }
    common::stop(consumer, Duration::from_secs(30)).await;
}
