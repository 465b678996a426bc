//! The consumer's counters mean what their help says, against what the test put in the
//! topic: events written, events already stored (a producer retry), records rejected by
//! kind, and per partition the committed offset, the log end and the lag.

mod common;

use std::time::{Duration, Instant};

fn sample(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn consumer_counters_equal_what_the_topic_holds() {
    let tb = testbed_or_skip!();
    let topic = common::unique("meaning");
    let now = chrono::Utc::now();
    let mut records: Vec<common::TimedRecord> = Vec::new();
    for i in 0..200u64 {
        let url = format!("https://site-{}.example/", i % 9);
        records.push((
            url.clone().into_bytes(),
            Some(common::sample_event(&url, i).to_json()),
            now,
        ));
    }
    // A producer retry: the same event (id) twice.
    let retried = common::sample_event("https://retry.example/", 1).to_json();
    for _ in 0..2 {
        records.push((
            b"https://retry.example/".to_vec(),
            Some(retried.clone()),
            now,
        ));
    }
    for i in 0..3 {
        records.push((
            format!("junk-{i}").into_bytes(),
            Some(b"{not json".to_vec()),
            now,
        ));
    }
    for i in 0..2 {
        records.push((format!("tombstone-{i}").into_bytes(), None, now));
    }
    common::produce_timed(&tb, &topic, 3, records).await;
    let (_pg, db_url) = tb.fresh_database("meaning").await;
    let port = common::free_port();
    let consumer = common::consumer(&tb, &topic, &db_url, &[])
        .env("CK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    // Per partition, where the log ends: what the committed offsets must reach.
    let mut ends = std::collections::BTreeMap::new();
    for (p, offset, _, _) in common::read_topic(&tb, &topic).await {
        let end = ends.entry(p).or_insert(0);
        *end = (*end).max(offset + 1);
    }
    let label = format!("{{topic=\"{topic}\"");
    let started = Instant::now();
    let metrics = loop {
        let (_, m) = common::http_get_when_up(port, "/metrics").await;
        let lags: Vec<f64> = ends
            .keys()
            .filter_map(|p| {
                sample(
                    &m,
                    &format!("checksite_consumer_lag{label},partition=\"{p}\"}}"),
                )
            })
            .collect();
        if lags.len() == ends.len() && lags.iter().all(|l| *l == 0.0) {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "lag never 0: {m}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    common::stop(consumer, Duration::from_secs(30)).await;
    let counter = |name: &str| sample(&metrics, &format!("{name}{label}}}")).unwrap_or(-1.0);
    assert_eq!(
        counter("checksite_consumer_events_written_total"),
        201.0,
        "{metrics}"
    );
    assert_eq!(
        counter("checksite_consumer_events_already_stored_total"),
        1.0,
        "{metrics}"
    );
    let rejected = |kind: &str| {
        sample(
            &metrics,
            &format!("checksite_consumer_events_rejected_total{label},kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(rejected("not_json"), Some(3.0), "{metrics}");
    assert_eq!(rejected("no_value"), Some(2.0), "{metrics}");
    assert_eq!(rejected("not_an_event"), Some(0.0), "{metrics}");
    for (p, end) in &ends {
        let of = |name: &str| sample(&metrics, &format!("{name}{label},partition=\"{p}\"}}"));
        assert_eq!(
            of("checksite_consumer_committed_offset"),
            Some(*end as f64),
            "{metrics}"
        );
        assert_eq!(
            of("checksite_consumer_log_end_offset"),
            Some(*end as f64),
            "{metrics}"
        );
    }
}
