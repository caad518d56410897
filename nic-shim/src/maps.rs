//! The byte layouts of the XDP program's map keys and values (the structs in
//! `bpf/nexus_xdp.c`), written and read without `unsafe`: each type encodes itself into the
//! exact bytes the program reads. [`XdpTarget`](crate::XdpTarget) checks on load that the
//! object's map key and value sizes are these.

use nexus_dataplane::forward::DROP_REASON_COUNT;

/// Most next hops in one group the program reads (its `NEXT_HOPS_MAX`); equal to the FIB's
/// [`NEXT_HOPS_MAX`](nexus_dataplane::fib::NEXT_HOPS_MAX), so every FIB group fits.
pub const NEXT_HOPS_MAX: usize = 64;
const _: () = assert!(NEXT_HOPS_MAX == nexus_dataplane::fib::NEXT_HOPS_MAX);

/// Counter slots: received, forwarded, delivered locally, one per drop reason in the order of
/// [`DROP_REASONS`](nexus_dataplane::forward::DROP_REASONS), then passed to the kernel's stack
/// for a next hop whose MAC is not resolved yet.
pub const COUNTER_SLOTS: usize = 3 + DROP_REASON_COUNT + 1;
/// Index of `received` in the counter map.
pub const COUNTER_RECEIVED: u32 = 0;
/// Index of `forwarded` in the counter map.
pub const COUNTER_FORWARDED: u32 = 1;
/// Index of `delivered_local` in the counter map.
pub const COUNTER_DELIVERED_LOCAL: u32 = 2;
/// Index of the first drop reason in the counter map.
pub const COUNTER_DROP_FIRST: u32 = 3;
/// Index of `to_kernel` (a next hop left to the kernel's stack) in the counter map.
pub const COUNTER_TO_KERNEL: u32 = 3 + DROP_REASON_COUNT as u32;

/// `struct config`: the forwarder's UDP port and whether sources are checked.
pub(crate) fn config_value(port: u16, source_check: bool) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[0..2].copy_from_slice(&port.to_be_bytes());
    out[2] = u8::from(source_check);
    out
}

/// `struct meta`: the generation a table holds.
pub(crate) fn meta_value(generation: u64) -> [u8; 8] {
    generation.to_ne_bytes()
}

/// `struct route_key`: a routing key (wire bytes) within a generation.
pub(crate) fn route_key(generation: u64, key: [u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[0..8].copy_from_slice(&generation.to_ne_bytes());
    out[8..24].copy_from_slice(&key);
    out
}

/// `struct source_key`: an allowed source (IPv4-mapped IPv6 bytes) within a generation.
pub(crate) fn source_key(generation: u64, addr: [u8; 16]) -> [u8; 24] {
    route_key(generation, addr)
}

/// `struct group_key` and `struct hop_key`: an index within a generation.
pub(crate) fn index_key(generation: u64, index: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..8].copy_from_slice(&generation.to_ne_bytes());
    out[8..12].copy_from_slice(&index.to_ne_bytes());
    out
}

/// Size of `struct group`.
pub(crate) const GROUP_VALUE_LEN: usize = 16 + 4 * NEXT_HOPS_MAX;

/// `struct group`: a run of next hops and their cumulative weights.
pub(crate) fn group_value(
    hop_first: u32,
    weight_total: u32,
    cumulative: &[u32],
) -> [u8; GROUP_VALUE_LEN] {
    assert!(
        !cumulative.is_empty() && cumulative.len() <= NEXT_HOPS_MAX,
        "a group holds 1..={NEXT_HOPS_MAX} next hops, not {}",
        cumulative.len()
    );
    let mut out = [0u8; GROUP_VALUE_LEN];
    out[0..4].copy_from_slice(&hop_first.to_ne_bytes());
    // len <= NEXT_HOPS_MAX (asserted): fits in u32.
    out[4..8].copy_from_slice(&(cumulative.len() as u32).to_ne_bytes());
    out[8..12].copy_from_slice(&weight_total.to_ne_bytes());
    for (i, value) in cumulative.iter().enumerate() {
        out[16 + 4 * i..20 + 4 * i].copy_from_slice(&value.to_ne_bytes());
    }
    out
}

/// Size of `struct hop`.
pub(crate) const HOP_VALUE_LEN: usize = 48;

