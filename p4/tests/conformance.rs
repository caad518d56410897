//! The data plane's packet-level conformance cases through the P4 target: each generation as
//! P4Runtime updates from the controller into the reference pipeline, each datagram through
//! the program in an Ethernet/IPv4/UDP frame. Every case must give the software forwarder's
//! outcome.

use nexus_dataplane::conformance::{self, SoftwarePipeline};
use nexus_p4::reference::ReferenceTarget;

#[test]
fn every_conformance_case_passes_on_the_reference_pipeline() {
    let mut updates = [0u64; 3];
    for case in conformance::cases() {
        // The cases hold for the software forwarder too (the reference for the reference).
        conformance::run(&case, &mut SoftwarePipeline::new()).unwrap_or_else(|e| panic!("{e}"));
        let mut target = ReferenceTarget::new();
        conformance::run(&case, &mut target).unwrap_or_else(|e| panic!("P4 reference: {e}"));
        for (total, n) in updates.iter_mut().zip(target.updates_by_kind) {
            *total += n;
        }
    }
    // The swap and rollback cases need every kind of update.
    assert!(
        updates.iter().all(|n| *n > 0),
        "insert/modify/delete: {updates:?}"
    );
}
