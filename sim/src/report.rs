//! The run report: a summary table for people, JSON for scripts (`report.json`), an SVG plot of
//! convergence over virtual time (`convergence.svg`) and a self-contained HTML page with every
//! plot (`report.html`, [`crate::html`]).
//!
//! What the report holds never feeds the trace hash: the hash is taken over the trace events
//! alone, before the report is assembled.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::NetStats;
use crate::invariants::Verdict;
use crate::scenario::{Action, Mode, NodeSet, Scenario};

/// The version of `report.json`'s layout. Raised when a field that `nexus sim compare` reads
/// changes meaning or disappears; readers refuse other versions.
pub const REPORT_FORMAT: u32 = 1;

/// One point of the convergence curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Virtual time, seconds.
    pub t_s: f64,
    /// Fraction of healthy nodes whose alive set equals their connected component.
    pub converged: f64,
    /// Healthy (running, not paused) nodes.
    pub healthy: usize,
    /// Datagrams delivered so far.
    pub delivered: u64,
}

/// A moment of a run, in virtual time and in wall-clock time since the run started.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Moment {
    /// Virtual time, seconds.
    pub virtual_s: f64,
    /// Wall-clock time since the run started, seconds.
    pub wall_s: f64,
}

/// When every healthy node's alive set equalled its connected component (core mode), checked
/// every `check_every_s` of virtual time, between and independently of the samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgreementTimes {
    /// Virtual seconds between checks (the resolution of the times below).
    pub check_every_s: f64,
    /// The first check at which every healthy node agreed; `None` if none did.
    pub first: Option<Moment>,
    /// The first check of the agreement that still held at the end of the run; `None` if it
    /// did not hold at the end.
    pub held_since: Option<Moment>,
    /// Views compared in full against their component (the others were decided from a cached
    /// verdict or from the member count).
    pub full_checks: u64,
}

/// Everything one run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Layout version of this report ([`REPORT_FORMAT`]).
    pub format: u32,
    /// Scenario name.
    pub scenario: String,
    /// Fidelity level.
    pub mode: Mode,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Virtual time simulated, seconds.
    pub virtual_s: f64,
    /// Wall-clock time taken, seconds.
    pub wall_s: f64,
    /// Virtual seconds per wall second.
    pub speed: f64,
    /// Datagrams delivered.
    pub messages: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Datagrams dropped (loss, partitions, crashed or stalled receivers).
    pub dropped: u64,
    /// Hash of the event trace.
    pub trace_hash: String,
    /// Events in the trace.
    pub trace_events: u64,
    /// Whether every invariant held.
    pub ok: bool,
    /// One verdict per checker.
    pub invariants: Vec<Verdict>,
    /// The convergence curve.
    pub samples: Vec<Sample>,
    /// Writing `--trace` failed (the hash is still valid).
    pub trace_error: Option<String>,
    /// Registry measurements (core mode, scenarios that use the registry).
    pub registry: Option<RegistrySummary>,
    /// CA measurements (scenarios with a `[ca]` table).
    pub ca: Option<CaSummary>,
    /// When membership agreement held (core mode).
    pub agreement: Option<AgreementTimes>,
    /// NexStream measurements (scenarios with a `[stream]` table).
    pub stream: Option<StreamSummary>,
    /// The scenario's faults as spans of virtual time (from its timeline).
    pub faults: Vec<FaultSpan>,
    /// How long after the last timeline action the convergence curve reached 50 %, 99 % and
    /// 100 %.
    pub convergence: ConvergenceTimes,
    /// The distribution of the delivery latency the run measured, if it measures one
    /// (broadcast probes of partial-view runs, withdrawals of registry runs).
    pub latency: Option<LatencySummary>,
}

