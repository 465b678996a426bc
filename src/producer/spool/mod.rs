//! The disk spool (`CK_SPOOL_DIR`): every event is also appended to a segment file as its
//! check ends (one write per event, framed with its length and a CRC-32C), so that a
//! restart during a Kafka outage loses nothing; a segment is deleted once every event in
//! it was published (or dropped). At start what the spool holds is replayed, in order,
//! before any new event. The memory buffer (`CK_BUFFER_EVENTS`) holds the oldest waiting
//! events; once it is full, newer ones stay on disk only and are read back in order as it
//! empties, so the spool, not memory, bounds what waits. A torn last record (a write cut
//! by `kill -9`) fails its CRC: it is cut off and said, never published.
//!
//! Durability (`CK_SPOOL_SYNC`): `interval` (fsync at most every second: a power loss
//! loses at most the last second) or `always` (fsync after each event). Bounded by
//! `CK_SPOOL_BYTES`: past it the oldest segment goes (counted). A disk that fails
//! (full, read-only) turns the spool off with one line: checking goes on with the memory
//! buffer, and `/readyz` says so. One producer per directory: a lock file.
//!
//! This module owns the files. It never publishes anything.

mod read_back;
mod segment;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use crate::event::CheckEvent;

/// A segment is closed (and a new one opened) past this size (by default).
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// The spool's settings.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// `CK_SPOOL_DIR`.
    pub dir: PathBuf,
    /// `CK_SPOOL_SYNC=always`: fsync after each event (else at most every second).
    pub sync_always: bool,
    /// `CK_SPOOL_BYTES`: the oldest segment goes past this.
    pub max_bytes: u64,
    /// A segment is closed past this ([`SEGMENT_BYTES`]).
    pub segment_bytes: u64,
}

/// Why the spool cannot be used at start.
#[derive(Debug)]
pub struct SpoolError(pub String);

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpoolError {}

/// What the spool held at start (read back by [`Spool::read_spilled`], in order, before
/// any new event).
#[derive(Debug, Default)]
pub struct Replay {
    /// Its events.
    pub events: u64,
    /// Bytes cut off torn records (0: none).
    pub torn_bytes: u64,
}

/// What [`Spool::append`] did with an event.
#[derive(Debug, Default)]
pub struct Appended {
    /// The event is on disk and is to be read back from there (the memory buffer is full,
    /// or older events wait on disk): the caller keeps no copy.
    pub on_disk_only: bool,
    /// Events dropped with the oldest segment (the spool was full): a copy the caller
    /// holds is to go too.
    pub gone: HashSet<Uuid>,
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy)]
struct Position {
    seg: u64,
    offset: u64,
}

/// A closed or current segment.
#[derive(Debug)]
struct Segment {
    no: u64,
    bytes: u64,
    /// Events in it neither published nor dropped yet.
    pending: u64,
    /// Events in it kept on disk only, not read back yet.
    spilled: u64,
}

#[derive(Debug)]
struct Files {
    segments: VecDeque<Segment>,
    current: Option<File>,
    /// Event → its segment, while pending.
    pending: HashMap<Uuid, u64>,
    /// Written since the last fsync.
    dirty: bool,
    /// Segments closed since the last fsync, to be synced by it.
    unsynced: Vec<File>,
    /// Where the events kept on disk only begin (None: every pending event is in memory).
    /// From there on every event is on disk only, so that they come back in order.
    spill_from: Option<Position>,
}

/// The open spool.
#[derive(Debug)]
pub struct Spool {
    settings: SpoolSettings,
    files: Mutex<Files>,
    /// Why the spool stopped (a disk error); None while it works.
    broken: Mutex<Option<String>>,
    dropped: AtomicU64,
    /// Held while the spool is open: one producer per directory.
    _lock: File,
}

