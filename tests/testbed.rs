//! The plumbing: the project's own TLS/SASL code reaches Kafka on each listener of the
//! test bed and PostgreSQL over verified TLS, and misconfiguration fails fast and clearly.

mod common;

use std::time::{Duration, Instant};

use checksite::kafka;
use checksite::kafka::KafkaSettings;
use checksite::settings::Settings;
use common::Listener;
use rskafka::chrono::Utc;
use rskafka::client::partition::Compression;
use rskafka::record::Record;

async fn round_trip(tb: &common::Testbed, listener: Listener) {
    let topic = common::unique("plumbing");
    let settings = tb.kafka(listener, &topic);
    let client = kafka::connect(&settings, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{listener:?}: {e}"));
    let partitions = kafka::ensure_topic(&client, &topic, 2, -1).await.unwrap();
    assert_eq!(partitions, 2, "{listener:?}: created with 2 partitions");
    let pc = kafka::partition_client(&client, &topic, 1).await.unwrap();
    let value = format!("hello over {listener:?}").into_bytes();
    let record = Record {
        key: Some(b"k".to_vec()),
        value: Some(value.clone()),
        headers: Default::default(),
        timestamp: Utc::now(),
    };
    let offsets = pc
        .produce(vec![record], Compression::NoCompression)
        .await
        .unwrap();
    assert_eq!(offsets, vec![0]);
    let (records, high_watermark) = pc.fetch_records(0, 1..1_000_000, 1_000).await.unwrap();
    assert_eq!(high_watermark, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.value.as_deref(), Some(value.as_slice()));
}

#[tokio::test]
async fn kafka_plaintext_listener() {
    let tb = testbed_or_skip!();
    round_trip(&tb, Listener::Plaintext).await;
}

#[tokio::test]
async fn kafka_mutual_tls_listener_with_aiven_shaped_files() {
    let tb = testbed_or_skip!();
    round_trip(&tb, Listener::MutualTls).await;
}

#[tokio::test]
async fn kafka_sasl_scram_sha_256() {
    let tb = testbed_or_skip!();
    round_trip(&tb, Listener::Sasl("SCRAM-SHA-256")).await;
}

#[tokio::test]
async fn kafka_sasl_scram_sha_512() {
    let tb = testbed_or_skip!();
    round_trip(&tb, Listener::Sasl("SCRAM-SHA-512")).await;
}

#[tokio::test]
async fn kafka_sasl_plain() {
    let tb = testbed_or_skip!();
    round_trip(&tb, Listener::Sasl("PLAIN")).await;
}

async fn connect_error(env: Vec<(String, String)>) -> (String, Duration) {
    let started = Instant::now();
    let settings = KafkaSettings::from_settings(&Settings::new(env)).unwrap();
    let Err(err) = kafka::connect(&settings, Duration::from_secs(8)).await else {
        panic!("connecting must fail");
    };
    (err.to_string(), started.elapsed())
}

#[tokio::test]
async fn kafka_unreachable_broker_fails_within_10s() {
    let _tb = testbed_or_skip!();
    let env = vec![("CK_KAFKA_SERVERS".to_string(), "127.0.0.1:1".to_string())];
    let (msg, took) = connect_error(env).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[tokio::test]
async fn kafka_broker_that_never_answers_fails_within_10s() {
    let _tb = testbed_or_skip!();
    // Accepts connections and never says a word (a black-holed proxy, a wrong port).
    let silent = common::sites::silent_site();
    let address = silent.trim_start_matches("http://").to_string();
    let env = vec![("CK_KAFKA_SERVERS".to_string(), address.clone())];
    let (msg, took) = connect_error(env).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(msg.contains(&address), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[tokio::test]
async fn kafka_wrong_sasl_password_is_reported() {
    let tb = testbed_or_skip!();
    let mut env = tb.kafka_env(Listener::Sasl("SCRAM-SHA-256"), "t");
    env.push(("CK_KAFKA_SASL_PASSWORD".into(), "wrong".into()));
    let (msg, took) = connect_error(env).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        msg.contains("CK_KAFKA_SASL_PASSWORD") && !msg.contains("wrong"),
        "{msg}"
    );
}

#[tokio::test]
async fn kafka_untrusted_broker_certificate_is_reported() {
    let tb = testbed_or_skip!();
    let mut env = tb.kafka_env(Listener::MutualTls, "t");
    env.push((
        "CK_KAFKA_SSL".into(),
        format!(
            "{} {} {}",
            tb.cert("other-ca.pem"),
            tb.cert("service.cert"),
            tb.cert("service.key")
        ),
    ));
    let (msg, took) = connect_error(env).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(msg.contains("ca.pem"), "{msg}");
}

#[tokio::test]
async fn kafka_mutual_tls_without_client_certificate_is_refused() {
    let tb = testbed_or_skip!();
    let env = vec![
        ("CK_KAFKA_SERVERS".to_string(), tb.kafka_ssl.clone()),
        ("CK_KAFKA_SSL".to_string(), tb.cert("ca.pem")),
    ];
    let (msg, took) = connect_error(env).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(msg.contains("service.cert"), "{msg}");
}

#[tokio::test]
async fn postgres_tls_is_verified_against_the_test_ca() {
    let tb = testbed_or_skip!();
    let client = tb
        .postgres()
        .connect(Duration::from_secs(10))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the session must be encrypted");
}

#[tokio::test]
async fn postgres_untrusted_server_gets_the_sslrootcert_hint() {
    let tb = testbed_or_skip!();
    let url = tb.postgres_url.replace("ca.pem", "other-ca.pem");
    let started = Instant::now();
    let err = checksite::consumer::store::PostgresSettings::parse(&url)
        .unwrap()
        .connect(Duration::from_secs(8))
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(msg.contains("sslrootcert"), "{msg}");
}

#[tokio::test]
async fn postgres_wrong_password_is_one_clear_line() {
    let tb = testbed_or_skip!();
    let url = tb
        .postgres_url
        .replacen("checksite:", "checksite:wrong-", 1);
    let started = Instant::now();
    let err = checksite::consumer::store::PostgresSettings::parse(&url)
        .unwrap()
        .connect(Duration::from_secs(8))
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(
        msg.contains("password authentication failed")
            && msg.contains("check the user and password"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-"),
        "the password must not be echoed: {msg}"
    );
}
