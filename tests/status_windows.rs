//! The status page's windows against SQL over the raw rows: checks 40, 10 and 2 days old
//! and from the last hours, each age with its own share of failures and its own
//! latencies, so that every window (24 h, 7 d, 30 d) has figures of its own; and each
//! series' last check (status, time, elapsed, error kind) as the newest raw row says.

mod common;

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

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
    let records =
        seeded(AGES.map(|(age, checks, fail_every, ms)| (now - age, 30, checks, fail_every, ms)));
    let n = common::produce_timed(&tb, &topic, 3, records).await as i64;
    let page = common::free_port();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{page}"))
        .spawn()
        .unwrap();
    let db = common::open(&pg).await;
    common::wait_stored_and_folded(&db, n).await;
    let body = common::api_status_as_of(page, Utc::now()).await;
    common::stop(consumer, Duration::from_secs(30)).await;
    assert_windows_and_last_checks_equal_sql(&db, &body).await;
}

/// Checks of two sites from one vantage point: per (first check, seconds between checks,
/// checks, every how many a failure, elapsed ms of the up checks), each site failing at
/// its own checks.
fn seeded(
    groups: impl IntoIterator<Item = (DateTime<Utc>, i64, u64, u64, u64)>,
) -> Vec<common::TimedRecord> {
    let groups: Vec<_> = groups.into_iter().collect();
    let mut records = Vec::new();
    for (site, url) in ["https://a.example/", "https://b.example/"]
        .iter()
        .enumerate()
    {
        for &(start, step, checks, fail_every, ms) in &groups {
            for i in 0..checks {
                let mut ev = common::sample_event(url, i);
                ev.producer = "eu".into();
                ev.checked_at = start + TimeDelta::seconds(i as i64 * step);
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
    records
}

/// Every card of the page's API (`body`) against SQL over the raw rows: the three windows'
/// uptime as the README defines them, the 30-day p50/p95 (same histogram bucket), and
/// the last check (status, time, elapsed, error kind).
async fn assert_windows_and_last_checks_equal_sql(db: &tokio_postgres::Client, body: &str) {
    let api: serde_json::Value = serde_json::from_str(body).unwrap();
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

/// The windows as they were when last moved `hours` and `days` ago, built by SQL from
/// the rollup tables (a window holds the buckets in (its end - its length, its end]),
/// and their alignment set back: what a consumer finds after it was stopped that long.
async fn set_windows_back(db: &tokio_postgres::Client, hours: i64, days: i64) {
    let sql = "SELECT hour_end - make_interval(hours => $1::int), \
              day_end - make_interval(days => $2::int) FROM series_windows_at";
    let at = db
        .query_one(sql, &[&(hours as i32), &(days as i32)])
        .await
        .unwrap();
    let (hour, day): (DateTime<Utc>, DateTime<Utc>) = (at.get(0), at.get(1));
    for (suffix, table, end, length) in [
        ("24h", "rollups_hourly", hour, "24 hours"),
        ("7d", "rollups_daily", day, "7 days"),
        ("30d", "rollups_daily", day, "30 days"),
    ] {
        let rows = format!(
            "FROM {table} AS r WHERE r.url = w.url AND r.producer = w.producer \
             AND r.bucket > $1::timestamptz - interval '{length}' AND r.bucket <= $1"
        );
        let sql = format!(
            "UPDATE series_windows AS w SET \
               checks_{suffix} = coalesce((SELECT sum(checks) {rows}), 0), \
               up_{suffix} = coalesce((SELECT sum(up_checks) {rows}), 0), \
               hist_{suffix} = coalesce((SELECT array_agg(n ORDER BY i) FROM ( \
                 SELECT i, sum(x)::bigint AS n FROM {table} AS r, \
                 unnest(r.latency_hist) WITH ORDINALITY AS t(x, i) \
                 WHERE r.url = w.url AND r.producer = w.producer \
                 AND r.bucket > $1::timestamptz - interval '{length}' AND r.bucket <= $1 \
                 GROUP BY i) AS s), array_fill(0::bigint, ARRAY[{buckets}]))",
            buckets = common::README_LATENCY_BOUNDS_MS.len() + 1
        );
        db.execute(&sql, &[&end]).await.unwrap();
    }
    db.execute(
        "UPDATE series_windows_at SET hour_end = $1, day_end = $2",
        &[&hour, &day],
    )
    .await
    .unwrap();
}

/// (start, checks, every how many a failure, elapsed ms of the up checks): around the
/// edges the windows cross when they move, each with figures of its own.
fn moving_ages(hour: DateTime<Utc>, day: DateTime<Utc>) -> [(DateTime<Utc>, u64, u64, u64); 6] {
    [
        // Leaves the 30-day window when it moves 2 days.
        (day - TimeDelta::days(31) + TimeDelta::hours(1), 30, 2, 900),
        // Leaves the 7-day window when it moves 2 days.
        (day - TimeDelta::days(8) + TimeDelta::hours(1), 24, 3, 300),
        // In the 7-day window before and after.
        (day - TimeDelta::days(5) + TimeDelta::hours(1), 20, 4, 90),
        // In the 24-hour window 2 days ago only.
        (
            hour - TimeDelta::hours(50) + TimeDelta::minutes(1),
            16,
            5,
            40,
        ),
        // Leaves the 24-hour window when it moves 1 hour.
        (
            hour - TimeDelta::hours(24) + TimeDelta::minutes(1),
            12,
            6,
            20,
        ),
        // The current hour: enters every window that moves.
        (hour, 10, 7, 12),
    ]
}

#[tokio::test]
async fn windows_moved_while_no_consumer_ran_equal_sql_over_the_raw_rows() {
    let tb = testbed_or_skip!();
    // The current hour's checks are 1 s apart from its start: not in its first seconds.
    let mut now = Utc::now();
    let into_hour = now - now.duration_trunc(TimeDelta::hours(1)).unwrap();
    if into_hour < TimeDelta::seconds(15) {
        tokio::time::sleep((TimeDelta::seconds(15) - into_hour).to_std().unwrap()).await;
        now = Utc::now();
    }
    let hour = now.duration_trunc(TimeDelta::hours(1)).unwrap();
    let day = now.duration_trunc(TimeDelta::days(1)).unwrap();
    // An hour's move (the 24-hour window shifts); two days' (the 24-hour window is built
    // again, the 7- and 30-day windows shift).
    for (hours, days) in [(1, 0), (48, 2)] {
        let topic = common::unique("windows-moved");
        let (pg, db_url) = tb.fresh_database("windows_moved").await;
        // The current hour's checks 1 s apart, the others 30 s.
        let records = seeded(
            moving_ages(hour, day).map(|(start, checks, fail_every, ms)| {
                (
                    start,
                    if start == hour { 1 } else { 30 },
                    checks,
                    fail_every,
                    ms,
                )
            }),
        );
        let n = common::produce_timed(&tb, &topic, 3, records).await as i64;
        let consumer = common::consumer(&tb, &topic, &db_url, &[]).spawn().unwrap();
        let db = common::open(&pg).await;
        common::wait_stored_and_folded(&db, n).await;
        common::stop(consumer, Duration::from_secs(30)).await;
        set_windows_back(&db, hours, days).await;
        // Started again with nothing new to read: the windows move with the clock.
        let page = common::free_port();
        let consumer = common::consumer(&tb, &topic, &db_url, &[])
            .env("CK_HTTP_ADDR", format!("127.0.0.1:{page}"))
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            let at: DateTime<Utc> = db
                .query_one("SELECT hour_end FROM series_windows_at", &[])
                .await
                .unwrap()
                .get(0);
            if at == hour {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the windows did not move"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let body = common::api_status_as_of(page, Utc::now()).await;
        common::stop(consumer, Duration::from_secs(30)).await;
        assert_windows_and_last_checks_equal_sql(&db, &body).await;
    }
}
