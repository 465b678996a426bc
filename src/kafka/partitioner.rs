//! Which partition a keyed record goes to: the Java client's default partitioner
//! (murmur2 of the key, made positive, modulo the partitions), so that every client of
//! the topic agrees where a URL's events are. Pure: it never does I/O.

/// Kafka's murmur2 hash, bit for bit as `org.apache.kafka.common.utils.Utils.murmur2`.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a keyed record.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Apache Kafka's own UtilsTest.testMurmur2.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn the_partition_is_the_hash_made_positive_modulo_the_partitions() {
        // -973932308 & 0x7fffffff = 1173551340; -790332482 -> 1357151166.
        assert_eq!(partition_for(b"21", 3), 1173551340 % 3);
        assert_eq!(partition_for(b"foobar", 7), 1357151166 % 7);
        // Both above happen to be 0: literal answers that are not.
        assert_eq!(partition_for(b"21", 7), 3);
        assert_eq!(partition_for(b"abc", 6), 3);
        assert_eq!(partition_for(b"abc", 1), 0);
        // No partitions (a topic not there yet) counts as one.
        assert_eq!(partition_for(b"abc", 0), 0);
        for key in ["https://a.example/", "https://b.example/", ""] {
            let p = partition_for(key.as_bytes(), 3);
            assert!((0..3).contains(&p));
        }
    }
}
