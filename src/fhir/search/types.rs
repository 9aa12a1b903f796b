//! FHIR R5 type names the search evaluator needs without loading StructureDefinitions.
//!
//! Owns three tables taken from the official R5 definitions (`profiles-types.json`,
//! `profiles-resources.json`): the concrete resource types, the data types, and the choice
//! elements (`value[x]` and friends) with the types each may take. The tests in `tests.rs`
//! re-derive all three from the official files, so a table cannot drift silently.
//! Lookups only; nothing here reads resources.

use std::collections::{HashMap, HashSet};
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

/// Concrete R5 data types, primitives first. These are the type codes a choice element's
/// JSON key can end with (`valueQuantity`, `onsetDateTime`).
const DATA_TYPES: &str = "\
    base64Binary boolean canonical code date dateTime decimal id instant integer integer64 \
    markdown oid positiveInt string time unsignedInt uri url uuid xhtml Address Age Annotation \
    Attachment Availability CodeableConcept CodeableReference Coding ContactDetail ContactPoint \
    Contributor Count DataRequirement Distance Dosage Duration ElementDefinition Expression \
    ExtendedContactDetail Extension HumanName Identifier MarketingStatus Meta MonetaryComponent \
    Money Narrative ParameterDefinition Period ProductShelfLife Quantity Range Ratio RatioRange \
    Reference RelatedArtifact SampledData Signature Timing TriggerDefinition UsageContext \
    VirtualServiceDetail";

/// Data types that specialise `Quantity`; `ofType(Quantity)` selects them too.
const QUANTITY_SUBTYPES: [&str; 4] = ["Age", "Count", "Distance", "Duration"];

/// Every choice element name in R5 resources and data types, with the union of the types it
/// allows anywhere ("*" = the open type list of `Extension.value[x]`). Only these names get
/// choice expansion: a bare suffix rule would read `Coverage.subscriberId` as a choice of
/// `subscriber`, or `Citation.statusDate` as one of `status`.
const CHOICE_ELEMENTS: &[(&str, &str)] = &[
    ("abatement", "dateTime string Age Period Range"),
    ("actor", "canonical Reference"),
    ("additive", "CodeableConcept Reference"),
    ("address", "string url ContactPoint ExtendedContactDetail"),
    ("age", "string Age Range"),
    ("allowed", "boolean string unsignedInt CodeableConcept Money"),
    ("amount", "string Quantity Range Ratio"),
    ("answer", "boolean date dateTime decimal integer string time Coding Quantity Reference"),
    ("artifact", "canonical uri Reference"),
    ("asNeeded", "boolean CodeableConcept"),
    ("author", "string Reference"),
    ("born", "date string Period"),
    ("bounds", "Duration Period Range"),
    ("chargeItem", "CodeableConcept Reference"),
    ("citeAs", "markdown Reference"),
    ("collected", "dateTime Period"),
    ("concentration", "CodeableConcept Quantity Ratio RatioRange"),
    ("content", "Attachment CodeableConcept Reference"),
    ("cost", "CodeableConcept Money"),
    ("coverage", "Period Timing"),
    ("date", "dateTime Period"),
    ("deceased", "boolean date dateTime string Age Range"),
    ("defaultValue", "*"),
    ("definition", "canonical uri"),
    ("detail", "boolean integer string CodeableConcept Quantity Range Ratio"),
    ("diagnosis", "CodeableConcept Reference"),
    ("dose", "Quantity Range"),
    ("due", "date Duration"),
    ("duration", "string Quantity Range"),
    ("effective", "dateTime instant Period Timing"),
    ("endpoint", "url Reference"),
    ("entity", "CodeableConcept Reference"),
    ("event", "canonical dateTime id uri CodeableConcept Coding Reference"),
    ("fastingStatus", "CodeableConcept Duration"),
    ("fixed", "*"),
    ("generatedBy", "Identifier Reference"),
    ("identified", "dateTime Period"),
    ("instance", "CodeableConcept Reference"),
    ("instances", "Quantity Range"),
    ("instantiates", "canonical Reference"),
    ("instruction", "markdown Reference"),
    ("item", "CodeableConcept Reference"),
    ("legallyBinding", "Attachment Reference"),
    ("link", "canonical uri"),
    ("location", "Address CodeableConcept Reference"),
    ("maxValue", "date dateTime decimal instant integer integer64 positiveInt time unsignedInt Quantity"),
    ("measureScore", "dateTime CodeableConcept Duration Period Quantity Range"),
    ("minValue", "date dateTime decimal instant integer integer64 positiveInt time unsignedInt Quantity"),
    ("minimumVolume", "string Quantity"),
    ("module", "canonical uri CodeableConcept"),
    ("multipleBirth", "boolean integer"),
    ("network", "string uri Reference"),
    ("occurence", "dateTime Period Timing"),
    ("occurred", "dateTime Period"),
    ("occurrence", "dateTime string Age Period Range Timing"),
    ("offset", "Duration Range"),
    ("onset", "dateTime string Age Period Range"),
    ("pattern", "*"),
    ("performed", "dateTime string Age Period Range"),
    ("period", "date string Duration Period"),
    ("presentation", "CodeableConcept Quantity Ratio RatioRange"),
    ("probability", "decimal Range"),
    ("procedure", "CodeableConcept Reference"),
    ("product", "CodeableConcept Reference"),
    ("quantity", "Quantity Range Ratio"),
    ("rate", "Quantity Range Ratio"),
    ("reported", "boolean Reference"),
    ("sequence", "string CodeableConcept Reference"),
    ("serviced", "date Period"),
    ("source", "markdown string uri url Reference"),
    ("sourceScope", "canonical uri"),
    ("start", "date CodeableConcept"),
    ("strength", "CodeableConcept Quantity Ratio RatioRange"),
    ("structureProfile", "canonical uri"),
    ("subject", "canonical CodeableConcept Reference"),
    ("substance", "CodeableConcept Reference"),
    ("substanceDefinition", "CodeableConcept Reference"),
    ("targetItem", "positiveInt string Identifier"),
    ("targetScope", "canonical uri"),
    ("time", "dateTime Period"),
    ("timing", "date dateTime Age Duration Period Range Reference Timing"),
    ("topic", "CodeableConcept Reference"),
    ("used", "string unsignedInt Money"),
    ("value", "*"),
    ("versionAlgorithm", "string Coding"),
    ("when", "dateTime Period Range"),
];

