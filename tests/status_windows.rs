//! The status page's windows against SQL over the raw rows: checks 40, 10 and 2 days old
//! and from the last hours, each age with its own share of failures and its own
//! latencies, so that every window (24 h, 7 d, 30 d) has figures of its own; and each
//! series' last check (status, time, elapsed, error kind) as the newest raw row says.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// (age, checks, every how many a failure, elapsed ms of the up checks)
const AGES: [(TimeDelta, u64, u64, u64); 4] = [
    (TimeDelta::days(40), 40, 2, 900),
    (TimeDelta::days(10), 30, 3, 300),
    (TimeDelta::days(2), 20, 4, 90),
    (TimeDelta::hours(2), 10, 5, 12),
];

/// Whether a percentile the page shows falls in the histogram bucket of SQL's exact one.
fn same_bucket(page: f64, exact: f64) -> bool {
    let bounds = common::README_LATENCY_BOUNDS_MS;
    let bucket = |v: f64| bounds.partition_point(|b| *b <= v);
    bucket(page.round()) == bucket(exact)
}

#[tokio::test]
async fn every_window_and_last_check_equal_sql_over_the_raw_rows() {
    let tb = testbed_or_skip!();
    let topic = common::unique("windows");
    let (pg, db_url) = tb.fresh_database("windows").await;
    let now = Utc::now();
    let mut records = Vec::new();
    for (site, url) in ["https://a.example/", "https://b.example/"]
        .iter()
        .enumerate()
    {
        for (age, checks, fail_every, ms) in AGES {
            for i in 0..checks {
                let mut ev = common::sample_event(url, i);
                ev.producer = "eu".into();
                ev.checked_at = now - age + TimeDelta::seconds(i as i64 * 30);
                let up = !(i + site as u64).is_multiple_of(fail_every);
                ev.up = Some(up);
                ev.elapsed_ms = if up { ms + i % 7 } else { 5_000 };
                ev.status = Some(if up { 200 } else { 503 });
                if !up {
                    ev.error_kind = Some(checksite::event::ErrorKind::Timeout);
                    ev.error = Some("timed out".into());
                }
                records.push((url.as_bytes().to_vec(), Some(ev.to_json()), ev.checked_at));
            }
        }
    }
    let n = common::produce_timed(&tb, &topic, 3, records).await as i64;
    let page = common::free_port();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{page}"))
        .spawn()
        .unwrap();
    let db = common::open(&pg).await;
    let started = std::time::Instant::now();
    loop {
        let stored = db.query_one("SELECT count(*) FROM events", &[]).await;
        let folded = db
            .query_one("SELECT count(*) FROM rollup_deltas", &[])
            .await;
        if let (Ok(s), Ok(f)) = (stored, folded)
            && s.get::<_, i64>(0) == n
            && f.get::<_, i64>(0) == 0
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = common::api_status_as_of(page, Utc::now()).await;
    common::stop(consumer, Duration::from_secs(30)).await;
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    for card in api["sites"].as_array().unwrap() {
        let url = card["url"].as_str().unwrap();
        // The windows as the README defines them: the current hour and the 23 before;
        // the current UTC day and the 6 or 29 before.
        let windows = [
            (
                "uptime_24h",
                "date_trunc('hour', now()) - interval '23 hours'",
            ),
            (
                "uptime_7d",
                "date_trunc('day', now() AT TIME ZONE 'UTC') - interval '6 days'",
            ),
            (
                "uptime_30d",
                "date_trunc('day', now() AT TIME ZONE 'UTC') - interval '29 days'",
            ),
        ];
        let mut uptimes = Vec::new();
        for (field, from) in windows {
            let sql = format!(
                "SELECT (100.0 * count(*) FILTER (WHERE up) / count(*))::float8 FROM events \
                 WHERE url = $1 AND ts >= ({from})::timestamp"
            );
            let exact: f64 = db.query_one(&sql, &[&url]).await.unwrap().get(0);
            let shown = card[field].as_f64().unwrap();
            assert!(
                (shown - exact).abs() < 1e-9,
                "{url} {field}: page {shown}, SQL {exact}"
            );
            uptimes.push(exact);
        }
        // The seeding makes the three windows differ: a window using another's rows fails.
        assert!(
            uptimes[0] != uptimes[1] && uptimes[1] != uptimes[2],
            "{uptimes:?}"
        );
        let month = "date_trunc('day', now() AT TIME ZONE 'UTC') - interval '29 days'";
        for (field, q) in [("p50_ms_30d", 0.5), ("p95_ms_30d", 0.95)] {
            let sql = format!(
                "SELECT (percentile_disc($2) WITHIN GROUP (ORDER BY elapsed))::float8 FROM events \
                 WHERE url = $1 AND up AND ts >= ({month})::timestamp"
            );
            let exact: f64 = db.query_one(&sql, &[&url, &q]).await.unwrap().get(0);
            let shown = card[field].as_f64().unwrap();
            assert!(
                same_bucket(shown, exact),
                "{url} {field}: page {shown}, SQL {exact}"
            );
        }
        let last = db
            .query_one(
                "SELECT status, ts AT TIME ZONE 'UTC', elapsed, error_kind FROM events \
                 WHERE url = $1 ORDER BY ts DESC LIMIT 1",
                &[&url],
            )
            .await
            .unwrap();
        assert_eq!(
            card["last_status"].as_i64(),
            last.get::<_, Option<i32>>(0).map(i64::from)
        );
        let at: DateTime<Utc> = last.get(1);
        let shown =
            DateTime::parse_from_rfc3339(card["last_checked_at"].as_str().unwrap()).unwrap();
        assert_eq!(shown, at, "{url} last_checked_at");
        assert_eq!(
            card["last_elapsed_ms"].as_i64(),
            last.get::<_, Option<i32>>(2).map(i64::from)
        );
        assert_eq!(
            card["last_error_kind"].as_str(),
            last.get::<_, Option<&str>>(3)
        );
    }
}
