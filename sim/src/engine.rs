//! What every engine of the simulator shares: the node-address scheme and node ids, the seed
//! derivation and its seeded generators, the entry of a scenario engine's event queue, the loop
//! that pops it until the scenario's end, a node's wake-up timer, the network side of a run
//! ([`Wire`]: sending a datagram through the network model, where it goes when it arrives at a
//! crashed, paused or running node, and the timeline's network actions), and the end of a run (violations into the trace, the report). The queue itself is
//! [`crate::queue::EventQueue`]; the overlay engines' event loop is [`crate::overlay_net`].

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::invariants::Verdict;
use crate::net::{Fate, Net};
use crate::queue::EventQueue;
use crate::report::{RunReport, Sample};
use crate::scenario::{Action, Scenario};
use crate::trace::{Trace, TraceEvent};

/// Datagrams buffered for a paused node; later ones are dropped (its socket buffer is full).
pub const PAUSED_INBOX_MAX: usize = 1024;

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams delivered.
    pub delivered: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Datagrams dropped (any reason).
    pub dropped: u64,
}

/// The state of a node a datagram arrives at, in the engines whose nodes crash and pause.
#[derive(Debug)]
pub enum Receiver<'a> {
    /// Running: it takes the datagram.
    Running,
    /// Paused: the datagram waits in its inbox until it resumes.
    Paused(&'a mut VecDeque<(usize, Vec<u8>)>),
    /// Crashed: the datagram is lost.
    Crashed,
}

impl NetStats {
    /// A datagram from `from` arrives at `to` at `t_us`: dropped (`crashed`) at a crashed node,
    /// held at a paused one (dropped, `paused-overflow`, once [`PAUSED_INBOX_MAX`] are held),
    /// otherwise counted and traced as delivered and handed back for the node to take.
    pub fn arrive(
        &mut self,
        trace: &mut Trace,
        t_us: u64,
        (from, to): (usize, usize),
        receiver: Receiver<'_>,
        payload: Vec<u8>,
    ) -> Option<Vec<u8>> {
        match receiver {
            Receiver::Crashed => self.record_drop(trace, t_us, (from, to), "crashed", None),
            Receiver::Paused(inbox) if inbox.len() >= PAUSED_INBOX_MAX => {
                self.record_drop(trace, t_us, (from, to), "paused-overflow", None);
            }
            Receiver::Paused(inbox) => inbox.push_back((from, payload)),
            Receiver::Running => {
                self.record_delivery(trace, t_us, (from, to), &payload);
                return Some(payload);
            }
        }
        None
    }

    /// Counts a datagram dropped at `t_us` and records the drop in the trace.
    pub fn record_drop(
        &mut self,
        trace: &mut Trace,
        t_us: u64,
        (from, to): (usize, usize),
        reason: &'static str,
        payload: Option<&[u8]>,
    ) {
        self.dropped += 1;
        trace.record(
            TraceEvent::Drop {
                t_us,
                from,
                to,
                reason,
            },
            payload,
        );
    }

    /// Counts a datagram delivered at `t_us` and records the delivery (with its bytes) in the
    /// trace.
    pub fn record_delivery(
        &mut self,
        trace: &mut Trace,
        t_us: u64,
        (from, to): (usize, usize),
        payload: &[u8],
    ) {
        self.delivered += 1;
        self.bytes += payload.len() as u64;
        trace.record(
            TraceEvent::Deliver {
                t_us,
                from,
                to,
                bytes: payload.len(),
            },
            Some(payload),
        );
    }
}

/// Port every simulated node uses.
pub const SIM_PORT: u16 = 7946;

/// The simulated address of node `i`: `10.a.b.c:7946` with `a.b.c` = i + 1 (node mode's
/// turmoil hosts have these addresses; the other engines use them as names).
pub fn node_addr(i: usize) -> SocketAddr {
    let v = (i as u32 + 1) & 0x00ff_ffff;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (v >> 16) as u8, (v >> 8) as u8, v as u8),
        SIM_PORT,
    ))
}

