//! Resource type names the search registry needs to decide which parameters apply to a
//! type, and which types `resolve()` may name, for the FHIR version the instance serves or
//! for a version given.
//!
//! The tables live in `crate::fhir::types`, derived from each version's type model
//! (`crate::fhir::model`); a test in `tests.rs` re-derives them from the official files. This
//! module only adapts them to the registry's use. Lookups only; nothing here reads resources.

pub use crate::fhir::types::{is_domain_resource_of, is_resource_type, is_resource_type_of};
use crate::fhir::version::FhirVersion;

/// Every concrete resource type name of `version`.
pub(crate) fn resource_types_of(version: FhirVersion) -> impl Iterator<Item = &'static str> {
    crate::fhir::types::resource_types_of(version).iter().copied()
}
