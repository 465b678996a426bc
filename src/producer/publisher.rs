//! The loop that publishes the outbox to Kafka ([`publish`]): batching per partition
//! with a short linger, reconnecting with backoff while the broker is away, and flushing
//! on shutdown for a bounded time.
//!
//! This module owns delivery order: events of one target always go to one partition in
//! the order they were made. It never drops an event itself (that is the outbox's to
//! count).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::partition::{Compression as KafkaCompression, PartitionClient};
use rskafka::record::Record;
use tokio::time::Instant;

use super::config::{Compression, PublishSettings};
use super::metrics::ProducerMetrics;
use super::outbox::Outbox;
use crate::event::CheckEvent;
use crate::kafka::{self, KafkaError};

/// Longest wait between two reconnection attempts: a broker back from maintenance is used within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long produce requests may go unanswered before the outage is logged. rskafka retries
/// a broker that went away inside the request (reconnecting, asking for metadata again),
/// and those nested retries can outlast a 20 s outage without an error reaching us: the
/// outage would then go unsaid.
const SILENT_ROUND: Duration = Duration::from_secs(5);

/// Most events in one produce round (all partitions together). A round waits for every
/// partition's answer, so larger rounds drain a backlog faster: 100,000 events over mutual
/// TLS took 2.0 s with rounds of 5,000, 1.05 s with 20,000, 0.83-0.92 s in one round. The
/// events are in memory already (the outbox); a round adds one request's records per
/// partition.
const MAX_ROUND: usize = 100_000;

/// Most event bytes (JSON, before compression) in one produce request: under the broker's
/// default `message.max.bytes` (1 MiB) even uncompressed, and on a one-partition topic.
const MAX_REQUEST_BYTES: usize = 768 * 1024;

/// A live connection: the client, the topic's partition count, one client per partition.
struct Connection {
    client: Client,
    partitions: i32,
    writers: HashMap<i32, Arc<PartitionClient>>,
}

impl Connection {
    async fn open(s: &PublishSettings) -> Result<Connection, KafkaError> {
        let client = kafka::connect(&s.kafka, Duration::from_secs(10)).await?;
        let partitions =
            kafka::ensure_topic(&client, &s.kafka.topic, s.partitions, s.replication).await?;
        Ok(Connection {
            client,
            partitions,
            writers: HashMap::new(),
        })
    }

    async fn writer(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, KafkaError> {
        if let Some(w) = self.writers.get(&partition) {
            return Ok(w.clone());
        }
        let w = Arc::new(kafka::partition_client(&self.client, topic, partition).await?);
        self.writers.insert(partition, w.clone());
        Ok(w)
    }
}

fn record(ev: &CheckEvent) -> Record {
    Record {
        key: Some(ev.url.as_bytes().to_vec()),
        value: Some(ev.to_json()),
        headers: Default::default(),
        timestamp: ev.checked_at,
    }
}

/// Publish what arrives in `outbox` until it is closed ([`Outbox::close`], once every
/// check has ended), then flush for at most `flush_for`; what is still buffered then is
/// counted as dropped. Shutdown alone does not stop it: checks running at SIGTERM still
/// bring their events, and those are published too.
pub async fn publish(
    outbox: Arc<Outbox>,
    settings: PublishSettings,
    metrics: Arc<ProducerMetrics>,
    flush_for: Duration,
) {
    let compression = match settings.compression {
        Compression::None => KafkaCompression::NoCompression,
        Compression::Gzip => KafkaCompression::Gzip,
        Compression::Snappy => KafkaCompression::Snappy,
    };
    let mut publisher = Publisher {
        outbox,
        settings,
        metrics,
        compression,
        conn: None,
        backoff: Duration::from_millis(500),
        flush_deadline: None,
        flush_for,
        kafka_away: false,
    };
    loop {
        match publisher.next_step(flush_for).await {
            Step::Stop => break,
            Step::Again => continue,
            Step::Publish => {}
        }
        if !publisher.connect().await {
            publisher.pause().await;
            continue;
        }
        let batch = publisher.outbox.take(MAX_ROUND);
        if !batch.is_empty() && !publisher.publish_round(batch).await {
            publisher.conn = None;
            publisher.pause().await;
        }
    }
}

/// What the publisher does next.
enum Step {
    Publish,
    /// Look again (something arrived, or the outbox closed).
    Again,
    Stop,
}

/// The publishing loop's state: the connection, the backoff, and the flush deadline once
/// the outbox is closed.
struct Publisher {
    outbox: Arc<Outbox>,
    settings: PublishSettings,
    metrics: Arc<ProducerMetrics>,
    compression: KafkaCompression,
    conn: Option<Connection>,
    backoff: Duration,
    flush_deadline: Option<Instant>,
    /// How long to flush once the outbox is closed.
    flush_for: Duration,
    /// An outage was said and its end not yet: each is said once.
    kafka_away: bool,
}

impl Publisher {
    /// Wait for events (lingering so that one request carries many), or, once the outbox
    /// is closed, stop when it is empty or the flush time is over (what is left is dropped,
    /// counted and logged).
    async fn next_step(&mut self, flush_for: Duration) -> Step {
        let outbox = &self.outbox;
        if self.flush_deadline.is_none() && outbox.is_closed() {
            self.flush_deadline = Some(Instant::now() + flush_for);
        }
        match self.flush_deadline {
            Some(_) if outbox.is_empty() => Step::Stop,
            Some(deadline) if Instant::now() >= deadline => {
                let left = outbox.leave();
                let spooled = outbox.spool.as_ref().filter(|s| s.broken().is_none());
                if let Some(spool) = spooled {
                    spool.sync();
                    log::warn!(
                        "{left} event(s) not delivered before exit: kept in the spool (CK_SPOOL_DIR), published at the next start"
                    );
                } else {
                    outbox.dropped.fetch_add(left, Ordering::Relaxed);
                    log::error!(
                        "{left} event(s) not delivered before exit: Kafka did not take them in time (counted as dropped)"
                    );
                }
                Step::Stop
            }
            Some(_) => Step::Publish,
            None if outbox.is_empty() => {
                outbox.ready.notified().await;
                tokio::time::sleep(self.settings.linger).await;
                Step::Again
            }
            None => Step::Publish,
        }
    }

