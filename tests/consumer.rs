//! checksite-consumer as users run it, against the test bed's Kafka and PostgreSQL:
//! exactly once through kill -9, several consumers, bad records, and TLS to PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{consumer, drain, open, query_i64};
use tokio::process::Child;

#[tokio::test]
async fn drain_writes_every_event_once() {
    let tb = testbed_or_skip!();
    let topic = common::unique("drain");
    let n = common::produce_events(&tb, &topic, 3, 5_000, 50).await;
    let (pg, url) = tb.fresh_database("drain").await;
    let out = drain(&tb, &topic, &url).await;
    assert!(
        out.contains("5000 event(s) written, 0 already stored"),
        "{out}"
    );
    let db = open(&pg).await;
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM events").await,
        n as i64
    );
    assert_eq!(
        query_i64(&db, "SELECT sum(next_offset)::bigint FROM kafka_offsets").await,
        n as i64
    );
    // A second drain finds nothing new and writes nothing twice.
    drain(&tb, &topic, &url).await;
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM events").await,
        n as i64
    );
}

#[tokio::test]
async fn drain_outlasting_a_rebalance_round_finishes_every_partition() {
    let tb = testbed_or_skip!();
    let topic = common::unique("uneven");
    // One site fills the highest partition (the one a lease round gives back first); the
    // others drain long before it, while leases are rebalanced around it (every 2 s).
    let big = (0..)
        .map(|k| format!("https://big-{k}.example/"))
        .find(|u| checksite::kafka::partition_for(u.as_bytes(), 6) == 5)
        .unwrap();
    let mut records = Vec::new();
    for i in 0..30_000u64 {
        let url = if i % 100 == 0 {
            format!("https://small-{}.example/", i % 7)
        } else {
            big.clone()
        };
        records.push((
            url.clone().into_bytes(),
            common::sample_event(&url, i).to_json(),
        ));
    }
    let n = common::produce_raw(&tb, &topic, 6, records).await as i64;
    let (pg, url) = tb.fresh_database("uneven").await;
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        consumer(&tb, &topic, &url, &["--drain"])
            .env("CK_BATCH_EVENTS", "5")
            .output(),
    )
    .await
    .expect("--drain must finish")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the drain must outlast a rebalance round to test it"
    );
    let db = open(&pg).await;
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, n);
}

fn pseudo_random_ms(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + nanos % (hi - lo)
}

#[tokio::test]
async fn kill_9_ten_times_loses_and_doubles_nothing() {
    let tb = testbed_or_skip!();
    let topic = common::unique("kill9");
    // Python-format records: no id, so a range written twice would show as extra rows.
    let n = common::produce_python(&tb, &topic, 3, 0..50_000, 200).await as i64;
    let (pg, url) = tb.fresh_database("kill9").await;
    let db = open(&pg).await;
    let mut seen_progress = 0;
    for _ in 0..10 {
        let mut child: Child = consumer(&tb, &topic, &url, &[])
            .env("CK_BATCH_EVENTS", "500")
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(pseudo_random_ms(300, 1500))).await;
        child.start_kill().unwrap(); // SIGKILL
        let _ = child.wait().await;
        let now = query_i64(&db, "SELECT count(*) FROM events").await;
        assert!(now <= n, "more rows than events: {now} > {n}");
        seen_progress = now;
    }
    assert!(seen_progress > 0, "the killed consumers wrote something");
    drain(&tb, &topic, &url).await;
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, n);
    assert_eq!(
        query_i64(&db, "SELECT count(DISTINCT elapsed) FROM events").await,
        n
    );
    assert_eq!(
        query_i64(&db, "SELECT sum(next_offset)::bigint FROM kafka_offsets").await,
        n
    );
}

