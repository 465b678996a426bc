//! The rollup folder: every second, on a thread and a PostgreSQL connection of its own, it
//! folds the rollup deltas that writers committed into the rollup tables (`store::fold`),
//! so the status page is at most a few seconds behind the events.
//!
//! It never touches the writer's connection or transactions, and never blocks them: a
//! failed fold is logged and tried again; the deltas wait in their table meanwhile. While
//! the writer catches up (a backlog: a drain, a restart, the end of an outage) it folds
//! every 5 s instead, reading the deltas ahead in between: a fold updates each series'
//! rows once however many deltas it takes, so PostgreSQL's time goes to the writes, and
//! the page trails the backlog anyway. When a fold takes longer than a quarter of a second
//! (many series: ~2 s at 10,000 targets), folds spread out so that they take at most a
//! quarter of the time ([`FOLD_SHARE`]), reading ahead in between, and the page trails by
//! as much.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::store::{self, PostgresSettings, ReadAhead};

/// Time between two folds.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// A fold's share of the time at most: the next fold waits this many times as long as the
/// last one took, when that is longer than [`FOLD_EVERY`]. A fold updates each series' rows
/// once however many checks it brings, so at 10,000 targets at 1 s, folding every second
/// kept one PostgreSQL core busy (folds of ~2.1 s back to back, 8 times the events' own
/// COPY); at a quarter, each series' rows are updated every ~8 s, for the same 2.1 s.
const FOLD_SHARE: u32 = 4;

/// Time between two folds while the writer is behind. A fold in the middle of a
/// 200,000-event drain took ~0.25 s of PostgreSQL's time beside the writes; folding less
/// often while behind took a 1,000,000-event backlog from 5.26 to 5.12 s (medians of 3,
/// alternating binaries; the 200,000-event drain did not move).
const FOLD_EVERY_BEHIND: Duration = Duration::from_secs(5);

/// Time between two reads of the committed deltas while the writer is behind (between
/// its folds): read and merged ahead, they leave the fold at the end of a backlog only the
/// last one to read. At 250 ms, a 200,000-event drain's last fold still read and merged 3
/// or 4 deltas (13 ms before its first statement could go out); a read with nothing new is
/// one short SELECT.
const READ_AHEAD_EVERY: Duration = Duration::from_millis(50);

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

/// Told how long each fold that folded something took (the metrics).
pub(crate) type FoldTimer = Box<dyn Fn(Duration) + Send>;

/// The running folder, on a thread of its own: a fold's CPU (reading and merging the
/// deltas, building its statements' arrays) never delays the writer, whose thread would
/// otherwise wait for it (in a 200,000-event drain, ~40 ms of merging while the writer
/// had transactions to send).
pub(crate) struct RollupFolder {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// Dropped with the folder: its thread then ends.
    _thread: oneshot::Sender<()>,
}

