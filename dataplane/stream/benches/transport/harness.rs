//! What every protocol provides to the measurements, and the server thread they all run on.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::stats::thread_cpu;

/// Largest body any server accepts (the largest size measured is 16 MiB).
pub const BODY_BYTES_MAX: usize = 64 << 20;
/// Flow-control windows given to every protocol that has them (NexStream's defaults), so that
/// bulk transfers compare protocols rather than default window sizes.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// One client protocol. A *client* is what an application builds once (an endpoint, a socket,
/// an HTTP client with its pool); a *connection* is a handshaken session to the server.
/// Cold requests time [`Proto::connect`] + [`Proto::request`] on a fresh client; warm requests
/// time [`Proto::request`] alone on one connection.
pub trait Proto {
    type Client;
    type Conn;
    /// A fresh client (not timed).
    async fn client(&self) -> anyhow::Result<Self::Client>;
    /// Connection setup and handshake to `target` (the server or a relay in front of it).
    /// Protocols that connect lazily (the HTTP client) do it in the first request.
    async fn connect(&self, client: Self::Client, target: SocketAddr)
    -> anyhow::Result<Self::Conn>;
    /// One request carrying `body`; returns the response body.
    async fn request(&self, conn: &mut Self::Conn, body: &Bytes) -> anyhow::Result<Bytes>;
    /// Ends the connection (not timed).
    async fn close(&self, conn: Self::Conn);
    /// UDP datagrams this connection has sent so far, for the protocols that count them.
    async fn datagrams_sent(&self, _conn: &Self::Conn) -> Option<u64> {
        None
    }
}

type Serve = Pin<Box<dyn Future<Output = ()>>>;

/// A server on a thread of its own with a current-thread tokio runtime; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    cpu: mpsc::UnboundedSender<oneshot::Sender<Duration>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Runs `setup` on a new thread; it binds, returns its address and the future that serves.
    pub fn spawn<F, Fut>(name: &str, setup: F) -> Server
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = (SocketAddr, Serve)>,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (cpu, mut cpu_rx) = mpsc::unbounded_channel::<oneshot::Sender<Duration>>();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let (addr, serve) = setup().await;
                    addr_tx.send(addr).expect("bench waits for the address");
                    let probe = async {
                        while let Some(reply) = cpu_rx.recv().await {
                            let _ = reply.send(thread_cpu());
                        }
                    };
                    tokio::select! {
                        biased;
                        _ = stop_rx => {}
                        () = serve => {}
                        () = probe => {}
                    }
                });
            })
            .expect("spawn server thread");
        let addr = addr_rx.recv().expect("server started");
        Server {
            addr,
            cpu,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// CPU time the server's thread has used so far.
    pub async fn cpu(&self) -> Duration {
        let (tx, rx) = oneshot::channel();
        self.cpu.send(tx).expect("server running");
        rx.await.expect("server answers")
    }

    /// Wraps a serving future for [`Server::spawn`].
    pub fn serve(f: impl Future<Output = ()> + 'static) -> Serve {
        Box::pin(f)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
