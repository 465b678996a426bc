//! The writer's loop ([`ConsumerLoop`]): recover, rebalance the leases, report progress,
//! receive chunks from the fetchers, write them, release. It owns the leases and the
//! fetchers' lifetimes; how a batch is written is [`super::write`].

use super::*;

/// The consumer at work: what it holds (leases, fetchers, chunks not yet written) and the
/// steps of its loop: recover, rebalance, report, receive, write, release.
pub(super) struct ConsumerLoop {
    pub(super) config: ConsumerConfig,
    pub(super) topic: String,
    pub(super) kafka: Arc<KafkaClient>,
    pub(super) db: tokio_postgres::Client,
    pub(super) python_until: Option<DateTime<Utc>>,
    /// The alert sender, woken after a transaction that decided notifications.
    pub(super) alerts: Option<AlertSender>,
    /// The committed alert states of the URLs this consumer wrote lately.
    pub(super) alert_states: KnownStates,
    /// The targets list followed (`CK_TARGETS_TOPIC`), when set.
    pub(super) listing: Option<Listing>,
    /// The URLs' names, groups and visibility this writer wrote last.
    pub(super) labels: KnownLabels,
    /// The maintenance windows, to mark the checks made in them.
    pub(super) calendar: Calendar,
    pub(super) shutdown: Shutdown,
    pub(super) leases: PartitionLeases,
    pub(super) rx: mpsc::Receiver<FromFetcher>,
    pub(super) shared: FetchShared,
    pub(super) positions: Positions,
    pub(super) partitions: Vec<i32>,
    /// `--drain`: where each partition ended at start.
    pub(super) drain_to: Option<HashMap<i32, i64>>,
    pub(super) fetchers: HashMap<i32, Fetcher>,
    /// The partitions' fetches made at start, until the first lease round: a partition
    /// leased then starts with its own; the others' connections close.
    pub(super) warm: HashMap<i32, WarmPartition>,
    pub(super) generation: u64,
    /// `--drain`: partitions consumed to their end and committed.
    pub(super) drained: Vec<i32>,
    /// `--drain`: partitions whose fetcher reached the end; drained once their last chunk commits.
    pub(super) finished: Vec<i32>,
    /// Chunks received but not yet written: one transaction takes many, from any partitions.
    pub(super) pending: Vec<Batch>,
    pub(super) pending_events: usize,
    /// When the last write began: writes start at most one per `CK_BATCH_MS`, and a chunk
    /// that comes after a quiet spell (or the first after the start) is written at once.
    pub(super) last_write: Option<Instant>,
    pub(super) total: Summary,
    pub(super) window: Summary,
    pub(super) next_rebalance: Instant,
    pub(super) next_progress: Instant,
    pub(super) next_stale_sweep: Instant,
    pub(super) backoff: Duration,
    /// False once PostgreSQL failed: every lease went with its session.
    pub(super) db_ok: bool,
    pub(super) metrics: Arc<ConsumerMetrics>,
    pub(super) alive: LoopGuard,
}

/// What one wait for the fetchers brought.
pub(super) enum Received {
    Nothing,
    /// Write what is pending now (a partition reached its end).
    FlushNow,
    Stop,
}

impl ConsumerLoop {
    pub(super) async fn run(&mut self) {
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
        let mut warm = std::mem::take(&mut self.warm);
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
                        warm.remove(&p),
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
        if let Some(due) = self.flush_due() {
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
                self.pending_events += batch.records();
                self.pending.push(batch);
                Received::Nothing
            }
            // From a fetcher we already stopped.
            Some(_) => Received::Nothing,
        }
    }

    /// When what is pending is written at the latest: `CK_BATCH_MS` after the last write
    /// began (at once when that is past, or before the first write); None with nothing
    /// pending.
    fn flush_due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(
            self.last_write
                .map_or_else(Instant::now, |w| w + self.config.batch_wait),
        )
    }

    fn write_due(&self, flush_now: bool) -> bool {
        let due = self.flush_due().is_some_and(|d| Instant::now() >= d);
        !self.pending.is_empty()
            && (flush_now || due || self.pending_events >= self.config.batch_events)
    }

    /// Write and commit what is pending. False when the process must stop now.
    async fn write(&mut self) -> bool {
        self.last_write = Some(Instant::now());
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
            (&self.topic, &self.shared.settings),
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
