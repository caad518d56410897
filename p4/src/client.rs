//! [`P4Client`]: the node's P4Runtime client. It connects to one device, becomes its primary
//! controller (arbitration on `StreamChannel` with the configured election id), installs the
//! program's P4Info (`SetForwardingPipelineConfig`, `VERIFY_AND_COMMIT`), and pushes each table
//! generation as the [`Controller`]'s diff (`Write`, in batches of [`WRITE_UPDATES_MAX`]).
//!
//! When a push fails (refused, or the outcome unknown), the target may hold any prefix of the
//! updates: the client reads the target's entries back (`Read`) and writes the diff from them
//! to the last committed state, so the target is left on the previous generation. Every RPC
//! has a deadline ([`P4Config::rpc_timeout`]).
//!
//! # Call order
//!
//! [`P4Client::connect`] (arbitration) → [`P4Client::set_pipeline`] → any number of
//! [`P4Client::push`] / [`P4Client::rollback`] / [`P4Client::read_entries`].

use std::time::Duration;

use http::uri::PathAndQuery;
use nexus_dataplane::fib::RouteSet;
use nexus_dataplane::forward::LocalEndpoints;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::controller::{Controller, Prepared};
use crate::entries::{EntityError, Entries, PlanError};
use crate::program::{self, PROFILE_SELECTOR, TABLE_GROUP};
use crate::proto::v1::{
    ActionProfileGroup, ActionProfileMember, Atomicity, Entity, ForwardingPipelineConfig,
    MasterArbitrationUpdate, PipelineAction, ReadRequest, ReadResponse,
    SetForwardingPipelineConfigRequest, SetForwardingPipelineConfigResponse, StreamMessageRequest,
    StreamMessageResponse, TableEntry, Uint128, Update, UpdateType, WriteRequest, WriteResponse,
    entity, stream_message_request, stream_message_response,
};

