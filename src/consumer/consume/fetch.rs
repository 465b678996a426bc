//! The fetchers: one task per leased partition on the Kafka thread, reading from the
//! committed offset and decoding records into chunks of rows for the writer. Kafka errors
//! are retried here; a fetcher never writes to PostgreSQL.

use super::*;

/// What a fetcher hands the writer, tagged with the lease generation it fetched under
/// (a chunk from a lease since dropped is discarded).
pub(super) enum FromFetcher {
    /// Rows decoded from a run of records.
    Batch { generation: u64, batch: Batch },
    /// `--drain`: the partition reached the end it had at start.
    Drained { generation: u64, partition: i32 },
}

/// Per partition: fetched position and where a committed read ends (`Fetched::readable_end`),
/// for the progress log.
pub(super) type Positions = Arc<Mutex<BTreeMap<i32, (i64, i64)>>>;

/// A partition's fetch made at start, before its lease (`start::warm_partitions`), its
/// connection to the leader open, with its earliest offset as it was then: taken by the
/// partition's first fetcher.
pub(super) struct WarmPartition {
    pub(super) leader: LeaderFetch,
    pub(super) earliest: i64,
}

/// A running fetcher, as the writer holds it.
pub(super) struct Fetcher {
    pub(super) generation: u64,
    pub(super) abort: AbortHandle,
}

/// What the fetchers of all partitions share.
#[derive(Clone)]
pub(super) struct FetchShared {
    /// For the fetchers' own connections to the partitions' leaders.
    pub(super) settings: Arc<kafka::KafkaSettings>,
    pub(super) topic: String,
    pub(super) batch_events: usize,
    pub(super) batch_wait: Duration,
    /// Keep what the rollups and the alerts need of each event.
    pub(super) inputs: bool,
    pub(super) tx: mpsc::Sender<FromFetcher>,
    pub(super) positions: Positions,
    /// Where fetchers run: the Kafka thread.
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) metrics: Arc<ConsumerMetrics>,
}

impl FetchShared {
    /// What the fetchers will share, and where the writer receives their chunks.
    pub(super) fn new(
        config: &ConsumerConfig,
        thread: &KafkaThread,
        metrics: &Arc<ConsumerMetrics>,
    ) -> (FetchShared, mpsc::Receiver<FromFetcher>) {
        let (tx, rx) = mpsc::channel::<FromFetcher>(CHUNKS_QUEUED);
        let shared = FetchShared {
            settings: Arc::new(config.kafka.clone()),
            topic: config.kafka.topic.clone(),
            batch_events: config.batch_events,
            batch_wait: config.batch_wait,
            inputs: config.rollups || config.alerts.is_some(),
            tx,
            positions: Positions::default(),
            runtime: thread.runtime.clone(),
            metrics: metrics.clone(),
        };
        (shared, rx)
    }
}

/// The thread every fetcher runs on, with the Kafka client's connections: fetching,
/// decompressing, decoding and encoding there never delays the writer, which then feeds
/// PostgreSQL at once (on the benchmark, PostgreSQL sat idle a quarter of the time while
/// one thread did both). One thread, so that decoding takes at most one core from
/// PostgreSQL and Kafka on the same machine. It ends when this is dropped.
pub(super) struct KafkaThread {
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) _stop: tokio::sync::oneshot::Sender<()>,
}

