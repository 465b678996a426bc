//! The consumer's loop: lease partitions, fetch each leased partition from its committed
//! offset, decode, and write batch after batch (rows + new offset in one transaction).
//!
//! This module owns the consumer's reaction to failure: Kafka errors are retried in the
//! fetchers; a PostgreSQL error drops every lease and fetcher, reconnects with backoff and
//! starts again from the committed offsets, so nothing is lost or doubled. It never
//! decides how a record becomes a row ([`crate::event`]) or how a batch is written
//! ([`crate::store`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rskafka::client::Client as KafkaClient;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::OffsetAt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::config::ConsumerConfig;
use crate::event;
use crate::kafka::{self, KafkaError};
use crate::shutdown::Shutdown;
use crate::store::{self, Batch, PartitionLeases, Rejected, StoreError};

/// Largest fetch response asked of the broker per partition: bounds memory (one response
/// per leased partition is in flight) more than it limits speed.
const FETCH_BYTES: i32 = 1024 * 1024;
/// Decoded batches waiting for the writer, all partitions together: fetchers wait when
/// PostgreSQL is slower than Kafka, instead of filling memory.
const BATCHES_QUEUED: usize = 4;
/// How often leases are rebalanced (and a dead consumer's partitions picked up).
const REBALANCE_EVERY: Duration = Duration::from_secs(2);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Longest pause between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum ConsumeError {
    Kafka(KafkaError),
    Store(StoreError),
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsumeError::Kafka(e) => e.fmt(f),
            ConsumeError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConsumeError {}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub written: u64,
    pub rejected: u64,
}

enum FromFetcher {
    Batch {
        generation: u64,
        batch: Batch,
    },
    /// `--drain`: the partition reached the end it had at start.
    Drained {
        generation: u64,
        partition: i32,
    },
}

/// Per partition: fetched position and the broker's high watermark, for the progress log.
type Positions = Arc<Mutex<BTreeMap<i32, (i64, i64)>>>;

struct Fetcher {
    generation: u64,
    abort: AbortHandle,
}

