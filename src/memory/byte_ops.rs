//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for the static musl build, in place
//! of musl's: its `memcmp` compares a byte at a time, and its `memcpy` moves the unaligned
//! head and the tail a byte at a time around a `rep movsq`, which costs tens of cycles to
//! start. The copies and comparisons the programs make are mostly short (a field, a
//! URL, a struct of a few hundred bytes): on the consumer's 200,000-event drain (perf,
//! 8 kHz) musl's `memcpy`, `memset` and `memcmp` were ~16 % of the samples.
//!
//! Short lengths go through overlapping unaligned loads and stores with no loop; long
//! copies and fills through `rep movsb` / `rep stosb` (fast on every x86-64 of the last
//! decade). A loop the compiler could turn back into a call of the function it is in is
//! avoided: that would be endless recursion. The exported symbols exist only in the musl
//! build on x86-64; the functions are tested under their own names on every build.
//!
//! It must never allocate, panic or call the functions it defines.

// Outside the musl build only the tests call them.
#![cfg_attr(not(target_env = "musl"), allow(dead_code))]

use std::arch::asm;
use std::ptr::{read_unaligned as load, write_unaligned as store};

/// Copy `n` bytes from `src` to `dest`, which may overlap in any way.
///
/// # Safety
/// As `memmove`: both ranges valid for `n` bytes.
#[inline(always)]
pub(crate) unsafe fn copy(dest: *mut u8, src: *const u8, n: usize) {
    unsafe {
        // Every load of a short copy happens before its first store: any overlap is fine.
        match n {
            0 => {}
            1..=3 => {
                let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
                *dest = a;
                *dest.add(n / 2) = b;
                *dest.add(n - 1) = c;
            }
            4..=7 => {
                let (a, b) = (load(src.cast::<u32>()), load(src.add(n - 4).cast::<u32>()));
                store(dest.cast::<u32>(), a);
                store(dest.add(n - 4).cast::<u32>(), b);
            }
            8..=16 => {
                let (a, b) = (load(src.cast::<u64>()), load(src.add(n - 8).cast::<u64>()));
                store(dest.cast::<u64>(), a);
                store(dest.add(n - 8).cast::<u64>(), b);
            }
            17..=32 => {
                let (a, b) = (
                    load(src.cast::<u128>()),
                    load(src.add(n - 16).cast::<u128>()),
                );
                store(dest.cast::<u128>(), a);
                store(dest.add(n - 16).cast::<u128>(), b);
            }
            33..=64 => {
                let a = load(src.cast::<[u128; 2]>());
                let b = load(src.add(n - 32).cast::<[u128; 2]>());
                store(dest.cast::<[u128; 2]>(), a);
                store(dest.add(n - 32).cast::<[u128; 2]>(), b);
            }
            65..=128 => {
                let a = load(src.cast::<[u128; 4]>());
                let b = load(src.add(n - 64).cast::<[u128; 4]>());
                store(dest.cast::<[u128; 4]>(), a);
                store(dest.add(n - 64).cast::<[u128; 4]>(), b);
            }
            _ if (dest as usize).wrapping_sub(src as usize) >= n => rep_movsb(dest, src, n),
            // `dest` starts inside the source: from the end backwards.
            _ => rep_movsb_backwards(dest, src, n),
        }
    }
}

/// `rep movsb`, forwards (the direction flag is clear at every call, per the ABI).
#[inline(always)]
unsafe fn rep_movsb(dest: *mut u8, src: *const u8, n: usize) {
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
}

/// `rep movsb` from the last byte down, the direction flag cleared again after it.
#[inline(never)]
unsafe fn rep_movsb_backwards(dest: *mut u8, src: *const u8, n: usize) {
    unsafe {
        asm!("std", "rep movsb", "cld",
            inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            options(nostack));
    }
}

