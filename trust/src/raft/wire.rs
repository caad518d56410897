//! Frames and messages of the CA's TCP protocol (Raft RPCs and client requests share it).
//!
//! A frame is `len: u32 BE | id: u64 BE | payload`, where `len` counts the id and the payload
//! (so `len >= 8`) and is at most the configured `frame_bytes_max`. The payload is the JSON of a
//! [`WireRequest`] (client → server) or a [`WireResponse`] (server → client); a response carries
//! the id of its request, so one connection multiplexes many requests. Id 0 is reserved for a
//! server's complaint about a frame it could not parse ([`WireResponse::BadFrame`]) after which
//! it closes the connection.
//!
//! On an authenticated link ([`super::TlsTransport`]) the listener classifies each request
//! payload by its first bytes before decoding it ([`request_kind`]): a payload that starts
//! with the client tag `{"Client":` and a client variant's tag counts as a client request, one
//! with `AddVoter` / `RemoveVoter` as a membership change, anything else as a Raft RPC. A kind
//! the sender's key may not send is refused with [`WireResponse::Refused`], undecoded (see
//! [`super::policy`]).
//!
//! JSON is the codec on purpose: the types are openraft's serde types, the volume is small
//! (commands are batched), and a human can read a captured frame.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::node::CaStatus;
use super::policy::MessageKind;
use super::{CaPeer, NodeId, TypeConfig};
use crate::ca::{Command, Response};

/// Bytes of the frame header (`len` + `id`).
pub const HEADER_BYTES: usize = 12;
/// Default bound on a frame's `len` (16 MiB): a snapshot chunk (1 MiB) in JSON fits with room.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;
/// The id a server uses to report a frame it could not parse.
pub const BAD_FRAME_ID: u64 = 0;

/// What is wrong with a frame or the stream carrying it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the bound; the stream cannot be resynchronised.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// Configured bound.
        max: u32,
    },
    /// The length prefix is smaller than the 8-byte request id it must contain.
    #[error("frame length {len} is shorter than the 8-byte request id")]
    TooShort {
        /// Announced length.
        len: u32,
    },
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The payload is not the JSON of the expected message.
    #[error("frame payload does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// Reading or writing the stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    frame_bytes_max: u32,
) -> Result<Option<(u64, Vec<u8>)>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_buf[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf);
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    if len < 8 {
        return Err(FrameError::TooShort { len });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[..8]);
    body.drain(..8);
    Ok(Some((u64::from_be_bytes(id), body)))
}

/// Encodes one frame (header + payload) into a buffer; fails if it would exceed the bound.
pub fn encode_frame(id: u64, payload: &[u8], frame_bytes_max: u32) -> Result<Vec<u8>, FrameError> {
    let len = payload.len() + 8;
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= frame_bytes_max)
        .ok_or(FrameError::TooLarge {
            len: u32::try_from(len).unwrap_or(u32::MAX),
            max: frame_bytes_max,
        })?;
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Writes one already-encoded frame and flushes.
pub async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

/// The first bytes of every serialised [`WireRequest::Client`] (serde_json writes an externally
/// tagged enum as `{"Variant":…}` without whitespace).
pub const CLIENT_TAG: &[u8] = b"{\"Client\":";

/// What follows [`CLIENT_TAG`] in the serialised client requests that any admitted key may send.
const CLIENT_BODIES: [&[u8]; 4] = [
    b"\"Status\"",
    b"\"ReadIndex\"",
    b"{\"Write\":",
    b"{\"Read\":",
];
/// What follows [`CLIENT_TAG`] in a serialised membership change.
const MEMBERSHIP_BODIES: [&[u8]; 2] = [b"{\"AddVoter\":", b"{\"RemoveVoter\":"];

/// What a request payload asks for, from its first bytes and without decoding it. A payload is
/// a client request if it starts with [`CLIENT_TAG`] and one of the client variants' tags, a
/// membership change if it starts with the tag and `AddVoter` or `RemoveVoter`, and a Raft RPC
/// otherwise — which is what an unrecognisable payload must be treated as: the strictest kind.
/// The listener checks after decoding that [`WireRequest::kind`] agrees.
pub fn request_kind(payload: &[u8]) -> MessageKind {
    let Some(body) = payload.strip_prefix(CLIENT_TAG) else {
        return MessageKind::Raft;
    };
    if CLIENT_BODIES.iter().any(|tag| body.starts_with(tag)) {
        MessageKind::Client
    } else if MEMBERSHIP_BODIES.iter().any(|tag| body.starts_with(tag)) {
        MessageKind::Membership
    } else {
        MessageKind::Raft
    }
}

/// A request on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireRequest {
    /// Raft AppendEntries (also heartbeats).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client request.
    Client(ClientRequest),
}

