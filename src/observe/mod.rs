//! What both programs show about themselves while they run: the HTTP endpoint on
//! `CK_HTTP_ADDR` ([`server`]), the metrics format ([`exposition`]), and whether the
//! program's loops still run ([`Liveness`]).
//!
//! This module owns the endpoint and the format, not the metrics: each program keeps its
//! own (`producer::metrics`, `consumer::metrics`). It never blocks the work it reports on.

pub mod exposition;
pub mod server;
pub mod web_config;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use server::{Endpoints, HttpListener, Page, PageFuture, Scope};

/// The program's long-running loops, each one marked when it ends (or stops making
/// progress, for a loop that beats): what `/healthz` answers.
#[derive(Debug, Default)]
pub struct Liveness {
    loops: Mutex<Vec<Arc<LoopState>>>,
}

#[derive(Debug)]
struct LoopState {
    name: &'static str,
    running: AtomicBool,
    /// Unix ms of the last beat; 0 for a loop that does not beat.
    last_beat_ms: AtomicU64,
    stale_after: Option<Duration>,
}

/// Held by a running loop; the loop counts as ended once this is dropped.
#[derive(Debug)]
pub struct LoopGuard(Arc<LoopState>);

impl Liveness {
    /// A loop named `name` starts. With `stale_after`, it must [`LoopGuard::beat`] at
    /// least that often to count as alive.
    pub fn start(&self, name: &'static str, stale_after: Option<Duration>) -> LoopGuard {
        let state = Arc::new(LoopState {
            name,
            running: AtomicBool::new(true),
            last_beat_ms: AtomicU64::new(unix_ms()),
            stale_after,
        });
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(state.clone());
        LoopGuard(state)
    }

    /// Ok while every loop started runs (and beats in time), and while none has started
    /// yet (the program is starting: migrating a database may take a while); else which
    /// loop does not run.
    pub fn check(&self) -> Result<(), String> {
        let loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        for l in loops.iter() {
            if !l.running.load(Ordering::Relaxed) {
                return Err(format!("the {} loop has ended", l.name));
            }
            if let Some(stale) = l.stale_after {
                let quiet = unix_ms().saturating_sub(l.last_beat_ms.load(Ordering::Relaxed));
                if quiet > stale.as_millis() as u64 {
                    return Err(format!(
                        "the {} loop has made no progress for {} s",
                        l.name,
                        quiet / 1000
                    ));
                }
            }
        }
        Ok(())
    }
}

impl LoopGuard {
    /// The loop made progress.
    pub fn beat(&self) {
        self.0.last_beat_ms.store(unix_ms(), Ordering::Relaxed);
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_ended_or_went_quiet_is_reported() {
        let live = Liveness::default();
        assert_eq!(live.check(), Ok(()), "starting");
        let a = live.start("publish", None);
        let b = live.start("consume", Some(Duration::from_millis(50)));
        assert_eq!(live.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            live.check()
                .is_err_and(|e| e.contains("consume loop has made no progress"))
        );
        b.beat();
        assert_eq!(live.check(), Ok(()));
        drop(a);
        assert_eq!(live.check(), Err("the publish loop has ended".into()));
    }
}
