//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum of a byte string is the ones' complement of the ones' complement sum of its
//! 16-bit big-endian words (an odd trailing byte is padded with a zero byte). It is what IPv4,
//! UDP and TCP use, and what P4 targets compute natively (`HashAlgorithm.csum16` in v1model, the
//! `Checksum` extern on Tofino), which is why the NexLink header uses it.
//!
//! For any input with at least one non-zero byte, [`checksum`] never returns `0xffff`, and
//! [`update`] never does either: both produce the same canonical value, so a header updated
//! incrementally is byte-identical to one recomputed from scratch.

/// The ones' complement sum of `data` as 16-bit big-endian words, folded to 16 bits.
///
/// Returns `0` only when every byte is zero; otherwise a value in `1..=0xffff`.
pub fn sum(data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(2);
    // A u64 accumulator cannot overflow: it would take 2^48 words (512 TiB) to carry out.
    let mut acc: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold(acc)
}

/// The Internet checksum of `data`: `!sum(data)`.
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// The checksum after one 16-bit word of the checksummed data changed from `old_word` to
/// `new_word`, given the checksum `old_checksum` before the change (RFC 1624, eqn. 3:
/// `HC' = ~(~HC + ~m + m')`).
///
/// Equation 3 is used, rather than RFC 1141's eqn. 2, because it never produces `0xffff` (the
/// "minus zero" that a full recomputation never yields), so the result equals a recomputation.
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    let acc = u64::from(!old_checksum) + u64::from(!old_word) + u64::from(new_word);
    !fold(acc)
}

/// The checksum after a run of 16-bit words of the checksummed data changed from `old_words`
/// to `new_words` (both the same even length, big-endian words), given the checksum
/// `old_checksum` before the change: RFC 1624 eqn. 3 summed over every changed word,
/// `HC' = ~(~HC + Σ ~m_i + Σ m'_i)`, folded once.
///
/// Equal to applying [`update`] word by word, and, like it, byte-identical to a recomputation
/// when `old_checksum` was valid. Panics if the lengths differ or are odd (a caller bug).
pub fn update_words(old_checksum: u16, old_words: &[u8], new_words: &[u8]) -> u16 {
    assert!(
        old_words.len() == new_words.len() && old_words.len().is_multiple_of(2),
        "update_words over {} old and {} new bytes",
        old_words.len(),
        new_words.len()
    );
    // At most u16::MAX + 2 × len/2 × u16::MAX: no overflow short of 2^47 bytes.
    let mut acc = u64::from(!old_checksum);
    for (old, new) in old_words.chunks_exact(2).zip(new_words.chunks_exact(2)) {
        acc += u64::from(!u16::from_be_bytes([old[0], old[1]]));
        acc += u64::from(u16::from_be_bytes([new[0], new[1]]));
    }
    !fold(acc)
}

/// Folds carries back into the low 16 bits (end-around carry).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves acc <= 0xffff: the cast keeps every bit.
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_numerical_example() {
        // RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[0xab]), 0xab00);
    }

    #[test]
    fn data_with_its_checksum_sums_to_all_ones() {
        let mut data = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(sum(&data), 0xffff);
    }

    #[test]
    fn end_around_carry() {
        // 0xffff + 0x0001 = 0x1_0000 -> 0x0001 after the end-around carry.
        assert_eq!(sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(sum(&[0xff, 0xff, 0xff, 0xff]), 0xffff);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn rfc1624_example_gives_plus_zero() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555, m' = 0x3285. Eqn. 3 gives 0x0000, the value a
        // full recomputation gives; eqn. 2 would give 0xffff.
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn update_words_matches_word_by_word_and_recompute() {
        // A small xorshift keeps the test free of a dev-dependency on rand.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..10_000 {
            let mut data = [0u8; 24];
            for chunk in data.chunks_exact_mut(8) {
                chunk.copy_from_slice(&next().to_be_bytes());
            }
            data[0] |= 0x10; // never all zero
            let before = checksum(&data);
            let start = 2 * (next() % 4) as usize;
            let mut changed = data;
            for chunk in changed[start..start + 16].chunks_exact_mut(8) {
                chunk.copy_from_slice(&next().to_be_bytes());
            }
            let expected = checksum(&changed);
            let old = &data[start..start + 16];
            let new = &changed[start..start + 16];
            assert_eq!(update_words(before, old, new), expected);
            let stepwise =
                old.chunks_exact(2)
                    .zip(new.chunks_exact(2))
                    .fold(before, |checksum, (o, n)| {
                        update(
                            checksum,
                            u16::from_be_bytes([o[0], o[1]]),
                            u16::from_be_bytes([n[0], n[1]]),
                        )
                    });
            assert_eq!(stepwise, expected);
        }
        // Nothing changed: the checksum stays.
        assert_eq!(update_words(0x1234, &[1, 2, 3, 4], &[1, 2, 3, 4]), 0x1234);
    }

    #[test]
    fn update_matches_recompute_for_every_word_value() {
        let data = [0x10, 0x01, 0x02, 0x03, 0x40, 0x00, 0x00, 0x00, 0xde, 0xad];
        let before = checksum(&data);
        for new_word in 0..=u16::MAX {
            let old_word = u16::from_be_bytes([data[4], data[5]]);
            let mut changed = data;
            changed[4..6].copy_from_slice(&new_word.to_be_bytes());
            assert_eq!(
                update(before, old_word, new_word),
                checksum(&changed),
                "word {new_word:#06x}"
            );
        }
    }
}
