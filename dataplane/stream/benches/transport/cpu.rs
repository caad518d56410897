//! Handshake CPU: client and server each on a current-thread runtime on a thread of their own;
//! the client's CPU is its thread's `getrusage(RUSAGE_THREAD)` difference around one
//! connection setup, the server's is its thread's CPU over all handshakes divided by their
//! number (accept, handshake and teardown; the server does nothing else meanwhile).

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{Proto, Server};
use crate::stats::{Summary, now, thread_cpu};

pub struct HandshakeCpu {
    pub client: Summary,
    pub server_mean: Duration,
    pub wall: Summary,
}

/// Pause between handshakes so that one connection's teardown is not charged to the next.
const GAP: Duration = Duration::from_millis(2);

pub async fn measure<P: Proto>(
    proto: &P,
    server: &Server,
    target: SocketAddr,
    n: usize,
) -> anyhow::Result<HandshakeCpu> {
    // Warm-up: lazily initialised state on both sides.
    for _ in 0..5 {
        let client = proto.client().await?;
        let conn = proto.connect(client, target).await?;
        proto.close(conn).await;
    }
    tokio::time::sleep(GAP * 5).await;
    let mut client_cpu = Vec::with_capacity(n);
    let mut wall = Vec::with_capacity(n);
    let server_start = server.cpu().await;
    for _ in 0..n {
        let client = proto.client().await?;
        tokio::time::sleep(GAP).await;
        let (c0, t0) = (thread_cpu(), now());
        let conn = proto.connect(client, target).await?;
        let (c1, t1) = (thread_cpu(), now());
        client_cpu.push(c1 - c0);
        wall.push(t1 - t0);
        proto.close(conn).await;
    }
    tokio::time::sleep(GAP * 10).await;
    let server_end = server.cpu().await;
    Ok(HandshakeCpu {
        client: Summary::of(&mut client_cpu).expect("n > 0"),
        server_mean: (server_end - server_start) / n as u32,
        wall: Summary::of(&mut wall).expect("n > 0"),
    })
}
