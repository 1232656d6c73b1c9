//! Compressing and inflating whole messages the RFC 7692 way: raw DEFLATE, each message
//! ended with a sync flush whose trailing `00 00 ff ff` is left off the wire (§7.2.1) and
//! put back before inflating (§7.2.2).
//!
//! Compressors and inflaters are big (≈ 256 KiB and ≈ 40 KiB with a 15-bit window), so
//! a connection owns one only when context takeover requires it to remember earlier
//! messages. Every other compression or inflation borrows a per-thread one and resets it
//! first, which is exactly "no context takeover".

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use switchboard_hub::FrameCompressor;

/// The four bytes a sync flush ends with; stripped when sending, restored when reading.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the limit (a zip bomb, or just too big).
    #[error("message over the size limit once decompressed")]
    TooBig,
    /// The payload is not valid DEFLATE data.
    #[error("invalid compressed data: {0}")]
    Corrupt(String),
}

/// A compressor whose window is `bits` (9 to 15) and level `level` (0 to 9).
pub fn compressor(level: u32, bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits.clamp(9, 15))
}

/// An inflater for windows up to `bits` (a larger one reads anything a smaller one can).
pub fn inflater(bits: u8) -> Decompress {
    Decompress::new_with_window_bits(false, bits.clamp(9, 15))
}

/// Compresses `input` as one message into `out` (appended), continuing `c`'s stream: the
/// caller resets `c` first for no context takeover.
pub fn compress_into(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let in_before = c.total_in();
    out.reserve(input.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(c.total_in() - in_before).map_err(|e| e.to_string())?;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(256));
        }
        c.compress_vec(&input[consumed..], out, FlushCompress::Sync)
            .map_err(|e| e.to_string())?;
        let consumed = usize::try_from(c.total_in() - in_before).map_err(|e| e.to_string())?;
        // Done when everything went in and the flush did not run out of room (zlib:
        // "if deflate returns with avail_out == 0, call it again").
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out[start..].ends_with(&SYNC_TAIL) {
        out.truncate(out.len() - SYNC_TAIL.len());
    }
    Ok(())
}

/// Inflates one message's payload (`compressed`, the tail not yet restored) into `out`,
/// continuing `d`'s stream, refusing to produce more than `limit` bytes. Returns true
/// when the sender ended the DEFLATE stream (a final block): `d` must then be reset
/// before the next message.
pub fn inflate_into(
    d: &mut Decompress,
    compressed: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<bool, InflateError> {
    let corrupt = |e: &dyn std::fmt::Display| InflateError::Corrupt(e.to_string());
    for input in [compressed, &SYNC_TAIL[..]] {
        let in_before = d.total_in();
        loop {
            let consumed = usize::try_from(d.total_in() - in_before).map_err(|e| corrupt(&e))?;
            if out.len() == out.capacity() {
                // Grow towards the limit, one past it at most, so that a bomb is caught
                // after at most `limit` bytes of output.
                let room = (limit + 1).saturating_sub(out.len());
                if room == 0 {
                    return Err(InflateError::TooBig);
                }
                out.reserve_exact(room.min(out.capacity().max(4096)));
            }
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|e| corrupt(&e))?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                return Ok(true);
            }
            let consumed = usize::try_from(d.total_in() - in_before).map_err(|e| corrupt(&e))?;
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
            if d.total_in() == in0 && d.total_out() == out0 && out.len() < out.capacity() {
                return Err(InflateError::Corrupt("no progress".into()));
            }
        }
    }
    Ok(false)
}

thread_local! {
    /// Per-thread compressors by settings key, reset before each message.
    static COMPRESSORS: RefCell<Vec<(u64, Compress)>> = const { RefCell::new(Vec::new()) };
    /// A per-thread inflater (15-bit window), reset before each message.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one message with no context: a per-thread compressor for these settings,
/// reset first. `None` when compression fails (never expected) or does not shrink it.
pub fn compress_alone(level: u32, bits: u8, input: &[u8]) -> Option<Bytes> {
    let key = settings_key(level, bits);
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let i = match all.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                all.push((key, compressor(level, bits)));
                all.len() - 1
            }
        };
        let c = &mut all[i].1;
        c.reset();
        let mut out = Vec::new();
        if let Err(e) = compress_into(c, input, &mut out) {
            tracing::error!(error = %e, "compression failed; sending uncompressed");
            c.reset();
            return None;
        }
        (out.len() < input.len()).then(|| Bytes::from(out))
    })
}

