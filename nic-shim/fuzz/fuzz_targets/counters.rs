//! Any bytes as the kernel's answer to a per-CPU counter lookup: `sum_per_cpu` decodes values
//! of exactly 8 bytes into their wrapping sum and refuses any other length with the length
//! found, never panicking. The first input byte picks the value length (0..=15), the rest is
//! cut into values of that length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_nic::{CounterDecodeError, sum_per_cpu};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(first % 16);
    let values: Vec<&[u8]> = if len == 0 {
        vec![&[][..]; rest.len().min(4)]
    } else {
        rest.chunks(len).collect()
    };
    match sum_per_cpu(&values) {
        Ok(sum) => {
            assert!(values.iter().all(|v| v.len() == 8));
            let expected = values.iter().fold(0u64, |acc, v| {
                acc.wrapping_add(u64::from_ne_bytes((*v).try_into().expect("8 bytes")))
            });
            assert_eq!(sum, expected);
        }
        Err(CounterDecodeError::ValueLength { len }) => {
            assert_ne!(len, 8);
            assert!(values.iter().any(|v| v.len() == len));
        }
    }
});
