//! When each target is checked: a fixed rate per target (start to start, so a slow check
//! does not push the next one later), targets spread over their interval instead of all
//! firing at once (on a grid, [`grid_step`]), and a bound on the checks running at the
//! same time. The set of targets may change at any time: an added target starts within a
//! moment, a removed one stops after its running check, a changed one keeps its phase
//! unless its interval changed, and the others are not disturbed.
//!
//! This module owns time and concurrency. It never measures anything itself (that is
//! [`super::probe`]) and never talks to Kafka (that is [`super::outbox`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::metrics::ProducerMetrics;
use super::outbox::Outbox;
use super::probe::Probe;
use super::targets::{Target, TargetSet};
use crate::shutdown::Shutdown;

/// Targets added at once start at most this many a second (over their interval at
/// most): a list of 10,000 is not checked in one burst, one new target starts at once.
const NEW_TARGETS_PER_SECOND: f64 = 100.0;

/// Planned starts fall on a grid (from the schedule's start), so the checks due within
/// one step start together and the runtime wakes once for them, not once per check: a
/// check's I/O then overlaps the others' instead of each waiting for the CPU to wake.
/// 1,000 targets at 1 s, one every 1 ms without it: 3.5 context switches and 230-281 µs
/// of CPU per check; with a 20 ms grid 0.6 switches and 135-158 µs, lateness p99 3 ms
/// (10 ms: 162 µs). A start moves later by less than a step, never earlier. The step is
/// this long at most, and holds about [`CHECKS_PER_STEP`] checks: with 20 ms at any rate,
/// 7,500 targets at 1 s started 150 checks at once and their lateness p99 went from 38 to
/// 89 ms.
const START_GRID: Duration = Duration::from_millis(20);

/// About how many checks a grid step holds (the 1,000-targets-at-1-s case above).
const CHECKS_PER_STEP: f64 = 20.0;

/// The grid's step for `set`: [`START_GRID`], or shorter where more than
/// [`CHECKS_PER_STEP`] checks would fall in it (1 ms at least).
fn grid_step(set: &TargetSet) -> Duration {
    let per_second: f64 = set.values().map(|t| 1.0 / t.interval.as_secs_f64()).sum();
    // At least one a second: an empty set divides by nothing. A zero interval makes the
    // rate infinite, and the step its shortest.
    let step = Duration::from_secs_f64(CHECKS_PER_STEP / per_second.max(1.0));
    step.clamp(Duration::from_millis(1), START_GRID)
}

/// What every target's loop shares.
pub struct Checking {
    /// Does the checks.
    pub probe: Probe,
    /// Most checks running at once.
    pub concurrency: usize,
    /// Where each check's event goes (at once: a target's task never holds an event).
    pub outbox: Arc<Outbox>,
    /// Checks started and not yet handed on (what is dropped if the process must exit).
    pub running: Arc<AtomicU64>,
    /// Each check's outcome is counted here.
    pub metrics: Arc<ProducerMetrics>,
}

/// One target's loop as the schedule holds it: where to put its new entry (None: stop).
type TargetHandle = Arc<TargetSlot>;

/// A target's entry as the schedule last set it, read by the target's loop (None: stop),
/// which is woken when it changes. Not a watch channel: one of those is ~0.4 KB (a
/// `Notify` for each of eight groups of receivers), 4 MB of the producer's 34 MiB at
/// 10,000 targets; this is ~0.1 KB.
struct TargetSlot {
    entry: std::sync::Mutex<Option<Arc<Target>>>,
    changed: Notify,
}

impl TargetSlot {
    fn new(target: Arc<Target>) -> Arc<TargetSlot> {
        Arc::new(TargetSlot {
            entry: std::sync::Mutex::new(Some(target)),
            changed: Notify::new(),
        })
    }

