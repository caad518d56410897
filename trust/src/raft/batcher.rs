//! Group commit: concurrent requests coalesce into one Raft entry.
//!
//! Callers [`GroupCommit::submit`] one request each; a single task takes whatever has queued
//! (up to `batch_max`) as soon as a pipeline slot is free, proposes it as one command, and hands
//! each caller its own result. While `pipeline_max` batches are in flight, new requests wait and
//! join the next batch — so batches grow exactly when the log is the bottleneck, and a lone
//! request still goes out at once. The queue is bounded (`queue_max`); a full queue fails fast
//! with [`CaClientError::QueueFull`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::node::CaClientError;

type Job<Req, Out> = (Req, oneshot::Sender<Result<Out, CaClientError>>);

/// Counters of a [`GroupCommit`] (monotonic; for metrics and benchmarks).
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Batches proposed.
    pub batches: AtomicU64,
    /// Requests proposed (sum of batch sizes).
    pub requests: AtomicU64,
    /// Largest batch so far.
    pub batch_max_seen: AtomicU64,
}

/// A group-commit queue in front of a batch-submitting function.
pub struct GroupCommit<Req, Out> {
    tx: mpsc::Sender<Job<Req, Out>>,
    queue_max: usize,
    stats: Arc<BatchStats>,
    task: JoinHandle<()>,
}

impl<Req, Out> std::fmt::Debug for GroupCommit<Req, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("queue_max", &self.queue_max)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<Req, Out> Drop for GroupCommit<Req, Out> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<Req: Send + 'static, Out: Send + 'static> GroupCommit<Req, Out> {
    /// Starts the batching task. `submit` proposes one batch and returns one result per request,
    /// in order. All bounds are at least 1.
    pub fn spawn<F, Fut>(batch_max: usize, queue_max: usize, pipeline_max: usize, submit: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Out>, CaClientError>> + Send + 'static,
    {
        let batch_max = batch_max.max(1);
        let queue_max = queue_max.max(1);
        let (tx, mut rx) = mpsc::channel::<Job<Req, Out>>(queue_max);
        let stats = Arc::new(BatchStats::default());
        let task = {
            let stats = stats.clone();
            tokio::spawn(async move {
                let slots = Arc::new(Semaphore::new(pipeline_max.max(1)));
                let mut inflight = JoinSet::new();
                loop {
                    // Wait for a free slot first: requests queue up meanwhile and form the batch.
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let Some(first) = rx.recv().await else {
                        break;
                    };
                    let mut batch = Vec::with_capacity(batch_max.min(rx.len() + 1));
                    batch.push(first);
                    while batch.len() < batch_max {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let n = batch.len();
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats.requests.fetch_add(n as u64, Ordering::Relaxed);
                    stats.batch_max_seen.fetch_max(n as u64, Ordering::Relaxed);
                    let (reqs, waiters): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
                    let fut = submit(reqs);
                    inflight.spawn(async move {
                        let result = fut.await;
                        drop(slot);
                        match result {
                            Ok(outs) if outs.len() == n => {
                                for (waiter, out) in waiters.into_iter().zip(outs) {
                                    // A caller that gave up is not an error.
                                    let _ = waiter.send(Ok(out));
                                }
                            }
                            Ok(outs) => {
                                let e = CaClientError::Rejected {
                                    op: "issue",
                                    reason: format!(
                                        "the CA returned {} results for a batch of {n}",
                                        outs.len()
                                    ),
                                };
                                for waiter in waiters {
                                    let _ = waiter.send(Err(e.clone()));
                                }
                            }
                            Err(e) => {
                                for waiter in waiters {
                                    let _ = waiter.send(Err(e.clone()));
                                }
                            }
                        }
                    });
                    while inflight.try_join_next().is_some() {}
                }
            })
        };
        Self {
            tx,
            queue_max,
            stats,
            task,
        }
    }

    /// Queues `req` and waits for its result.
    pub async fn submit(&self, req: Req) -> Result<Out, CaClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send((req, tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CaClientError::QueueFull {
                queue_max: self.queue_max,
            },
            mpsc::error::TrySendError::Closed(_) => {
                CaClientError::ShuttingDown("the issuance batcher has stopped".into())
            }
        })?;
        rx.await.map_err(|_| {
            CaClientError::ShuttingDown(
                "the issuance batcher stopped with the request in flight".into(),
            )
        })?
    }

    /// The batcher's counters.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Stops the batching task; queued and in-flight callers get `ShuttingDown`.
    pub fn stop(&self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_coalesce_and_each_gets_its_own_result() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gc = {
            let sizes = sizes.clone();
            Arc::new(GroupCommit::spawn(16, 1000, 1, move |reqs: Vec<u32>| {
                sizes.lock().expect("sizes").push(reqs.len());
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(reqs.into_iter().map(|r| r * 10).collect())
                }
            }))
        };
        let mut tasks = JoinSet::new();
        for i in 0..100u32 {
            let gc = gc.clone();
            tasks.spawn(async move { (i, gc.submit(i).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, out) = done.expect("task");
            assert_eq!(out.expect("result"), i * 10);
        }
        let sizes = sizes.lock().expect("sizes").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|s| *s <= 16), "{sizes:?}");
        assert!(sizes.len() < 50, "requests did not coalesce: {sizes:?}");
        assert_eq!(gc.stats().requests.load(Ordering::Relaxed), 100);
        assert_eq!(
            gc.stats().batches.load(Ordering::Relaxed),
            sizes.len() as u64
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller_in_it() {
        let gc = Arc::new(GroupCommit::spawn(8, 100, 1, |_reqs: Vec<u32>| async {
            Err::<Vec<u32>, _>(CaClientError::NoLeader {
                op: "issue",
                waited_ms: 1,
            })
        }));
        let err = gc.submit(1).await.expect_err("fails");
        assert!(matches!(err, CaClientError::NoLeader { .. }));
    }

    #[tokio::test]
    async fn wrong_result_count_is_an_error_not_a_misdelivery() {
        let gc = GroupCommit::spawn(8, 100, 1, |_reqs: Vec<u32>| async { Ok(Vec::<u32>::new()) });
        let err = gc.submit(1).await.expect_err("fails");
        assert!(
            err.to_string().contains("0 results for a batch of 1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn full_queue_fails_fast() {
        // A submit that never finishes holds the only pipeline slot; the queue (1) then fills.
        let gc = Arc::new(GroupCommit::spawn(1, 1, 1, |_reqs: Vec<u32>| {
            std::future::pending::<Result<Vec<u32>, CaClientError>>()
        }));
        let first = {
            let gc = gc.clone();
            tokio::spawn(async move { gc.submit(1).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = {
            let gc = gc.clone();
            tokio::spawn(async move { gc.submit(2).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let err = gc.submit(3).await.expect_err("queue full");
        assert_eq!(err, CaClientError::QueueFull { queue_max: 1 });
        gc.stop();
        assert!(matches!(
            first.await.expect("join"),
            Err(CaClientError::ShuttingDown(_))
        ));
        assert!(matches!(
            second.await.expect("join"),
            Err(CaClientError::ShuttingDown(_))
        ));
    }
}