/// A fault of the scenario's timeline as a span of virtual time: from the action that starts
/// it to the one that repairs it (`kill`–`restart`, `partition`–`heal`, `pause`–`resume`,
/// `loss`–`loss` with rate 0 or another rate, `skew`–`skew` with drift 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultSpan {
    /// The starting action's name (`kill`, `partition`, `pause`, `loss`, `skew`).
    pub kind: String,
    /// Start, virtual seconds.
    pub from_s: f64,
    /// End, virtual seconds; `None` if nothing in the timeline repairs it.
    pub to_s: Option<f64>,
    /// Nodes it affects (0 = the whole network).
    pub nodes: usize,
    /// What it does, e.g. `n1..n16 | n17..n32` or `rate 0.01`.
    pub detail: String,
}

/// How long after `from_s` (the last timeline action, 0 without one) the convergence curve
/// first reached a share of the healthy nodes, at sample resolution; `None` if it never did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConvergenceTimes {
    /// Virtual time the times count from, seconds.
    pub from_s: f64,
    /// Seconds until half the healthy nodes had a correct view.
    pub p50_s: Option<f64>,
    /// Seconds until 99 % had.
    pub p99_s: Option<f64>,
    /// Seconds until all had.
    pub all_s: Option<f64>,
}

impl ConvergenceTimes {
    /// Reads the times off a convergence curve.
    pub fn from_samples(samples: &[Sample], from_s: f64) -> Self {
        let reach = |share: f64| {
            samples
                .iter()
                .find(|s| s.t_s >= from_s && s.converged + 1e-12 >= share)
                .map(|s| s.t_s - from_s)
        };
        ConvergenceTimes {
            from_s,
            p50_s: reach(0.5),
            p99_s: reach(0.99),
            all_s: reach(1.0),
        }
    }
}

/// Points on a latency CDF (0 %, 1 %, …, 100 %).
const CDF_POINTS: usize = 101;

/// A latency distribution: percentiles and a CDF of a bounded number of points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// What was measured, e.g. `broadcast delivery (probe start to each node)`.
    pub what: String,
    /// Measurements.
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest, milliseconds.
    pub max_ms: f64,
    /// (latency ms, share of measurements at or below it), at every whole percent.
    pub cdf: Vec<(f64, f64)>,
}

impl LatencySummary {
    /// Summarises measurements in milliseconds; `None` when there are none.
    pub fn from_ms(what: &str, mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            // Nearest rank: the smallest value with at least q of the measurements at or below.
            let rank = (q * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Some(LatencySummary {
            what: what.to_owned(),
            count: values.len() as u64,
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: values[values.len() - 1],
            cdf: (0..CDF_POINTS)
                .map(|k| {
                    let q = k as f64 / (CDF_POINTS - 1) as f64;
                    (if k == 0 { values[0] } else { at(q) }, q)
                })
                .collect(),
        })
    }
}

/// Node sets as short text: `n1..n16, n20` (at most four ranges, then `…`).
fn nodes_text(set: &NodeSet) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &i in set {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => ranges.push((i, i)),
        }
    }
    let mut parts: Vec<String> = ranges
        .iter()
        .take(4)
        .map(|&(a, b)| {
            if a == b {
                format!("n{}", a + 1)
            } else {
                format!("n{}..n{}", a + 1, b + 1)
            }
        })
        .collect();
    if ranges.len() > 4 {
        parts.push("…".into());
    }
    parts.join(", ")
}

