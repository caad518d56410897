//! The `[stream]` table: NexStream sessions between the nodes, their traffic per delivery mode,
//! the bounds of the stream checkers, and the `revoke` timeline action (docs/simulator.md,
//! "NexStream in the simulator"). Parsed into a checked [`StreamScenario`]; every error names
//! its field (`stream.pr.p`, `timeline[3].delay`).

use std::time::Duration;

use serde::Deserialize;

use super::{Action, Mode, NodeSet, ScenarioError, TimedAction, err, parse_duration};

/// Most nodes a `[stream]` scenario may have: every node runs real TLS 1.3 handshakes and
/// quinn connections, so runs are kept small.
pub const STREAM_NODES_MAX: usize = 64;
/// Most application messages (or datagrams) per second per session direction and mode.
pub const STREAM_RATE_MAX: f64 = 10_000.0;
/// Most bytes of one reliable message in a scenario.
pub const STREAM_MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Most bytes of one best-effort or probabilistic datagram: it must fit one QUIC datagram at
/// the 1200-byte minimum MTU, whatever the path's MTU discovery found.
pub const STREAM_DATAGRAM_BYTES_MAX: usize = 1000;
/// Most reliable-ordered flows per session.
pub const STREAM_FLOWS_MAX: usize = 64;

/// `[stream]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamFile {
    peers: Option<usize>,
    settle: Option<String>,
    reconnect: Option<String>,
    idle_timeout: Option<String>,
    keep_alive: Option<String>,
    revocation_bound: Option<String>,
    pr_sigmas: Option<f64>,
    pr_margin: Option<f64>,
    ro: Option<ModeFile>,
    ru: Option<ModeFile>,
    be: Option<ModeFile>,
    pr: Option<ModeFile>,
}

/// `[stream.ro]`, `[stream.ru]`, `[stream.be]`, `[stream.pr]` as written; which keys a mode
/// takes is checked per mode.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeFile {
    rate: Option<f64>,
    bytes: Option<usize>,
    flows: Option<usize>,
    expiry: Option<String>,
    p: Option<f64>,
}

/// The traffic of one delivery mode, per session and direction: both ends of every established
/// session send it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamTraffic {
    /// Messages (datagrams) per second, as a Poisson process; 0 sends none.
    pub rate: f64,
    /// Bytes of each message, the simulator's 40-byte header included.
    pub bytes: usize,
    /// Reliable-ordered only: flows per session, used round-robin (opened on first use).
    pub flows: usize,
    /// Best-effort only: each datagram expires this long after it is sent.
    pub expiry: Duration,
    /// Probabilistic only: the delivery probability asked for.
    pub p: f64,
}

/// A `revoke` timeline entry: the CA revokes the MICs of `nodes` at `at`; every other node
/// receives the revocation `delay` later.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedRevoke {
    /// Its position in the scenario file (`timeline[index]`).
    pub index: usize,
    /// When the CA revokes.
    pub at: Duration,
    /// Whose MICs.
    pub nodes: NodeSet,
    /// How long until every other node has the revocation (gossip stands behind it).
    pub delay: Duration,
}

/// A NexStream scenario (`[stream]`; docs/simulator.md, "NexStream in the simulator").
#[derive(Clone, Debug, PartialEq)]
pub struct StreamScenario {
    /// Each node opens a session to this many peers: node `i` to `i+1 … i+peers` (mod N).
    pub peers: usize,
    /// After `duration`: every cut is healed, loss set to 0, traffic stops, and the run goes on
    /// this long before the final delivery check.
    pub settle: Duration,
    /// A node reopens a session to a target peer this long after it closed or was refused.
    pub reconnect: Duration,
    /// quinn closes a session after this long without a packet.
    pub idle_timeout: Duration,
    /// quinn sends a keep-alive after this long without sending.
    pub keep_alive: Duration,
    /// Reliable-ordered traffic.
    pub ro: StreamTraffic,
    /// Reliable-unordered traffic.
    pub ru: StreamTraffic,
    /// Best-effort traffic.
    pub be: StreamTraffic,
    /// Probabilistic traffic.
    pub pr: StreamTraffic,
    /// `stream_revocation`: a node must close every session to a revoked key within this long
    /// after the revocation reached it.
    pub revocation_bound: Duration,
    /// `stream_probability`: standard deviations of the binomial allowed around `p`.
    pub pr_sigmas: f64,
    /// `stream_probability`: allowed error beyond the binomial one (the sender's loss estimate
    /// is measured, not known).
    pub pr_margin: f64,
    /// `revoke` actions, in time order (file order at one instant).
    pub revocations: Vec<TimedRevoke>,
}

