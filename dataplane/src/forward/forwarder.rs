//! [`Forwarder`]: the data-plane thread — receive a batch, look it up in one FIB generation,
//! send it on — and [`ForwarderHandle`], the control plane's only way to reach it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::batch::{BATCH_MAX, PacketBatch};
use super::counters::{ForwarderCounters, SharedCounters};
use super::decide::{DropReason, Verdict, decide};
use super::io::PacketIo;
use super::local::LocalEndpoints;
use crate::fib::{Fib, FibReader};
use crate::wire::nexlink::{NodeTag, SessionId, StreamId};

/// Longest a forwarder waits in one receive call, so it notices shutdown within this bound.
pub const RECV_TIMEOUT_MS_MAX: u64 = 1000;

/// Consecutive failed receive calls after which the forwarder thread stops with the last error
/// (a broken socket would otherwise spin). Any successful receive resets the count.
pub const RECV_ERRORS_CONSECUTIVE_MAX: u32 = 64;

/// How a forwarder runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// The OS thread's name (shows in `top -H` and panics).
    pub thread_name: String,
    /// Longest wait in one receive call: bounds how long shutdown takes. At most
    /// [`RECV_TIMEOUT_MS_MAX`].
    pub recv_timeout: Duration,
    /// Send consecutive frames to one next hop as one UDP GSO send where the backend and the
    /// kernel can ([`PacketIo::set_gso`]; Linux 4.18+). On by default: it cuts the per-frame
    /// send cost, and a refused GSO send falls back to plain sends.
    pub gso: bool,
    /// Drop every datagram whose source IP is not in the FIB generation's allowed-source set
    /// ([`FibTable::allows_source`](crate::fib::FibTable::allows_source)), before any other
    /// check, as `source_not_allowed`. On by default; off, the forwarder forwards for any
    /// source (the operator's escape hatch, and what the forwarding bench compares against).
    pub source_check: bool,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            thread_name: "nexus-forwarder".to_owned(),
            recv_timeout: Duration::from_millis(50),
            gso: true,
            source_check: true,
        }
    }
}

/// Why a forwarder could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// The configuration is out of bounds; nothing was started.
    #[error("recv_timeout {0:?} is above {RECV_TIMEOUT_MS_MAX} ms")]
    RecvTimeout(Duration),
    /// The backend or the thread could not be set up (nothing was started), or receiving
    /// failed [`RECV_ERRORS_CONSECUTIVE_MAX`] times in a row (the thread stopped).
    #[error("forwarder I/O: {0}")]
    Io(#[from] io::Error),
    /// The forwarder thread panicked (a bug); it is stopped.
    #[error("the forwarder thread panicked")]
    Panicked,
}

/// The per-flow hash the forwarder gives the FIB's weighted choice: a mix of (source node tag,
/// session id, stream id), so every frame of one stream takes the same next hop (no reordering
/// across paths) while different streams spread by weight. Deterministic across runs and nodes.
#[inline]
pub fn flow_hash(src: NodeTag, session: SessionId, stream: StreamId) -> u64 {
    // splitmix64's finaliser over each field in turn: cheap, and every input bit reaches every
    // output bit, which the FIB's multiply-shift choice needs in the high bits.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let h = mix(src.0 ^ 0x6e65_7875_735f_666c);
    let h = mix(h ^ session.0);
    mix(h ^ u64::from(stream.0))
}

/// The forwarding loop's state, owned by its thread. Started with [`Forwarder::spawn`].
///
/// Per receive batch: load the FIB generation and the local-endpoint table once (the whole
/// batch sees one generation), then per datagram run [`decide`](super::decide) — source check
/// (with [`ForwarderConfig::source_check`] on), every NexLink receive check, local delivery,
/// hop-limit decrement, FIB lookup with [`flow_hash`], routing-key rewrite — and count its
/// verdict (`forwarded`, `delivered_local`, or the drop reason). A datagram from the same IP
/// as the last one the batch allowed is not probed against the allowed sources again.
///
/// Only the frame (header + declared payload) is sent on; bytes after it in the datagram are
/// not part of it and are dropped. The thread never waits on the control plane: its only shared
/// reads are the FIB's and the local table's atomic pointers, once per batch, and it reads no
/// clock (waits are the backend's receive timeout). The allowed-source set is part of the FIB
/// generation, so a batch checks sources and routes against the same generation.
pub struct Forwarder<I> {
    io: I,
    fib: FibReader,
    source_check: bool,
    local: Arc<ArcSwap<LocalEndpoints>>,
    shared: Arc<SharedCounters>,
    stop: Arc<AtomicBool>,
    recv_timeout: Duration,
    rx: PacketBatch,
    tx: PacketBatch,
    counters: ForwarderCounters,
}

