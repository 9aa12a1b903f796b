//! Herald's integration tests: one binary (linked once) holding every end-to-end test. Each
//! test starts the real server on an ephemeral port over a fresh sled directory, with real HTTP
//! receivers; `crash` runs the built binary and kills it with SIGKILL.

// Test code may fail loudly: the lints that keep input paths panic-free do not apply here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod access;
mod audit;
mod backport_notify;
mod backport_subscription;
mod backport_topics;
#[cfg(feature = "load")]
mod chaos;
mod clients;
mod cluster;
mod cluster_lease;
mod cluster_log;
mod commit_log;
mod conditional;
mod crash;
mod dashboard;
mod datadir;
mod edge;
mod fhir_rest;
mod filters;
mod fuzz_intake;
mod inferno;
mod ingest_group;
mod lifecycle;
#[cfg(feature = "load")]
mod load;
mod nats_servers;
mod negotiation;
mod operators;
mod patch;
mod replay;
mod rest_hook;
mod scenarios;
mod search;
mod search_crash;
mod search_paging;
mod secrets;
mod security;
mod sidecar;
mod signatures;
mod summary;
mod support;
mod topics;
mod versions;
mod websocket;
mod withheld;
mod workflows;
