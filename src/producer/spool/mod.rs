//! The disk spool (`CK_SPOOL_DIR`): every event is also appended to a segment file as its
//! check ends (one write per event, framed with its length and a CRC-32C), so that a
//! restart during a Kafka outage loses nothing; a segment is deleted once every event in
//! it was published (or dropped). At start what the spool holds is replayed, in order,
//! before any new event. A torn last record (a write cut by `kill -9`) fails its CRC: it
//! is cut off and said, never published.
//!
//! Durability (`CK_SPOOL_SYNC`): `interval` (fsync at most every second: a power loss
//! loses at most the last second) or `always` (fsync after each event). Bounded by
//! `CK_SPOOL_BYTES`: past it the oldest segment goes (counted). A disk that fails
//! (full, read-only) turns the spool off with one line: checking goes on with the memory
//! buffer, and `/readyz` says so. One producer per directory: a lock file.
//!
//! This module owns the files. It never publishes anything.

mod segment;

use std::collections::{HashMap, VecDeque};
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

/// What the spool held at start.
#[derive(Debug, Default)]
pub struct Replay {
    /// Its events, in the order they were written.
    pub events: Vec<CheckEvent>,
    /// Bytes cut off torn records (0: none).
    pub torn_bytes: u64,
}

/// A closed or current segment.
#[derive(Debug)]
struct Segment {
    no: u64,
    bytes: u64,
    /// Events in it neither published nor dropped yet.
    pending: u64,
}

