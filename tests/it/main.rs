//! Herald's integration tests: one binary (linked once) holding every end-to-end test. Each
//! test starts the real server on an ephemeral port over a fresh sled directory, with real HTTP
//! receivers; `crash` runs the built binary and kills it with SIGKILL.

mod crash;
mod fhir_rest;
mod rest_hook;
mod sidecar;
mod support;
