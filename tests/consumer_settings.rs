//! Consumer settings the README promises, through the binary: `CK_ROLLUPS=off`, and a
//! database whose server `TimeZone` is not UTC (checksite writes `events.ts` in UTC
//! whatever the zone, and says so once).

mod common;

use chrono::{TimeDelta, Utc};
use common::{drain, query_i64};

#[tokio::test]
async fn rollups_off_keeps_no_rollups_and_every_event() {
    let tb = testbed_or_skip!();
    let topic = common::unique("rollups-off");
    let n = common::produce_events(&tb, &topic, 3, 500, 10).await as i64;
    let (pg, url) = tb.fresh_database("rollups_off").await;
    let out = common::consumer(&tb, &topic, &url, &["--drain"])
        .env("CK_ROLLUPS", "off")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(common::drain_summary(&stdout), [n as u64, 0, 0]);
    let db = common::open(&pg).await;
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, n);
    for table in [
        "rollups_hourly",
        "rollups_daily",
        "site_status",
        "rollup_deltas",
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(query_i64(&db, &sql).await, 0, "{table}");
    }
    // The same topic into another database with the default: they are there.
    let (pg_on, url_on) = tb.fresh_database("rollups_on").await;
    drain(&tb, &topic, &url_on).await;
    let on = common::open(&pg_on).await;
    assert_eq!(
        query_i64(&on, "SELECT sum(checks)::bigint FROM rollups_daily").await,
        n
    );
}

#[tokio::test]
async fn a_server_in_another_time_zone_gets_utc_times() {
    let tb = testbed_or_skip!();
    let topic = common::unique("timezone");
    let (pg, url) = tb.fresh_database("timezone").await;
    let admin = common::open(&pg).await;
    let db_name = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db_name} SET timezone = 'Asia/Tokyo'"
        ))
        .await
        .unwrap();
    let at = Utc::now() - TimeDelta::minutes(5);
    let mut ev = common::sample_event("https://tokyo.example/", 1);
    ev.checked_at = at;
    common::produce_timed(
        &tb,
        &topic,
        3,
        vec![(b"https://tokyo.example/".to_vec(), Some(ev.to_json()), at)],
    )
    .await;
    // A row the Python consumer wrote (in the zone's wall time): then the consumer says
    // what the zone means for them.
    let mut schema = common::open(&pg).await;
    checksite::consumer::store::migrate(&mut schema)
        .await
        .unwrap();
    schema
        .batch_execute(
            "INSERT INTO events (ts, url, elapsed, status) \
             VALUES (localtimestamp - interval '1 day', 'https://old.example/', 12, 200)",
        )
        .await
        .unwrap();
    let out = common::consumer(&tb, &topic, &url, &["--drain"])
        .output()
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("the server's TimeZone is Asia/Tokyo"), "{log}");
    // A new session, in the database's zone: ts is the check's UTC wall time, to the ms.
    let db = common::open(&pg).await;
    let ts: chrono::NaiveDateTime = db
        .query_one("SELECT ts FROM events WHERE check_id IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    let want = at.naive_utc();
    assert_eq!(
        ts.and_utc().timestamp_millis(),
        want.and_utc().timestamp_millis()
    );
    let zone: String = db.query_one("SHOW timezone", &[]).await.unwrap().get(0);
    assert_eq!(zone, "Asia/Tokyo");
}
