//! The history of CA client operations a CA run records, and the voters' final states: what the
//! linearizability checker ([`super::linearizability`]) judges.
//!
//! Every operation is one attempt by one client: invoked at `invoked_us`, answered at
//! `completed_us` with a [`OpResult`]. An attempt whose outcome the client could not learn
//! (deadline passed, connection broke after sending) is [`OpResult::Unknown`] with no completion
//! time: it may have taken effect at any instant after its invocation, or never. Times are
//! virtual microseconds since the start of the run, widened to whole simulator ticks (invocation
//! at the start of the tick it happened in, completion at the end of its tick), so two events in
//! one tick count as concurrent — never as ordered the wrong way.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A certificate serial.
pub type Serial = u64;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// Issue one MIC; every attempt of one logical request carries the same request id.
    Issue {
        /// The idempotency key.
        request_id: [u8; 16],
    },
    /// Renew `serial` (a new MIC with a new serial).
    Renew {
        /// The MIC renewed.
        serial: Serial,
    },
    /// Revoke `serial`.
    Revoke {
        /// The MIC revoked.
        serial: Serial,
    },
    /// Read `serial` (linearizable read).
    Get {
        /// The MIC read.
        serial: Serial,
    },
    /// List every serial (linearizable read).
    List,
}

/// Why the CA applied a command but refused it (the state is unchanged).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// No MIC with that serial exists.
    UnknownSerial,
    /// The MIC is revoked.
    Revoked,
    /// Any other reason (not state-dependent for the requests the simulator makes).
    Other(String),
}

/// What a linearizable read of one serial returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetView {
    /// The MIC's encoding.
    pub mic: Vec<u8>,
    /// Whether it is revoked.
    pub revoked: bool,
}

/// What an attempt produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// Issue acknowledged: the MIC's serial and encoding.
    Issued {
        /// The serial.
        serial: Serial,
        /// The MIC's encoding.
        mic: Vec<u8>,
    },
    /// Renew acknowledged: the new MIC.
    Renewed {
        /// The new serial.
        serial: Serial,
        /// The new MIC's encoding.
        mic: Vec<u8>,
    },
    /// Revoke acknowledged: the revocation record (a repeated revoke returns the first one).
    Revoked {
        /// The record's sequence number.
        seq: u64,
        /// The record's encoding.
        record: Vec<u8>,
    },
    /// Applied and refused.
    Refused(Refusal),
    /// A get's answer (`None`: no such MIC).
    Got(Option<GetView>),
    /// A list's answer: every serial, ascending.
    Listed(Vec<Serial>),
    /// Certainly not applied (no leader, unreachable, rejected before the log).
    NotApplied(String),
    /// Outcome unknown: it may or may not have taken effect.
    Unknown(String),
}

/// One attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub id: usize,
    /// The client (0-based; client `k` is host `c{k+1}`).
    pub client: usize,
    /// The voter it was sent to (0-based).
    pub voter: usize,
    /// What was asked.
    pub kind: OpKind,
    /// Invocation, virtual µs.
    pub invoked_us: u64,
    /// Completion, virtual µs; `None` if the outcome is unknown.
    pub completed_us: Option<u64>,
    /// The result.
    pub result: OpResult,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            OpKind::Issue { request_id } => format!("issue rid {}", short_hex(request_id)),
            OpKind::Renew { serial } => format!("renew {serial}"),
            OpKind::Revoke { serial } => format!("revoke {serial}"),
            OpKind::Get { serial } => format!("get {serial}"),
            OpKind::List => "list".into(),
        };
        let result = match &self.result {
            OpResult::Issued { serial, .. } => format!("issued {serial}"),
            OpResult::Renewed { serial, .. } => format!("renewed as {serial}"),
            OpResult::Revoked { seq, .. } => format!("revoked (seq {seq})"),
            OpResult::Refused(r) => format!("refused ({r:?})"),
            OpResult::Got(None) => "absent".into(),
            OpResult::Got(Some(v)) if v.revoked => "present, revoked".into(),
            OpResult::Got(Some(_)) => "present".into(),
            OpResult::Listed(s) => format!("{} serials", s.len()),
            OpResult::NotApplied(why) => format!("not applied ({why})"),
            OpResult::Unknown(why) => format!("unknown ({why})"),
        };
        let done = match self.completed_us {
            Some(c) => format!("{:.3}s", c as f64 / 1e6),
            None => "?".into(),
        };
        write!(
            f,
            "#{} c{}→n{} {kind} -> {result} [{:.3}s..{done}]",
            self.id,
            self.client + 1,
            self.voter + 1,
            self.invoked_us as f64 / 1e6
        )
    }
}

fn short_hex(bytes: &[u8]) -> String {
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// One voter's state at the end of the run (read linearizably after the final heal).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VoterFinal {
    /// The voter (0-based).
    pub voter: usize,
    /// Every MIC: serial → encoding.
    pub mics: BTreeMap<Serial, Vec<u8>>,
    /// Every revocation: revoked serial → record encoding.
    pub revocations: BTreeMap<Serial, Vec<u8>>,
}

/// A whole run's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct History {
    /// Every attempt, in invocation order.
    pub ops: Vec<Op>,
    /// The final state of every voter that answered the final read.
    pub finals: Vec<VoterFinal>,
    /// Voters that did not answer the final read, with the last error.
    pub missing_finals: Vec<(usize, String)>,
    /// When the final reads were made, virtual µs (after every client operation).
    pub final_us: u64,
}