impl StreamScenario {
    /// Virtual time at which the run ends: `duration` plus `settle`.
    pub fn end(&self, duration: Duration) -> Duration {
        duration + self.settle
    }
}

/// Parses a `revoke` entry's keys (its `nodes` are resolved by the caller).
pub(super) fn revoke(
    index: usize,
    at: Duration,
    nodes: NodeSet,
    delay: Option<&str>,
    has_stream: bool,
) -> Result<TimedRevoke, ScenarioError> {
    let field = |k: &str| format!("timeline[{index}].{k}");
    if !has_stream {
        return err(
            field("action"),
            "revoke needs a [stream] table (MICs and sessions exist only in stream scenarios)",
        );
    }
    if nodes.is_empty() {
        return err(field("nodes"), "must name at least one node");
    }
    let delay = match delay {
        Some(d) => parse_duration(&field("delay"), d)?,
        None => Duration::ZERO,
    };
    Ok(TimedRevoke {
        index,
        at,
        nodes,
        delay,
    })
}

/// Checks `[stream]` against the rest of the scenario.
pub(super) fn check(
    f: StreamFile,
    mode: Mode,
    n: usize,
    timeline: &[TimedAction],
    mut revocations: Vec<TimedRevoke>,
    other_engine: Option<&'static str>,
    duration: Duration,
) -> Result<StreamScenario, ScenarioError> {
    if mode != Mode::Core {
        return err(
            "mode",
            "a [stream] scenario runs the sans-IO endpoints on core mode's engine: mode = \"core\"",
        );
    }
    if let Some(what) = other_engine {
        return err(
            "stream",
            format!("a scenario runs either [stream] or {what}"),
        );
    }
    if !(2..=STREAM_NODES_MAX).contains(&n) {
        return err(
            "nodes",
            format!("a [stream] scenario has 2..={STREAM_NODES_MAX} nodes"),
        );
    }
    for t in timeline {
        if !matches!(
            t.action,
            Action::Partition(_)
                | Action::PartitionOneWay { .. }
                | Action::Heal
                | Action::Loss { .. }
        ) {
            return err(
                format!("timeline[{}].action", t.index),
                format!(
                    "{} is not simulated with [stream] (partition, heal, loss and revoke are)",
                    t.action.name()
                ),
            );
        }
    }
    let dur = |field: &str, v: &Option<String>, default: Duration| match v {
        Some(text) => parse_duration(&format!("stream.{field}"), text),
        None => Ok(default),
    };
    let peers = f.peers.unwrap_or(2);
    if peers == 0 || peers >= n {
        return err("stream.peers", format!("must be 1..={} (nodes - 1)", n - 1));
    }
    let settle = dur("settle", &f.settle, Duration::from_secs(5))?;
    if settle < Duration::from_secs(1) {
        return err(
            "stream.settle",
            "must be at least 1s (retransmissions after the final heal need time)",
        );
    }
    let reconnect = dur("reconnect", &f.reconnect, Duration::from_millis(500))?;
    if reconnect < Duration::from_millis(10) {
        return err("stream.reconnect", "must be at least 10ms");
    }
    let keep_alive = dur("keep_alive", &f.keep_alive, Duration::from_secs(1))?;
    if keep_alive < Duration::from_millis(10) {
        return err("stream.keep_alive", "must be at least 10ms");
    }
    let idle_timeout = dur("idle_timeout", &f.idle_timeout, Duration::from_secs(10))?;
    if idle_timeout <= keep_alive {
        return err(
            "stream.idle_timeout",
            "must exceed keep_alive (or every quiet session would time out)",
        );
    }
    let revocation_bound = dur(
        "revocation_bound",
        &f.revocation_bound,
        Duration::from_millis(10),
    )?;
    let pr_sigmas = match f.pr_sigmas {
        None => 5.0,
        Some(s) if s.is_finite() && s >= 0.0 => s,
        Some(_) => return err("stream.pr_sigmas", "must be a finite number ≥ 0"),
    };
    let pr_margin = match f.pr_margin {
        None => 0.05,
        Some(m) if (0.0..=1.0).contains(&m) => m,
        Some(_) => return err("stream.pr_margin", "must be in 0..=1"),
    };
    let ro = traffic(
        "ro",
        f.ro,
        Defaults {
            rate: 20.0,
            bytes: 1000,
            bytes_max: STREAM_MESSAGE_BYTES_MAX,
        },
    )?;
    let ru = traffic(
        "ru",
        f.ru,
        Defaults {
            rate: 10.0,
            bytes: 4000,
            bytes_max: STREAM_MESSAGE_BYTES_MAX,
        },
    )?;
    let be = traffic(
        "be",
        f.be,
        Defaults {
            rate: 50.0,
            bytes: 200,
            bytes_max: STREAM_DATAGRAM_BYTES_MAX,
        },
    )?;
    let pr = traffic(
        "pr",
        f.pr,
        Defaults {
            rate: 100.0,
            bytes: 100,
            bytes_max: STREAM_DATAGRAM_BYTES_MAX,
        },
    )?;
    let mut revoked = NodeSet::new();
    for r in &revocations {
        if let Some(twice) = r.nodes.iter().find(|i| revoked.contains(i)) {
            return err(
                format!("timeline[{}].nodes", r.index),
                format!("n{} is already revoked by an earlier entry", twice + 1),
            );
        }
        revoked.extend(&r.nodes);
        if revoked.len() >= n {
            return err(
                format!("timeline[{}].nodes", r.index),
                "at least one node must stay unrevoked",
            );
        }
        if r.at + r.delay > duration {
            return err(
                format!("timeline[{}].delay", r.index),
                "the revocation would reach the nodes after the end of the run",
            );
        }
    }
    revocations.sort_by_key(|r| r.at);
    Ok(StreamScenario {
        peers,
        settle,
        reconnect,
        idle_timeout,
        keep_alive,
        ro,
        ru,
        be,
        pr,
        revocation_bound,
        pr_sigmas,
        pr_margin,
        revocations,
    })
}

