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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::Client as KafkaClient;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;
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
use crate::kafka::{self, KafkaError};
use crate::observe::{HttpListener, LoopGuard};
use crate::shutdown::Shutdown;

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
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsumeError::Kafka(e) => e.fmt(f),
            ConsumeError::Store(e) => e.fmt(f),
            ConsumeError::Alerts(e) => write!(f, "alerts: {e}"),
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
    let ((kafka, partitions, ends), (mut db, python_until)) =
        tokio::try_join!(open_kafka(&config, &kafka_thread), open_postgres(&config))?;
    let partitions = match partitions {
        Some(p) => p,
        None => match wait_for_topic(&kafka, &topic, &mut shutdown).await? {
            Some(p) => p,
            None => return Ok(Summary::default()),
        },
    };
    let drain_to = drain_targets(config.drain, ends, &kafka, &topic, &partitions).await?;
    log::info!(
        "consuming topic {topic:?} into {}",
        config.postgres.display()
    );
    let (tx, rx) = mpsc::channel::<FromFetcher>(CHUNKS_QUEUED);
    let positions: Positions = Arc::default();
    let shared = FetchShared {
        kafka: kafka.clone(),
        topic: topic.clone(),
        batch_events: config.batch_events,
        batch_wait: config.batch_wait,
        inputs: config.rollups || config.alerts.is_some(),
        tx,
        positions: positions.clone(),
        runtime: kafka_thread.runtime.clone(),
        metrics: metrics.clone(),
    };
    // After the migration: their tables exist.
    let upkeep = Upkeep::start(&config);
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
        generation: 0,
        drained: Vec::new(),
        finished: Vec::new(),
        pending: Vec::new(),
        pending_events: 0,
        flush_due: None,
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

/// With alerting on: the receivers' routing kept for every consumer's writer, and a
/// sender per receiver.
async fn start_alerts(
    config: &ConsumerConfig,
    db: &mut tokio_postgres::Client,
    metrics: &Arc<ConsumerMetrics>,
) -> Result<Option<AlertSender>, ConsumeError> {
    let Some(alerts) = &config.alerts else {
        return Ok(None);
    };
    let routes: Vec<_> = alerts
        .receivers
        .iter()
        .map(|r| (r.name.clone(), r.matches.clone(), r.kinds.clone()))
        .collect();
    store::set_receivers(db, &routes)
        .await
        .map_err(ConsumeError::Alerts)?;
    AlertSender::start(config.postgres.clone(), alerts, metrics.clone())
        .map(Some)
        .map_err(ConsumeError::Alerts)
}

/// With `CK_TARGETS_TOPIC` (and not `--drain`): the list followed, its removals loaded.
async fn start_listing(
    config: &ConsumerConfig,
    db: &tokio_postgres::Client,
    shutdown: &Shutdown,
    metrics: &Arc<ConsumerMetrics>,
) -> Result<Option<Listing>, ConsumeError> {
    let Some(topic) = config.targets_topic.clone().filter(|_| !config.drain) else {
        return Ok(None);
    };
    let mut listing = Listing::start(
        config.kafka.clone(),
        topic,
        metrics.list.clone(),
        shutdown.clone(),
    );
    listing.load(db).await.map_err(ConsumeError::Store)?;
    Ok(Some(listing))
}

/// The work beside the writer, each on a PostgreSQL connection of its own: folding the
/// rollups and pruning old events (the alert sender lives with the loop, which wakes it).
struct Upkeep {
    folder: Option<RollupFolder>,
    pruner: Option<EventPruner>,
}

impl Upkeep {
    fn start(config: &ConsumerConfig) -> Upkeep {
        Upkeep {
            folder: config
                .rollups
                .then(|| RollupFolder::start(config.postgres.clone())),
            pruner: config
                .retention_days
                .map(|days| EventPruner::start(config.postgres.clone(), days)),
        }
    }

    /// Prune no more; fold what is left and deliver what is due, side by side, each bounded.
    async fn finish(self, sender: Option<AlertSender>) {
        if let Some(pruner) = self.pruner {
            pruner.finish().await;
        }
        let folder = self.folder;
        tokio::join!(
            async {
                if let Some(folder) = folder {
                    folder.finish(FOLD_AT_EXIT).await;
                }
            },
            async {
                if let Some(sender) = sender {
                    sender.finish(SEND_AT_EXIT).await;
                }
            }
        );
    }
}

