//! What the page keeps between reads: every series' state (`site_status`) and windows
//! (`series_windows`), each read again only where it changed (`store::status`). The rows of a
//! series that left (forgotten after 30 days quiet, or gone from the windows when they
//! were built again) go at the next whole read: when the windows' hour or day turned, or
//! every [`WHOLE_EVERY`].
//!
//! This module owns what is kept and when it is stale. It never talks to PostgreSQL and
//! never computes a figure (that is `super::report`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::consumer::labels::Labels;
use crate::consumer::store::{SiteState, WindowRow};
use crate::consumer::windows::Alignment;

/// Everything is read again at least this often.
pub(crate) const WHOLE_EVERY: Duration = Duration::from_secs(600);

/// (url, producer)
pub(crate) type SeriesKey = (String, String);

/// The change number to read from for everything: rows not changed since the migration
/// that numbered them carry 0.
const EVERYTHING: i64 = -1;

/// The rows kept.
#[derive(Debug)]
pub(crate) struct PageData {
    pub(crate) states: HashMap<SeriesKey, SiteState>,
    pub(crate) windows: HashMap<SeriesKey, WindowRow>,
    /// Each URL's name, group and visibility (a URL without a row has none, and is shown).
    pub(crate) labels: HashMap<String, Labels>,
    /// The change number the next read starts from (`store::status`), the same for the
    /// states, labels, forgotten series and windows.
    pub(crate) changes_from: i64,
    /// Where the windows ended at the last read.
    pub(crate) alignment: Option<Alignment>,
    whole_at: Option<Instant>,
}

impl Default for PageData {
    fn default() -> PageData {
        PageData {
            states: HashMap::new(),
            windows: HashMap::new(),
            labels: HashMap::new(),
            changes_from: EVERYTHING,
            alignment: None,
            whole_at: None,
        }
    }
}

impl PageData {
    /// The change number to read from: [`EVERYTHING`] (the kept rows dropped) when a
    /// whole read is due.
    pub(crate) fn read_from(&mut self) -> i64 {
        if self.whole_at.is_none_or(|at| at.elapsed() >= WHOLE_EVERY) {
            self.forget();
        }
        self.changes_from
    }

    /// States and labels read (changed ones, or all of them), after the series
    /// `forgotten` since; the next read starts from `next_from`.
    pub(crate) fn keep_states(
        &mut self,
        states: Vec<SiteState>,
        (forgotten, labels): (&[SeriesKey], HashMap<String, Labels>),
        next_from: i64,
    ) {
        self.labels.extend(labels);
        if self.changes_from == EVERYTHING {
            self.whole_at = Some(Instant::now());
        }
        // Before the states: a series forgotten and back since has its new state read.
        for key in forgotten {
            self.states.remove(key);
            self.windows.remove(key);
        }
        for s in states {
            self.states.insert((s.url.clone(), s.producer.clone()), s);
        }
        self.changes_from = self.changes_from.max(next_from);
    }

    /// A window row read.
    pub(crate) fn keep_window(&mut self, w: WindowRow) {
        self.windows.insert((w.url.clone(), w.producer.clone()), w);
    }

    /// The windows read, ending at `alignment`. True when they moved since the last read:
    /// every row changed, and rows that left are still kept, so the caller reads
    /// everything again.
    pub(crate) fn windows_read(&mut self, alignment: Option<Alignment>) -> bool {
        let moved = self.alignment.is_some() && alignment != self.alignment;
        self.alignment = alignment;
        if moved {
            self.forget();
        }
        moved
    }

    /// Everything is read again next time.
    pub(crate) fn forget(&mut self) {
        self.states.clear();
        self.labels.clear();
        self.windows.clear();
        self.changes_from = EVERYTHING;
        self.alignment = None;
        self.whole_at = None;
    }
}
