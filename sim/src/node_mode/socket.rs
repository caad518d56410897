//! [`SimSocket`]: the gossip actor's [`DatagramSocket`] in node mode — a turmoil UDP socket plus
//! the random impairments turmoil's links lack or draw differently (jitter with the scenario's
//! distribution, per-sender loss, duplication, reordering), and the recorder that puts every
//! delivery and every drop it can see into the shared trace.
//!
//! Everything here runs on the simulation's one thread, inside a turmoil host, so the order in
//! which datagrams are recorded is the order turmoil runs hosts and tasks: deterministic for a
//! seed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nexus_actors::env::DatagramSocket;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::{NetStats, SIM_PORT};
use crate::net::Net;
use crate::scenario::JitterDistribution;
use crate::trace::Trace;

pub use crate::engine::{node_addr, node_index};

/// The turmoil host address of node `i` (not loopback: turmoil delivers datagrams to a loopback
/// address back to the sending host).
pub fn node_host(i: usize) -> IpAddr {
    node_addr(i).ip()
}

/// Virtual time of the running host, µs since the start of the run.
pub(super) fn host_now_us() -> u64 {
    turmoil::sim_elapsed()
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        // Only reached outside a host, which this module never is.
        .unwrap_or(0)
}

/// State the sockets and the driver share: the trace, counters and the parts of the network
/// model the sockets apply or consult.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) trace: Trace,
    pub(super) stats: NetStats,
    /// Cuts (partitions), also applied to turmoil's links, and loss rates, which the sockets
    /// apply. Also what the invariant checkers read.
    pub(super) net: Net,
    /// Whether each node's host is running (not crashed).
    pub(super) up: Vec<bool>,
}

impl Shared {
    fn record_drop(&mut self, from: usize, to: usize, reason: &'static str, payload: &[u8]) {
        let t_us = host_now_us();
        self.stats
            .record_drop(&mut self.trace, t_us, (from, to), reason, Some(payload));
    }
}

/// Locks the shared state. A panic while it was held is a bug that already surfaced (the run
/// panics with it); the state itself stays usable.
pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Random impairments applied by the socket (see the module docs of `node_mode`), drawn as core
/// mode's network model draws them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Impairments {
    /// Scale of the extra delay of each datagram.
    pub(super) jitter: Duration,
    /// How that delay is distributed.
    pub(super) distribution: JitterDistribution,
    /// Probability a datagram is sent twice.
    pub(super) duplicate: f64,
    /// Probability a datagram is held back (up to 10 × jitter + 1 ms) so later ones overtake it.
    pub(super) reorder: f64,
}

impl Impairments {
    /// The extra delay of one copy: jitter, plus a hold-back when it is picked for reordering.
    /// The same draws as core mode's `Net` (`net.rs`), so both modes share one distribution.
    fn delay(&self, rng: &mut StdRng) -> Duration {
        crate::net::extra_delay(self.jitter, self.distribution, self.reorder, rng)
    }
}

/// A turmoil UDP socket with seeded impairments and trace recording.
#[derive(Debug)]
pub struct SimSocket {
    inner: Arc<turmoil::net::UdpSocket>,
    node: usize,
    shared: Arc<Mutex<Shared>>,
    rng: Mutex<StdRng>,
    impairments: Impairments,
}

impl SimSocket {
    /// Binds node `node`'s gossip port inside the running host.
    pub(super) async fn bind(
        node: usize,
        shared: Arc<Mutex<Shared>>,
        rng_seed: u64,
        impairments: Impairments,
    ) -> io::Result<Self> {
        let inner =
            turmoil::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, SIM_PORT)))
                .await?;
        Ok(SimSocket {
            inner: Arc::new(inner),
            node,
            shared,
            rng: Mutex::new(StdRng::seed_from_u64(rng_seed)),
            impairments,
        })
    }

    /// Rolls loss, jitter, duplication and reordering for one datagram, in core mode's order:
    /// `None` if it is lost, else the hold-back of each copy.
    fn fate(&self, loss: f64) -> Option<Vec<Duration>> {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loss > 0.0 && rng.random_bool(loss) {
            return None;
        }
        let im = self.impairments;
        let mut holds = vec![im.delay(&mut rng)];
        if im.duplicate > 0.0 && rng.random_bool(im.duplicate) {
            holds.push(im.delay(&mut rng));
        }
        Some(holds)
    }
}