/// Inflates one message compressed with no context, with a per-thread inflater.
pub fn inflate_alone(
    compressed: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), InflateError> {
    INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(|| inflater(15));
        d.reset(false);
        let r = inflate_into(d, compressed, limit, out).map(|_| ());
        // Do not let an error leave state behind for the next message on this thread.
        d.reset(false);
        r
    })
}

fn settings_key(level: u32, bits: u8) -> u64 {
    (u64::from(level) << 8) | u64::from(bits)
}

/// The shared compressor of connections without server context takeover: its output
/// depends only on the message and (level, window), so the hub caches it per message.
#[derive(Debug, Clone, Copy)]
pub struct SharedDeflater {
    pub level: u32,
    pub bits: u8,
    pub min_bytes: usize,
}

impl FrameCompressor for SharedDeflater {
    fn key(&self) -> u64 {
        settings_key(self.level, self.bits)
    }

    fn min_size(&self) -> usize {
        self.min_bytes
    }

    fn compress(&self, payload: &[u8]) -> Option<Bytes> {
        compress_alone(self.level, self.bits, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_like(n: usize) -> Vec<u8> {
        let mut s = String::new();
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!(
                r#"{{"id":{i},"name":"sensor-{i}","value":{}}},"#,
                i * 7 % 13
            ));
            i += 1;
        }
        s.into_bytes()
    }

    #[test]
    fn round_trip_without_context() {
        let msg = json_like(4000);
        let c = compress_alone(6, 15, &msg).unwrap();
        assert!(c.len() < msg.len() / 3, "{} -> {}", msg.len(), c.len());
        assert!(!c.ends_with(&SYNC_TAIL));
        let mut out = Vec::new();
        inflate_alone(&c, msg.len(), &mut out).unwrap();
        assert_eq!(out, msg);
        // The same input and settings give the same bytes: what makes sharing sound.
        assert_eq!(compress_alone(6, 15, &msg).unwrap(), c);
    }

    #[test]
    fn incompressible_input_is_not_compressed() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(compress_alone(6, 15, &noise), None);
    }

    #[test]
    fn context_takeover_shrinks_repeats_and_needs_the_same_inflater() {
        let msg = json_like(1000);
        let mut c = compressor(6, 15);
        let mut d = inflater(15);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        compress_into(&mut c, &msg, &mut first).unwrap();
        compress_into(&mut c, &msg, &mut second).unwrap();
        assert!(
            second.len() < first.len() / 4,
            "{} then {}",
            first.len(),
            second.len()
        );
        for wire in [&first, &second] {
            let mut out = Vec::new();
            assert!(!inflate_into(&mut d, wire, 1 << 20, &mut out).unwrap());
            assert_eq!(out, msg);
        }
        // Without the first message's context, the second cannot be read.
        let mut out = Vec::new();
        assert!(inflate_alone(&second, 1 << 20, &mut out).is_err() || out != msg);
    }

    #[test]
    fn small_windows_round_trip() {
        let msg = json_like(5000);
        for bits in 9..=15 {
            let mut c = compressor(9, bits);
            let mut wire = Vec::new();
            compress_into(&mut c, &msg, &mut wire).unwrap();
            let mut d = inflater(bits);
            let mut out = Vec::new();
            inflate_into(&mut d, &wire, msg.len(), &mut out).unwrap();
            assert_eq!(out, msg, "{bits} bits");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let c = compress_alone(9, 15, &zeros).unwrap();
        assert!(c.len() < 20_000);
        let mut out = Vec::new();
        assert_eq!(
            inflate_alone(&c, 65536, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(out.capacity() <= 2 * 65536 + 4096, "{}", out.capacity());
        let mut out = Vec::new();
        inflate_alone(&c, zeros.len(), &mut out).unwrap();
        assert_eq!(out.len(), zeros.len());
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut out = Vec::new();
        assert!(matches!(
            inflate_alone(&[0xff, 0xff, 0xff, 0xff, 0x13], 1000, &mut out),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn empty_and_final_block_messages() {
        // RFC 7692 §7.2.3.6: an empty message may be sent as a single 0x00 byte.
        let mut out = Vec::new();
        inflate_alone(&[0x00], 10, &mut out).unwrap();
        assert!(out.is_empty());
        // A message ended with BFINAL=1 (what `zlib.compress` produces, header-less).
        let mut c = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        std::io::Write::write_all(&mut c, b"hello hello hello").unwrap();
        let data = c.finish().unwrap();
        let mut d = inflater(15);
        let mut out = Vec::new();
        assert!(inflate_into(&mut d, &data, 100, &mut out).unwrap());
        assert_eq!(out, b"hello hello hello");
    }
}
