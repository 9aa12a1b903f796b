//! The reference data unit tests read from `../shared/fhir` (official FHIR definitions and
//! examples, the Backport IG, the FHIRPath suite). When it is absent a test prints a note and
//! passes, so the crate can be tested on its own; under CI (`CI=true`) a missing data set
//! fails the test instead, so that conformance checks can never silently turn into no-ops.

use std::path::{Path, PathBuf};

/// The directory holding `shared/fhir` (beside the repository).
pub(crate) const SHARED_FHIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir");

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `path` when it exists; otherwise a note and `None`, or a failure under CI.
pub(crate) fn shared(path: impl AsRef<Path>) -> Option<PathBuf> {
    let path = path.as_ref();
    if path.exists() {
        return Some(path.to_path_buf());
    }
    assert!(!under_ci(), "{} is missing and CI=true: the reference data must be present under CI", path.display());
    println!("note: {} is absent; skipping the checks that need it", path.display());
    None
}

/// `shared/fhir/<rel>`, as [`shared`] finds it.
pub(crate) fn fhir(rel: &str) -> Option<PathBuf> {
    shared(Path::new(SHARED_FHIR).join(rel))
}

/// The JSON at `shared/fhir/<rel>`, as [`shared`] finds it; a file that exists but does not
/// parse fails the test.
pub(crate) fn fhir_json(rel: &str) -> Option<serde_json::Value> {
    let path = fhir(rel)?;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}
