//! Alerting against the test bed and a local webhook receiver: a site going down and
//! coming back (real producer), the quorum of vantage points, kill -9 between a decision
//! and its delivery and during it, and a receiver that is down, failing or slow.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::webhook::{Answer, Receiver};
use common::{Listener, query_i64, sites};
use tokio::process::{Child, Command};

const PRODUCER: &str = env!("CARGO_BIN_EXE_checksite-producer");

/// The tests that time a writer against a bound (20,000 events in 10 s) or kill
/// consumers mid-work take this: never side by side with each other.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A v1 event of `url` from `producer` at `at`: up (200) or down (503).
fn check(url: &str, producer: &str, up: bool, at: DateTime<Utc>) -> common::TimedRecord {
    let mut ev = common::sample_event(url, 1);
    ev.producer = producer.to_string();
    ev.checked_at = at;
    ev.up = Some(up);
    ev.status = Some(if up { 200 } else { 503 });
    (url.as_bytes().to_vec(), Some(ev.to_json()), at)
}

/// The outbox, in decision order: (url, kind, id, delivered).
async fn outbox(db: &tokio_postgres::Client) -> Vec<(String, String, uuid::Uuid, bool)> {
    db.query(
        "SELECT url, kind, id, delivered_at IS NOT NULL FROM alert_outbox ORDER BY seq",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The consumer with alerting to a receiver on `port`.
fn alerting_consumer(
    tb: &common::Testbed,
    topic: &str,
    db_url: &str,
    port: u16,
    extra: &[(&str, &str)],
) -> Command {
    let mut cmd = common::consumer(tb, topic, db_url, &[]);
    cmd.env("CK_ALERT_WEBHOOK_URL", Receiver::url(port));
    // These tests publish checks dated minutes to an hour ago: an incident among them is
    // not to be closed as stale (tests/alerts_vantage.rs tests that).
    cmd.env("CK_ALERT_STALE_AFTER", "86400");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Wait until `sql` (a count) reaches `n`; panics after `within`.
async fn wait_count(db: &tokio_postgres::Client, sql: &str, n: i64, within: Duration) {
    let start = Instant::now();
    loop {
        // Until the consumer has created its tables, the query fails: 0 so far.
        let now = match db.query_one(sql, &[]).await {
            Ok(row) => row.get(0),
            Err(_) => 0,
        };
        if now >= n {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{sql}: {now} of {n} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_site_that_goes_down_and_recovers_gives_one_down_then_one_up() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-e2e");
    let (pg, db_url) = tb.fresh_database("alerts_e2e").await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Ok);
    let site = sites::http_site();
    let now = Utc::now().timestamp_millis();
    let flapping = format!("{site}/down-between/{}/{}", now + 2_000, now + 5_000);
    let steady = format!("{site}/ok");
    let consumer = alerting_consumer(&tb, &topic, &db_url, port, &[])
        .spawn()
        .unwrap();
    let producer = Command::new(PRODUCER)
        .envs(tb.kafka_env(Listener::MutualTls, &topic))
        .env("CK_SITE_URL", format!("{flapping} {steady}"))
        .env("CK_CHECK_DELAY", "0.25")
        .env("CK_PRODUCER_ID", "vantage-a")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    receiver.wait_for_ids(2, Duration::from_secs(40)).await;
    // Longer than a decision takes: anything decided twice would show by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    common::stop(producer, Duration::from_secs(20)).await;
    let log = common::stop(consumer, Duration::from_secs(30)).await;

    let delivered = receiver.delivered();
    let kinds: Vec<&str> = delivered
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["down", "up"], "{delivered:#?}");
    let (down, up) = (&delivered[0], &delivered[1]);
    assert_ne!(down["id"], up["id"]);
    for n in [down, up] {
        assert_eq!(n["url"], flapping.as_str());
        assert_eq!(n["producers"], serde_json::json!(["vantage-a"]));
    }
    assert_eq!(down["status"], 503);
    assert_eq!(up["status"], 200);
    // `since` is the first failed check, as stored; `up`'s the first good one after.
    let db = common::open(&pg).await;
    let first = |sql: &str| {
        let db = &db;
        let flapping = flapping.clone();
        let sql = sql.to_string();
        async move {
            let row = db.query_one(&sql, &[&flapping]).await.unwrap();
            let ts: chrono::NaiveDateTime = row.get(0);
            ts.and_utc()
        }
    };
    let first_down = first("SELECT min(ts) FROM events WHERE url = $1 AND NOT up").await;
    let first_up_after = first(
        "SELECT min(ts) FROM events WHERE url = $1 AND up \
         AND ts > (SELECT max(ts) FROM events WHERE url = $1 AND NOT up)",
    )
    .await;
    let time = |v: &serde_json::Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(time(&down["since"]), first_down);
    assert_eq!(time(&up["since"]), first_up_after);
    assert!(time(&down["checked_at"]) > time(&down["since"]));
    // Everything delivered, nothing else decided (any row of the outbox, delivered or
    // not), the token never logged.
    let rows = outbox(&db).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|o| o.3), "{rows:?}");
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.path == "/hooks/sEcReT-token")
    );
    assert!(!log.contains("sEcReT"), "{log}");
    assert!(
        log.contains("alerts: delivering to http://127.0.0.1:"),
        "{log}"
    );
}

