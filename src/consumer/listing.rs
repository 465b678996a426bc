//! The consumer's side of the targets list (`CK_TARGETS_TOPIC`): it follows the topic,
//! keeps the list in PostgreSQL (`listed_targets`: the status page shows a listed URL
//! never checked as waiting), and when a URL is removed, cleans its state once (its open
//! incident closes with a `removed` notification, its series leave the page). Checks of
//! a removed URL made before its removal (or in the minute after, while vantage points
//! learn of it) and read after are kept in the rollups, and left out of its state and
//! alerts.
//!
//! Done by the writer between its transactions, for the URLs of the partitions it holds:
//! a URL's state is only ever written by the consumer holding its partition. This module
//! never decides an alert itself (that is `alert::decide`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::store::{self, Batch, ListChange, StoreError};
use crate::consumer::series_hash::SeriesMap;
use crate::kafka::KafkaSettings;
use crate::shutdown::Shutdown;
use crate::target_list::{Entries, ListMetrics, ListSnapshot};

/// Removed URLs not cleaned yet are looked for this often (another consumer's partition
/// may become this one's).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long after a removal a vantage point may still check the URL (it reads the list
/// on its own, and may be slow or briefly cut off): those checks would bring the removed
/// series back. A check later than that (a producer with the URL in its own `CK_TARGETS`)
/// is news again.
pub(crate) const REMOVAL_SETTLES: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Old removals and forgotten series are pruned this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The list as the writer follows it.
pub(crate) struct Listing {
    listed: watch::Receiver<ListSnapshot>,
    /// The list last kept in PostgreSQL; None before the first time.
    kept: Option<Arc<Entries>>,
    /// URL → when it was removed: its checks from before then are old news.
    removed: SeriesMap<String, DateTime<Utc>>,
    next_sweep: Instant,
    next_prune: Instant,
    metrics: Arc<ListMetrics>,
}

impl Listing {
    /// Follow `topic` (on its own task, until `shutdown`).
    pub(crate) fn start(
        kafka: KafkaSettings,
        topic: String,
        metrics: Arc<ListMetrics>,
        shutdown: Shutdown,
    ) -> Listing {
        let (tx, listed) = watch::channel(ListSnapshot::default());
        tokio::spawn(crate::target_list::follow(
            kafka,
            topic,
            tx,
            metrics.clone(),
            shutdown,
        ));
        Listing {
            listed,
            kept: None,
            removed: SeriesMap::default(),
            next_sweep: Instant::now(),
            next_prune: Instant::now(),
            metrics,
        }
    }

    /// The removals kept in PostgreSQL (at start, and after PostgreSQL was lost).
    pub(crate) async fn load(&mut self, db: &tokio_postgres::Client) -> Result<(), StoreError> {
        self.removed = store::removals(db).await?.into_iter().collect();
        self.kept = None;
        Ok(())
    }

    /// Mark the batches' checks made before their URL's removal, or within
    /// [`REMOVAL_SETTLES`] after it.
    pub(crate) fn mark(&self, batches: &mut [Batch]) {
        if self.removed.is_empty() {
            return;
        }
        for input in batches.iter_mut().flat_map(|b| b.inputs.iter_mut()) {
            if let Some(at) = self.removed.get(&*input.url) {
                input.removed = input.ts < *at + REMOVAL_SETTLES;
            }
        }
    }

    /// Keep the list's changes, then (every [`SWEEP_EVERY`], or at once after a removal)
    /// clean the removed URLs `owns` says are this consumer's. Returns the URLs cleaned
    /// (the writer forgets their alert states) and the notifications made.
    pub(crate) async fn sync(
        &mut self,
        db: &mut tokio_postgres::Client,
        owns: impl Fn(&str) -> bool,
    ) -> Result<(Vec<String>, usize), StoreError> {
        let snapshot = self.listed.borrow().clone();
        let fresh = !self
            .kept
            .as_ref()
            .is_some_and(|k| Arc::ptr_eq(k, &snapshot.entries));
        if snapshot.loaded && fresh {
            self.keep(db, &snapshot.entries).await?;
        }
        if Instant::now() >= self.next_prune {
            self.next_prune = Instant::now() + PRUNE_EVERY;
            store::prune_listing(db).await?;
        }
        if Instant::now() < self.next_sweep {
            return Ok((Vec::new(), 0));
        }
        self.next_sweep = Instant::now() + SWEEP_EVERY;
        let mine: Vec<String> = store::not_cleaned(db)
            .await?
            .into_iter()
            .filter(|u| owns(u))
            .collect();
        let (cleaned, notifications) = store::clean_removed(db, &mine).await?;
        if !cleaned.is_empty() {
            log::info!(
                "targets list: {} removed target(s) forgotten, {notifications} incident(s) closed",
                cleaned.len()
            );
        }
        Ok((cleaned, notifications))
    }

    /// Keep what changed in the list since it was last kept.
    async fn keep(
        &mut self,
        db: &mut tokio_postgres::Client,
        entries: &Arc<Entries>,
    ) -> Result<(), StoreError> {
        let first = self.kept.is_none();
        let before = self.kept.clone().unwrap_or_default();
        let changes: Vec<ListChange> = entries
            .iter()
            .filter(|(url, l)| before.get(*url) != Some(l))
            .map(|(url, l)| ListChange {
                url: url.clone(),
                listed: l.entry.is_some(),
                entry: l
                    .entry
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok()),
                at: l.at,
            })
            .collect();
        let listed: Vec<&str> = entries
            .iter()
            .filter(|(_, l)| l.entry.is_some())
            .map(|(u, _)| u.as_str())
            .collect();
        store::keep_changes(db, &changes, first.then_some(&listed[..])).await?;
        if first {
            self.removed = store::removals(db).await?.into_iter().collect();
        }
        for c in &changes {
            if c.listed {
                self.removed.remove(&c.url);
            } else {
                self.removed.insert(c.url.clone(), c.at);
                // Cleaned at once, not at the next sweep.
                self.next_sweep = Instant::now();
            }
        }
        self.metrics
            .applied(listed.len(), if first { 0 } else { changes.len() });
        self.kept = Some(entries.clone());
        Ok(())
    }
}