/// Set `n` bytes at `dest` to `byte`.
///
/// # Safety
/// As `memset`: the range valid for `n` bytes.
#[inline(always)]
pub(crate) unsafe fn fill(dest: *mut u8, byte: u8, n: usize) {
    let word = u64::from(byte) * 0x0101_0101_0101_0101;
    let wide = u128::from(word) << 64 | u128::from(word);
    unsafe {
        match n {
            0 => {}
            1..=3 => {
                *dest = byte;
                *dest.add(n / 2) = byte;
                *dest.add(n - 1) = byte;
            }
            4..=7 => {
                store(dest.cast::<u32>(), word as u32);
                store(dest.add(n - 4).cast::<u32>(), word as u32);
            }
            8..=16 => {
                store(dest.cast::<u64>(), word);
                store(dest.add(n - 8).cast::<u64>(), word);
            }
            17..=32 => {
                store(dest.cast::<u128>(), wide);
                store(dest.add(n - 16).cast::<u128>(), wide);
            }
            33..=64 => {
                store(dest.cast::<[u128; 2]>(), [wide; 2]);
                store(dest.add(n - 32).cast::<[u128; 2]>(), [wide; 2]);
            }
            65..=128 => {
                store(dest.cast::<[u128; 4]>(), [wide; 4]);
                store(dest.add(n - 64).cast::<[u128; 4]>(), [wide; 4]);
            }
            _ => asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") byte,
                options(nostack, preserves_flags)),
        }
    }
}

/// Compare `n` bytes at `a` and `b` as unsigned bytes: <0, 0 or >0, as `memcmp`.
///
/// # Safety
/// As `memcmp`: both ranges valid for `n` bytes.
#[inline(always)]
pub(crate) unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    unsafe {
        if n < 8 {
            return compare_short(a, b, n);
        }
        // Eight bytes at a time, the last eight overlapping those before them; a word read
        // big-endian compares as its bytes do.
        let mut at = 0;
        loop {
            let at_word = at.min(n - 8);
            let x = u64::from_be(load(a.add(at_word).cast::<u64>()));
            let y = u64::from_be(load(b.add(at_word).cast::<u64>()));
            if x != y {
                return if x < y { -1 } else { 1 };
            }
            if at_word == n - 8 {
                return 0;
            }
            at += 8;
        }
    }
}

/// Fewer than 8 bytes: up to two overlapping 4-byte words, or the bytes one by one.
#[inline(always)]
unsafe fn compare_short(a: *const u8, b: *const u8, n: usize) -> i32 {
    unsafe {
        if n >= 4 {
            for at in [0, n - 4] {
                let x = u32::from_be(load(a.add(at).cast::<u32>()));
                let y = u32::from_be(load(b.add(at).cast::<u32>()));
                if x != y {
                    return if x < y { -1 } else { 1 };
                }
            }
            return 0;
        }
        for at in 0..n {
            let (x, y) = (*a.add(at), *b.add(at));
            if x != y {
                return i32::from(x) - i32::from(y);
            }
        }
        0
    }
}

#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
mod exported {
    //! The C symbols, linked in place of musl's (its objects for them are then not pulled
    //! from libc.a: `memmove` too, since musl's needs its `memcpy`'s object).

    #[unsafe(no_mangle)]
    unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        unsafe { super::copy(dest, src, n) };
        dest
    }

    #[unsafe(no_mangle)]
    unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        unsafe { super::copy(dest, src, n) };
        dest
    }

    #[unsafe(no_mangle)]
    unsafe extern "C" fn memset(dest: *mut u8, byte: i32, n: usize) -> *mut u8 {
        unsafe { super::fill(dest, byte as u8, n) };
        dest
    }

    #[unsafe(no_mangle)]
    unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        unsafe { super::compare(a, b, n) }
    }

    #[unsafe(no_mangle)]
    unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        unsafe { super::compare(a, b, n) }
    }
}

#[cfg(test)]
mod tests;