/// `struct hop`: where a frame to one next hop goes, and the key it carries there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HopValue {
    pub(crate) ifindex: u32,
    pub(crate) dst_mac: [u8; 6],
    pub(crate) src_mac: [u8; 6],
    pub(crate) saddr: [u8; 4],
    pub(crate) daddr: [u8; 4],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) rewrite: Option<[u8; 16]>,
    /// Pass the frame to the kernel's stack unchanged (the neighbour is not resolved yet).
    pub(crate) kernel: bool,
}

impl HopValue {
    pub(crate) fn encode(&self) -> [u8; HOP_VALUE_LEN] {
        let mut out = [0u8; HOP_VALUE_LEN];
        out[0..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        out[4] = u8::from(self.rewrite.is_some());
        out[5] = u8::from(self.kernel);
        out[8..14].copy_from_slice(&self.dst_mac);
        out[14..20].copy_from_slice(&self.src_mac);
        out[20..24].copy_from_slice(&self.saddr);
        out[24..28].copy_from_slice(&self.daddr);
        out[28..30].copy_from_slice(&self.sport.to_be_bytes());
        out[30..32].copy_from_slice(&self.dport.to_be_bytes());
        if let Some(key) = self.rewrite {
            out[32..48].copy_from_slice(&key);
        }
        out
    }
}

/// Why a per-CPU counter read could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterDecodeError {
    /// A CPU's value is not one little u64.
    #[error("per-CPU counter value is {len} bytes, expected 8")]
    ValueLength {
        /// The length found.
        len: usize,
    },
}

/// Sums one counter slot's per-CPU values (each a native-endian u64, as the kernel returns
/// them). Wrapping: a counter that wraps past 2^64 keeps counting from 0, as the kernel's does.
pub fn sum_per_cpu<T: AsRef<[u8]>>(values: &[T]) -> Result<u64, CounterDecodeError> {
    let mut total = 0u64;
    for value in values {
        let bytes: [u8; 8] =
            value
                .as_ref()
                .try_into()
                .map_err(|_| CounterDecodeError::ValueLength {
                    len: value.as_ref().len(),
                })?;
        total = total.wrapping_add(u64::from_ne_bytes(bytes));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_sum_and_bad_lengths_are_refused() {
        let values = [5u64.to_ne_bytes().to_vec(), 7u64.to_ne_bytes().to_vec()];
        assert_eq!(sum_per_cpu(&values), Ok(12));
        assert_eq!(sum_per_cpu::<Vec<u8>>(&[]), Ok(0));
        assert_eq!(
            sum_per_cpu(&[vec![0u8; 7]]),
            Err(CounterDecodeError::ValueLength { len: 7 })
        );
        let wrap = [u64::MAX.to_ne_bytes(), 2u64.to_ne_bytes()];
        assert_eq!(sum_per_cpu(&wrap), Ok(1));
    }

    #[test]
    fn hop_layout_matches_the_c_struct() {
        let hop = HopValue {
            ifindex: 0x0102_0304,
            dst_mac: [1, 2, 3, 4, 5, 6],
            src_mac: [7, 8, 9, 10, 11, 12],
            saddr: [10, 0, 0, 1],
            daddr: [10, 0, 0, 2],
            sport: 0x1234,
            dport: 0x5678,
            rewrite: Some([0xaa; 16]),
            kernel: false,
        };
        let bytes = hop.encode();
        assert_eq!(&bytes[0..4], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 0);
        assert_eq!(&bytes[8..14], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(&bytes[20..24], &[10, 0, 0, 1]);
        assert_eq!(&bytes[28..32], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&bytes[32..48], &[0xaa; 16]);
        let plain = HopValue {
            rewrite: None,
            ..hop
        };
        assert_eq!(plain.encode()[4], 0);
        assert_eq!(&plain.encode()[32..48], &[0; 16]);
        let kernel = HopValue {
            kernel: true,
            ..hop
        };
        assert_eq!(kernel.encode()[5], 1);
    }

    #[test]
    fn group_layout_matches_the_c_struct() {
        let bytes = group_value(9, 6, &[1, 3, 6]);
        assert_eq!(&bytes[0..4], &9u32.to_ne_bytes());
        assert_eq!(&bytes[4..8], &3u32.to_ne_bytes());
        assert_eq!(&bytes[8..12], &6u32.to_ne_bytes());
        assert_eq!(&bytes[16..20], &1u32.to_ne_bytes());
        assert_eq!(&bytes[24..28], &6u32.to_ne_bytes());
        assert_eq!(&bytes[28..32], &[0; 4]);
    }
}