/// Hands one datagram to turmoil, recording a drop first if the simulator's model says the link
/// is cut (turmoil, holding the same cut, then drops it) or the receiver's host is down.
async fn transmit(
    inner: &turmoil::net::UdpSocket,
    shared: &Mutex<Shared>,
    from: usize,
    to: usize,
    payload: &[u8],
    target: SocketAddr,
) -> io::Result<usize> {
    {
        let mut sh = lock(shared);
        if sh.net.is_cut(from, to) {
            sh.record_drop(from, to, "partition", payload);
        } else if !sh.up.get(to).copied().unwrap_or(false) {
            // Nothing is bound at a crashed host: the datagram would vanish there.
            sh.record_drop(from, to, "crashed", payload);
            return Ok(payload.len());
        }
    }
    inner.send_to(payload, target).await
}

impl DatagramSocket for SimSocket {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        let Some(to) = node_index(target) else {
            // Not a simulated node: turmoil refuses it as it would any unknown host.
            return self.inner.send_to(buf, target).await;
        };
        let loss = lock(&self.shared).net.loss_of(self.node);
        let Some(holds) = self.fate(loss) else {
            lock(&self.shared).record_drop(self.node, to, "loss", buf);
            return Ok(buf.len());
        };
        for hold in holds {
            if hold.is_zero() {
                transmit(&self.inner, &self.shared, self.node, to, buf, target).await?;
            } else {
                // Held back (jitter, reordering): sent later by a task of this host, which dies
                // with it on a crash.
                let (inner, shared, from, payload) = (
                    self.inner.clone(),
                    self.shared.clone(),
                    self.node,
                    buf.to_vec(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    // A send error is loss, as for the actor's own sends.
                    let _ = transmit(&inner, &shared, from, to, &payload, target).await;
                });
            }
        }
        Ok(buf.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (len, from) = self.inner.recv_from(buf).await?;
        if let Some(sender) = node_index(from) {
            let t_us = host_now_us();
            let sh = &mut *lock(&self.shared);
            sh.stats
                .record_delivery(&mut sh.trace, t_us, (sender, self.node), &buf[..len]);
        }
        Ok((len, from))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_are_not_loopback() {
        for i in [0, 1, 255, 256, 65_535, 99_999] {
            assert_eq!(node_index(node_addr(i)), Some(i));
            assert!(!node_addr(i).ip().is_loopback());
        }
        assert_eq!(node_index("10.0.0.1:80".parse().expect("addr")), None);
        assert_eq!(node_index("127.0.0.1:7946".parse().expect("addr")), None);
    }

    #[test]
    fn delays_have_the_scenarios_shape() {
        let sample = |distribution, reorder| {
            let im = Impairments {
                jitter: Duration::from_millis(10),
                distribution,
                duplicate: 0.0,
                reorder,
            };
            let mut rng = StdRng::seed_from_u64(4);
            let mut v: Vec<f64> = (0..20_000)
                .map(|_| im.delay(&mut rng).as_secs_f64() * 1e3)
                .collect();
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (mean, v[v.len() * 99 / 100], v[v.len() - 1])
        };
        let (mean, _, max) = sample(JitterDistribution::Uniform, 0.0);
        assert!((4.5..5.5).contains(&mean) && max <= 10.0, "{mean} {max}");
        let (mean, p99, max) = sample(JitterDistribution::Exponential, 0.0);
        assert!(
            (9.0..11.0).contains(&mean) && p99 > 40.0 && max <= 100.0,
            "{mean} {p99} {max}"
        );
        let (_, p99, max) = sample(JitterDistribution::Pareto, 0.0);
        assert!(p99 > 50.0 && max <= 200.0, "{p99} {max}");
        // Reordering adds up to 10 × jitter + 1 ms on top.
        let (mean, _, max) = sample(JitterDistribution::Uniform, 1.0);
        assert!((54.0..56.0).contains(&mean) && max <= 111.0, "{mean} {max}");
    }
}