/// The scenario's faults as spans (see [`FaultSpan`]).
pub fn fault_spans(scenario: &Scenario) -> Vec<FaultSpan> {
    let mut spans: Vec<FaultSpan> = Vec::new();
    // Open spans: index into `spans`, with the nodes they affect.
    let mut open: Vec<(usize, Option<NodeSet>)> = Vec::new();
    let close = |spans: &mut Vec<FaultSpan>,
                 open: &mut Vec<(usize, Option<NodeSet>)>,
                 at: f64,
                 kind: &str,
                 nodes: Option<&NodeSet>| {
        open.retain(|(k, set)| {
            let s = &mut spans[*k];
            let hit = s.kind == kind
                && match (set, nodes) {
                    (Some(a), Some(b)) => !a.is_disjoint(b),
                    _ => true,
                };
            if hit {
                s.to_s = Some(at);
            }
            !hit
        });
    };
    for t in &scenario.timeline {
        let at = t.at.as_secs_f64();
        let mut start = |kind: &str, set: Option<NodeSet>, nodes: usize, detail: String| {
            open.push((spans.len(), set));
            spans.push(FaultSpan {
                kind: kind.to_owned(),
                from_s: at,
                to_s: None,
                nodes,
                detail,
            });
        };
        match &t.action {
            Action::Kill(set) => start("kill", Some(set.clone()), set.len(), nodes_text(set)),
            Action::Pause(set) => start("pause", Some(set.clone()), set.len(), nodes_text(set)),
            Action::Partition(groups) => start(
                "partition",
                None,
                groups.iter().map(|g| g.len()).sum(),
                groups
                    .iter()
                    .map(nodes_text)
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
            Action::PartitionOneWay { from, to } => start(
                "partition",
                None,
                from.len() + to.len(),
                format!("{} → {} cut", nodes_text(from), nodes_text(to)),
            ),
            Action::Loss { nodes, rate } => {
                close(&mut spans, &mut open, at, "loss", nodes.as_ref());
                if *rate > 0.0 {
                    let detail = match nodes {
                        Some(set) => format!("rate {rate} from {}", nodes_text(set)),
                        None => format!("rate {rate}"),
                    };
                    let n = nodes.as_ref().map_or(0, |s| s.len());
                    open.push((spans.len(), nodes.clone()));
                    spans.push(FaultSpan {
                        kind: "loss".into(),
                        from_s: at,
                        to_s: None,
                        nodes: n,
                        detail,
                    });
                }
            }
            Action::Skew { nodes, drift_ppm } => {
                close(&mut spans, &mut open, at, "skew", Some(nodes));
                if *drift_ppm != 0 {
                    open.push((spans.len(), Some(nodes.clone())));
                    spans.push(FaultSpan {
                        kind: "skew".into(),
                        from_s: at,
                        to_s: None,
                        nodes: nodes.len(),
                        detail: format!("{drift_ppm} ppm on {}", nodes_text(nodes)),
                    });
                }
            }
            Action::Restart(set) => close(&mut spans, &mut open, at, "kill", Some(set)),
            Action::Resume(set) => close(&mut spans, &mut open, at, "pause", Some(set)),
            Action::Heal => close(&mut spans, &mut open, at, "partition", None),
        }
    }
    spans
}

/// Sends and deliveries of one NexStream delivery mode, over the whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StreamModeSummary {
    /// The mode's short name (`ro`, `ru`, `be`, `pr`).
    pub mode: &'static str,
    /// Messages or datagrams the endpoints accepted from the applications.
    pub sent: u64,
    /// Messages or datagrams the endpoints delivered to the applications.
    pub delivered: u64,
}

/// What a `[stream]` run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamSummary {
    /// Per mode, in mode order (`ro`, `ru`, `be`, `pr`).
    pub modes: Vec<StreamModeSummary>,
    /// `Established` events (each end of a session counts once).
    pub sessions_established: u64,
    /// Established sessions closed because a MIC was revoked, on either end. A revoked node
    /// that opens a session counts its end as established once it has verified the server's
    /// MIC, until the server's refusal arrives a round trip later: those count here too.
    pub closed_revoked: u64,
    /// Established sessions closed for any other reason (idle timeout, …).
    pub closed_other: u64,
    /// Handshakes refused because a MIC was revoked.
    pub refused_revoked: u64,
    /// Handshakes that failed for any other reason.
    pub refused_other: u64,
    /// Sends the endpoints refused (send buffer full, stream limit, …); not counted as sent.
    pub send_refused: u64,
    /// Streams reset or stopped before they completed.
    pub streams_failed: u64,
    /// Best-effort datagrams receivers dropped as expired, over the sessions open at the end.
    pub be_expired_on_receive: u64,
    /// The first sample at which every intended session was established, seconds.
    pub all_established_s: Option<f64>,
}

