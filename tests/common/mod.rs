//! What every integration test shares: finding the test bed (scripts/testbed/testbed.sh)
//! through its environment variables, a fresh topic and a fresh database per test.
//!
//! In a hand-run `cargo test` a test whose service is absent skips, saying so; under
//! `just test` and CI ([`strict`]) it fails.
#![allow(dead_code)]

use std::path::PathBuf;

use checksite::consumer::store::PostgresSettings;
use checksite::kafka::KafkaSettings;
use checksite::settings::Settings;

pub struct Testbed {
    pub kafka_plaintext: String,
    pub kafka_ssl: String,
    pub kafka_sasl: String,
    pub sasl_user: String,
    pub sasl_password: String,
    pub certs: PathBuf,
    pub postgres_url: String,
}

/// Whether a missing service fails the test instead of skipping it: under CI (`CI=true`)
/// and under `just test` (`CK_TEST_STRICT=1`). Only a hand-run `cargo test` may skip.
pub fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("CK_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// The running test bed, or None (after saying why) when it is not running locally.
pub fn testbed() -> Option<Testbed> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Testbed {
            kafka_plaintext: var("CK_TEST_KAFKA_PLAINTEXT")?,
            kafka_ssl: var("CK_TEST_KAFKA_SSL")?,
            kafka_sasl: var("CK_TEST_KAFKA_SASL")?,
            sasl_user: var("CK_TEST_KAFKA_SASL_USER")?,
            sasl_password: var("CK_TEST_KAFKA_SASL_PASSWORD")?,
            certs: PathBuf::from(var("CK_TEST_CERTS")?),
            postgres_url: var("CK_TEST_POSTGRES_URL")?,
        })
    })();
    if found.is_none() {
        if strict() {
            panic!(
                "strict mode (CI=true or `just test`) but the test bed's CK_TEST_* variables are not set: start it with `just services` and run tests with `just test`"
            );
        }
        eprintln!(
            "SKIPPED: test bed not running (start it with `just services`, run tests with `just test`)"
        );
    }
    found
}

#[macro_export]
macro_rules! testbed_or_skip {
    () => {
        match common::testbed() {
            Some(t) => t,
            None => return,
        }
    };
}

/// A topic name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// How a test reaches Kafka.
#[derive(Clone, Copy, Debug)]
pub enum Listener {
    Plaintext,
    MutualTls,
    Sasl(&'static str),
}

impl Testbed {
    pub fn cert(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }

    /// The CK_* variables for a listener, as a user would write them.
    pub fn kafka_env(&self, listener: Listener, topic: &str) -> Vec<(String, String)> {
        let mut env = vec![("CK_KAFKA_TOPIC".to_string(), topic.to_string())];
        let mut set = |k: &str, v: String| env.push((k.to_string(), v));
        match listener {
            Listener::Plaintext => set("CK_KAFKA_SERVERS", self.kafka_plaintext.clone()),
            Listener::MutualTls => {
                set("CK_KAFKA_SERVERS", self.kafka_ssl.clone());
                set(
                    "CK_KAFKA_SSL",
                    format!(
                        "{} {} {}",
                        self.cert("ca.pem"),
                        self.cert("service.cert"),
                        self.cert("service.key")
                    ),
                );
            }
            Listener::Sasl(mechanism) => {
                set("CK_KAFKA_SERVERS", self.kafka_sasl.clone());
                set("CK_KAFKA_SSL", self.cert("ca.pem"));
                set("CK_KAFKA_SASL_MECHANISM", mechanism.to_string());
                set("CK_KAFKA_SASL_USERNAME", self.sasl_user.clone());
                set("CK_KAFKA_SASL_PASSWORD", self.sasl_password.clone());
            }
        }
        env
    }

    pub fn kafka(&self, listener: Listener, topic: &str) -> KafkaSettings {
        KafkaSettings::from_settings(&Settings::new(self.kafka_env(listener, topic)))
            .expect("test bed Kafka settings")
    }

    pub fn postgres(&self) -> PostgresSettings {
        PostgresSettings::parse(&self.postgres_url).expect("test bed PostgreSQL URL")
    }

