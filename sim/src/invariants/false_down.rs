//! **False "down" verdicts (safety, statistical).** A node declaring a peer down when that peer
//! is running, not paused, reachable both ways and undisturbed for longer than a detection cycle
//! is a false positive. Their number per probe period of healthy nodes must stay under
//! `false_down_rate_max`.
//!
//! Why: SWIM trades detection speed for false positives (suspicion exists to keep them rare);
//! each one evicts a healthy endpoint from routing. Under random loss some are expected, so this
//! is a rate, not a zero.

use std::time::Duration;

use nexus_gossip::Event;

use super::{Invariant, Verdict, World};

/// See the module docs.
#[derive(Debug, Default)]
pub struct FalseDown {
    verdicts: u64,
    false_verdicts: u64,
    probe_periods: f64,
    last_sample: Option<Duration>,
    first: Option<(Duration, String)>,
}

impl FalseDown {
    fn rate(&self) -> f64 {
        if self.probe_periods <= 0.0 {
            0.0
        } else {
            self.false_verdicts as f64 / self.probe_periods
        }
    }
}

impl Invariant for FalseDown {
    fn name(&self) -> &'static str {
        "false_down"
    }

    fn on_event(&mut self, world: &World<'_>, observer: usize, event: &Event) {
        let Event::MemberDown { id, left: false } = event else {
            return;
        };
        self.verdicts += 1;
        let Some(subject) = world.index_of(&id.node_id()) else {
            return;
        };
        let t = &world.truth[subject];
        let g = &world.scenario.gossip;
        let settle = g.suspect_to_down + g.probe_period * 2;
        let healthy_and_reachable = t.healthy()
            && t.generation == id.generation()
            && world.net.connected(observer, subject)
            && world.now.saturating_sub(t.disturbed_at) > settle
            && world.now.saturating_sub(world.truth[observer].disturbed_at) > settle;
        if healthy_and_reachable {
            self.false_verdicts += 1;
            if self.first.is_none() {
                self.first = Some((
                    world.now,
                    format!("n{} declared healthy n{} down", observer + 1, subject + 1),
                ));
            }
        }
    }

    fn end_sample(&mut self, world: &World<'_>) {
        let elapsed = world
            .now
            .saturating_sub(self.last_sample.unwrap_or(Duration::ZERO));
        self.last_sample = Some(world.now);
        let healthy = world.truth.iter().filter(|t| t.healthy()).count() as f64;
        self.probe_periods +=
            healthy * elapsed.as_secs_f64() / world.scenario.gossip.probe_period.as_secs_f64();
    }

    fn finish(&mut self, world: &World<'_>) -> Verdict {
        let max = world.scenario.bounds.false_down_rate_max;
        let rate = self.rate();
        let ok = rate <= max;
        let mut detail = format!(
            "{} of {} down verdicts were false; {:.2e} per probe period (max {max:.2e})",
            self.false_verdicts, self.verdicts, rate
        );
        if let Some((t, first)) = &self.first {
            detail.push_str(&format!("; first at {:.3}s: {first}", t.as_secs_f64()));
        }
        Verdict {
            invariant: self.name(),
            ok,
            detail,
            violated_at_s: if ok {
                None
            } else {
                self.first.as_ref().map(|(t, _)| t.as_secs_f64())
            },
        }
    }

    fn violation(&self) -> Option<(Duration, String)> {
        None // A rate: judged at the end.
    }
}
