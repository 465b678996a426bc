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
    assert_eq!(common::drain_summary(&out), [5000, 0, 0], "{out}");
    let db = open(&pg).await;
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM events").await,
        n as i64
    );
    assert_eq!(
        query_i64(&db, "SELECT sum(next_offset)::bigint FROM kafka_offsets").await,
        n as i64
    );
    // A second drain starts at the committed offsets: it reads nothing again (a re-read
    // of v1 events would show as "already stored", which the unique id absorbs).
    let again = drain(&tb, &topic, &url).await;
    assert_eq!(common::drain_summary(&again), [0, 0, 0], "{again}");
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
    // Every record read once: a partition read again after a rebalance would show as
    // events already stored (their ids absorb the rows, not the count).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(common::drain_summary(&stdout), [n as u64, 0, 0], "{stdout}");
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
    // The rollups went in with the rows, transaction by transaction: counted once too.
    assert_eq!(common::rollup_mismatches(&db).await, 0);
    assert_eq!(
        query_i64(&db, "SELECT sum(checks)::bigint FROM rollups_hourly").await,
        n
    );
}

/// Records that are not valid events, one of each kind a topic can hold: each must be kept
/// in rejected_events with its raw bytes, and none may stop the valid events around it.
fn malformed_kinds() -> Vec<(&'static str, Option<Vec<u8>>)> {
    let v1 = |field: &str, value: &str| -> Vec<u8> {
        let mut ev: serde_json::Value =
            serde_json::from_slice(&common::sample_event("https://m.example/", 1).to_json())
                .unwrap();
        ev[field] = serde_json::from_str(value).unwrap();
        serde_json::to_vec(&ev).unwrap()
    };
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    vec![
        ("not UTF-8", Some(vec![0xff, 0xfe, 0x00, 0x7b])),
        ("empty", Some(Vec::new())),
        ("tombstone", None),
        ("whitespace", Some(b"   \n".to_vec())),
        ("NUL in a key", Some(br#"{"\u0000": 1}"#.to_vec())),
        (
            "NUL in a v1 url",
            Some(v1("url", r#""https://nul.example/\u0000x""#)),
        ),
        (
            "NUL in a v1 error",
            Some(v1("error", r#""bad\u0000thing""#)),
        ),
        (
            "NUL in a Python url",
            Some(br#"{"url": "https://p.example/\u0000", "elapsed": 3}"#.to_vec()),
        ),
        ("wrong type", Some(v1("url", "42"))),
        (
            "missing fields",
            Some(br#"{"v": 1, "url": "https://a.example/"}"#.to_vec()),
        ),
        (
            "future version",
            Some(br#"{"v": 7, "url": "https://a.example/"}"#.to_vec()),
        ),
        ("version as text", Some(v1("v", r#""1""#))),
        ("status overflows", Some(v1("status", "70000"))),
        ("elapsed overflows", Some(v1("elapsed_ms", "1e30"))),
        ("negative elapsed", Some(v1("elapsed_ms", "-5"))),
        ("bad uuid", Some(v1("id", r#""not-a-uuid""#))),
        ("bad time", Some(v1("checked_at", r#""yesterday""#))),
        ("nesting 10,000 deep", Some(deep)),
        (
            "lone surrogate",
            Some(br#"{"url": "https://s.example/\ud800", "elapsed": 1}"#.to_vec()),
        ),
        ("truncated", Some(br#"{"v": 1, "id": "01a2"#.to_vec())),
        (
            "over 64 KiB",
            Some(format!(r#"{{"v": 1, "pad": "{}"}}"#, "x".repeat(100_000)).into_bytes()),
        ),
        ("array", Some(b"[1, 2]".to_vec())),
        ("string", Some(br#""hello""#.to_vec())),
        ("null", Some(b"null".to_vec())),
        (
            "Python url null",
            Some(br#"{"url": null, "elapsed": 3, "status": 200}"#.to_vec()),
        ),
        (
            "Python status as text",
            Some(br#"{"url": "https://a.example/", "elapsed": 3, "status": "200"}"#.to_vec()),
        ),
        (
            "Python status overflows",
            Some(br#"{"url": "https://a.example/", "status": 9999999999}"#.to_vec()),
        ),
        (
            "byte order mark",
            Some(b"\xef\xbb\xbf{\"url\": \"https://a.example/\"}".to_vec()),
        ),
    ]
}

#[tokio::test]
async fn malformed_records_are_kept_aside_and_good_ones_all_land() {
    let tb = testbed_or_skip!();
    let topic = common::unique("malformed");
    let kinds = malformed_kinds();
    assert!(kinds.len() >= 20);
    let now = chrono::Utc::now();
    let mut records = Vec::new();
    let mut good = 0i64;
    for i in 0..600u64 {
        let url = format!("https://good-{}.example/", i % 7);
        let value = if i % 2 == 0 {
            common::sample_event(&url, i).to_json()
        } else {
            common::python_record(&url, i as i64, Some(200))
        };
        records.push((url.into_bytes(), Some(value), now));
        good += 1;
        if i % 20 == 0
            && let Some((kind, value)) = kinds.get((i / 20) as usize)
        {
            records.push((format!("bad: {kind}").into_bytes(), value.clone(), now));
        }
    }
    // a producer retry: the same event twice, at two offsets (stored once, counted)
    let dup = common::sample_event("https://dup.example/", 0).to_json();
    for _ in 0..2 {
        records.push((b"https://dup.example/".to_vec(), Some(dup.clone()), now));
    }
    common::produce_timed(&tb, &topic, 3, records).await;
    let (pg, url) = tb.fresh_database("malformed").await;
    let out = drain(&tb, &topic, &url).await;
    assert_eq!(
        common::drain_summary(&out),
        [good as u64 + 1, 1, kinds.len() as u64],
        "{out}"
    );
    let db = open(&pg).await;
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM events").await,
        good + 1
    );
    // The retry stored once is counted once in the rollups (the checked path's sums).
    assert_eq!(common::rollup_mismatches(&db).await, 0);
    assert_eq!(
        query_i64(&db, "SELECT sum(checks)::bigint FROM rollups_daily").await,
        good + 1
    );
    for (kind, value) in &kinds {
        let key = format!("bad: {kind}").into_bytes();
        let row = db
            .query_one(
                "SELECT value, reason FROM rejected_events WHERE key = $1",
                &[&key],
            )
            .await
            .unwrap_or_else(|e| panic!("{kind}: not kept ({e})"));
        let kept: Option<Vec<u8>> = row.get(0);
        let reason: String = row.get(1);
        assert_eq!(&kept, value, "{kind}: raw bytes kept as they came");
        assert!(
            !reason.is_empty() && !reason.contains('\0'),
            "{kind}: {reason:?}"
        );
    }
    let reasons: Vec<String> = db
        .query("SELECT reason FROM rejected_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for want in [
        "not UTF-8",
        "no value",
        "not JSON",
        "unknown event format version 7",
        "limit",
        "contains a NUL character",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want:?} not in {reasons:?}"
        );
    }
}

#[tokio::test]
async fn waits_for_a_topic_that_does_not_exist_yet() {
    let tb = testbed_or_skip!();
    let topic = common::unique("later");
    let (pg, url) = tb.fresh_database("later").await;
    let http = common::free_port();
    let mut child = consumer(&tb, &topic, &url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the consumer must wait, not crash"
    );
    // Not ready, and saying on what it waits.
    let (status, why) = common::http_get_when_up(http, "/readyz").await;
    assert_eq!(
        (status, why.as_str()),
        (
            503,
            format!("starting: topic {topic:?} does not exist yet\n").as_str()
        )
    );
    common::produce_events(&tb, &topic, 3, 100, 5).await;
    common::until_ready(http).await;
    let db = open(&pg).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while query_i64(&db, "SELECT count(*) FROM events").await < 100 {
        assert!(Instant::now() < deadline, "events did not arrive");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    common::stop(child, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn a_drain_of_a_topic_that_does_not_exist_says_so_and_exits() {
    let tb = testbed_or_skip!();
    let topic = common::unique("nodrain");
    let (_pg, url) = tb.fresh_database("nodrain").await;
    // A batch job must not wait for a producer that may never come (a misspelt topic).
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        consumer(&tb, &topic, &url, &["--drain"]).output(),
    )
    .await
    .expect("--drain of a missing topic must end, not wait")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("topic {topic:?} does not exist"))
            && stderr.contains("CK_KAFKA_TOPIC"),
        "{stderr}"
    );
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
    let mut victim = children.remove(0);
    victim.start_kill().unwrap();
    let victim_log = victim.wait_with_output().await.unwrap().stderr;
    let victim_held = last_holding(&String::from_utf8_lossy(&victim_log));
    assert!(
        !victim_held.is_empty(),
        "the killed consumer held partitions"
    );
    let second = common::produce_python(&tb, &topic, 6, 20_000..26_000, 300).await as i64;
    wait_for_rows(&db, first + second, Duration::from_secs(60)).await;
    assert_eq!(
        query_i64(&db, "SELECT count(DISTINCT elapsed) FROM events").await,
        first + second
    );
    for c in &children {
        common::terminate(c);
    }
    let mut survivors_hold = std::collections::BTreeSet::new();
    for c in children {
        let out = tokio::time::timeout(Duration::from_secs(15), c.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success());
        let log = String::from_utf8_lossy(&out.stderr);
        let held = last_holding(&log);
        assert!(!held.is_empty(), "each consumer held partitions: {log}");
        survivors_hold.extend(held);
    }
    // The two survivors now hold all six, the dead one's among them.
    assert_eq!(survivors_hold, (0..6).collect());
    assert!(victim_held.is_subset(&survivors_hold));
}

/// The partitions a consumer said it held last ("... this one now holds partitions {0, 3}").
fn last_holding(log: &str) -> std::collections::BTreeSet<i32> {
    log.lines()
        .rev()
        .filter_map(|l| {
            l.split_once("this one now holds partitions ")
                .map(|(_, set)| set)
        })
        .next()
        .map(|set| {
            set.trim_matches(|c| c == '{' || c == '}')
                .split(", ")
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
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

/// A drain's folder reads the deltas ahead of its folds while another consumer of the same
/// database (here, of another topic) folds every second, those read ahead included: the
/// drain's folds must find them gone and read the table again, never count them twice.
#[tokio::test]
async fn deltas_read_ahead_and_folded_by_another_consumer_count_once() {
    let tb = testbed_or_skip!();
    let topic = common::unique("ahead");
    let quiet = common::unique("ahead-quiet");
    // Python-format records, small transactions: a drain of a few seconds, many deltas.
    let n = common::produce_python(&tb, &topic, 3, 0..60_000, 100).await as i64;
    common::produce_python(&tb, &quiet, 1, 0..1, 1).await;
    // The case depends on timing: when the drain's last fold comes while the other
    // consumer folds, the drain leaves the rest to it and reads nothing again. Each attempt
    // must count every check once; one of three must be the case.
    let mut seen = false;
    for attempt in 0..3 {
        let (pg, url) = tb.fresh_database(&format!("ahead{attempt}")).await;
        let db = open(&pg).await;
        let other = consumer(&tb, &quiet, &url, &[]).spawn().unwrap();
        wait_for_rows(&db, 1, Duration::from_secs(30)).await;
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            consumer(&tb, &topic, &url, &["--drain"])
                .env("CK_BATCH_EVENTS", "100")
                .env("CK_LOG_LEVEL", "debug")
                .output(),
        )
        .await
        .expect("--drain must finish")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        // Settle: the other consumer folds what the drain left within a second.
        tokio::time::sleep(Duration::from_secs(3)).await;
        common::terminate(&other);
        assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, n + 1);
        for table in ["rollups_hourly", "rollups_daily"] {
            let sql = format!("SELECT sum(checks)::bigint FROM {table}");
            assert_eq!(query_i64(&db, &sql).await, n + 1, "{table}");
        }
        assert_eq!(common::rollup_mismatches(&db).await, 0);
        if stderr.contains("deltas read ahead were folded meanwhile by another consumer") {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "in three attempts the other consumer never folded a delta the drain had read ahead"
    );
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
    let pg = checksite::consumer::store::PostgresSettings::parse(&url).unwrap();
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

#[tokio::test]
async fn a_row_postgres_refuses_is_kept_aside_and_blocks_nothing() {
    let tb = testbed_or_skip!();
    let topic = common::unique("refused");
    let mut records = Vec::new();
    let mut poison = Vec::new();
    for i in 0..600u64 {
        let url = if i % 150 == 75 {
            format!("https://poison-{i}.example/")
        } else {
            format!("https://good-{}.example/", i % 9)
        };
        let value = common::sample_event(&url, i).to_json();
        if url.contains("poison") {
            poison.push(value.clone());
        }
        records.push((url.into_bytes(), value));
    }
    common::produce_raw(&tb, &topic, 3, records).await;
    let (pg, url) = tb.fresh_database("refused").await;
    // A rule a DBA added, which valid events can break: PostgreSQL refuses those rows.
    let mut admin = open(&pg).await;
    checksite::consumer::store::migrate(&mut admin)
        .await
        .unwrap();
    admin
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (url NOT LIKE '%poison%')",
        )
        .await
        .unwrap();
    let out = drain(&tb, &topic, &url).await;
    assert_eq!(common::drain_summary(&out), [596, 0, 4], "{out}");
    assert_eq!(query_i64(&admin, "SELECT count(*) FROM events").await, 596);
    let kept: Vec<(String, Vec<u8>)> = admin
        .query(
            "SELECT reason, value FROM rejected_events ORDER BY partition, \"offset\"",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(kept.len(), 4);
    for (reason, value) in &kept {
        assert!(reason.contains("no_poison"), "{reason}");
        assert!(poison.contains(value), "raw bytes kept as they came");
    }
    assert_eq!(
        query_i64(&admin, "SELECT sum(next_offset)::bigint FROM kafka_offsets").await,
        600
    );
}

/// CPU time (user + system) a process has used so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn an_offset_past_the_end_is_explained_and_never_spins() {
    let tb = testbed_or_skip!();
    let topic = common::unique("pastend");
    common::produce_events(&tb, &topic, 3, 30, 5).await;
    let (pg, url) = tb.fresh_database("pastend").await;
    drain(&tb, &topic, &url).await;
    // As if the topic had been deleted and re-created: the positions are past its end.
    let db = open(&pg).await;
    db.execute(
        "UPDATE kafka_offsets SET next_offset = next_offset + 1000",
        &[],
    )
    .await
    .unwrap();
    let child = consumer(&tb, &topic, &url, &[]).spawn().unwrap();
    let pid = child.id().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let used = cpu_ticks(pid);
    let log = common::stop(child, Duration::from_secs(15)).await;
    // Said once per partition, then waited on: a loop would say it again and again.
    assert_eq!(
        log.matches("is past the end of the partition").count(),
        3,
        "{log}"
    );
    assert!(log.contains("DELETE FROM kafka_offsets"), "{log}");
    assert!(used < 40, "{used} ticks of CPU in 4 s: a busy loop");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM events").await, 30);
}
