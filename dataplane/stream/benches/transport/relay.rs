//! A userspace delay relay, the same code for every protocol: it holds each UDP datagram, and
//! each chunk of a TCP byte stream, for a fixed one-way delay in each direction before passing
//! it on (the kernel here has no netem). Optionally it also serialises each direction at a
//! fixed rate behind a bounded queue (a bottleneck link; datagrams beyond the queue are
//! dropped, TCP chunks are never dropped).
//!
//! Two threads per relay: a reader (mio, non-blocking sockets) stamps every datagram or chunk
//! with its departure time — the time it was read plus the one-way delay — and hands it to a
//! sender thread, which waits on a condition variable until shortly before the earliest
//! departure (timer slack 1 ns), spins the last 50 µs, and sends everything then due.
//!
//! Both kinds move a burst in few system calls. TCP reads and writes up to 64 KiB at a time.
//! UDP receives up to 32 datagrams per `recvmmsg`, with `UDP_GRO` (a run of datagrams that one
//! GSO send put on loopback comes in as one unit, as it reaches the endpoints without the
//! relay), and sends everything due in one `sendmmsg` per socket, a GRO unit as one GSO
//! (`UDP_SEGMENT`) send with the same segment size; each datagram still leaves exactly one
//! delay after it was read (without a rate, every datagram of one receive was read at the same
//! instant; with a rate, a unit is split and each datagram gets its own departure). The reader
//! wakes the sender only when a new departure is earlier than every pending one.
//!
//! At zero delay the cost of the relay is the hand-off between the two threads plus one extra
//! receive and send per datagram batch or chunk; the benchmark measures it and reports it.
//! [`Relay::usage`] gives the relay's own CPU time (both threads) and the bytes it passed on,
//! so a benchmark can report the relay's CPU per megabyte for UDP and TCP side by side.

use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::stats::{now, precise_timers};

#[path = "udp_batch.rs"]
mod udp_batch;

/// How the relay shapes each direction.
#[derive(Clone, Copy, Debug)]
pub struct LinkShape {
    /// Added in each direction: half the round-trip time.
    pub one_way: Duration,
    /// Serialisation rate of each direction in bytes per second (UDP only); none = unlimited.
    pub rate_bytes_per_s: Option<u64>,
    /// Most queueing delay before a datagram is dropped (with a rate).
    pub queue_max: Duration,
}

impl LinkShape {
    /// A pure delay of `rtt / 2` each way.
    pub fn delay(rtt: Duration) -> LinkShape {
        LinkShape {
            one_way: rtt / 2,
            rate_bytes_per_s: None,
            queue_max: Duration::ZERO,
        }
    }
}

const FRONT: Token = Token(0);
const WAKE: Token = Token(1);
const FIRST_PEER: usize = 2;
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// A client address the UDP relay has not heard from for this long loses its upstream socket.
const UDP_IDLE_MAX: Duration = Duration::from_secs(10);
/// The sender wakes this long before a departure and spins the rest (bounded busy time).
const SPIN_BEFORE: Duration = Duration::from_micros(50);
/// Socket buffers of the relay's UDP sockets, so that the relay itself drops nothing in a burst
/// (the kernel's default of 208 KiB overflows under a bulk transfer; `rmem_max` allows 4 MiB).
const UDP_BUFFER_BYTES: usize = 4 << 20;
/// Retries of a send that would block before the datagram is counted as dropped.
const SEND_RETRIES_MAX: u32 = 10_000;
/// Items the sender takes from the queue at once when they are due.
const DUE_MAX: usize = 64;

enum Action {
    /// One datagram, or with `segment` several of that size (the last possibly shorter), as one
    /// GSO send.
    Udp {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
        bytes: Vec<u8>,
        segment: Option<u16>,
    },
    TcpWrite {
        stream: Arc<TcpStream>,
        bytes: Vec<u8>,
    },
    TcpShutdown {
        stream: Arc<TcpStream>,
    },
}

