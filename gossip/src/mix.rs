//! Fixed, unkeyed 64-bit mixing shared by the workspace's cores and the simulator: SplitMix64
//! (a seeded stream and its finaliser, for deriving seeds and "random" choices from one root
//! seed), a multiply-rotate word hash (for hashing byte strings the same way on every platform
//! and every run) and FNV-1a (byte at a time; usable in `const` items). None of this is
//! cryptographic; a peer can choose inputs that collide.

/// SplitMix64's increment (2^64 / φ).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finaliser: every input bit reaches every output bit.
#[inline]
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The next value of the SplitMix64 stream whose state is `state` (advances it).
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN_GAMMA);
    splitmix64_mix(*state)
}

/// An independent seed from a root seed and two labels (say a node index and a purpose): the
/// finaliser over `seed ^ a·γ ^ b·c`, so every generator of a run can take its seed from one
/// root and the root fixes the run.
#[inline]
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    splitmix64_mix(seed ^ a.wrapping_mul(GOLDEN_GAMMA) ^ b.wrapping_mul(0xbf58_476d_1ce4_e5b9))
}

/// A multiply-rotate hash that takes eight bytes per step: `state = (state <<< 23 ^ word) · γ`.
/// Small, dependency-free and the same on every platform. Feed it with [`WordHash::word`] and
/// [`WordHash::words`]; read [`WordHash::state`] (or finalise it yourself where the low and
/// high bits must both depend on every input bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordHash(u64);

impl WordHash {
    /// A hash starting from `state`.
    pub const fn new(state: u64) -> Self {
        WordHash(state)
    }

    /// The state so far.
    pub const fn state(self) -> u64 {
        self.0
    }

    /// Mixes in one word.
    #[inline]
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(23) ^ w).wrapping_mul(GOLDEN_GAMMA);
    }

    /// Mixes in `bytes` as little-endian words, the last one zero-padded (always at least one
    /// word, so a trailing partial word counts). The length is not mixed in: callers that hash
    /// several strings in a row mix it in themselves.
    pub fn words(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(w));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(tail));
    }
}

/// FNV-1a's 64-bit offset basis: the state to start [`fnv1a64`] from.
pub const FNV1A64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a (64 bits) continued from `state` over `bytes`; start from [`FNV1A64_OFFSET`] for the
/// standard hash. A `const fn`, so a fingerprint of an embedded file is a compile-time constant.
pub const fn fnv1a64(mut state: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        state = (state ^ bytes[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64's published output for seed 1234567 (the reference C implementation).
    #[test]
    fn splitmix64_matches_the_reference_stream() {
        let mut state = 1_234_567;
        let got: Vec<u64> = (0..3).map(|_| splitmix64(&mut state)).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }

    /// FNV-1a 64's published test vectors.
    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(FNV1A64_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV1A64_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV1A64_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        let split = fnv1a64(fnv1a64(FNV1A64_OFFSET, b"foo"), b"bar");
        assert_eq!(split, fnv1a64(FNV1A64_OFFSET, b"foobar"));
    }

    #[test]
    fn derived_seeds_differ_by_label_and_root() {
        let base = derive_seed(7, 1, 2);
        assert_eq!(base, derive_seed(7, 1, 2));
        assert_ne!(base, derive_seed(8, 1, 2));
        assert_ne!(base, derive_seed(7, 2, 2));
        assert_ne!(base, derive_seed(7, 1, 3));
        assert_ne!(derive_seed(7, 1, 2), derive_seed(7, 2, 1));
    }

    #[test]
    fn word_hash_sees_every_byte_and_the_padding() {
        let hash = |bytes: &[u8]| {
            let mut h = WordHash::new(bytes.len() as u64);
            h.words(bytes);
            h.state()
        };
        assert_ne!(hash(b"abcdefgh"), hash(b"abcdefgi"));
        assert_ne!(hash(b"abcdefgh1"), hash(b"abcdefgh2"));
        assert_ne!(hash(b""), hash(b"\0"));
        let mut twice = WordHash::new(0);
        twice.word(1);
        twice.word(2);
        let mut swapped = WordHash::new(0);
        swapped.word(2);
        swapped.word(1);
        assert_ne!(twice, swapped);
    }
}
