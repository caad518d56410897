//! What the simulator's traffic carries: a 40-byte header naming the message (mode, sender,
//! receiver, flow, index, expiry) and a body that is a function of the header. A receiver can
//! therefore check every delivered byte without the sender keeping a copy: the checkers record
//! only what was sent, and compare what arrived by regenerating it.
//!
//! Layout (big-endian): `b"NS"` ‖ mode code (1–4) ‖ 0 ‖ src u32 ‖ dst u32 ‖ flow u64 ‖
//! index u64 ‖ expires_us u64 ‖ total length u32 ‖ body.

use nexus_stream::Mode;

use crate::engine::derive_seed;

/// Header bytes; the smallest message a scenario may send.
pub const HEADER_BYTES: usize = 40;

const MAGIC: [u8; 2] = *b"NS";

/// Which message a payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Header {
    /// Its delivery mode.
    pub mode: Mode,
    /// Sender node index.
    pub src: u32,
    /// Receiver node index.
    pub dst: u32,
    /// Reliable-ordered: the flow (unique per sender); other modes: 0.
    pub flow: u64,
    /// Reliable-ordered: the message's index in its flow (from 0); other modes: a number
    /// unique per sender and mode.
    pub index: u64,
    /// Best-effort: virtual µs after which it must not be delivered; other modes: 0.
    pub expires_us: u64,
}

impl Header {
    /// The payload of `len` bytes (at least [`HEADER_BYTES`]) for this header.
    pub fn encode(&self, len: usize) -> Vec<u8> {
        let len = len.max(HEADER_BYTES);
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.push(self.mode.code());
        out.push(0);
        out.extend_from_slice(&self.src.to_be_bytes());
        out.extend_from_slice(&self.dst.to_be_bytes());
        out.extend_from_slice(&self.flow.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.expires_us.to_be_bytes());
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        let start = self.body_seed();
        out.extend((0..len - HEADER_BYTES).map(|k| body_byte(start, k)));
        out
    }

    /// Parses a payload and checks every body byte; the error says what is wrong.
    pub fn decode(data: &[u8]) -> Result<Header, String> {
        if data.len() < HEADER_BYTES || data[..2] != MAGIC {
            return Err(format!("{} bytes without a header", data.len()));
        }
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&data[at..at + 4]);
            u32::from_be_bytes(b)
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mode = Mode::from_code(data[2]).ok_or_else(|| format!("mode code {}", data[2]))?;
        let h = Header {
            mode,
            src: u32_at(4),
            dst: u32_at(8),
            flow: u64_at(12),
            index: u64_at(20),
            expires_us: u64_at(28),
        };
        let len = u32_at(36) as usize;
        if len != data.len() {
            return Err(format!(
                "{h:?}: {} bytes, the header says {len}",
                data.len()
            ));
        }
        let start = h.body_seed();
        if let Some(k) =
            (0..len - HEADER_BYTES).find(|&k| data[HEADER_BYTES + k] != body_byte(start, k))
        {
            return Err(format!("{h:?}: body byte {k} differs from what was sent"));
        }
        Ok(h)
    }

    fn body_seed(&self) -> u64 {
        derive_seed(
            self.flow ^ self.index.rotate_left(32),
            u64::from(self.src) << 32 | u64::from(self.dst),
            u64::from(self.mode.code()),
        )
    }
}

fn body_byte(seed: u64, k: usize) -> u8 {
    let k = k as u64;
    (seed.rotate_left((k % 64) as u32) ^ k.wrapping_mul(0x9e37_79b9)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_checked() {
        let h = Header {
            mode: Mode::ReliableOrdered,
            src: 3,
            dst: 1,
            flow: 7,
            index: 42,
            expires_us: 0,
        };
        let bytes = h.encode(300);
        assert_eq!(bytes.len(), 300);
        assert_eq!(Header::decode(&bytes), Ok(h));
        for k in [0, 2, 13, 39, 40, 299] {
            let mut bad = bytes.clone();
            bad[k] ^= 1;
            assert!(Header::decode(&bad).is_err(), "byte {k} flipped");
        }
        assert!(Header::decode(&bytes[..299]).is_err());
        let other = Header { index: 43, ..h }.encode(300);
        assert_ne!(bytes[40..], other[40..], "bodies differ per message");
    }
}
