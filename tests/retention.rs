//! Retention (`CK_RETENTION_DAYS`): raw events past the window are deleted while the
//! consumer keeps writing; the rollups keep every day.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::query_i64;

/// A count, 0 while the consumer has not created its tables yet.
async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.map_or(0, |r| r.get(0))
}

/// `n` events for each of 10 URLs, checked `days_ago` days ago (a second apart).
fn events(n: i64, days_ago: i64, tag: &str) -> Vec<common::TimedRecord> {
    let start = Utc::now() - TimeDelta::days(days_ago);
    (0..n * 10)
        .map(|i| {
            let url = format!("https://{tag}-{}.example/", i % 10);
            let mut ev = common::sample_event(&url, i as u64);
            ev.checked_at = start + TimeDelta::seconds(i);
            (url.into_bytes(), Some(ev.to_json()), ev.checked_at)
        })
        .collect()
}

#[tokio::test]
async fn events_past_the_window_go_the_rest_and_the_rollups_stay() {
    let tb = testbed_or_skip!();
    let topic = common::unique("retention");
    let (pg, db_url) = tb.fresh_database("retention").await;
    let db = common::open(&pg).await;
    // 40 and 31 days old: past a 30-day window; 29 days and now: inside it.
    let mut records = events(100, 40, "old");
    records.extend(events(100, 31, "old"));
    records.extend(events(100, 29, "kept"));
    records.extend(events(100, 0, "kept"));
    common::produce_timed(&tb, &topic, 3, records).await;
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_RETENTION_DAYS", "30")
        .spawn()
        .unwrap();
    // New events keep arriving while old ones go: all of them are written.
    let more = common::produce_events(&tb, &topic, 3, 5_000, 20).await as i64;
    let kept = 2_000 + more;
    let began = Instant::now();
    loop {
        // The table may not exist yet (the consumer migrates first): 0 so far.
        let total = count(&db, "SELECT count(*) FROM events").await;
        let old = count(
            &db,
            "SELECT count(*) FROM events WHERE url LIKE 'https://old-%'",
        )
        .await;
        let folded = count(&db, "SELECT count(*) FROM rollup_deltas").await;
        if total == kept && old == 0 && folded == 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "after 60 s: {total} rows ({old} old), {kept} expected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = common::stop(consumer, Duration::from_secs(30)).await;
    assert!(
        log.contains("retention: 2000 event(s) from before"),
        "{log}"
    );
    assert!(log.contains("retention: events vacuumed"), "{log}");
    // The rollups keep the deleted days: every event ever stored is counted once.
    assert_eq!(
        query_i64(&db, "SELECT sum(checks)::bigint FROM rollups_daily").await,
        2_000 + kept
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM events WHERE ts < (now() AT TIME ZONE 'UTC') - interval '30 days'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn without_retention_nothing_is_deleted() {
    let tb = testbed_or_skip!();
    let topic = common::unique("no-retention");
    let (pg, db_url) = tb.fresh_database("noretention").await;
    common::produce_timed(&tb, &topic, 3, events(50, 400, "ancient")).await;
    let consumer = common::consumer(&tb, &topic, &db_url, &[]).spawn().unwrap();
    let db = common::open(&pg).await;
    let began = Instant::now();
    let stored = "SELECT count(*) FROM events";
    // Until the consumer has created its tables, the query fails: nothing yet.
    while count(&db, stored).await < 500 {
        assert!(began.elapsed() < Duration::from_secs(30), "not all written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Longer than the pruner's first pass would take (1 s after start).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = common::stop(consumer, Duration::from_secs(30)).await;
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, 500);
    assert!(!log.contains("retention: "), "{log}");
}

/// Rows inserted straight into `events`: `n` of them checked `days_ago` days ago.
async fn insert_rows(db: &tokio_postgres::Client, n: i64, days_ago: i64, tag: &str) {
    db.execute(
        "INSERT INTO events (ts, url, elapsed, status, producer, up, kafka_partition, kafka_offset)
         SELECT (now() AT TIME ZONE 'UTC') - make_interval(days => $2::int) + i * interval '1 ms',
           'https://' || $3::text || '-' || (i % 10) || '.example/', 40, 200, 'test', true, 99, i
         FROM generate_series(1, $1::bigint) i",
        &[&n, &(days_ago as i32), &tag],
    )
    .await
    .unwrap();
}

/// After the first pass (a sweep by `ts`), passes go in insertion order and stop at the
/// first young row: old rows inserted first go, in several steps; an old row inserted after
/// young ones is not looked at (a pass with nothing to delete reads one step).
#[tokio::test]
async fn passes_go_in_insertion_order_and_stop_at_the_first_young_row() {
    let tb = testbed_or_skip!();
    let topic = common::unique("retention-order");
    let (pg, db_url) = tb.fresh_database("retorder").await;
    common::produce_raw(&tb, &topic, 3, vec![]).await;
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_RETENTION_DAYS", "30")
        .env("CK_LOG_LEVEL", "debug")
        .spawn()
        .unwrap();
    let db = common::open(&pg).await;
    let began = Instant::now();
    while db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .is_err()
    {
        assert!(began.elapsed() < Duration::from_secs(30), "no events table");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first pass (the sweep, 1 s after start) finds an empty table.
    tokio::time::sleep(Duration::from_secs(3)).await;
    insert_rows(&db, 25_000, 40, "old").await; // three steps of 10,000
    insert_rows(&db, 15_000, 0, "young").await; // more than a step
    insert_rows(&db, 1, 40, "straggler").await;
    let old = "SELECT count(*) FROM events WHERE url LIKE 'https://old-%'";
    // The next pass comes 10 s after the first.
    while count(&db, old).await > 0 {
        assert!(
            began.elapsed() < Duration::from_secs(40),
            "{} old rows left",
            count(&db, old).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = common::stop(consumer, Duration::from_secs(30)).await;
    assert!(
        log.contains("insertion-order pass: 25000 event(s) deleted"),
        "{log}"
    );
    let left = |tag: &str| format!("SELECT count(*) FROM events WHERE url LIKE 'https://{tag}-%'");
    assert_eq!(query_i64(&db, &left("young")).await, 15_000);
    assert_eq!(
        query_i64(&db, &left("straggler")).await,
        1,
        "the pass stopped at the young rows"
    );
}

/// The rejected records kept longer than the window go at the first pass (a sweep);
/// those within it stay.
#[tokio::test]
async fn rejected_records_past_the_window_go_too() {
    let tb = testbed_or_skip!();
    let topic = common::unique("retention-rejects");
    let (pg, db_url) = tb.fresh_database("retrejects").await;
    common::produce_raw(&tb, &topic, 1, vec![]).await;
    common::drain(&tb, &topic, &db_url).await; // the tables
    let db = common::open(&pg).await;
    db.execute(
        "INSERT INTO rejected_events (topic, partition, \"offset\", value, reason, received_at)
         SELECT $1, 0, i, 'not json', 'not JSON', now() - make_interval(days => d)
         FROM generate_series(1, 5) i, LATERAL (SELECT CASE WHEN i <= 3 THEN 40 ELSE 29 END) AS x(d)",
        &[&topic],
    )
    .await
    .unwrap();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_RETENTION_DAYS", "30")
        .spawn()
        .unwrap();
    let old = "SELECT count(*) FROM rejected_events WHERE received_at < now() - interval '30 days'";
    let began = Instant::now();
    while query_i64(&db, old).await > 0 {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "old rejects kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = common::stop(consumer, Duration::from_secs(30)).await;
    assert!(
        log.contains("retention: 3 rejected record(s) kept since before"),
        "{log}"
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM rejected_events").await,
        2
    );
}
