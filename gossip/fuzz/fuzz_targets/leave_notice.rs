//! Any bytes as a leave notice: decode fails cleanly or round-trips exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_gossip::LeaveNotice;

fuzz_target!(|data: &[u8]| {
    if let Ok(notice) = LeaveNotice::decode(data) {
        assert_eq!(notice.encode().as_slice(), data);
    }
});
