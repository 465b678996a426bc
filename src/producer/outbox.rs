//! The producer's side of Kafka: a bounded in-memory buffer of events ([`Outbox`]) and
//! the loop that publishes it ([`publish`]), batching per partition with a short linger,
//! reconnecting with backoff while the broker is away, and flushing on shutdown.
//!
//! This module owns delivery order and loss. It must never block checking: when Kafka is
//! away, events wait here; when the buffer is full the oldest are dropped, counted and
//! logged. Events of one target always go to one partition in the order they were made.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::partition::{Compression as KafkaCompression, PartitionClient};
use rskafka::record::Record;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::{Compression, PublishSettings};
use super::metrics::ProducerMetrics;
use super::spool::Spool;
use crate::event::CheckEvent;
use crate::kafka::{self, KafkaError};

/// Longest wait between two reconnection attempts: a broker back from maintenance is used within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Most events in one produce round (all partitions together). A round waits for every
/// partition's answer, so larger rounds drain a backlog faster: 100,000 events over mutual
/// TLS took 2.0 s with rounds of 5,000, 1.05 s with 20,000, 0.83-0.92 s in one round. The
/// events are in memory already (the outbox); a round adds one request's records per
/// partition.
const MAX_ROUND: usize = 100_000;

/// Most event bytes (JSON, before compression) in one produce request: under the broker's
/// default `message.max.bytes` (1 MiB) even uncompressed, and on a one-partition topic.
const MAX_REQUEST_BYTES: usize = 768 * 1024;

/// Events waiting to be published. Bounded: when full, the oldest event is dropped.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<CheckEvent>>,
    capacity: usize,
    ready: Notify,
    /// No event will be pushed any more: publish what is left, then stop.
    closed: std::sync::atomic::AtomicBool,
    /// Wakes a publisher pausing between reconnection attempts when the outbox closes
    /// (not `ready`: every pushed event would cut the backoff short).
    closing: Notify,
    dropped: AtomicU64,
    published: AtomicU64,
    /// The disk spool (`CK_SPOOL_DIR`), when on: every event is in it until done.
    spool: Option<Arc<Spool>>,
}