struct Pending {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Min-heap on (at, seq).
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Pending>,
    seq: u64,
    stop: bool,
}

#[derive(Default)]
struct Scheduler {
    queue: Mutex<Queue>,
    ready: Condvar,
    dropped: AtomicU64,
    /// Bytes passed on (UDP payloads, TCP stream bytes).
    bytes: AtomicU64,
}

impl Scheduler {
    fn push(&self, at: Instant, action: Action) {
        self.push_all(std::iter::once((at, action)));
    }

    /// Queues every `(departure, action)`; wakes the sender only if one of them departs before
    /// everything already queued (otherwise the sender's timed wait already ends in time).
    fn push_all(&self, items: impl IntoIterator<Item = (Instant, Action)>) {
        let mut q = self.queue.lock().expect("relay queue lock");
        let first = q.heap.peek().map(|p| p.at);
        for (at, action) in items {
            q.seq += 1;
            let seq = q.seq;
            q.heap.push(Pending { at, seq, action });
        }
        let wake = match (first, q.heap.peek()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(first), Some(top)) => top.at < first,
        };
        drop(q);
        if wake {
            self.ready.notify_one();
        }
    }

    fn stop(&self) {
        self.queue.lock().expect("relay queue lock").stop = true;
        self.ready.notify_one();
    }

    /// The sender thread: sends each pending item at its departure time, everything due at
    /// once together.
    fn run(&self) {
        precise_timers();
        let mut due = Vec::with_capacity(DUE_MAX);
        let mut q = self.queue.lock().expect("relay queue lock");
        loop {
            if q.stop {
                return;
            }
            let Some(at) = q.heap.peek().map(|p| p.at) else {
                q = self.ready.wait(q).expect("relay queue lock");
                continue;
            };
            let t = now();
            if at > t + SPIN_BEFORE {
                q = self
                    .ready
                    .wait_timeout(q, at - t - SPIN_BEFORE)
                    .expect("relay queue lock")
                    .0;
                continue;
            }
            drop(q);
            // Waking from a timed wait takes tens of microseconds here: the last stretch is
            // spun, so that the set delay is what the datagram or chunk sees.
            while now() < at {
                std::hint::spin_loop();
            }
            q = self.queue.lock().expect("relay queue lock");
            let t = now();
            while due.len() < DUE_MAX && q.heap.peek().is_some_and(|p| p.at <= t) {
                if let Some(p) = q.heap.pop() {
                    due.push(p.action);
                }
            }
            drop(q);
            self.execute_all(&mut due);
            q = self.queue.lock().expect("relay queue lock");
        }
    }

    /// Carries out `due` in order (emptying it): runs of datagrams on one socket go out in one
    /// `sendmmsg`.
    fn execute_all(&self, due: &mut Vec<Action>) {
        let mut i = 0;
        while i < due.len() {
            let run = match &due[i] {
                Action::Udp { socket, .. } => due[i..]
                    .iter()
                    .take(udp_batch::BATCH)
                    .take_while(
                        |a| matches!(a, Action::Udp { socket: s, .. } if Arc::ptr_eq(s, socket)),
                    )
                    .count(),
                _ => 0,
            };
            if run == 0 {
                let (ok, bytes) = execute(&due[i]);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                if !ok {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            } else {
                self.send_udp(&due[i..i + run]);
                i += run;
            }
        }
        due.clear();
    }

    /// Sends a run of datagram units that share a socket, retrying while the socket would
    /// block; a unit the kernel refuses is counted as dropped (each of its datagrams).
    fn send_udp(&self, run: &[Action]) {
        let Some(Action::Udp { socket, .. }) = run.first() else {
            return;
        };
        let units: Vec<udp_batch::Unit<'_>> = run
            .iter()
            .filter_map(|a| match a {
                Action::Udp {
                    to, bytes, segment, ..
                } => Some(udp_batch::Unit {
                    to: *to,
                    bytes,
                    segment: *segment,
                }),
                _ => None,
            })
            .collect();
        let fd = socket.as_raw_fd();
        let mut at = 0;
        let mut retries = 0;
        while at < units.len() {
            match udp_batch::send(fd, &units[at..]) {
                Ok(n) => {
                    let sent: usize = units[at..at + n].iter().map(|u| u.bytes.len()).sum();
                    self.bytes.fetch_add(sent as u64, Ordering::Relaxed);
                    at += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && retries < SEND_RETRIES_MAX => {
                    retries += 1;
                    std::thread::sleep(Duration::from_micros(20));
                }
                Err(_) => {
                    let u = &units[at];
                    let datagrams = u
                        .segment
                        .map_or(1, |s| u.bytes.len().div_ceil(usize::from(s).max(1)));
                    self.dropped.fetch_add(datagrams as u64, Ordering::Relaxed);
                    at += 1;
                }
            }
        }
    }
}

/// Carries out one TCP action (datagrams go through [`Scheduler::send_udp`]): whether it
/// went through, and the bytes written.
fn execute(action: &Action) -> (bool, u64) {
    match action {
        Action::Udp { .. } => (false, 0),
        Action::TcpWrite { stream, bytes } => {
            let mut at = 0;
            while at < bytes.len() {
                match (&**stream).write(&bytes[at..]) {
                    Ok(0) => break,
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The peer went away: the connection is over.
                    Err(_) => break,
                }
            }
            (true, at as u64)
        }
        Action::TcpShutdown { stream } => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            (true, 0)
        }
    }
}

