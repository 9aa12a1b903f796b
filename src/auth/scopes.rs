//! SMART scopes: `context/Type.perms` with context `system`, `user` or `patient`, type a
//! resource type or `*`, perms SMART v2 letters `cruds` (any subset, in that order) or v1
//! `read` (`rs`), `write` (`cud`) and `*` (`cruds`). Unknown scopes (`openid`, `launch`,
//! `fhirUser`, ...) are ignored; a malformed resource scope is an error.

use std::fmt;

use crate::fhir::types::is_resource_type;

/// One permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Perm {
    fn bit(self) -> u8 {
        match self {
            Perm::Create => 1,
            Perm::Read => 2,
            Perm::Update => 4,
            Perm::Delete => 8,
            Perm::Search => 16,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    patient: bool,
    /// `None`: every type.
    resource_type: Option<String>,
    perms: u8,
}

/// A set of granted scopes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Scopes {
    grants: Vec<Grant>,
    text: String,
}

impl Scopes {
    /// Everything (anonymous mode).
    pub fn all() -> Scopes {
        Scopes { grants: vec![Grant { patient: false, resource_type: None, perms: 31 }], text: "system/*.cruds".into() }
    }

    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut grants = Vec::new();
        for scope in text.split_whitespace() {
            let Some((context, rest)) = scope.split_once('/') else { continue };
            if !matches!(context, "system" | "user" | "patient") {
                continue;
            }
            let (ty, perms) = rest.split_once('.').ok_or_else(|| format!("{scope}: expected context/Type.permissions"))?;
            // SMART v2 allows query parameters on a scope (`?category=...`); Herald does not
            // narrow by them, so such a scope grants nothing rather than too much.
            if perms.contains('?') {
                continue;
            }
            let resource_type = match ty {
                "*" => None,
                t if is_resource_type(t) => Some(t.to_owned()),
                t => return Err(format!("{scope}: {t} is not a resource type")),
            };
            let bits = match perms {
                "read" => 2 | 16,
                "write" => 1 | 4 | 8,
                "*" => 31,
                letters => {
                    let mut bits = 0u8;
                    let mut last = 0usize;
                    for ch in letters.chars() {
                        let pos = "cruds".find(ch).ok_or_else(|| format!("{scope}: '{ch}' is not one of c r u d s"))?;
                        if pos < last {
                            return Err(format!("{scope}: permissions must be in the order c r u d s"));
                        }
                        last = pos + 1;
                        bits |= 1 << pos;
                    }
                    bits
                }
            };
            grants.push(Grant { patient: context == "patient", resource_type, perms: bits });
        }
        Ok(Scopes { grants, text: text.split_whitespace().collect::<Vec<_>>().join(" ") })
    }

    /// Adds what `other` grants.
    pub fn extend(&mut self, other: &Scopes) {
        self.grants.extend(other.grants.iter().cloned());
        if !other.text.is_empty() {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(&other.text);
        }
    }

    fn matching<'a>(&'a self, resource_type: &'a str, perm: Perm) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants.iter().filter(move |g| g.perms & perm.bit() != 0 && g.resource_type.as_deref().is_none_or(|t| t == resource_type))
    }

    /// Some scope grants `perm` on `resource_type` (a `patient/` one only within the
    /// compartment: see [`Scopes::needs_compartment`]).
    pub fn allows(&self, resource_type: &str, perm: Perm) -> bool {
        self.matching(resource_type, perm).next().is_some()
    }

    /// Only `patient/` scopes grant it: access is limited to the patient's compartment.
    pub fn needs_compartment(&self, resource_type: &str, perm: Perm) -> bool {
        let mut any = false;
        for g in self.matching(resource_type, perm) {
            if !g.patient {
                return false;
            }
            any = true;
        }
        any
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