impl WireRequest {
    /// Whether this is a Raft RPC, a membership change or another client request.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::AppendEntries(_) | Self::Vote(_) | Self::InstallSnapshot(_) => MessageKind::Raft,
            Self::Client(ClientRequest::AddVoter { .. } | ClientRequest::RemoveVoter { .. }) => {
                MessageKind::Membership
            }
            Self::Client(_) => MessageKind::Client,
        }
    }
}

/// A client's request to a CA member. A member that is not the leader answers writes, read
/// indexes and membership changes with [`ClientReply::NotLeader`]; it never forwards further.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Propose a command; answered once it is applied.
    Write(Command),
    /// Ask the leader for a linearizable read index (leadership confirmed with a quorum).
    ReadIndex,
    /// Add `id` as a learner, wait for it to catch up, then make it a voter.
    AddVoter {
        /// Raft id of the new member.
        id: NodeId,
        /// Its address and node id.
        peer: CaPeer,
    },
    /// Remove `id` from the voters (and from the membership).
    RemoveVoter {
        /// Raft id of the member to remove.
        id: NodeId,
    },
    /// The member's view of the cluster.
    Status,
    /// A linearizable read of the CA state (leader only; see `remote_read`).
    Read(super::remote_read::CaQuery),
}

/// A response on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireResponse {
    /// Answer to [`WireRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`WireRequest::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`WireRequest::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// Answer to [`WireRequest::Client`].
    Client(ClientReply),
    /// The request frame decoded as a frame but its payload is not a [`WireRequest`].
    BadRequest(String),
    /// The frame itself was unusable (too large, too short); the server closes the connection.
    BadFrame(String),
    /// The sender's key may not send this kind of request (a Raft RPC from a key that is not a
    /// voter, or any request from a key no longer allowed). Nothing was decoded or applied;
    /// the connection continues.
    Refused(String),
}

