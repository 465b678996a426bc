//! When each target is checked: a fixed rate per target (start to start, so a slow check
//! does not push the next one later), targets spread over their interval instead of all
//! firing at once, and a bound on the checks running at the same time.
//!
//! This module owns time and concurrency. It never measures anything itself (that is
//! [`super::probe`]) and never talks to Kafka (that is [`super::outbox`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::config::Target;
use super::metrics::ProducerMetrics;
use super::outbox::Outbox;
use super::probe::Probe;
use crate::shutdown::Shutdown;

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

/// Check every target on its schedule and send each event on, until `shutdown`.
/// Returns when every target's loop has ended; a check under way is let finish.
pub async fn run(targets: Vec<Target>, checking: Checking, shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(checking.concurrency));
    let shared = Arc::new(checking);
    let count = targets.len() as u32;
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for (i, target) in targets.into_iter().enumerate() {
        // Target i of n first fires i/n of the way into its interval.
        let first = started
            + target
                .interval
                .mul_f64(f64::from(i as u32) / f64::from(count.max(1)));
        loops.spawn(target_loop(
            (i, Arc::new(target)),
            first,
            shared.clone(),
            permits.clone(),
            shutdown.clone(),
        ));
    }
    drop(shared);
    while loops.join_next().await.is_some() {}
}

async fn target_loop(
    (index, target): (usize, Arc<Target>),
    first: Instant,
    shared: Arc<Checking>,
    permits: Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    let mut planned = first;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(planned) => {}
            _ = shutdown.requested() => return,
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.requested() => return,
        };
        // Waiting for a permit counts as lateness: it is what an overloaded producer looks like.
        let lag_ms = Instant::now()
            .saturating_duration_since(planned)
            .as_millis() as i64;
        // Counted from here until its event is handed on: what is still counted when the
        // process must exit was started and never published, and is reported as dropped.
        shared.running.fetch_add(1, Ordering::SeqCst);
        // Boxed: a target's task stays small while it waits for its next slot.
        let checking = Box::pin(shared.probe.check_counting_redirects(&target, lag_ms));
        let (event, redirects) = checking.await;
        let up = event.up == Some(true);
        drop(permit);
        shared.metrics.checked(index, &event, up, redirects);
        shared.outbox.push(event);
        shared.running.fetch_sub(1, Ordering::SeqCst);
        planned = next_slot(planned, target.interval, Instant::now());
    }
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

    #[test]
    fn fixed_rate_does_not_drift() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        // the check took 3 s: the next start is still t0 + 10 s, not t0 + 13 s
        assert_eq!(next_slot(t0, i, t0 + Duration::from_secs(3)), t0 + i);
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
