//! What the relay itself adds: 64-byte ping-pongs over raw UDP and raw TCP (blocking sockets,
//! echo threads), direct and through the relay at each delay.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use crate::stats::{Summary, now};

const PING_BYTES: usize = 64;

/// Echo servers for the calibration; their threads end with the process (they only answer
/// the benchmark's own pings on loopback).
pub struct EchoServers {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

impl EchoServers {
    pub fn start() -> std::io::Result<EchoServers> {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let udp_addr = udp.local_addr()?;
        std::thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            })?;
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let tcp_addr = tcp.local_addr()?;
        std::thread::Builder::new()
            .name("tcp-echo".into())
            .spawn(move || {
                for conn in tcp.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let _ = conn.set_nodelay(true);
                    let mut buf = [0u8; 2048];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            })?;
        Ok(EchoServers {
            udp: udp_addr,
            tcp: tcp_addr,
        })
    }
}

/// `n` UDP ping-pongs to `target` (a lost datagram counts as a 1 s sample).
pub fn udp_rtt(target: SocketAddr, n: usize) -> std::io::Result<Summary> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let ping = [7u8; PING_BYTES];
    let mut buf = [0u8; 2048];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n + 5 {
        let t0 = now();
        socket.send_to(&ping, target)?;
        let _ = socket.recv_from(&mut buf);
        samples.push(now() - t0);
    }
    samples.drain(..5);
    Ok(Summary::of(&mut samples).expect("n > 0"))
}

/// `n` TCP ping-pongs on one connection to `target`.
pub fn tcp_rtt(target: SocketAddr, n: usize) -> std::io::Result<Summary> {
    let mut conn = TcpStream::connect(target)?;
    conn.set_nodelay(true)?;
    let ping = [7u8; PING_BYTES];
    let mut buf = [0u8; PING_BYTES];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n + 5 {
        let t0 = now();
        conn.write_all(&ping)?;
        conn.read_exact(&mut buf)?;
        samples.push(now() - t0);
    }
    samples.drain(..5);
    Ok(Summary::of(&mut samples).expect("n > 0"))
}
