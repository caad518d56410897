//! The `nexus` binary's library: configuration, the admin HTTP API, the local NexAPI endpoint,
//! the OpenAI-compatible gateway and upstream services, the node composition root, the
//! `nexus ctl` client and `nexus demo`.
//!
//! `fabric` wires the cores (`nexus-gossip`, `nexus-registry`, `nexus-trust-core`,
//! `nexus-stream`) and actors (`nexus-actors`) into a running node with real sockets, a sled data
//! directory, the data plane and an axum admin server. It holds no protocol logic. The admin
//! API's request and response types ([`api`]) are shared by the server and `nexus ctl`.
#![deny(missing_docs)]

pub mod acl;
pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod gateway;
pub mod logging;
pub mod nexapi;
pub mod node;
pub mod sim_cmd;
pub mod targets;
pub mod telemetry;
pub mod upstream;
