//! The list of targets every vantage point shares (`CK_TARGETS_TOPIC`): a compacted Kafka
//! topic, key = the target's URL, value = its JSON entry (a `CK_TARGETS` entry, plus an
//! optional `"producers"`), an empty value (a tombstone) = removed.
//!
//! This module owns the topic: creating it compacted, reading it to its end, following
//! it ([`follow()`]), writing the changes between two lists ([`ListTopic::write`]), and
//! the list's metrics. It never judges an entry (the producer's `targets` module does)
//! and never checks a site.

mod follow;
mod topic;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

pub use follow::{ListSnapshot, follow};
pub use topic::ListTopic;

use crate::observe::exposition::{Counter, Exposition, Gauge, Kind};
use crate::observe::unix_ms;

/// One key of the topic as last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The entry's JSON; None: removed (a tombstone, or an empty value).
    pub entry: Option<Vec<u8>>,
    /// When it was written (the record's timestamp).
    pub at: DateTime<Utc>,
}

/// The list as the topic holds it, by URL. Removals stay as tombstones (until compaction
/// drops them), so that a reader can tell "removed" from "never listed".
pub type Entries = BTreeMap<String, Listed>;

/// The list's figures, the same in both programs (`checksite_<program>_targets_*`).
#[derive(Debug, Default)]
pub struct ListMetrics {
    in_force: Gauge,
    changes: Counter,
    last_change: Gauge,
    lag: Gauge,
    /// When Kafka last answered the follower (Unix ms; 0: never).
    last_read_ms: AtomicU64,
}

impl ListMetrics {
    /// A new list was put in force: `in_force` targets after `changes` changes.
    pub fn applied(&self, in_force: usize, changes: usize) {
        self.in_force.set(in_force as f64);
        if changes > 0 {
            self.changes.add(changes as u64);
            self.last_change.set(unix_ms() as f64 / 1000.0);
        }
    }

    /// The follower read the topic: `lag` records are still to read.
    pub(crate) fn read(&self, lag: i64) {
        self.lag.set(lag as f64);
        self.last_read_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// When Kafka last answered the follower (Unix ms; 0: never).
    pub fn last_read_ms(&self) -> u64 {
        self.last_read_ms.load(Ordering::Relaxed)
    }

    /// Changes applied since the start.
    pub fn changes_applied(&self) -> u64 {
        self.changes.get()
    }

    /// The families, named for `program` (`producer` or `consumer`).
    pub fn render(&self, e: &mut Exposition, program: &str) {
        let figures: [(&str, Kind, &str, f64); 4] = [
            (
                "targets_in_force",
                Kind::Gauge,
                "Targets in force (the producer: those it checks; the consumer: those listed).",
                self.in_force.get(),
            ),
            (
                "targets_changes_applied_total",
                Kind::Counter,
                "Targets added, changed or removed since the start.",
                self.changes.get() as f64,
            ),
            (
                "targets_last_change_applied_timestamp_seconds",
                Kind::Gauge,
                "When the latest change of the list was applied (Unix seconds; 0: none yet).",
                self.last_change.get(),
            ),
            (
                "targets_topic_lag_records",
                Kind::Gauge,
                "Records of the targets topic not read yet (CK_TARGETS_TOPIC).",
                self.lag.get(),
            ),
        ];
        for (name, kind, help, v) in figures {
            let name = format!("checksite_{program}_{name}");
            e.family(&name, kind, help);
            e.sample(&name, "", v);
        }
    }
}
