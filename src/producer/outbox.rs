//! The producer's buffer of events ([`Outbox`]): bounded, in memory (and on disk with the
//! spool), filled by the checks and emptied by the publisher (`publisher`).
//!
//! This module owns loss. It must never block checking: when Kafka is away, events wait
//! here; when the buffer is full the oldest are dropped, counted and logged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::spool::Spool;
use crate::event::CheckEvent;

/// The loop that publishes an outbox (in `publisher`), reachable where it always was.
pub use super::publisher::publish;

/// Events waiting to be published. Bounded: when full, the oldest event is dropped.
#[derive(Debug)]
pub struct Outbox {
    pub(super) queue: Mutex<VecDeque<CheckEvent>>,
    pub(super) capacity: usize,
    pub(super) ready: Notify,
    /// No event will be pushed any more: publish what is left, then stop.
    pub(super) closed: std::sync::atomic::AtomicBool,
    /// Wakes a publisher pausing between reconnection attempts when the outbox closes
    /// (not `ready`: every pushed event would cut the backoff short).
    pub(super) closing: Notify,
    pub(super) dropped: AtomicU64,
    pub(super) published: AtomicU64,
    /// The disk spool (`CK_SPOOL_DIR`), when on: every event is in it until done.
    pub(super) spool: Option<Arc<Spool>>,
}

impl Outbox {
    /// An empty outbox that holds at most `capacity` events.
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Outbox::with_spool(capacity, None)
    }

    /// The same, each event also kept in `spool` until it is published or dropped.
    pub fn with_spool(capacity: usize, spool: Option<Arc<Spool>>) -> Arc<Outbox> {
        Arc::new(Outbox {
            spool,
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            closing: Notify::new(),
            dropped: AtomicU64::new(0),
            published: AtomicU64::new(0),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<CheckEvent>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add an event; when full, the oldest one is dropped (counted and logged).
    pub fn push(&self, event: CheckEvent) {
        if let Some(spool) = &self.spool {
            spool.append(&event);
        }
        let mut q = self.queue();
        self.make_room(&mut q, 1);
        q.push_back(event);
        drop(q);
        self.ready.notify_one();
    }

    fn make_room(&self, q: &mut VecDeque<CheckEvent>, wanted: usize) {
        while !q.is_empty() && q.len() + wanted > self.capacity {
            if let Some(gone) = q.pop_front() {
                self.done(&[gone.id]);
            }
            self.count_dropped();
        }
    }

    /// Events the spool held at start, first in line (they are in the spool already).
    pub fn replay(&self, events: Vec<CheckEvent>) {
        let mut q = self.queue();
        for ev in events {
            self.make_room(&mut q, 1);
            q.push_back(ev);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// The spool, when on.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    /// These events need the spool no more (published or dropped).
    pub(super) fn done(&self, ids: &[uuid::Uuid]) {
        if let Some(spool) = &self.spool {
            spool.done(ids.iter().copied());
        }
    }

    /// Put events that could not be published back at the front, in their order. When the
    /// buffer filled up meanwhile, they are the oldest, so they are the ones dropped.
    pub(super) fn requeue(&self, events: Vec<CheckEvent>) {
        let mut q = self.queue();
        for ev in events.into_iter().rev() {
            if q.len() >= self.capacity {
                self.done(&[ev.id]);
                self.count_dropped();
                continue;
            }
            q.push_front(ev);
        }
    }

    /// Count a dropped event; say so in the log on the first and every thousandth.
    fn count_dropped(&self) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if total == 1 || total.is_multiple_of(1000) {
            log::warn!(
                "event buffer full ({} events, CK_BUFFER_EVENTS): dropping the oldest; {total} dropped so far",
                self.capacity
            );
        }
    }

    pub(super) fn take(&self, max: usize) -> Vec<CheckEvent> {
        let mut q = self.queue();
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Say that no event will come any more (every check has ended): [`publish`] delivers
    /// what is left, within its flush time, and returns.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ready.notify_one();
        self.closing.notify_one();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Count checks that started but whose events will never exist (still running when
    /// the process had to exit) as dropped, and say so.
    pub(crate) fn abandoned(&self, checks: u64) {
        if checks > 0 {
            self.dropped.fetch_add(checks, Ordering::Relaxed);
            log::error!("{checks} check(s) still running at exit: their events are dropped");
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue().len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped so far (buffer full, or not delivered before exit).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events Kafka has taken.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
