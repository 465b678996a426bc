//! The allocator called directly (the tests' global allocator is the system's), each case
//! on a thread of its own so that it starts with an empty cache.

use super::*;

const A: CachingDlmalloc = CachingDlmalloc;

fn on_new_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f)
        .join()
        .expect("the case's thread panicked");
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("a valid layout")
}

fn cached_count(class: usize) -> u16 {
    CACHE.with(|c| c.counts[class].get())
}

#[test]
fn a_freed_small_block_serves_the_next_allocation_of_its_class_on_its_thread() {
    on_new_thread(|| {
        let _cache = ThreadBlockCache::start();
        unsafe {
            let first = A.alloc(layout(20));
            A.dealloc(first, layout(20));
            assert_eq!(cached_count(1), 1);
            // 17 to 32 bytes are one class: a request of 30 gets the block freed at 20.
            let again = A.alloc(layout(30));
            assert_eq!(again, first);
            assert_eq!(cached_count(1), 0);
            A.dealloc(again, layout(30));
        }
    });
}

#[test]
fn without_a_guard_or_after_it_nothing_is_kept() {
    on_new_thread(|| unsafe {
        let block = A.alloc(layout(100));
        A.dealloc(block, layout(100));
        assert_eq!(cached_count(6), 0);
        let cache = ThreadBlockCache::start();
        let nested = ThreadBlockCache::start();
        let block = A.alloc(layout(100));
        A.dealloc(block, layout(100));
        drop(nested);
        // The outer guard still keeps them.
        assert_eq!(cached_count(6), 1);
        drop(cache);
        assert_eq!(cached_count(6), 0, "the last guard hands the blocks back");
        let block = A.alloc(layout(100));
        A.dealloc(block, layout(100));
        assert_eq!(cached_count(6), 0);
    });
}

#[test]
fn a_cache_holds_at_most_its_share_per_class_and_large_blocks_never() {
    on_new_thread(|| unsafe {
        let _cache = ThreadBlockCache::start();
        let class = CLASSES - 1;
        let blocks: Vec<*mut u8> = (0..100).map(|_| A.alloc(layout(SMALL_BYTES))).collect();
        for &b in &blocks {
            A.dealloc(b, layout(SMALL_BYTES));
        }
        assert_eq!(usize::from(cached_count(class)), CACHED_BYTES / SMALL_BYTES);
        let large = A.alloc(layout(SMALL_BYTES + 1));
        A.dealloc(large, layout(SMALL_BYTES + 1));
        let total: u32 = (0..CLASSES).map(|c| u32::from(cached_count(c))).sum();
        assert_eq!(total as usize, CACHED_BYTES / SMALL_BYTES);
    });
}

#[test]
fn a_block_freed_on_another_thread_is_kept_and_reused_there() {
    let block = unsafe { A.alloc(layout(300)) } as usize;
    on_new_thread(move || unsafe {
        let _cache = ThreadBlockCache::start();
        A.dealloc(block as *mut u8, layout(300));
        assert_eq!(A.alloc(layout(290)) as usize, block);
        A.dealloc(block as *mut u8, layout(290));
    });
}

#[test]
fn realloc_keeps_the_contents_across_classes_and_to_and_from_large_blocks() {
    on_new_thread(|| unsafe {
        let _cache = ThreadBlockCache::start();
        let mut size = 5;
        let mut block = A.alloc(layout(size));
        fill(block, size, 7);
        // Up through small classes into large blocks, then down again.
        for new_size in [12, 16, 17, 200, 1024, 1025, 5000, 100_000, 900, 40, 3] {
            let moved = A.realloc(block, layout(size), new_size);
            assert!(!moved.is_null());
            check(moved, size.min(new_size), 7);
            if (size - 1) / GRANULE == (new_size - 1) / GRANULE && new_size <= SMALL_BYTES {
                assert_eq!(moved, block, "within a class the block stays");
            }
            fill(moved, new_size, 7);
            (block, size) = (moved, new_size);
        }
        A.dealloc(block, layout(size));
    });
}

#[test]
fn a_zeroed_allocation_from_a_used_block_is_zeroed() {
    on_new_thread(|| unsafe {
        let _cache = ThreadBlockCache::start();
        let block = A.alloc(layout(64));
        block.write_bytes(0xAB, 64);
        A.dealloc(block, layout(64));
        let zeroed = A.alloc_zeroed(layout(60));
        assert_eq!(zeroed, block);
        assert!((0..60).all(|i| zeroed.add(i).read() == 0));
        A.dealloc(zeroed, layout(60));
    });
}

/// Three threads allocate, grow, shrink and free blocks of random sizes, passing a third of
/// them to the next thread to free; each block holds its own pattern, checked before each
/// change. A block handed out twice, or smaller than asked, shows as a broken pattern.
#[test]
fn live_blocks_never_overlap_under_random_use_on_three_threads() {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..3)
        .map(|_| std::sync::mpsc::channel::<(usize, usize, u8)>())
        .unzip();
    let threads: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(t, inbox)| {
            let next = senders[(t + 1) % 3].clone();
            std::thread::spawn(move || random_use(t as u64 + 1, &inbox, &next))
        })
        .collect();
    drop(senders);
    for t in threads {
        t.join().expect("a thread found a broken block");
    }
}

fn random_use(
    seed: u64,
    inbox: &std::sync::mpsc::Receiver<(usize, usize, u8)>,
    next: &std::sync::mpsc::Sender<(usize, usize, u8)>,
) {
    let _cache = ThreadBlockCache::start();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut live: Vec<(usize, usize, u8)> = Vec::new();
    for step in 0..60_000 {
        while let Ok(passed) = inbox.try_recv() {
            live.push(passed);
        }
        let size = if random(10) == 0 {
            1 + random(4000)
        } else {
            1 + random(SMALL_BYTES)
        };
        let pattern = (step % 251) as u8;
        unsafe {
            match random(4) {
                0 | 1 if live.len() < 400 => {
                    let b = A.alloc(layout(size));
                    fill(b, size, pattern);
                    live.push((b as usize, size, pattern));
                }
                2 if !live.is_empty() => {
                    let (b, old, p) = live.swap_remove(random(live.len()));
                    check(b as *mut u8, old, p);
                    let moved = A.realloc(b as *mut u8, layout(old), size);
                    check(moved, old.min(size), p);
                    fill(moved, size, pattern);
                    live.push((moved as usize, size, pattern));
                }
                _ if !live.is_empty() => {
                    let (b, old, p) = live.swap_remove(random(live.len()));
                    check(b as *mut u8, old, p);
                    if random(3) == 0 {
                        let _ = next.send((b, old, p));
                    } else {
                        A.dealloc(b as *mut u8, layout(old));
                    }
                }
                _ => {}
            }
        }
    }
    for (b, size, p) in live {
        unsafe {
            check(b as *mut u8, size, p);
            A.dealloc(b as *mut u8, layout(size));
        }
    }
}

unsafe fn fill(block: *mut u8, size: usize, pattern: u8) {
    for i in 0..size {
        unsafe { block.add(i).write(pattern ^ (i as u8)) };
    }
}

unsafe fn check(block: *mut u8, size: usize, pattern: u8) {
    for i in 0..size {
        let got = unsafe { block.add(i).read() };
        assert_eq!(got, pattern ^ (i as u8), "byte {i} of a {size}-byte block");
    }
}