/// With `--drain`, where each partition ends (as found at start, or asked now); None
/// without.
async fn drain_targets(
    drain: bool,
    ends: Option<HashMap<i32, i64>>,
    kafka: &Arc<KafkaClient>,
    topic: &str,
    partitions: &[i32],
) -> Result<Option<HashMap<i32, i64>>, ConsumeError> {
    let drain_to = match ends {
        Some(ends) => Some(ends),
        None if drain => Some(partition_ends(kafka, topic, partitions).await?),
        None => None,
    };
    if let Some(ends) = &drain_to {
        log::info!("draining topic {topic:?} up to {ends:?}");
    }
    Ok(drain_to)
}

/// Kafka from the Kafka thread (so that its connections' tasks run there): the client, the
/// topic's partitions if it exists, and with `--drain` where each partition ends.
async fn open_kafka(
    config: &ConsumerConfig,
    kafka_thread: &KafkaThread,
) -> Result<
    (
        Arc<KafkaClient>,
        Option<Vec<i32>>,
        Option<HashMap<i32, i64>>,
    ),
    ConsumeError,
> {
    let settings = config.kafka.clone();
    let connecting = kafka_thread
        .runtime
        .spawn(async move { kafka::connect(&settings, Duration::from_secs(10)).await });
    let client = match connecting.await {
        Ok(connected) => Arc::new(connected.map_err(ConsumeError::Kafka)?),
        Err(e) => return Err(ConsumeError::Thread(std::io::Error::other(e))),
    };
    let topic = &config.kafka.topic;
    let partitions = match kafka::topic_partitions(&client, topic).await {
        Ok(Some(p)) if !p.is_empty() => Some(p),
        _ => None,
    };
    let ends = match &partitions {
        Some(p) if config.drain => Some(partition_ends(&client, topic, p).await?),
        _ => None,
    };
    Ok((client, partitions, ends))
}

/// PostgreSQL connected and migrated, and the time of the Python consumer's last row.
async fn open_postgres(
    config: &ConsumerConfig,
) -> Result<(tokio_postgres::Client, Option<DateTime<Utc>>), ConsumeError> {
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
    let python_until = store::python_rows_until(&db)
        .await
        .map_err(ConsumeError::Store)?;
    if let Some(until) = python_until {
        log::info!(
            "rows of the Python checksite's consumer found (the last at {}): Python-format records up to then are stored only if it had not stored them",
            event::format_time(&until)
        );
        if let Some(zone) = store::non_utc_timezone(&db)
            .await
            .map_err(ConsumeError::Store)?
        {
            log::warn!(
                "the server's TimeZone is {zone}: the Python checksite wrote events.ts in that zone's wall time, checksite writes UTC"
            );
        }
    }
    Ok((db, python_until))
}

/// The consumer at work: what it holds (leases, fetchers, chunks not yet written) and the
/// steps of its loop: recover, rebalance, report, receive, write, release.
struct ConsumerLoop {
    config: ConsumerConfig,
    topic: String,
    kafka: Arc<KafkaClient>,
    db: tokio_postgres::Client,
    python_until: Option<DateTime<Utc>>,
    /// The alert sender, woken after a transaction that decided notifications.
    alerts: Option<AlertSender>,
    /// The committed alert states of the URLs this consumer wrote lately.
    alert_states: KnownStates,
    /// The targets list followed (`CK_TARGETS_TOPIC`), when set.
    listing: Option<Listing>,
    /// The URLs' names, groups and visibility this writer wrote last.
    labels: KnownLabels,
    /// The maintenance windows, to mark the checks made in them.
    calendar: Calendar,
    shutdown: Shutdown,
    leases: PartitionLeases,
    rx: mpsc::Receiver<FromFetcher>,
    shared: FetchShared,
    positions: Positions,
    partitions: Vec<i32>,
    /// `--drain`: where each partition ended at start.
    drain_to: Option<HashMap<i32, i64>>,
    fetchers: HashMap<i32, Fetcher>,
    generation: u64,
    /// `--drain`: partitions consumed to their end and committed.
    drained: Vec<i32>,
    /// `--drain`: partitions whose fetcher reached the end; drained once their last chunk commits.
    finished: Vec<i32>,
    /// Chunks received but not yet written: one transaction takes many, from any partitions.
    pending: Vec<Batch>,
    pending_events: usize,
    flush_due: Option<Instant>,
    total: Summary,
    window: Summary,
    next_rebalance: Instant,
    next_progress: Instant,
    next_stale_sweep: Instant,
    backoff: Duration,
    /// False once PostgreSQL failed: every lease went with its session.
    db_ok: bool,
    metrics: Arc<ConsumerMetrics>,
    alive: LoopGuard,
}