impl Outbox {
    /// An empty outbox that holds at most `capacity` events.
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Outbox::with_spool(capacity, None)
    }

    /// The same, each event also kept in `spool` until it is published or dropped.
    pub fn with_spool(capacity: usize, spool: Option<Arc<Spool>>) -> Arc<Outbox> {
        Arc::new(Outbox {
            spool,
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            closing: Notify::new(),
            dropped: AtomicU64::new(0),
            published: AtomicU64::new(0),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<CheckEvent>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add an event; when full, the oldest one is dropped (counted and logged).
    pub fn push(&self, event: CheckEvent) {
        if let Some(spool) = &self.spool {
            spool.append(&event);
        }
        let mut q = self.queue();
        self.make_room(&mut q, 1);
        q.push_back(event);
        drop(q);
        self.ready.notify_one();
    }

    fn make_room(&self, q: &mut VecDeque<CheckEvent>, wanted: usize) {
        while !q.is_empty() && q.len() + wanted > self.capacity {
            if let Some(gone) = q.pop_front() {
                self.done(&[gone.id]);
            }
            self.count_dropped();
        }
    }

    /// Events the spool held at start, first in line (they are in the spool already).
    pub fn replay(&self, events: Vec<CheckEvent>) {
        let mut q = self.queue();
        for ev in events {
            self.make_room(&mut q, 1);
            q.push_back(ev);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// The spool, when on.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    /// These events need the spool no more (published or dropped).
    fn done(&self, ids: &[uuid::Uuid]) {
        if let Some(spool) = &self.spool {
            spool.done(ids.iter().copied());
        }
    }

    /// Put events that could not be published back at the front, in their order. When the
    /// buffer filled up meanwhile, they are the oldest, so they are the ones dropped.
    fn requeue(&self, events: Vec<CheckEvent>) {
        let mut q = self.queue();
        for ev in events.into_iter().rev() {
            if q.len() >= self.capacity {
                self.done(&[ev.id]);
                self.count_dropped();
                continue;
            }
            q.push_front(ev);
        }
    }

    /// Count a dropped event; say so in the log on the first and every thousandth.
    fn count_dropped(&self) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if total == 1 || total.is_multiple_of(1000) {
            log::warn!(
                "event buffer full ({} events, CK_BUFFER_EVENTS): dropping the oldest; {total} dropped so far",
                self.capacity
            );
        }
    }

    fn take(&self, max: usize) -> Vec<CheckEvent> {
        let mut q = self.queue();
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Say that no event will come any more (every check has ended): [`publish`] delivers
    /// what is left, within its flush time, and returns.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ready.notify_one();
        self.closing.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Count checks that started but whose events will never exist (still running when
    /// the process had to exit) as dropped, and say so.
    pub(crate) fn abandoned(&self, checks: u64) {
        if checks > 0 {
            self.dropped.fetch_add(checks, Ordering::Relaxed);
            log::error!("{checks} check(s) still running at exit: their events are dropped");
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue().len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped so far (buffer full, or not delivered before exit).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events Kafka has taken.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

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
        failing_since: None,
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
    failing_since: Option<Instant>,
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
                let left = outbox.take(usize::MAX).len() as u64;
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
        // At exit a connection attempt may not outlast the flush time: what is left is
        // then counted (or kept in the spool) instead of holding the exit.
        let opening = Connection::open(&self.settings);
        let opened = match self.flush_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, opening).await {
                Ok(opened) => opened,
                Err(_) => return false,
            },
            None => opening.await,
        };
        match opened {
            Ok(c) => {
                self.metrics.kafka_ok(None);
                if self.failing_since.take().is_some() {
                    log::info!(
                        "Kafka is back: delivering {} buffered event(s)",
                        self.outbox.len()
                    );
                }
                self.backoff = Duration::from_millis(500);
                self.conn = Some(c);
                true
            }
            Err(e) => {
                self.metrics.kafka_failed(&e.to_string());
                if self.failing_since.is_none() {
                    self.failing_since = Some(Instant::now());
                    log::warn!(
                        "{e}; buffering events (up to {}) and retrying",
                        self.outbox.capacity
                    );
                } else {
                    log::debug!("still failing: {e}");
                }
                false
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
        while let Some(joined) = round.join_next().await {
            let Ok((published, rest, error)) = joined else {
                failed = true;
                continue;
            };
            self.outbox
                .published
                .fetch_add(published.len() as u64, Ordering::Relaxed);
            self.outbox.done(&published);
            if let Some(e) = error {
                if self.failing_since.is_none() {
                    self.failing_since = Some(Instant::now());
                    log::warn!("{e}; buffering events and retrying");
                }
                failed = true;
                unsent.extend(rest);
            }
        }
        if failed {
            // Oldest first, so each target's events keep their order.
            unsent.sort_by_key(|ev| ev.id);
            self.outbox.requeue(unsent);
        }
        !failed
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> CheckEvent {
        CheckEvent {
            elapsed_ms: n,
            ..CheckEvent::starting(&format!("https://site-{n}.example/"), "test", 0)
        }
    }

    fn elapsed(v: &[CheckEvent]) -> Vec<u64> {
        v.iter().map(|e| e.elapsed_ms).collect()
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let outbox = Outbox::new(3);
        for n in 1..=5 {
            outbox.push(event(n));
        }
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(elapsed(&outbox.take(10)), [3, 4, 5]);
    }

    #[test]
    fn unsent_events_go_back_in_front_in_order() {
        let outbox = Outbox::new(10);
        for n in 1..=4 {
            outbox.push(event(n));
        }
        let first = outbox.take(2);
        outbox.push(event(5));
        outbox.requeue(first);
        assert_eq!(elapsed(&outbox.take(10)), [1, 2, 3, 4, 5]);
        assert_eq!(outbox.dropped(), 0);
    }

    #[test]
    fn returning_events_are_the_ones_dropped_when_full() {
        let outbox = Outbox::new(3);
        for n in 1..=3 {
            outbox.push(event(n));
        }
        let first = outbox.take(2); // 1, 2 in flight; 3 waits
        outbox.push(event(4));
        outbox.push(event(5)); // full again: 3, 4, 5
        outbox.requeue(first); // 1 and 2 are the oldest: dropped
        assert_eq!(elapsed(&outbox.take(10)), [3, 4, 5]);
        assert_eq!(outbox.dropped(), 2);
    }
}
