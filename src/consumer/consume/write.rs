//! One write: the gathered chunks and each partition's new offset committed in one
//! transaction, the counters and notifications that follow, and a refused record read
//! again from Kafka to be kept as it came.

use super::*;

/// Write `batches` in one transaction and log their rejects. When PostgreSQL refuses a
/// row (a constraint, a limit: retrying fails the same way), the row is found by halving
/// the batches, each half its own transaction over a contiguous range of offsets (so the
/// offsets' compare-and-set stays exact), and kept in `rejected_events` with the record's
/// raw bytes, re-read from Kafka; every other record is written. One bad record never
/// blocks a partition.
pub(super) async fn write_all(
    db: &mut tokio_postgres::Client,
    (topic, kafka): (&str, &Arc<kafka::KafkaSettings>),
    batches: Vec<Batch>,
    (python_until, derived, known): (
        Option<chrono::DateTime<chrono::Utc>>,
        store::Derived,
        &mut KnownStates,
    ),
    metrics: &ConsumerMetrics,
) -> Result<Summary, ConsumeError> {
    let mut done = Summary::default();
    let mut queue = VecDeque::from(batches);
    let mut isolating = false;
    while !queue.is_empty() {
        // All at once at first; one batch at a time once a row was refused.
        let take = if isolating { 1 } else { queue.len() };
        let work: Vec<Batch> = queue.drain(..take).collect();
        let started = Instant::now();
        let result = store::write_batches(db, topic, &work, python_until, (derived, known)).await;
        match &result {
            Ok(written) => count_commit(metrics, started.elapsed(), &work, written),
            Err(_) => metrics.transaction_failed(),
        }
        match result {
            Ok(written) => {
                // The next transaction, of this write or the next, starts from these.
                known.extend(written.alert_states);
                done.written += written.rows;
                done.already_stored += written.already_stored;
                done.notifications += written.notifications as u64;
                for b in &work {
                    for r in &b.rejected {
                        done.rejected += 1;
                        log::warn!(
                            "partition {} offset {}: rejected: {}",
                            b.partition,
                            r.offset,
                            r.reason
                        );
                    }
                }
            }
            Err(StoreError::RowRefused { detail }) if !isolating => {
                log::warn!("PostgreSQL refused a row ({detail}): finding it");
                isolating = true;
                queue = work.into();
            }
            Err(StoreError::RowRefused { detail }) => {
                let Some(mut batch) = work.into_iter().next() else {
                    continue;
                };
                if let Some(offset) = batch.single_row() {
                    let (key, value) = raw_record(kafka, topic, batch.partition, offset).await?;
                    let reason = record::RejectReason::new(
                        record::RejectKind::Refused,
                        format!("PostgreSQL refused it: {detail}"),
                    );
                    batch.reject_single_row(Rejected {
                        offset,
                        key,
                        value,
                        reason: reason.0,
                        kind: reason.1,
                    });
                    queue.push_front(batch);
                } else if let Some(middle) = batch.middle_row() {
                    let (left, right) = batch.split_at(middle);
                    queue.push_front(right);
                    queue.push_front(left);
                } else {
                    // No event row to blame: not a row's fault after all.
                    return Err(ConsumeError::Store(StoreError::RowRefused { detail }));
                }
            }
            Err(e) => return Err(ConsumeError::Store(e)),
        }
    }
    Ok(done)
}

/// A committed transaction of `work`, in the metrics.
pub(super) fn count_commit(
    metrics: &ConsumerMetrics,
    took: Duration,
    work: &[Batch],
    written: &store::Written,
) {
    let kinds: Vec<record::RejectKind> = work
        .iter()
        .flat_map(|b| b.rejected.iter().map(|r| r.kind))
        .collect();
    metrics.committed(
        took,
        work.iter().map(Batch::records).sum(),
        (written.rows, written.already_stored, &kinds),
        work.iter().map(|b| (b.partition, b.next_offset)),
    );
    metrics.alerts_decided(written.notifications);
}

/// The key and value of the record at `offset`, read again from Kafka (over a
/// connection of its own, read as the fetchers read: markers and aborted transactions
/// around it are passed): a row PostgreSQL refused is kept as the bytes that came in, not
/// as what we made of them.
pub(super) async fn raw_record(
    kafka: &Arc<kafka::KafkaSettings>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), ConsumeError> {
    let mut leader = LeaderFetch::new(kafka.clone(), topic, partition);
    let fetch = leader.fetch(offset, RAW_FETCH_BYTES, 0);
    let failed = |detail: String| {
        ConsumeError::Kafka(KafkaError::Request {
            what: format!("fetch of partition {partition} offset {offset}"),
            detail,
        })
    };
    let fetched = match tokio::time::timeout(kafka::REQUEST_TIMEOUT, fetch).await {
        Ok(Ok(fetched)) => fetched.records,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed("no answer".into())),
    };
    let record = fetched.into_iter().find(|r| r.offset == offset);
    let bytes = |b: Option<bytes::Bytes>| b.map(|b| b.to_vec());
    Ok(record.map_or((None, None), |r| (bytes(r.key), bytes(r.value))))
}