impl Default for StreamSummary {
    fn default() -> Self {
        StreamSummary {
            modes: ["ro", "ru", "be", "pr"]
                .into_iter()
                .map(|mode| StreamModeSummary {
                    mode,
                    ..StreamModeSummary::default()
                })
                .collect(),
            sessions_established: 0,
            closed_revoked: 0,
            closed_other: 0,
            refused_revoked: 0,
            refused_other: 0,
            send_refused: 0,
            streams_failed: 0,
            be_expired_on_receive: 0,
            all_established_s: None,
        }
    }
}

impl StreamSummary {
    /// The counters of the mode with this index (`nexus_stream::Mode::index`).
    pub fn mode_mut(&mut self, mode: nexus_stream::Mode) -> &mut StreamModeSummary {
        &mut self.modes[mode.index()]
    }
}

/// What a CA run (`[ca]`) measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CaSummary {
    /// CA voters.
    pub voters: usize,
    /// Client hosts.
    pub clients: usize,
    /// Client attempts recorded.
    pub attempts: u64,
    /// Attempts acknowledged with a definite answer (applied, refused, or read).
    pub acknowledged: u64,
    /// Attempts certainly not applied (no leader, unreachable).
    pub not_applied: u64,
    /// Attempts whose outcome is unknown (deadline passed, connection broke).
    pub unknown: u64,
    /// Certificates every voter held at the end.
    pub certificates: usize,
    /// Revocations every voter held at the end.
    pub revocations: usize,
    /// States the linearizability search visited.
    pub search_states: u64,
}

/// What a run with the capability registry measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RegistrySummary {
    /// Virtual time of the last registry change or fault in the timeline, seconds.
    pub last_change_s: f64,
    /// Seconds from `last_change_s` until every healthy node held exactly the live services of
    /// its connected component (and kept holding them to the end), at sample resolution; `None`
    /// if that never happened.
    pub converged_after_s: Option<f64>,
    /// Per sample: virtual time and the fraction of healthy nodes whose set of live services is
    /// exactly right.
    pub curve: Vec<(f64, f64)>,
    /// Every withdrawal (and lease expiry) and how long until the last healthy node that held
    /// the service dropped it.
    pub withdrawals: Vec<WithdrawTiming>,
    /// Resolves run (scripted and sample).
    pub resolves: u64,
    /// Overlay broadcasts sent by registries (adverts, renewals, tombstones).
    pub adverts_broadcast: u64,
}

/// How fast one withdrawn service disappeared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WithdrawTiming {
    /// Origin node name.
    pub node: String,
    /// Service id.
    pub service: String,
    /// When it was withdrawn (or its lease ran out) at its origin, seconds.
    pub at_s: f64,
    /// Healthy nodes that held it then.
    pub holders: usize,
    /// Seconds until the last of them dropped it (exact, not sampled); `None` if one still
    /// held it at the end.
    pub gone_after_s: Option<f64>,
}