/// Departure times of the two directions (0: towards the server, 1: towards the client).
struct Shaper {
    shape: LinkShape,
    link_free: [Instant; 2],
}

impl Shaper {
    fn new(shape: LinkShape) -> Shaper {
        let t = now();
        Shaper {
            shape,
            link_free: [t, t],
        }
    }

    /// When `len` bytes received at `t` in direction `dir` leave the relay; none = dropped.
    fn departure(
        &mut self,
        t: Instant,
        dir: usize,
        len: usize,
        droppable: bool,
    ) -> Option<Instant> {
        let Some(rate) = self.shape.rate_bytes_per_s else {
            return Some(t + self.shape.one_way);
        };
        let start = self.link_free[dir].max(t);
        if droppable && start - t > self.shape.queue_max {
            return None;
        }
        let done = start + Duration::from_secs_f64(len as f64 / rate as f64);
        self.link_free[dir] = done;
        Some(done + self.shape.one_way)
    }
}

/// What a relay has used and carried so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayUsage {
    /// CPU time of the relay's two threads (user + system).
    pub cpu: Duration,
    /// Bytes passed on, both directions (UDP payloads, TCP stream bytes).
    pub bytes: u64,
}

impl RelayUsage {
    /// The usage since `earlier`.
    pub fn since(self, earlier: RelayUsage) -> RelayUsage {
        RelayUsage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }

    /// CPU time per megabyte (10^6 bytes) passed on; none when nothing passed.
    pub fn cpu_per_mb(self) -> Option<Duration> {
        (self.bytes > 0).then(|| self.cpu.mul_f64(1e6 / self.bytes as f64))
    }
}

