//! One segment file of the spool: records framed as `length (u32 LE) | CRC-32C of the
//! payload (u32 LE) | payload` (the event's JSON), appended one write per record. Reading
//! stops at the first record that is short or fails its CRC (a write cut by `kill -9` or
//! a crash): everything before it is good, the rest is cut off.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest payload a record may claim: a check event is < 2 KiB; anything larger is a
/// torn or foreign length.
const MAX_PAYLOAD: u32 = 1 << 20;

/// A segment's file name: `seg-0000000000000042.log`, ordered by number.
pub(super) fn path_of(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("seg-{no:016}.log"))
}

/// The segment number of a file name, if it is one.
pub(super) fn number_of(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// `payload` framed as a record.
pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a segment holds: its good records' payloads, and where the good part ends (a
/// torn tail, if any, starts there).
pub(super) struct Contents {
    pub(super) payloads: Vec<Vec<u8>>,
    pub(super) good_bytes: u64,
    pub(super) torn_bytes: u64,
}

/// Read the segment at `path`.
pub(super) fn read(path: &Path) -> std::io::Result<Contents> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let (payloads, good) = parse(&bytes, usize::MAX);
    Ok(Contents {
        payloads,
        good_bytes: good as u64,
        torn_bytes: (bytes.len() - good) as u64,
    })
}

/// Records read back from the middle of a segment.
pub(super) struct Chunk {
    pub(super) payloads: Vec<Vec<u8>>,
    /// Where the next record starts.
    pub(super) next: u64,
    /// A record between `next` and the end is short or fails its CRC: the rest of the
    /// segment cannot be read.
    pub(super) broken: bool,
}

/// At most `max` records of the segment at `path` from byte `from` up to byte `end` (what
/// was written of it so far).
pub(super) fn read_from(path: &Path, from: u64, end: u64, max: usize) -> std::io::Result<Chunk> {
    use std::io::Seek;
    // Enough for `max` records of a usual size, and never less than the largest record.
    let want =
        (end.saturating_sub(from)).min((max as u64).saturating_mul(2048).clamp(2 << 20, 16 << 20));
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(want as usize);
    file.take(want).read_to_end(&mut bytes)?;
    let (payloads, good) = parse(&bytes, max);
    let next = from + good as u64;
    // Nothing whole in a read that could hold a record: short or corrupt.
    let broken = payloads.is_empty() && next < end;
    Ok(Chunk {
        payloads,
        next,
        broken,
    })
}

/// The whole, good records at the start of `bytes` (at most `max`), and where they end.
fn parse(bytes: &[u8], max: usize) -> (Vec<Vec<u8>>, usize) {
    let mut payloads = Vec::new();
    let mut at = 0usize;
    while payloads.len() < max {
        let Some(head) = bytes.get(at..at + 8) else {
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else {
            break;
        };
        if crc32c(payload) != crc {
            break;
        }
        payloads.push(payload.to_vec());
        at += 8 + len as usize;
    }
    (payloads, at)
}

/// CRC-32C (Castagnoli, reflected, as iSCSI and ext4 use it).
pub(super) fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn names_sort_by_number() {
        let p = path_of(Path::new("/s"), 42);
        assert_eq!(p, PathBuf::from("/s/seg-0000000000000042.log"));
        assert_eq!(number_of("seg-0000000000000042.log"), Some(42));
        assert_eq!(number_of("lock"), None);
    }
}