    /// A connection, opened if needed. False when Kafka cannot be used (said once while
    /// it lasts).
    async fn connect(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        // At exit a connection attempt may not outlast the flush time (a broker that
        // accepts and does not answer holds one for up to 20 s): what is left is then
        // counted, or kept in the spool, instead of holding the exit.
        let settings = self.settings.clone();
        let Some(opened) = self.until_flush_ends(Connection::open(&settings)).await else {
            return false;
        };
        match opened {
            Ok(c) => {
                self.metrics.kafka_ok(None);
                self.outage_ends();
                self.backoff = Duration::from_millis(500);
                self.conn = Some(c);
                true
            }
            Err(e) => {
                self.metrics.kafka_failed(&e.to_string());
                if self.kafka_away {
                    log::debug!("still failing: {e}");
                }
                self.outage_begins(&e);
                false
            }
        }
    }

    /// `work`'s result, unless the flush time runs out first (counted from the outbox's
    /// closing, which may come while `work` runs): then None.
    async fn until_flush_ends<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        loop {
            if self.flush_deadline.is_none() && self.outbox.is_closed() {
                self.flush_deadline = Some(Instant::now() + self.flush_for);
            }
            if let Some(deadline) = self.flush_deadline {
                return tokio::time::timeout_at(deadline, &mut work).await.ok();
            }
            tokio::select! {
                done = &mut work => return Some(done),
                _ = self.outbox.closing.notified() => {}
            }
        }
    }

