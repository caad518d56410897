//! [`XdpPublisher`]: a thread that keeps the XDP program on one interface on the latest table
//! generation, with next hops resolved from the kernel's neighbour table. The node hands it
//! each generation ([`XdpPublisher::publish`], never blocking: a newer generation replaces one
//! not yet installed), as it does to the P4 target's publisher.
//!
//! The thread owns the [`XdpTarget`] and a [`KernelNeighbours`] socket (both in the network
//! namespace of the thread that called [`XdpPublisher::spawn`]) and does every BPF and netlink
//! call. For each publication it sets the local-delivery keys, compiles and loads the routes,
//! resolves every next hop and installs the generation (or, for the generation already
//! installed, reinstalls it). Every `neighbour_refresh` it resolves the next hops again and
//! reinstalls when one changed (a MAC learnt or changed, a route moved to another interface), so
//! next hops left to the kernel path while their MAC was unknown are taken over by XDP once it
//! is known. A generation that cannot be installed (a next hop the kernel has no route to, a
//! table over the limits) is reported in [`XdpPublishStatus::last_error`]; the installed one
//! keeps forwarding, and it is tried again when a neighbour changes or a new one is published.
//! A generation older than the installed one is a rollback when it is the generation installed
//! before it (the program flips back to the table it kept, as the software forwarder's handle
//! does); any other older generation is refused whole (its local keys too).
//!
//! Frames the program does not forward itself go to the kernel's stack unchanged (`XDP_PASS`),
//! where the node's software forwarder listens on the same UDP port: frames for this node's
//! local keys (with no AF_XDP socket registered), frames for next hops whose MAC is not yet
//! known, and all traffic that is not NexLink to the port.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nexus_dataplane::fib::{FibTable, RouteSet, compile};
use nexus_dataplane::forward::{ForwarderCounters, LOCAL_ENDPOINTS_MAX, LocalEndpoints};
use tokio::sync::watch;

use crate::neighbours::KernelNeighbours;
use crate::table::{XdpLimits, XdpTable};
use crate::target::{LOCAL_KEYS_MAX, XdpConfig, XdpError, XdpMode, XdpTarget};

// Every local endpoint the software forwarder can hold fits the program's map.
const _: () = assert!(LOCAL_ENDPOINTS_MAX <= LOCAL_KEYS_MAX);

/// How an [`XdpPublisher`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpPublisherConfig {
    /// The interface the program is attached to (in the spawning thread's network namespace).
    pub interface: String,
    /// Native (in the driver) or generic.
    pub mode: XdpMode,
    /// The forwarder's UDP port: frames to it are NexLink, and forwarded frames leave from it.
    pub port: u16,
    /// Drop frames whose source is not in the generation's allowed-source set.
    pub source_check: bool,
    /// Map sizes per generation.
    pub limits: XdpLimits,
    /// How often the next hops are resolved again (and the counters read).
    pub neighbour_refresh: Duration,
}

impl XdpPublisherConfig {
    /// Native mode, source check on, default limits, next hops resolved every
    /// [`XdpPublisherConfig::NEIGHBOUR_REFRESH`].
    pub fn new(interface: impl Into<String>, port: u16) -> XdpPublisherConfig {
        XdpPublisherConfig {
            interface: interface.into(),
            mode: XdpMode::Native,
            port,
            source_check: true,
            limits: XdpLimits::default(),
            neighbour_refresh: Self::NEIGHBOUR_REFRESH,
        }
    }

    /// The default interval between neighbour resolutions.
    pub const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);
    /// The shortest interval accepted (a shorter one is raised to it).
    pub const NEIGHBOUR_REFRESH_MIN: Duration = Duration::from_millis(10);
}

/// What the publisher has done so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpPublishStatus {
    /// The interface the program is attached to, by index.
    pub ifindex: u32,
    /// The attach mode.
    pub mode: XdpMode,
    /// The latest generation published.
    pub published: Option<u64>,
    /// The generation the program holds, if any.
    pub installed: Option<u64>,
    /// Routes of the installed generation.
    pub routes: usize,
    /// Next hops over the installed generation's groups.
    pub hops: usize,
    /// Next hops of the installed generation left to the kernel's stack because their MAC
    /// is not known yet.
    pub kernel_path_hops: Vec<SocketAddrV4>,
    /// Local-delivery keys set.
    pub local_keys: usize,
    /// Installs that failed (each left the installed generation in place).
    pub failures: u64,
    /// The last error, cleared by the next successful install.
    pub last_error: Option<String>,
    /// The program's counters (as of the last refresh or install), with the software
    /// forwarder's labels.
    pub counters: ForwarderCounters,
    /// Frames passed to the kernel for a next hop whose MAC was not known.
    pub passed_to_kernel: u64,
}