    /// The entry in force (None: the loop must stop).
    fn get(&self) -> Option<Arc<Target>> {
        self.entry.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Put `next` in force and wake the loop, unless it is the entry in force already. A
    /// loop busy with a check finds the change when it next waits (`notify_one` keeps it).
    fn set(&self, next: Option<Arc<Target>>) {
        {
            let mut entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
            if entry.as_ref().map(Arc::as_ptr) == next.as_ref().map(Arc::as_ptr) {
                return;
            }
            *entry = next;
        }
        self.changed.notify_one();
    }
}

/// Check the targets in force on their schedules, following every new set sent on
/// `targets`, until `shutdown`. Returns when every target's loop has ended; a check
/// under way is let finish.
pub async fn run(mut targets: watch::Receiver<TargetSet>, checking: Checking, shutdown: Shutdown) {
    let shared = Arc::new(Shared {
        permits: Arc::new(Semaphore::new(checking.concurrency)),
        checking,
        grid_from: Instant::now(),
        grid_step_ns: AtomicU64::new(START_GRID.as_nanos() as u64),
    });
    let mut loops = JoinSet::new();
    let mut handles: HashMap<String, TargetHandle> = HashMap::new();
    let mut stop = shutdown.clone();
    loop {
        let set = targets.borrow_and_update().clone();
        follow_set(&set, &mut handles, &mut loops, &shared, &shutdown);
        tokio::select! {
            changed = targets.changed() => {
                if changed.is_err() {
                    // No more changes: the set in force stays until shutdown.
                    stop.requested().await;
                    break;
                }
            }
            Some(_) = loops.join_next(), if !loops.is_empty() => {}
            _ = stop.requested() => break,
        }
    }
    drop(handles);
    while loops.join_next().await.is_some() {}
}

/// What the loops share.
struct Shared {
    checking: Checking,
    permits: Arc<Semaphore>,
    /// Where the grid starts: one grid for every target, whenever it was added.
    grid_from: Instant,
    /// Its step, for the set in force ([`grid_step`]).
    grid_step_ns: AtomicU64,
}

impl Shared {
    /// `at`, or the grid's first point after it.
    fn on_grid(&self, at: Instant) -> Instant {
        let step = Duration::from_nanos(self.grid_step_ns.load(Ordering::Relaxed));
        on_grid(self.grid_from, step, at)
    }
}

/// Bring the loops in line with `set`: stop the removed, hand the changed their new
/// entry, start the added (spread at [`NEW_TARGETS_PER_SECOND`], within their interval).
fn follow_set(
    set: &TargetSet,
    handles: &mut HashMap<String, TargetHandle>,
    loops: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
) {
    let added = update_running(set, handles);
    let step = grid_step(set).as_nanos() as u64;
    shared.grid_step_ns.store(step, Ordering::Relaxed);
    let now = Instant::now();
    let count = added.len();
    for (i, target) in added.into_iter().enumerate() {
        let first = shared.on_grid(first_start(now, target.interval, i, count));
        let slot = TargetSlot::new(target.clone());
        handles.insert(target.url.clone(), slot.clone());
        loops.spawn(target_loop(slot, first, shared.clone(), shutdown.clone()));
    }
}

/// Tell the running loops about `set`: None to those removed from it, its new entry to
/// those whose entry changed, nothing to the others. Returns the targets with no loop yet.
fn update_running(
    set: &TargetSet,
    handles: &mut HashMap<String, TargetHandle>,
) -> Vec<Arc<Target>> {
    handles.retain(|url, handle| {
        let kept = set.contains_key(url);
        if !kept {
            handle.set(None);
        }
        kept
    });
    let mut added = Vec::new();
    for (url, target) in set.iter() {
        match handles.get(url) {
            Some(handle) => handle.set(Some(target.clone())),
            None => added.push(target.clone()),
        }
    }
    added
}

/// The first start of target `i` of `count` added at once: `i / count` of the way into
/// their spread, which is `count` at [`NEW_TARGETS_PER_SECOND`] or the interval, the
/// shorter.
fn first_start(now: Instant, interval: Duration, i: usize, count: usize) -> Instant {
    let count = count as f64;
    let spread = interval.min(Duration::from_secs_f64(count / NEW_TARGETS_PER_SECOND));
    now + spread.mul_f64(i as f64 / count)
}

async fn target_loop(
    slot: Arc<TargetSlot>,
    first: Instant,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
) {
    let Some(mut target) = slot.get() else {
        return;
    };
    let metrics = &shared.checking.metrics;
    let gauges = metrics.target_gauges(&target.url);
    let mut planned = first;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(planned) => {}
            _ = slot.changed.notified() => {
                let Some(next) = slot.get() else { break };
                if next.interval != target.interval {
                    // The last start plus the new interval (now, if that is past).
                    let moved = (planned - target.interval + next.interval).max(Instant::now());
                    planned = shared.on_grid(moved);
                }
                target = next;
                continue;
            }
            _ = shutdown.requested() => return,
        }
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.requested() => return,
        };
        let checking = &shared.checking;
        // Counted from here until its event is handed on: what is still counted when the
        // process must exit was started and never published, and is reported as dropped.
        checking.running.fetch_add(1, Ordering::SeqCst);
        // Boxed: a target's task stays small while it waits for its next slot.
        // Waiting for a permit counts as lateness: it is what an overloaded producer looks
        // like (the probe measures it from `planned` as it starts).
        let check = Box::pin(
            checking
                .probe
                .check_counting_redirects(&target, Some(planned)),
        );
        let (event, redirects) = check.await;
        let up = event.up == Some(true);
        drop(permit);
        metrics.checked(&gauges, &event, up, redirects);
        checking.outbox.push(event);
        checking.running.fetch_sub(1, Ordering::SeqCst);
        planned = next_slot(planned, target.interval, Instant::now());
    }
    metrics.forget_target(&target.url, &gauges);
}