impl<I: PacketIo + 'static> Forwarder<I> {
    /// Starts a forwarder on its own OS thread, receiving on `io`, routing with the current
    /// generation of `fib` (installs made later on `fib` are picked up at the next batch), and
    /// delivering the keys of `local` to their endpoints.
    ///
    /// Fails, starting nothing, if the config is out of bounds, the backend has no local
    /// address, or the thread cannot be spawned.
    pub fn spawn(
        config: ForwarderConfig,
        fib: &Fib,
        local: LocalEndpoints,
        io: I,
    ) -> Result<ForwarderHandle, ForwarderError> {
        if config.recv_timeout > Duration::from_millis(RECV_TIMEOUT_MS_MAX) {
            return Err(ForwarderError::RecvTimeout(config.recv_timeout));
        }
        let local_addr = io.local_addr()?;
        let mut io = io;
        let _gso_on = io.set_gso(config.gso);
        let local = Arc::new(ArcSwap::from_pointee(local));
        let shared = Arc::new(SharedCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let forwarder = Forwarder {
            io,
            fib: fib.reader(),
            source_check: config.source_check,
            local: Arc::clone(&local),
            shared: Arc::clone(&shared),
            stop: Arc::clone(&stop),
            recv_timeout: config.recv_timeout,
            rx: PacketBatch::new(),
            tx: PacketBatch::new(),
            counters: ForwarderCounters::default(),
        };
        let thread = thread::Builder::new()
            .name(config.thread_name)
            .spawn(move || forwarder.run())?;
        Ok(ForwarderHandle {
            local_addr,
            local,
            shared,
            stop,
            thread: Some(thread),
        })
    }
}

impl<I: PacketIo> Forwarder<I> {
    fn run(mut self) -> io::Result<()> {
        let mut errors_in_a_row = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            self.rx.clear();
            match self.io.recv_batch(&mut self.rx, self.recv_timeout) {
                Ok(_) => errors_in_a_row = 0,
                Err(e) => {
                    self.counters.recv_errors += 1;
                    self.shared.publish(&self.counters);
                    errors_in_a_row += 1;
                    if errors_in_a_row >= RECV_ERRORS_CONSECUTIVE_MAX {
                        return Err(e);
                    }
                    continue;
                }
            }
            if self.rx.is_empty() {
                continue;
            }
            self.forward_batch();
            self.send_batch();
            let stats = self.io.stats();
            self.counters.gso_sends = stats.gso_sends;
            self.counters.gso_segments = stats.gso_segments;
            self.counters.gso_fallbacks = stats.gso_fallbacks;
            self.shared.publish(&self.counters);
        }
        Ok(())
    }

    /// Decides every datagram of `rx`, filling `tx` with the frames to send.
    fn forward_batch(&mut self) {
        let table = self.fib.table();
        let local = self.local.load();
        let counters = &mut self.counters;
        counters.batches += 1;
        counters.generation = table.generation();
        self.tx.clear();
        // The last source this batch's generation allowed: a batch usually holds runs of
        // datagrams from one sender, and comparing two addresses is cheaper than a hash probe.
        // Per batch, because the next batch may see another generation.
        let mut allowed_last: Option<IpAddr> = None;
        for index in 0..self.rx.len() {
            counters.received += 1;
            let source = self.rx.addr(index).ip();
            let check = (self.source_check && allowed_last != Some(source)).then_some(source);
            let datagram = self.rx.get_mut(index);
            match decide(table, &local, check, datagram) {
                Verdict::Forward { to, len } => {
                    push(&mut self.tx, &datagram[..len], to);
                    counters.forwarded += 1;
                }
                Verdict::Local { to, len } => {
                    push(&mut self.tx, &datagram[..len], to);
                    counters.delivered_local += 1;
                }
                Verdict::Drop(reason) => {
                    counters.dropped[reason.index()] += 1;
                    if reason == DropReason::SOURCE_NOT_ALLOWED {
                        continue;
                    }
                }
            }
            if check.is_some() {
                allowed_last = check;
            }
        }
    }

    /// Sends all of `tx`, skipping (and counting) each datagram the backend refuses.
    fn send_batch(&mut self) {
        let mut from = 0;
        // Each pass sends at least one datagram or skips one, so this ends within len passes.
        while from < self.tx.len() {
            match self.io.send_batch(&self.tx, from) {
                Ok(sent) if sent > 0 => from += sent,
                Ok(_) | Err(_) => {
                    self.counters.send_errors += 1;
                    from += 1;
                }
            }
        }
    }
}

