//! A userspace delay relay, the same code for every protocol: it holds each UDP datagram, and
//! each chunk of a TCP byte stream, for a fixed one-way delay in each direction before passing
//! it on (the kernel here has no netem). Optionally it also serialises each direction at a
//! fixed rate behind a bounded queue (a bottleneck link; datagrams beyond the queue are
//! dropped, TCP chunks are never dropped).
//!
//! Two threads per relay: a reader (mio, non-blocking sockets) stamps every datagram or chunk
//! with its departure time and hands it to a sender thread, which waits on a condition
//! variable until shortly before the earliest departure (timer slack 1 ns), spins the last
//! 50 µs, and sends. At zero delay the cost
//! of the relay is the hand-off between the two threads plus one extra receive and send per
//! datagram or chunk; the benchmark measures it and reports it.

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

enum Action {
    Udp {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
        bytes: Vec<u8>,
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
}

impl Scheduler {
    fn push(&self, at: Instant, action: Action) {
        let mut q = self.queue.lock().expect("relay queue lock");
        q.seq += 1;
        let seq = q.seq;
        q.heap.push(Pending { at, seq, action });
        drop(q);
        self.ready.notify_one();
    }

    fn stop(&self) {
        self.queue.lock().expect("relay queue lock").stop = true;
        self.ready.notify_one();
    }

    /// The sender thread: sends each pending item at its departure time.
    fn run(&self) {
        precise_timers();
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
            let Some(p) = q.heap.pop() else { continue };
            drop(q);
            // Waking from a timed wait takes tens of microseconds here: the last stretch is
            // spun, so that the set delay is what the datagram or chunk sees.
            while now() < p.at {
                std::hint::spin_loop();
            }
            if !execute(p.action) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q = self.queue.lock().expect("relay queue lock");
        }
    }
}

/// Carries out one action; false if a datagram had to be dropped.
fn execute(action: Action) -> bool {
    match action {
        Action::Udp { socket, to, bytes } => {
            for _ in 0..SEND_RETRIES_MAX {
                match socket.send_to(&bytes, to) {
                    Ok(_) => return true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    Err(_) => return false,
                }
            }
            false
        }
        Action::TcpWrite { stream, bytes } => {
            let mut at = 0;
            while at < bytes.len() {
                match (&*stream).write(&bytes[at..]) {
                    Ok(0) => return true,
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The peer went away: the connection is over.
                    Err(_) => return true,
                }
            }
            true
        }
        Action::TcpShutdown { stream } => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            true
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

    /// When `len` bytes received now in direction `dir` leave the relay; none = dropped.
    fn departure(&mut self, dir: usize, len: usize, droppable: bool) -> Option<Instant> {
        let t = now();
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
        big_buffers(&front)?;
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

fn big_buffers(socket: &UdpSocket) -> io::Result<()> {
    let s = socket2::SockRef::from(socket);
    s.set_recv_buffer_size(UDP_BUFFER_BYTES)?;
    s.set_send_buffer_size(UDP_BUFFER_BYTES)
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
    let mut buf = vec![0u8; 65_536];
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
                    let (n, from) = match front.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    };
                    let i = match by_client.get(&from) {
                        Some(&i) => i,
                        None => {
                            let mut socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0).into())?;
                            big_buffers(&socket)?;
                            let i = uplinks.iter().position(Option::is_none).unwrap_or_else(|| {
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
                                client: from,
                                last: now(),
                            });
                            by_client.insert(from, i);
                            i
                        }
                    };
                    let Some(up) = uplinks[i].as_mut() else { break };
                    up.last = now();
                    match shaper.departure(0, n, true) {
                        Some(at) => scheduler.push(
                            at,
                            Action::Udp {
                                socket: up.socket.clone(),
                                to: upstream,
                                bytes: buf[..n].to_vec(),
                            },
                        ),
                        None => {
                            scheduler.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                },
                Token(t) => {
                    let Some(up) = uplinks.get(t - FIRST_PEER).and_then(Option::as_ref) else {
                        continue;
                    };
                    while let Ok((n, _)) = up.socket.recv_from(&mut buf) {
                        match shaper.departure(1, n, true) {
                            Some(at) => scheduler.push(
                                at,
                                Action::Udp {
                                    socket: front.clone(),
                                    to: up.client,
                                    bytes: buf[..n].to_vec(),
                                },
                            ),
                            None => {
                                scheduler.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
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
                                let at = shaper
                                    .departure(side, 0, false)
                                    .unwrap_or_else(now)
                                    .max(not_before);
                                scheduler.push(at, Action::TcpShutdown { stream: peer });
                                break;
                            }
                            Ok(n) => {
                                let at = shaper
                                    .departure(side, n, false)
                                    .unwrap_or_else(now)
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
                                let at = shaper
                                    .departure(side, 0, false)
                                    .unwrap_or_else(now)
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
