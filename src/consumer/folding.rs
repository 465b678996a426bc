//! The rollup folder: every second, on a PostgreSQL connection of its own, it folds the
//! rollup deltas that writers committed into the rollup tables (`store::fold`), so the
//! status page is at most a few seconds behind the events.
//!
//! It never touches the writer's connection or transactions, and never blocks them: a
//! failed fold is logged and tried again; the deltas wait in their table meanwhile. While
//! the writer catches up (a backlog: a drain, a restart, the end of an outage) it folds
//! every 5 s instead: a fold updates each series' rows once however many deltas it takes,
//! so PostgreSQL's time goes to the writes, and the page trails the backlog anyway.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::store::{self, PostgresSettings};

/// Time between two folds.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// Time between two folds while the writer is behind. A fold in the middle of a
/// 200,000-event drain took ~0.25 s of PostgreSQL's time beside the writes; folding less
/// often while behind took a 1,000,000-event backlog from 5.26 to 5.12 s (medians of 3,
/// alternating binaries; the 200,000-event drain did not move).
const FOLD_EVERY_BEHIND: Duration = Duration::from_secs(5);

/// Behind: this many records in the topic not written yet (10 s of checks at 1,000 a
/// second; a consumer keeping up has a transaction's worth at most, ~200 ms of them).
const BEHIND_RECORDS: i64 = 10_000;

/// Most deltas in one fold (one per written transaction). They are read and merged one at
/// a time, so a fold's memory is its merge (one entry per series and hour) whatever this
/// is; a backlog (a drain, a restart) goes in few folds, each updating a series' rows
/// once: at 5, a 200,000-event drain over 1,000 URLs made 15 folds whose statements took
/// 40 % of PostgreSQL's time.
const FOLD_MOST: i64 = 50;

/// How often the series no vantage point has reported on for 30 days leave `site_status`
/// (a redeployed producer with a new name must not leave a card behind per deploy).
const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// How often the windows are moved to the current hour when nothing is folded.
const ALIGN_EVERY: Duration = Duration::from_secs(10);

/// Longest wait for PostgreSQL to connect, per attempt.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// How many records the writer is behind the topic now.
pub(crate) type Lag = Box<dyn Fn() -> i64 + Send>;

/// The running folder.
pub(crate) struct RollupFolder {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RollupFolder {
    /// Start folding into the database of `postgres`, less often while `lag` is long.
    pub(crate) fn start(postgres: PostgresSettings, lag: Lag) -> RollupFolder {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(postgres, lag, stopped));
        RollupFolder { stop, task }
    }

    /// Fold what is left (what this consumer wrote last, for `--drain`), for at most
    /// `within`, then stop; what is still there is folded by the next consumer to run.
    pub(crate) async fn finish(self, within: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
            log::warn!(
                "rollups: not all folded within {} s; the next consumer folds the rest",
                within.as_secs()
            );
        }
    }
}

async fn run(postgres: PostgresSettings, lag: Lag, mut stopped: oneshot::Receiver<()>) {
    // Connected now, so that the first fold (at the end of a short drain: the last thing
    // it waits for) does not wait for a connection too; a failure shows at the fold.
    let mut db = postgres.connect(CONNECT_WITHIN).await.ok();
    let mut failing = false;
    let mut next_forget = tokio::time::Instant::now();
    let mut next_align = tokio::time::Instant::now();
    let mut folded_at = tokio::time::Instant::now();
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(FOLD_EVERY) => false,
            _ = &mut stopped => true,
        };
        if !last && folded_at.elapsed() < FOLD_EVERY_BEHIND && lag() >= BEHIND_RECORDS {
            continue;
        }
        folded_at = tokio::time::Instant::now();
        // Fold until nothing is left: a backlog goes in folds of FOLD_MOST.
        loop {
            match fold_once(&postgres, &mut db).await {
                Ok(n) => {
                    if failing {
                        log::info!("rollups: folding again");
                        failing = false;
                    }
                    if n < FOLD_MOST as usize {
                        break;
                    }
                }
                Err(e) => {
                    if !failing {
                        log::warn!("rollups: fold failed ({e}); trying again every second");
                        failing = true;
                    }
                    db = None;
                    break;
                }
            }
        }
        if last {
            return;
        }
        // With nothing to fold (no events), the windows move with the clock all the same.
        if tokio::time::Instant::now() >= next_align {
            next_align = tokio::time::Instant::now() + ALIGN_EVERY;
            if let Some(client) = db.as_mut()
                && let Err(e) = store::align_windows(client).await
            {
                log::warn!("rollups: moving the windows failed ({e}); trying again");
            }
        }
        if tokio::time::Instant::now() >= next_forget
            && let Some(client) = db.as_ref()
        {
            next_forget = tokio::time::Instant::now() + FORGET_EVERY;
            match store::forget_quiet_series(client).await {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "rollups: {n} series without a check for 30 days left the status page"
                ),
                Err(e) => log::warn!("rollups: {e}"),
            }
        }
    }
}

async fn fold_once(
    postgres: &PostgresSettings,
    db: &mut Option<tokio_postgres::Client>,
) -> Result<usize, store::StoreError> {
    if db.as_ref().is_none_or(|c| c.is_closed()) {
        *db = Some(postgres.connect(CONNECT_WITHIN).await?);
    }
    match db {
        Some(client) => store::fold_rollups(client, FOLD_MOST).await,
        None => Ok(0),
    }
}
