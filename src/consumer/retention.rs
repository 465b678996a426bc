//! Retention (`CK_RETENTION_DAYS`): raw events older than that many days are deleted in
//! steps of at most [`STEP_ROWS`] rows, each its own short transaction, on a connection
//! of its own; after a pass that deleted anything, `VACUUM events` makes the space
//! reusable, so the table stops growing at the retention window.
//!
//! A pass goes in insertion order (`event_id`, through the primary key) from the oldest
//! row and stops at the first step that holds a young one: with nothing to delete it reads
//! one step, whatever the table's size. The BRIN index on `ts` cannot do that once the
//! freed space is refilled (a recycled block range keeps its old minimum, so a pass by
//! `ts` scans most of the table). An event stored long after its check (a spool replayed
//! after days, a topic read again) is not where insertion order looks: a sweep by `ts`
//! finds it, at the first pass after start and then every [`SWEEP_EVERY`]. That sweep
//! also deletes the rejected records (`rejected_events`) kept for longer than the window.
//!
//! It never touches the rollups (they are kept), never the writer's connection, and never
//! holds a lock the writer waits for: a step locks only the old rows it deletes, which no
//! writer touches. One consumer prunes at a time (an advisory lock).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::store::{self, PostgresSettings, StoreError};

/// Time between two passes (a pass with nothing to delete costs one index probe).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Most rows deleted by one statement: a step takes ~0.1 s, so the writer's transactions
/// interleave with it.
pub(crate) const STEP_ROWS: i64 = 10_000;

/// Time between two sweeps by `ts` (the first pass after start is one).
const SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Pause between two steps: leaves the disk to the writer.
const STEP_PAUSE: Duration = Duration::from_millis(20);

/// Longest wait for PostgreSQL to connect, per attempt.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// The running pruner.
pub(crate) struct EventPruner {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl EventPruner {
    /// Start pruning events older than `days` days in the database of `postgres`.
    pub(crate) fn start(postgres: PostgresSettings, days: u32) -> EventPruner {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(postgres, days, stopped));
        EventPruner { stop, task }
    }

    /// Stop now: a step under way is rolled back; the next consumer carries on.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

async fn run(postgres: PostgresSettings, days: u32, mut stopped: oneshot::Receiver<()>) {
    let mut db: Option<tokio_postgres::Client> = None;
    let mut first = true;
    let mut swept: Option<Instant> = None;
    loop {
        // The first pass soon after start, the next ones every PRUNE_EVERY.
        let wait = if first {
            Duration::from_secs(1)
        } else {
            PRUNE_EVERY
        };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stopped => return,
        }
        if db.as_ref().is_none_or(|c| c.is_closed()) {
            match postgres.connect(CONNECT_WITHIN).await {
                Ok(c) => db = Some(c),
                Err(e) => {
                    log::warn!(
                        "retention: {e}; trying again in {} s",
                        PRUNE_EVERY.as_secs()
                    );
                    continue;
                }
            }
        }
        let Some(client) = db.as_ref() else { continue };
        let sweep = swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY);
        let pass = tokio::select! {
            done = prune_pass(client, days, sweep) => done,
            _ = &mut stopped => return,
        };
        if pass.is_ok() && sweep {
            swept = Some(Instant::now());
        }
        if let Err(e) = pass {
            log::warn!(
                "retention: {e}; trying again in {} s",
                PRUNE_EVERY.as_secs()
            );
            db = None;
        }
    }
}

/// Delete the events older than `days` days, step by step (in insertion order, or by `ts`
/// when `sweep`), then vacuum if anything went.
async fn prune_pass(
    client: &tokio_postgres::Client,
    days: u32,
    sweep: bool,
) -> Result<(), StoreError> {
    if !store::retention_lock(client).await? {
        return Ok(()); // another consumer is pruning
    }
    let started = Instant::now();
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(i64::from(days));
    let mut deleted = 0;
    let result = if sweep {
        match sweep_by_time(client, cutoff, &mut deleted).await {
            Ok(()) => sweep_rejects(client, cutoff).await,
            failed => failed,
        }
    } else {
        prune_in_insertion_order(client, cutoff, &mut deleted).await
    };
    log::debug!(
        "retention: {} pass: {deleted} event(s) deleted in {:.1} ms",
        if sweep {
            "sweep (by ts)"
        } else {
            "insertion-order"
        },
        started.elapsed().as_secs_f64() * 1000.0
    );
    if deleted > 0 {
        log::info!(
            "retention: {deleted} event(s) from before {} deleted in {} ms",
            crate::event::format_time(&cutoff),
            started.elapsed().as_millis()
        );
        let vacuumed = Instant::now();
        match store::vacuum_events(client).await {
            Ok(()) => log::info!(
                "retention: events vacuumed in {} ms (the space is reused by new rows)",
                vacuumed.elapsed().as_millis()
            ),
            Err(e) => log::warn!("retention: {e} (autovacuum will reclaim the space later)"),
        }
    }
    store::retention_unlock(client).await;
    result
}

/// Steps by `ts` until one deletes less than a full step.
async fn sweep_by_time(
    client: &tokio_postgres::Client,
    cutoff: chrono::DateTime<chrono::Utc>,
    deleted: &mut u64,
) -> Result<(), StoreError> {
    in_steps((STEP_ROWS, deleted), |most| {
        store::prune_events(client, cutoff, most)
    })
    .await
}

/// The rejected records kept since before `cutoff`, in steps (a record may be 64 KiB).
async fn sweep_rejects(
    client: &tokio_postgres::Client,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let mut deleted = 0;
    let swept = in_steps((STEP_ROWS / 10, &mut deleted), |most| {
        store::prune_rejects(client, cutoff, most)
    })
    .await;
    if deleted > 0 {
        log::info!(
            "retention: {deleted} rejected record(s) kept since before {} deleted",
            crate::event::format_time(&cutoff)
        );
    }
    swept
}

/// `step(most)` again, [`STEP_PAUSE`] apart, until one deletes less than `most`, each
/// step's rows counted in `deleted` (a step that fails ends it).
async fn in_steps<F, Step>((most, deleted): (i64, &mut u64), mut step: F) -> Result<(), StoreError>
where
    F: FnMut(i64) -> Step,
    Step: std::future::Future<Output = Result<u64, StoreError>>,
{
    loop {
        let n = step(most).await?;
        *deleted += n;
        if n < most as u64 {
            return Ok(());
        }
        tokio::time::sleep(STEP_PAUSE).await;
    }
}

/// Steps in insertion order from the oldest row, until one holds a young event (or the
/// table ends): what was inserted after it is younger still, but for a few seconds of
/// clock skew between vantage points, which the next pass takes.
async fn prune_in_insertion_order(
    client: &tokio_postgres::Client,
    cutoff: chrono::DateTime<chrono::Utc>,
    deleted: &mut u64,
) -> Result<(), StoreError> {
    let mut after = i32::MIN;
    loop {
        let step = store::prune_oldest(client, cutoff, STEP_ROWS, after).await?;
        *deleted += step.deleted;
        if step.young > 0 || step.seen < STEP_ROWS as u64 {
            return Ok(());
        }
        after = step.last;
        tokio::time::sleep(STEP_PAUSE).await;
    }
}