/// Run until shutdown (or, with `--drain`, until every partition is consumed to where it
/// ended at start). Fails only at start-up: bad credentials or unreachable services then
/// are configuration problems; later failures are waited out.
pub async fn run(config: ConsumerConfig, mut shutdown: Shutdown) -> Result<Summary, ConsumeError> {
    let topic = config.kafka.topic.clone();
    let kafka_client = Arc::new(
        kafka::connect(&config.kafka, Duration::from_secs(10))
            .await
            .map_err(ConsumeError::Kafka)?,
    );
    let mut db = config
        .postgres
        .connect(Duration::from_secs(10))
        .await
        .map_err(ConsumeError::Store)?;
    let before = store::migrate(&mut db).await.map_err(ConsumeError::Store)?;
    if before != store::SCHEMA_VERSION {
        log::info!(
            "database schema upgraded from version {before} to {}",
            store::SCHEMA_VERSION
        );
    }
    let Some(mut partitions) = wait_for_topic(&kafka_client, &topic, &mut shutdown).await? else {
        return Ok(Summary::default());
    };
    let drain_to: Option<HashMap<i32, i64>> = if config.drain {
        let mut ends = HashMap::new();
        for &p in &partitions {
            let pc = kafka::partition_client(&kafka_client, &topic, p)
                .await
                .map_err(ConsumeError::Kafka)?;
            let end = pc
                .get_offset(OffsetAt::Latest)
                .await
                .map_err(|e| ConsumeError::Kafka(kafka::request_error("list offsets", &e)))?;
            ends.insert(p, end);
        }
        log::info!("draining topic {topic:?} up to {ends:?}");
        Some(ends)
    } else {
        None
    };

    log::info!(
        "consuming topic {topic:?} into {}",
        config.postgres.display()
    );
    let mut leases = PartitionLeases::new(&topic);
    let (tx, mut rx) = mpsc::channel::<FromFetcher>(BATCHES_QUEUED);
    let mut fetchers: HashMap<i32, Fetcher> = HashMap::new();
    let mut generation = 0u64;
    let positions: Positions = Arc::default();
    let mut drained: Vec<i32> = Vec::new();
    let mut total = Summary::default();
    let mut window = Summary::default();
    let mut next_rebalance = Instant::now();
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let mut backoff = Duration::from_millis(500);
    let mut db_ok = true;

    loop {
        if shutdown.is_requested() {
            break;
        }
        if let Some(ends) = &drain_to {
            if ends.keys().all(|p| drained.contains(p)) {
                break;
            }
        }
        if !db_ok {
            // PostgreSQL went away: every lease went with the session. Start over from the
            // committed offsets once it is back.
            for (_, f) in fetchers.drain() {
                f.abort.abort();
            }
            leases.lost();
            while rx.try_recv().is_ok() {}
            match config.postgres.connect(Duration::from_secs(10)).await {
                Ok(c) => {
                    log::info!("PostgreSQL is back: resuming from the committed offsets");
                    db = c;
                    db_ok = true;
                    backoff = Duration::from_millis(500);
                    next_rebalance = Instant::now();
                }
                Err(e) => {
                    log::warn!("{e}; retrying in {} ms", backoff.as_millis());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.requested() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        if Instant::now() >= next_rebalance {
            next_rebalance = Instant::now() + REBALANCE_EVERY;
            if let Ok(Some(now)) = kafka::topic_partitions(&kafka_client, &topic).await {
                partitions = now;
            }
            let open: Vec<i32> = partitions
                .iter()
                .copied()
                .filter(|p| !drained.contains(p))
                .collect();
            match leases.rebalance(&db, &open, drain_to.is_some()).await {
                Ok((gained, lost)) => {
                    for p in lost {
                        if let Some(f) = fetchers.remove(&p) {
                            f.abort.abort();
                        }
                    }
                    for p in gained {
                        generation += 1;
                        match start_fetcher(
                            &kafka_client,
                            &db,
                            &config,
                            p,
                            generation,
                            &drain_to,
                            &tx,
                            &positions,
                        )
                        .await
                        {
                            Ok(f) => {
                                fetchers.insert(p, f);
                            }
                            Err(ConsumeError::Store(e)) => {
                                log::warn!("{e}");
                                db_ok = false;
                            }
                            Err(e) => {
                                // Give the lease back; the next round tries again.
                                log::warn!("partition {p}: {e}; will retry");
                                if let Err(e) = leases.release(&db, p).await {
                                    log::warn!("{e}");
                                    db_ok = false;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    log::warn!("{e}; pausing until PostgreSQL answers");
                    db_ok = false;
                    continue;
                }
            }
        }
        if Instant::now() >= next_progress {
            next_progress = Instant::now() + PROGRESS_EVERY;
            log_progress(&window, &positions, PROGRESS_EVERY);
            window = Summary::default();
        }
        let wake = next_rebalance.min(next_progress);
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::time::sleep_until(wake) => continue,
            _ = shutdown.requested() => break,
        };
        let Some(msg) = msg else { break };
        match msg {
            FromFetcher::Drained {
                generation: g,
                partition,
            } => {
                if fetchers.get(&partition).is_some_and(|f| f.generation == g) {
                    drained.push(partition);
                    if let Some(f) = fetchers.remove(&partition) {
                        f.abort.abort();
                    }
                }
            }
            FromFetcher::Batch {
                generation: g,
                batch,
            } => {
                if fetchers
                    .get(&batch.partition)
                    .is_none_or(|f| f.generation != g)
                {
                    continue; // from a fetcher we already stopped
                }
                let rejected = batch.rejected.len() as u64;
                match store::write_batch(&mut db, &topic, &batch).await {
                    Ok(written) => {
                        total.written += written;
                        total.rejected += rejected;
                        window.written += written;
                        window.rejected += rejected;
                        for r in &batch.rejected {
                            log::warn!(
                                "partition {} offset {}: rejected: {}",
                                batch.partition,
                                r.offset,
                                r.reason
                            );
                        }
                    }
                    Err(StoreError::OffsetMoved { partition }) => {
                        log::warn!("{}", StoreError::OffsetMoved { partition });
                        if let Some(f) = fetchers.remove(&partition) {
                            f.abort.abort();
                        }
                        leases.lost();
                        db_ok = false; // a new session re-takes leases cleanly
                    }
                    Err(e) => {
                        log::warn!("{e}; pausing until PostgreSQL answers");
                        db_ok = false;
                    }
                }
            }
        }
    }
    for (_, f) in fetchers.drain() {
        f.abort.abort();
    }
    log::info!(
        "stopped: {} event(s) written, {} rejected",
        total.written,
        total.rejected
    );
    Ok(total)
}

async fn wait_for_topic(
    client: &KafkaClient,
    topic: &str,
    shutdown: &mut Shutdown,
) -> Result<Option<Vec<i32>>, ConsumeError> {
    let mut said = None::<Instant>;
    loop {
        match kafka::topic_partitions(client, topic).await {
            Ok(Some(p)) if !p.is_empty() => return Ok(Some(p)),
            Ok(_) => {
                if said.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    log::info!(
                        "topic {topic:?} does not exist yet: waiting for the producer to create it"
                    );
                    said = Some(Instant::now());
                }
            }
            Err(e) => log::warn!("{e}; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.requested() => return Ok(None),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_fetcher(
    client: &Arc<KafkaClient>,
    db: &tokio_postgres::Client,
    config: &ConsumerConfig,
    partition: i32,
    generation: u64,
    drain_to: &Option<HashMap<i32, i64>>,
    tx: &mpsc::Sender<FromFetcher>,
    positions: &Positions,
) -> Result<Fetcher, ConsumeError> {
    let topic = &config.kafka.topic;
    let pc = Arc::new(
        kafka::partition_client(client, topic, partition)
            .await
            .map_err(ConsumeError::Kafka)?,
    );
    let earliest = tokio::time::timeout(Duration::from_secs(15), pc.get_offset(OffsetAt::Earliest))
        .await
        .map_err(|_| {
            ConsumeError::Kafka(KafkaError::Request {
                what: "list offsets".into(),
                detail: "timed out".into(),
            })
        })?
        .map_err(|e| ConsumeError::Kafka(kafka::request_error("list offsets", &e)))?;
    let committed = store::committed_offset(db, topic, partition, earliest)
        .await
        .map_err(ConsumeError::Store)?;
    log::info!("partition {partition}: starting at offset {committed}");
    let task = tokio::spawn(fetch_partition(FetchJob {
        pc,
        partition,
        generation,
        offset: committed,
        stop_at: drain_to.as_ref().and_then(|d| d.get(&partition).copied()),
        batch_events: config.batch_events,
        batch_wait: config.batch_wait,
        tx: tx.clone(),
        positions: positions.clone(),
    }));
    Ok(Fetcher {
        generation,
        abort: task.abort_handle(),
    })
}

struct FetchJob {
    pc: Arc<rskafka::client::partition::PartitionClient>,
    partition: i32,
    generation: u64,
    offset: i64,
    stop_at: Option<i64>,
    batch_events: usize,
    batch_wait: Duration,
    tx: mpsc::Sender<FromFetcher>,
    positions: Positions,
}

/// Fetch one partition from `offset` on, sending batches of decoded records. Broker
/// errors are retried here with backoff; the position only moves through what is sent.
async fn fetch_partition(mut job: FetchJob) {
    let mut backoff = Duration::from_millis(200);
    let mut failing = false;
    loop {
        if job.stop_at.is_some_and(|end| job.offset >= end) {
            let _ = job
                .tx
                .send(FromFetcher::Drained {
                    generation: job.generation,
                    partition: job.partition,
                })
                .await;
            return;
        }
        let mut batch = Batch {
            partition: job.partition,
            start_offset: job.offset,
            next_offset: job.offset,
            ..Default::default()
        };
        let deadline = Instant::now() + job.batch_wait;
        loop {
            let wait_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(10, 5_000) as i32;
            let fetch = job.pc.fetch_records(job.offset, 1..FETCH_BYTES, wait_ms);
            match tokio::time::timeout(Duration::from_secs(30), fetch).await {
                Ok(Ok((records, high))) => {
                    if failing {
                        log::info!("partition {}: Kafka answers again", job.partition);
                        failing = false;
                    }
                    backoff = Duration::from_millis(200);
                    for r in records {
                        if r.offset < job.offset {
                            continue;
                        }
                        let value = r.record.value.as_deref();
                        match event::decode(value, r.record.timestamp) {
                            Ok(row) => batch.events.push((r.offset, row)),
                            Err(reason) => batch.rejected.push(Rejected {
                                offset: r.offset,
                                key: r.record.key.clone(),
                                value: r.record.value.clone(),
                                reason: reason.0,
                            }),
                        }
                        job.offset = r.offset + 1;
                    }
                    batch.next_offset = job.offset;
                    if let Ok(mut p) = job.positions.lock() {
                        p.insert(job.partition, (job.offset, high));
                    }
                }
                Ok(Err(ClientError::ServerError {
                    protocol_error: ProtocolError::OffsetOutOfRange,
                    ..
                })) => {
                    // Retention removed records we had not consumed: say how many, go on.
                    if let Ok(Ok(earliest)) = tokio::time::timeout(
                        Duration::from_secs(15),
                        job.pc.get_offset(OffsetAt::Earliest),
                    )
                    .await
                    {
                        if earliest > job.offset {
                            log::error!(
                                "partition {}: {} record(s) expired in Kafka before they were consumed (offsets {}..{})",
                                job.partition,
                                earliest - job.offset,
                                job.offset,
                                earliest
                            );
                            job.offset = earliest;
                            batch.next_offset = earliest;
                        }
                    }
                }
                Ok(Err(e)) => {
                    if !failing {
                        log::warn!(
                            "partition {}: {}; retrying",
                            job.partition,
                            kafka::request_error("fetch", &e)
                        );
                        failing = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(_) => {
                    if !failing {
                        log::warn!(
                            "partition {}: Kafka fetch timed out; retrying",
                            job.partition
                        );
                        failing = true;
                    }
                }
            }
            let full = batch.events.len() + batch.rejected.len() >= job.batch_events;
            let at_end = job.stop_at.is_some_and(|end| job.offset >= end);
            if full || at_end || Instant::now() >= deadline {
                break;
            }
        }
        if batch.next_offset > batch.start_offset
            && job
                .tx
                .send(FromFetcher::Batch {
                    generation: job.generation,
                    batch,
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

fn log_progress(window: &Summary, positions: &Positions, over: Duration) {
    let lag: Vec<String> = match positions.lock() {
        Ok(p) => p
            .iter()
            .map(|(part, (pos, high))| format!("p{part}={}", (high - pos).max(0)))
            .collect(),
        Err(_) => Vec::new(),
    };
    log::info!(
        "{} event(s) written in the last {} s ({:.0}/s), {} rejected; lag {}",
        window.written,
        over.as_secs(),
        window.written as f64 / over.as_secs_f64(),
        window.rejected,
        if lag.is_empty() {
            "unknown".to_string()
        } else {
            lag.join(" ")
        }
    );
}