#[tokio::test]
async fn malformed_records_are_kept_aside_and_good_ones_all_land() {
    let tb = testbed_or_skip!();
    let topic = common::unique("malformed");
    let mut records = Vec::new();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{this is not json".to_vec()),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x7b]),
        (
            "wrong types",
            br#"{"v": 1, "id": "01a220e6-750b-727c-ac3e-35286430d2bb", "url": 42}"#.to_vec(),
        ),
        (
            "missing fields",
            br#"{"v": 1, "url": "https://a.example/"}"#.to_vec(),
        ),
        (
            "future version",
            br#"{"v": 7, "url": "https://a.example/"}"#.to_vec(),
        ),
        (
            "oversize",
            format!(r#"{{"v": 1, "pad": "{}"}}"#, "x".repeat(100_000)).into_bytes(),
        ),
    ];
    for i in 0..300u64 {
        let url = format!("https://good-{}.example/", i % 7);
        records.push((
            url.clone().into_bytes(),
            common::sample_event(&url, i).to_json(),
        ));
        if i % 50 == 0 {
            let (_, value) = &bad[(i / 50) as usize % bad.len()];
            records.push((format!("bad-{i}").into_bytes(), value.clone()));
        }
    }
    // valid JSON and a valid event, but PostgreSQL text cannot hold a NUL: before it was
    // rejected, this one record made every retry of its COPY fail, for ever
    let nul = common::sample_event("https://nul.example/\u{0}x", 1).to_json();
    records.push((b"https://nul.example/".to_vec(), nul));
    // a producer retry: the same event twice, at two offsets
    let dup = common::sample_event("https://dup.example/", 0).to_json();
    records.push((b"https://dup.example/".to_vec(), dup.clone()));
    records.push((b"https://dup.example/".to_vec(), dup));
    common::produce_raw(&tb, &topic, 3, records).await;
    let (pg, url) = tb.fresh_database("malformed").await;
    drain(&tb, &topic, &url).await;
    let db = open(&pg).await;
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM events").await,
        301,
        "300 good + 1 of the duplicated pair"
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM rejected_events").await,
        7
    );
    let reasons: Vec<String> = db
        .query("SELECT reason FROM rejected_events ORDER BY reason", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for want in [
        "not JSON",
        "not UTF-8",
        "invalid v1 event",
        "unknown event format version 7",
        "limit",
        "url contains a NUL character",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want:?} not in {reasons:?}"
        );
    }
    let raw: Vec<u8> = db
        .query_one(
            "SELECT value FROM rejected_events WHERE reason LIKE '%UTF-8%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, vec![0xff, 0xfe, 0x00, 0x7b], "raw bytes kept");
}

#[tokio::test]
async fn waits_for_a_topic_that_does_not_exist_yet() {
    let tb = testbed_or_skip!();
    let topic = common::unique("later");
    let (pg, url) = tb.fresh_database("later").await;
    let mut child = consumer(&tb, &topic, &url, &[]).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the consumer must wait, not crash"
    );
    common::produce_events(&tb, &topic, 3, 100, 5).await;
    let db = open(&pg).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while query_i64(&db, "SELECT count(*) FROM events").await < 100 {
        assert!(Instant::now() < deadline, "events did not arrive");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    common::terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM: exit 0");
}