#[tokio::test]
async fn quorum_two_one_vantage_point_failing_alerts_nothing_both_alert_once() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-quorum");
    let (pg, db_url) = tb.fresh_database("alerts_quorum").await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Ok);
    let (alone, both) = ("https://alone.example/", "https://both.example/");
    let start = Utc::now() - TimeDelta::seconds(120);
    let mut records = Vec::new();
    for i in 0..8 {
        let at = start + TimeDelta::seconds(i);
        records.push(check(alone, "eu", false, at));
        records.push(check(alone, "us", true, at));
        records.push(check(both, "eu", false, at));
        records.push(check(both, "us", false, at));
    }
    common::produce_timed(&tb, &topic, 3, records).await;
    let page = common::free_port();
    let address = format!("127.0.0.1:{page}");
    let consumer = alerting_consumer(
        &tb,
        &topic,
        &db_url,
        port,
        &[("CK_ALERT_QUORUM", "2"), ("CK_HTTP_ADDR", &address)],
    )
    .spawn()
    .unwrap();
    let db = common::open(&pg).await;
    let events = "SELECT count(*) FROM events";
    wait_count(&db, events, 32, Duration::from_secs(30)).await;
    receiver.wait_for_ids(1, Duration::from_secs(20)).await;
    // Past the page's 2 s cache: the open incident shows on the page and in the JSON.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let json = common::api_status_as_of(page, Utc::now()).await;
    let api: serde_json::Value = serde_json::from_str(&json).unwrap();
    let since = checksite::event::format_time(&start);
    let incident = serde_json::json!([{"id": common::target_id(both), "name": null, "url": both, "since": since, "producers": ["eu", "us"]}]);
    assert_eq!(api["incidents"], incident, "{json}");
    let (_, html) = common::http_get_when_up(page, "/").await;
    assert!(html.contains("Open incidents: 1"), "{html}");
    let (_, metrics) = common::http_get_when_up(page, "/metrics").await;
    for line in [
        "checksite_consumer_alerts_decided_total{topic=",
        "checksite_consumer_alert_deliveries_total{topic=",
    ] {
        let sample = metrics.lines().find(|l| l.starts_with(line)).unwrap_or("");
        assert!(sample.ends_with(" 1"), "{line}: {metrics}");
    }
    common::stop(consumer, Duration::from_secs(30)).await;
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    assert_eq!(delivered[0]["kind"], "down");
    assert_eq!(delivered[0]["url"], both);
    assert_eq!(delivered[0]["producers"], serde_json::json!(["eu", "us"]));
    assert_eq!(
        delivered[0]["since"].as_str().unwrap(),
        checksite::event::format_time(&start)
    );
    let rows = outbox(&db).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    // The incident is open: the status page's state shows it.
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM alert_sites WHERE down").await,
        1
    );
}

