//! Each URL's name, group and visibility on the status page, as its latest check says
//! (the target's `name`, `group` and `public` where the producer is configured): kept in
//! `target_labels`, written by the writer after a transaction when they changed.
//!
//! This module owns what changed; it never decides what the page shows (that is
//! `status_page::shown`).

use chrono::{DateTime, Utc};

use super::store::Batch;
use crate::consumer::series_hash::SeriesMap;

/// A target's name, group and visibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Labels {
    pub(crate) name: Option<String>,
    pub(crate) group: Option<String>,
    /// False: never on the page, the badges or `/api/status`.
    pub(crate) public: bool,
}

impl Default for Labels {
    fn default() -> Labels {
        Labels {
            name: None,
            group: None,
            public: true,
        }
    }
}

/// One URL's labels as of a check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabelRow {
    pub(crate) url: String,
    pub(crate) labels: Labels,
    pub(crate) at: DateTime<Utc>,
}

/// The labels this writer wrote last, by URL: only changes are written.
#[derive(Debug, Default)]
pub(crate) struct KnownLabels(SeriesMap<String, (Labels, DateTime<Utc>)>);

impl KnownLabels {
    /// The URLs of `batches` whose newest check says other labels than those written.
    pub(crate) fn changes(&self, batches: &[Batch]) -> Vec<LabelRow> {
        let mut newest: SeriesMap<&str, (&Labels, DateTime<Utc>)> = SeriesMap::default();
        for e in batches.iter().flat_map(|b| &b.inputs) {
            let entry = newest.entry(&*e.url).or_insert((&e.labels, e.ts));
            if e.ts >= entry.1 {
                *entry = (&e.labels, e.ts);
            }
        }
        let mut rows: Vec<LabelRow> = newest
            .into_iter()
            // Unknown here (first seen since the start): written once, whatever they are,
            // so that a name taken away since is taken away here too.
            .filter(|(url, (labels, at))| {
                self.0
                    .get(*url)
                    .is_none_or(|(known, known_at)| *known != **labels && at >= known_at)
            })
            .map(|(url, (labels, at))| LabelRow {
                url: url.to_string(),
                labels: labels.clone(),
                at,
            })
            .collect();
        rows.sort_by(|a, b| a.url.cmp(&b.url));
        rows
    }

    /// `rows` were written.
    pub(crate) fn written(&mut self, rows: Vec<LabelRow>) {
        for r in rows {
            self.0.insert(r.url, (r.labels, r.at));
        }
    }

    /// Another writer may write them meanwhile (PostgreSQL was lost).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}