impl RunReport {
    /// Assembles a report.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        wall: Duration,
        stats: NetStats,
        trace_hash: String,
        trace_events: u64,
        invariants: Vec<Verdict>,
        samples: Vec<Sample>,
        trace_error: Option<String>,
    ) -> Self {
        let virtual_s = scenario.duration.as_secs_f64();
        let wall_s = wall.as_secs_f64();
        let last_action_s = scenario
            .timeline
            .iter()
            .map(|t| t.at.as_secs_f64())
            .fold(0.0, f64::max);
        RunReport {
            format: REPORT_FORMAT,
            convergence: ConvergenceTimes::from_samples(&samples, last_action_s),
            faults: fault_spans(scenario),
            latency: None,
            scenario: scenario.name.clone(),
            mode: scenario.mode,
            seed,
            nodes: scenario.nodes,
            virtual_s,
            wall_s,
            speed: if wall_s > 0.0 {
                virtual_s / wall_s
            } else {
                f64::INFINITY
            },
            messages: stats.delivered,
            bytes: stats.bytes,
            dropped: stats.dropped,
            trace_hash,
            trace_events,
            ok: invariants.iter().all(|v| v.ok),
            invariants,
            samples,
            trace_error,
            registry: None,
            ca: None,
            agreement: None,
            stream: None,
        }
    }

    /// The first failed verdict, if any.
    pub fn first_failure(&self) -> Option<&Verdict> {
        self.invariants.iter().find(|v| !v.ok)
    }

    /// A human-readable summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mode = match self.mode {
            Mode::Core => "core",
            Mode::Node => "node",
        };
        let rows = [
            (
                "scenario",
                format!("{} ({mode} mode, seed {})", self.scenario, self.seed),
            ),
            ("nodes", self.nodes.to_string()),
            ("virtual time", format!("{:.1} s", self.virtual_s)),
            ("wall time", format!("{:.2} s", self.wall_s)),
            ("speed", format!("{:.1}× real time", self.speed)),
            (
                "messages",
                format!("{} delivered, {} dropped", self.messages, self.dropped),
            ),
            ("bytes", self.bytes.to_string()),
            ("trace events", self.trace_events.to_string()),
        ];
        for (k, v) in rows {
            out.push_str(&format!("{k:<14} {v}\n"));
        }
        if let Some(a) = &self.agreement {
            let at = |m: &Moment| format!("{:.1} s virtual, {:.2} s wall", m.virtual_s, m.wall_s);
            let text = match (&a.first, &a.held_since) {
                (None, _) => format!("never held (checked every {:.1} s)", a.check_every_s),
                (Some(first), since) => format!(
                    "first held at {} (checked every {:.1} s); {}",
                    at(first),
                    a.check_every_s,
                    match since {
                        Some(s) if s == first => "held from then to the end".to_owned(),
                        Some(s) => format!("held again from {:.1} s to the end", s.virtual_s),
                        None => "not holding at the end".to_owned(),
                    }
                ),
            };
            out.push_str(&format!("{:<14} {text}\n", "agreement"));
        }
        if let Some(r) = &self.registry {
            let converged = match r.converged_after_s {
                Some(s) => format!("{s:.2} s after the last change ({:.1} s)", r.last_change_s),
                None => "never".into(),
            };
            out.push_str(&format!("{:<14} {converged}\n", "registry"));
            let gone: Vec<f64> = r
                .withdrawals
                .iter()
                .filter_map(|w| w.gone_after_s)
                .collect();
            if !r.withdrawals.is_empty() {
                let worst = gone.iter().copied().fold(0.0, f64::max);
                out.push_str(&format!(
                    "{:<14} {} of {} gone everywhere, slowest {:.3} s\n",
                    "withdrawals",
                    gone.len(),
                    r.withdrawals.len(),
                    worst
                ));
            }
            out.push_str(&format!(
                "{:<14} {} resolves, {} adverts broadcast\n",
                "", r.resolves, r.adverts_broadcast
            ));
        }
        if let Some(c) = &self.ca {
            out.push_str(&format!(
                "{:<14} {} voters, {} clients: {} attempts ({} answered, {} not applied, {} unknown)\n",
                "ca", c.voters, c.clients, c.attempts, c.acknowledged, c.not_applied, c.unknown
            ));
            out.push_str(&format!(
                "{:<14} {} certificates, {} revocations on every voter; {} search states\n",
                "", c.certificates, c.revocations, c.search_states
            ));
        }
        if let Some(st) = &self.stream {
            let modes: Vec<String> = st
                .modes
                .iter()
                .map(|m| format!("{} {}/{}", m.mode, m.delivered, m.sent))
                .collect();
            out.push_str(&format!(
                "{:<14} delivered/sent: {}\n",
                "stream",
                modes.join(", ")
            ));
            out.push_str(&format!(
                "{:<14} {} established, {} closed on revocation, {} closed otherwise; \
                 {} refused as revoked, {} refused otherwise; {} sends refused\n",
                "sessions",
                st.sessions_established,
                st.closed_revoked,
                st.closed_other,
                st.refused_revoked,
                st.refused_other,
                st.send_refused
            ));
        }
        out.push_str("invariants:\n");
        for v in &self.invariants {
            out.push_str(&format!(
                "  {:<12} {:<4} {}\n",
                v.invariant,
                if v.ok { "ok" } else { "FAIL" },
                v.detail
            ));
        }
        out
    }

    /// Writes the convergence plot as SVG (the same chart `report.html` shows first).
    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        let svg = crate::plot::line_chart(&crate::html::convergence_chart(self));
        std::fs::write(path, svg).map_err(|e| e.to_string())
    }

    /// Writes `report.html`: the summary, the convergence curve, the latency distribution, the
    /// invariant timelines and the fault schedule, in one self-contained file.
    pub fn write_html(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, crate::html::run_report(self)).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_pair_with_their_repairs() {
        let s = Scenario::parse(
            r#"
name = "f"
nodes = 20
duration = "60s"
[[timeline]]
at = "1s"
action = "loss"
rate = 0.1
[[timeline]]
at = "2s"
action = "loss"
rate = 0.2
[[timeline]]
at = "3s"
action = "kill"
nodes = ["n1..n3", "n7"]
[[timeline]]
at = "4s"
action = "pause"
nodes = ["n10"]
[[timeline]]
at = "5s"
action = "restart"
nodes = ["n1..n3", "n7"]
[[timeline]]
at = "6s"
action = "loss"
rate = 0.0
[[timeline]]
at = "7s"
action = "partition"
groups = [["n1..n10"], ["n11..n20"]]
[[timeline]]
at = "9s"
action = "heal"
[invariants]
converge_within = "20s"
"#,
        )
        .expect("scenario");
        let got = fault_spans(&s);
        let got: Vec<_> = got
            .iter()
            .map(|f| {
                (
                    f.kind.as_str(),
                    f.from_s,
                    f.to_s,
                    f.nodes,
                    f.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("loss", 1.0, Some(2.0), 0, "rate 0.1"),
                ("loss", 2.0, Some(6.0), 0, "rate 0.2"),
                ("kill", 3.0, Some(5.0), 4, "n1..n3, n7"),
                ("pause", 4.0, None, 1, "n10"),
                ("partition", 7.0, Some(9.0), 20, "n1..n10 | n11..n20"),
            ]
        );
    }

    #[test]
    fn percentiles_and_convergence_times() {
        let l = LatencySummary::from_ms("x", (1..=100).map(f64::from).collect()).expect("some");
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(l.cdf[0], (1.0, 0.0));
        assert_eq!(l.cdf[100], (100.0, 1.0));
        assert!(LatencySummary::from_ms("x", vec![f64::NAN]).is_none());
        let sample = |t_s, converged| Sample {
            t_s,
            converged,
            healthy: 4,
            delivered: 0,
        };
        let curve = [
            sample(0.0, 1.0),
            sample(10.0, 0.25),
            sample(12.0, 0.5),
            sample(14.0, 0.75),
            sample(16.0, 1.0),
        ];
        let c = ConvergenceTimes::from_samples(&curve, 10.0);
        assert_eq!(
            (c.p50_s, c.p99_s, c.all_s),
            (Some(2.0), Some(6.0), Some(6.0))
        );
        let never = ConvergenceTimes::from_samples(&curve[..4], 10.0);
        assert_eq!(never.all_s, None);
    }
}