/// What the rules decide for one vantage point's verdicts (quorum 1, after 3, recover
/// after 2), written out again independently of the consumer's code.
fn expected_transitions(verdicts: &[bool]) -> Vec<&'static str> {
    let (mut down, mut fails, mut oks, mut out) = (false, 0, 0, Vec::new());
    for &up in verdicts {
        if up {
            (oks, fails) = (oks + 1, 0);
        } else {
            (fails, oks) = (fails + 1, 0);
        }
        if !down && fails >= 3 {
            down = true;
            out.push("down");
        } else if down && oks >= 2 {
            down = false;
            out.push("up");
        }
    }
    out
}

/// Verdicts for site `i`: runs of failures of 1 to 5 checks between runs of good ones.
fn verdicts(i: usize) -> Vec<bool> {
    let mut v = Vec::new();
    for run in 0..8 {
        let fails = 1 + (i * 7 + run * 3) % 5;
        let oks = 1 + (i + run) % 3;
        v.extend(std::iter::repeat_n(false, fails));
        v.extend(std::iter::repeat_n(true, oks));
    }
    v
}

/// SIGKILL `child`; returns what it logged.
async fn kill_9(mut child: Child) -> String {
    child.start_kill().unwrap(); // SIGKILL
    let _ = child.wait().await;
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = stderr.read_to_string(&mut log).await;
    }
    log
}

#[tokio::test]
async fn kill_9_between_and_during_deliveries_decides_once_and_delivers_all() {
    let tb = testbed_or_skip!();
    let _alone = HEAVY.lock().await;
    let topic = common::unique("alerts-kill9");
    let (pg, db_url) = tb.fresh_database("alerts_kill9").await;
    let db = common::open(&pg).await;
    let start = Utc::now() - TimeDelta::hours(1);
    // Each URL's checks in four parts, published one after the other: the flapping
    // verdicts; two good checks (up); four failures (down); three good checks (up).
    let mut parts: [Vec<common::TimedRecord>; 4] = Default::default();
    let mut counts = [0i64; 4];
    let mut expected: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for i in 0..40 {
        let url = format!("https://site-{i}.example/");
        let mut v = verdicts(i);
        let first = v.len() + 2;
        v.extend([true, true, false, false, false, false, true, true, true]);
        for (n, up) in v.iter().enumerate() {
            let part = match n {
                n if n < first - 2 => 0,
                n if n < first => 1,
                n if n < first + 4 => 2,
                _ => 3,
            };
            let record = check(&url, "eu", *up, start + TimeDelta::seconds(n as i64));
            // A producer retry: the first failure of each run published twice (same id).
            // Counted twice, a run of 2 failures would make a false `down`.
            if !up && (n == 0 || v[n - 1]) {
                parts[part].push(record.clone());
            }
            parts[part].push(record);
            counts[part] += 1;
        }
        expected.insert(url, expected_transitions(&v));
    }
    let decisions: usize = expected.values().map(Vec::len).sum();
    assert!(decisions > 100, "{decisions} transitions only");
    let [first, second, third, fourth] = parts;
    common::produce_timed(&tb, &topic, 3, first).await;

    // Nothing listens yet: every decision waits in the outbox. Small transactions, killed
    // at random points, many times over.
    let port = common::free_port();
    // Their logs are not read (a delivery or a failed attempt is a line each: hundreds
    // here, which would fill a pipe and stall the consumer), except where said.
    let consumer_logging = |log: Stdio| {
        alerting_consumer(&tb, &topic, &db_url, port, &[("CK_BATCH_EVENTS", "40")])
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let spawn = || consumer_logging(Stdio::null());
    for round in 0..8u64 {
        let child = spawn();
        tokio::time::sleep(Duration::from_millis(300 + round * 97 % 500)).await;
        kill_9(child).await;
    }
    // Two consumers side by side: partitions move between live consumers, and the alert
    // states a consumer keeps must be forgotten when they do.
    let stored = "SELECT count(*) FROM events";
    let b = spawn();
    wait_count(&db, stored, counts[0], Duration::from_secs(60)).await;
    // b alone (a killed consumer's session may still count as one for a moment) writes
    // and so knows every URL's state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    common::produce_timed(&tb, &topic, 3, second).await;
    wait_count(&db, stored, counts[0] + counts[1], Duration::from_secs(60)).await;
    let a = consumer_logging(Stdio::piped());
    tokio::time::sleep(Duration::from_secs(5)).await; // b gives a partition to a
    common::produce_timed(&tb, &topic, 3, third).await;
    let written: i64 = counts[..3].iter().sum();
    wait_count(&db, stored, written, Duration::from_secs(60)).await;
    let log = kill_9(a).await;
    assert!(log.contains("this one now holds partitions"), "{log}");
    tokio::time::sleep(Duration::from_secs(5)).await; // b takes it back
    common::produce_timed(&tb, &topic, 3, fourth).await;
    let events = counts.iter().sum();
    wait_count(&db, stored, events, Duration::from_secs(60)).await;
    kill_9(b).await;

    // Now a receiver that holds the first request 3 s: the consumer dies during it.
    let receiver = Receiver::start_on(port, Answer::After(Duration::from_secs(3)));
    let child = spawn();
    let began = Instant::now();
    while receiver.arrived() == 0 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no delivery attempt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_9(child).await;
    receiver.answer(Answer::Ok);
    let child = spawn();
    receiver
        .wait_for_ids(decisions, Duration::from_secs(60))
        .await;
    // Every one recorded as delivered: the one cut by kill -9 was sent again (the receiver
    // may have recorded the cut attempt first).
    let delivered = "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NOT NULL";
    wait_count(&db, delivered, decisions as i64, Duration::from_secs(30)).await;
    common::stop(child, Duration::from_secs(30)).await;

    // Decided once each: the outbox holds exactly the transitions of the events.
    let rows = outbox(&db).await;
    let mut decided: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (url, kind, _, delivered) in &rows {
        assert!(delivered, "{url} {kind} not delivered");
        decided
            .entry(url.clone())
            .or_default()
            .push(match kind.as_str() {
                "down" => "down",
                "up" => "up",
                other => panic!("unexpected kind {other}"),
            });
    }
    expected.retain(|_, v| !v.is_empty());
    assert_eq!(decided, expected);
    // Delivered at least once, each with the id it was decided with, one URL's in order.
    // (The request held when the consumer was killed is recorded when its hold ends.)
    while receiver.received().len() < receiver.arrived() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = receiver.received();
    let mut times: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *times
            .entry(r.body["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (_, _, id, _) in &rows {
        assert!(times.contains_key(&id.to_string()), "{id} never received");
    }
    assert_eq!(times.len(), rows.len(), "ids the outbox does not have");
    assert!(
        times.values().any(|&n| n >= 2),
        "the delivery cut by kill -9 was not repeated"
    );
    // Each notification's first arrival, per URL, in decision order (a repeat of one cut
    // by kill -9 may arrive late: at least once, the receiver dedupes on `id`).
    let seq: HashMap<String, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.2.to_string(), i))
        .collect();
    let mut first_seen: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in &received {
        let id = r.body["id"].as_str().unwrap();
        if seen.insert(id) {
            let url = r.body["url"].as_str().unwrap();
            first_seen.entry(url).or_default().push(seq[id]);
        }
    }
    for (url, order) in first_seen {
        assert!(
            order.is_sorted(),
            "{url}: delivered out of order: {order:?}"
        );
    }
}

