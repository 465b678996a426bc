//! Unit tests of `spool`.

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
    assert_eq!(replay.events, 0);
    let events: Vec<CheckEvent> = (0..100).map(event).collect();
    for e in &events {
        spool.append(e, false);
    }
    drop(spool);
    let (spool, replay) = Spool::open(s.clone()).unwrap();
    assert_eq!(replay.events, 100);
    assert_eq!(replay.torn_bytes, 0);
    assert_eq!(spool.spilled(), 100);
    // Read back in pieces, in order.
    let mut back = spool.read_spilled(30);
    assert_eq!(back.len(), 30);
    back.extend(spool.read_spilled(usize::MAX));
    assert_eq!(ids(&back), ids(&events));
    assert_eq!(spool.spilled(), 0);
    assert!(spool.read_spilled(10).is_empty());
    spool.done(events.iter().map(|e| e.id));
    drop(spool);
    assert!(
        segment_files(&s.dir).is_empty(),
        "every event published: no segment left"
    );
    let (_, replay) = Spool::open(s.clone()).unwrap();
    assert_eq!(replay.events, 0);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_torn_record_is_cut_off_and_everything_before_it_replayed() {
    let s = settings(1 << 30, 1 << 20);
    let (spool, _) = Spool::open(s.clone()).unwrap();
    let events: Vec<CheckEvent> = (0..40).map(event).collect();
    for e in &events {
        spool.append(e, false);
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
        assert_eq!(replay.events as usize, kept, "cut at {cut}");
        let back = spool.read_spilled(usize::MAX);
        assert_eq!(ids(&back), ids(&events[..kept]), "cut at {cut}");
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
        spool.append(e, false);
    }
    assert!(spool.dropped() > 0);
    assert!(spool.bytes() <= 4_000 + 1_000, "{}", spool.bytes());
    drop(spool);
    let (spool, replay) = Spool::open(s.clone()).unwrap();
    // What is left is the newest, in order.
    let back = spool.read_spilled(usize::MAX);
    let kept = back.len();
    assert_eq!(replay.events as usize, kept);
    assert!(kept > 0 && kept < 60);
    assert_eq!(ids(&back), ids(&events[60 - kept..]));
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

#[test]
fn a_record_of_another_version_is_dropped_and_does_not_keep_its_segment() {
    let s = settings(1 << 30, 1 << 20);
    let (spool, _) = Spool::open(s.clone()).unwrap();
    let events: Vec<CheckEvent> = (0..2).map(event).collect();
    for e in &events {
        spool.append(e, false);
    }
    drop(spool);
    let file = segment_files(&s.dir).pop().unwrap();
    let foreign = format!(r#"{{"id": "{}", "url": 7}}"#, Uuid::now_v7());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend(segment::frame(foreign.as_bytes()));
    std::fs::write(&file, bytes).unwrap();
    let (spool, replay) = Spool::open(s.clone()).unwrap();
    assert_eq!(replay.events, 3, "its id is read at start");
    assert_eq!(ids(&spool.read_spilled(10)), ids(&events));
    assert_eq!(spool.dropped(), 1);
    spool.done(events.iter().map(|e| e.id));
    drop(spool);
    assert!(
        segment_files(&s.dir).is_empty(),
        "nothing pending: the segment went"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}
