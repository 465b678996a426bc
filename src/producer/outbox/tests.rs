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