async fn wait_for_rows(db: &tokio_postgres::Client, want: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        // Until the first consumer has migrated, there is no table yet.
        let n = match db.query_one("SELECT count(*) FROM events", &[]).await {
            Ok(row) => row.get(0),
            Err(_) => 0,
        };
        if n == want {
            return;
        }
        assert!(n < want, "{n} rows for {want} events");
        assert!(
            Instant::now() < deadline,
            "only {n} of {want} rows after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn three_consumers_share_partitions_and_take_over_from_a_dead_one() {
    let tb = testbed_or_skip!();
    let topic = common::unique("shared");
    let first = common::produce_python(&tb, &topic, 6, 0..20_000, 300).await as i64;
    let (pg, url) = tb.fresh_database("shared").await;
    let db = open(&pg).await;
    let mut children: Vec<Child> = (0..3)
        .map(|_| consumer(&tb, &topic, &url, &[]).spawn().unwrap())
        .collect();
    wait_for_rows(&db, first, Duration::from_secs(60)).await;
    // Give leases a few rounds to settle on a fair share, then check every partition is served.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM kafka_offsets WHERE next_offset > 0"
        )
        .await,
        6
    );
    let victim = children.remove(0);
    let mut victim = victim;
    victim.start_kill().unwrap();
    let _ = victim.wait().await;
    let second = common::produce_python(&tb, &topic, 6, 20_000..26_000, 300).await as i64;
    wait_for_rows(&db, first + second, Duration::from_secs(60)).await;
    assert_eq!(
        query_i64(&db, "SELECT count(DISTINCT elapsed) FROM events").await,
        first + second
    );
    for c in &children {
        common::terminate(c);
    }
    for c in children {
        let out = tokio::time::timeout(Duration::from_secs(15), c.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success());
    }
}

#[tokio::test]
async fn two_consumers_at_once_write_each_event_once() {
    let tb = testbed_or_skip!();
    let topic = common::unique("pair");
    let n = common::produce_python(&tb, &topic, 4, 0..10_000, 100).await as i64;
    let (pg, url) = tb.fresh_database("pair").await;
    let db = open(&pg).await;
    let children: Vec<Child> = (0..2)
        .map(|_| consumer(&tb, &topic, &url, &[]).spawn().unwrap())
        .collect();
    wait_for_rows(&db, n, Duration::from_secs(60)).await;
    // Settle: a range written twice would show up as rows past n.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, n);
    assert_eq!(
        query_i64(&db, "SELECT count(DISTINCT elapsed) FROM events").await,
        n
    );
    for c in &children {
        common::terminate(c);
    }
}

async fn consumer_error(tb: &common::Testbed, db_url: &str) -> (String, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        consumer(tb, "any", db_url, &["--drain"]).output(),
    )
    .await
    .expect("must not hang")
    .unwrap();
    assert!(!out.status.success());
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn postgres_wrong_password_and_untrusted_server_fail_fast_and_clearly() {
    let tb = testbed_or_skip!();
    let (msg, took) = consumer_error(
        &tb,
        &tb.postgres_url.replacen("checksite:", "checksite:nope", 1),
    )
    .await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(msg.contains("check the user and password"), "{msg}");
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
    let (msg, took) = consumer_error(&tb, &tb.postgres_url.replace("ca.pem", "other-ca.pem")).await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(msg.contains("sslrootcert"), "{msg}");
    // No CA given at all, server certificate from a private CA: the same hint.
    let (msg, _) = consumer_error(
        &tb,
        &tb.postgres_url
            .split('?')
            .next()
            .map(|u| format!("{u}?sslmode=require"))
            .unwrap(),
    )
    .await;
    assert!(msg.contains("sslrootcert"), "{msg}");
}

#[tokio::test]
async fn runs_as_a_dedicated_least_privilege_role() {
    let tb = testbed_or_skip!();
    let admin = tb
        .postgres()
        .connect(Duration::from_secs(10))
        .await
        .unwrap();
    let role = format!("checksite_app_{}", uuid::Uuid::now_v7().simple());
    let password = uuid::Uuid::now_v7().simple().to_string();
    // The README's set-up, verbatim apart from the names.
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
        .await
        .unwrap();
    let (_, server) = tb.postgres_url.split_once('@').unwrap();
    let url = format!(
        "postgres://{role}:{password}@{}",
        server.replacen("/postgres?", &format!("/{role}?"), 1)
    );
    let topic = common::unique("leastpriv");
    let n = common::produce_events(&tb, &topic, 3, 500, 10).await as i64;
    drain(&tb, &topic, &url).await;
    let pg = checksite::store::PostgresSettings::parse(&url).unwrap();
    let db = pg.connect(Duration::from_secs(10)).await.unwrap();
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, n);
    let is_super: bool = db
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!is_super);
}
