//! [`XdpTarget`]: the loaded XDP program and its maps — attach, install a generation, roll
//! back, read the counters, run the program on a test frame.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use libbpf_rs::{
    MapCore, MapFlags, MapHandle, MapType, Object, ObjectBuilder, ProgramInput, Xdp, XdpFlags,
};
use nexus_dataplane::fib::{FibTable, RoutingKey};
use nexus_dataplane::forward::{DROP_REASON_COUNT, ForwarderCounters};

use crate::maps::{
    COUNTER_DELIVERED_LOCAL, COUNTER_DROP_FIRST, COUNTER_FORWARDED, COUNTER_RECEIVED,
    COUNTER_SLOTS, COUNTER_TO_KERNEL, CounterDecodeError, GROUP_VALUE_LEN, HOP_VALUE_LEN,
    config_value, group_value, index_key, meta_value, route_key, source_key, sum_per_cpu,
};
use crate::table::{Neighbours, TableError, XdpLimits, XdpTable};

/// The compiled XDP object (`bpf/nexus_xdp.c`, built by `build.rs`).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nexus_xdp.o"));

/// The forwarding program's section name.
const PROGRAM: &str = "nexus_xdp";
/// The pass-through program for the far end of a native-mode veth pair.
const PASS_PROGRAM: &str = "nexus_xdp_pass";

/// Generations the per-generation maps hold at once: current, previous, and the one written.
const GENERATIONS_HELD: u32 = 3;

/// Local-delivery keys the program's `local_keys` map holds (its `max_entries`).
pub const LOCAL_KEYS_MAX: usize = 4096;

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before any socket buffer is allocated (needs driver support; veth has it).
    Native,
    /// In the kernel's generic receive path, on any interface (slower; for testing and for
    /// drivers without XDP).
    Generic,
}

impl XdpMode {
    fn flags(self) -> XdpFlags {
        match self {
            XdpMode::Native => XdpFlags::DRV_MODE,
            XdpMode::Generic => XdpFlags::SKB_MODE,
        }
    }
}

/// How the target is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// The forwarder's UDP port: frames to it are NexLink, and forwarded frames leave from it.
    pub port: u16,
    /// Drop frames whose source IP is not in the generation's allowed-source set, as the
    /// software forwarder's `source_check` does.
    pub source_check: bool,
    /// Map sizes.
    pub limits: XdpLimits,
}