/// A CA member's answer to a [`ClientRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientReply {
    /// The command was committed and applied; this is what applying it returned.
    Written(Response),
    /// This member is not the leader; the leader it knows of, if any.
    NotLeader {
        /// The current leader's id and address.
        leader: Option<(NodeId, CaPeer)>,
    },
    /// The log index a linearizable read must wait for (`None`: the log is empty).
    ReadIndex(Option<u64>),
    /// The membership change was committed.
    MembershipChanged,
    /// The member's status.
    Status(CaStatus),
    /// The request failed on the leader; the reason.
    Failed(String),
    /// Answer to [`ClientRequest::Read`].
    Read(super::remote_read::CaAnswer),
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_bytes(bytes: &[u8], max: u32) -> Result<Option<(u64, Vec<u8>)>, FrameError> {
        let mut r = bytes;
        read_frame(&mut r, max).await
    }

    #[tokio::test]
    async fn frame_roundtrip() {
        let frame = encode_frame(7, b"hello", 1024).expect("encode");
        assert_eq!(frame.len(), HEADER_BYTES + 5);
        let got = read_bytes(&frame, 1024).await.expect("read");
        assert_eq!(got, Some((7, b"hello".to_vec())));
    }

    #[tokio::test]
    async fn clean_eof_is_none() {
        assert!(read_bytes(&[], 1024).await.expect("eof").is_none());
    }

    #[tokio::test]
    async fn oversize_length_is_rejected_before_reading() {
        let err = read_bytes(&[0xff, 0xff, 0xff, 0xff], 1024)
            .await
            .expect_err("too large");
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: u32::MAX,
                max: 1024
            }
        ));
        assert!(err.to_string().contains("exceeds the limit of 1024 bytes"));
    }

    #[tokio::test]
    async fn short_length_is_rejected() {
        let err = read_bytes(&[0, 0, 0, 3, 1, 2, 3], 1024)
            .await
            .expect_err("too short");
        assert!(matches!(err, FrameError::TooShort { len: 3 }));
    }

    #[tokio::test]
    async fn truncated_frames_are_rejected() {
        let frame = encode_frame(1, b"payload", 1024).expect("encode");
        for cut in [2, 4, 10, frame.len() - 1] {
            let err = read_bytes(&frame[..cut], 1024)
                .await
                .expect_err("truncated");
            assert!(matches!(err, FrameError::Truncated), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn encode_refuses_oversize_payloads() {
        let err = encode_frame(1, &[0u8; 100], 50).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { len: 108, max: 50 }));
    }

    #[test]
    fn garbage_payload_does_not_decode_as_a_request() {
        assert!(serde_json::from_slice::<WireRequest>(b"\x00\x01garbage").is_err());
        assert!(serde_json::from_slice::<WireRequest>(b"{\"Nope\":1}").is_err());
    }

    #[test]
    fn request_kind_matches_the_decoded_kind() {
        let peer = CaPeer {
            addr: "127.0.0.1:1".into(),
            node: "ab".repeat(32),
        };
        let requests = [
            WireRequest::Client(ClientRequest::Status),
            WireRequest::Client(ClientRequest::ReadIndex),
            WireRequest::Client(ClientRequest::Write(Command::Noop)),
            WireRequest::Client(ClientRequest::Read(crate::raft::remote_read::CaQuery::Keys)),
            WireRequest::Client(ClientRequest::AddVoter { id: 4, peer }),
            WireRequest::Client(ClientRequest::RemoveVoter { id: 4 }),
            WireRequest::Vote(VoteRequest::new(openraft::Vote::new(3, 1), None)),
        ];
        let mut kinds = Vec::new();
        for req in requests {
            let bytes = serde_json::to_vec(&req).expect("encode");
            assert_eq!(request_kind(&bytes), req.kind(), "{req:?}");
            kinds.push(req.kind());
        }
        use MessageKind::{Client, Membership, Raft};
        assert_eq!(
            kinds,
            [Client, Client, Client, Client, Membership, Membership, Raft]
        );
        // Anything unrecognised is the strictest kind.
        assert_eq!(request_kind(b""), Raft);
        assert_eq!(request_kind(b" {\"Client\":\"Status\"}"), Raft);
        assert_eq!(request_kind(b"{\"Client\""), Raft);
        assert_eq!(request_kind(b"{\"Client\":"), Raft);
        assert_eq!(request_kind(b"{\"Client\": \"Status\"}"), Raft);
        assert_eq!(request_kind(b"{\"Client\":{\"Nope\":1}}"), Raft);
        assert_eq!(request_kind(b"{\"\\u0043lient\":\"Status\"}"), Raft);
        assert_eq!(request_kind(b"{\"Client\":\"Status\"}"), Client);
    }

    /// The fuzz target's property on seeded mutations of real requests: the prefix check never
    /// lets a payload through as a client request or membership change that decodes as another
    /// kind.
    #[test]
    fn mutated_requests_never_decode_as_a_laxer_kind() {
        let peer = CaPeer {
            addr: "127.0.0.1:1".into(),
            node: "ab".repeat(32),
        };
        let seeds: Vec<Vec<u8>> = [
            WireRequest::Client(ClientRequest::Status),
            WireRequest::Client(ClientRequest::Write(Command::Noop)),
            WireRequest::Client(ClientRequest::AddVoter { id: 4, peer }),
            WireRequest::Client(ClientRequest::RemoveVoter { id: 2 }),
            WireRequest::Vote(VoteRequest::new(openraft::Vote::new(3, 1), None)),
        ]
        .iter()
        .map(|r| serde_json::to_vec(r).expect("encode"))
        .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut decoded, mut laxer) = (0, 0);
        for round in 0..20_000usize {
            let a = &seeds[round % seeds.len()];
            let b = &seeds[(next() as usize) % seeds.len()];
            let mut m = a.clone();
            match next() % 4 {
                0 => {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                1 => {
                    // A client prefix spliced onto another request's tail.
                    let cut = (next() as usize) % (m.len() + 1);
                    let tail = (next() as usize) % (b.len() + 1);
                    m.truncate(cut);
                    m.extend_from_slice(&b[tail..]);
                }
                2 => {
                    let i = (next() as usize) % (m.len() + 1);
                    m.insert(i, b"{}\":, "[(next() as usize) % 6]);
                }
                _ => m.truncate((next() as usize) % (m.len() + 1)),
            }
            let framed = request_kind(&m);
            if let Ok(req) = serde_json::from_slice::<WireRequest>(&m) {
                decoded += 1;
                if framed != MessageKind::Raft {
                    assert_eq!(req.kind(), framed, "{}", String::from_utf8_lossy(&m));
                    laxer += 1;
                }
            }
        }
        // The mutations reach decodable requests of every kind, so the assertion ran.
        assert!(
            decoded > 1_000 && laxer > 100,
            "decoded {decoded}, client-framed {laxer}"
        );
    }

    #[test]
    fn client_request_roundtrip() {
        let req = WireRequest::Client(ClientRequest::AddVoter {
            id: 4,
            peer: CaPeer {
                addr: "127.0.0.1:1".into(),
                node: "ab".into(),
            },
        });
        let bytes = serde_json::to_vec(&req).expect("encode");
        let back: WireRequest = serde_json::from_slice(&bytes).expect("decode");
        assert!(matches!(
            back,
            WireRequest::Client(ClientRequest::AddVoter { id: 4, peer }) if peer.addr == "127.0.0.1:1"
        ));
    }
}