/// What the handle and the thread share: the latest publication not yet taken, and stop.
#[derive(Debug, Default)]
struct Mailbox {
    latest: Option<(RouteSet, LocalEndpoints)>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    mailbox: Mutex<Mailbox>,
    wake: Condvar,
}

/// The handle; dropping it stops the thread, which detaches the program (the drop waits for
/// an install in progress to finish).
#[derive(Debug)]
pub struct XdpPublisher {
    shared: Arc<Shared>,
    status: watch::Receiver<XdpPublishStatus>,
    thread: Option<JoinHandle<()>>,
}

impl XdpPublisher {
    /// Loads the program, attaches it to `config.interface` and starts the thread. Errors
    /// (no such interface, not permitted — loading needs root or `CAP_BPF` and
    /// `CAP_NET_ADMIN` — or XDP not supported in that mode) are returned here, with nothing
    /// left attached. It blocks until the program is attached (loading takes tens of
    /// milliseconds). Until the first generation is installed the program drops every frame to
    /// the port as `no_route`, except local keys, which none are yet.
    pub fn spawn(config: XdpPublisherConfig) -> Result<XdpPublisher, XdpError> {
        let shared = Arc::new(Shared::default());
        let (started, start) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("nexus-xdp-publisher".to_owned())
            .spawn({
                let shared = shared.clone();
                move || {
                    let worker = match Worker::start(config) {
                        Ok(worker) => worker,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let (report, status) = watch::channel(worker.status.clone());
                    if started.send(Ok(status)).is_err() {
                        return; // spawn gave up
                    }
                    worker.run(&shared, &report);
                }
            })
            .map_err(XdpError::Thread)?;
        match start.recv() {
            Ok(Ok(status)) => Ok(XdpPublisher {
                shared,
                status,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(XdpError::Thread(std::io::Error::other(
                    "the publisher thread ended while starting",
                )))
            }
        }
    }

    /// Makes `routes` with `local` the generation to install (replacing one not yet taken).
    pub fn publish(&self, routes: RouteSet, local: LocalEndpoints) {
        let mut mailbox = self
            .shared
            .mailbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        mailbox.latest = Some((routes, local));
        self.shared.wake.notify_one();
    }

    /// The thread's status.
    pub fn status(&self) -> XdpPublishStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn subscribe(&self) -> watch::Receiver<XdpPublishStatus> {
        self.status.clone()
    }
}

impl Drop for XdpPublisher {
    fn drop(&mut self) {
        {
            let mut mailbox = self
                .shared
                .mailbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            mailbox.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            // The thread drops the target, which detaches the program.
            let _ = thread.join();
        }
    }
}

/// The publisher thread's state.
struct Worker {
    config: XdpPublisherConfig,
    target: XdpTarget,
    neighbours: KernelNeighbours,
    /// The latest generation published, loaded (kept to reinstall or retry).
    wanted: Option<FibTable>,
    status: XdpPublishStatus,
}

#[allow(clippy::disallowed_methods)] // the publisher thread is a driver: it reads the clock
fn now() -> Instant {
    Instant::now()
}

impl Worker {
    fn start(mut config: XdpPublisherConfig) -> Result<Worker, XdpError> {
        config.neighbour_refresh = config
            .neighbour_refresh
            .max(XdpPublisherConfig::NEIGHBOUR_REFRESH_MIN);
        let mut neighbours = KernelNeighbours::open().map_err(XdpError::Netlink)?;
        let ifindex = neighbours
            .interface_index(&config.interface)
            .map_err(|reason| XdpError::Interface {
                name: config.interface.clone(),
                reason,
            })?;
        let mut target = XdpTarget::load(XdpConfig {
            port: config.port,
            source_check: config.source_check,
            limits: config.limits,
        })?;
        target.attach(ifindex, config.mode)?;
        let status = XdpPublishStatus {
            ifindex,
            mode: config.mode,
            published: None,
            installed: None,
            routes: 0,
            hops: 0,
            kernel_path_hops: Vec::new(),
            local_keys: 0,
            failures: 0,
            last_error: None,
            counters: ForwarderCounters::default(),
            passed_to_kernel: 0,
        };
        Ok(Worker {
            config,
            target,
            neighbours,
            wanted: None,
            status,
        })
    }

    fn run(mut self, shared: &Shared, report: &watch::Sender<XdpPublishStatus>) {
        let refresh = self.config.neighbour_refresh;
        let mut next_refresh = now() + refresh;
        loop {
            let publication = {
                let mut mailbox = shared
                    .mailbox
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                while !mailbox.stop && mailbox.latest.is_none() {
                    let wait = next_refresh.saturating_duration_since(now());
                    if wait.is_zero() {
                        break;
                    }
                    mailbox = shared
                        .wake
                        .wait_timeout(mailbox, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if mailbox.stop {
                    return; // dropping self detaches the program
                }
                mailbox.latest.take()
            };
            match publication {
                Some((routes, local)) => self.publish(&routes, &local),
                None => {
                    next_refresh = now() + refresh;
                    self.refresh();
                }
            }
            self.read_counters();
            report.send_if_modified(|status| {
                let changed = *status != self.status;
                if changed {
                    *status = self.status.clone();
                }
                changed
            });
        }
    }

    fn fail(&mut self, error: String) {
        self.status.failures += 1;
        self.status.last_error = Some(error);
    }

    fn publish(&mut self, routes: &RouteSet, local: &LocalEndpoints) {
        let generation = routes.generation();
        self.status.published = Some(generation);
        let mut roll_back = false;
        if let Some(installed) = self.status.installed.filter(|i| *i > generation) {
            if self.target.previous_generation() == Some(generation) {
                // The node rolled its table back: the program goes back to the generation it
                // kept, in one flip, as the software forwarder does.
                roll_back = true;
            } else {
                // Any other older generation published after a newer one: the newer stays,
                // and so do its local keys.
                self.fail(format!(
                    "generation {generation} is older than the installed generation {installed} \
                     and is not the previous one"
                ));
                return;
            }
        }
        let keys = local.iter().map(|(key, _)| key);
        if let Err(e) = self.target.set_local_keys(keys) {
            self.fail(format!("local keys: {e}"));
        }
        self.status.local_keys = self.target.local_keys();
        let table = match compile(routes)
            .map_err(|e| e.to_string())
            .and_then(|image| FibTable::load(image).map_err(|e| e.to_string()))
        {
            Ok(table) => table,
            Err(e) => {
                self.fail(format!("generation {}: {e}", routes.generation()));
                return;
            }
        };
        self.neighbours.refresh(next_hop_ips(&table));
        self.wanted = Some(table);
        if roll_back {
            match self.target.rollback() {
                Ok(restored) => self.status.installed = Some(restored),
                Err(e) => {
                    self.fail(format!("rollback to generation {generation}: {e}"));
                    return;
                }
            }
        }
        // After a rollback this reinstalls the restored generation with the next hops'
        // current MACs (and sets the status's route and hop counts).
        self.install();
    }

    /// Resolves the wanted generation's next hops again and, when one changed, installs it
    /// (reinstalls it when it is the installed one; tries it again when it was refused).
    fn refresh(&mut self) {
        let Some(table) = &self.wanted else {
            return;
        };
        if self.neighbours.refresh(next_hop_ips(table)) {
            self.install();
        }
    }

    /// Installs the wanted generation (or reinstalls it when it is the installed one).
    fn install(&mut self) {
        let Some(fib) = &self.wanted else {
            return;
        };
        let generation = fib.generation();
        if self
            .status
            .installed
            .is_some_and(|installed| installed > generation)
        {
            // An older generation published after a newer one: the newer stays.
            let installed = self.target.generation();
            self.fail(format!(
                "generation {generation} is older than the installed generation {installed}"
            ));
            return;
        }
        let table =
            match XdpTable::from_fib(fib, self.config.port, &self.neighbours, self.config.limits) {
                Ok(table) => table,
                Err(e) => {
                    let e = XdpError::Table(e);
                    self.fail(format!("generation {generation}: {e}"));
                    return;
                }
            };
        let (routes, hops, kernel_path) = (table.routes(), table.hops(), table.kernel_path_hops());
        let result = if self.status.installed == Some(generation) {
            self.target.reinstall(table)
        } else {
            self.target.install(table).map(|_| ())
        };
        match result {
            Ok(()) => {
                self.status.installed = Some(generation);
                self.status.routes = routes;
                self.status.hops = hops;
                self.status.kernel_path_hops = kernel_path;
                self.status.last_error = None;
            }
            Err(e) => self.fail(format!("generation {generation}: {e}")),
        }
    }

    fn read_counters(&mut self) {
        match (self.target.counters(), self.target.passed_to_kernel()) {
            (Ok(counters), Ok(passed)) => {
                self.status.counters = counters;
                self.status.passed_to_kernel = passed;
            }
            (Err(e), _) | (_, Err(e)) => {
                self.status.last_error = Some(format!("reading counters: {e}"));
            }
        }
    }
}

/// The IPv4 next-hop addresses of `table` (IPv6 ones are refused when the table is built).
fn next_hop_ips(table: &FibTable) -> Vec<Ipv4Addr> {
    let mut ips = Vec::new();
    for entry in table.entries() {
        for hop in entry.group.iter() {
            if let SocketAddr::V4(addr) = hop.addr() {
                ips.push(*addr.ip());
            }
        }
    }
    ips.sort_unstable();
    ips.dedup();
    ips
}
