//! The committer's own check of `patient/` scopes: a client whose only grant on a type is a
//! `patient/` scope may write that type only inside its patient's compartment, both the
//! version it writes and the stored version it replaces or deletes.
//!
//! The API checks the same before it queues a write (`api::access`), but only here, under the
//! single writer, is the stored version the one the write really replaces: a concurrent write
//! that moved the resource to another patient between the two checks is caught. Pure: the
//! committer passes the grant it was given and the versions it read.

use serde_json::Value;

use super::{IngestError, WriteMethod};
use crate::auth::{in_compartment, Perm, Scopes};
use crate::store::StoredGrant;

/// The patient whose compartment bounds this write, if only `patient/` scopes grant it.
pub(super) fn bound(grant: Option<&StoredGrant>, resource_type: &str, method: WriteMethod) -> Result<Option<String>, IngestError> {
    let Some(grant) = grant else { return Ok(None) };
    let scopes = Scopes::parse(&grant.scopes).map_err(|_| IngestError::Forbidden("the client's scopes could not be read".into()))?;
    let perm = match method {
        WriteMethod::Create => Perm::Create,
        WriteMethod::Update => Perm::Update,
        WriteMethod::Delete => Perm::Delete,
    };
    if !scopes.needs_compartment(resource_type, perm) {
        return Ok(None);
    }
    match &grant.patient {
        Some(p) => Ok(Some(p.clone())),
        None => Err(IngestError::Forbidden("patient/ scopes need a token with a patient claim".into())),
    }
}

/// Checks a write bounded to `patient`'s compartment: `replaced` (the live stored version,
/// if any) must be in it, else the resource is "not found" to this client, as the API
/// answers; `written` (the new version, `None` for a delete) must be in it.
pub(super) fn check(
    patient: &str,
    resource_type: &str,
    id: &str,
    replaced: Option<&Value>,
    written: Option<&Value>,
) -> Result<(), IngestError> {
    if replaced.is_some_and(|r| !in_compartment(r, patient)) {
        return Err(IngestError::NotFound(format!("{resource_type}/{id}")));
    }
    if written.is_some_and(|r| !in_compartment(r, patient)) {
        return Err(IngestError::Forbidden(format!("the resource is not in Patient/{patient}'s compartment")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::GrantSource;

    fn grant(scopes: &str, patient: Option<&str>) -> StoredGrant {
        StoredGrant { via: GrantSource::Jwt, scopes: scopes.into(), patient: patient.map(str::to_owned) }
    }

    fn obs(patient: &str) -> Value {
        json!({ "resourceType": "Observation", "id": "o", "subject": { "reference": format!("Patient/{patient}") } })
    }

    #[test]
    fn only_patient_scoped_writes_are_bounded() {
        let g = grant("patient/Observation.cud system/Task.cruds", Some("p1"));
        assert_eq!(bound(Some(&g), "Observation", WriteMethod::Update).unwrap().as_deref(), Some("p1"));
        assert_eq!(bound(Some(&g), "Task", WriteMethod::Update).unwrap(), None);
        assert_eq!(bound(None, "Observation", WriteMethod::Delete).unwrap(), None, "anonymous and Herald's own writes");
        assert!(bound(Some(&grant("patient/Observation.cud", None)), "Observation", WriteMethod::Create).is_err());
    }

    #[test]
    fn the_replaced_version_and_the_new_one_must_both_be_in_the_compartment() {
        assert!(check("p1", "Observation", "o", Some(&obs("p1")), Some(&obs("p1"))).is_ok());
        assert!(check("p1", "Observation", "o", None, Some(&obs("p1"))).is_ok(), "a create");
        assert!(matches!(check("p1", "Observation", "o", Some(&obs("p2")), Some(&obs("p1"))), Err(IngestError::NotFound(_))));
        assert!(matches!(check("p1", "Observation", "o", Some(&obs("p2")), None), Err(IngestError::NotFound(_))), "a delete");
        assert!(matches!(check("p1", "Observation", "o", Some(&obs("p1")), Some(&obs("p2"))), Err(IngestError::Forbidden(_))));
    }
}