/// What one wait for the fetchers brought.
enum Received {
    Nothing,
    /// Write what is pending now (a partition reached its end).
    FlushNow,
    Stop,
}

impl ConsumerLoop {
    async fn run(&mut self) {
        loop {
            self.alive.beat();
            if self.shutdown.is_requested() || self.drain_done() {
                break;
            }
            if !self.db_ok && !self.recover().await {
                continue;
            }
            if Instant::now() >= self.next_rebalance && !self.rebalance().await {
                continue;
            }
            self.report();
            let flush_now = match self.receive().await {
                Received::Stop => break,
                Received::FlushNow => true,
                Received::Nothing => false,
            };
            if self.write_due(flush_now) && !self.write().await {
                break;
            }
            self.release_drained().await;
            self.close_stale_incidents().await;
            self.follow_listing().await;
        }
        for (_, f) in self.fetchers.drain() {
            f.abort.abort();
        }
        log::info!(
            "stopped: {} event(s) written, {} already stored, {} rejected",
            self.total.written,
            self.total.already_stored,
            self.total.rejected
        );
    }

    fn drain_done(&self) -> bool {
        self.drain_to
            .as_ref()
            .is_some_and(|ends| ends.keys().all(|p| self.drained.contains(p)))
    }

    /// PostgreSQL went away: drop every fetcher and chunk (the leases went with the
    /// session), pause, reconnect. True once connected again; the loop then starts over
    /// from the committed offsets.
    async fn recover(&mut self) -> bool {
        for (_, f) in self.fetchers.drain() {
            f.abort.abort();
        }
        self.leases.lost();
        // Another consumer may write their states meanwhile.
        self.alert_states.clear();
        self.labels.clear();
        self.calendar.forget();
        while self.rx.try_recv().is_ok() {}
        self.clear_pending();
        self.finished.clear();
        // Pause first: whatever failed (a restart, a moved offset) gets time to settle,
        // and a persistent fault cannot turn this into a busy loop.
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = self.shutdown.requested() => return false,
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        match self.config.postgres.connect(Duration::from_secs(10)).await {
            Ok(c) => {
                log::info!("PostgreSQL is back: resuming from the committed offsets");
                if let Some(listing) = &mut self.listing
                    && let Err(e) = listing.load(&c).await
                {
                    log::warn!("{e}; retrying");
                    return false;
                }
                self.db = c;
                self.db_ok = true;
                self.next_rebalance = Instant::now();
                true
            }
            Err(e) => {
                log::warn!("{e}; retrying in {} ms", self.backoff.as_millis());
                self.metrics.postgres_failed(&e.to_string());
                false
            }
        }
    }

    /// Take this consumer's share of the partitions, give back what is above it, and start
    /// a fetcher for each partition gained. False when PostgreSQL failed.
    async fn rebalance(&mut self) -> bool {
        self.next_rebalance = Instant::now() + REBALANCE_EVERY;
        if let Ok(Some(now)) = kafka::topic_partitions(&self.kafka, &self.topic).await {
            self.partitions = now;
        }
        let open: Vec<i32> = self
            .partitions
            .iter()
            .copied()
            .filter(|p| !self.drained.contains(p))
            .collect();
        let greedy = self.drain_to.is_some();
        let (gained, lost) = match self.leases.rebalance(&self.db, &open, greedy).await {
            Ok(moved) => moved,
            Err(e) => {
                log::warn!("{e}; pausing until PostgreSQL answers");
                self.postgres_failed(&e);
                return false;
            }
        };
        if !gained.is_empty() || !lost.is_empty() {
            // A partition gained was written by another consumer until now.
            self.alert_states.clear();
        }
        for p in lost {
            if let Some(f) = self.fetchers.remove(&p) {
                f.abort.abort();
            }
            // Not ours any more: its uncommitted records are the next owner's.
            self.pending.retain(|b| b.partition != p);
            self.pending_events = self.pending.iter().map(Batch::records).sum();
        }
        if gained.is_empty() {
            self.metrics.holding(self.leases.held().map(|p| (p, None)));
            self.metrics.lease_round_done();
            return true;
        }
        match store::committed_offsets(&self.db, &self.topic, &gained).await {
            Ok(committed) => {
                let held = self.leases.held().map(|p| (p, committed.get(&p).copied()));
                self.metrics.holding(held);
                self.metrics.lease_round_done();
                for p in gained {
                    self.generation += 1;
                    let stop_at = self.drain_to.as_ref().and_then(|d| d.get(&p).copied());
                    let f = start_fetcher(
                        &self.shared,
                        p,
                        self.generation,
                        committed.get(&p).copied(),
                        stop_at,
                    );
                    self.fetchers.insert(p, f);
                }
            }
            Err(e) => {
                log::warn!("{e}; pausing until PostgreSQL answers");
                self.postgres_failed(&e);
            }
        }
        true
    }

