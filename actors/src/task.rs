//! Small helpers for tasks owned by actors.

use tokio::task::JoinHandle;

/// Aborts a spawned task when dropped, so tasks die with the actor state that owns them (also
/// when the actor panics and its state is dropped).
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
