//! The consumer's loop: lease partitions, fetch each leased partition from its committed
//! offset and decode its records into rows (on the Kafka thread, in a task per partition),
//! and gather the chunks of every partition into transactions (rows + each partition's new
//! offset, committed together) on the writer's thread.
//!
//! This module owns the consumer's reaction to failure: Kafka errors are retried in the
//! fetchers; a PostgreSQL error drops every lease and fetcher, reconnects with backoff and
//! starts again from the committed offsets, so nothing is lost or doubled. It never
//! decides how a record becomes a row ([`crate::event`], `store::RowEncoder`) or
//! how a batch is written ([`store`]).
//!
//! Here: the start and the run as a whole. Start-up steps are in `start`, the writer's
//! loop in `writer`, one transaction in `write`, the fetchers in `fetch`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::Client as KafkaClient;
use rskafka::client::partition::OffsetAt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::consumer::alert::decide::KnownStates;
use crate::consumer::alert::sender::AlertSender;
use crate::consumer::config::ConsumerConfig;
use crate::consumer::folding::RollupFolder;
use crate::consumer::labels::KnownLabels;
use crate::consumer::listing::Listing;
use crate::consumer::maintenance::Calendar;
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::record;
use crate::consumer::retention::EventPruner;
use crate::consumer::status_page::StatusPage;
use crate::consumer::store::{self, Batch, PartitionLeases, Rejected, RowEncoder, StoreError};
use crate::event;
use crate::kafka::fetch::{FetchError, Fetched, LeaderFetch};
use crate::kafka::record_batch::FetchedRecord;
use crate::kafka::{self, KafkaError};
use crate::observe::{HttpListener, LoopGuard};
use crate::shutdown::Shutdown;

mod fetch;
mod start;
mod write;
mod writer;

use fetch::{
    FetchShared, Fetcher, FromFetcher, KafkaThread, Positions, WarmPartition, start_fetcher,
};
use start::{Upkeep, open_kafka, open_postgres, start_alerts, start_listing, topic_partitions};
use write::write_all;
use writer::ConsumerLoop;

/// Largest fetch response asked of the broker per partition. It counts compressed bytes:
/// check events compress 5-10x, and one response per leased partition is held decoded,
/// so this bounds the consumer's memory more than its speed (256 KiB was no faster on
/// the benchmark, and took 12 MiB more).
const FETCH_BYTES: i32 = 128 * 1024;
/// Chunks (encoded rows) waiting for the writer, all partitions together: a transaction's
/// worth at the default `CK_BATCH_EVENTS` and a little more, so that the next one is ready
/// when one commits; beyond that fetchers wait, instead of filling memory. 20 (two
/// transactions' worth) was no faster on a 200,000-event drain (4 alternating runs each:
/// 1.52-1.74 s against 1.46-1.74 s) and peaked at 35-40 MB instead of 30-32.
const CHUNKS_QUEUED: usize = 12;
/// Most records a fetcher hands over at once; the writer gathers chunks from every
/// partition into one transaction of up to `CK_BATCH_EVENTS`.
const CHUNK_EVENTS: usize = 1000;
/// How often leases are rebalanced (and a dead consumer's partitions picked up).
const REBALANCE_EVERY: Duration = Duration::from_secs(2);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often open incidents that nobody reports on any more are looked for.
const STALE_SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Longest pause between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long past its long-poll wait a fetch may go unanswered before the outage is logged.
const SILENT_FETCH: Duration = Duration::from_secs(5);
/// Largest fetch when one record is read again (it is at most 64 KiB, its batch more).
const RAW_FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// How often a partition whose committed offset is past its end is looked at again.
const PAST_END_RECHECK: Duration = Duration::from_secs(60);
/// How long a transaction under way at SIGTERM may still take.
const WRITE_GRACE: Duration = Duration::from_secs(5);
/// The loop turns at least every REBALANCE_EVERY; a write may take several bounded
/// transactions (isolating a refused row): quiet longer than this means stuck (/healthz).
const STUCK_AFTER: Duration = Duration::from_secs(600);

/// Longest time to fold the last rollup deltas when stopping (`--drain`, SIGTERM); what
/// is left is folded by the next consumer to run.
const FOLD_AT_EXIT: Duration = Duration::from_secs(30);

/// Longest time to deliver the notifications due when stopping; what is left is
/// delivered by the next consumer to run.
const SEND_AT_EXIT: Duration = Duration::from_secs(15);

#[derive(Debug)]
/// Why the consumer could not start.
pub enum ConsumeError {
    /// Kafka cannot be used.
    Kafka(KafkaError),
    /// PostgreSQL cannot be used.
    Store(StoreError),
    /// The Kafka thread could not be started (out of threads or memory), or a task on it
    /// ended unexpectedly.
    Thread(std::io::Error),
    /// Alerting cannot start (its TLS configuration).
    Alerts(String),
    /// `--drain` of a topic that does not exist: nothing to drain (a misspelt
    /// `CK_KAFKA_TOPIC`, or a cluster the producer never wrote to).
    NoTopicToDrain(String),
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsumeError::Kafka(e) => e.fmt(f),
            ConsumeError::Store(e) => e.fmt(f),
            ConsumeError::Alerts(e) => write!(f, "alerts: {e}"),
            ConsumeError::NoTopicToDrain(topic) => write!(
                f,
                "--drain: topic {topic:?} does not exist on this cluster, so there is nothing to drain (check CK_KAFKA_TOPIC and CK_KAFKA_SERVERS)"
            ),
            ConsumeError::Thread(e) => write!(
                f,
                "the consumer's Kafka thread failed: {e} (is the process out of threads or memory?)"
            ),
        }
    }
}

