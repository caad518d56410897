//! The shared handle through which the control plane installs generations and the data plane
//! reads them.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::{ArcSwap, Cache, Guard};

use super::table::FibTable;

/// Why an install was refused. The current and previous generations are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// Generations must increase: the offered one is not above every generation installed so far
    /// (including ones since rolled back).
    #[error(
        "table generation {offered} refused: not above the highest installed generation {generation_max} (nothing changed)"
    )]
    Stale {
        /// The generation offered.
        offered: u64,
        /// The highest generation ever installed on this handle.
        generation_max: u64,
    },
}

/// Why a rollback was refused. The current generation is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// There is no previous generation to go back to (none installed yet, or already rolled
    /// back once since the last install).
    #[error(
        "no previous table generation to roll back to (current generation {current}; nothing changed)"
    )]
    NoPrevious {
        /// The current generation.
        current: u64,
    },
}

/// Counters of the control operations on a [`Fib`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FibCounters {
    /// Generations installed.
    pub installs: u64,
    /// Installs refused as stale.
    pub installs_refused: u64,
    /// Rollbacks done.
    pub rollbacks: u64,
    /// Rollbacks refused (no previous generation).
    pub rollbacks_refused: u64,
}

#[derive(Default)]
struct AtomicCounters {
    installs: AtomicU64,
    installs_refused: AtomicU64,
    rollbacks: AtomicU64,
    rollbacks_refused: AtomicU64,
}

/// Writer-side state, behind a mutex readers never touch.
struct WriterState {
    previous: Option<Arc<FibTable>>,
    generation_max: u64,
}

struct Control {
    writer: Mutex<WriterState>,
    counters: AtomicCounters,
}

/// The forwarding table shared between one control-plane writer and any number of data-plane
/// readers. Cloning is cheap (two `Arc`s); all clones see the same table.
///
/// Readers [`load`](Self::load) (or keep a [`FibReader`]) and never block: loading is a few
/// atomic operations (arc-swap), unaffected by a concurrent install. [`install`](Self::install)
/// replaces the whole generation with one atomic pointer swap, so every lookup made on one loaded
/// table sees that generation only. The writer keeps the generation it replaced for
/// [`rollback`](Self::rollback) (one level).
///
/// A generation is freed by whoever drops its last reference. The handle holds the current and
/// the previous generation, so a reader ends up freeing one only if it kept a table across two
/// installs.
#[derive(Clone)]
pub struct Fib {
    current: Arc<ArcSwap<FibTable>>,
    control: Arc<Control>,
}

impl Fib {
    /// A handle whose current generation is `initial` (for example an empty generation 0, or the
    /// last image read back from storage at start-up). Later installs must be above its
    /// generation.
    pub fn new(initial: FibTable) -> Self {
        let generation_max = initial.generation();
        Fib {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            control: Arc::new(Control {
                writer: Mutex::new(WriterState {
                    previous: None,
                    generation_max,
                }),
                counters: AtomicCounters::default(),
            }),
        }
    }

    /// The current generation, held until the guard drops. For a packet or a short batch; a
    /// dedicated forwarder thread should use a [`FibReader`] instead.
    #[inline]
    pub fn load(&self) -> FibGuard {
        FibGuard(self.current.load())
    }

    /// The current generation as an owned reference (for the admin view, which may hold it
    /// longer than a packet).
    pub fn snapshot(&self) -> Arc<FibTable> {
        self.current.load_full()
    }

    /// A per-thread reader that caches the current generation and revalidates it with one
    /// atomic load.
    pub fn reader(&self) -> FibReader {
        FibReader {
            cache: Cache::new(Arc::clone(&self.current)),
        }
    }

    /// The current generation number.
    pub fn generation(&self) -> u64 {
        self.current.load().generation()
    }

    /// The highest generation ever installed (the next install must be above it).
    pub fn generation_max(&self) -> u64 {
        self.writer().generation_max
    }

    /// The generation a [`rollback`](Self::rollback) would restore, if any.
    pub fn previous_generation(&self) -> Option<u64> {
        self.writer()
            .previous
            .as_ref()
            .map(|table| table.generation())
    }

    /// Makes `table` the current generation, keeping the replaced one for rollback; returns the
    /// replaced generation's number. Refused unless `table`'s generation is above every
    /// generation installed before.
    pub fn install(&self, table: impl Into<Arc<FibTable>>) -> Result<u64, InstallError> {
        let table = table.into();
        let offered = table.generation();
        let mut writer = self.writer();
        if offered <= writer.generation_max {
            self.control
                .counters
                .installs_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(InstallError::Stale {
                offered,
                generation_max: writer.generation_max,
            });
        }
        let replaced = self.current.swap(table);
        let replaced_generation = replaced.generation();
        writer.generation_max = offered;
        // The generation before `replaced` is dropped here, on the control plane (unless a
        // reader still holds it).
        writer.previous = Some(replaced);
        self.control
            .counters
            .installs
            .fetch_add(1, Ordering::Relaxed);
        Ok(replaced_generation)
    }

    /// Makes the previous generation current again and returns its number. The generation rolled
    /// back from is dropped; a second rollback without an install in between is refused. The
    /// highest installed generation does not go down, so the next install must still be above it.
    pub fn rollback(&self) -> Result<u64, RollbackError> {
        let mut writer = self.writer();
        let Some(previous) = writer.previous.take() else {
            self.control
                .counters
                .rollbacks_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(RollbackError::NoPrevious {
                current: self.current.load().generation(),
            });
        };
        let restored = previous.generation();
        drop(self.current.swap(previous));
        self.control
            .counters
            .rollbacks
            .fetch_add(1, Ordering::Relaxed);
        Ok(restored)
    }

    /// The control-operation counters.
    pub fn counters(&self) -> FibCounters {
        let counters = &self.control.counters;
        FibCounters {
            installs: counters.installs.load(Ordering::Relaxed),
            installs_refused: counters.installs_refused.load(Ordering::Relaxed),
            rollbacks: counters.rollbacks.load(Ordering::Relaxed),
            rollbacks_refused: counters.rollbacks_refused.load(Ordering::Relaxed),
        }
    }

    fn writer(&self) -> MutexGuard<'_, WriterState> {
        // The state is two plain fields updated together after every check; a panic elsewhere
        // while holding the lock cannot leave it half-written, so a poisoned lock is usable.
        self.control
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Fib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fib")
            .field("generation", &self.generation())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// The current generation, loaded by [`Fib::load`]. Dereferences to the [`FibTable`]; every
/// lookup through one guard sees the same generation.
pub struct FibGuard(Guard<Arc<FibTable>>);

impl Deref for FibGuard {
    type Target = FibTable;

    #[inline]
    fn deref(&self) -> &FibTable {
        &self.0
    }
}

impl fmt::Debug for FibGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FibGuard")
            .field(&self.0.generation())
            .finish()
    }
}

/// A data-plane thread's view of a [`Fib`]: caches the current generation, so
/// [`table`](Self::table) costs one atomic load while nothing changed. Holds the cached
/// generation alive until the next `table` call sees a newer one.
pub struct FibReader {
    cache: Cache<Arc<ArcSwap<FibTable>>, Arc<FibTable>>,
}

impl FibReader {
    /// The current generation. Call once per batch of packets and look up the whole batch on the
    /// returned table: the batch then sees one generation.
    #[inline]
    pub fn table(&mut self) -> &FibTable {
        self.cache.load()
    }
}

impl fmt::Debug for FibReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FibReader").finish_non_exhaustive()
    }
}