struct Tables {
    resources: HashSet<&'static str>,
    /// Capitalised type code (`DateTime`) to type name (`dateTime`).
    by_suffix: HashMap<String, &'static str>,
    choices: HashMap<&'static str, &'static str>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        resources: RESOURCE_TYPES.split_whitespace().collect(),
        by_suffix: DATA_TYPES.split_whitespace().map(|name| (capitalise(name), name)).collect(),
        choices: CHOICE_ELEMENTS.iter().copied().collect(),
    })
}

fn capitalise(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// True for a concrete R5 resource type name such as `Patient`.
pub fn is_resource_type(name: &str) -> bool {
    tables().resources.contains(name)
}

/// True for a concrete resource type that derives from `DomainResource`.
pub fn is_domain_resource(name: &str) -> bool {
    is_resource_type(name) && !NOT_DOMAIN_RESOURCES.contains(&name)
}

/// True for a concrete R5 data type name such as `dateTime` or `CodeableConcept`.
pub fn is_data_type(name: &str) -> bool {
    DATA_TYPES.split_whitespace().any(|t| t == name)
}

/// The type of a choice element stored under `key` when the element is called `name`:
/// `("value", "valueQuantity")` gives `Quantity`, `("onset", "onsetDateTime")` gives
/// `dateTime`. `None` when `name` is not a choice element or the suffix is not one of its types.
pub fn choice_type(name: &str, key: &str) -> Option<&'static str> {
    let allowed = *tables().choices.get(name)?;
    let suffix = key.strip_prefix(name)?;
    if !suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    let ty = *tables().by_suffix.get(suffix)?;
    (allowed == "*" || allowed.split_whitespace().any(|t| t == ty)).then_some(ty)
}

/// True if `name` is a choice element somewhere in R5.
pub fn is_choice_name(name: &str) -> bool {
    tables().choices.contains_key(name)
}

/// FHIR type test: is a value of type `actual` also of type `wanted`?
///
/// Resources follow their hierarchy (`Resource`, `DomainResource`) and the Quantity family
/// specialises `Quantity`. Primitive specialisations are kept distinct (`canonical` is not
/// taken as a `uri`): choice elements list both, and `sourceScope as uri` must not select
/// `sourceScopeCanonical`.
pub fn is_subtype(actual: &str, wanted: &str) -> bool {
    if actual == wanted {
        return true;
    }
    match wanted {
        "Resource" => is_resource_type(actual),
        "DomainResource" => is_domain_resource(actual),
        "Quantity" => QUANTITY_SUBTYPES.contains(&actual),
        _ => false,
    }
}

/// The tables as lists, for the tests that compare them with the official definitions.
#[cfg(test)]
pub(crate) fn resource_type_list() -> Vec<&'static str> {
    RESOURCE_TYPES.split_whitespace().collect()
}

#[cfg(test)]
pub(crate) fn data_type_list() -> Vec<&'static str> {
    DATA_TYPES.split_whitespace().collect()
}

#[cfg(test)]
pub(crate) fn choice_list() -> &'static [(&'static str, &'static str)] {
    CHOICE_ELEMENTS
}