impl Spool {
    /// Open (creating) the spool, take its lock, and read what it holds.
    pub fn open(settings: SpoolSettings) -> Result<(Spool, Replay), SpoolError> {
        let dir = &settings.dir;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SpoolError(format!("CK_SPOOL_DIR={}: {what}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create it", &e))?;
        let lock = File::create(dir.join("lock")).map_err(|e| fail("cannot write in it", &e))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError(format!(
                "CK_SPOOL_DIR={}: another producer uses this spool (its lock is held): give each producer a directory of its own",
                dir.display()
            )));
        }
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| fail("cannot read it", &e))?
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(segment::number_of))
            .collect();
        numbers.sort_unstable();
        let mut files = Files {
            segments: VecDeque::new(),
            current: None,
            pending: HashMap::new(),
            dirty: false,
            unsynced: Vec::new(),
            spill_from: None,
        };
        let mut replay = Replay::default();
        for no in &numbers {
            replay_segment(dir, *no, &mut files, &mut replay)
                .map_err(|e| fail("cannot read a segment", &e))?;
        }
        // What the spool holds is read back from its start, before anything new.
        files.spill_from = files.segments.front().map(|s| Position {
            seg: s.no,
            offset: 0,
        });
        let next = numbers.last().map_or(0, |n| n + 1);
        files.segments.push_back(Segment {
            no: next,
            bytes: 0,
            pending: 0,
            spilled: 0,
        });
        let spool = Spool {
            settings,
            files: Mutex::new(files),
            broken: Mutex::new(None),
            dropped: AtomicU64::new(0),
            _lock: lock,
        };
        Ok((spool, replay))
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append `event` (one write). `memory_full`: the caller's memory buffer has no room,
    /// so the event stays on disk only (and, for order, every one after it until
    /// [`Spool::read_spilled`] has caught up). A disk error turns the spool off (said once).
    pub fn append(&self, event: &CheckEvent, memory_full: bool) -> Appended {
        let mut appended = Appended::default();
        if self.broken().is_some() {
            return appended;
        }
        let record = segment::frame(&event.to_json());
        let mut files = self.files();
        if let Err(e) = self.write(&mut files, &record) {
            drop(files);
            self.fail(&e);
            return appended;
        }
        let spill = memory_full || files.spill_from.is_some();
        if let Some(seg) = files.segments.back_mut() {
            let at = Position {
                seg: seg.no,
                offset: seg.bytes,
            };
            seg.bytes += record.len() as u64;
            seg.pending += 1;
            seg.spilled += u64::from(spill);
            files.pending.insert(event.id, at.seg);
            if spill {
                files.spill_from.get_or_insert(at);
                appended.on_disk_only = true;
            }
        }
        appended.gone = self.keep_within_bounds(&mut files);
        appended
    }

    /// Events kept on disk only, not read back yet.
    pub fn spilled(&self) -> u64 {
        self.files().segments.iter().map(|s| s.spilled).sum()
    }

    fn write(&self, files: &mut Files, record: &[u8]) -> std::io::Result<()> {
        let roll = files
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.settings.segment_bytes);
        if roll {
            let next = files.segments.back().map_or(0, |s| s.no + 1);
            // Synced with the next interval's fsync (CK_SPOOL_SYNC=always: synced already).
            if let Some(done) = files.current.take().filter(|_| files.dirty) {
                files.unsynced.push(done);
            }
            files.segments.push_back(Segment {
                no: next,
                bytes: 0,
                pending: 0,
                spilled: 0,
            });
            self.delete_done(files);
        }
        if files.current.is_none() {
            let no = files.segments.back().map_or(0, |s| s.no);
            let path = segment::path_of(&self.settings.dir, no);
            files.current = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
        }
        let Some(file) = files.current.as_mut() else {
            return Ok(());
        };
        file.write_all(record)?;
        if self.settings.sync_always {
            file.sync_data()?;
        } else {
            files.dirty = true;
        }
        Ok(())
    }

    /// Past `CK_SPOOL_BYTES`, the oldest closed segment goes; its pending events count as
    /// dropped. Returns them.
    fn keep_within_bounds(&self, files: &mut Files) -> HashSet<Uuid> {
        let mut gone = HashSet::new();
        loop {
            let total: u64 = files.segments.iter().map(|s| s.bytes).sum();
            if total <= self.settings.max_bytes || files.segments.len() < 2 {
                return gone;
            }
            let Some(oldest) = files.segments.pop_front() else {
                return gone;
            };
            files.pending.retain(|id, no| {
                let keep = *no != oldest.no;
                if !keep {
                    gone.insert(*id);
                }
                keep
            });
            let _ = std::fs::remove_file(segment::path_of(&self.settings.dir, oldest.no));
            let total = self.dropped.fetch_add(oldest.pending, Ordering::Relaxed) + oldest.pending;
            log::warn!(
                "spool full (CK_SPOOL_BYTES={}): its oldest segment went, {} event(s) with it ({total} so far)",
                self.settings.max_bytes,
                oldest.pending
            );
        }
    }

    /// These events are done with: published, or dropped from the memory buffer.
    pub fn done(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut files = self.files();
        for id in ids {
            let Some(no) = files.pending.remove(&id) else {
                continue;
            };
            if let Some(seg) = files.segments.iter_mut().find(|s| s.no == no) {
                seg.pending = seg.pending.saturating_sub(1);
            }
        }
        self.delete_done(&mut files);
    }

    /// Delete the closed segments with nothing pending; empty the current one when nothing
    /// in it is.
    fn delete_done(&self, files: &mut Files) {
        let current = files.segments.back().map(|s| s.no);
        files.segments.retain(|s| {
            let gone = s.pending == 0 && Some(s.no) != current;
            if gone {
                let _ = std::fs::remove_file(segment::path_of(&self.settings.dir, s.no));
            }
            !gone
        });
        // The current segment too, emptied in place: else a restart would publish again
        // what it holds (up to a segment of events already in the topic).
        let emptied = files.spill_from.is_none()
            && files
                .segments
                .back()
                .is_some_and(|s| s.pending == 0 && s.bytes > 0);
        if emptied
            && files.current.as_ref().is_some_and(|f| f.set_len(0).is_ok())
            && let Some(seg) = files.segments.back_mut()
        {
            seg.bytes = 0;
        }
    }

    /// fsync what was written since the last call (`CK_SPOOL_SYNC=interval`, every second).
    /// The fsync runs on handles of its own, outside the lock: an fsync of a second's
    /// writes can take long, and every check's append waits on that lock.
    pub fn sync(&self) {
        let mut files = self.files();
        if !files.dirty {
            return;
        }
        files.dirty = false;
        let mut handles = std::mem::take(&mut files.unsynced);
        let current = files.current.as_ref().map(File::try_clone);
        drop(files);
        match current {
            Some(Ok(f)) => handles.push(f),
            Some(Err(e)) => return self.fail(&e),
            None => {}
        }
        if let Some(e) = handles.iter().find_map(|f| f.sync_data().err()) {
            self.fail(&e);
        }
    }

    fn fail(&self, e: &std::io::Error) {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if broken.is_none() {
            log::error!(
                "CK_SPOOL_DIR={}: {e}: the spool is off, events wait in memory only (CK_BUFFER_EVENTS)",
                self.settings.dir.display()
            );
            *broken = Some(format!("the spool failed: {e}"));
        }
    }

    /// Why the spool is off, if it is.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Events the spool dropped (full) so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of its segments.
    pub fn bytes(&self) -> u64 {
        self.files().segments.iter().map(|s| s.bytes).sum()
    }

    /// Whether an fsync follows every event.
    pub fn syncs_always(&self) -> bool {
        self.settings.sync_always
    }
}

