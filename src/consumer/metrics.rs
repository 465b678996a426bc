//! The consumer's metrics and health, for `CK_HTTP_ADDR`.
//!
//! `checksite_consumer_*`: events written, already stored, rejected by kind; per partition
//! held, the committed offset, the log end, the lag and when Kafka last answered a fetch;
//! leases; transactions, their duration and rows; the rollup folds' duration; the time of
//! the last commit; alert notifications decided and delivery attempts by outcome.
//! Readiness: PostgreSQL answers and a lease round is done (a consumer holding no
//! partition because others hold them all is a ready standby).
//!
//! Updates are atomics or a short lock, made where the work happens; rendering happens
//! only when scraped. This module never touches Kafka or PostgreSQL itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::record::RejectKind;
use crate::observe::exposition::{Counter, Exposition, Gauge, Histogram, Kind, labels};
use crate::observe::{Endpoints, Liveness, unix_ms};

/// Seconds: transaction durations, 1 ms to 60 s (the bound of one transaction).
static SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Records per transaction, 1 to the largest `CK_BATCH_EVENTS`.
static ROWS: [f64; 11] = [
    1.0,
    10.0,
    100.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    25_000.0,
    100_000.0,
    1_000_000.0,
];

/// One partition this consumer holds.
#[derive(Debug, Default, Clone)]
struct PartitionState {
    /// The next offset to consume, as committed in `kafka_offsets`.
    committed: Option<i64>,
    /// The partition's end for a committed read at the latest fetch.
    log_end: Option<i64>,
    /// When Kafka last answered a fetch of it, Unix ms: a fetch waits 5 s at most for
    /// records, so a consumer whose Kafka answers moves this every few seconds, idle or not.
    last_fetch_ms: Option<u64>,
    /// Why its fetches fail or go unanswered now (said by `/readyz`); None while Kafka
    /// answers them.
    kafka_failing: Option<String>,
}

/// Everything the consumer counts, and its health.
#[derive(Debug)]
pub struct ConsumerMetrics {
    topic_label: String,
    written: Counter,
    already_stored: Counter,
    rejected: [Counter; RejectKind::ALL.len()],
    /// Only the partitions held now: a consumer reports its own share.
    partitions: Mutex<BTreeMap<i32, PartitionState>>,
    committed_tx: Counter,
    failed_tx: Counter,
    tx_seconds: Histogram,
    tx_records: Histogram,
    /// Time of the rollup folds that folded something (their cost grows with the series).
    fold_seconds: Histogram,
    last_commit: Gauge,
    alerts_decided: Counter,
    /// Delivery attempts per receiver: delivered, failed (retried), gave up.
    alert_attempts: Mutex<BTreeMap<String, [u64; 3]>>,
    /// Why the consumer cannot do its job now (starting, or PostgreSQL cannot be used);
    /// None once PostgreSQL answers.
    not_ready: Mutex<Option<String>>,
    lease_round_done: AtomicBool,
    /// The consumer's loops, for `/healthz`.
    pub liveness: Liveness,
    /// The targets list's figures (`CK_TARGETS_TOPIC`).
    pub list: Arc<crate::target_list::ListMetrics>,
}