impl std::ops::Add for RelayUsage {
    type Output = RelayUsage;
    fn add(self, other: RelayUsage) -> RelayUsage {
        RelayUsage {
            cpu: self.cpu + other.cpu,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// CPU time a live thread of this process has used so far, from its CPU-time clock.
#[allow(
    unsafe_code,
    reason = "pthread_getcpuclockid and clock_gettime have no safe wrapper in the dependencies"
)]
fn thread_cpu_of(thread: &JoinHandle<()>) -> Duration {
    use std::os::unix::thread::JoinHandleExt;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the handle's thread has not been joined (the relay joins only when dropped), so
    // its pthread_t is valid; `clock` is a writable clockid_t.
    if unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) } != 0 {
        return Duration::ZERO;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a writable timespec and `clock` a clock id the call above returned.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A running relay; stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    scheduler: Arc<Scheduler>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// A UDP relay on a new loopback port, forwarding to `upstream`. Each client address gets
    /// its own upstream socket, so the server sees one peer per client.
    pub fn udp(upstream: SocketAddr, shape: LinkShape) -> io::Result<Relay> {
        let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0).into())?;
        udp_setup(&front)?;
        let addr = front.local_addr()?;
        Self::start(addr, move |poll, stop, scheduler| {
            udp_reader(poll, front, upstream, shape, stop, scheduler)
        })
    }

    /// A TCP relay on a new loopback port, forwarding each accepted connection to `upstream`.
    ///
    /// The kernel completes the client's TCP handshake with the relay's listener at loopback
    /// speed, and the relay's own connection to `upstream` is direct; on a real path the SYN /
    /// SYN-ACK exchange costs one round trip before the client can send. So that a new TCP
    /// connection pays that round trip here too, the client's first bytes (and all after them)
    /// leave the relay no earlier than 1.5 RTT after the connection was accepted: one RTT for
    /// the handshake it skipped, plus the one-way delay.
    pub fn tcp(upstream: SocketAddr, shape: LinkShape) -> io::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let addr = listener.local_addr()?;
        Self::start(addr, move |poll, stop, scheduler| {
            tcp_reader(poll, listener, upstream, shape, stop, scheduler)
        })
    }

    fn start(
        addr: SocketAddr,
        reader: impl FnOnce(Poll, Arc<AtomicBool>, Arc<Scheduler>) -> io::Result<()> + Send + 'static,
    ) -> io::Result<Relay> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let scheduler = Arc::new(Scheduler::default());
        let sender = {
            let scheduler = scheduler.clone();
            std::thread::Builder::new()
                .name("relay-send".into())
                .spawn(move || scheduler.run())?
        };
        let reader = {
            let (stop, scheduler) = (stop.clone(), scheduler.clone());
            std::thread::Builder::new()
                .name("relay-recv".into())
                .spawn(move || {
                    if let Err(e) = reader(poll, stop, scheduler) {
                        eprintln!("relay reader stopped: {e}");
                    }
                })?
        };
        Ok(Relay {
            addr,
            stop,
            waker,
            scheduler,
            threads: vec![sender, reader],
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams dropped (full queue of a rate-limited link, or a send that kept failing).
    pub fn dropped(&self) -> u64 {
        self.scheduler.dropped.load(Ordering::Relaxed)
    }

    /// CPU time the relay's threads have used and bytes they have passed on, so far.
    pub fn usage(&self) -> RelayUsage {
        RelayUsage {
            cpu: self.threads.iter().map(thread_cpu_of).sum(),
            bytes: self.scheduler.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        self.scheduler.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Large socket buffers and GRO for one of the relay's UDP sockets.
fn udp_setup(socket: &UdpSocket) -> io::Result<()> {
    let s = socket2::SockRef::from(socket);
    s.set_recv_buffer_size(UDP_BUFFER_BYTES)?;
    s.set_send_buffer_size(UDP_BUFFER_BYTES)?;
    udp_batch::enable_gro(socket.as_raw_fd());
    Ok(())
}

struct Uplink {
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last: Instant,
}

fn udp_reader(
    mut poll: Poll,
    front: UdpSocket,
    upstream: SocketAddr,
    shape: LinkShape,
    stop: Arc<AtomicBool>,
    scheduler: Arc<Scheduler>,
) -> io::Result<()> {
    let mut front = front;
    poll.registry()
        .register(&mut front, FRONT, Interest::READABLE)?;
    let front = Arc::new(front);
    let mut shaper = Shaper::new(shape);
    let mut by_client: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut uplinks: Vec<Option<Uplink>> = Vec::new();
    let mut events = Events::with_capacity(256);
    let mut rx = udp_batch::Receiver::new();
    let mut batch: Vec<(Instant, Action)> = Vec::with_capacity(udp_batch::BATCH);
    let mut last_reap = now();
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(200))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            match event.token() {
                WAKE => {}
                FRONT => loop {
                    match rx.recv(front.as_raw_fd()) {
                        Ok(n) if n > 0 => {}
                        // Nothing waiting (or an error a retry would repeat): back to poll.
                        _ => break,
                    }
                    let t = now();
                    for (unit, bytes) in rx.units() {
                        let i = match by_client.get(&unit.from) {
                            Some(&i) => i,
                            None => {
                                let mut socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0).into())?;
                                udp_setup(&socket)?;
                                let i =
                                    uplinks.iter().position(Option::is_none).unwrap_or_else(|| {
                                        uplinks.push(None);
                                        uplinks.len() - 1
                                    });
                                poll.registry().register(
                                    &mut socket,
                                    Token(FIRST_PEER + i),
                                    Interest::READABLE,
                                )?;
                                uplinks[i] = Some(Uplink {
                                    socket: Arc::new(socket),
                                    client: unit.from,
                                    last: t,
                                });
                                by_client.insert(unit.from, i);
                                i
                            }
                        };
                        let Some(up) = uplinks[i].as_mut() else {
                            continue;
                        };
                        up.last = t;
                        stamp(
                            &mut shaper,
                            &scheduler,
                            t,
                            0,
                            (&up.socket, upstream),
                            unit.segment,
                            bytes,
                            &mut batch,
                        );
                    }
                    scheduler.push_all(batch.drain(..));
                },
                Token(tok) => {
                    let Some(up) = uplinks.get(tok - FIRST_PEER).and_then(Option::as_ref) else {
                        continue;
                    };
                    while let Ok(n) = rx.recv(up.socket.as_raw_fd()) {
                        if n == 0 {
                            break;
                        }
                        let t = now();
                        for (unit, bytes) in rx.units() {
                            stamp(
                                &mut shaper,
                                &scheduler,
                                t,
                                1,
                                (&front, up.client),
                                unit.segment,
                                bytes,
                                &mut batch,
                            );
                        }
                        scheduler.push_all(batch.drain(..));
                    }
                }
            }
        }
        let t = now();
        if t - last_reap > Duration::from_secs(1) {
            last_reap = t;
            for slot in &mut uplinks {
                if slot.as_ref().is_some_and(|u| t - u.last > UDP_IDLE_MAX)
                    && let Some(u) = slot.take()
                {
                    by_client.remove(&u.client);
                    // Pending sends hold their own reference; deregistering stops reads.
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&u.socket.as_raw_fd()));
                }
            }
        }
    }
    Ok(())
}

