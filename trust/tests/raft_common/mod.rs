//! Shared helpers of the Raft integration tests: in-process members on loopback TCP with
//! ephemeral ports and sled in temp dirs.
#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nexus_trust::ca::Command;
use nexus_trust::raft::{
    CaNode, CaNodeConfig, CaPeer, CaRole, CaTimings, SledLogStore, SnapshotPolicy,
};
use openraft::{EntryPayload, RaftLogReader};

/// Fast timings for loopback tests.
pub fn timings() -> CaTimings {
    CaTimings {
        heartbeat_ms: 30,
        election_min_ms: 150,
        election_max_ms: 300,
        client_timeout_ms: 5_000,
    }
}

/// Opens sled in `dir`, retrying while a previous instance in this process still holds the
/// lock (its tasks are being dropped).
pub async fn open_db(dir: &Path) -> sled::Db {
    let mut last = None;
    for _ in 0..100 {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sled at {} did not open: {last:?}", dir.display());
}

/// Starts member `id` with its sled in `dir`, listening on `addr`.
pub async fn start(
    id: u64,
    dir: &Path,
    addr: &str,
    snapshot: SnapshotPolicy,
) -> (CaNode, sled::Db) {
    let db = open_db(dir).await;
    let mut config = CaNodeConfig::new(id, addr, db.clone(), 1000 + id);
    config.timings = timings();
    config.snapshot = snapshot;
    let node = CaNode::start(config).await.expect("start CA node");
    (node, db)
}

/// The peer record of a started node.
pub fn peer(node: &CaNode) -> CaPeer {
    CaPeer {
        addr: node.local_addr().to_string(),
        node: format!("{:064x}", node.id()),
    }
}

/// A running cluster of in-process members.
pub struct Cluster {
    pub dirs: BTreeMap<u64, tempfile::TempDir>,
    pub nodes: BTreeMap<u64, CaNode>,
    pub dbs: BTreeMap<u64, sled::Db>,
    pub addrs: BTreeMap<u64, String>,
    pub snapshot: SnapshotPolicy,
}

impl Cluster {
    /// Starts members `1..=n` and initialises them as one group.
    pub async fn new(n: u64, snapshot: SnapshotPolicy) -> Self {
        let mut c = Cluster {
            dirs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            dbs: BTreeMap::new(),
            addrs: BTreeMap::new(),
            snapshot,
        };
        for id in 1..=n {
            c.add_member(id).await;
        }
        let members: BTreeMap<u64, CaPeer> =
            c.nodes.iter().map(|(id, node)| (*id, peer(node))).collect();
        c.nodes[&1]
            .initialize(members.clone())
            .await
            .expect("initialize");
        // Idempotent: a second initialize (here or on another member) is not an error.
        c.nodes[&1]
            .initialize(members.clone())
            .await
            .expect("initialize again");
        c.wait_leader(&c.ids(), Duration::from_secs(10)).await;
        c
    }

    /// Starts a new, uninitialised member `id` (not part of the group yet).
    pub async fn add_member(&mut self, id: u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (node, db) = start(id, dir.path(), "127.0.0.1:0", self.snapshot.clone()).await;
        self.addrs.insert(id, node.local_addr().to_string());
        self.dirs.insert(id, dir);
        self.dbs.insert(id, db);
        self.nodes.insert(id, node);
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Shuts member `id` down and drops it (its sled dir stays).
    pub async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("running member");
        node.shutdown().await;
        drop(node);
        self.dbs.remove(&id);
    }

    /// Restarts member `id` on its old sled dir and address.
    pub async fn restart(&mut self, id: u64) {
        let dir = self.dirs[&id].path().to_path_buf();
        let (node, db) = start(id, &dir, &self.addrs[&id], self.snapshot.clone()).await;
        self.dbs.insert(id, db);
        self.nodes.insert(id, node);
    }

    /// Waits until every member in `ids` reports the same leader, which is one of them and
    /// says it is leader. Returns the leader.
    pub async fn wait_leader(&self, ids: &[u64], timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let statuses: Vec<_> = ids.iter().map(|id| self.nodes[id].status()).collect();
            if let Some(leader) = statuses[0].leader
                && ids.contains(&leader)
                && statuses.iter().all(|s| s.leader == Some(leader))
                && self.nodes[&leader].status().role == CaRole::Leader
            {
                return leader;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader among {ids:?}: {statuses:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until member `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        self.nodes[&id]
            .raft()
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "test")
            .await
            .unwrap_or_else(|e| panic!("member {id} did not apply {index}: {e}"));
    }

    /// Some member other than `id`.
    pub fn other_than(&self, id: u64) -> u64 {
        *self
            .nodes
            .keys()
            .find(|k| **k != id)
            .expect("another member")
    }
}

/// The normal (client) entries in member's sled log, as `(index, command)`.
pub async fn normal_entries(db: &sled::Db) -> Vec<(u64, Command)> {
    let mut log = SledLogStore::open(db).expect("open log");
    log.try_get_log_entries(..)
        .await
        .expect("read log")
        .into_iter()
        .filter_map(|e| match e.payload {
            EntryPayload::Normal(cmd) => Some((e.log_id.index, cmd)),
            _ => None,
        })
        .collect()
}