impl ConsumerMetrics {
    /// Metrics of a consumer of `topic`.
    pub fn new(topic: &str) -> ConsumerMetrics {
        ConsumerMetrics {
            topic_label: labels(&[("topic", topic)]),
            written: Counter::default(),
            already_stored: Counter::default(),
            rejected: Default::default(),
            partitions: Mutex::default(),
            committed_tx: Counter::default(),
            failed_tx: Counter::default(),
            tx_seconds: Histogram::new(&SECONDS),
            fold_seconds: Histogram::new(&SECONDS),
            tx_records: Histogram::new(&ROWS),
            last_commit: Gauge::default(),
            alerts_decided: Counter::default(),
            alert_attempts: Mutex::default(),
            not_ready: Mutex::new(Some("starting: connecting to Kafka and PostgreSQL".into())),
            lease_round_done: AtomicBool::new(false),
            liveness: Liveness::default(),
            list: Default::default(),
        }
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, PartitionState>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transaction committed: `records` in it, `written` rows added, `already_stored`
    /// absorbed, `rejected` kept aside; each `(partition, next offset)` committed.
    pub(crate) fn committed(
        &self,
        took: Duration,
        records: usize,
        counts: (u64, u64, &[RejectKind]),
        offsets: impl Iterator<Item = (i32, i64)>,
    ) {
        let (written, already_stored, rejected) = counts;
        self.committed_tx.add(1);
        self.tx_seconds.observe(took.as_secs_f64());
        self.tx_records.observe(records as f64);
        self.written.add(written);
        self.already_stored.add(already_stored);
        for kind in rejected {
            if let Some(i) = RejectKind::ALL.iter().position(|k| k == kind) {
                self.rejected[i].add(1);
            }
        }
        let mut held = self.partitions();
        for (partition, next) in offsets {
            if let Some(p) = held.get_mut(&partition) {
                p.committed = Some(p.committed.map_or(next, |c| c.max(next)));
            }
        }
        drop(held);
        self.last_commit.set(unix_ms() as f64 / 1000.0);
    }

    /// A fold of the rollup deltas that folded something took `took`.
    pub(crate) fn folded(&self, took: Duration) {
        self.fold_seconds.observe(took.as_secs_f64());
    }

    /// A transaction failed (and rolled back).
    pub(crate) fn transaction_failed(&self) {
        self.failed_tx.add(1);
    }

    /// The partitions held now, with their committed offsets where known.
    pub(crate) fn holding(&self, held: impl Iterator<Item = (i32, Option<i64>)>) {
        let mut partitions = self.partitions();
        let before = std::mem::take(&mut *partitions);
        for (p, committed) in held {
            let mut state = before.get(&p).cloned().unwrap_or_default();
            if committed.is_some() {
                state.committed = committed;
            }
            partitions.insert(p, state);
        }
    }

    /// The partitions held whose committed offset has reached the log end their last fetch
    /// saw: every event of them fetched so far is written.
    pub(crate) fn caught_up(&self) -> Vec<i32> {
        self.partitions()
            .iter()
            .filter(|(_, s)| matches!((s.committed, s.log_end), (Some(c), Some(end)) if c >= end))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Records in the held partitions' logs, as their last fetches saw them, not yet
    /// committed: how far behind the topic the writer is (partitions without both figures
    /// yet count nothing).
    pub(crate) fn lag(&self) -> i64 {
        self.partitions()
            .values()
            .filter_map(|s| Some((s.log_end? - s.committed?).max(0)))
            .sum()
    }

    /// A fetch of `partition` was answered; a committed read ends at `end` (last stable offset).
    pub(crate) fn log_end(&self, partition: i32, end: i64) {
        if let Some(p) = self.partitions().get_mut(&partition) {
            p.log_end = Some(end);
            p.last_fetch_ms = Some(unix_ms());
            p.kafka_failing = None;
        }
    }

    /// Fetches of `partition` fail or go unanswered, for `why` (until the next answer).
    pub(crate) fn kafka_failing(&self, partition: i32, why: String) {
        if let Some(p) = self.partitions().get_mut(&partition) {
            p.kafka_failing = Some(why);
        }
    }

    /// A lease round succeeded: PostgreSQL answers, and this consumer holds its share.
    pub(crate) fn lease_round_done(&self) {
        self.lease_round_done.store(true, Ordering::Relaxed);
        *self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Start-up is waiting for `what` (said in `/readyz`).
    pub(crate) fn starting(&self, what: &str) {
        *self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("starting: {what}"));
    }

    /// PostgreSQL cannot be used (every lease went with the session).
    pub(crate) fn postgres_failed(&self, why: &str) {
        self.lease_round_done.store(false, Ordering::Relaxed);
        self.partitions().clear();
        *self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("PostgreSQL: {why}"));
    }

    /// A committed transaction decided `n` alert notifications.
    pub(crate) fn alerts_decided(&self, n: usize) {
        self.alerts_decided.add(n as u64);
    }

    /// A delivery attempt ended: 0 delivered, 1 failed (retried later), 2 given up.
    pub(crate) fn alert_attempt(&self, receiver: &str, outcome: usize) {
        let mut attempts = self
            .alert_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = attempts
            .entry(receiver.to_string())
            .or_default()
            .get_mut(outcome)
        {
            *c += 1;
        }
    }

    /// The text of a scrape.
    pub fn render(&self) -> String {
        let mut e = Exposition::with_capacity(8 * 1024);
        let topic = &self.topic_label;
        let counts: [(&str, &str, u64); 2] = [
            (
                "checksite_consumer_events_written_total",
                "Events stored in the events table.",
                self.written.get(),
            ),
            (
                "checksite_consumer_events_already_stored_total",
                "Events found already stored and not stored again (producer retries, records the Python consumer stored): the duplicates the checked path absorbed.",
                self.already_stored.get(),
            ),
        ];
        for (name, help, v) in counts {
            e.family(name, Kind::Counter, help);
            e.sample(name, topic, v as f64);
        }
        let name = "checksite_consumer_events_rejected_total";
        e.family(
            name,
            Kind::Counter,
            "Records kept in rejected_events instead of stored, by kind.",
        );
        for (kind, count) in RejectKind::ALL.iter().zip(&self.rejected) {
            e.sample(
                name,
                &format!("{topic},kind=\"{}\"", kind.as_str()),
                count.get() as f64,
            );
        }
        self.render_partitions(&mut e);
        self.render_transactions(&mut e);
        self.render_alerts(&mut e);
        self.list.render(&mut e, "consumer");
        e.finish()
    }

    /// Transactions by outcome, their time and records, the folds' time, the last commit.
    fn render_transactions(&self, e: &mut Exposition) {
        let topic = &self.topic_label;
        let name = "checksite_consumer_transactions_total";
        e.family(
            name,
            Kind::Counter,
            "Transactions, by outcome (committed, failed: rolled back).",
        );
        e.sample(
            name,
            &format!("{topic},outcome=\"committed\""),
            self.committed_tx.get() as f64,
        );
        e.sample(
            name,
            &format!("{topic},outcome=\"failed\""),
            self.failed_tx.get() as f64,
        );
        let histograms = [
            (
                "checksite_consumer_transaction_duration_seconds",
                "Time of committed transactions, seconds.",
                &self.tx_seconds,
            ),
            (
                "checksite_consumer_transaction_records",
                "Records (stored, already stored and rejected) per committed transaction.",
                &self.tx_records,
            ),
            (
                "checksite_consumer_rollup_fold_duration_seconds",
                "Time of the rollup folds that folded something, seconds (each updates every series it brings once: it grows with the series).",
                &self.fold_seconds,
            ),
        ];
        for (name, help, h) in histograms {
            e.family(name, Kind::Histogram, help);
            e.histogram(name, topic, h);
        }
        let name = "checksite_consumer_last_commit_timestamp_seconds";
        e.family(
            name,
            Kind::Gauge,
            "When the last transaction committed, Unix seconds; 0 before the first.",
        );
        e.sample(name, topic, self.last_commit.get());
    }

    fn render_alerts(&self, e: &mut Exposition) {
        let topic = &self.topic_label;
        let name = "checksite_consumer_alerts_decided_total";
        e.family(
            name,
            Kind::Counter,
            "Alert notifications decided (down, up, cert_expiring) and put in the outbox.",
        );
        e.sample(name, topic, self.alerts_decided.get() as f64);
        let name = "checksite_consumer_alert_deliveries_total";
        e.family(
            name,
            Kind::Counter,
            "Delivery attempts by this consumer, by receiver (its name, never its URL) and outcome (delivered, failed: retried later, gave_up).",
        );
        let attempts = self
            .alert_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (receiver, counts) in &attempts {
            for (outcome, c) in ["delivered", "failed", "gave_up"].iter().zip(counts) {
                let l = labels(&[("receiver", receiver), ("outcome", outcome)]);
                e.sample(name, &format!("{topic},{l}"), *c as f64);
            }
        }
    }

    fn render_partitions(&self, e: &mut Exposition) {
        let held = self.partitions().clone();
        let topic = &self.topic_label;
        let name = "checksite_consumer_leases_held";
        e.family(name, Kind::Gauge, "Partitions this consumer holds.");
        e.sample(name, topic, held.len() as f64);
        type Value = fn(&PartitionState) -> Option<i64>;
        let series: [(&str, &str, Value); 3] = [
            (
                "checksite_consumer_committed_offset",
                "The next offset to consume, as committed with the rows.",
                |p| p.committed,
            ),
            (
                "checksite_consumer_log_end_offset",
                "The partition's end for a read of committed records (last stable offset) at the latest fetch.",
                |p| p.log_end,
            ),
            (
                "checksite_consumer_lag",
                "Records in the log not yet committed: log end minus committed offset.",
                |p| Some((p.log_end? - p.committed?).max(0)),
            ),
        ];
        for (name, help, value) in series {
            e.family(name, Kind::Gauge, help);
            for (partition, state) in &held {
                if let Some(v) = value(state) {
                    e.sample(
                        name,
                        &format!("{topic},partition=\"{partition}\""),
                        v as f64,
                    );
                }
            }
        }
        let name = "checksite_consumer_last_fetch_timestamp_seconds";
        e.family(
            name,
            Kind::Gauge,
            "When Kafka last answered a fetch of the partition, Unix seconds (every few seconds while Kafka answers, idle or not).",
        );
        for (partition, state) in &held {
            if let Some(ms) = state.last_fetch_ms {
                e.sample(
                    name,
                    &format!("{topic},partition=\"{partition}\""),
                    ms as f64 / 1000.0,
                );
            }
        }
    }

    /// Ok when PostgreSQL answers, a lease round is done, and Kafka answers the fetches
    /// of every partition held.
    pub fn ready(&self) -> Result<(), String> {
        if let Some(why) = &*self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(why.clone());
        }
        if !self.lease_round_done.load(Ordering::Relaxed) {
            return Err("no partition lease taken yet".into());
        }
        let held = self.partitions();
        let mut failing = held
            .iter()
            .filter_map(|(n, p)| Some((n, p.kafka_failing.as_deref()?)));
        if let Some((first, why)) = failing.next() {
            let others = failing.count();
            let more = match others {
                0 => String::new(),
                n => format!(" (and {n} more partition(s))"),
            };
            return Err(format!("Kafka: partition {first}: {why}{more}"));
        }
        Ok(())
    }
}

