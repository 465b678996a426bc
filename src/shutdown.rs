//! SIGINT/SIGTERM turned into one [`Shutdown`] signal that every task can await.
//!
//! This module owns the process's reaction to signals. It never exits the process:
//! the binaries decide what "finishing" means (flush, roll back) and when to return.

use tokio::sync::watch;

/// A cloneable handle: `is_requested()` to poll, `requested().await` to wait.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending half, held by whoever decides to stop (the signal listener, or a test).
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// Request shutdown (what a signal does).
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// A trigger and the shutdown it controls (tests, tools).
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// A Shutdown that triggers on the first SIGINT or SIGTERM.
    pub fn on_signals() -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            wait_for_signal().await;
            log::info!("signal received: finishing what is in flight, then exiting");
            trigger.trigger();
        });
        shutdown
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is requested (at once if it already was).
    pub async fn requested(&mut self) {
        // An error means every trigger is gone: nobody can ask us to stop any more.
        if self.rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            log::warn!("cannot listen for SIGINT/SIGTERM; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
