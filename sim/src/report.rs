//! The run report: a summary table for people, JSON for scripts, and an SVG plot of convergence
//! over virtual time.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::core_mode::NetStats;
use crate::invariants::Verdict;
use crate::scenario::{Mode, Scenario};

/// One point of the convergence curve.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
        RunReport {
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

    /// Writes the convergence plot as SVG.
    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        use plotters::prelude::*;
        let root = SVGBackend::new(path, (800, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let max_t = self.samples.last().map(|s| s.t_s).unwrap_or(1.0).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: nodes with a correct view (seed {})",
                    self.scenario, self.seed
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..max_t, 0f64..1.05f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("virtual time (s)")
            .y_desc("fraction converged")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                self.samples.iter().map(|s| (s.t_s, s.converged)),
                &BLUE,
            ))
            .map_err(|e| e.to_string())?;
        let n = self.nodes.max(1) as f64;
        chart
            .draw_series(LineSeries::new(
                self.samples.iter().map(|s| (s.t_s, s.healthy as f64 / n)),
                &RED.mix(0.6),
            ))
            .map_err(|e| e.to_string())?
            .label("healthy nodes (fraction)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.mix(0.6)));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }
}