    /// PostgreSQL failed: every lease went with the session; say so in `/readyz` too.
    fn postgres_failed(&mut self, e: &dyn std::fmt::Display) {
        self.db_ok = false;
        self.metrics.postgres_failed(&e.to_string());
    }

    fn report(&mut self) {
        if Instant::now() >= self.next_progress {
            self.next_progress = Instant::now() + PROGRESS_EVERY;
            log_progress(&self.window, &self.positions, PROGRESS_EVERY);
            self.window = Summary::default();
        }
    }

    /// Wait for a chunk from a fetcher, until the next timed step is due.
    async fn receive(&mut self) -> Received {
        let mut wake = self.next_rebalance.min(self.next_progress);
        if let Some(due) = self.flush_due {
            wake = wake.min(due);
        }
        let msg = tokio::select! {
            m = self.rx.recv() => m,
            _ = tokio::time::sleep_until(wake) => None,
            _ = self.shutdown.requested() => return Received::Stop,
        };
        let current = |fetchers: &HashMap<i32, Fetcher>, p: i32, g: u64| {
            fetchers.get(&p).is_some_and(|f| f.generation == g)
        };
        match msg {
            None if self.rx.is_closed() => Received::Stop,
            None => Received::Nothing,
            Some(FromFetcher::Drained {
                generation,
                partition,
            }) if current(&self.fetchers, partition, generation) => {
                if let Some(f) = self.fetchers.remove(&partition) {
                    f.abort.abort();
                }
                // Its last records are pending: it counts as drained once they are
                // committed (if that write fails, it is drained again later).
                self.finished.push(partition);
                Received::FlushNow
            }
            Some(FromFetcher::Batch { generation, batch })
                if current(&self.fetchers, batch.partition, generation) =>
            {
                if self.pending.is_empty() {
                    self.flush_due = Some(Instant::now() + self.config.batch_wait);
                }
                self.pending_events += batch.records();
                self.pending.push(batch);
                Received::Nothing
            }
            // From a fetcher we already stopped.
            Some(_) => Received::Nothing,
        }
    }

    fn write_due(&self, flush_now: bool) -> bool {
        let due = self.flush_due.is_some_and(|d| Instant::now() >= d);
        !self.pending.is_empty()
            && (flush_now || due || self.pending_events >= self.config.batch_events)
    }

    /// Write and commit what is pending. False when the process must stop now.
    async fn write(&mut self) -> bool {
        let mut batches = std::mem::take(&mut self.pending);
        if let Some(listing) = &self.listing {
            listing.mark(&mut batches);
        }
        let labels = self.labels.changes(&batches);
        if (self.derived().alerts.is_some() || self.config.rollups)
            && let Err(e) = self.calendar.mark(&self.db, &mut batches).await
        {
            log::warn!("{e}; pausing, then resuming from the committed offsets");
            self.postgres_failed(&e);
            return true;
        }
        self.clear_pending();
        let derived = self.derived();
        let writing = write_all(
            &mut self.db,
            (&self.topic, &self.kafka),
            batches,
            (self.python_until, derived, &mut self.alert_states),
            &self.metrics,
        );
        // A transaction under way at SIGTERM may finish for a moment; past that it is
        // dropped (rolled back: its records are read again at the next start).
        let shutdown = &mut self.shutdown;
        let stopping = async {
            shutdown.requested().await;
            tokio::time::sleep(WRITE_GRACE).await;
        };
        let written = tokio::select! {
            w = writing => w,
            _ = stopping => {
                log::warn!("stopping: the transaction under way is rolled back");
                return false;
            }
        };
        match written {
            Ok(done) => {
                for sum in [&mut self.total, &mut self.window] {
                    sum.written += done.written;
                    sum.already_stored += done.already_stored;
                    sum.rejected += done.rejected;
                    sum.notifications += done.notifications;
                }
                if done.notifications > 0
                    && let Some(sender) = &self.alerts
                {
                    sender.wake();
                }
                self.backoff = Duration::from_millis(500);
                // After the commit, apart from it: a newer row wins, so a retry is harmless.
                match store::save_labels(&self.db, &labels).await {
                    Ok(()) => self.labels.written(labels),
                    Err(e) => {
                        log::warn!("{e}; pausing, then resuming from the committed offsets");
                        self.postgres_failed(&e);
                    }
                }
            }
            Err(e) => {
                // OffsetMoved included: a new session re-takes leases cleanly.
                log::warn!("{e}; pausing, then resuming from the committed offsets");
                self.postgres_failed(&e);
            }
        }
        true
    }