/// Inverse of [`node_addr`].
pub fn node_index(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(a) if a.port() == SIM_PORT && a.ip().octets()[0] == 10 => {
            let [_, x, y, z] = a.ip().octets();
            let v = (u32::from(x) << 16) | (u32::from(y) << 8) | u32::from(z);
            (v as usize).checked_sub(1)
        }
        _ => None,
    }
}

/// Derives an independent seed from the run seed and two labels: every generator and every
/// seeded core of a run takes its seed from here, so the run seed fixes the whole run (the
/// workspace's one SplitMix64, [`nexus_gossip::mix::derive_seed`]).
pub use nexus_gossip::mix::derive_seed;

/// The 32 bytes of each of `n` nodes' ids, in node order, from [`seeded_rng`]`(seed, 1, 0)`
/// (with the registry, core mode derives each node's key from them and takes its public half).
pub fn node_id_bytes(seed: u64, n: usize) -> impl Iterator<Item = [u8; 32]> {
    let mut rng = seeded_rng(seed, 1, 0);
    (0..n).map(move |_| {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        id
    })
}

/// A generator seeded with [`derive_seed`]`(seed, a, b)`.
pub fn seeded_rng(seed: u64, a: u64, b: u64) -> StdRng {
    StdRng::seed_from_u64(derive_seed(seed, a, b))
}

/// An entry of a scenario engine's event queue: the kinds every engine schedules, and the
/// engine's own (`X`).
#[derive(Debug)]
pub enum SimEvent<X> {
    /// A datagram arrives.
    Deliver {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
        /// The datagram.
        payload: Vec<u8>,
    },
    /// A node's timer (if `token` is still its current one, see [`WakeTimer`]).
    Wake {
        /// The node.
        node: usize,
        /// Which arming of its timer.
        token: u64,
    },
    /// A network timeline entry (index into `Scenario::timeline`).
    Action(usize),
    /// An invariant sample.
    Sample,
    /// One of the engine's own events.
    Own(X),
}

/// Called with (virtual time, total) as a run advances, for progress bars.
pub type Progress<'a> = &'a mut dyn FnMut(Duration, Duration);

/// The loop of a scenario run: pops events in `(time, sequence)` order until the scenario's
/// end, and calls the progress callback about every 1 % of the run.
pub struct RunLoop<'p> {
    total: Duration,
    end_us: u64,
    step_us: u64,
    next_progress: u64,
    progress: Option<Progress<'p>>,
}

impl std::fmt::Debug for RunLoop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLoop")
            .field("end_us", &self.end_us)
            .finish_non_exhaustive()
    }
}

impl<'p> RunLoop<'p> {
    /// A loop over a run of `duration` virtual time.
    pub fn new(duration: Duration, progress: Option<Progress<'p>>) -> Self {
        let end_us = duration_us(duration);
        let step_us = (end_us / 100).max(1);
        RunLoop {
            total: duration,
            end_us,
            step_us,
            next_progress: step_us,
            progress,
        }
    }

    /// The scenario's end, µs of virtual time.
    pub fn end_us(&self) -> u64 {
        self.end_us
    }

    /// The next event due by the end, with its time; `None` once there is none.
    pub fn next<E>(&mut self, queue: &mut EventQueue<E>) -> Option<(u64, E)> {
        if queue.peek_time()? > self.end_us {
            return None;
        }
        let (at, ev) = queue.pop()?;
        if at >= self.next_progress {
            if let Some(p) = self.progress.as_mut() {
                p(Duration::from_micros(at), self.total);
            }
            self.next_progress = at + self.step_us;
        }
        Some((at, ev))
    }
}

/// A node's wake-up timer in an engine's queue: re-arming it invalidates the wake-up queued
/// before, so only the latest one fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WakeTimer {
    at: Option<u64>,
    token: u64,
}

impl WakeTimer {
    /// Arms the timer for `at` (`None`: disarms it). Returns the token of the wake-up to queue
    /// at that time, or `None` if nothing needs queueing (disarmed, or already armed for `at`).
    pub fn arm(&mut self, at: Option<u64>) -> Option<u64> {
        if at == self.at {
            return None;
        }
        self.at = at;
        self.token += 1;
        at.map(|_| self.token)
    }