/// Why a target operation failed; each variant says what state changed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The kernel refused the program or its maps (missing privileges or kernel support, or
    /// a verifier refusal). Nothing is loaded.
    #[error("loading the XDP program (needs root, or CAP_BPF and CAP_NET_ADMIN): {0}")]
    Load(#[source] libbpf_rs::Error),
    /// The interface to attach to cannot be found; nothing is loaded.
    #[error("interface {name:?}: {reason}")]
    Interface {
        /// The name asked for.
        name: String,
        /// Why it was not found.
        reason: String,
    },
    /// The rtnetlink socket for neighbour resolution cannot be opened; nothing is loaded.
    #[error(transparent)]
    Netlink(#[from] crate::neighbours::NeighbourError),
    /// The publisher's thread could not be started; nothing is loaded.
    #[error("starting the XDP publisher thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Attaching or detaching failed; the interface's program is unchanged.
    #[error("XDP on interface index {ifindex} ({mode:?}): {source}")]
    Attach {
        /// The interface.
        ifindex: u32,
        /// The mode asked for.
        mode: XdpMode,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// The generation cannot be represented on the target; the installed one is unchanged.
    #[error("{0}; the installed generation is unchanged")]
    Table(#[from] TableError),
    /// The generation is not above every generation installed before; nothing changed.
    #[error("generation {offered} is not above the highest installed generation {installed}")]
    Stale {
        /// The generation offered.
        offered: u64,
        /// The highest installed so far.
        installed: u64,
    },
    /// Writing the generation into the maps failed; what was written was removed and the
    /// installed generation is unchanged.
    #[error(
        "writing generation {generation} into map {map}: {source}; the installed generation is unchanged"
    )]
    Write {
        /// The generation being written.
        generation: u64,
        /// The map.
        map: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// There is no previous generation to roll back to; nothing changed.
    #[error("no previous generation to roll back to")]
    NoPrevious,
    /// [`XdpTarget::reinstall`] was given another generation than the installed one; nothing
    /// changed.
    #[error("reinstalling generation {offered}, but generation {installed} is installed")]
    NotInstalled {
        /// The generation offered.
        offered: u64,
        /// The installed generation (0 if none).
        installed: u64,
    },
    /// More local-delivery keys than the program's map holds; the set is unchanged.
    #[error(
        "{keys} local-delivery keys; the XDP target holds at most {max} (LOCAL_KEYS_MAX); the local keys are unchanged"
    )]
    TooManyLocalKeys {
        /// The keys asked for.
        keys: usize,
        /// The limit.
        max: usize,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// The counter map returned values of an unexpected size.
    #[error(transparent)]
    Counters(#[from] CounterDecodeError),
}

/// What the program did with one test frame ([`XdpTarget::test_run`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The XDP verdict (`XDP_DROP` = 1, `XDP_PASS` = 2, `XDP_TX` = 3, `XDP_REDIRECT` = 4).
    pub verdict: u32,
    /// The frame after the program ran (rewritten and trimmed).
    pub frame: Vec<u8>,
    /// Average time per run as the kernel measured it.
    pub duration: Duration,
}

/// XDP verdict codes (`enum xdp_action`).
pub mod verdict {
    /// `XDP_ABORTED`.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_TX`.
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: u32 = 4;
}

struct Maps {
    current: MapHandle,
    routes: MapHandle,
    groups: MapHandle,
    hops: MapHandle,
    sources: MapHandle,
    local_keys: MapHandle,
    xsks: MapHandle,
    tx_ports: MapHandle,
    counters: MapHandle,
}

/// The XDP forwarder, loaded into the kernel, with its maps.
///
/// Call order: [`XdpTarget::load`] → [`install`](Self::install) (or
/// [`install_fib`](Self::install_fib)) per generation, [`reinstall`](Self::reinstall) when the
/// installed generation's next hops resolve differently, [`rollback`](Self::rollback) to
/// restore the previous one → [`attach`](Self::attach) to one or more interfaces →
/// [`counters`](Self::counters) and [`passed_to_kernel`](Self::passed_to_kernel) any time.
/// Dropping it detaches every attachment it made. [`crate::XdpPublisher`] drives one from a
/// thread of its own.
///
/// A generation's entries are written beside the current generation's (every key carries the
/// install's slot number, a counter of installs), then one update of the `current` array of
/// maps makes it current; the kernel waits for running programs after that update, so when
/// `install` returns no packet is still using the generation before the previous one, whose
/// entries are then removed.
pub struct XdpTarget {
    object: Object,
    maps: Maps,
    config: XdpConfig,
    current: Option<Installed>,
    previous: Option<Installed>,
    /// The slot of the last install (map keys carry it; the program reads it from `current`).
    slot: u64,
    generation_max: u64,
    egress: BTreeSet<u32>,
    local: BTreeSet<[u8; 16]>,
    attached: Vec<(u32, XdpMode)>,
}

/// An installed table and the slot its entries are keyed by.
#[derive(Clone, Debug)]
struct Installed {
    table: Arc<XdpTable>,
    slot: u64,
}

impl std::fmt::Debug for XdpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpTarget")
            .field("config", &self.config)
            .field("generation", &self.generation())
            .field("previous", &self.previous_generation())
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

fn map_handle(object: &Object, name: &'static str) -> Result<MapHandle, XdpError> {
    let map = object
        .maps()
        .find(|map| map.name() == OsStr::new(name))
        .unwrap_or_else(|| panic!("the XDP object defines map {name}"));
    MapHandle::try_from(&map).map_err(|source| XdpError::Map { map: name, source })
}

impl XdpTarget {
    /// Loads the program and creates its maps, sized by `config.limits`. Needs `CAP_BPF` and
    /// `CAP_NET_ADMIN` (or root). Nothing is attached and no generation is installed: until one
    /// is, every frame to the port is dropped as `no_route` (or `source_not_allowed` with the
    /// source check on), as by a software forwarder with an empty table.
    pub fn load(config: XdpConfig) -> Result<XdpTarget, XdpError> {
        let mut builder = ObjectBuilder::default();
        // The object is this crate's own build output: failing to parse it is a build defect.
        let mut open = builder
            .open_memory(OBJECT)
            .unwrap_or_else(|e| panic!("the embedded XDP object does not open: {e}"));
        let limits = config.limits;
        for mut map in open.maps_mut() {
            let per_generation = match map.name().to_str() {
                Some("routes") => Some(limits.routes_max),
                Some("groups") => Some(limits.groups_max),
                Some("hops") => Some(limits.hops_max),
                Some("sources") => Some(limits.sources_max),
                _ => None,
            };
            if let Some(max) = per_generation {
                let entries = max.max(1).saturating_mul(GENERATIONS_HELD);
                map.set_max_entries(entries).map_err(XdpError::Load)?;
                // Entries are allocated as generations are written, not up front.
                map.set_map_flags(libbpf_rs::libbpf_sys::BPF_F_NO_PREALLOC)
                    .map_err(XdpError::Load)?;
            }
        }
        let object = open.load().map_err(XdpError::Load)?;
        let maps = Maps {
            current: map_handle(&object, "current")?,
            routes: map_handle(&object, "routes")?,
            groups: map_handle(&object, "groups")?,
            hops: map_handle(&object, "hops")?,
            sources: map_handle(&object, "sources")?,
            local_keys: map_handle(&object, "local_keys")?,
            xsks: map_handle(&object, "xsks")?,
            tx_ports: map_handle(&object, "tx_ports")?,
            counters: map_handle(&object, "counters")?,
        };
        // The C structs and the Rust encoders must agree (a build defect otherwise).
        assert_eq!(maps.routes.key_size(), 24, "struct route_key");
        assert_eq!(maps.groups.key_size(), 16, "struct group_key");
        assert_eq!(
            maps.groups.value_size() as usize,
            GROUP_VALUE_LEN,
            "struct group"
        );
        assert_eq!(maps.hops.key_size(), 16, "struct hop_key");
        assert_eq!(maps.hops.value_size() as usize, HOP_VALUE_LEN, "struct hop");
        assert_eq!(maps.sources.key_size(), 24, "struct source_key");
        assert_eq!(maps.counters.max_entries() as usize, COUNTER_SLOTS);
        assert_eq!(maps.local_keys.max_entries() as usize, LOCAL_KEYS_MAX);
        let config_map = map_handle(&object, "config")?;
        config_map
            .update(
                &0u32.to_ne_bytes(),
                &config_value(config.port, config.source_check),
                MapFlags::ANY,
            )
            .map_err(|source| XdpError::Map {
                map: "config",
                source,
            })?;
        Ok(XdpTarget {
            object,
            maps,
            config,
            current: None,
            previous: None,
            slot: 0,
            generation_max: 0,
            egress: BTreeSet::new(),
            local: BTreeSet::new(),
            attached: Vec::new(),
        })
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> XdpConfig {
        self.config
    }

    /// The installed generation (0 before the first install).
    pub fn generation(&self) -> u64 {
        self.current.as_ref().map_or(0, |at| at.table.generation)
    }

    /// The generation a [`rollback`](Self::rollback) would restore, if any.
    pub fn previous_generation(&self) -> Option<u64> {
        self.previous.as_ref().map(|at| at.table.generation)
    }

    /// Translates `table` ([`XdpTable::from_fib`], with this target's port and limits) and
    /// installs it. Refused, with the installed generation unchanged, when the table does not
    /// fit the maps or a next hop cannot be resolved.
    pub fn install_fib(
        &mut self,
        table: &FibTable,
        neighbours: &dyn Neighbours,
    ) -> Result<u64, XdpError> {
        let table = XdpTable::from_fib(table, self.config.port, neighbours, self.config.limits)?;
        self.install(table)
    }

    /// Makes `table` the current generation, keeping the replaced one for
    /// [`rollback`](Self::rollback); returns the replaced generation (0 if none). Refused unless
    /// its generation is above every generation installed before, and when it does not fit the
    /// limits; on any failure the installed generation is unchanged.
    pub fn install(&mut self, table: XdpTable) -> Result<u64, XdpError> {
        let generation = table.generation;
        if generation <= self.generation_max {
            return Err(XdpError::Stale {
                offered: generation,
                installed: self.generation_max,
            });
        }
        let limits = self.config.limits;
        let checks = [
            (table.routes.len(), limits.routes_max, "routes"),
            (table.groups.len(), limits.groups_max, "groups"),
            (table.hops.len(), limits.hops_max, "hops"),
            (table.sources.len(), limits.sources_max, "sources"),
        ];
        for (count, max, what) in checks {
            if count > max as usize {
                return Err(XdpError::Table(match what {
                    "routes" => TableError::TooManyRoutes {
                        generation,
                        routes: count,
                        max,
                    },
                    "groups" => TableError::TooManyGroups {
                        generation,
                        groups: count,
                        max,
                    },
                    "hops" => TableError::TooManyHops {
                        generation,
                        hops: count,
                        max,
                    },
                    _ => TableError::TooManySources {
                        generation,
                        sources: count,
                        max,
                    },
                }));
            }
        }
        let installed = self.place(table)?;
        // The flip waited for running programs: none still reads the generation before the
        // previous one.
        let replaced = self.current.replace(installed);
        let replaced_generation = replaced.as_ref().map_or(0, |at| at.table.generation);
        if let Some(dropped) = std::mem::replace(&mut self.previous, replaced) {
            self.remove(&dropped);
        }
        self.generation_max = generation;
        Ok(replaced_generation)
    }

    /// Replaces the installed generation with `table` of the same generation number (its next
    /// hops resolved anew, when a neighbour changed): written beside it and switched to in one
    /// update, as [`install`](Self::install) does; the generation kept for
    /// [`rollback`](Self::rollback) stays. Refused, with nothing changed, unless `table` holds
    /// the installed generation.
    pub fn reinstall(&mut self, table: XdpTable) -> Result<(), XdpError> {
        let installed = self.generation();
        if self.current.is_none() || table.generation != installed {
            return Err(XdpError::NotInstalled {
                offered: table.generation,
                installed,
            });
        }
        let placed = self.place(table)?;
        if let Some(dropped) = self.current.replace(placed) {
            self.remove(&dropped);
        }
        Ok(())
    }

    /// Writes `table` under a new slot and makes it current in the program; on failure removes
    /// what it wrote, leaving the program on the installed generation.
    fn place(&mut self, table: XdpTable) -> Result<Installed, XdpError> {
        let generation = table.generation;
        for ifindex in table.egress_ifindexes() {
            if self.egress.contains(&ifindex) {
                continue;
            }
            self.maps
                .tx_ports
                .update(
                    &ifindex.to_ne_bytes(),
                    &ifindex.to_ne_bytes(),
                    MapFlags::ANY,
                )
                .map_err(|source| XdpError::Write {
                    generation,
                    map: "tx_ports",
                    source,
                })?;
            self.egress.insert(ifindex);
        }
        self.slot += 1;
        let installed = Installed {
            table: Arc::new(table),
            slot: self.slot,
        };
        if let Err(error) = self.write(&installed) {
            self.remove(&installed);
            return Err(error);
        }
        if let Err(source) = self.flip(installed.slot) {
            self.remove(&installed);
            return Err(XdpError::Write {
                generation,
                map: "current",
                source,
            });
        }
        Ok(installed)
    }

    /// Makes the previous generation current again and returns its number; the generation
    /// rolled back from is removed. A second rollback without an install in between is
    /// refused. The highest installed generation does not go down.
    pub fn rollback(&mut self) -> Result<u64, XdpError> {
        let previous = self.previous.take().ok_or(XdpError::NoPrevious)?;
        if let Err(source) = self.flip(previous.slot) {
            self.previous = Some(previous);
            return Err(XdpError::Map {
                map: "current",
                source,
            });
        }
        let generation = previous.table.generation;
        if let Some(dropped) = self.current.replace(previous) {
            self.remove(&dropped);
        }
        Ok(generation)
    }

    /// Points `current` at a fresh one-entry array holding `slot`.
    fn flip(&self, slot: u64) -> Result<(), libbpf_rs::Error> {
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let meta = MapHandle::create(MapType::Array, Some("nexus_meta"), 4, 8, 1, &opts)?;
        meta.update(&0u32.to_ne_bytes(), &meta_value(slot), MapFlags::ANY)?;
        // An array of maps takes the inner map's fd as the value; the kernel keeps its own
        // reference, so `meta` may be closed afterwards.
        let fd = meta.as_fd().as_raw_fd();
        self.maps
            .current
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
    }

    fn write(&self, installed: &Installed) -> Result<(), XdpError> {
        let (table, slot) = (&installed.table, installed.slot);
        let generation = table.generation;
        let write =
            |map: &MapHandle, name: &'static str, keys: Vec<u8>, values: Vec<u8>, count: usize| {
                if count == 0 {
                    return Ok(());
                }
                // count is bounded by the limits (u32).
                map.update_batch(&keys, &values, count as u32, MapFlags::ANY, MapFlags::ANY)
                    .map_err(|source| XdpError::Write {
                        generation,
                        map: name,
                        source,
                    })
            };
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (index, hop) in table.hops.iter().enumerate() {
            keys.extend_from_slice(&index_key(slot, index as u32));
            values.extend_from_slice(&hop.encode());
        }
        write(&self.maps.hops, "hops", keys, values, table.hops.len())?;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (index, group) in table.groups.iter().enumerate() {
            keys.extend_from_slice(&index_key(slot, index as u32));
            values.extend_from_slice(&group_value(
                group.hop_first,
                group.weight_total,
                &group.cumulative,
            ));
        }
        write(
            &self.maps.groups,
            "groups",
            keys,
            values,
            table.groups.len(),
        )?;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (key, group) in &table.routes {
            keys.extend_from_slice(&route_key(slot, *key));
            values.extend_from_slice(&group.to_ne_bytes());
        }
        write(
            &self.maps.routes,
            "routes",
            keys,
            values,
            table.routes.len(),
        )?;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for addr in &table.sources {
            keys.extend_from_slice(&source_key(slot, *addr));
            values.push(1);
        }
        write(
            &self.maps.sources,
            "sources",
            keys,
            values,
            table.sources.len(),
        )
    }

    /// Removes a generation's entries (those present: after a failed write some are not).
    fn remove(&self, installed: &Installed) {
        let (table, slot) = (&installed.table, installed.slot);
        let remove = |map: &MapHandle, keys: Vec<u8>, count: usize| {
            if count == 0 {
                return;
            }
            let key_size = map.key_size() as usize;
            if map
                .delete_batch(&keys, count as u32, MapFlags::ANY, MapFlags::ANY)
                .is_err()
            {
                // A partly written generation: delete what is there, one by one.
                for key in keys.chunks_exact(key_size) {
                    let _absent_or_gone = map.delete(key);
                }
            }
        };
        let routes: Vec<u8> = table
            .routes
            .iter()
            .flat_map(|(key, _)| route_key(slot, *key))
            .collect();
        remove(&self.maps.routes, routes, table.routes.len());
        let sources: Vec<u8> = table
            .sources
            .iter()
            .flat_map(|addr| source_key(slot, *addr))
            .collect();
        remove(&self.maps.sources, sources, table.sources.len());
        let groups: Vec<u8> = (0..table.groups.len())
            .flat_map(|index| index_key(slot, index as u32))
            .collect();
        remove(&self.maps.groups, groups, table.groups.len());
        let hops: Vec<u8> = (0..table.hops.len())
            .flat_map(|index| index_key(slot, index as u32))
            .collect();
        remove(&self.maps.hops, hops, table.hops.len());
    }

    /// Replaces the set of routing keys delivered on this node: their frames are redirected,
    /// unchanged, to the AF_XDP socket bound to the receive queue ([`crate::XskSocket`]), or
    /// passed to the kernel's stack when that queue has none. More than [`LOCAL_KEYS_MAX`] keys
    /// are refused before anything changes. Keys leaving the set are removed before new ones are
    /// added; should the kernel refuse an update part way, the keys changed so far stay changed
    /// (a key is delivered locally or forwarded, never lost) and the next call completes the
    /// change.
    pub fn set_local_keys(
        &mut self,
        keys: impl IntoIterator<Item = RoutingKey>,
    ) -> Result<(), XdpError> {
        let wanted: BTreeSet<[u8; 16]> = keys.into_iter().map(|key| key.to_be_bytes()).collect();
        if wanted.len() > LOCAL_KEYS_MAX {
            return Err(XdpError::TooManyLocalKeys {
                keys: wanted.len(),
                max: LOCAL_KEYS_MAX,
            });
        }
        let error = |source| XdpError::Map {
            map: "local_keys",
            source,
        };
        let gone: Vec<[u8; 16]> = self.local.difference(&wanted).copied().collect();
        for key in gone {
            self.maps.local_keys.delete(&key).map_err(error)?;
            self.local.remove(&key);
        }
        let new: Vec<[u8; 16]> = wanted.difference(&self.local).copied().collect();
        for key in new {
            self.maps
                .local_keys
                .update(&key, &1u32.to_ne_bytes(), MapFlags::ANY)
                .map_err(error)?;
            self.local.insert(key);
        }
        debug_assert_eq!(self.local, wanted);
        Ok(())
    }

    /// The number of local-delivery keys set.
    pub fn local_keys(&self) -> usize {
        self.local.len()
    }

    /// Registers an AF_XDP socket for receive queue `queue`: local-delivery frames arriving on
    /// that queue go to it.
    pub fn register_xsk(&self, queue: u32, socket: &crate::XskSocket) -> Result<(), XdpError> {
        let fd = socket.as_fd().as_raw_fd();
        self.maps
            .xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map {
                map: "xsks",
                source,
            })
    }

    /// Attaches the forwarding program to the interface `ifindex` (in the calling thread's
    /// network namespace). It stays attached until the target is dropped.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<(), XdpError> {
        self.attach_program(PROGRAM, ifindex, mode)?;
        self.attached.push((ifindex, mode));
        Ok(())
    }

    /// Attaches a program that passes every frame to `ifindex`: the far end of a veth pair needs
    /// one in native mode to receive redirected frames. Detached when the target is dropped.
    pub fn attach_pass(&mut self, ifindex: u32, mode: XdpMode) -> Result<(), XdpError> {
        self.attach_program(PASS_PROGRAM, ifindex, mode)?;
        self.attached.push((ifindex, mode));
        Ok(())
    }

    fn attach_program(&self, name: &str, ifindex: u32, mode: XdpMode) -> Result<(), XdpError> {
        let program = self
            .object
            .progs()
            .find(|prog| prog.name() == OsStr::new(name))
            .unwrap_or_else(|| panic!("the XDP object defines program {name}"));
        let index = i32::try_from(ifindex).unwrap_or(i32::MAX);
        Xdp::new(program.as_fd())
            .attach(index, mode.flags() | XdpFlags::UPDATE_IF_NOEXIST)
            .map_err(|source| XdpError::Attach {
                ifindex,
                mode,
                source,
            })
    }

    /// Detaches every program this target attached (in the calling thread's network
    /// namespace).
    pub fn detach_all(&mut self) {
        let Some(program) = self
            .object
            .progs()
            .find(|prog| prog.name() == OsStr::new(PROGRAM))
        else {
            return;
        };
        let xdp = Xdp::new(program.as_fd());
        for (ifindex, mode) in self.attached.drain(..) {
            let index = i32::try_from(ifindex).unwrap_or(i32::MAX);
            // An interface that has gone (its namespace deleted) took its program with it.
            let _gone = xdp.detach(index, mode.flags());
        }
    }

    /// The counters as the software forwarder reports them: `received`, `forwarded`,
    /// `delivered_local` and `dropped` per reason (same labels), summed over CPUs, and the
    /// installed generation. The program has no receive batches, sends or GSO: those read 0.
    pub fn counters(&self) -> Result<ForwarderCounters, XdpError> {
        let slot = |index: u32| -> Result<u64, XdpError> {
            let values = self
                .maps
                .counters
                .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
                .map_err(|source| XdpError::Map {
                    map: "counters",
                    source,
                })?
                .unwrap_or_default();
            Ok(sum_per_cpu(&values)?)
        };
        let mut counters = ForwarderCounters {
            received: slot(COUNTER_RECEIVED)?,
            forwarded: slot(COUNTER_FORWARDED)?,
            delivered_local: slot(COUNTER_DELIVERED_LOCAL)?,
            generation: self.generation(),
            ..ForwarderCounters::default()
        };
        for (reason, value) in counters.dropped.iter_mut().enumerate() {
            *value = slot(COUNTER_DROP_FIRST + reason as u32)?;
        }
        debug_assert_eq!(counters.dropped.len(), DROP_REASON_COUNT);
        Ok(counters)
    }

    /// Frames passed to the kernel's stack because the weighted choice gave them a next hop
    /// whose MAC was not resolved ([`crate::Unresolved::Pending`]), summed over CPUs.
    pub fn passed_to_kernel(&self) -> Result<u64, XdpError> {
        let values = self
            .maps
            .counters
            .lookup_percpu(&COUNTER_TO_KERNEL.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map {
                map: "counters",
                source,
            })?
            .unwrap_or_default();
        Ok(sum_per_cpu(&values)?)
    }

    /// Runs the forwarding program once on `frame` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN`, as if it arrived on the loopback interface, and returns the
    /// verdict and the frame as the program left it. Counters count it like a received frame.
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRun, XdpError> {
        let program = self
            .object
            .progs_mut()
            .find(|prog| prog.name() == OsStr::new(PROGRAM))
            .unwrap_or_else(|| panic!("the XDP object defines program {PROGRAM}"));
        let mut out = vec![0u8; frame.len() + 256];
        let input = ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..ProgramInput::default()
        };
        let output = program.test_run(input).map_err(|source| XdpError::Map {
            map: "(test run)",
            source,
        })?;
        let verdict = output.return_value;
        let frame = output.data.map(|data| data.to_vec()).unwrap_or_default();
        Ok(TestRun {
            verdict,
            frame,
            duration: output.duration,
        })
    }
}

impl Drop for XdpTarget {
    fn drop(&mut self) {
        self.detach_all();
    }
}