/// `at`, or the first point after it of the grid of `step` from `grid_from`.
fn on_grid(grid_from: Instant, step: Duration, at: Instant) -> Instant {
    let step = step.as_nanos().max(1);
    let since = at.saturating_duration_since(grid_from).as_nanos();
    let steps = since.div_ceil(step);
    let offset = u64::try_from(steps * step).unwrap_or(u64::MAX);
    grid_from + Duration::from_nanos(offset)
}

/// The next planned start after `planned` that is not already past: slots missed while a
/// check overran are skipped (not fired in a burst).
fn next_slot(planned: Instant, interval: Duration, now: Instant) -> Instant {
    let next = planned + interval;
    if next >= now {
        return next;
    }
    let behind = now.duration_since(next).as_nanos();
    let skipped = behind / interval.as_nanos().max(1) + 1;
    let skipped = u32::try_from(skipped).unwrap_or(u32::MAX);
    log::debug!("skipped {skipped} slot(s): a check overran its interval");
    next + interval * skipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn fixed_rate_does_not_drift() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        // the check took 3 s: the next start is still t0 + 10 s, not t0 + 13 s
        assert_eq!(next_slot(t0, i, t0 + Duration::from_secs(3)), t0 + i);
        // Done exactly at the next slot: that slot is kept, not skipped.
        assert_eq!(next_slot(t0, i, t0 + i), t0 + i);
    }

    #[test]
    fn added_targets_are_spread_at_100_a_second_within_their_interval() {
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        // One added: at once.
        assert_eq!(first_start(t0, ms(10_000), 0, 1), t0);
        // 50 at 10 s: over half a second (100 a second), the 26th at 250 ms.
        assert_eq!(first_start(t0, ms(10_000), 25, 50), t0 + ms(250));
        assert_eq!(first_start(t0, ms(10_000), 49, 50), t0 + ms(490));
        // 1,000 at 2 s: over their interval (2 s, not 10 s), the 501st at 1 s.
        assert_eq!(first_start(t0, ms(2_000), 500, 1_000), t0 + ms(1_000));
        assert_eq!(first_start(t0, ms(2_000), 999, 1_000), t0 + ms(1_998));
    }

    #[test]
    fn starts_due_within_a_grid_step_start_together_and_never_early() {
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        // 1,000 targets at 1 s, added 3 ms after the grid's start: one every 1 ms.
        let added = t0 + ms(3);
        let starts: Vec<(Instant, Instant)> = (0..1_000)
            .map(|i| {
                let spread = first_start(added, ms(1_000), i, 1_000);
                (spread, on_grid(t0, START_GRID, spread))
            })
            .collect();
        let mut distinct: Vec<Instant> = starts.iter().map(|s| s.1).collect();
        distinct.dedup();
        // Due from 3 to 1,002 ms: they start at the grid's 20, 40, ... 1,020 ms.
        assert_eq!(
            distinct.len(),
            51,
            "one start a grid step, not one a target"
        );
        for (spread, start) in starts {
            assert!(start >= spread, "a start is never moved earlier");
            assert!(start - spread < START_GRID, "and later by less than a step");
            assert_eq!((start - t0).as_nanos() % START_GRID.as_nanos(), 0);
        }
        // A point of the grid stays where it is.
        assert_eq!(on_grid(t0, START_GRID, t0 + ms(40)), t0 + ms(40));
    }

    #[test]
    fn the_grid_step_holds_about_twenty_checks_and_at_most_20_ms() {
        let set = |n: usize, interval_s: u64| -> TargetSet {
            Arc::new(
                (0..n)
                    .map(|i| {
                        let t = target(&format!("http://s{i}/"), interval_s);
                        (t.url.clone(), t)
                    })
                    .collect(),
            )
        };
        let ms = |n| Duration::from_millis(n);
        assert_eq!(grid_step(&set(1_000, 1)), ms(20));
        assert_eq!(grid_step(&set(10_000, 1)), ms(2));
        assert_eq!(grid_step(&set(4_000, 1)), ms(5));
        // Few checks a second: the longest step; very many: the shortest.
        assert_eq!(grid_step(&set(100, 60)), ms(20));
        assert_eq!(grid_step(&set(0, 1)), ms(20));
        assert_eq!(grid_step(&set(100_000, 1)), ms(1));
    }

    fn target(url: &str, interval_s: u64) -> Arc<Target> {
        Arc::new(Target {
            url: url.to_string(),
            interval: Duration::from_secs(interval_s),
            regex: None,
            timeout: Duration::from_secs(1),
            method: "GET".into(),
            headers: Vec::new(),
            expect_status: None,
            name: None,
            group: None,
            public: true,
        })
    }

    #[test]
    fn a_new_set_stops_the_removed_updates_the_changed_and_leaves_the_others_alone() {
        let (a, b, c) = (
            target("http://a/", 1),
            target("http://b/", 1),
            target("http://c/", 1),
        );
        let mut handles = HashMap::new();
        for t in [&a, &b, &c] {
            handles.insert(t.url.clone(), TargetSlot::new(t.clone()));
        }
        let slots = handles.clone();
        let changed_b = target("http://b/", 5);
        let d = target("http://d/", 1);
        let set: TargetSet = Arc::new(
            [(&a, &a), (&changed_b, &changed_b), (&d, &d)]
                .into_iter()
                .map(|(k, t)| (k.url.clone(), t.clone()))
                .collect(),
        );
        let added = update_running(&set, &mut handles);
        assert_eq!(
            added.iter().map(|t| t.url.as_str()).collect::<Vec<_>>(),
            ["http://d/"]
        );
        let mut urls: Vec<&String> = handles.keys().collect();
        urls.sort();
        assert_eq!(urls, ["http://a/", "http://b/"], "c's handle is gone");
        // a: not woken, its entry as it was; b: woken, its new entry; c: woken, told to stop.
        let woken = |url: &str| slots[url].changed.notified().now_or_never().is_some();
        assert!(!woken("http://a/"));
        assert!(Arc::ptr_eq(&slots["http://a/"].get().unwrap(), &a));
        assert!(woken("http://b/"));
        assert_eq!(
            slots["http://b/"].get().unwrap().interval,
            Duration::from_secs(5)
        );
        assert!(woken("http://c/"));
        assert!(slots["http://c/"].get().is_none());
        // The same set again (d's loop started meanwhile) wakes nobody.
        handles.insert(d.url.clone(), TargetSlot::new(d.clone()));
        assert!(update_running(&set, &mut handles).is_empty());
        assert!(!woken("http://a/") && !woken("http://b/"));
    }

    #[test]
    fn overrun_skips_missed_slots() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        // the check took 25 s: slots at 10 and 20 are gone, the next is at 30
        assert_eq!(
            next_slot(t0, i, t0 + Duration::from_secs(25)),
            t0 + Duration::from_secs(30)
        );
    }
}