/// Gives the datagrams of one received unit (`bytes`, read at `t`, travelling in direction
/// `dir`) their departures and adds them to `batch` as sends on `via.0` to `via.1`. Without a
/// rate the unit keeps its GRO grouping (every datagram in it departs at `t` + the delay);
/// with a rate each datagram is shaped, and possibly dropped, on its own.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per direction; a struct would only name the same eight values"
)]
fn stamp(
    shaper: &mut Shaper,
    scheduler: &Scheduler,
    t: Instant,
    dir: usize,
    via: (&Arc<UdpSocket>, SocketAddr),
    segment: Option<u16>,
    bytes: &[u8],
    batch: &mut Vec<(Instant, Action)>,
) {
    let (socket, to) = via;
    let step = match (shaper.shape.rate_bytes_per_s, segment) {
        (Some(_), Some(s)) if s > 0 => usize::from(s),
        _ => bytes.len().max(1),
    };
    for part in bytes.chunks(step) {
        match shaper.departure(t, dir, part.len(), true) {
            Some(at) => batch.push((
                at,
                Action::Udp {
                    socket: socket.clone(),
                    to,
                    bytes: part.to_vec(),
                    segment: segment.filter(|&s| usize::from(s) < part.len()),
                },
            )),
            None => {
                scheduler.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Pair {
    /// [client side, server side].
    sides: [Arc<TcpStream>; 2],
    open: [bool; 2],
    /// The client's data leaves the relay no earlier than this (see [`Relay::tcp`]).
    client_not_before: Instant,
}

fn tcp_reader(
    mut poll: Poll,
    listener: TcpListener,
    upstream: SocketAddr,
    shape: LinkShape,
    stop: Arc<AtomicBool>,
    scheduler: Arc<Scheduler>,
) -> io::Result<()> {
    let mut listener = listener;
    poll.registry()
        .register(&mut listener, FRONT, Interest::READABLE)?;
    let mut shaper = Shaper::new(shape);
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; CHUNK_BYTES_MAX];
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(200))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            match event.token() {
                WAKE => {}
                FRONT => loop {
                    let (mut client, _) = match listener.accept() {
                        Ok(c) => c,
                        Err(_) => break,
                    };
                    let server = std::net::TcpStream::connect(upstream)?;
                    server.set_nodelay(true)?;
                    server.set_nonblocking(true)?;
                    let mut server = TcpStream::from_std(server);
                    client.set_nodelay(true)?;
                    let i = pairs.iter().position(Option::is_none).unwrap_or_else(|| {
                        pairs.push(None);
                        pairs.len() - 1
                    });
                    poll.registry().register(
                        &mut client,
                        Token(FIRST_PEER + 2 * i),
                        Interest::READABLE,
                    )?;
                    poll.registry().register(
                        &mut server,
                        Token(FIRST_PEER + 2 * i + 1),
                        Interest::READABLE,
                    )?;
                    pairs[i] = Some(Pair {
                        sides: [Arc::new(client), Arc::new(server)],
                        open: [true, true],
                        client_not_before: now() + 3 * shaper.shape.one_way,
                    });
                },
                Token(t) => {
                    let (i, side) = ((t - FIRST_PEER) / 2, (t - FIRST_PEER) % 2);
                    let Some(pair) = pairs.get_mut(i).and_then(Option::as_mut) else {
                        continue;
                    };
                    if !pair.open[side] {
                        continue;
                    }
                    let peer = pair.sides[1 - side].clone();
                    let not_before = if side == 0 {
                        pair.client_not_before
                    } else {
                        now()
                    };
                    loop {
                        match (&*pair.sides[side]).read(&mut buf) {
                            Ok(0) => {
                                pair.open[side] = false;
                                let t = now();
                                let at = shaper
                                    .departure(t, side, 0, false)
                                    .unwrap_or(t)
                                    .max(not_before);
                                scheduler.push(at, Action::TcpShutdown { stream: peer });
                                break;
                            }
                            Ok(n) => {
                                let t = now();
                                let at = shaper
                                    .departure(t, side, n, false)
                                    .unwrap_or(t)
                                    .max(not_before);
                                scheduler.push(
                                    at,
                                    Action::TcpWrite {
                                        stream: peer.clone(),
                                        bytes: buf[..n].to_vec(),
                                    },
                                );
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                pair.open[side] = false;
                                let t = now();
                                let at = shaper
                                    .departure(t, side, 0, false)
                                    .unwrap_or(t)
                                    .max(not_before);
                                scheduler.push(at, Action::TcpShutdown { stream: peer });
                                break;
                            }
                        }
                    }
                    if !pair.open[side] {
                        let _ = poll
                            .registry()
                            .deregister(&mut SourceFd(&pair.sides[side].as_raw_fd()));
                    }
                    if pair.open == [false, false] {
                        pairs[i] = None;
                    }
                }
            }
        }
    }
    Ok(())
}
