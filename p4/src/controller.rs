//! [`Controller`]: the sans-IO core of the P4 target's control plane — which entries are
//! installed, which were installed before (for rollback), and the updates that move between
//! them. The gRPC client ([`crate::client`]) and the reference target drive it the same way.
//!
//! # Call order
//!
//! `prepare(routes, local)` (or `prepare_local(local)`, or `prepare_rollback()`) → send
//! `Prepared::updates` to the target → on success `commit(prepared)`; on failure do not commit
//! (the controller still describes the last committed state; see [`crate::client`] for how
//! the target is brought back to it).

use nexus_dataplane::fib::RouteSet;
use nexus_dataplane::forward::LocalEndpoints;

use crate::entries::{Entries, PlanError};
use crate::proto::v1::Update;

/// A planned change: the entries after it, the updates that make it, and its inputs.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The target's entries once the updates are applied.
    pub next: Entries,
    /// The updates, in an order the target can apply one by one.
    pub updates: Vec<Update>,
    routes: RouteSet,
    local: LocalEndpoints,
}

impl Prepared {
    /// The generation this change installs.
    pub fn generation(&self) -> u64 {
        self.routes.generation()
    }
}

#[derive(Clone, Debug)]
struct Installed {
    entries: Entries,
    routes: RouteSet,
    local: LocalEndpoints,
}

/// The installed state and the one before it.
#[derive(Clone, Debug, Default)]
pub struct Controller {
    current: Option<Installed>,
    previous: Option<Installed>,
}

impl Controller {
    /// Nothing installed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The installed entries (empty before the first commit).
    pub fn installed(&self) -> Entries {
        self.current
            .as_ref()
            .map(|c| c.entries.clone())
            .unwrap_or_default()
    }

    /// The installed generation, if any.
    pub fn generation(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.routes.generation())
    }

    /// The change to `routes` with `local`: a diff from the installed entries.
    pub fn prepare(&self, routes: RouteSet, local: LocalEndpoints) -> Result<Prepared, PlanError> {
        let installed = self.installed();
        let next = installed.plan(&routes, &local)?;
        Ok(Prepared {
            updates: installed.diff(&next),
            next,
            routes,
            local,
        })
    }

    /// The change to new local endpoints under the installed generation; `None` before the
    /// first generation (the endpoints go in with it).
    pub fn prepare_local(&self, local: LocalEndpoints) -> Result<Option<Prepared>, PlanError> {
        match &self.current {
            None => Ok(None),
            Some(c) => self.prepare(c.routes.clone(), local).map(Some),
        }
    }

    /// The change back to the state before the installed one; `None` if there is none (never
    /// committed twice, or already rolled back).
    pub fn prepare_rollback(&self) -> Option<Prepared> {
        let previous = self.previous.as_ref()?;
        Some(Prepared {
            updates: self.installed().diff(&previous.entries),
            next: previous.entries.clone(),
            routes: previous.routes.clone(),
            local: previous.local.clone(),
        })
    }

    /// Records that the target applied `prepared`. A rollback (a change to the previous
    /// state) drops the state rolled back from, so a second rollback needs an install first.
    pub fn commit(&mut self, prepared: Prepared) {
        let is_rollback = self
            .previous
            .as_ref()
            .is_some_and(|p| p.entries == prepared.next && p.routes == prepared.routes);
        let next = Installed {
            entries: prepared.next,
            routes: prepared.routes,
            local: prepared.local,
        };
        if is_rollback {
            self.previous = None;
            self.current = Some(next);
        } else {
            self.previous = self.current.replace(next);
        }
    }
}