    /// Every [`STALE_SWEEP_EVERY`]: the open incidents of the partitions held and written up
    /// to their end whose vantage points all went quiet close with a `stale` notification.
    /// Done by the writer, between its transactions: a URL's state is only ever written
    /// by the consumer holding its partition, so the known states stay exact.
    async fn close_stale_incidents(&mut self) {
        let Some(alerts) = &self.config.alerts else {
            return;
        };
        if self.drain_to.is_some() || !self.db_ok || Instant::now() < self.next_stale_sweep {
            return;
        }
        self.next_stale_sweep = Instant::now() + STALE_SWEEP_EVERY;
        let partitions = self.metrics.caught_up();
        let stale_after = alerts.rules.stale_after_s;
        match store::close_stale_incidents(&mut self.db, &partitions, stale_after).await {
            Ok(closed) if !closed.is_empty() => {
                log::info!(
                    "alerts: {} incident(s) closed as stale: no check for {stale_after} s",
                    closed.len()
                );
                self.metrics.alerts_decided(closed.len());
                self.alert_states.extend(closed);
                if let Some(sender) = &self.alerts {
                    sender.wake();
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("{e}; pausing, then resuming from the committed offsets");
                self.postgres_failed(&e);
            }
        }
    }

    /// The targets list's changes kept, and the removed URLs of the partitions held
    /// cleaned (their known alert states dropped), between two transactions.
    async fn follow_listing(&mut self) {
        let Some(listing) = &mut self.listing else {
            return;
        };
        if !self.db_ok {
            return;
        }
        let held: std::collections::HashSet<i32> = self.fetchers.keys().copied().collect();
        let count = self.partitions.len() as i32;
        let owns = |url: &str| held.contains(&kafka::partition_for(url.as_bytes(), count));
        match listing.sync(&mut self.db, owns).await {
            Ok((cleaned, notifications)) => {
                for url in cleaned {
                    self.alert_states.remove(&url);
                }
                if notifications > 0 {
                    self.metrics.alerts_decided(notifications);
                    if let Some(sender) = &self.alerts {
                        sender.wake();
                    }
                }
            }
            Err(e) => {
                log::warn!("{e}; pausing, then resuming from the committed offsets");
                self.postgres_failed(&e);
            }
        }
    }

    /// What transactions keep besides the rows.
    fn derived(&self) -> store::Derived {
        store::Derived {
            rollups: self.config.rollups,
            alerts: self.config.alerts.as_ref().map(|a| a.rules),
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_events = 0;
        self.flush_due = None;
    }

    /// Drained partitions whose last records are committed: give the lease back, so that
    /// the fair share is counted over the partitions still to drain.
    async fn release_drained(&mut self) {
        for partition in std::mem::take(&mut self.finished) {
            if self.db_ok {
                self.drained.push(partition);
                if let Err(e) = self.leases.release(&self.db, partition).await {
                    log::warn!("{e}; pausing until PostgreSQL answers");
                    self.postgres_failed(&e);
                }
            }
        }
    }
}

/// Where each partition ends now (its high watermark): what `--drain` consumes up to.
async fn partition_ends(
    client: &Arc<KafkaClient>,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, ConsumeError> {
    let mut lookups = tokio::task::JoinSet::new();
    for &p in partitions {
        let client = client.clone();
        let topic = topic.to_string();
        lookups.spawn(async move {
            let pc = kafka::partition_client(&client, &topic, p).await?;
            let end = tokio::time::timeout(kafka::REQUEST_TIMEOUT, pc.get_offset(OffsetAt::Latest))
                .await
                .map_err(|_| KafkaError::Request {
                    what: "list offsets".into(),
                    detail: "no answer".into(),
                })?
                .map_err(|e| kafka::request_error("list offsets", &e))?;
            Ok::<_, KafkaError>((p, end))
        });
    }
    let mut ends = HashMap::new();
    while let Some(joined) = lookups.join_next().await {
        let found = joined.map_err(|e| ConsumeError::Thread(std::io::Error::other(e)))?;
        let (p, end) = found.map_err(ConsumeError::Kafka)?;
        ends.insert(p, end);
    }
    Ok(ends)
}

/// Write `batches` in one transaction and log their rejects. When PostgreSQL refuses a
/// row (a constraint, a limit: retrying fails the same way), the row is found by halving
/// the batches, each half its own transaction over a contiguous range of offsets (so the
/// offsets' compare-and-set stays exact), and kept in `rejected_events` with the record's
/// raw bytes, re-read from Kafka; every other record is written. One bad record never
/// blocks a partition.
async fn write_all(
    db: &mut tokio_postgres::Client,
    (topic, kafka): (&str, &KafkaClient),
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
fn count_commit(
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

/// The key and value of the record at `offset`, read again from Kafka: a row PostgreSQL
/// refused is kept as the bytes that came in, not as what we made of them.
async fn raw_record(
    kafka: &KafkaClient,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), ConsumeError> {
    let pc = kafka::partition_client(kafka, topic, partition)
        .await
        .map_err(ConsumeError::Kafka)?;
    let fetch = pc.fetch_records(offset, 1..RAW_FETCH_BYTES, 1_000);
    let fetched = match tokio::time::timeout(kafka::REQUEST_TIMEOUT, fetch).await {
        Ok(Ok((records, _))) => records,
        Ok(Err(e)) => return Err(ConsumeError::Kafka(kafka::request_error("fetch", &e))),
        Err(_) => {
            return Err(ConsumeError::Kafka(KafkaError::Request {
                what: "fetch".into(),
                detail: "no answer".into(),
            }));
        }
    };
    let record = fetched.into_iter().find(|r| r.offset == offset);
    Ok(record.map_or((None, None), |r| (r.record.key, r.record.value)))
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

/// What the fetchers of all partitions share.
#[derive(Clone)]
struct FetchShared {
    kafka: Arc<KafkaClient>,
    topic: String,
    batch_events: usize,
    batch_wait: Duration,
    /// Keep what the rollups and the alerts need of each event.
    inputs: bool,
    tx: mpsc::Sender<FromFetcher>,
    positions: Positions,
    /// Where fetchers run: the Kafka thread.
    runtime: tokio::runtime::Handle,
    metrics: Arc<ConsumerMetrics>,
}

/// The thread every fetcher runs on, with the Kafka client's connections: fetching,
/// decompressing, decoding and encoding there never delays the writer, which then feeds
/// PostgreSQL at once (on the benchmark, PostgreSQL sat idle a quarter of the time while
/// one thread did both). One thread, so that decoding takes at most one core from
/// PostgreSQL and Kafka on the same machine. It ends when this is dropped.
struct KafkaThread {
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl KafkaThread {
    fn start() -> Result<KafkaThread, ConsumeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ConsumeError::Thread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("kafka".into())
            .spawn(move || {
                // Returns when the sender is dropped; the runtime's tasks go with it.
                let _ = runtime.block_on(stopped);
            })
            .map_err(ConsumeError::Thread)?;
        Ok(KafkaThread {
            runtime: handle,
            _stop: stop,
        })
    }
}

/// Spawn the fetcher of one partition. `committed` is the partition's position in the
/// database, None when it was never consumed (the fetcher then starts at the earliest
/// record Kafka holds). Everything that talks to Kafka happens in the task, so that the
/// partitions of a consumer start together.
fn start_fetcher(
    shared: &FetchShared,
    partition: i32,
    generation: u64,
    committed: Option<i64>,
    stop_at: Option<i64>,
) -> Fetcher {
    let task = shared.runtime.spawn(fetch_partition(FetchJob {
        shared: shared.clone(),
        partition,
        generation,
        committed,
        stop_at,
    }));
    Fetcher {
        generation,
        abort: task.abort_handle(),
    }
}

struct FetchJob {
    shared: FetchShared,
    partition: i32,
    generation: u64,
    committed: Option<i64>,
    stop_at: Option<i64>,
}

/// Retry `attempt` with backoff until it succeeds; each failure is logged once.
async fn until_ok<T, F, Fut>(partition: i32, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, KafkaError>>,
{
    let mut backoff = Duration::from_millis(200);
    let mut said = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), attempt()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) if !said => log::warn!("partition {partition}: {what}: {e}; retrying"),
            Err(_) if !said => log::warn!("partition {partition}: {what} timed out; retrying"),
            _ => {}
        }
        said = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Fetch one partition from `offset` on, sending batches of decoded records. Broker
/// errors are retried here with backoff; the position only moves through what is sent.
async fn fetch_partition(job: FetchJob) {
    let mut fetch = PartitionFetch::start(&job).await;
    loop {
        if job.stop_at.is_some_and(|end| fetch.offset >= end) {
            let drained = FromFetcher::Drained {
                generation: job.generation,
                partition: job.partition,
            };
            let _ = job.shared.tx.send(drained).await;
            return;
        }
        let start_offset = fetch.offset;
        let raw = fetch.next_chunk(&job).await;
        if fetch.offset > start_offset {
            let batch = decode_chunk(
                (job.partition, start_offset, fetch.offset),
                fetch.new_partition,
                job.shared.inputs,
                raw,
            );
            let sent = job.shared.tx.send(FromFetcher::Batch {
                generation: job.generation,
                batch,
            });
            if sent.await.is_err() {
                return;
            }
            // The first batch written creates the partition's row in kafka_offsets.
            fetch.new_partition = false;
        }
    }
}

/// One partition's fetching state: where the next chunk starts (`offset`), where the next
/// fetch starts (`fetch_from`), and the records fetched but not yet in a chunk.
struct PartitionFetch {
    pc: PartitionClient,
    offset: i64,
    fetch_from: i64,
    /// The partition has no committed offset yet: its first batch creates the row.
    new_partition: bool,
    /// Fetched but not yet batched: one fetch can bring more records than a chunk takes.
    pending: VecDeque<RecordAndOffset>,
    backoff: Duration,
    failing: bool,
}

impl PartitionFetch {
    /// The partition's client and its starting offset: the committed one, or the earliest
    /// record Kafka holds for a partition never consumed. Retried until Kafka answers.
    async fn start(job: &FetchJob) -> PartitionFetch {
        let partition = job.partition;
        let pc = until_ok(partition, "partition lookup", || {
            kafka::partition_client(&job.shared.kafka, &job.shared.topic, partition)
        })
        .await;
        let (offset, new_partition) = match job.committed {
            Some(offset) => (offset, false),
            None => {
                let earliest = until_ok(partition, "list offsets", || async {
                    pc.get_offset(OffsetAt::Earliest)
                        .await
                        .map_err(|e| kafka::request_error("list offsets", &e))
                })
                .await;
                (earliest, true)
            }
        };
        log::info!("partition {partition}: starting at offset {offset}");
        PartitionFetch {
            pc,
            offset,
            fetch_from: offset,
            new_partition,
            pending: VecDeque::new(),
            backoff: Duration::from_millis(200),
            failing: false,
        }
    }

    /// Records for the next chunk: up to the chunk size, the partition's end (`--drain`) or
    /// the batch wait, whichever comes first. `offset` moves past what it returns.
    async fn next_chunk(&mut self, job: &FetchJob) -> Vec<RecordAndOffset> {
        let chunk_events = job.shared.batch_events.min(CHUNK_EVENTS);
        let deadline = Instant::now() + job.shared.batch_wait;
        let mut raw = Vec::new();
        loop {
            while raw.len() < chunk_events {
                let Some(r) = self.pending.pop_front() else {
                    break;
                };
                self.offset = r.offset + 1;
                raw.push(r);
            }
            let full = raw.len() >= chunk_events;
            let at_end = job.stop_at.is_some_and(|end| self.offset >= end);
            if full || at_end || Instant::now() >= deadline {
                return raw;
            }
            let wait_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(10, 5_000) as i32;
            self.fetch_once(job, wait_ms).await;
        }
    }

    /// One fetch request; errors are logged once while they last and retried with backoff.
    async fn fetch_once(&mut self, job: &FetchJob, wait_ms: i32) {
        let partition = job.partition;
        let fetch = self
            .pc
            .fetch_records(self.fetch_from, 1..FETCH_BYTES, wait_ms);
        match tokio::time::timeout(Duration::from_secs(30), fetch).await {
            Ok(Ok((records, high))) => {
                if self.failing {
                    log::info!("partition {partition}: Kafka answers again");
                    self.failing = false;
                }
                self.backoff = Duration::from_millis(200);
                for r in records {
                    if r.offset >= self.fetch_from {
                        self.fetch_from = r.offset + 1;
                        self.pending.push_back(r);
                    }
                }
                if let Ok(mut p) = job.shared.positions.lock() {
                    p.insert(partition, (self.fetch_from, high));
                }
                job.shared.metrics.log_end(partition, high);
            }
            Ok(Err(ClientError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            })) => {
                let topic = &job.shared.topic;
                if let Some(skip_to) =
                    out_of_range(&self.pc, partition, self.fetch_from, topic).await
                {
                    self.fetch_from = skip_to;
                    self.offset = skip_to;
                }
            }
            Ok(Err(e)) => {
                if !self.failing {
                    let e = kafka::request_error("fetch", &e);
                    log::warn!("partition {partition}: {e}; retrying");
                    self.failing = true;
                }
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            Err(_) => {
                if !self.failing {
                    log::warn!("partition {partition}: Kafka fetch timed out; retrying");
                    self.failing = true;
                }
            }
        }
    }
}

/// The fetch position is outside the partition's log. Below its start: retention removed
/// records before they were consumed; say how many and return where to go on. Past its
/// end: the topic was deleted and re-created under the same name (or the offsets table
/// belongs to another cluster); moving on by ourselves could skip or double records, so
/// say what the user can do, and check again later, never in a busy loop.
async fn out_of_range(
    pc: &rskafka::client::partition::PartitionClient,
    partition: i32,
    fetch_from: i64,
    topic: &str,
) -> Option<i64> {
    let bound = |at| tokio::time::timeout(Duration::from_secs(15), pc.get_offset(at));
    let earliest = bound(OffsetAt::Earliest).await.ok()?.ok();
    let latest = bound(OffsetAt::Latest).await.ok()?.ok();
    match (earliest, latest) {
        (Some(earliest), _) if earliest > fetch_from => {
            log::error!(
                "partition {partition}: {} record(s) expired in Kafka before they were consumed (offsets {fetch_from}..{earliest})",
                earliest - fetch_from
            );
            Some(earliest)
        }
        (_, Some(end)) if fetch_from > end => {
            log::error!(
                "partition {partition}: the committed offset {fetch_from} is past the end of the partition ({end}): was topic {topic:?} deleted and re-created? \
                 Nothing is read from this partition until its position is reset; to read the new topic from its start, stop the consumers and run: \
                 DELETE FROM kafka_offsets WHERE topic = '{topic}' AND partition = {partition}; checking again in {} s",
                PAST_END_RECHECK.as_secs()
            );
            tokio::time::sleep(PAST_END_RECHECK).await;
            None
        }
        _ => {
            // The broker's answers disagree with each other for now: ask again later.
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

/// Decode a chunk of one partition's records (partition, from, to) into rows, and with
/// `rollups` what the rollups need of each; what cannot be stored becomes a reject (kept
/// raw, with the reason) so that the chunk still commits.
fn decode_chunk(
    (partition, start_offset, next_offset): (i32, i64, i64),
    new_partition: bool,
    rollups: bool,
    raw: Vec<RecordAndOffset>,
) -> Batch {
    let mut rows = RowEncoder::with_capacity(raw.len());
    let mut inputs = Vec::with_capacity(raw.len());
    let mut rejected = Vec::new();
    let mut python_from = None;
    for r in raw {
        let stored = record::decode(r.record.value.as_deref(), r.record.timestamp).and_then(|e| {
            if e.id.is_none() {
                python_from =
                    Some(python_from.map_or(e.ts, |t: chrono::DateTime<chrono::Utc>| t.min(e.ts)));
            }
            rows.push(partition, r.offset, &e)
                .map_err(|text| record::RejectReason(text, record::RejectKind::Unstorable))?;
            if rollups && derivable(&e, partition, r.offset) {
                inputs.push(e.into_rollup_input(partition, r.offset));
            }
            Ok(())
        });
        if let Err(reason) = stored {
            rejected.push(Rejected {
                offset: r.offset,
                key: r.record.key,
                value: r.record.value,
                reason: reason.0,
                kind: reason.1,
            });
        }
    }
    Batch {
        partition,
        start_offset,
        next_offset,
        new_partition,
        rows: rows.finish(),
        rejected,
        python_from,
        inputs,
    }
}

/// Whether an event's URL and vantage point fit the rollups' and alerts' keys; an event
/// from another producer with a longer URL is stored, and left out of them (said once).
fn derivable(e: &record::StoredEvent, partition: i32, offset: i64) -> bool {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let producer = e.producer.as_deref().unwrap_or("");
    if e.url.len() <= event::MAX_URL_BYTES && producer.len() <= event::MAX_PRODUCER_BYTES {
        return true;
    }
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!(
            "partition {partition} offset {offset}: a URL of {} bytes or a vantage point name of {} (over {} and {}): stored in events, left out of rollups and alerts (said once)",
            e.url.len(),
            producer.len(),
            event::MAX_URL_BYTES,
            event::MAX_PRODUCER_BYTES
        );
    }
    false
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
