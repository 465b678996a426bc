//! The hash of the maps keyed by series (URL, vantage point, hour) that the writer and the
//! fold fill for every event: a multiply-rotate hash of a word at a time instead of the
//! standard library's SipHash, which was 6-7 % of the writer thread's CPU (perf,
//! 200,000-event drain). Not keyed: the keys come from the topic, written by our own
//! producers, and a crafted flood of colliding URLs could only slow a fold, never change
//! what it counts. It must never be used for maps keyed by what an HTTP client sends.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by series.
pub(crate) type SeriesMap<K, V> = HashMap<K, V, BuildHasherDefault<SeriesHasher>>;

/// A set of series keys.
pub(crate) type SeriesSet<K> = HashSet<K, BuildHasherDefault<SeriesHasher>>;

/// The hasher of [`SeriesMap`] and [`SeriesSet`].
#[derive(Default, Clone, Copy)]
pub(crate) struct SeriesHasher(u64);

/// An odd constant with its bits well mixed (the golden ratio's, as in FxHash).
const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl SeriesHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for SeriesHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Byte by byte: a copy of a variable length is a call to memcpy.
            let word = rest
                .iter()
                .rev()
                .fold(rest.len() as u64, |w, b| (w << 8) | u64::from(*b));
            self.add(word);
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_i32(&mut self, n: i32) {
        self.add(n as u32 as u64);
    }

    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // The high bits are the mixed ones; hashbrown takes its control byte from the top
        // and its index from the bottom, so fold them down.
        self.0 ^ (self.0 >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keys_differing_in_high_bits_only_spread_over_the_low_ones() {
        // hashbrown indexes by the low bits, and a product's low bits see only the low
        // bits of the word: `finish` folds the high ones down.
        let build = BuildHasherDefault::<SeriesHasher>::default();
        let low: HashSet<u64> = (0..10_000u64)
            .map(|i| build.hash_one(i << 32) & 0xfff)
            .collect();
        assert!(low.len() > 256, "{} of 4,096", low.len());
    }

    #[test]
    fn numbers_in_a_key_hash_apart() {
        // A key may hold numbers (the maps are generic over their key): each one counts.
        let build = BuildHasherDefault::<SeriesHasher>::default();
        assert_ne!(build.hash_one(1u8), build.hash_one(2u8));
        assert_ne!(build.hash_one(1u32), build.hash_one(2u32));
        assert_ne!(build.hash_one(1u64), build.hash_one(2u64));
        assert_ne!(build.hash_one(-1i32), build.hash_one(1i32));
        assert_ne!(build.hash_one(-1i64), build.hash_one(1i64));
        assert_ne!(build.hash_one(1usize), build.hash_one(2usize));
    }

    #[test]
    fn keys_that_differ_hash_apart_and_equal_keys_alike() {
        let build = BuildHasherDefault::<SeriesHasher>::default();
        let h = |url: &str, producer: &str| build.hash_one((url, producer));
        assert_eq!(h("https://a.example/", "eu"), h("https://a.example/", "eu"));
        // A URL's bytes moved into the vantage point's are another key.
        assert_ne!(h("https://a.example/", "eu"), h("https://a.example/e", "u"));
        // Also when the bytes are whole words (no last partial word carries a length):
        // each text ends with a byte of its own (`write_u8`).
        assert_ne!(h("https://a.examp", "l"), h("https://a.exam", "pl"));
        assert_ne!(h("abcdefgh", ""), h("", "abcdefgh"));
        let (mut low, mut top) = (HashSet::new(), HashSet::new());
        for i in 0..10_000 {
            let hash = h(&format!("https://site-{i}.example/"), "p");
            low.insert(hash & 0xfff);
            top.insert(hash >> 57);
        }
        // 10,000 keys thrown at random into 4,096 buckets fill ~3,740 of them (1 - e^-2.44);
        // hashbrown's index is the low bits, its control byte the top 7.
        assert!(low.len() > 3_600, "{} of 4,096", low.len());
        assert_eq!(top.len(), 128);
    }
}
