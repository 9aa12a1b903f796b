//! Send-time authorization (digest §6.1: subscriptions are requests for future data, so the
//! grant is checked again when each notification is sent, and subscriptions outlive tokens).
//!
//! A [`SendGrant`] is what a subscription's owner may read now: its scopes and, for
//! `patient/` scopes, the patient. `may_read` is the one decision: a resource version is
//! covered when a scope grants read or search (`r`/`s` in SMART v2, `read` in v1) on its type,
//! and, when only `patient/` scopes do, the version is in that patient's compartment. A
//! version without content (a deletion, or one that could not be read) cannot be placed in a
//! compartment, so `patient/`-only grants do not cover it: the check fails closed. No grant
//! covers a Subscription: it carries another client's endpoint and secrets, and its owner reads
//! it through the API, never as a notification's focus or context.
//! Pure: no IO; callers pass the resource versions the event saw.

use serde_json::Value;

use super::{covers, Scopes};

/// What a subscription's owner may read at send time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendGrant {
    scopes: Scopes,
    patient: Option<String>,
}

impl SendGrant {
    pub fn new(scopes: Scopes, patient: Option<String>) -> SendGrant {
        SendGrant { scopes, patient }
    }

    /// May the owner see this version of a `resource_type` resource? `resource` is the
    /// version's content (`None`: a deletion, or unreadable). The same rule as a read through
    /// the API (`super::covers`), except that no grant covers a Subscription: another client's
    /// would carry its endpoint and headers, and a subscriber's own is not news to it.
    pub fn may_read(&self, resource_type: &str, resource: Option<&Value>) -> bool {
        resource_type != "Subscription" && covers(&self.scopes, self.patient.as_deref(), resource_type, resource)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn grant(scopes: &str, patient: Option<&str>) -> SendGrant {
        SendGrant::new(Scopes::parse(scopes).unwrap(), patient.map(str::to_owned))
    }

    fn task_for(patient: &str) -> Value {
        json!({ "resourceType": "Task", "id": "t", "status": "requested", "intent": "order", "for": { "reference": format!("Patient/{patient}") } })
    }

    #[test]
    fn read_or_search_on_the_type_covers_it_in_v2_and_v1_forms() {
        let task = task_for("p1");
        for scopes in ["system/Task.r", "system/Task.s", "user/Task.rs", "system/*.cruds", "system/Task.read", "user/*.*"] {
            assert!(grant(scopes, None).may_read("Task", Some(&task)), "{scopes}");
        }
        for scopes in ["system/Task.cud", "system/Task.write", "system/Observation.rs", "", "openid launch"] {
            assert!(!grant(scopes, None).may_read("Task", Some(&task)), "{scopes}");
        }
    }

    #[test]
    fn patient_scopes_cover_only_the_patients_compartment_as_of_the_version() {
        let g = grant("patient/Task.rs patient/Patient.r", Some("p1"));
        assert!(g.may_read("Task", Some(&task_for("p1"))));
        assert!(!g.may_read("Task", Some(&task_for("p2"))), "the same Task moved to another patient");
        assert!(g.may_read("Patient", Some(&json!({ "resourceType": "Patient", "id": "p1" }))));
        assert!(!g.may_read("Patient", Some(&json!({ "resourceType": "Patient", "id": "p2" }))));
        assert!(!g.may_read("Observation", Some(&json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1" } }))));
    }

    #[test]
    fn patient_scopes_fail_closed_without_content_or_patient_context() {
        let g = grant("patient/Task.rs", Some("p1"));
        assert!(!g.may_read("Task", None), "a deletion cannot be placed in a compartment");
        assert!(!grant("patient/Task.rs", None).may_read("Task", Some(&task_for("p1"))), "no patient claim");
    }

    #[test]
    fn a_system_or_user_scope_beside_a_patient_one_covers_everything_of_its_type() {
        let g = grant("patient/*.rs system/Task.r", Some("p1"));
        assert!(g.may_read("Task", Some(&task_for("p2"))));
        assert!(g.may_read("Task", None));
        assert!(!g.may_read("Observation", None));
    }

    #[test]
    fn no_grant_covers_a_subscription() {
        let sub = json!({ "resourceType": "Subscription", "id": "s", "status": "active" });
        for scopes in ["system/*.cruds", "system/Subscription.rs", "user/*.*", "system/*.read"] {
            assert!(!grant(scopes, None).may_read("Subscription", Some(&sub)), "{scopes}");
            assert!(!grant(scopes, None).may_read("Subscription", None), "{scopes}");
        }
        assert!(!grant("patient/*.rs", Some("p1")).may_read("Subscription", Some(&sub)));
    }

    #[test]
    fn api_key_scopes_are_the_union_of_the_clients_keys() {
        let mut s = Scopes::parse("system/Task.r").unwrap();
        s.extend(&Scopes::parse("system/Patient.s").unwrap());
        let g = SendGrant::new(s, None);
        assert!(g.may_read("Task", None) && g.may_read("Patient", None) && !g.may_read("Observation", None));
        assert!(!SendGrant::new(Scopes::default(), None).may_read("Task", None), "no key left: nothing");
    }
}
