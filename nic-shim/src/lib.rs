//! The Nexus NIC target: the software forwarder's per-frame decision as an XDP program, fed the
//! same FIB generations, with next hops resolved from the kernel's neighbour table and AF_XDP
//! sockets for the frames it delivers locally.
//!
//! What it does: `bpf/nexus_xdp.c` (compiled by `build.rs` with clang) parses
//! Ethernet/IPv4/UDP and the NexLink header on the forwarder's UDP port and runs the software
//! forwarder's steps in its order — allowed-source check, every NexLink receive check, local
//! delivery, hop-limit decrement, exact match on the 128-bit routing key, the per-flow weighted
//! next-hop choice (`flow_hash` and `flow_point` bit for bit), the routing-key rewrite, the header
//! checksum — then rewrites the Ethernet, IPv4 and UDP headers for the next hop and sends the
//! frame out with `XDP_TX` or a redirect through a devmap. Drops are counted per CPU under the
//! software forwarder's reason labels. [`XdpTarget`] loads it, attaches it (native or generic),
//! installs generations with atomic swap and rollback ([`XdpTable`] translates a
//! [`FibTable`](nexus_dataplane::fib::FibTable), resolving next hops through [`Neighbours`]),
//! and reads the counters as a [`ForwarderCounters`](nexus_dataplane::forward::ForwarderCounters).
//! [`XskSocket`] is an AF_XDP socket (UMEM and its four rings on raw `libc`; copy mode, or
//! zero-copy with fallback). [`KernelNeighbours`] resolves next hops from the kernel's route,
//! neighbour and link tables over rtnetlink; a next hop whose MAC is not known yet is left to
//! the kernel's stack (its frames passed unchanged). [`XdpPublisher`] is what a node drives:
//! a thread that keeps the program on one interface on the latest published generation,
//! re-resolving next hops and reinstalling when one changes.
//!
//! What it does not do: IPv6 underlay (nor IPv6 neighbours), IPv4 options or fragments (passed
//! to the kernel), ECN marking under congestion (XDP has no queue to watch), and UDP checksums
//! on forwarded frames (sent as zero, which IPv4 allows).
#![deny(missing_docs)]

mod maps;
mod neighbours;
mod publisher;
mod table;
mod target;
mod xsk;

pub use maps::{COUNTER_SLOTS, CounterDecodeError, NEXT_HOPS_MAX, sum_per_cpu};
pub use neighbours::{KernelNeighbours, NeighbourError, decode_reply};
pub use publisher::{XdpPublishStatus, XdpPublisher, XdpPublisherConfig};
pub use table::{
    Egress, Neighbours, StaticNeighbours, TableError, Unresolved, XdpLimits, XdpTable,
};
pub use target::{LOCAL_KEYS_MAX, TestRun, XdpConfig, XdpError, XdpMode, XdpTarget, verdict};
pub use xsk::{XskConfig, XskMode, XskSocket};