fn push(tx: &mut PacketBatch, frame: &[u8], to: SocketAddr) {
    // tx has BATCH_MAX slots of DATAGRAM_BYTES_MAX, and each received datagram (at most that
    // long) yields at most one frame.
    let pushed = tx.push(frame, to);
    assert!(pushed, "send batch overflow: more than {BATCH_MAX} frames");
}

impl<I> std::fmt::Debug for Forwarder<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Reads a forwarder's counters from anywhere ([`ForwarderHandle::counters_reader`]).
#[derive(Clone, Debug)]
pub struct CountersReader(Arc<SharedCounters>);

impl CountersReader {
    /// The counters as of the forwarder's last published batch.
    pub fn snapshot(&self) -> ForwarderCounters {
        self.0.snapshot()
    }
}

/// The control plane's handle on a running forwarder: counters, the local-endpoint table, and
/// shutdown. Dropping it also stops the forwarder and joins its thread.
#[derive(Debug)]
pub struct ForwarderHandle {
    local_addr: SocketAddr,
    local: Arc<ArcSwap<LocalEndpoints>>,
    shared: Arc<SharedCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ForwarderHandle {
    /// The address the forwarder receives frames on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters as of the last finished batch.
    pub fn counters(&self) -> ForwarderCounters {
        self.shared.snapshot()
    }

    /// A cloneable reader of the same counters, for exporting them from another task (it stays
    /// valid after the handle is shut down, reading the final values).
    pub fn counters_reader(&self) -> CountersReader {
        CountersReader(self.shared.clone())
    }

    /// Replaces the local-endpoint table; batches that start after this see the new one.
    pub fn set_local_endpoints(&self, local: LocalEndpoints) {
        self.local.store(Arc::new(local));
    }

    /// The local-endpoint table in use.
    pub fn local_endpoints(&self) -> Arc<LocalEndpoints> {
        self.local.load_full()
    }

    /// Whether the thread has stopped (only after [`shutdown`](Self::shutdown), or on a
    /// persistent receive error or a panic, which `shutdown` then reports).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the forwarder and joins its thread, returning its final counters. Takes at most
    /// about one receive timeout plus one batch's sends. Reports a receive error that had
    /// stopped the thread, or a panic.
    pub fn shutdown(mut self) -> Result<ForwarderCounters, ForwarderError> {
        self.stop_and_join()?;
        Ok(self.shared.snapshot())
    }

    fn stop_and_join(&mut self) -> Result<(), ForwarderError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => match thread.join() {
                Ok(result) => result.map_err(ForwarderError::Io),
                Err(_) => Err(ForwarderError::Panicked),
            },
        }
    }
}

impl Drop for ForwarderHandle {
    fn drop(&mut self) {
        // The outcome has nowhere to go from a destructor; `shutdown` reports it.
        let _outcome = self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_depends_on_each_field() {
        let base = flow_hash(NodeTag(1), SessionId(2), StreamId(3));
        assert_eq!(base, flow_hash(NodeTag(1), SessionId(2), StreamId(3)));
        assert_ne!(base, flow_hash(NodeTag(9), SessionId(2), StreamId(3)));
        assert_ne!(base, flow_hash(NodeTag(1), SessionId(9), StreamId(3)));
        assert_ne!(base, flow_hash(NodeTag(1), SessionId(2), StreamId(9)));
        // Swapping fields must not collide (the fields are mixed in turn, not xor-ed).
        assert_ne!(
            flow_hash(NodeTag(2), SessionId(1), StreamId(3)),
            flow_hash(NodeTag(1), SessionId(2), StreamId(3))
        );
    }
}