    /// A new, empty database for one test; returns its settings and its URL.
    pub async fn fresh_database(&self, prefix: &str) -> (PostgresSettings, String) {
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let admin = self
            .postgres()
            .connect(std::time::Duration::from_secs(10))
            .await
            .expect("connect to test bed PostgreSQL");
        // A database name cannot be a bind parameter; this one is made of [a-z0-9_] only.
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = self
            .postgres_url
            .replacen("/postgres?", &format!("/{name}?"), 1);
        (self.postgres().with_dbname(&name), url)
    }
}
pub mod raw_site;
pub mod sites;
pub mod webhook;

use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// checksite-consumer on `topic` (mutual TLS) and `db_url`, output captured.
pub fn consumer(tb: &Testbed, topic: &str, db_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_checksite-consumer"));
    cmd.envs(tb.kafka_env(Listener::MutualTls, topic))
        .env("CK_POSTGRESQL_URL", db_url)
        .env("CK_BATCH_MS", "100")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `checksite-consumer --drain`, which must succeed within 120 s; returns its stdout.
pub async fn drain(tb: &Testbed, topic: &str, db_url: &str) -> String {
    drain_with(tb, topic, db_url, &[]).await
}

/// `checksite-consumer --drain`, run to its end, which must come `within`: its exit
/// status and output, whatever they are.
pub async fn drain_output(
    tb: &Testbed,
    topic: &str,
    db_url: &str,
    (within, env): (Duration, &[(&str, &str)]),
) -> std::process::Output {
    let mut cmd = consumer(tb, topic, db_url, &["--drain"]);
    cmd.envs(env.iter().copied());
    let Ok(out) = tokio::time::timeout(within, cmd.output()).await else {
        panic!("--drain did not end within {} s", within.as_secs());
    };
    out.unwrap()
}

/// [`drain`] with more settings in its environment (`CK_BATCH_EVENTS`, …).
pub async fn drain_with(tb: &Testbed, topic: &str, db_url: &str, env: &[(&str, &str)]) -> String {
    let out = drain_output(tb, topic, db_url, (Duration::from_secs(120), env)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "consumer failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The latency histogram's bucket bounds (ms, exclusive) as the README lists them: an
/// oracle for the page's percentiles that is not the code under test.
pub const README_LATENCY_BOUNDS_MS: [f64; 32] = [
    1., 2., 3., 4., 5., 7., 10., 14., 20., 28., 40., 56., 80., 110., 160., 220., 320., 450., 640.,
    900., 1300., 1800., 2500., 3600., 5000., 7000., 10000., 14000., 20000., 28000., 40000., 56000.,
];

/// The partition librdkafka's Java-compatible partitioner (`kcat -X
/// partitioner=murmur2_random`) puts each of `keys` in, of a new topic of `partitions`: an
/// independent oracle for checksite's own partitioning. None (after saying so) without kcat.
pub async fn kcat_partitions(
    tb: &Testbed,
    keys: &[String],
    partitions: i32,
) -> Option<std::collections::HashMap<String, i32>> {
    let kcat = debian_program("kcat")?;
    let topic = unique("kcat-partitions");
    let settings = tb.kafka(Listener::Plaintext, &topic);
    let client = checksite::kafka::connect(&settings, Duration::from_secs(10))
        .await
        .expect("connect");
    checksite::kafka::ensure_topic(&client, &topic, partitions, -1)
        .await
        .expect("topic");
    let input: String = keys.iter().map(|k| format!("{k}\t.\n")).collect();
    let mut produce = std::process::Command::new(&kcat)
        .args(["-P", "-b", &tb.kafka_plaintext, "-t", &topic, "-K", "\t"])
        .args(["-X", "partitioner=murmur2_random"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat -P");
    use std::io::Write;
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(produce.wait().unwrap().success(), "kcat -P failed");
    let out = std::process::Command::new(&kcat)
        .args(["-C", "-b", &tb.kafka_plaintext, "-t", &topic, "-e", "-q"])
        .args(["-f", "%k\t%p\n"])
        .output()
        .expect("kcat -C");
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, p)| (k.to_string(), p.parse().unwrap()))
            .collect(),
    )
}

/// `--drain`'s summary line ("N event(s) written, M already stored, K rejected") as
/// [written, already stored, rejected]; panics when the output has none.
pub fn drain_summary(stdout: &str) -> [u64; 3] {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" event(s) written, "))
        .unwrap_or_else(|| panic!("no summary in: {stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 3, "{line}");
    [numbers[0], numbers[1], numbers[2]]
}

/// The first column of the one row `sql` returns.
pub async fn query_i64(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// Until `n` events are stored and every rollup delta is folded (60 s at most).
pub async fn wait_stored_and_folded(db: &tokio_postgres::Client, n: i64) {
    let start = std::time::Instant::now();
    loop {
        let stored = db.query_one("SELECT count(*) FROM events", &[]).await;
        let left = db
            .query_one("SELECT count(*) FROM rollup_deltas", &[])
            .await;
        if let (Ok(s), Ok(l)) = (stored, left)
            && s.get::<_, i64>(0) == n
            && l.get::<_, i64>(0) == 0
        {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection to a test database.
pub async fn open(
    settings: &checksite::consumer::store::PostgresSettings,
) -> tokio_postgres::Client {
    settings.connect(Duration::from_secs(10)).await.unwrap()
}

/// A target's id as the README defines it: the first 16 hex digits of the SHA-256 of its
/// URL (as configured).
pub fn target_id(url: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The DOM headless Chromium builds of `url` (its scripts run); None (after saying so)
/// without Chromium.
pub fn chromium_dom(url: &str) -> Option<String> {
    let chromium = debian_program("chromium")?;
    let dom = std::process::Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--virtual-time-budget=2000", "--dump-dom", url])
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(dom.status.success(), "chromium --dump-dom failed");
    Some(String::from_utf8_lossy(&dom.stdout).into_owned())
}

/// Whether `topic` exists yet.
pub async fn kafka_topic_exists(tb: &Testbed, topic: &str) -> bool {
    let settings = tb.kafka(Listener::Plaintext, topic);
    let client = checksite::kafka::connect(&settings, Duration::from_secs(10))
        .await
        .expect("connect");
    checksite::kafka::topic_partitions(&client, topic)
        .await
        .expect("metadata")
        .is_some_and(|p| !p.is_empty())
}

/// Every record of a topic: (partition, offset, key, value), read over plaintext.
pub async fn read_topic(tb: &Testbed, topic: &str) -> Vec<(i32, i64, String, Vec<u8>)> {
    use checksite::kafka;
    let settings = tb.kafka(Listener::Plaintext, topic);
    let client = kafka::connect(&settings, std::time::Duration::from_secs(10))
        .await
        .expect("connect");
    let partitions = kafka::topic_partitions(&client, topic)
        .await
        .expect("metadata")
        .expect("topic exists");
    let mut out = Vec::new();
    for p in partitions {
        let pc = kafka::partition_client(&client, topic, p)
            .await
            .expect("partition client");
        let mut offset = 0;
        loop {
            let (records, high) = pc
                .fetch_records(offset, 1..10_000_000, 500)
                .await
                .expect("fetch");
            for r in &records {
                let key = String::from_utf8(r.record.key.clone().unwrap_or_default()).unwrap();
                out.push((p, r.offset, key, r.record.value.clone().unwrap_or_default()));
                offset = r.offset + 1;
            }
            if offset >= high || records.is_empty() {
                break;
            }
        }
    }
    out
}

/// Send SIGTERM to a child process.
pub fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// SIGTERM `child`; it must exit within `within`, with status 0. Returns its stderr.
pub async fn stop(child: tokio::process::Child, within: Duration) -> String {
    terminate(&child);
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .expect("wait for the child");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "SIGTERM: exit 0 expected: {log}");
    log
}

/// A check of `url` from the vantage point "eu" at `at`, up (200) or down (503), as a
/// record published at `published`.
pub fn eu_check(
    url: &str,
    up: bool,
    at: chrono::DateTime<chrono::Utc>,
    published: chrono::DateTime<chrono::Utc>,
) -> TimedRecord {
    let mut ev = sample_event(url, 1);
    ev.producer = "eu".into();
    ev.checked_at = at;
    ev.up = Some(up);
    ev.status = Some(if up { 200 } else { 503 });
    (url.as_bytes().to_vec(), Some(ev.to_json()), published)
}

/// A v1 event as the producer makes it, for `url`.
pub fn sample_event(url: &str, n: u64) -> checksite::event::CheckEvent {
    checksite::event::CheckEvent {
        elapsed_ms: 10 + n % 90,
        status: Some(200),
        content_match: Some("ok".into()),
        dns_ms: Some(1),
        connect_ms: Some(1),
        ttfb_ms: Some(5),
        bytes: Some(1234),
        ip: Some("127.0.0.1".into()),
        body_sha256: Some("0".repeat(64)),
        ..checksite::event::CheckEvent::starting(url, "test", 0)
    }
}

/// Put raw (key, value) records into a topic (created with `partitions` if missing),
/// each in the partition its key hashes to. Returns how many went in.
pub async fn produce_raw(
    tb: &Testbed,
    topic: &str,
    partitions: i32,
    records: Vec<(Vec<u8>, Vec<u8>)>,
) -> usize {
    let now = chrono::Utc::now();
    let records = records
        .into_iter()
        .map(|(k, v)| (k, Some(v), now))
        .collect();
    produce_timed(tb, topic, partitions, records).await
}

/// A record's key, value (None: a tombstone) and Kafka timestamp.
pub type TimedRecord = (Vec<u8>, Option<Vec<u8>>, chrono::DateTime<chrono::Utc>);

/// [`produce_raw`] with each record's Kafka timestamp given (milliseconds are kept), and
/// values that may be missing (tombstones).
pub async fn produce_timed(
    tb: &Testbed,
    topic: &str,
    partitions: i32,
    records: Vec<TimedRecord>,
) -> usize {
    use checksite::kafka;
    use rskafka::record::Record;
    let settings = tb.kafka(Listener::Plaintext, topic);
    let client = kafka::connect(&settings, std::time::Duration::from_secs(10))
        .await
        .expect("connect");
    let n = kafka::ensure_topic(&client, topic, partitions, -1)
        .await
        .expect("topic");
    let mut by_partition: std::collections::BTreeMap<i32, Vec<Record>> = Default::default();
    let count = records.len();
    for (key, value, timestamp) in records {
        let p = kafka::partition_for(&key, n);
        by_partition.entry(p).or_default().push(Record {
            key: Some(key),
            value,
            headers: Default::default(),
            timestamp,
        });
    }
    for (p, recs) in by_partition {
        let pc = kafka::partition_client(&client, topic, p)
            .await
            .expect("partition client");
        let mut it = recs.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Record> = it.by_ref().take(2000).collect();
            pc.produce(
                chunk,
                rskafka::client::partition::Compression::NoCompression,
            )
            .await
            .expect("produce");
        }
    }
    count
}

/// `n` v1 events over `sites` URLs; returns the number produced.
pub async fn produce_events(
    tb: &Testbed,
    topic: &str,
    partitions: i32,
    n: u64,
    sites: u64,
) -> usize {
    let records = (0..n)
        .map(|i| {
            let url = format!("https://site-{}.example/", i % sites);
            let ev = sample_event(&url, i);
            (url.into_bytes(), ev.to_json())
        })
        .collect();
    produce_raw(tb, topic, partitions, records).await
}

/// Run an action of scripts/testbed/testbed.sh (e.g. stop-kafka, start-postgres).
pub fn testbed_script(action: &str) {
    let script = std::env::var("CK_TEST_TESTBED").expect("CK_TEST_TESTBED");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(action)
        .status()
        .unwrap();
    assert!(status.success(), "testbed.sh {action}");
}

/// Runs its `testbed.sh` action (`start-kafka`, `start-postgres`) when
/// dropped during a panic: a failed assertion while a service is away must not leave it
/// away for the test binaries after this one.
pub struct BackOnPanic(pub &'static str);

impl Drop for BackOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            testbed_script(self.0);
        }
    }
}

/// A record exactly as the Python checksite's producer sends it (keys in its order,
/// `timestamp` always null, `elapsed` in integer milliseconds).
pub fn python_record(url: &str, elapsed: i64, status: Option<i32>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "url": url,
        "elapsed": elapsed,
        "error": if status.is_none() { serde_json::json!("Connection refused") } else { serde_json::Value::Null },
        "status": status,
        "body_prefix": null,
        "content_match": if status == Some(200) { serde_json::json!("Example Domain") } else { serde_json::Value::Null },
        "timestamp": null,
    }))
    .expect("JSON")
}

/// Python-format records `ids` over `sites` URLs, record i with `elapsed` = i. Such records
/// carry no id, so nothing dedupes them: a re-delivery shows as a second row, and these are
/// what "nothing doubled" tests use (a unique index on v1 ids would hide a doubled write).
pub async fn produce_python(
    tb: &Testbed,
    topic: &str,
    partitions: i32,
    ids: std::ops::Range<u64>,
    sites: u64,
) -> usize {
    let records = ids
        .map(|i| {
            let url = format!("https://site-{}.example/", i % sites);
            let value = python_record(&url, i as i64, Some(200));
            (url.into_bytes(), value)
        })
        .collect();
    produce_raw(tb, topic, partitions, records).await
}

/// A free port on 127.0.0.1 (bound, then let go: the caller listens on it at once).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET path` from 127.0.0.1:`port` (HTTP/1.0, so the answer ends when the connection
/// does); the status and the body. None when nothing answers within 5 s.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The path of a program the tests need from Debian (installed by
/// scripts/install-prerequisites.sh), or None (after saying so) to skip; strict: a failure.
pub fn debian_program(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !strict(),
            "strict mode (CI=true or `just test`) but {name} is not installed: run scripts/install-prerequisites.sh"
        );
        eprintln!(
            "SKIPPED: {name} is not installed (scripts/install-prerequisites.sh installs it)"
        );
    }
    found
}

