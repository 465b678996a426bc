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

/// Most events read back from the spool's disk at a time.
const REFILL: usize = 20_000;

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

    /// Add an event; when full, the oldest one is dropped (counted and logged), or, with
    /// the spool, the event waits on disk only.
    pub fn push(&self, event: CheckEvent) {
        let mut q = self.queue();
        if let Some(spool) = &self.spool {
            let appended = spool.append(&event, q.len() >= self.capacity);
            if !appended.gone.is_empty() {
                q.retain(|e| !appended.gone.contains(&e.id));
            }
            if appended.on_disk_only {
                drop(q);
                self.ready.notify_one();
                return;
            }
        }
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
    /// With a working spool nothing is dropped: they are on disk, and memory holds at most
    /// one round more than its capacity.
    pub(super) fn requeue(&self, events: Vec<CheckEvent>) {
        let spooled = self.spool.as_ref().is_some_and(|s| s.broken().is_none());
        let mut q = self.queue();
        for ev in events.into_iter().rev() {
            if q.len() >= self.capacity && !spooled {
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

    /// Up to `max` events, oldest first; with the spool, those kept on disk only are read
    /// back (at most [`REFILL`] at a time: reading holds up the checks' pushes).
    pub(super) fn take(&self, max: usize) -> Vec<CheckEvent> {
        let mut q = self.queue();
        if let Some(spool) = self.spool.as_ref().filter(|_| q.len() < max) {
            let room = self.capacity.saturating_sub(q.len()).min(max - q.len());
            q.extend(spool.read_spilled(room.min(REFILL)));
        }
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Empty the outbox at exit: how many events were left (on disk only included).
    pub(super) fn leave(&self) -> u64 {
        let mut q = self.queue();
        let left = q.len() as u64;
        q.clear();
        left + self.spool.as_ref().map_or(0, |s| s.spilled())
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

    /// Events waiting (with the spool, those on disk only too).
    pub fn len(&self) -> usize {
        let q = self.queue();
        q.len() + self.spool.as_ref().map_or(0, |s| s.spilled() as usize)
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