struct Defaults {
    rate: f64,
    bytes: usize,
    bytes_max: usize,
}

/// One mode's table: `rate` and `bytes` for all; `flows` only for `ro`, `expiry` only for
/// `be`, `p` only for `pr`.
fn traffic(mode: &str, f: Option<ModeFile>, d: Defaults) -> Result<StreamTraffic, ScenarioError> {
    let f = f.unwrap_or_default();
    let field = |k: &str| format!("stream.{mode}.{k}");
    for (key, set, owner) in [
        ("flows", f.flows.is_some(), "ro"),
        ("expiry", f.expiry.is_some(), "be"),
        ("p", f.p.is_some(), "pr"),
    ] {
        if set && mode != owner {
            return err(field(key), format!("only [stream.{owner}] takes `{key}`"));
        }
    }
    let rate = match f.rate {
        None => d.rate,
        Some(r) if r.is_finite() && (0.0..=STREAM_RATE_MAX).contains(&r) => r,
        Some(_) => {
            return err(
                field("rate"),
                format!("must be 0..={STREAM_RATE_MAX} per second (0 sends none)"),
            );
        }
    };
    let header = crate::stream::payload::HEADER_BYTES;
    let bytes = f.bytes.unwrap_or(d.bytes);
    if bytes < header || bytes > d.bytes_max {
        let why = if d.bytes_max == STREAM_DATAGRAM_BYTES_MAX {
            " (a datagram must fit one QUIC packet at the minimum MTU)"
        } else {
            ""
        };
        return err(
            field("bytes"),
            format!(
                "must be {header}..={} (the simulator's header is {header} bytes){why}",
                d.bytes_max
            ),
        );
    }
    let flows = f.flows.unwrap_or(2);
    if flows == 0 || flows > STREAM_FLOWS_MAX {
        return err(field("flows"), format!("must be 1..={STREAM_FLOWS_MAX}"));
    }
    let expiry = match &f.expiry {
        Some(e) => parse_duration(&field("expiry"), e)?,
        None => Duration::from_millis(30),
    };
    if expiry < Duration::from_millis(1) {
        return err(field("expiry"), "must be at least 1ms");
    }
    let p = f.p.unwrap_or(0.5);
    if !(p > 0.0 && p <= 1.0) {
        return err(field("p"), "must be a probability in (0, 1]");
    }
    Ok(StreamTraffic {
        rate,
        bytes,
        flows,
        expiry,
        p,
    })
}