impl KafkaThread {
    pub(super) fn start() -> Result<KafkaThread, ConsumeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ConsumeError::Thread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("kafka".into())
            .spawn(move || {
                // Each fetch's answer, and each chunk's rows, are allocated and freed here.
                let _blocks = crate::memory::ThreadBlockCache::start();
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
/// partitions of a consumer start together; `warm`, the client made at start, if any.
pub(super) fn start_fetcher(
    shared: &FetchShared,
    partition: i32,
    warm: Option<WarmPartition>,
    generation: u64,
    committed: Option<i64>,
    stop_at: Option<i64>,
) -> Fetcher {
    let task = shared.runtime.spawn(fetch_partition(FetchJob {
        shared: shared.clone(),
        partition,
        warm,
        generation,
        committed,
        stop_at,
    }));
    Fetcher {
        generation,
        abort: task.abort_handle(),
    }
}

/// One partition to fetch: from where, for which lease generation, sent where.
pub(super) struct FetchJob {
    pub(super) shared: FetchShared,
    pub(super) partition: i32,
    pub(super) warm: Option<WarmPartition>,
    pub(super) generation: u64,
    pub(super) committed: Option<i64>,
    pub(super) stop_at: Option<i64>,
}

/// Fetches of `job`'s partition fail (`why`), from now until the next answer: said once in
/// the log (then what the fetcher does: `next`) and by `/readyz` meanwhile. A function of
/// `failing`, not of the fetcher: the fetch under way borrows the fetcher's client.
fn start_failing(failing: &mut bool, job: &FetchJob, why: String, next: &str) {
    log::warn!("partition {}: {why}; {next}", job.partition);
    job.shared.metrics.kafka_failing(job.partition, why);
    *failing = true;
}

/// Where the partition's log starts, asked with backoff until Kafka answers; each failure
/// is logged once, and said by `/readyz` until the partition's next fetch is answered.
async fn earliest_offset(
    leader: &mut LeaderFetch,
    (partition, metrics): (i32, &ConsumerMetrics),
) -> i64 {
    let mut backoff = Duration::from_millis(200);
    let mut said = false;
    loop {
        let why = match leader
            .offset(OffsetAt::Earliest, kafka::REQUEST_TIMEOUT)
            .await
        {
            Ok(earliest) => return earliest,
            Err(e) => e.to_string(),
        };
        if !said {
            log::warn!("partition {partition}: {why}; retrying");
            metrics.kafka_failing(partition, why);
        }
        said = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Fetch one partition from `offset` on, sending batches of decoded records. Broker
/// errors are retried here with backoff; the position only moves through what is sent.
pub(super) async fn fetch_partition(mut job: FetchJob) {
    let mut fetch = PartitionFetch::start(&mut job).await;
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
pub(super) struct PartitionFetch {
    /// The fetches, and the offsets (the earliest, the latest) when the position is out
    /// of range, over a connection of their own to the leader.
    pub(super) leader: LeaderFetch,
    pub(super) offset: i64,
    pub(super) fetch_from: i64,
    /// The partition has no committed offset yet: its first batch creates the row.
    pub(super) new_partition: bool,
    /// Fetched but not yet batched: one fetch can bring more records than a chunk takes.
    pub(super) pending: VecDeque<FetchedRecord>,
    pub(super) backoff: Duration,
    pub(super) failing: bool,
    /// The last fetch reached the partition's end (`Fetched::readable_end`).
    pub(super) caught_up: bool,
}

impl PartitionFetch {
    /// The partition's fetch and its starting offset: the committed one, or the earliest
    /// record Kafka holds for a partition never consumed. Retried until Kafka answers.
    /// An earliest offset found at start that retention passed since is corrected by the
    /// fetch (`out_of_range`), as a committed one would be.
    async fn start(job: &mut FetchJob) -> PartitionFetch {
        let partition = job.partition;
        let shared = &job.shared;
        let (mut leader, earliest) = match job.warm.take() {
            Some(warm) => (warm.leader, Some(warm.earliest)),
            None => (
                LeaderFetch::new(shared.settings.clone(), &shared.topic, partition),
                None,
            ),
        };
        let (offset, new_partition) = match (job.committed, earliest) {
            (Some(offset), _) => (offset, false),
            (None, Some(earliest)) => (earliest, true),
            (None, None) => (
                earliest_offset(&mut leader, (partition, &shared.metrics)).await,
                true,
            ),
        };
        log::info!("partition {partition}: starting at offset {offset}");
        PartitionFetch {
            leader,
            offset,
            fetch_from: offset,
            new_partition,
            pending: VecDeque::new(),
            backoff: Duration::from_millis(200),
            failing: false,
            caught_up: false,
        }
    }

    /// Records for the next chunk: up to the chunk size, the partition's end (`--drain`) or
    /// the batch wait, whichever comes first. `offset` moves past what it returns.
    async fn next_chunk(&mut self, job: &FetchJob) -> Vec<FetchedRecord> {
        let chunk_events = job.shared.batch_events.min(CHUNK_EVENTS);
        let deadline = Instant::now() + job.shared.batch_wait;
        let mut raw = Vec::new();
        loop {
            while raw.len() < chunk_events {
                let Some(r) = self.pending.pop_front() else {
                    // All fetched is taken: offsets with no record up to where the next
                    // fetch starts are passed too (committed with this chunk).
                    self.offset = self.fetch_from;
                    break;
                };
                self.offset = r.offset + 1;
                raw.push(r);
            }
            let full = raw.len() >= chunk_events;
            let at_end = job.stop_at.is_some_and(|end| self.offset >= end);
            // Caught up with the partition: what came is handed over now (the writer
            // gathers partitions into a transaction); a backlog fills whole chunks.
            let caught_up = !raw.is_empty() && self.pending.is_empty() && self.caught_up;
            if full || at_end || caught_up || Instant::now() >= deadline {
                return raw;
            }
            let wait_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(10, 5_000) as i32;
            self.fetch_once(job, wait_ms).await;
        }
    }

    /// A fetch's answer, within 30 s. A broker that went away is retried inside the
    /// request, silently (as rskafka's fetch did): past the long poll's own wait the outage
    /// is said, then awaited.
    async fn answer(
        &mut self,
        job: &FetchJob,
        wait_ms: i32,
    ) -> Result<Result<Fetched, FetchError>, tokio::time::error::Elapsed> {
        let fetch = self.leader.fetch(self.fetch_from, FETCH_BYTES, wait_ms);
        let fetch = tokio::time::timeout(Duration::from_secs(30), fetch);
        tokio::pin!(fetch);
        let silent = Duration::from_millis(wait_ms.max(0) as u64) + SILENT_FETCH;
        if self.failing {
            return fetch.await;
        }
        tokio::select! {
            answer = &mut fetch => answer,
            _ = tokio::time::sleep(silent) => {
                let why = format!("Kafka has not answered a fetch for {} s", silent.as_secs());
                start_failing(&mut self.failing, job, why, "waiting");
                fetch.await
            }
        }
    }

    /// One fetch request; errors are logged once while they last and retried with backoff.
    async fn fetch_once(&mut self, job: &FetchJob, wait_ms: i32) {
        let partition = job.partition;
        let answer = self.answer(job, wait_ms).await;
        match answer {
            Ok(Ok(Fetched {
                records,
                readable_end: end,
                next_offset,
            })) => {
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
                // Past what held no record of ours too (markers, aborted transactions):
                // fetched again, they would come again, and the position never reach
                // the partition's end.
                self.fetch_from = self.fetch_from.max(next_offset);
                // To where a committed read can reach: records of a transaction still open
                // are not lag (they cannot be read yet, and may be aborted).
                self.caught_up = self.fetch_from >= end;
                if let Ok(mut p) = job.shared.positions.lock() {
                    p.insert(partition, (self.fetch_from, end));
                }
                job.shared.metrics.log_end(partition, end);
            }
            Ok(Err(FetchError::OffsetOutOfRange)) => {
                let topic = &job.shared.topic;
                if let Some(skip_to) =
                    out_of_range(&mut self.leader, partition, self.fetch_from, topic).await
                {
                    self.fetch_from = skip_to;
                    self.offset = skip_to;
                }
            }
            Ok(Err(e)) => {
                if !self.failing {
                    let e = format!("Kafka fetch failed: {e}");
                    start_failing(&mut self.failing, job, e, "retrying");
                }
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            Err(_) => {
                if !self.failing {
                    start_failing(
                        &mut self.failing,
                        job,
                        "Kafka fetch timed out".into(),
                        "retrying",
                    );
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
pub(super) async fn out_of_range(
    leader: &mut LeaderFetch,
    partition: i32,
    fetch_from: i64,
    topic: &str,
) -> Option<i64> {
    let within = Duration::from_secs(15);
    let earliest = leader.offset(OffsetAt::Earliest, within).await.ok();
    let latest = leader.offset(OffsetAt::Latest, within).await.ok();
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
pub(super) fn decode_chunk(
    (partition, start_offset, next_offset): (i32, i64, i64),
    new_partition: bool,
    rollups: bool,
    raw: Vec<FetchedRecord>,
) -> Batch {
    let mut rows = RowEncoder::with_capacity(raw.len());
    let mut inputs = Vec::with_capacity(raw.len());
    let mut rejected = Vec::new();
    let mut python_from = None;
    let mut names = record::SharedNames::default();
    for r in raw {
        let stored = record::record_time(r.timestamp_ms).and_then(|time| {
            let e = record::decode(r.value.as_deref(), time)?;
            if e.id.is_none() {
                python_from =
                    Some(python_from.map_or(e.ts, |t: chrono::DateTime<chrono::Utc>| t.min(e.ts)));
            }
            rows.push(partition, r.offset, &e)
                .map_err(|text| record::RejectReason(text, record::RejectKind::Unstorable))?;
            if rollups && derivable(&e, partition, r.offset) {
                inputs.push(e.into_rollup_input((partition, r.offset), &mut names));
            }
            Ok(())
        });
        if let Err(reason) = stored {
            rejected.push(Rejected {
                offset: r.offset,
                key: r.key.map(|k| k.to_vec()),
                value: r.value.map(|v| v.to_vec()),
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
pub(super) fn derivable(e: &record::StoredEvent<'_>, partition: i32, offset: i64) -> bool {
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
