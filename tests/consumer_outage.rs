//! PostgreSQL and then the broker are taken away while the consumer works: it pauses,
//! resumes at the committed offsets, and every event is in the table exactly once.
//!
//! Its own test binary: cargo runs test binaries one at a time, so taking the services
//! away here cannot disturb the other tests.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{BackOnPanic, Listener};

const BIN: &str = env!("CARGO_BIN_EXE_checksite-consumer");

/// The rows stored, or why the table cannot be read (PostgreSQL restarting, or the
/// consumer not past its migration yet).
async fn rows(db: &tokio_postgres::Client) -> Result<i64, String> {
    match db.query_one("SELECT count(*) FROM events", &[]).await {
        Ok(r) => Ok(r.get(0)),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Wait until the table holds more than `low` rows (and say how many); panics when it
/// reaches `all` first (the outage would then hit nothing) or after 60 s.
async fn rows_past(db: &tokio_postgres::Client, low: i64, all: i64) -> i64 {
    let start = Instant::now();
    loop {
        if let Ok(n) = rows(db).await {
            assert!(
                n < all,
                "all {all} rows were written before the outage: it would interrupt nothing"
            );
            if n > low {
                return n;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no rows past {low}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds since Kafka last answered a fetch of any partition this consumer holds, from
/// its `/metrics` (`checksite_consumer_last_fetch_timestamp_seconds`, the latest of them).
async fn seconds_since_a_fetch(http: u16) -> f64 {
    let (status, body) = common::http_get_when_up(http, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let latest = body
        .lines()
        .filter(|l| l.starts_with("checksite_consumer_last_fetch_timestamp_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(f64::NAN, f64::max);
    assert!(latest > 0.0, "no last fetch time in:\n{body}");
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0 - latest
}

/// `/readyz`'s answer once `wanted` holds of it, asked every 200 ms for 30 s at most.
async fn readyz_when(http: u16, wanted: impl Fn(u16, &str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = common::http_get_when_up(http, "/readyz").await;
        if wanted(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} from /readyz in 30 s; the last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn postgres_and_broker_restarted_mid_stream() {
    let tb = testbed_or_skip!();
    let topic = common::unique("outage");
    let (pg, url) = tb.fresh_database("outage").await;
    // Python-format records: no id, so a range written twice would show as extra rows.
    let first = common::produce_python(&tb, &topic, 3, 0..300_000, 100).await as i64;
    let watch = pg.connect(Duration::from_secs(10)).await.unwrap();
    let http = common::free_port();
    let mut child = tokio::process::Command::new(BIN)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_POSTGRESQL_URL", &url)
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("CK_BATCH_EVENTS", "1000")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // PostgreSQL away for 5 s while the backlog is being written: it stops with some of
    // the rows written and not all.
    let at_stop = rows_past(&watch, 10_000, first).await;
    common::testbed_script("stop-postgres");
    let postgres_back = BackOnPanic("start-postgres");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the consumer must wait for PostgreSQL, not exit"
    );
    // Not ready meanwhile, and it says why; alive all along.
    let (status, why) = common::http_get_when_up(http, "/readyz").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("PostgreSQL"), "{why}");
    assert_eq!(common::http_get_when_up(http, "/healthz").await.0, 200);
    common::testbed_script("start-postgres");
    drop(postgres_back);

    // The broker away for 5 s while a second backlog is being read.
    let db = pg.connect(Duration::from_secs(10)).await.unwrap();
    let second = common::produce_python(&tb, &topic, 3, 300_000..500_000, 100).await as i64;
    let at_broker_stop = rows_past(&db, first + 10_000, first + second).await;
    common::testbed_script("stop-kafka");
    let kafka_back = BackOnPanic("start-kafka");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the consumer must wait for Kafka, not exit"
    );
    // The outage stopped the work: the second backlog was not through when it ended.
    let at_broker_back = rows(&db).await.unwrap_or(0);
    assert!(
        at_broker_back < first + second,
        "all {at_broker_back} rows written while the broker was away"
    );
    // What an alert on the consumer's side of Kafka reads: no fetch answered meanwhile.
    let quiet = seconds_since_a_fetch(http).await;
    assert!(
        quiet >= 4.0,
        "a fetch answered {quiet:.1} s ago, the broker away for 5 s"
    );
    // Not ready while Kafka is away, saying so (the fetch's long poll and 5 s of silence,
    // or a failed fetch, come first); alive all along.
    let said = readyz_when(http, |status, _| status == 503, "503 with the broker away").await;
    assert!(said.contains("Kafka: partition"), "{said}");
    assert_eq!(common::http_get_when_up(http, "/healthz").await.0, 200);
    common::testbed_script("start-kafka");
    drop(kafka_back);

    let deadline = Instant::now() + Duration::from_secs(120);
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
                "{n} of {} rows after 120 s ({why}); the consumer said:\n{log}",
                first + second
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Kafka answers again: the fetchers' long polls (5 s at most) move it again, and the
    // consumer is ready again.
    readyz_when(http, |status, _| status == 200, "200 with the broker back").await;
    let quiet = seconds_since_a_fetch(http).await;
    assert!(
        quiet < 10.0,
        "no fetch answered for {quiet:.1} s, the broker back"
    );
    let distinct: i64 = db
        .query_one("SELECT count(DISTINCT elapsed) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, first + second);
    let log = common::stop(child, Duration::from_secs(15)).await;
    // Both outages hit work under way: PostgreSQL work failed and was resumed, fetches
    // failed and were resumed.
    assert!(
        log.contains("pausing, then resuming from the committed offsets")
            || log.contains("pausing until PostgreSQL answers"),
        "{log}"
    );
    assert!(log.contains("PostgreSQL is back"), "{log}");
    // The broker's outage, both ends: said even when no fetch failed (rskafka retries a
    // broker that went away inside the request, silently, for up to ~25 s).
    assert!(
        log.contains("Kafka has not answered a fetch")
            || log.contains("Kafka fetch failed")
            || log.contains("Kafka fetch timed out"),
        "{log}"
    );
    assert!(log.contains("Kafka answers again"), "{log}");
    // Nothing written twice: the count stays exact with the consumer stopped. (The test
    // bed's PostgreSQL runs with synchronous_commit off and is stopped with -m immediate:
    // the last acknowledged transaction may be lost with its offsets, and is then written
    // again; the consumer's own "written" count includes it twice.)
    assert_eq!(rows(&db).await.unwrap(), first + second);
    eprintln!(
        "rows when PostgreSQL stopped: {at_stop} of {first}; when the broker stopped: {at_broker_stop} of {}",
        first + second
    );
}