    /// Whether a queued wake-up with `token` is the current one; if so the timer is disarmed
    /// (the node re-arms it after its step).
    pub fn fire(&mut self, token: u64) -> bool {
        if token != self.token {
            return false;
        }
        self.at = None;
        true
    }

    /// Forgets the armed time (the next [`WakeTimer::arm`] queues a wake-up even for the same
    /// time), keeping the token, so a wake-up already queued still fires.
    pub fn forget(&mut self) {
        self.at = None;
    }

    /// Invalidates any queued wake-up and disarms the timer (a node crashed).
    pub fn cancel(&mut self) {
        self.token += 1;
        self.at = None;
    }
}

/// Queues the copies of a datagram the network model delivers (one per delay: duplicates are
/// copies; the last one takes the payload).
fn queue_deliveries<X>(
    queue: &mut EventQueue<SimEvent<X>>,
    now_us: u64,
    from: usize,
    to: usize,
    delays: &[Duration],
    payload: Vec<u8>,
) {
    let Some((last, copies)) = delays.split_last() else {
        return;
    };
    for d in copies {
        let payload = payload.clone();
        queue.push(
            now_us + duration_us(*d),
            SimEvent::Deliver { from, to, payload },
        );
    }
    queue.push(
        now_us + duration_us(*last),
        SimEvent::Deliver { from, to, payload },
    );
}

/// The network side every scenario engine drives: the network model, the event queue, the
/// run's counters and the trace. A datagram goes out with [`Wire::send`] and comes in through
/// [`Wire::arrive`]; a timeline action is recorded and applied with [`Wire::act`].
pub struct Wire<X> {
    /// The network model (partitions, loss, delays).
    pub net: Net,
    /// Pending events, earliest `(time, sequence)` first.
    pub queue: EventQueue<SimEvent<X>>,
    /// The run's counters.
    pub stats: NetStats,
    /// Every event of the run.
    pub trace: Trace,
}

impl<X> std::fmt::Debug for Wire<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<X> Wire<X> {
    /// The network of `scenario` run with `seed`, with the scenario's network timeline and the
    /// engine's own timeline queued (see [`queue_timelines`]).
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        trace: Trace,
        own: impl IntoIterator<Item = (Duration, usize, X)>,
    ) -> Self {
        let mut queue = EventQueue::new();
        queue_timelines(&mut queue, scenario, own);
        Wire {
            net: Net::for_scenario(scenario, seed),
            queue,
            stats: NetStats::default(),
            trace,
        }
    }

    /// Sends a datagram from node `from` to node `to` at `now_us` through the network model:
    /// its fate is drawn, then a drop is counted and traced, or its copies are queued for
    /// delivery.
    pub fn send(&mut self, now_us: u64, (from, to): (usize, usize), payload: Vec<u8>) {
        match self.net.route(now_us, from, to, payload.len()) {
            Fate::Drop(reason) => {
                self.stats
                    .record_drop(&mut self.trace, now_us, (from, to), reason, Some(&payload));
            }
            Fate::Deliver(delays) => {
                queue_deliveries(&mut self.queue, now_us, from, to, &delays, payload);
            }
        }
    }

    /// A datagram from `from` arrives at `to` at `now_us` (see [`NetStats::arrive`]): handed
    /// back if the node takes it now.
    pub fn arrive(
        &mut self,
        now_us: u64,
        (from, to): (usize, usize),
        receiver: Receiver<'_>,
        payload: Vec<u8>,
    ) -> Option<Vec<u8>> {
        self.stats
            .arrive(&mut self.trace, now_us, (from, to), receiver, payload)
    }

    /// Records a timeline action at `now_us` and applies it to the network model: `true` if it
    /// was a network action (partition, one-way partition, heal, loss).
    pub fn act(&mut self, now_us: u64, action: &Action) -> bool {
        self.trace.record_action(now_us, action);
        self.net.apply(action)
    }
}

/// How every scenario engine shows itself in `Debug`: `Engine(scenario, seed S, t=Tus)`.
pub fn fmt_engine(
    f: &mut std::fmt::Formatter<'_>,
    engine: &str,
    scenario: &Scenario,
    seed: u64,
    now_us: u64,
) -> std::fmt::Result {
    write!(f, "{engine}({}, seed {seed}, t={now_us}us)", scenario.name)
}