#[tokio::test]
async fn a_receiver_failing_down_or_slow_delays_alerts_never_events() {
    let tb = testbed_or_skip!();
    let _alone = HEAVY.lock().await;
    let topic = common::unique("alerts-outage");
    let (pg, db_url) = tb.fresh_database("alerts_outage").await;
    let db = common::open(&pg).await;
    let port = common::free_port();
    let receiver = Receiver::start_on(port, Answer::Status(500));
    let consumer = alerting_consumer(&tb, &topic, &db_url, port, &[])
        .spawn()
        .unwrap();
    let url = "https://flaky.example/";
    let at = |s: i64| Utc::now() - TimeDelta::seconds(600 - s);
    let delivered_sql = "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NOT NULL";

    // 1. The receiver answers 500: retried, delivered once it answers 200.
    let down: Vec<_> = (0..3).map(|s| check(url, "eu", false, at(s))).collect();
    common::produce_timed(&tb, &topic, 3, down).await;
    let began = Instant::now();
    while receiver.arrived() < 2 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no retry after a 500"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(query_i64(&db, delivered_sql).await, 0);
    receiver.answer(Answer::Ok);
    receiver.wait_for_ids(1, Duration::from_secs(20)).await;
    wait_count(&db, delivered_sql, 1, Duration::from_secs(10)).await;

    // 2. The receiver is down (connections refused) for three attempts (1 s, then 2 s
    // apart): `up` waits, and goes out after.
    receiver.listen(false);
    let up: Vec<_> = (3..5).map(|s| check(url, "eu", true, at(s))).collect();
    common::produce_timed(&tb, &topic, 3, up).await;
    wait_count(
        &db,
        "SELECT count(*) FROM alert_outbox",
        2,
        Duration::from_secs(20),
    )
    .await;
    let attempts = "SELECT coalesce(max(attempts), 0)::bigint FROM alert_outbox";
    wait_count(&db, attempts, 3, Duration::from_secs(30)).await;
    assert_eq!(query_i64(&db, delivered_sql).await, 1);
    receiver.listen(true);
    receiver.wait_for_ids(2, Duration::from_secs(40)).await;

    // 3. The receiver hangs 20 s per request: events keep being written meanwhile.
    receiver.answer(Answer::After(Duration::from_secs(20)));
    let base = receiver.arrived();
    let down: Vec<_> = (5..8).map(|s| check(url, "eu", false, at(s))).collect();
    common::produce_timed(&tb, &topic, 3, down).await;
    let began = Instant::now();
    while receiver.arrived() == base {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no attempt at the 2nd down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hung_at = Instant::now();
    let more = common::produce_events(&tb, &topic, 3, 20_000, 50).await as i64;
    wait_count(
        &db,
        "SELECT count(*) FROM events",
        8 + more,
        Duration::from_secs(9),
    )
    .await;
    assert!(
        hung_at.elapsed() < Duration::from_secs(10),
        "20,000 events took {:?} while the receiver hung",
        hung_at.elapsed()
    );
    receiver.answer(Answer::Ok);
    receiver.wait_for_ids(3, Duration::from_secs(40)).await;
    wait_count(&db, delivered_sql, 3, Duration::from_secs(10)).await;
    common::stop(consumer, Duration::from_secs(30)).await;
    let kinds: Vec<String> = outbox(&db).await.into_iter().map(|o| o.1).collect();
    assert_eq!(kinds, ["down", "up", "down"]);
}

#[tokio::test]
async fn an_https_receiver_is_verified_and_trusted_through_ck_alert_ca() {
    let tb = testbed_or_skip!();
    let topic = common::unique("alerts-tls");
    let (pg, db_url) = tb.fresh_database("alerts_tls").await;
    let db = common::open(&pg).await;
    let port = common::free_port();
    let receiver = Receiver::start_tls_on(
        port,
        &tb.certs.join("server.cert"),
        &tb.certs.join("server.key"),
    );
    let url = format!("https://127.0.0.1:{port}/hooks/sEcReT-token");
    let at = |s: i64| Utc::now() - TimeDelta::seconds(60 - s);
    let down: Vec<_> = (0..3)
        .map(|s| check("https://tls.example/", "eu", false, at(s)))
        .collect();
    common::produce_timed(&tb, &topic, 3, down).await;
    // Without the test CA: the receiver's certificate is refused, nothing is sent.
    let untrusting = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_ALERT_WEBHOOK_URL", &url)
        .spawn()
        .unwrap();
    let attempted = "SELECT count(*) FROM alert_outbox WHERE attempts > 0";
    wait_count(&db, attempted, 1, Duration::from_secs(30)).await;
    let log = common::stop(untrusting, Duration::from_secs(30)).await;
    assert!(receiver.received().is_empty());
    let error: String = db
        .query_one("SELECT last_error FROM alert_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("TLS"), "{error}");
    assert!(
        !log.contains("sEcReT") && !error.contains("sEcReT"),
        "{log}"
    );
    // With it (CK_ALERT_CA): delivered.
    let trusting = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_ALERT_WEBHOOK_URL", &url)
        .env("CK_ALERT_CA", tb.cert("ca.pem"))
        .spawn()
        .unwrap();
    let delivered = receiver.wait_for_ids(1, Duration::from_secs(40)).await;
    assert_eq!(delivered[0]["kind"], "down");
    common::stop(trusting, Duration::from_secs(30)).await;
}