impl Endpoints for ConsumerMetrics {
    fn metrics(&self) -> String {
        self.render()
    }
    fn live(&self) -> Result<(), String> {
        self.liveness.check()
    }
    fn ready(&self) -> Result<(), String> {
        ConsumerMetrics::ready(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_while_kafka_fails_a_held_partitions_fetches() {
        let m = ConsumerMetrics::new("t");
        m.lease_round_done();
        m.holding([(0, Some(1)), (3, Some(1))].into_iter());
        assert_eq!(m.ready(), Ok(()));
        m.kafka_failing(3, "Kafka has not answered a fetch for 10 s".into());
        let why = m.ready().unwrap_err();
        assert_eq!(
            why,
            "Kafka: partition 3: Kafka has not answered a fetch for 10 s"
        );
        m.kafka_failing(0, "fetch: connection refused".into());
        assert!(m.ready().unwrap_err().contains("(and 1 more partition(s))"));
        // Answered again: ready; a partition let go takes its failure with it.
        m.log_end(3, 5);
        assert!(m.ready().unwrap_err().contains("partition 0"));
        m.holding([(3, None)].into_iter());
        assert_eq!(m.ready(), Ok(()));
    }

    #[test]
    fn lag_sums_what_each_held_partition_has_not_committed() {
        let m = ConsumerMetrics::new("t");
        m.holding([(0, Some(100)), (1, None), (2, Some(5))].into_iter());
        assert_eq!(
            m.lag(),
            0,
            "no log end seen yet: nothing known to be behind"
        );
        m.log_end(0, 150);
        m.log_end(1, 1_000); // never committed: its lag is not known
        m.log_end(2, 3); // a stale log end under the committed offset counts 0
        m.log_end(7, 9_999); // not held
        assert_eq!(m.lag(), 50);
        m.committed(
            Duration::ZERO,
            40,
            (40, 0, &[]),
            [(0, 140), (1, 10)].into_iter(),
        );
        assert_eq!(m.lag(), 10 + 990);
        m.holding([(1, None)].into_iter());
        assert_eq!(m.lag(), 990, "a partition given up no longer counts");
    }
}
