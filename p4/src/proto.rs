//! The P4Runtime messages the node sends and reads: a prost mirror of the subset of
//! `p4/v1/p4runtime.proto` and `p4/config/v1/p4info.proto` (vendored under `p4/proto/`) that
//! this target uses, field numbers as in those files. Fields the node never sets are left out;
//! prost skips unknown fields when decoding, as protobuf requires.
//!
//! The PyPI `p4runtime` bindings decode everything built from these in `tests/p4runtime.rs`.
#![allow(missing_docs)]

/// `p4.v1`: the P4Runtime service's messages.
pub mod v1 {
    use super::config::P4Info;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Uint128 {
        #[prost(uint64, tag = "1")]
        pub high: u64,
        #[prost(uint64, tag = "2")]
        pub low: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(uint64, tag = "1")]
        pub device_id: u64,
        #[prost(message, optional, tag = "3")]
        pub election_id: Option<Uint128>,
        #[prost(message, repeated, tag = "4")]
        pub updates: Vec<Update>,
        #[prost(enumeration = "Atomicity", tag = "5")]
        pub atomicity: i32,
        #[prost(string, tag = "6")]
        pub role: String,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Atomicity {
        ContinueOnError = 0,
        RollbackOnError = 1,
        DataplaneAtomic = 2,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadRequest {
        #[prost(uint64, tag = "1")]
        pub device_id: u64,
        #[prost(message, repeated, tag = "2")]
        pub entities: Vec<Entity>,
        #[prost(string, tag = "3")]
        pub role: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadResponse {
        #[prost(message, repeated, tag = "1")]
        pub entities: Vec<Entity>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Update {
        #[prost(enumeration = "UpdateType", tag = "1")]
        pub r#type: i32,
        #[prost(message, optional, tag = "2")]
        pub entity: Option<Entity>,
    }

    /// `Update.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum UpdateType {
        Unspecified = 0,
        Insert = 1,
        Modify = 2,
        Delete = 3,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entity {
        #[prost(oneof = "entity::Entity", tags = "2, 3, 4")]
        pub entity: Option<entity::Entity>,
    }

    pub mod entity {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Entity {
            #[prost(message, tag = "2")]
            TableEntry(super::TableEntry),
            #[prost(message, tag = "3")]
            ActionProfileMember(super::ActionProfileMember),
            #[prost(message, tag = "4")]
            ActionProfileGroup(super::ActionProfileGroup),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TableEntry {
        #[prost(uint32, tag = "1")]
        pub table_id: u32,
        #[prost(message, repeated, tag = "2")]
        pub r#match: Vec<FieldMatch>,
        #[prost(message, optional, tag = "3")]
        pub action: Option<TableAction>,
        #[prost(int32, tag = "4")]
        pub priority: i32,
        #[prost(bool, tag = "8")]
        pub is_default_action: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FieldMatch {
        #[prost(uint32, tag = "1")]
        pub field_id: u32,
        #[prost(oneof = "field_match::FieldMatchType", tags = "2")]
        pub field_match_type: Option<field_match::FieldMatchType>,
    }

    pub mod field_match {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Exact {
            #[prost(bytes = "vec", tag = "1")]
            pub value: Vec<u8>,
        }

        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum FieldMatchType {
            #[prost(message, tag = "2")]
            Exact(Exact),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TableAction {
        #[prost(oneof = "table_action::Type", tags = "1, 2, 3")]
        pub r#type: Option<table_action::Type>,
    }

    pub mod table_action {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Type {
            #[prost(message, tag = "1")]
            Action(super::Action),
            #[prost(uint32, tag = "2")]
            ActionProfileMemberId(u32),
            #[prost(uint32, tag = "3")]
            ActionProfileGroupId(u32),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Action {
        #[prost(uint32, tag = "1")]
        pub action_id: u32,
        #[prost(message, repeated, tag = "4")]
        pub params: Vec<action::Param>,
    }

    pub mod action {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Param {
            #[prost(uint32, tag = "2")]
            pub param_id: u32,
            #[prost(bytes = "vec", tag = "3")]
            pub value: Vec<u8>,
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ActionProfileMember {
        #[prost(uint32, tag = "1")]
        pub action_profile_id: u32,
        #[prost(uint32, tag = "2")]
        pub member_id: u32,
        #[prost(message, optional, tag = "3")]
        pub action: Option<Action>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ActionProfileGroup {
        #[prost(uint32, tag = "1")]
        pub action_profile_id: u32,
        #[prost(uint32, tag = "2")]
        pub group_id: u32,
        #[prost(message, repeated, tag = "3")]
        pub members: Vec<action_profile_group::Member>,
        #[prost(int32, tag = "4")]
        pub max_size: i32,
    }

    pub mod action_profile_group {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Member {
            #[prost(uint32, tag = "1")]
            pub member_id: u32,
            #[prost(int32, tag = "2")]
            pub weight: i32,
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamMessageRequest {
        #[prost(oneof = "stream_message_request::Update", tags = "1")]
        pub update: Option<stream_message_request::Update>,
    }

    pub mod stream_message_request {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Update {
            #[prost(message, tag = "1")]
            Arbitration(super::MasterArbitrationUpdate),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamMessageResponse {
        #[prost(oneof = "stream_message_response::Update", tags = "1")]
        pub update: Option<stream_message_response::Update>,
    }

    pub mod stream_message_response {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Update {
            #[prost(message, tag = "1")]
            Arbitration(super::MasterArbitrationUpdate),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MasterArbitrationUpdate {
        #[prost(uint64, tag = "1")]
        pub device_id: u64,
        #[prost(message, optional, tag = "3")]
        pub election_id: Option<Uint128>,
        #[prost(message, optional, tag = "4")]
        pub status: Option<super::rpc::Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetForwardingPipelineConfigRequest {
        #[prost(uint64, tag = "1")]
        pub device_id: u64,
        #[prost(message, optional, tag = "3")]
        pub election_id: Option<Uint128>,
        #[prost(enumeration = "PipelineAction", tag = "4")]
        pub action: i32,
        #[prost(message, optional, tag = "5")]
        pub config: Option<ForwardingPipelineConfig>,
        #[prost(string, tag = "6")]
        pub role: String,
    }

    /// `SetForwardingPipelineConfigRequest.Action`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum PipelineAction {
        Unspecified = 0,
        Verify = 1,
        VerifyAndSave = 2,
        VerifyAndCommit = 3,
        Commit = 4,
        ReconcileAndCommit = 5,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetForwardingPipelineConfigResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ForwardingPipelineConfig {
        #[prost(message, optional, tag = "1")]
        pub p4info: Option<P4Info>,
        #[prost(bytes = "vec", tag = "2")]
        pub p4_device_config: Vec<u8>,
    }
}

/// `google.rpc`: the status carried in arbitration replies.
pub mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }
}

/// `p4.config.v1`: the P4Info.
pub mod config {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct P4Info {
        #[prost(message, optional, tag = "1")]
        pub pkg_info: Option<PkgInfo>,
        #[prost(message, repeated, tag = "2")]
        pub tables: Vec<Table>,
        #[prost(message, repeated, tag = "3")]
        pub actions: Vec<Action>,
        #[prost(message, repeated, tag = "4")]
        pub action_profiles: Vec<ActionProfile>,
        #[prost(message, repeated, tag = "5")]
        pub counters: Vec<Counter>,
        #[prost(message, repeated, tag = "12")]
        pub digests: Vec<Digest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PkgInfo {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, tag = "5")]
        pub arch: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Preamble {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub alias: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MatchField {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(int32, tag = "4")]
        pub bitwidth: i32,
        #[prost(enumeration = "MatchType", tag = "5")]
        pub match_type: i32,
    }

    /// `MatchField.MatchType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MatchType {
        Unspecified = 0,
        Exact = 2,
        Lpm = 3,
        Ternary = 4,
        Range = 5,
        Optional = 6,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Table {
        #[prost(message, optional, tag = "1")]
        pub preamble: Option<Preamble>,
        #[prost(message, repeated, tag = "2")]
        pub match_fields: Vec<MatchField>,
        #[prost(message, repeated, tag = "3")]
        pub action_refs: Vec<ActionRef>,
        #[prost(uint32, tag = "4")]
        pub const_default_action_id: u32,
        #[prost(uint32, tag = "6")]
        pub implementation_id: u32,
        #[prost(int64, tag = "8")]
        pub size: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ActionRef {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(enumeration = "ActionRefScope", tag = "3")]
        pub scope: i32,
    }

    /// `ActionRef.Scope`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ActionRefScope {
        TableAndDefault = 0,
        TableOnly = 1,
        DefaultOnly = 2,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Action {
        #[prost(message, optional, tag = "1")]
        pub preamble: Option<Preamble>,
        #[prost(message, repeated, tag = "2")]
        pub params: Vec<action::Param>,
    }

    pub mod action {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Param {
            #[prost(uint32, tag = "1")]
            pub id: u32,
            #[prost(string, tag = "2")]
            pub name: String,
            #[prost(int32, tag = "4")]
            pub bitwidth: i32,
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ActionProfile {
        #[prost(message, optional, tag = "1")]
        pub preamble: Option<Preamble>,
        #[prost(uint32, repeated, tag = "2")]
        pub table_ids: Vec<u32>,
        #[prost(bool, tag = "3")]
        pub with_selector: bool,
        #[prost(int64, tag = "4")]
        pub size: i64,
        #[prost(int32, tag = "5")]
        pub max_group_size: i32,
        #[prost(oneof = "action_profile::SelectorSizeSemantics", tags = "6")]
        pub selector_size_semantics: Option<action_profile::SelectorSizeSemantics>,
    }

    pub mod action_profile {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct SumOfWeights {}

        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum SelectorSizeSemantics {
            #[prost(message, tag = "6")]
            SumOfWeights(SumOfWeights),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CounterSpec {
        #[prost(enumeration = "CounterUnit", tag = "1")]
        pub unit: i32,
    }

    /// `CounterSpec.Unit`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum CounterUnit {
        Unspecified = 0,
        Bytes = 1,
        Packets = 2,
        Both = 3,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        #[prost(message, optional, tag = "1")]
        pub preamble: Option<Preamble>,
        #[prost(message, optional, tag = "2")]
        pub spec: Option<CounterSpec>,
        #[prost(int64, tag = "3")]
        pub size: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Digest {
        #[prost(message, optional, tag = "1")]
        pub preamble: Option<Preamble>,
        #[prost(message, optional, tag = "2")]
        pub type_spec: Option<P4DataTypeSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct P4DataTypeSpec {
        #[prost(oneof = "p4_data_type_spec::TypeSpec", tags = "4")]
        pub type_spec: Option<p4_data_type_spec::TypeSpec>,
    }

    pub mod p4_data_type_spec {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum TypeSpec {
            /// A struct type, by name.
            #[prost(message, tag = "4")]
            Struct(super::P4NamedType),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct P4NamedType {
        #[prost(string, tag = "1")]
        pub name: String,
    }
}
