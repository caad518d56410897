//! Swarm testing: one scenario over many seeds, spread over worker threads, listing the seeds
//! whose invariants failed.

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::scenario::Scenario;
use crate::trace::Trace;

/// One failing seed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The first failed invariant.
    pub invariant: String,
    /// What it saw.
    pub detail: String,
}

/// The outcome of a swarm.
#[derive(Clone, Debug, Serialize)]
pub struct SwarmReport {
    /// Scenario name.
    pub scenario: String,
    /// Seeds run.
    pub runs: u64,
    /// Failing seeds, in seed order.
    pub failures: Vec<Failure>,
    /// Wall time, seconds.
    pub wall_s: f64,
}

/// Parses `A..B` (inclusive) or a single seed.
pub fn parse_seeds(text: &str) -> Result<RangeInclusive<u64>, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a seed"))
    };
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b.trim_start_matches('='))?);
            if a > b {
                return Err(format!("{text}: empty range"));
            }
            Ok(a..=b)
        }
        None => {
            let s = parse(text)?;
            Ok(s..=s)
        }
    }
}

/// Runs every seed in `seeds` on `jobs` threads. `on_done` is called after each run (for a
/// progress bar).
pub fn swarm(
    scenario: &Scenario,
    seeds: RangeInclusive<u64>,
    jobs: usize,
    on_done: &(dyn Fn() + Sync),
) -> SwarmReport {
    #[allow(
        clippy::disallowed_methods,
        reason = "wall time is only reported; it never reaches a run"
    )]
    let wall = std::time::Instant::now();
    let next = AtomicU64::new(*seeds.start());
    let end = *seeds.end();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed > end {
                        break;
                    }
                    let outcome = crate::run(scenario, seed, Trace::new(), None);
                    let failure = match outcome {
                        Ok(report) => report.first_failure().map(|v| Failure {
                            seed,
                            invariant: v.invariant.to_owned(),
                            detail: v.detail.clone(),
                        }),
                        Err(e) => Some(Failure {
                            seed,
                            invariant: "scenario".into(),
                            detail: e.to_string(),
                        }),
                    };
                    if let Some(f) = failure
                        && let Ok(mut list) = failures.lock()
                    {
                        list.push(f);
                    }
                    on_done();
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort_by_key(|f| f.seed);
    SwarmReport {
        scenario: scenario.name.clone(),
        runs: end - seeds.start() + 1,
        failures,
        wall_s: wall.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("1..50"), Ok(1..=50));
        assert_eq!(parse_seeds("7"), Ok(7..=7));
        assert!(parse_seeds("5..1").is_err());
        assert!(parse_seeds("a..b").is_err());
    }
}