impl RollupFolder {
    /// Start folding into the database of `postgres`, less often while `lag` is long.
    pub(crate) fn start(
        postgres: PostgresSettings,
        (lag, timer): (Lag, FoldTimer),
    ) -> std::io::Result<RollupFolder> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(run(postgres, (lag, timer), stopped));
        let (thread, thread_ends) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("rollups".into())
            .spawn(move || {
                let _blocks = crate::memory::ThreadBlockCache::start();
                let _ = runtime.block_on(thread_ends);
                // Its connection's driver runs here: kept turning until it said goodbye.
                runtime.block_on(store::connections_closed());
            })?;
        Ok(RollupFolder {
            stop,
            task,
            _thread: thread,
        })
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

async fn run(
    postgres: PostgresSettings,
    (lag, timer): (Lag, FoldTimer),
    mut stopped: oneshot::Receiver<()>,
) {
    // Connected now, so that the first fold (at the end of a short drain: the last thing
    // it waits for) does not wait for a connection too; a failure shows at the fold.
    let mut db = postgres.connect(CONNECT_WITHIN).await.ok();
    // Aligned before the first fold, which then adds to the windows rather than building
    // them from the tables (a fresh database's, at the end of a drain: 28 ms of 170).
    align(&mut db).await;
    let mut failing = false;
    let mut ahead = ReadAhead::default();
    let mut next_forget = tokio::time::Instant::now();
    let mut next_align = tokio::time::Instant::now() + ALIGN_EVERY;
    let mut folded_at = tokio::time::Instant::now();
    let mut fold_took = Duration::ZERO;
    loop {
        // Woken for the next fold, or every READ_AHEAD_EVERY to read ahead while folds are
        // apart (and to notice a backlog soon after the start, when the lag is not known yet).
        let every = |behind: bool| fold_interval(behind, fold_took);
        let due = folded_at + every(lag() >= BEHIND_RECORDS);
        let wake = due.min(tokio::time::Instant::now() + READ_AHEAD_EVERY);
        let last = tokio::select! {
            _ = tokio::time::sleep_until(wake) => false,
            _ = &mut stopped => true,
        };
        let behind = lag() >= BEHIND_RECORDS;
        if !last && folded_at.elapsed() < every(behind) {
            if every(behind) > FOLD_EVERY
                && let Some(client) = db.as_ref()
                && store::read_ahead(client, &mut ahead, FOLD_MOST)
                    .await
                    .is_err()
            {
                db = None; // said by the fold, which connects again
            }
            continue;
        }
        folded_at = tokio::time::Instant::now();
        let folded = fold_all(&postgres, &mut db, &mut ahead, &mut failing).await;
        let took = folded_at.elapsed();
        if folded > 0 {
            timer(took);
        }
        if last {
            return;
        }
        say_when_spread(fold_took, took);
        fold_took = took;
        // With nothing to fold (no events), the windows move with the clock all the same.
        if tokio::time::Instant::now() >= next_align {
            next_align = tokio::time::Instant::now() + ALIGN_EVERY;
            align(&mut db).await;
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

/// Time from one fold's start to the next: [`FOLD_EVERY`] ([`FOLD_EVERY_BEHIND`] while the
/// writer is behind), or [`FOLD_SHARE`] times as long as the last fold took.
fn fold_interval(behind: bool, last_took: Duration) -> Duration {
    let every = if behind {
        FOLD_EVERY_BEHIND
    } else {
        FOLD_EVERY
    };
    every.max(last_took * FOLD_SHARE)
}

/// Say when folds spread out (the last took `took`, the one before `before`: the page
/// trails by as much) and when they come every second again.
fn say_when_spread(before: Duration, took: Duration) {
    let spread = |t: Duration| t * FOLD_SHARE > FOLD_EVERY;
    if spread(took) && !spread(before) {
        log::info!(
            "rollups: a fold took {} ms: folding every {:.1} s while folds take this long, so that they use at most 1/{FOLD_SHARE} of PostgreSQL's time",
            took.as_millis(),
            fold_interval(false, took).as_secs_f64()
        );
    } else if spread(before) && !spread(took) {
        log::info!("rollups: folding every second again");
    }
}

/// Fold until nothing is left: a backlog goes in folds of [`FOLD_MOST`]; returns how many
/// deltas were folded. A failure is said once (`failing`), and its recovery.
async fn fold_all(
    postgres: &PostgresSettings,
    db: &mut Option<tokio_postgres::Client>,
    ahead: &mut ReadAhead,
    failing: &mut bool,
) -> usize {
    let mut folded = 0;
    loop {
        match fold_once(postgres, db, ahead).await {
            Ok(n) => {
                if *failing {
                    log::info!("rollups: folding again");
                    *failing = false;
                }
                folded += n;
                if n < FOLD_MOST as usize {
                    return folded;
                }
            }
            Err(e) => {
                if !*failing {
                    log::warn!("rollups: fold failed ({e}); trying again every second");
                    *failing = true;
                }
                *db = None;
                return folded;
            }
        }
    }
}

/// Move the windows to the current hour and day if they turned.
async fn align(db: &mut Option<tokio_postgres::Client>) {
    if let Some(client) = db.as_mut()
        && let Err(e) = store::align_windows(client).await
    {
        log::warn!("rollups: moving the windows failed ({e}); trying again");
    }
}

async fn fold_once(
    postgres: &PostgresSettings,
    db: &mut Option<tokio_postgres::Client>,
    ahead: &mut ReadAhead,
) -> Result<usize, store::StoreError> {
    if db.as_ref().is_none_or(|c| c.is_closed()) {
        *db = Some(postgres.connect(CONNECT_WITHIN).await?);
    }
    match db {
        Some(client) => store::fold_rollups(client, FOLD_MOST, ahead).await,
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_spread_out_when_they_take_over_a_quarter_of_a_second() {
        let ms = Duration::from_millis;
        // 1,000 targets: a fold of ~110 ms, every second as before.
        assert_eq!(fold_interval(false, ms(110)), FOLD_EVERY);
        assert_eq!(fold_interval(false, ms(250)), FOLD_EVERY);
        // 10,000 targets: a fold of ~2.1 s takes at most a quarter of the time.
        assert_eq!(fold_interval(false, ms(2100)), ms(8400));
        assert_eq!(fold_interval(true, ms(110)), FOLD_EVERY_BEHIND);
        assert_eq!(fold_interval(true, ms(2100)), ms(8400));
    }
}