/// `GET path` once the endpoint on `port` answers (a program just started); panics after 10 s.
pub async fn http_get_when_up(port: u16, path: &str) -> (u16, String) {
    let start = std::time::Instant::now();
    loop {
        if let Some(answer) = http_get(port, path) {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing serves on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `/readyz` on `port` answers 200 (a consumer: PostgreSQL answers and its
/// first lease round is done); panics after 30 s with the last answer.
pub async fn until_ready(port: u16) {
    let start = std::time::Instant::now();
    loop {
        let answer = http_get(port, "/readyz");
        if matches!(answer, Some((200, _))) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not ready on port {port}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/api/status` on `port` once its figures are as of `after` or later (the page reads at
/// most every 2 s, and serves its last read meanwhile); panics after 30 s.
pub async fn api_status_as_of(port: u16, after: chrono::DateTime<chrono::Utc>) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some((200, body)) = http_get(port, "/api/status") {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let at = json["generated_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if at.is_some_and(|at| at >= after) {
                return body;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no /api/status as of {after} on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rollup rows (hourly and daily) that disagree with the raw rows they sum: checks and up
/// checks per (url, producer, hour or day), both ways (a bucket missing on either side
/// counts), and deltas not folded. 0 when every stored event is counted exactly once.
pub async fn rollup_mismatches(db: &tokio_postgres::Client) -> i64 {
    let mut wrong = query_i64(db, "SELECT count(*) FROM rollup_deltas").await;
    for (table, unit) in [("rollups_hourly", "hour"), ("rollups_daily", "day")] {
        let sql = format!(
            "SELECT count(*) FROM ( \
               SELECT url, coalesce(producer, '') AS producer, \
                 date_trunc('{unit}', ts) AT TIME ZONE 'UTC' AS bucket, \
                 count(*) AS checks, count(*) FILTER (WHERE up) AS up_checks \
               FROM events GROUP BY 1, 2, 3) AS raw \
             FULL JOIN {table} AS r \
               ON r.url = raw.url AND r.producer = raw.producer AND r.bucket = raw.bucket \
             WHERE raw.checks IS DISTINCT FROM r.checks OR raw.up_checks IS DISTINCT FROM r.up_checks"
        );
        wrong += query_i64(db, &sql).await;
    }
    wrong
}

/// Whether Debian's python3 has the Kafka client; strict mode requires it.
pub fn confluent_kafka() -> bool {
    let found = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !strict(),
            "strict mode but python3-confluent-kafka is not installed: run scripts/install-prerequisites.sh"
        );
        eprintln!("SKIPPED: python3-confluent-kafka is not installed");
    }
    found
}

/// tests/transactional_producer.py (librdkafka's transactional producer) writing to
/// `topic` of `partitions` on `broker`, stdin and stdout piped (the script's input and its
/// "holding"/"done"; see the script).
pub fn transactional_producer(broker: &str, topic: &str, partitions: u32) -> std::process::Child {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/transactional_producer.py"
    );
    std::process::Command::new("/usr/bin/python3")
        .args([script, broker, topic, &partitions.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/transactional_producer.py")
}

/// [`transactional_producer`] run to its end on `input` (its lines, as the script reads
/// them); panics unless every transaction ended.
pub fn produce_with_transactions(broker: &str, topic: &str, partitions: u32, input: &str) {
    use std::io::Write;
    let mut producer = transactional_producer(broker, topic, partitions);
    let mut stdin = producer.stdin.take().expect("stdin piped");
    stdin
        .write_all(input.as_bytes())
        .expect("the script's input");
    drop(stdin);
    let produced = producer.wait_with_output().expect("the script ran");
    assert!(
        String::from_utf8_lossy(&produced.stdout).contains("done"),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
}
