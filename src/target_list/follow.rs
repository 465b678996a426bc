//! Following the targets topic: read it to its end, hand the list on, then every change
//! within about [`POLL_WAIT`]. While Kafka is away the last list stays in force; once it
//! is back the topic is read again from its start (a compacted topic is small).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Entries, ListMetrics, ListTopic};
use crate::kafka::{KafkaError, KafkaSettings};
use crate::shutdown::Shutdown;

/// Longest wait for a change in one fetch: a change is seen within about this long.
const POLL_WAIT: Duration = Duration::from_millis(500);
/// How often a missing topic is looked for (one metadata request).
const NO_TOPIC_RECHECK: Duration = Duration::from_secs(2);
/// Longest pause between two attempts to reach Kafka.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What followers see of the list.
#[derive(Debug, Clone, Default)]
pub struct ListSnapshot {
    /// The list as of the last read.
    pub entries: Arc<Entries>,
    /// False until the topic was read to its end once: an empty list then means
    /// "not known yet", not "nothing to check".
    pub loaded: bool,
}

/// Follow `topic` until `shutdown`, sending each new list on `tx`.
pub async fn follow(
    settings: KafkaSettings,
    topic: String,
    tx: watch::Sender<ListSnapshot>,
    metrics: Arc<ListMetrics>,
    mut shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(500);
    let mut failing: Option<String> = None;
    while !shutdown.is_requested() {
        let error = tokio::select! {
            e = follow_once(&settings, &topic, &tx, &metrics, &mut failing) => e,
            _ = shutdown.requested() => return,
        };
        let said = error.to_string();
        if failing.as_deref() != Some(said.as_str()) {
            match &error {
                KafkaError::NoTopic { .. } => log::warn!(
                    "targets topic {topic:?} does not exist yet: `checksite-producer targets put FILE` creates it; looking again every {} s",
                    NO_TOPIC_RECHECK.as_secs()
                ),
                _ => log::warn!(
                    "targets topic {topic:?}: {said}; the current list stays in force, retrying"
                ),
            }
            failing = Some(said);
        }
        // A missing topic is looked for again soon: the first `targets put` applies at once.
        if matches!(error, KafkaError::NoTopic { .. }) {
            backoff = NO_TOPIC_RECHECK / 2;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.requested() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Read the topic from its start and follow it until an error, which is returned.
async fn follow_once(
    settings: &KafkaSettings,
    topic: &str,
    tx: &watch::Sender<ListSnapshot>,
    metrics: &ListMetrics,
    failing: &mut Option<String>,
) -> KafkaError {
    let mut list_topic = match ListTopic::open(settings, topic, None).await {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut list = Entries::new();
    if let Err(e) = list_topic.read_to_end(&mut list).await {
        return e;
    }
    if failing.take().is_some() {
        log::info!(
            "targets topic {topic:?}: read again, {} entries",
            list.len()
        );
    }
    metrics.read(list_topic.lag());
    let entries = Arc::new(list.clone());
    tx.send_if_modified(|s| {
        let modified = !s.loaded || s.entries != entries;
        *s = ListSnapshot {
            entries,
            loaded: true,
        };
        modified
    });
    loop {
        match list_topic.poll(&mut list, POLL_WAIT).await {
            Ok(changed) => {
                metrics.read(list_topic.lag());
                if !changed.is_empty() {
                    tx.send_replace(ListSnapshot {
                        entries: Arc::new(list.clone()),
                        loaded: true,
                    });
                }
            }
            Err(e) => return e,
        }
    }
}
