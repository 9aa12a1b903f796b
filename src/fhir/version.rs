//! The FHIR version an instance speaks: R4 (4.0.1) and R4B (4.3.0) with the Subscriptions R5
//! Backport IG 1.1.0, or R5 (5.0.0). One version per process (docs/decisions.md).
//!
//! The version is chosen once, before anything reads the model, the search parameters or the
//! resource type list ([`select`]); the pure code that needs it (FHIRPath typing, search
//! parameter look-ups, resource type checks) asks [`instance`]. Until a version is selected,
//! [`instance`] answers R5, the default, so unit tests and tools need no set-up.

use std::sync::OnceLock;

/// A FHIR release Herald can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FhirVersion {
    /// FHIR R4, 4.0.1, with the Subscriptions Backport (Parameters status).
    R4,
    /// FHIR R4B, 4.3.0, with the Subscriptions Backport (SubscriptionStatus resource).
    R4B,
    /// FHIR R5, 5.0.0.
    R5,
}

impl FhirVersion {
    /// Every version, oldest first.
    pub const ALL: [FhirVersion; 3] = [FhirVersion::R4, FhirVersion::R4B, FhirVersion::R5];

    /// The full version number (`CapabilityStatement.fhirVersion`, the `fhirVersion` MIME
    /// parameter, `--fhir-version`).
    pub fn number(self) -> &'static str {
        match self {
            FhirVersion::R4 => "4.0.1",
            FhirVersion::R4B => "4.3.0",
            FhirVersion::R5 => "5.0.0",
        }
    }

    /// A short name for logs and docs.
    pub fn name(self) -> &'static str {
        match self {
            FhirVersion::R4 => "R4",
            FhirVersion::R4B => "R4B",
            FhirVersion::R5 => "R5",
        }
    }

    /// Parses a version as `--fhir-version` and `fhir.version` take it: the full number, its
    /// `major.minor` form (as the `fhirVersion` MIME parameter allows), or the release name.
    pub fn parse(text: &str) -> Option<FhirVersion> {
        match text.trim() {
            "4.0.1" | "4.0" | "R4" | "r4" => Some(FhirVersion::R4),
            "4.3.0" | "4.3" | "R4B" | "r4b" => Some(FhirVersion::R4B),
            "5.0.0" | "5.0" | "R5" | "r5" => Some(FhirVersion::R5),
            _ => None,
        }
    }

    /// Whether Subscriptions follow the Backport IG (R4 and R4B) rather than R5.
    pub fn is_backport(self) -> bool {
        self != FhirVersion::R5
    }
}

impl std::fmt::Display for FhirVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.number())
    }
}

static INSTANCE: OnceLock<FhirVersion> = OnceLock::new();

/// The version this process serves (R5 until [`select`] chose another).
pub fn instance() -> FhirVersion {
    INSTANCE.get().copied().unwrap_or(FhirVersion::R5)
}

/// Chooses the process's version. Choosing the version already chosen is fine; choosing
/// another is refused, since the model, search parameters and stored resources of one
/// version cannot serve another.
pub fn select(version: FhirVersion) -> Result<(), String> {
    let chosen = *INSTANCE.get_or_init(|| version);
    if chosen == version {
        Ok(())
    } else {
        Err(format!("this process already serves FHIR {chosen}; one FHIR version per process (asked for {version})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_every_accepted_spelling_and_nothing_else() {
        for v in FhirVersion::ALL {
            assert_eq!(FhirVersion::parse(v.number()), Some(v));
            assert_eq!(FhirVersion::parse(v.name()), Some(v));
            assert_eq!(FhirVersion::parse(&v.number()[..3]), Some(v));
        }
        for bad in ["", "4", "4.0.0", "3.0.2", "6.0.0", "5.0.0-ballot", "R6"] {
            assert_eq!(FhirVersion::parse(bad), None, "{bad}");
        }
    }
}
