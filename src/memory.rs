//! Memory: the consumer's allocator, dlmalloc (pure Rust, one lock over the whole heap)
//! with a cache of freed small blocks per thread in front of it, on the threads that ask
//! for one ([`ThreadBlockCache`]: the consumer's writer, Kafka and rollups threads), whose
//! small allocations then take no lock; and (`byte_ops`) the C library's memcpy, memmove,
//! memset, memcmp and bcmp in both programs' static musl build. (The producer keeps plain
//! dlmalloc: its many worker threads would each hold a cache, and its RSS at 10,000
//! targets is over its line.)
//!
//! Why the cache: on the consumer's 200,000-event drain (perf, 8 kHz), dlmalloc and its
//! global lock took ~12 % of the CPU, most of it on the Kafka thread, where each record's
//! key and value are allocated and freed within the chunk. A freed block waits in its
//! thread's cache for the next allocation of its size class.
//!
//! Every small block (up to [`SMALL_BYTES`], alignment up to 16) is allocated from dlmalloc
//! rounded up to its class's size, on every thread, so that a block freed on any thread can
//! serve any allocation of its class. What a cache holds is bounded per class
//! ([`CACHED_BYTES`]) and handed back to dlmalloc when its guard drops.
//!
//! This module must never allocate, block or panic: it runs inside every allocation.

#[cfg(target_arch = "x86_64")]
mod byte_ops;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;

/// The blocks' sizes are multiples of this (dlmalloc's own alignment).
const GRANULE: usize = 16;

/// Size classes: blocks of 16, 32, … up to [`SMALL_BYTES`].
const CLASSES: usize = 64;

/// The largest block a cache holds: a Kafka record's value (~350 bytes) is well within.
pub(crate) const SMALL_BYTES: usize = GRANULE * CLASSES;

/// Most bytes a thread's cache holds per class: 256 blocks of 16 bytes, 4 of 1 KiB; at
/// most 256 KiB per thread in all. What it saves is the lock of short-lived blocks, freed
/// and allocated again in turn; at 16 KiB a class the drain's peak RSS was 1-2 MiB higher.
pub(crate) const CACHED_BYTES: usize = 4 * 1024;

/// The consumer's global allocator (`#[global_allocator]` in its binary).
pub struct CachingDlmalloc;

static DLMALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// One thread's freed blocks: per class, a list linked through the blocks themselves.
struct Cache {
    /// Live guards of this thread ([`ThreadBlockCache`]): blocks are kept while above 0.
    guards: Cell<u32>,
    heads: [Cell<*mut u8>; CLASSES],
    counts: [Cell<u16>; CLASSES],
}

thread_local! {
    // A const initializer and no destructor: a plain thread-local, never allocated.
    static CACHE: Cache = const {
        Cache {
            guards: Cell::new(0),
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            counts: [const { Cell::new(0) }; CLASSES],
        }
    };
}

/// The class of a small layout, None for a large one (or one aligned beyond dlmalloc's).
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(1);
    (size <= SMALL_BYTES && layout.align() <= GRANULE).then(|| (size - 1) / GRANULE)
}

/// What every block of class `class` is allocated from dlmalloc as.
fn class_layout(class: usize) -> Layout {
    // In range by construction: (class + 1) * 16 bytes, aligned to 16.
    Layout::from_size_align((class + 1) * GRANULE, GRANULE).unwrap_or(Layout::new::<u128>())
}

/// Blocks of `class` a cache holds at most.
fn most_cached(class: usize) -> u16 {
    (CACHED_BYTES / ((class + 1) * GRANULE)) as u16
}

impl Cache {
    /// A cached block of `class`, if any.
    fn pop(&self, class: usize) -> Option<*mut u8> {
        let head = self.heads[class].get();
        if head.is_null() {
            return None;
        }
        // SAFETY: a cached block is ours, at least 16 bytes, 16-aligned, its first word
        // the next block of the list (written by `push`).
        let next = unsafe { head.cast::<*mut u8>().read() };
        self.heads[class].set(next);
        self.counts[class].set(self.counts[class].get() - 1);
        Some(head)
    }

    /// Keep `block` of `class`; false when this thread keeps none, or enough of them.
    fn push(&self, class: usize, block: *mut u8) -> bool {
        let count = self.counts[class].get();
        if self.guards.get() == 0 || count >= most_cached(class) {
            return false;
        }
        // SAFETY: `block` was allocated as `class_layout(class)` and is now free: its first
        // word is ours to use as the list's link.
        unsafe { block.cast::<*mut u8>().write(self.heads[class].get()) };
        self.heads[class].set(block);
        self.counts[class].set(count + 1);
        true
    }

    /// Hand every cached block back to dlmalloc.
    fn flush(&self) {
        for class in 0..CLASSES {
            while let Some(block) = self.pop(class) {
                // SAFETY: allocated from dlmalloc as `class_layout(class)`, and free.
                unsafe { DLMALLOC.dealloc(block, class_layout(class)) };
            }
        }
    }
}

/// A cached block of `class` on this thread, if any.
fn cached(class: usize) -> Option<*mut u8> {
    CACHE.try_with(|c| c.pop(class)).ok().flatten()
}

/// Keep `block` in this thread's cache; false when it was not kept.
fn keep(class: usize, block: *mut u8) -> bool {
    CACHE.try_with(|c| c.push(class, block)).unwrap_or(false)
}

// SAFETY: every block is dlmalloc's; a small one is allocated and freed as its class's
// layout whichever path it takes, and a cached one is free and used by no one else (its
// cache is its thread's own).
unsafe impl GlobalAlloc for CachingDlmalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => match cached(class) {
                Some(block) => block,
                None => unsafe { DLMALLOC.alloc(class_layout(class)) },
            },
            None => unsafe { DLMALLOC.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(class) if keep(class, block) => {}
            Some(class) => unsafe { DLMALLOC.dealloc(block, class_layout(class)) },
            None => unsafe { DLMALLOC.dealloc(block, layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => match cached(class) {
                Some(block) => {
                    unsafe { block.write_bytes(0, layout.size()) };
                    block
                }
                None => unsafe { DLMALLOC.alloc_zeroed(class_layout(class)) },
            },
            None => unsafe { DLMALLOC.alloc_zeroed(layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        match (class_of(layout), class_of(new_layout)) {
            // The block already has its class's size.
            (Some(old), Some(new)) if old == new => block,
            (old, None) => {
                let actual = old.map_or(layout, class_layout);
                unsafe { DLMALLOC.realloc(block, actual, new_size) }
            }
            (_, Some(_)) => unsafe {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            },
        }
    }
}

/// While this lives, the small blocks freed on its thread are kept for the thread's next
/// allocations (when [`CachingDlmalloc`] is the global allocator; nothing otherwise). For
/// long-lived threads that allocate and free many small blocks. When the thread's last one
/// drops, the blocks go back to dlmalloc. Not `Send`: it belongs to the thread that made it.
pub struct ThreadBlockCache {
    _thread: PhantomData<*const ()>,
}

impl ThreadBlockCache {
    /// Keep the small blocks this thread frees from now on.
    pub fn start() -> ThreadBlockCache {
        let _ = CACHE.try_with(|c| c.guards.set(c.guards.get() + 1));
        ThreadBlockCache {
            _thread: PhantomData,
        }
    }
}

impl Drop for ThreadBlockCache {
    fn drop(&mut self) {
        let _ = CACHE.try_with(|c| {
            c.guards.set(c.guards.get().saturating_sub(1));
            if c.guards.get() == 0 {
                c.flush();
            }
        });
    }
}

#[cfg(test)]
mod tests;