/// Most updates in one `WriteRequest` (keeps each message far below gRPC's 4 MiB default).
pub const WRITE_UPDATES_MAX: usize = 4096;

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct P4Config {
    /// The P4Runtime server, `host:port`.
    pub target: String,
    /// The device id on that server.
    pub device_id: u64,
    /// This controller's election id (the highest live one is primary); not 0.
    pub election_id: u128,
    /// The target-specific program binary sent with the P4Info (BMv2: the JSON p4c writes);
    /// empty for a target that already runs the program.
    pub device_config: Vec<u8>,
    /// Deadline of each RPC and of the connection attempt.
    pub rpc_timeout: Duration,
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration is unusable; nothing was attempted.
    #[error("bad P4 target config: {0}")]
    Config(String),
    /// The connection could not be made.
    #[error("cannot reach the P4Runtime server at {target}: {source}")]
    Connect {
        /// The target.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// An RPC failed.
    #[error("P4Runtime {rpc}: {status}")]
    Rpc {
        /// Which RPC.
        rpc: &'static str,
        /// The status.
        status: Box<tonic::Status>,
    },
    /// Another controller is primary (or the server refused the election id).
    #[error("not the primary controller: {0}")]
    NotPrimary(String),
    /// The generation cannot be expressed on the target; nothing was sent.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The target sent back entries the program cannot hold.
    #[error("the target's entries do not fit the program: {0}")]
    Decode(#[from] EntityError),
    /// A push failed; `restored` says whether the target is back on the previous generation.
    #[error("generation {generation} not installed ({error}); previous state restored: {restored}")]
    PushFailed {
        /// The generation that was not installed.
        generation: u64,
        /// Why.
        error: Box<ClientError>,
        /// Whether the read-back and restore succeeded.
        restored: bool,
    },
    /// Nothing to roll back to.
    #[error("no previous generation to roll back to")]
    NoPrevious,
}

/// A connected primary controller of one device.
#[derive(Debug)]
pub struct P4Client {
    grpc: Grpc<Channel>,
    config: P4Config,
    controller: Controller,
    /// Keeps the arbitration stream open: the server drops a controller whose stream ends.
    _stream: mpsc::Sender<StreamMessageRequest>,
    /// Set when a restore failed: the next push first reads the target's entries.
    resync: bool,
}

fn uint128(v: u128) -> Uint128 {
    Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

fn rpc_error(rpc: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |status| ClientError::Rpc {
        rpc,
        status: Box::new(status),
    }
}

impl P4Client {
    /// Connects and runs arbitration: fails unless the server makes this client primary.
    pub async fn connect(config: P4Config) -> Result<P4Client, ClientError> {
        if config.election_id == 0 {
            return Err(ClientError::Config("election_id must not be 0".to_owned()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", config.target))
            .map_err(|e| ClientError::Config(format!("target {:?}: {e}", config.target)))?
            .connect_timeout(config.rpc_timeout)
            .timeout(config.rpc_timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                target: config.target.clone(),
                source,
            })?;
        let mut grpc = Grpc::new(channel);
        let (tx, rx) = mpsc::channel(4);
        let hello = StreamMessageRequest {
            update: Some(stream_message_request::Update::Arbitration(
                MasterArbitrationUpdate {
                    device_id: config.device_id,
                    election_id: Some(uint128(config.election_id)),
                    status: None,
                },
            )),
        };
        tx.send(hello)
            .await
            .map_err(|_| ClientError::Config("arbitration stream closed".to_owned()))?;
        grpc.ready()
            .await
            .map_err(|e| rpc_error("StreamChannel")(tonic::Status::unavailable(e.to_string())))?;
        let codec = ProstCodec::<StreamMessageRequest, StreamMessageResponse>::default();
        let response = tokio::time::timeout(
            config.rpc_timeout,
            grpc.streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static("/p4.v1.P4Runtime/StreamChannel"),
                codec,
            ),
        )
        .await
        .map_err(|_| rpc_error("StreamChannel")(tonic::Status::deadline_exceeded("arbitration")))?
        .map_err(rpc_error("StreamChannel"))?;
        let mut inbound = response.into_inner();
        let reply = tokio::time::timeout(config.rpc_timeout, inbound.message())
            .await
            .map_err(|_| {
                rpc_error("StreamChannel")(tonic::Status::deadline_exceeded("arbitration"))
            })?
            .map_err(rpc_error("StreamChannel"))?;
        match reply.and_then(|r| r.update) {
            Some(stream_message_response::Update::Arbitration(a)) => {
                let code = a.status.as_ref().map_or(0, |s| s.code);
                if code != 0 || a.election_id != Some(uint128(config.election_id)) {
                    return Err(ClientError::NotPrimary(format!(
                        "status {code} {:?}, primary election id {:?}",
                        a.status.map(|s| s.message).unwrap_or_default(),
                        a.election_id
                    )));
                }
            }
            None => return Err(ClientError::NotPrimary("no arbitration reply".to_owned())),
        }
        // Drain the stream so the server's later messages never block it; it ends with the
        // connection.
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        Ok(P4Client {
            grpc,
            config,
            controller: Controller::new(),
            _stream: tx,
            resync: true,
        })
    }

    /// Installs the program (its P4Info and the configured device config) on the device.
    pub async fn set_pipeline(&mut self) -> Result<(), ClientError> {
        let request = SetForwardingPipelineConfigRequest {
            device_id: self.config.device_id,
            election_id: Some(uint128(self.config.election_id)),
            action: PipelineAction::VerifyAndCommit as i32,
            config: Some(ForwardingPipelineConfig {
                p4info: Some(program::p4info()),
                p4_device_config: self.config.device_config.clone(),
            }),
            role: String::new(),
        };
        let _: SetForwardingPipelineConfigResponse = self
            .unary(
                "SetForwardingPipelineConfig",
                "/p4.v1.P4Runtime/SetForwardingPipelineConfig",
                request,
            )
            .await?;
        self.controller = Controller::new();
        self.resync = false;
        Ok(())
    }

    /// The generation installed by the last successful push or rollback.
    pub fn generation(&self) -> Option<u64> {
        self.controller.generation()
    }

    /// The entries the client believes installed.
    pub fn installed(&self) -> Entries {
        self.controller.installed()
    }

    /// Installs `routes` with `local` as a diff from the installed state. On failure the
    /// target is brought back to the installed state (see the module docs) and the error says
    /// whether that worked.
    pub async fn push(
        &mut self,
        routes: RouteSet,
        local: LocalEndpoints,
    ) -> Result<u64, ClientError> {
        let generation = routes.generation();
        if self.resync {
            self.restore().await?;
        }
        let prepared = self.controller.prepare(routes, local)?;
        self.send(prepared, generation).await
    }

    /// Returns the target to the generation before the installed one.
    pub async fn rollback(&mut self) -> Result<u64, ClientError> {
        if self.resync {
            self.restore().await?;
        }
        let prepared = self
            .controller
            .prepare_rollback()
            .ok_or(ClientError::NoPrevious)?;
        let generation = prepared.generation();
        self.send(prepared, generation).await
    }

    async fn send(&mut self, prepared: Prepared, generation: u64) -> Result<u64, ClientError> {
        match self.write(&prepared.updates).await {
            Ok(()) => {
                self.controller.commit(prepared);
                Ok(generation)
            }
            Err(error) => {
                let restored = match self.restore().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "P4 target: restoring the previous state failed");
                        false
                    }
                };
                Err(ClientError::PushFailed {
                    generation,
                    error: Box::new(error),
                    restored,
                })
            }
        }
    }

    /// Reads the target's entries and writes the diff to the installed state.
    async fn restore(&mut self) -> Result<(), ClientError> {
        self.resync = true;
        let actual = self.read_entries().await?;
        let updates = actual.diff(&self.controller.installed());
        self.write(&updates).await?;
        self.resync = false;
        Ok(())
    }

    /// Writes `updates` in order, in batches.
    pub async fn write(&mut self, updates: &[Update]) -> Result<(), ClientError> {
        for chunk in updates.chunks(WRITE_UPDATES_MAX) {
            let request = WriteRequest {
                device_id: self.config.device_id,
                election_id: Some(uint128(self.config.election_id)),
                updates: chunk.to_vec(),
                atomicity: Atomicity::ContinueOnError as i32,
                role: String::new(),
            };
            let _: WriteResponse = self
                .unary("Write", "/p4.v1.P4Runtime/Write", request)
                .await?;
        }
        Ok(())
    }

    /// Reads every entry of the program's tables and selector from the target, checked
    /// against the program.
    pub async fn read_entries(&mut self) -> Result<Entries, ClientError> {
        read_entries_over(&mut self.grpc, self.config.device_id).await
    }

    async fn unary<Req, Resp>(
        &mut self,
        rpc: &'static str,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, ClientError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| rpc_error(rpc)(tonic::Status::unavailable(e.to_string())))?;
        let path = PathAndQuery::from_static(path);
        let codec = ProstCodec::<Req, Resp>::default();
        let response = self
            .grpc
            .unary(tonic::Request::new(request), path, codec)
            .await
            .map_err(rpc_error(rpc))?;
        Ok(response.into_inner())
    }
}

/// The entries a Read returned, applied as INSERTs in dependency order (members, groups,
/// group-table entries, then the other tables) and checked like any update.
pub fn entries_from(entities: Vec<Entity>) -> Result<Entries, EntityError> {
    fn rank(e: &Entity) -> u8 {
        match &e.entity {
            Some(entity::Entity::ActionProfileMember(_)) => 0,
            Some(entity::Entity::ActionProfileGroup(_)) => 1,
            Some(entity::Entity::TableEntry(t)) if t.table_id == TABLE_GROUP => 2,
            _ => 3,
        }
    }
    let mut sorted = entities;
    sorted.sort_by_key(rank);
    let mut entries = Entries::default();
    for entity in sorted {
        entries.apply(&Update {
            r#type: UpdateType::Insert as i32,
            entity: Some(entity),
        })?;
    }
    Ok(entries)
}

/// Reads every entry of the program's tables and selector from device `device_id` over
/// `grpc`, checked against the program. `Read` needs no arbitration: any client may read.
pub(crate) async fn read_entries_over(
    grpc: &mut Grpc<Channel>,
    device_id: u64,
) -> Result<Entries, ClientError> {
    let wildcard = |e| Entity { entity: Some(e) };
    let request = ReadRequest {
        device_id,
        entities: vec![
            wildcard(entity::Entity::ActionProfileMember(ActionProfileMember {
                action_profile_id: PROFILE_SELECTOR,
                ..Default::default()
            })),
            wildcard(entity::Entity::ActionProfileGroup(ActionProfileGroup {
                action_profile_id: PROFILE_SELECTOR,
                ..Default::default()
            })),
            wildcard(entity::Entity::TableEntry(TableEntry::default())),
        ],
        role: String::new(),
    };
    grpc.ready()
        .await
        .map_err(|e| rpc_error("Read")(tonic::Status::unavailable(e.to_string())))?;
    let codec = ProstCodec::<ReadRequest, ReadResponse>::default();
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(request),
            PathAndQuery::from_static("/p4.v1.P4Runtime/Read"),
            codec,
        )
        .await
        .map_err(rpc_error("Read"))?
        .into_inner();
    let mut entities = Vec::new();
    while let Some(response) = stream.message().await.map_err(rpc_error("Read"))? {
        entities.extend(response.entities);
    }
    Ok(entries_from(entities)?)
}
