//! FHIR R5 resource type names the search registry needs to decide which parameters apply
//! to a type, and which types `resolve()` may name, without loading StructureDefinitions.
//!
//! Owns the table of concrete resource types taken from the official R5 definitions
//! (`profiles-resources.json`); a test in `tests.rs` re-derives it from the official file, so
//! it cannot drift silently. Element and data-type knowledge lives in the FHIRPath engine's
//! model (`crate::fhir::model`). Lookups only; nothing here reads resources.

use std::collections::HashSet;
use std::sync::OnceLock;

/// Concrete R5 resource types (abstract `Resource`, `DomainResource`, `CanonicalResource`
/// and `MetadataResource` excluded).
const RESOURCE_TYPES: &str = "\
    Account ActivityDefinition ActorDefinition AdministrableProductDefinition AdverseEvent \
    AllergyIntolerance Appointment AppointmentResponse ArtifactAssessment AuditEvent Basic \
    Binary BiologicallyDerivedProduct BiologicallyDerivedProductDispense BodyStructure Bundle \
    CapabilityStatement CarePlan CareTeam ChargeItem ChargeItemDefinition Citation Claim \
    ClaimResponse ClinicalImpression ClinicalUseDefinition CodeSystem Communication \
    CommunicationRequest CompartmentDefinition Composition ConceptMap Condition \
    ConditionDefinition Consent Contract Coverage CoverageEligibilityRequest \
    CoverageEligibilityResponse DetectedIssue Device DeviceAssociation DeviceDefinition \
    DeviceDispense DeviceMetric DeviceRequest DeviceUsage DiagnosticReport DocumentReference \
    Encounter EncounterHistory Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare \
    EventDefinition Evidence EvidenceReport EvidenceVariable ExampleScenario \
    ExplanationOfBenefit FamilyMemberHistory Flag FormularyItem GenomicStudy Goal \
    GraphDefinition Group GuidanceResponse HealthcareService ImagingSelection ImagingStudy \
    Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide \
    Ingredient InsurancePlan InventoryItem InventoryReport Invoice Library Linkage List \
    Location ManufacturedItemDefinition Measure MeasureReport Medication \
    MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest \
    MedicationStatement MedicinalProductDefinition MessageDefinition MessageHeader \
    MolecularSequence NamingSystem NutritionIntake NutritionOrder NutritionProduct Observation \
    ObservationDefinition OperationDefinition OperationOutcome Organization \
    OrganizationAffiliation PackagedProductDefinition Parameters Patient PaymentNotice \
    PaymentReconciliation Permission Person PlanDefinition Practitioner PractitionerRole \
    Procedure Provenance Questionnaire QuestionnaireResponse RegulatedAuthorization \
    RelatedPerson RequestOrchestration Requirements ResearchStudy ResearchSubject \
    RiskAssessment Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition \
    StructureDefinition StructureMap Subscription SubscriptionStatus SubscriptionTopic \
    Substance SubstanceDefinition SubstanceNucleicAcid SubstancePolymer SubstanceProtein \
    SubstanceReferenceInformation SubstanceSourceMaterial SupplyDelivery SupplyRequest Task \
    TerminologyCapabilities TestPlan TestReport TestScript Transport ValueSet \
    VerificationResult VisionPrescription";

/// The only concrete resources that derive from `Resource` directly, not from `DomainResource`.
const NOT_DOMAIN_RESOURCES: [&str; 3] = ["Binary", "Bundle", "Parameters"];

fn resources() -> &'static HashSet<&'static str> {
    static RESOURCES: OnceLock<HashSet<&'static str>> = OnceLock::new();
    RESOURCES.get_or_init(|| resource_types().collect())
}

/// True for a concrete R5 resource type name such as `Patient`.
pub fn is_resource_type(name: &str) -> bool {
    resources().contains(name)
}

/// Every concrete R5 resource type name.
pub(crate) fn resource_types() -> impl Iterator<Item = &'static str> {
    RESOURCE_TYPES.split_whitespace()
}

/// True for a concrete resource type that derives from `DomainResource`.
pub fn is_domain_resource(name: &str) -> bool {
    is_resource_type(name) && !NOT_DOMAIN_RESOURCES.contains(&name)
}
