//! Unit tests of `outbox`.

use super::*;

fn event(n: u64) -> CheckEvent {
    CheckEvent {
        elapsed_ms: n,
        ..CheckEvent::starting(&format!("https://site-{n}.example/"), "test", 0)
    }
}

fn elapsed(v: &[CheckEvent]) -> Vec<u64> {
    v.iter().map(|e| e.elapsed_ms).collect()
}

#[test]
fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let outbox = Outbox::new(3);
    for n in 1..=5 {
        outbox.push(event(n));
    }
    assert_eq!(outbox.dropped(), 2);
    assert_eq!(elapsed(&outbox.take(10)), [3, 4, 5]);
}

#[test]
fn unsent_events_go_back_in_front_in_order() {
    let outbox = Outbox::new(10);
    for n in 1..=4 {
        outbox.push(event(n));
    }
    let first = outbox.take(2);
    outbox.push(event(5));
    outbox.requeue(first);
    assert_eq!(elapsed(&outbox.take(10)), [1, 2, 3, 4, 5]);
    assert_eq!(outbox.dropped(), 0);
}

#[test]
fn returning_events_are_the_ones_dropped_when_full() {
    let outbox = Outbox::new(3);
    for n in 1..=3 {
        outbox.push(event(n));
    }
    let first = outbox.take(2); // 1, 2 in flight; 3 waits
    outbox.push(event(4));
    outbox.push(event(5)); // full again: 3, 4, 5
    outbox.requeue(first); // 1 and 2 are the oldest: dropped
    assert_eq!(elapsed(&outbox.take(10)), [3, 4, 5]);
    assert_eq!(outbox.dropped(), 2);
}

/// An outbox of `capacity` events in memory on a spool in a new directory.
fn spooled(capacity: usize, dir: &std::path::Path) -> Arc<Outbox> {
    let settings = crate::producer::spool::SpoolSettings {
        dir: dir.to_path_buf(),
        sync_always: false,
        max_bytes: 1 << 30,
        segment_bytes: 4_000,
    };
    let (spool, _) = Spool::open(settings).unwrap();
    Outbox::with_spool(capacity, Some(Arc::new(spool)))
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "checksite-outbox-{}",
        uuid::Uuid::now_v7().simple()
    ))
}

#[test]
fn with_the_spool_a_full_memory_buffer_drops_nothing_and_order_holds() {
    let dir = temp_dir();
    let outbox = spooled(3, &dir);
    for n in 1..=50 {
        outbox.push(event(n));
    }
    assert_eq!(outbox.dropped(), 0);
    assert_eq!(outbox.len(), 50, "3 in memory, 47 on disk");
    assert_eq!(elapsed(&outbox.take(1)), [1]);
    // Older events wait on disk: a new one goes behind them, though memory has room.
    outbox.push(event(51));
    // At most its capacity in memory at a time, what is on disk included.
    let mut got = outbox.take(10);
    assert_eq!(elapsed(&got), [2, 3, 4]);
    outbox.requeue(std::mem::take(&mut got)); // Kafka refused them: back in front
    while !outbox.is_empty() {
        let round = outbox.take(7);
        got.extend(round);
    }
    assert_eq!(elapsed(&got), (2..=51).collect::<Vec<_>>());
    // Caught up: the next event stays in memory, and nothing is read twice.
    outbox.push(event(52));
    assert_eq!(elapsed(&outbox.take(10)), [52]);
    assert_eq!(outbox.dropped(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn events_kept_on_disk_come_back_after_a_restart_before_new_ones() {
    let dir = temp_dir();
    let outbox = spooled(2, &dir);
    for n in 1..=20 {
        outbox.push(event(n));
    }
    let published = outbox.take(5);
    outbox.done(&published.iter().map(|e| e.id).collect::<Vec<_>>());
    drop(outbox); // the process ends: 15 events wait, 13 of them on disk only
    let outbox = spooled(2, &dir);
    outbox.push(event(21));
    let mut got = Vec::new();
    while !outbox.is_empty() {
        let round = outbox.take(4);
        outbox.done(&round.iter().map(|e| e.id).collect::<Vec<_>>());
        got.extend(round);
    }
    // Segments whose events were all published are gone: a closed one holds ~8 events
    // here, so 1..=5 may come back only with the rest of their segment.
    let first = got.first().map_or(0, |e| e.elapsed_ms);
    assert!(first <= 6, "{first}");
    assert_eq!(elapsed(&got), (first..=21).collect::<Vec<_>>());
    drop(outbox);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
        .collect();
    assert!(left.is_empty(), "every event published: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