/// An event's id, all the spool needs of a record until it is read back.
#[derive(serde::Deserialize)]
struct EventId {
    id: Uuid,
}

/// Read segment `no` into `replay`: its good records' events; a torn tail is cut off.
fn replay_segment(
    dir: &std::path::Path,
    no: u64,
    files: &mut Files,
    replay: &mut Replay,
) -> std::io::Result<()> {
    let path = segment::path_of(dir, no);
    let contents = segment::read(&path)?;
    if contents.torn_bytes > 0 {
        log::warn!(
            "spool: {} torn byte(s) at the end of {} (a write cut short): cut off, {} event(s) before them replayed",
            contents.torn_bytes,
            path.display(),
            contents.payloads.len()
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(contents.good_bytes)?;
        replay.torn_bytes += contents.torn_bytes;
    }
    let mut pending = 0;
    for payload in &contents.payloads {
        // Its id only: the event itself is read when it is read back.
        match serde_json::from_slice::<EventId>(payload) {
            Ok(ev) => {
                files.pending.insert(ev.id, no);
                replay.events += 1;
                pending += 1;
            }
            Err(e) => log::warn!(
                "spool: a record of {} has no event id ({e}): skipped",
                path.display()
            ),
        }
    }
    if pending == 0 {
        std::fs::remove_file(&path)?;
    } else {
        files.segments.push_back(Segment {
            no,
            bytes: contents.good_bytes,
            pending,
            spilled: pending,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
