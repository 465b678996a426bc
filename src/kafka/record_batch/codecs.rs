//! A batch's records decompressed: gzip, snappy (raw as librdkafka and rskafka write it,
//! in xerial chunks as the Java client does), lz4 frames and zstd, each in pure Rust.
//! Whatever the codec, the output is bounded by [`MAX_DECOMPRESSED_BYTES`] before it is
//! allocated or while it is read, so a batch that lies about its size cannot take the
//! consumer's memory; a malformed one is an error, never a panic.

use std::io::Read;

/// The largest batch, once decompressed, that is taken: the broker's own message limit is
/// 1 MiB by default; past this the size given is taken for corruption.
pub(super) const MAX_DECOMPRESSED_BYTES: usize = 128 * 1024 * 1024;

/// The records of a batch whose attributes name `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd),
/// decompressed from `compressed`.
pub(super) fn decompress(codec: i16, compressed: &[u8]) -> Result<Vec<u8>, String> {
    match codec {
        1 => read_bounded("gzip", flate2::read::GzDecoder::new(compressed), compressed),
        2 => unsnappy(compressed),
        3 => read_bounded(
            "lz4",
            lz4_flex::frame::FrameDecoder::new(compressed),
            compressed,
        ),
        4 => match ruzstd::decoding::StreamingDecoder::new(compressed) {
            Ok(decoder) => read_bounded("zstd", decoder, compressed),
            Err(e) => Err(format!("zstd: {e}")),
        },
        other => Err(format!("unknown compression {other}")),
    }
}

/// All that `decoder` gives, at most [`MAX_DECOMPRESSED_BYTES`]: a stream's own sizes are
/// not trusted, the reading stops past the bound.
fn read_bounded(codec: &str, decoder: impl Read, compressed: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(1 << 20));
    decoder
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{codec}: {e}"))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(format!(
            "{codec}: over {MAX_DECOMPRESSED_BYTES} bytes decompressed"
        ));
    }
    Ok(out)
}

/// The Java client's snappy framing (xerial): a header, then chunks of raw snappy, each
/// with its length.
pub(super) const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

/// snappy-compressed records: raw (librdkafka, rskafka) or in xerial chunks (Java).
fn unsnappy(compressed: &[u8]) -> Result<Vec<u8>, String> {
    let Some(mut chunks) = compressed.strip_prefix(XERIAL_MAGIC) else {
        let mut out = Vec::new();
        unsnappy_raw(compressed, &mut out)?;
        return Ok(out);
    };
    // Version and compatible version: both 1 in every client that writes this.
    chunks = chunks.get(8..).ok_or("snappy: a Java header cut short")?;
    let mut out = Vec::new();
    while !chunks.is_empty() {
        let length = chunks.get(..4).ok_or("snappy: a Java chunk cut short")?;
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let chunk = chunks
            .get(4..4 + length)
            .ok_or("snappy: a Java chunk cut short")?;
        unsnappy_raw(chunk, &mut out)?;
        chunks = &chunks[4 + length..];
    }
    Ok(out)
}

/// Append one raw snappy block to `out`, its announced size bounded first.
fn unsnappy_raw(compressed: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let size = snap::raw::decompress_len(compressed).map_err(|e| format!("snappy: {e}"))?;
    if out.len() + size > MAX_DECOMPRESSED_BYTES {
        return Err(format!(
            "snappy: over {MAX_DECOMPRESSED_BYTES} bytes decompressed"
        ));
    }
    let start = out.len();
    out.resize(start + size, 0);
    snap::raw::Decoder::new()
        .decompress(compressed, &mut out[start..])
        .map_err(|e| format!("snappy: {e}"))?;
    Ok(())
}
