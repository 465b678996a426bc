//! Records Kafka removed before the consumer read them (retention, or DeleteRecords): the
//! consumer says how many, per partition, and goes on from where the log now starts,
//! storing everything that is still there once.

mod common;

use std::time::Duration;

use common::{Listener, drain, open, query_i64};

#[tokio::test]
async fn records_removed_before_they_were_consumed_are_counted_and_the_rest_stored() {
    let tb = testbed_or_skip!();
    let topic = common::unique("logstart");
    let n = common::produce_events(&tb, &topic, 3, 60, 12).await as i64;
    let (pg, url) = tb.fresh_database("logstart").await;
    drain(&tb, &topic, &url).await;
    let db = open(&pg).await;
    let ends: Vec<(i32, i64)> = db
        .query("SELECT partition, next_offset FROM kafka_offsets", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // As if nothing had been consumed yet; then Kafka drops each partition's first records
    // (up to 3), as retention would.
    db.batch_execute("UPDATE kafka_offsets SET next_offset = 0; TRUNCATE events")
        .await
        .unwrap();
    let settings = tb.kafka(Listener::MutualTls, &topic);
    let client = checksite::kafka::connect(&settings, Duration::from_secs(10))
        .await
        .expect("connect");
    let mut removed = 0;
    let mut said = Vec::new();
    for &(partition, end) in &ends {
        let cut = end.min(3);
        if cut == 0 {
            continue;
        }
        let pc = checksite::kafka::partition_client(&client, &topic, partition)
            .await
            .expect("partition");
        pc.delete_records(cut, 10_000)
            .await
            .expect("delete records");
        removed += cut;
        said.push(format!(
            "partition {partition}: {cut} record(s) expired in Kafka before they were consumed (offsets 0..{cut})"
        ));
    }
    assert!(removed > 0, "no partition had a record: {ends:?}");

    let out = common::drain_output(&tb, &topic, &url, (Duration::from_secs(120), &[])).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for line in &said {
        assert!(log.contains(line.as_str()), "{line:?} not in:\n{log}");
    }
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM events").await,
        n - removed
    );
    // Each partition's position is its end, the records after the cut stored once.
    assert_eq!(
        query_i64(&db, "SELECT sum(next_offset)::bigint FROM kafka_offsets").await,
        ends.iter().map(|e| e.1).sum::<i64>()
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM events WHERE kafka_offset < 3").await,
        0
    );
}