impl std::error::Error for ConsumeError {}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Events stored.
    pub written: u64,
    /// Events found already stored and not stored again (producer retries, and records
    /// the Python consumer stored before the switch).
    pub already_stored: u64,
    /// Records kept in `rejected_events`.
    pub rejected: u64,
    /// Alert notifications decided.
    pub notifications: u64,
}

/// Run until shutdown (or, with `--drain`, until every partition is consumed to where it
/// ended at start). Fails only at start-up: bad credentials or unreachable services then
/// are configuration problems; later failures are waited out. With `http`, serves the
/// metrics and health there from the start (`/readyz` says what is awaited).
pub async fn run(
    config: ConsumerConfig,
    shutdown: Shutdown,
    http: Vec<HttpListener>,
) -> Result<Summary, ConsumeError> {
    let metrics = Arc::new(ConsumerMetrics::new(&config.kafka.topic));
    let page = StatusPage::new(
        metrics.clone(),
        config.postgres.clone(),
        (
            config.stale_after_s,
            config.alerts.is_some(),
            config.status_urls,
        ),
    );
    let servers: Vec<_> = http.into_iter().map(|h| h.serve(page.clone())).collect();
    let consumed = consume(config, shutdown, metrics).await;
    for server in servers {
        server.abort();
    }
    drop(page); // its connection, if it has one
    store::connections_closed().await;
    consumed
}

async fn consume(
    config: ConsumerConfig,
    mut shutdown: Shutdown,
    metrics: Arc<ConsumerMetrics>,
) -> Result<Summary, ConsumeError> {
    let topic = config.kafka.topic.clone();
    // Kafka and PostgreSQL are set up side by side: a short --drain run is mostly start-up.
    // Nothing is logged on the Kafka side until PostgreSQL is ready too, so that a wrong
    // password stays a one-line error.
    let kafka_thread = KafkaThread::start()?;
    let ((kafka, partitions, (warm, drain_to)), (mut db, python_until)) =
        tokio::try_join!(open_kafka(&config, &kafka_thread), open_postgres(&config))?;
    let found = (partitions, config.drain);
    let Some(partitions) = topic_partitions(found, &kafka, &topic, &mut shutdown, &metrics).await?
    else {
        return Ok(Summary::default());
    };
    if let Some(ends) = &drain_to {
        log::info!("draining topic {topic:?} up to {ends:?}");
    }
    log::info!(
        "consuming topic {topic:?} into {}",
        config.postgres.display()
    );
    let (shared, rx) = FetchShared::new(&config, &kafka_thread, &metrics);
    let positions = shared.positions.clone();
    // After the migration: their tables exist.
    let upkeep = Upkeep::start(&config, &metrics)?;
    let alerts = start_alerts(&config, &mut db, &metrics).await?;
    let listing = start_listing(&config, &db, &shutdown, &metrics).await?;
    let mut consumer = ConsumerLoop {
        listing,
        labels: KnownLabels::default(),
        calendar: Calendar::default(),
        leases: PartitionLeases::new(&topic),
        config,
        topic,
        kafka,
        db,
        python_until,
        alerts,
        alert_states: KnownStates::default(),
        shutdown,
        rx,
        shared,
        positions,
        partitions,
        drain_to,
        fetchers: HashMap::new(),
        warm,
        generation: 0,
        drained: Vec::new(),
        finished: Vec::new(),
        pending: Vec::new(),
        pending_events: 0,
        last_write: None,
        total: Summary::default(),
        window: Summary::default(),
        next_rebalance: Instant::now(),
        next_progress: Instant::now() + PROGRESS_EVERY,
        next_stale_sweep: Instant::now() + STALE_SWEEP_EVERY,
        backoff: Duration::from_millis(500),
        db_ok: true,
        alive: metrics.liveness.start("consume", Some(STUCK_AFTER)),
        metrics,
    };
    consumer.run().await;
    upkeep.finish(consumer.alerts.take()).await;
    Ok(consumer.total)
}

fn log_progress(window: &Summary, positions: &Positions, over: Duration) {
    let lag: Vec<String> = match positions.lock() {
        Ok(p) => p
            .iter()
            .map(|(part, (pos, end))| format!("p{part}={}", (end - pos).max(0)))
            .collect(),
        Err(_) => Vec::new(),
    };
    log::info!(
        "{} event(s) written in the last {} s ({:.0}/s), {} already stored, {} rejected; lag {}",
        window.written,
        over.as_secs(),
        window.written as f64 / over.as_secs_f64(),
        window.already_stored,
        window.rejected,
        if lag.is_empty() {
            "unknown".to_string()
        } else {
            lag.join(" ")
        }
    );
}
