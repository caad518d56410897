//! [`P4Publisher`]: a task that keeps one P4 switch on the latest table generation. The table
//! compiler hands it each generation ([`P4Publisher::publish`], never blocking: a newer
//! generation replaces one not yet sent); the task connects (arbitration,
//! `SetForwardingPipelineConfig`), pushes the latest generation as a diff, and on a broken
//! connection or a push it could not undo reconnects after [`P4Publisher::RETRY`] and installs
//! the latest generation whole (setting the pipeline clears the switch's tables). A generation
//! the switch refused (and the client undid) is not retried: the next publication is pushed.

use std::time::Duration;

use nexus_dataplane::fib::RouteSet;
use nexus_dataplane::forward::LocalEndpoints;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{ClientError, P4Client, P4Config};

/// What the publisher has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishStatus {
    /// Connected and primary, with the pipeline installed.
    pub connected: bool,
    /// The generation the switch holds, if any.
    pub installed: Option<u64>,
    /// Pushes that failed (each was undone or followed by a reconnect).
    pub failures: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// The handle; dropping it stops the task (and closes the connection).
#[derive(Debug)]
pub struct P4Publisher {
    latest: watch::Sender<Option<(RouteSet, LocalEndpoints)>>,
    status: watch::Receiver<PublishStatus>,
    task: JoinHandle<()>,
}

impl P4Publisher {
    /// Wait between connection attempts, and after a push that left the switch unknown.
    pub const RETRY: Duration = Duration::from_secs(1);

    /// Starts the task on the current tokio runtime.
    pub fn spawn(config: P4Config) -> P4Publisher {
        let (latest, mut wanted) = watch::channel(None::<(RouteSet, LocalEndpoints)>);
        let (report, status) = watch::channel(PublishStatus::default());
        let task = tokio::spawn(async move {
            let mut state = PublishStatus::default();
            loop {
                let mut client = match connect(&config).await {
                    Ok(client) => client,
                    Err(e) => {
                        state.connected = false;
                        state.last_error = Some(e.to_string());
                        report.send_replace(state.clone());
                        tokio::time::sleep(Self::RETRY).await;
                        continue;
                    }
                };
                state.connected = true;
                state.installed = None;
                report.send_replace(state.clone());
                // A fresh pipeline holds nothing: push the latest generation, if any, whole.
                wanted.mark_changed();
                loop {
                    if wanted.changed().await.is_err() {
                        return; // the handle was dropped
                    }
                    let Some((routes, local)) = wanted.borrow_and_update().clone() else {
                        continue;
                    };
                    match client.push(routes, local).await {
                        Ok(generation) => {
                            state.installed = Some(generation);
                            state.last_error = None;
                            report.send_replace(state.clone());
                        }
                        Err(e) => {
                            state.failures += 1;
                            state.last_error = Some(e.to_string());
                            let undone = matches!(
                                e,
                                ClientError::PushFailed { restored: true, .. }
                                    | ClientError::Plan(_)
                            );
                            if !undone {
                                state.connected = false;
                                state.installed = None;
                            }
                            report.send_replace(state.clone());
                            if !undone {
                                tokio::time::sleep(Self::RETRY).await;
                                break; // reconnect
                            }
                        }
                    }
                }
            }
        });
        P4Publisher {
            latest,
            status,
            task,
        }
    }

    /// Makes `routes` with `local` the generation to install (replacing one not yet sent).
    pub fn publish(&self, routes: RouteSet, local: LocalEndpoints) {
        self.latest.send_replace(Some((routes, local)));
    }

    /// The task's status.
    pub fn status(&self) -> PublishStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn subscribe(&self) -> watch::Receiver<PublishStatus> {
        self.status.clone()
    }
}

impl Drop for P4Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(config: &P4Config) -> Result<P4Client, ClientError> {
    let mut client = P4Client::connect(config.clone()).await?;
    client.set_pipeline().await?;
    Ok(client)
}
