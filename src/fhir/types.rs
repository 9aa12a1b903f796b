//! The resource type names Herald accepts at `/fhir/{type}`, for the FHIR version the
//! instance serves, and FHIR ids.
//!
//! Each version's list is the concrete (non-abstract) resource StructureDefinitions of its
//! official definitions, read from that version's type model (`crate::fhir::model`, generated
//! from `profiles-resources.json`), sorted so that lookup is a binary search. R4 has no
//! `SubscriptionTopic` or `SubscriptionStatus`; R4B has both; R5 drops R4's `MedicinalProduct*`
//! family, among others. [`resource_types`] and [`is_resource_type`] answer for
//! `fhir::version::instance`; the `_of` forms take the version.

use std::sync::OnceLock;

use crate::fhir::model::Model;
use crate::fhir::version::{self, FhirVersion};

/// Concrete resource types of `version`, sorted. Empty only if the embedded model is broken
/// (its own tests fail first).
pub fn resource_types_of(version: FhirVersion) -> &'static [&'static str] {
    static LISTS: [OnceLock<Vec<&'static str>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let cell = match version {
        FhirVersion::R4 => &LISTS[0],
        FhirVersion::R4B => &LISTS[1],
        FhirVersion::R5 => &LISTS[2],
    };
    cell.get_or_init(|| Model::for_version(version).map(|m| m.resource_types().collect()).unwrap_or_default())
}

/// Concrete resource types of the instance's version, sorted.
pub fn resource_types() -> &'static [&'static str] {
    resource_types_of(version::instance())
}

/// True when `name` is a concrete resource type of `version`.
pub fn is_resource_type_of(version: FhirVersion, name: &str) -> bool {
    resource_types_of(version).binary_search(&name).is_ok()
}

/// True when `name` is a concrete resource type of the instance's version.
pub fn is_resource_type(name: &str) -> bool {
    is_resource_type_of(version::instance(), name)
}

/// True for a concrete resource type of `version` that derives from `DomainResource` (every
/// one but `Binary`, `Bundle` and `Parameters`).
pub fn is_domain_resource_of(version: FhirVersion, name: &str) -> bool {
    Model::for_version(version).is_ok_and(|m| m.is_domain_resource(name))
}

/// True for a concrete resource type of the instance's version deriving from `DomainResource`.
pub fn is_domain_resource(name: &str) -> bool {
    is_domain_resource_of(version::instance(), name)
}

/// Concrete R5 resource types, sorted: R5's table, for callers that have not moved to
/// [`resource_types`] (which answers for the instance's version). A test checks it against
/// the R5 model.
pub const RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "ActorDefinition",
    "AdministrableProductDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "ArtifactAssessment",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BiologicallyDerivedProductDispense",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "ChargeItemDefinition",
    "Citation",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "ClinicalUseDefinition",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "ConditionDefinition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceAssociation",
    "DeviceDefinition",
    "DeviceDispense",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUsage",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "EncounterHistory",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceReport",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "FormularyItem",
    "GenomicStudy",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingSelection",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "Ingredient",
    "InsurancePlan",
    "InventoryItem",
    "InventoryReport",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "ManufacturedItemDefinition",
    "Measure",
    "MeasureReport",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProductDefinition",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionIntake",
    "NutritionOrder",
    "NutritionProduct",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "PackagedProductDefinition",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Permission",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RegulatedAuthorization",
    "RelatedPerson",
    "RequestOrchestration",
    "Requirements",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "SubscriptionStatus",
    "SubscriptionTopic",
    "Substance",
    "SubstanceDefinition",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestPlan",
    "TestReport",
    "TestScript",
    "Transport",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// The type named by a `SubscriptionTopic.resourceTrigger.resource` or `canFilterBy.resource`:
/// R5 allows the bare name (`Task`) or the core StructureDefinition URL
/// (`http://hl7.org/fhir/StructureDefinition/Task`).
pub fn type_from_uri(uri: &str) -> &str {
    uri.strip_prefix("http://hl7.org/fhir/StructureDefinition/").unwrap_or(uri)
}

/// FHIR `id`: 1 to 64 characters of `[A-Za-z0-9\-.]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_complete() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(RESOURCE_TYPES.len(), 158);
        assert_eq!(resource_types_of(FhirVersion::R5), RESOURCE_TYPES, "the R5 table is the R5 model's");
        for v in FhirVersion::ALL {
            let list = resource_types_of(v);
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{v}");
            assert!(is_resource_type_of(v, "Task"), "{v}");
            assert!(is_resource_type_of(v, "Subscription"), "{v}");
            assert!(!is_resource_type_of(v, "DomainResource"), "{v}");
            assert!(!is_resource_type_of(v, "Resource"), "{v}");
            assert!(!is_resource_type_of(v, "task"), "{v}");
            assert!(is_domain_resource_of(v, "Task") && !is_domain_resource_of(v, "Bundle"), "{v}");
            let not_domain: Vec<&str> = list.iter().copied().filter(|t| !is_domain_resource_of(v, t)).collect();
            assert_eq!(not_domain, ["Binary", "Bundle", "Parameters"], "{v}");
        }
    }

    /// The lists differ as the specifications say (counts from shared/fhir/data/*/README.md:
    /// 149 R4 resource definitions less Resource, DomainResource and the logical
    /// MetadataResource; 143 R4B less 2; 162 R5 less 4).
    #[test]
    fn each_version_has_its_own_resource_types() {
        let (r4, r4b, r5) = (FhirVersion::R4, FhirVersion::R4B, FhirVersion::R5);
        assert_eq!([resource_types_of(r4).len(), resource_types_of(r4b).len(), resource_types_of(r5).len()], [146, 141, 158]);
        for name in ["SubscriptionTopic", "SubscriptionStatus"] {
            assert!(!is_resource_type_of(r4, name), "R4 has no {name}");
            assert!(is_resource_type_of(r4b, name), "R4B has {name}");
            assert!(is_resource_type_of(r5, name), "R5 has {name}");
        }
        assert!(is_resource_type_of(r4, "MedicinalProduct") && !is_resource_type_of(r4b, "MedicinalProduct"));
        assert!(is_resource_type_of(r4, "DeviceUseStatement") && !is_resource_type_of(r5, "DeviceUseStatement"));
        assert!(!is_resource_type_of(r4, "Transport") && !is_resource_type_of(r4b, "Transport") && is_resource_type_of(r5, "Transport"));
        assert!(!is_resource_type_of(r4, "MetadataResource"), "a logical model in R4, no resource");
        // The default instance version is R5 until `select` runs (here it never does).
        assert_eq!(resource_types(), resource_types_of(version::instance()));
    }

    #[test]
    fn trigger_uris() {
        assert_eq!(type_from_uri("http://hl7.org/fhir/StructureDefinition/Task"), "Task");
        assert_eq!(type_from_uri("Task"), "Task");
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"x".repeat(65)));
    }
}