#[derive(Debug)]
struct Files {
    segments: VecDeque<Segment>,
    current: Option<File>,
    /// Event → its segment, while pending.
    pending: HashMap<Uuid, u64>,
    /// Written since the last fsync.
    dirty: bool,
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
        };
        let mut replay = Replay::default();
        for no in &numbers {
            replay_segment(dir, *no, &mut files, &mut replay)
                .map_err(|e| fail("cannot read a segment", &e))?;
        }
        let next = numbers.last().map_or(0, |n| n + 1);
        files.segments.push_back(Segment {
            no: next,
            bytes: 0,
            pending: 0,
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

    /// Append `event` (one write). A disk error turns the spool off (said once).
    pub fn append(&self, event: &CheckEvent) {
        if self.broken().is_some() {
            return;
        }
        let record = segment::frame(&event.to_json());
        let mut files = self.files();
        if let Err(e) = self.write(&mut files, &record) {
            drop(files);
            self.fail(&e);
            return;
        }
        if let Some(seg) = files.segments.back_mut() {
            seg.bytes += record.len() as u64;
            seg.pending += 1;
            let no = seg.no;
            files.pending.insert(event.id, no);
        }
        self.keep_within_bounds(&mut files);
    }

    fn write(&self, files: &mut Files, record: &[u8]) -> std::io::Result<()> {
        let roll = files
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.settings.segment_bytes);
        if roll {
            let next = files.segments.back().map_or(0, |s| s.no + 1);
            files.current = None;
            files.segments.push_back(Segment {
                no: next,
                bytes: 0,
                pending: 0,
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

    /// Past `CK_SPOOL_BYTES`, the oldest closed segment goes; its pending events count as dropped.
    fn keep_within_bounds(&self, files: &mut Files) {
        loop {
            let total: u64 = files.segments.iter().map(|s| s.bytes).sum();
            if total <= self.settings.max_bytes || files.segments.len() < 2 {
                return;
            }
            let Some(oldest) = files.segments.pop_front() else {
                return;
            };
            files.pending.retain(|_, no| *no != oldest.no);
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

    /// Delete the closed segments with nothing pending.
    fn delete_done(&self, files: &mut Files) {
        let current = files.segments.back().map(|s| s.no);
        files.segments.retain(|s| {
            let gone = s.pending == 0 && Some(s.no) != current;
            if gone {
                let _ = std::fs::remove_file(segment::path_of(&self.settings.dir, s.no));
            }
            !gone
        });
    }

    /// fsync what was written since the last call (`CK_SPOOL_SYNC=interval`, every second).
    pub fn sync(&self) {
        let mut files = self.files();
        if !files.dirty {
            return;
        }
        files.dirty = false;
        let synced = files.current.as_ref().map(File::sync_data);
        drop(files);
        if let Some(Err(e)) = synced {
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
        match serde_json::from_slice::<CheckEvent>(payload) {
            Ok(ev) => {
                files.pending.insert(ev.id, no);
                replay.events.push(ev);
                pending += 1;
            }
            Err(e) => log::warn!(
                "spool: a record of {} is not an event ({e}): skipped",
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
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_bytes: u64, segment_bytes: u64) -> SpoolSettings {
        let dir = std::env::temp_dir().join(format!("checksite-spool-{}", Uuid::now_v7().simple()));
        SpoolSettings {
            dir,
            sync_always: false,
            max_bytes,
            segment_bytes,
        }
    }

    fn event(n: u64) -> CheckEvent {
        CheckEvent {
            elapsed_ms: n,
            ..CheckEvent::starting(&format!("https://site-{}.example/", n % 7), "test", 0)
        }
    }

    fn ids(events: &[CheckEvent]) -> Vec<Uuid> {
        events.iter().map(|e| e.id).collect()
    }

    fn segment_files(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(segment::number_of)
                    .is_some()
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn what_was_written_comes_back_in_order_and_published_events_leave() {
        let s = settings(1 << 30, 1 << 20);
        let (spool, replay) = Spool::open(s.clone()).unwrap();
        assert!(replay.events.is_empty());
        let events: Vec<CheckEvent> = (0..100).map(event).collect();
        for e in &events {
            spool.append(e);
        }
        drop(spool);
        let (spool, replay) = Spool::open(s.clone()).unwrap();
        assert_eq!(ids(&replay.events), ids(&events));
        assert_eq!(replay.torn_bytes, 0);
        spool.done(events.iter().map(|e| e.id));
        drop(spool);
        assert!(
            segment_files(&s.dir).is_empty(),
            "every event published: no segment left"
        );
        let (_, replay) = Spool::open(s.clone()).unwrap();
        assert!(replay.events.is_empty());
        let _ = std::fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn a_torn_record_is_cut_off_and_everything_before_it_replayed() {
        let s = settings(1 << 30, 1 << 20);
        let (spool, _) = Spool::open(s.clone()).unwrap();
        let events: Vec<CheckEvent> = (0..40).map(event).collect();
        for e in &events {
            spool.append(e);
        }
        drop(spool);
        let file = segment_files(&s.dir).pop().unwrap();
        let whole = std::fs::read(&file).unwrap();
        // Where each record ends: a cut keeps exactly the records ending at or before it.
        let ends: Vec<usize> = events
            .iter()
            .scan(0, |at, e| {
                *at += 8 + e.to_json().len();
                Some(*at)
            })
            .collect();
        let mut seed = 0x9e37_79b9_u64;
        for _ in 0..20 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let cut = (seed >> 33) as usize % whole.len();
            std::fs::write(&file, &whole[..cut]).unwrap();
            let (spool, replay) = Spool::open(s.clone()).unwrap();
            let kept = ends.iter().filter(|end| **end <= cut).count();
            assert_eq!(ids(&replay.events), ids(&events[..kept]), "cut at {cut}");
            let good = if kept == 0 { 0 } else { ends[kept - 1] };
            assert_eq!(replay.torn_bytes as usize, cut - good, "cut at {cut}");
            drop(spool);
            if kept > 0 {
                // Cut off for good: the next start finds no torn record.
                assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, good);
                let (_, again) = Spool::open(s.clone()).unwrap();
                assert_eq!(again.torn_bytes, 0);
            }
            // The spool made a new, empty segment: remove it for the next round.
            for f in segment_files(&s.dir) {
                if f != file {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn a_full_spool_drops_its_oldest_segment_and_counts_it() {
        let s = settings(4_000, 1_000);
        let (spool, _) = Spool::open(s.clone()).unwrap();
        let events: Vec<CheckEvent> = (0..60).map(event).collect();
        for e in &events {
            spool.append(e);
        }
        assert!(spool.dropped() > 0);
        assert!(spool.bytes() <= 4_000 + 1_000, "{}", spool.bytes());
        drop(spool);
        let (_, replay) = Spool::open(s.clone()).unwrap();
        // What is left is the newest, in order.
        let kept = replay.events.len();
        assert!(kept > 0 && kept < 60);
        assert_eq!(ids(&replay.events), ids(&events[60 - kept..]));
        let _ = std::fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn one_producer_per_directory() {
        let s = settings(1 << 30, 1 << 20);
        let (_held, _) = Spool::open(s.clone()).unwrap();
        let e = Spool::open(s.clone()).unwrap_err();
        assert!(e.0.contains("another producer uses this spool"), "{e}");
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}
