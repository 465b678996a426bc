//! Maintenance windows: "shop.example is being upgraded from 02:00 to 02:30". In a window
//! a URL's checks are stored as always, counted apart in the rollups (uptime leaves them
//! out), and decide no alert; the first check after the window decides what the state
//! then is. Windows live in PostgreSQL (`checksite-consumer maintenance add|list|end`,
//! [`cli`]), so every consumer of a topic applies them within `RELOAD_EVERY`.
//!
//! This module owns which checks are in a window (the `Calendar` marks them before the
//! write). It never decides an alert itself (that is `alert::decide`, which skips what
//! is marked).

pub mod cli;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::store::{self, Batch, MaintenanceWindow, StoreError};
use crate::consumer::series_hash::SeriesMap;

/// Windows are read again this often: a window added (or ended) applies within it.
pub(crate) const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Checks read this late still find their window: windows that ended this long ago are kept.
const LATE_CHECKS: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The windows the writer knows, and which URLs match their patterns.
#[derive(Debug, Default)]
pub(crate) struct Calendar {
    windows: Vec<MaintenanceWindow>,
    next_load: Option<Instant>,
    /// Per window with a pattern: the URLs asked about, and whether they match.
    matched: HashMap<i64, SeriesMap<String, bool>>,
}

impl Calendar {
    /// Mark the batches' checks made in a window of their URL.
    pub(crate) async fn mark(
        &mut self,
        db: &tokio_postgres::Client,
        batches: &mut [Batch],
    ) -> Result<(), StoreError> {
        if self.next_load.is_none_or(|at| Instant::now() >= at) {
            self.windows = store::windows_after(db, chrono::Utc::now() - LATE_CHECKS).await?;
            let ids: HashSet<i64> = self.windows.iter().map(|w| w.id).collect();
            self.matched.retain(|id, _| ids.contains(id));
            self.next_load = Some(Instant::now() + RELOAD_EVERY);
        }
        if self.windows.is_empty() {
            return Ok(());
        }
        self.ask_patterns(db, batches).await?;
        for input in batches.iter_mut().flat_map(|b| b.inputs.iter_mut()) {
            input.maintenance = self.windows.iter().any(|w| {
                w.covers(input.ts)
                    && (w.every_url
                        || w.urls.iter().any(|u| **u == *input.url)
                        || self
                            .matched
                            .get(&w.id)
                            .and_then(|m| m.get(&*input.url))
                            .copied()
                            .unwrap_or(false))
            });
        }
        Ok(())
    }

    /// Ask PostgreSQL which URLs of the batches, not asked about yet, match each pattern.
    async fn ask_patterns(
        &mut self,
        db: &tokio_postgres::Client,
        batches: &[Batch],
    ) -> Result<(), StoreError> {
        for w in &self.windows {
            let Some(pattern) = &w.pattern else { continue };
            let known = self.matched.entry(w.id).or_default();
            let unknown: Vec<&str> = batches
                .iter()
                .flat_map(|b| &b.inputs)
                .map(|e| &*e.url)
                .filter(|u| !known.contains_key(*u))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            if unknown.is_empty() {
                continue;
            }
            let yes: HashSet<String> = store::matching(db, pattern, &unknown)
                .await?
                .into_iter()
                .collect();
            for url in unknown {
                known.insert(url.to_string(), yes.contains(url));
            }
        }
        Ok(())
    }

    /// Read the windows again at the next write (PostgreSQL came back).
    pub(crate) fn forget(&mut self) {
        self.next_load = None;
    }
}
