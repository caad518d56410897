//! systemd's service readiness protocol (`sd_notify(3)`): `READY=1` once the node serves,
//! `STOPPING=1` when it begins a graceful leave, and `WATCHDOG=1` keep-alives when the unit sets
//! `WatchdogSec=`.
//!
//! The protocol is one datagram per state change, `KEY=VALUE` lines, sent to the `AF_UNIX`
//! socket named by `$NOTIFY_SOCKET`: a path (`/run/systemd/notify`) or, with a leading `@`, a
//! Linux abstract socket name. Without `$NOTIFY_SOCKET` (not started by systemd with
//! `Type=notify`, or by a container runtime) nothing is sent. This is written on
//! `std::os::unix::net::UnixDatagram` rather than taken from a crate: it is a few lines, needs no
//! dependency, and the process test `fabric/tests/deploy.rs` checks it against a real socket.
//! `vsock:` addresses (systemd 254+, for virtual machines) are not supported: the node logs a
//! warning and sends nothing.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use nexus_actors::SupervisorMsg;
use ractor::ActorRef;
use ractor::rpc::CallResult;

/// The environment variable systemd sets to its notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The environment variable systemd sets to the watchdog interval (`WatchdogSec=`), µs.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog applies to.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";
/// Shortest watchdog ping interval honoured (half of `WatchdogSec=`); a smaller setting is
/// raised to it so a typo cannot make the node spin.
const WATCHDOG_PING_MIN: Duration = Duration::from_millis(100);
/// How long one readiness or watchdog check waits for the supervisor.
const SUPERVISOR_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Delay between readiness checks while an actor is still starting or restarting.
const READY_POLL: Duration = Duration::from_millis(50);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names: `Ok(None)` when it is unset or empty, an error when
    /// it is set to something that is not a Unix socket address.
    pub fn from_env() -> io::Result<Option<Self>> {
        match std::env::var_os(NOTIFY_SOCKET_ENV) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Self::connect(v.as_encoded_bytes()).map(Some),
        }
    }

    /// A notifier for the socket address `name`: a path, or `@name` for an abstract socket.
    pub fn connect(name: &[u8]) -> io::Result<Self> {
        let addr = match name.first() {
            Some(b'/') => {
                use std::os::unix::ffi::OsStrExt;
                SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name))?
            }
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&name[1..])?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{NOTIFY_SOCKET_ENV}={:?} is neither a socket path nor an @abstract name",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one state datagram, e.g. `"READY=1\nSTATUS=serving"`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set and
/// `$WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var(WATCHDOG_USEC_ENV).ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var(WATCHDOG_PID_ENV)
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| (Duration::from_micros(usec) / 2).max(WATCHDOG_PING_MIN))
}

/// Whether the supervision tree has started every child and none is restarting — what
/// `GET /v1/health` reports as `ok`. `None` when the supervisor does not answer.
async fn all_running(supervisor: &ActorRef<SupervisorMsg>) -> Option<bool> {
    match supervisor
        .call(SupervisorMsg::Tree, Some(SUPERVISOR_CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(tree)) => Some(tree.children.iter().all(|c| c.status == "running")),
        _ => None,
    }
}

/// Tells the service manager the node is ready once it is, then keeps its watchdog fed.
///
/// Ready means every actor has started and runs (the supervisor starts its children after it is
/// spawned, so "node started" can precede that): the admin API is then serving on its listener.
/// The watchdog is fed only while the supervisor answers, so a wedged runtime or a stuck
/// supervisor lets systemd's `WatchdogSec=` fire. Runs until aborted; call it in its own task.
pub async fn ready_and_watchdog(
    notifier: std::sync::Arc<Notifier>,
    supervisor: ActorRef<SupervisorMsg>,
    status: String,
) {
    loop {
        match all_running(&supervisor).await {
            Some(true) => break,
            // The supervisor is gone (a child could not start): the node is stopping.
            None if supervisor.get_status() == ractor::ActorStatus::Stopped => return,
            _ => tokio::time::sleep(READY_POLL).await,
        }
    }
    match notifier.notify(&format!("READY=1\nSTATUS={status}")) {
        Ok(()) => tracing::info!("told the service manager READY=1"),
        Err(e) => tracing::warn!(%e, "could not notify the service manager (READY=1)"),
    }
    let Some(interval) = watchdog_interval() else {
        return;
    };
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "feeding the service manager's watchdog"
    );
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if all_running(&supervisor).await.is_some()
            && let Err(e) = notifier.notify("WATCHDOG=1")
        {
            tracing::warn!(%e, "could not notify the service manager (WATCHDOG=1)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_addresses() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::connect(path.as_os_str().as_encoded_bytes()).expect("path");
        n.notify("READY=1").expect("send");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("nexus-notify-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract"),
        )
        .expect("bind abstract");
        let n = Notifier::connect(format!("@{name}").as_bytes()).expect("abstract");
        n.notify("STOPPING=1").expect("send");
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STOPPING=1");

        let e = Notifier::connect(b"vsock:2:1234").expect_err("not a unix socket");
        assert!(e.to_string().contains("NOTIFY_SOCKET"), "{e}");
    }
}