/// The wall-clock start of a run. Wall time is only reported (the speed ratio of virtual to wall
/// time); it never reaches the trace.
#[allow(
    clippy::disallowed_methods,
    reason = "wall time is only reported (speed ratio); it never reaches the trace"
)]
pub fn wall_clock() -> Instant {
    Instant::now()
}

/// The end every scenario run shares: records each failed verdict in the trace as a violation
/// (at the time it was violated; at `end_us` if it names none), closes the trace and builds the
/// report, with the wall time since `wall`.
#[allow(clippy::too_many_arguments)]
pub fn finish_run(
    scenario: &Scenario,
    seed: u64,
    wall: Instant,
    end_us: u64,
    stats: NetStats,
    trace: &mut Trace,
    verdicts: Vec<Verdict>,
    samples: Vec<Sample>,
) -> RunReport {
    for v in verdicts.iter().filter(|v| !v.ok) {
        trace.record(
            TraceEvent::Violation {
                t_us: v.violated_at_s.map_or(end_us, |s| (s * 1e6) as u64),
                invariant: v.invariant,
                detail: v.detail.clone(),
            },
            None,
        );
    }
    let trace_error = trace.finish().err().map(|e| e.to_string());
    RunReport::new(
        scenario,
        seed,
        wall.elapsed(),
        stats,
        trace.hash_hex(),
        trace.events(),
        verdicts,
        samples,
        trace_error,
    )
}

/// Queues the scenario's network timeline together with an engine's own timeline (entries
/// `(time, line in the scenario file, event)`), in time order and file order at one instant.
pub fn queue_timelines<X>(
    queue: &mut EventQueue<SimEvent<X>>,
    scenario: &Scenario,
    own: impl IntoIterator<Item = (Duration, usize, X)>,
) {
    let mut entries: Vec<(Duration, usize, SimEvent<X>)> = scenario
        .timeline
        .iter()
        .enumerate()
        .map(|(k, t)| (t.at, t.index, SimEvent::Action(k)))
        .chain(
            own.into_iter()
                .map(|(at, index, x)| (at, index, SimEvent::Own(x))),
        )
        .collect();
    entries.sort_by_key(|(at, index, _)| (*at, *index));
    for (at, _, ev) in entries {
        queue.push(duration_us(at), ev);
    }
}

/// `d` in µs (saturating).
pub fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0, 1, 255, 256, 65_535, 99_999] {
            assert_eq!(node_index(node_addr(i)), Some(i));
        }
        assert_eq!(node_index("127.0.0.1:80".parse().expect("addr")), None);
        assert_eq!(node_index("10.0.0.0:7946".parse().expect("addr")), None);
    }

    #[test]
    fn derived_seeds_differ_by_label() {
        let s = derive_seed(7, 1, 0);
        assert_eq!(s, derive_seed(7, 1, 0));
        assert_ne!(s, derive_seed(7, 2, 0));
        assert_ne!(s, derive_seed(7, 1, 1));
        assert_ne!(s, derive_seed(8, 1, 0));
    }

    #[test]
    fn run_loop_stops_at_the_end() {
        let mut q = EventQueue::new();
        q.push(5, "a");
        q.push(10, "b");
        q.push(11, "c");
        let mut seen = Vec::new();
        {
            let mut report = |t: Duration, _| seen.push(t);
            let mut run = RunLoop::new(Duration::from_micros(10), Some(&mut report));
            let popped: Vec<_> = std::iter::from_fn(|| run.next(&mut q)).collect();
            assert_eq!(popped, [(5, "a"), (10, "b")]);
        }
        assert_eq!(q.len(), 1);
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn only_the_latest_wake_up_fires() {
        let mut w = WakeTimer::default();
        let first = w.arm(Some(5)).expect("armed");
        assert_eq!(w.arm(Some(5)), None, "same time: nothing new to queue");
        let second = w.arm(Some(3)).expect("re-armed");
        assert!(!w.fire(first));
        assert!(w.fire(second));
        let third = w.arm(Some(9)).expect("armed");
        w.cancel();
        assert!(!w.fire(third));
    }
}