    /// Publish `batch`, each partition's events in one request, all partitions at once.
    /// False when some could not be published: those go back to the outbox, oldest first.
    async fn publish_round(&mut self, batch: Vec<CheckEvent>) -> bool {
        let Some(c) = self.conn.as_mut() else {
            self.outbox.requeue(batch);
            return false;
        };
        let mut by_partition: HashMap<i32, Vec<CheckEvent>> = HashMap::new();
        for ev in batch {
            by_partition
                .entry(kafka::partition_for(ev.url.as_bytes(), c.partitions))
                .or_default()
                .push(ev);
        }
        let mut round = tokio::task::JoinSet::new();
        let mut unsent = Vec::new();
        for (partition, events) in by_partition {
            match c.writer(&self.settings.kafka.topic, partition).await {
                Ok(w) => {
                    let (compression, metrics) = (self.compression, self.metrics.clone());
                    round.spawn(produce_partition(w, events, compression, metrics));
                }
                Err(e) => {
                    self.metrics.kafka_failed(&e.to_string());
                    log::warn!("{e}");
                    unsent.extend(events);
                }
            }
        }
        let mut failed = !unsent.is_empty();
        let silent = tokio::time::sleep(SILENT_ROUND);
        tokio::pin!(silent);
        loop {
            let joined = tokio::select! {
                joined = round.join_next() => match joined {
                    Some(joined) => joined,
                    None => break,
                },
                _ = &mut silent, if !self.kafka_away => {
                    if let Some(left) = self.note_silence() {
                        silent.as_mut().reset(Instant::now() + left);
                    }
                    continue;
                }
            };
            let Ok((published, rest, error)) = joined else {
                failed = true;
                continue;
            };
            self.outbox
                .published
                .fetch_add(published.len() as u64, Ordering::Relaxed);
            self.outbox.done(&published);
            if let Some(e) = error {
                self.outage_begins(&e);
                failed = true;
                unsent.extend(rest);
            }
        }
        if failed {
            // Oldest first, so each target's events keep their order.
            unsent.sort_by_key(|ev| ev.id);
            self.outbox.requeue(unsent);
        } else {
            self.outage_ends();
        }
        !failed
    }

    /// A produce round has waited `SILENT_ROUND`: the outage is logged unless some request
    /// was answered meanwhile (a large round, a spool's backlog, may take longer), in
    /// which case the time left to wait is returned.
    fn note_silence(&mut self) -> Option<Duration> {
        let quiet = self.metrics.kafka_quiet_for();
        if quiet < SILENT_ROUND {
            return Some(SILENT_ROUND - quiet);
        }
        self.outage_begins(&format_args!(
            "Kafka has not answered a produce request for {} s",
            SILENT_ROUND.as_secs()
        ));
        None
    }

    /// Kafka cannot be used, `why`: said when an outage begins, not at each retry.
    fn outage_begins(&mut self, why: &dyn std::fmt::Display) {
        if !self.kafka_away {
            self.kafka_away = true;
            log::warn!(
                "{why}; buffering events (up to {}) and retrying",
                self.outbox.capacity
            );
        }
    }

    /// Kafka took something: the end of an outage, when one was said.
    fn outage_ends(&mut self) {
        if std::mem::take(&mut self.kafka_away) {
            log::info!(
                "Kafka is back: delivering {} buffered event(s)",
                self.outbox.len()
            );
        }
    }

    /// Wait `backoff` (doubling it), but not past the flush deadline, and wake early when
    /// the outbox closes (the flush deadline starts then).
    async fn pause(&mut self) {
        let wake = Instant::now() + self.backoff;
        let wake = self.flush_deadline.map_or(wake, |d| wake.min(d));
        if self.flush_deadline.is_some() {
            tokio::time::sleep_until(wake).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.outbox.closing.notified() => {}
            }
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Publish one partition's `events` in order, in requests of at most [`MAX_REQUEST_BYTES`]:
/// the ids Kafka took, and from the first request it did not take, the events left and why.
async fn produce_partition(
    writer: Arc<PartitionClient>,
    mut events: Vec<CheckEvent>,
    compression: KafkaCompression,
    metrics: Arc<ProducerMetrics>,
) -> (Vec<uuid::Uuid>, Vec<CheckEvent>, Option<KafkaError>) {
    let size = |r: &Record| r.value.as_ref().map_or(0, Vec::len);
    // Each event encoded once; the events stay where they are until the end (no shifting
    // of what is left after each request).
    let mut encoded = events.iter().map(record).peekable();
    let mut sent = 0;
    while encoded.peek().is_some() {
        let (mut records, mut bytes) = (Vec::new(), 0);
        // At least one per request: a single event is far under the limit.
        while let Some(r) =
            encoded.next_if(|r| records.is_empty() || bytes + size(r) <= MAX_REQUEST_BYTES)
        {
            bytes += size(&r);
            records.push(r);
        }
        let n = records.len();
        let started = Instant::now();
        match kafka::produce(&writer, records, compression).await {
            Ok(()) => {
                metrics.kafka_ok(Some(started.elapsed()));
                sent += n;
            }
            Err(e) => {
                metrics.kafka_failed(&e.to_string());
                drop(encoded);
                let rest = events.split_off(sent);
                return (ids(&events), rest, Some(e));
            }
        }
    }
    (ids(&events), Vec::new(), None)
}

fn ids(events: &[CheckEvent]) -> Vec<uuid::Uuid> {
    events.iter().map(|e| e.id).collect()
}
