//! The packet-level conformance cases ([`nexus_dataplane::conformance`]) against the software
//! forwarder's decision ([`nexus_dataplane::forward::decide`], via `SoftwarePipeline`): the
//! reference every other target is compared with must itself pass them.

use nexus_dataplane::conformance::{
    self, Case, Generation, KEY_A, Outcome, PEER, PacketPipeline, SoftwarePipeline, Step,
    WEIGHT_CASE_FLOWS, hop,
};

#[test]
fn every_case_passes_on_the_software_decision() {
    let cases = conformance::cases();
    assert!(cases.len() >= 10, "{} cases", cases.len());
    for case in &cases {
        conformance::run(case, &mut SoftwarePipeline::new()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn case_names_are_unique() {
    let mut names: Vec<&str> = conformance::cases().iter().map(|c| c.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before);
}

fn case(name: &str) -> Case {
    conformance::cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

#[test]
fn weighted_case_splits_flows_about_one_to_three() {
    let case = case("weights_spread_flows_by_weight");
    let (mut light, mut heavy) = (0u64, 0u64);
    for step in &case.steps {
        if let Step::Frame {
            expect: Outcome::Forward { to, .. },
            ..
        } = step
        {
            if *to == hop(1).addr {
                light += 1;
            } else if *to == hop(2).addr {
                heavy += 1;
            } else {
                panic!("unexpected next hop {to}");
            }
        }
    }
    assert_eq!(light + heavy, 2 * WEIGHT_CASE_FLOWS);
    // 1:3 of 400 frames: 100 expected on the light hop; binomial sd ≈ 8.7 (per flow pair).
    assert!((60..=140).contains(&light), "light {light}, heavy {heavy}");
}

/// A pipeline that forwards everything to hop 1 regardless of the table: the runner must catch
/// it (the cases can fail).
struct AlwaysHopOne(SoftwarePipeline);

impl PacketPipeline for AlwaysHopOne {
    fn install(&mut self, g: &Generation) -> Result<(), conformance::GenerationError> {
        self.0.install(g)
    }
    fn rollback(&mut self) -> Result<(), conformance::GenerationError> {
        self.0.rollback()
    }
    fn set_local(
        &mut self,
        local: &std::collections::BTreeMap<nexus_dataplane::fib::RoutingKey, std::net::SocketAddr>,
    ) -> Result<(), conformance::GenerationError> {
        self.0.set_local(local)
    }
    fn process(&mut self, source: std::net::IpAddr, datagram: &[u8]) -> Outcome {
        match self.0.process(source, datagram) {
            Outcome::Forward { frame, .. } => Outcome::Forward {
                to: hop(1).addr,
                frame,
            },
            other => other,
        }
    }
    fn counts(&self) -> conformance::Counts {
        self.0.counts()
    }
}

#[test]
fn a_wrong_pipeline_is_caught() {
    let failures = conformance::cases()
        .iter()
        .filter(|c| conformance::run(c, &mut AlwaysHopOne(SoftwarePipeline::new())).is_err())
        .count();
    // Weights, swap and rollback cases route to other hops.
    assert!(failures >= 3, "{failures} cases caught it");
    let err = conformance::run(
        &case("rollback_restores_the_previous_generation"),
        &mut AlwaysHopOne(SoftwarePipeline::new()),
    )
    .expect_err("hop 2 expected before the rollback");
    assert!(err.to_string().contains("step 2"), "{err}");
}

#[test]
fn rollback_without_a_previous_generation_is_refused() {
    let mut p = SoftwarePipeline::new();
    assert!(p.rollback().is_err());
    p.install(&Generation {
        generation: 1,
        routes: [(KEY_A, vec![hop(1)])].into_iter().collect(),
        sources: vec![PEER],
    })
    .expect("installs");
    assert!(
        p.rollback().is_err(),
        "one generation: nothing to return to"
    );
}
