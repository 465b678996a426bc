//! PostgreSQL and then the broker are taken away while the consumer works: it pauses,
//! resumes at the committed offsets, and every event is in the table exactly once.
//!
//! Its own test binary: cargo runs test binaries one at a time, so taking the services
//! away here cannot disturb the other tests.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Listener;

const BIN: &str = env!("CARGO_BIN_EXE_checksite-consumer");

/// The rows stored, or why the table cannot be read (PostgreSQL restarting, or the
/// consumer not past its migration yet).
async fn rows(db: &tokio_postgres::Client) -> Result<i64, String> {
    match db.query_one("SELECT count(*) FROM events", &[]).await {
        Ok(r) => Ok(r.get(0)),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test]
async fn postgres_and_broker_restarted_mid_stream() {
    let tb = testbed_or_skip!();
    let topic = common::unique("outage");
    let (pg, url) = tb.fresh_database("outage").await;
    // Python-format records: no id, so a range written twice would show as extra rows.
    let first = common::produce_python(&tb, &topic, 3, 0..30_000, 100).await as i64;
    let mut child = tokio::process::Command::new(BIN)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_POSTGRESQL_URL", &url)
        .env("CK_BATCH_EVENTS", "1000")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // PostgreSQL away for 5 s while the backlog is being written.
    tokio::time::sleep(Duration::from_millis(700)).await;
    common::testbed_script("stop-postgres");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the consumer must wait for PostgreSQL, not exit"
    );
    common::testbed_script("start-postgres");

    // The broker away for 10 s, with more events produced after it is back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    common::testbed_script("stop-kafka");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the consumer must wait for Kafka, not exit"
    );
    common::testbed_script("start-kafka");
    let second = common::produce_python(&tb, &topic, 3, 30_000..35_000, 100).await as i64;

    let db = pg.connect(Duration::from_secs(10)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (n, why) = match rows(&db).await {
            Ok(n) => (n, String::new()),
            Err(why) => (-1, why),
        };
        if n == first + second {
            break;
        }
        assert!(
            n <= first + second,
            "{n} rows for {} events",
            first + second
        );
        if Instant::now() >= deadline {
            // Say what the consumer said: the failure is in its log.
            let log = common::stop(child, Duration::from_secs(15)).await;
            panic!(
                "{n} of {} rows after 90 s ({why}); the consumer said:\n{log}",
                first + second
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let distinct: i64 = db
        .query_one("SELECT count(DISTINCT elapsed) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, first + second);
    let log = common::stop(child, Duration::from_secs(15)).await;
    assert!(log.contains("PostgreSQL is back"), "{log}");
}
