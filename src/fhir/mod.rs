//! Shared FHIR vocabulary: resource type names, ids, instants, references, OperationOutcome
//! issues, and the typed views Herald keeps of `SubscriptionTopic` and `Subscription`.
//!
//! Nothing here does IO or knows about the rest of the crate: every other stage depends on
//! `fhir`, `fhir` depends on none of them.
//!
//! - `types`: each version's resource type list (the instance's by default) and id rules.
//! - `instant`: FHIR `instant` formatting and parsing.
//! - `outcome`: `Issue`, the unit of every validation and error report.
//! - `topic`: `TopicSpec`, a validated SubscriptionTopic, read from each version's stored form
//!   (R4 `Basic`, R4B and R5 `SubscriptionTopic`).
//! - `subscription`: `SubscriptionSpec`, a validated R5 Subscription.
//! - `model`: the type model of each version (elements, choice types, base types), generated
//!   from the spec.
//! - `fhirpath`: the FHIRPath engine topics and search parameters evaluate with.
//! - `search`: each version's SearchParameters and the path subset that evaluates them.
//! - `official` (tests only): the official R4/R4B definitions in `../shared`, and a structural
//!   validator over them.
//! - `version`: the FHIR version the instance serves (R4, R4B or R5), chosen once per process.

pub mod fhirpath;
pub mod instant;
pub mod model;
#[cfg(test)]
pub(crate) mod official;
pub mod outcome;
pub mod search;
pub mod subscription;
pub mod topic;
pub mod types;
pub mod version;

pub use outcome::{Issue, IssueType};
pub use version::FhirVersion;
