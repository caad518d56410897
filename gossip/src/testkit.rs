//! Test support (feature `testkit`, tests only): the seeded datagram mutator that the decoder
//! mutation tests of this crate and of `nexus-registry` share.

use rand::Rng;
use rand::rngs::StdRng;

/// How [`mutate`] damages a valid encoding.
#[derive(Clone, Copy, Debug)]
pub struct Mutations<'a> {
    /// Most edits applied to one encoding (at least one is).
    pub edits_max: u32,
    /// When set, one more kind of edit writes these bytes back over the start of the encoding,
    /// so the damage behind a valid prefix reaches the decoder beyond its first check.
    pub keep_prefix: Option<&'a [u8]>,
}

/// A copy of one of `corpus`'s encodings, chosen by `rng`, with 1 to `edits_max` edits: a bit
/// flipped, a byte overwritten, a truncation, random bytes inserted, a splice with another
/// encoding (and, with [`Mutations::keep_prefix`], the prefix restored). The same seed gives the
/// same sequence.
///
/// # Panics
///
/// If `corpus` is empty.
pub fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>], how: Mutations<'_>) -> Vec<u8> {
    let mut d = corpus[rng.random_range(0..corpus.len())].clone();
    let kinds = if how.keep_prefix.is_some() { 6 } else { 5 };
    for _ in 0..rng.random_range(1..=how.edits_max) {
        let mut kind = rng.random_range(0..kinds);
        if kind < 2 && d.is_empty() {
            // Nothing to flip or overwrite: the last kind instead.
            kind = kinds - 1;
        }
        match kind {
            0 => {
                let i = rng.random_range(0..d.len());
                d[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..d.len());
                d[i] = rng.random();
            }
            2 => d.truncate(rng.random_range(0..=d.len())),
            3 => {
                let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                let at = rng.random_range(0..=d.len());
                d.splice(at..at, extra);
            }
            4 => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let cut = rng.random_range(0..=d.len());
                d.truncate(cut);
                d.extend_from_slice(&other[rng.random_range(0..=other.len())..]);
            }
            _ => {
                if let Some(prefix) = how.keep_prefix
                    && d.len() >= prefix.len()
                {
                    d[..prefix.len()].copy_from_slice(prefix);
                }
            }
        }
    }
    d
}
