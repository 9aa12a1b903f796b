//! Shared FHIR vocabulary: resource type names, ids, instants, references, OperationOutcome
//! issues, and the typed views Herald keeps of `SubscriptionTopic` and `Subscription`.
//!
//! Nothing here does IO or knows about the rest of the crate: every other stage depends on
//! `fhir`, `fhir` depends on none of them.
//!
//! - `types`: the R5 resource type list and id rules.
//! - `instant`: FHIR `instant` formatting and parsing.
//! - `outcome`: `Issue`, the unit of every validation and error report.
//! - `topic`: `TopicSpec`, a validated SubscriptionTopic.
//! - `subscription`: `SubscriptionSpec`, a validated R5 Subscription.
//! - `search`: the R5 SearchParameters and the path subset that evaluates them.

pub mod instant;
pub mod outcome;
pub mod search;
pub mod subscription;
pub mod topic;
pub mod types;

pub use outcome::{Issue, IssueType};
