//! Who is calling, and what they may do: authentication (SMART-style JWT bearer tokens and
//! API keys) and SMART v2 scopes.
//!
//! - **JWTs** are checked offline against configured keys: `auth.jwks_file` (a JWKS with RSA or
//!   EC public keys, `kid`-matched) and/or `auth.hs256_secrets`; `iss` must equal
//!   `auth.issuer`, `aud` must contain `auth.audience`, `exp` and `nbf` are enforced with
//!   `auth.leeway`. The client is `jwt:<client_id>` (else `azp`, else `sub`); scopes come
//!   from `scope` (space-separated, SMART) or `scp`.
//! - **API keys** (`auth.api_keys`) are stored as SHA-256 digests with a client id and scopes;
//!   sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`. The client is the key's
//!   configured name, which may not start with `jwt:`.
//! - **Anonymous** access exists only when no authentication is configured: every request is
//!   then allowed (a local trial), and Herald refuses to start on a non-loopback address
//!   unless `--allow-anonymous` is given.
//!
//! A client is its credential's kind and name: a token whose `client_id` equals an API key's
//! client name is a different client (it owns other Subscriptions and never reads that key's
//! secrets), unless the operator lists the id in `auth.jwt_as_api_key_clients`; then the token's
//! client is the bare name, the same client as the API key's.
//!
//! Scopes follow SMART v2 (`system/Task.cruds`, `user/*.rs`, `patient/Observation.r`) and
//! accept v1 forms (`system/*.read`, `user/Task.write`, `.*`). `patient/` scopes need the
//! token's `patient` claim and limit access to that patient's compartment (resources whose
//! `subject`, `patient`, `for` or `beneficiary` is that Patient, and the Patient itself).

pub mod grant;
pub mod scopes;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use grant::SendGrant;
pub use scopes::{Perm, Scopes};

use crate::secret::Secret;

/// What a JWT client's name starts with (`jwt:<client_id>`), unless the operator made the id the
/// same client as the API-key client of that name (`auth.jwt_as_api_key_clients`).
pub const JWT_CLIENT_PREFIX: &str = "jwt:";

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// `None` for anonymous access (no authentication configured). An API key's client name,
    /// or `jwt:<client_id>` for a token (the bare id when aliased, see the module docs).
    pub client: Option<String>,
    pub scopes: Scopes,
    /// The `patient` launch context, for `patient/` scopes.
    pub patient: Option<String>,
    /// How the caller proved who it is.
    pub via: Credential,
}

/// The kind of credential a request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// None: anonymous mode, or an exempt route.
    None,
    /// A configured API key (its scopes are configuration, looked up again at send time).
    ApiKey,
    /// A bearer JWT (its scopes are the token's, as of the request).
    Jwt,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal { client: None, scopes: Scopes::all(), patient: None, via: Credential::None }
    }

    /// A caller with no credentials on a route that needs none: it may do nothing.
    pub fn unauthenticated() -> Principal {
        Principal { client: Some(String::new()), scopes: Scopes::default(), patient: None, via: Credential::None }
    }

    pub fn is_anonymous(&self) -> bool {
        self.client.is_none()
    }

    /// May this caller be shown `resource`, a version of a `resource_type` resource (`None`:
    /// a deletion)? See [`covers`]. Subscription ownership needs the store: the API checks it.
    pub fn may_see(&self, resource_type: &str, resource: Option<&Value>) -> bool {
        self.is_anonymous() || covers(&self.scopes, self.patient.as_deref(), resource_type, resource)
    }

    /// May this caller do `perm` on resources of `resource_type`?
    pub fn may(&self, resource_type: &str, perm: Perm) -> bool {
        self.is_anonymous() || self.scopes.allows(resource_type, perm)
    }
}

/// The operator's map of managing entities (`auth.entities`): which clients act for which
/// `Subscription.managingEntity` reference; and which JWT client ids are the same client as the
/// API-key client of that name (`auth.jwt_as_api_key_clients`).
#[derive(Clone, Debug, Default)]
pub struct Entities {
    members: HashMap<String, Vec<String>>,
    /// Aliased ids: such a token's client is the bare name, and it also answers for what is
    /// named `jwt:<id>` (Subscriptions its tokens created before it was aliased, or stored by
    /// older releases), since both name the same party.
    jwt_aliases: HashSet<String>,
}

impl Entities {
    pub fn new(settings: &[crate::config::EntitySetting], jwt_as_api_key_clients: &[String]) -> Entities {
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for e in settings {
            members.entry(e.reference.clone()).or_default().extend(e.clients.iter().cloned());
        }
        Entities { members, jwt_aliases: jwt_as_api_key_clients.iter().cloned().collect() }
    }

    /// Whether the operator mapped any client to `reference`.
    pub fn is_mapped(&self, reference: &str) -> bool {
        self.members.contains_key(reference)
    }

    pub fn member(&self, reference: &str, client: &str) -> bool {
        self.members.get(reference).is_some_and(|clients| clients.iter().any(|c| self.same_client(c, client)))
    }

    /// Whether `client` may read, change and use a subscription created by `owner` (`None`:
    /// anonymously, so anyone) and managed by `managing`.
    pub fn may_manage(&self, owner: Option<&str>, managing: Option<&str>, client: &str) -> bool {
        owner.is_none_or(|o| self.same_client(o, client)) || managing.is_some_and(|m| self.member(m, client))
    }

    /// Whether the stored or configured name `named` is the caller `client`. Names compare
    /// exactly (an API key's `etl` is never the token client `jwt:etl`), except that an aliased
    /// id is also its `jwt:` name.
    fn same_client(&self, named: &str, client: &str) -> bool {
        named == client || (self.jwt_aliases.contains(client) && named.strip_prefix(JWT_CLIENT_PREFIX) == Some(client))
    }
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required")]
    Missing,
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

/// One configured API key.
pub struct ApiKey {
    pub client: String,
    pub digest: [u8; 32],
    pub scopes: Scopes,
}

/// The configured ways in.
pub struct Authenticator {
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    jwks: Option<JwkSet>,
    hs256: Vec<Secret<Vec<u8>>>,
    api_keys: Vec<ApiKey>,
    /// `auth.jwt_as_api_key_clients`: token client ids kept bare (see the module docs).
    jwt_aliases: HashSet<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Value>,
    #[serde(default)]
    patient: Option<String>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hex SHA-256 of an API key, as `auth.api_keys[].sha256` holds it (`herald hash-key`).
pub fn api_key_digest(key: &str) -> String {
    sha256(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `auth` settings as configured (see `config::AuthSettings`).
pub struct AuthConfig<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub jwks_file: &'a str,
    pub hs256_secrets: &'a [String],
    pub leeway: Duration,
    pub api_keys: &'a [(String, String, String)],
    /// Token client ids that are the same client as the API-key client of that name.
    pub jwt_as_api_key_clients: &'a [String],
}

impl Authenticator {
    /// `Ok(None)` when nothing is configured (anonymous mode).
    pub fn from_config(cfg: &AuthConfig<'_>) -> Result<Option<Authenticator>, String> {
        let jwks = if cfg.jwks_file.is_empty() {
            None
        } else {
            let text = std::fs::read_to_string(cfg.jwks_file).map_err(|e| format!("auth.jwks_file {}: {e}", cfg.jwks_file))?;
            Some(serde_json::from_str::<JwkSet>(&text).map_err(|e| format!("auth.jwks_file {}: not a JWKS: {e}", cfg.jwks_file))?)
        };
        let mut api_keys = Vec::new();
        for (i, (client, digest, scopes)) in cfg.api_keys.iter().enumerate() {
            let digest = parse_hex32(digest).ok_or_else(|| format!("auth.api_keys[{i}].sha256 must be 64 hex digits"))?;
            let scopes = Scopes::parse(scopes).map_err(|e| format!("auth.api_keys[{i}].scopes: {e}"))?;
            if client.is_empty() {
                return Err(format!("auth.api_keys[{i}].client is empty"));
            }
            if client.starts_with(JWT_CLIENT_PREFIX) {
                return Err(format!("auth.api_keys[{i}].client may not start with \"{JWT_CLIENT_PREFIX}\", which names token clients"));
            }
            api_keys.push(ApiKey { client: client.clone(), digest, scopes });
        }
        for (i, id) in cfg.jwt_as_api_key_clients.iter().enumerate() {
            if id.is_empty() || id.starts_with(JWT_CLIENT_PREFIX) {
                return Err(format!(
                    "auth.jwt_as_api_key_clients[{i}] must be a token's client id, not empty nor \"{JWT_CLIENT_PREFIX}...\""
                ));
            }
        }
        let hs256: Vec<Secret<Vec<u8>>> = cfg.hs256_secrets.iter().map(|s| Secret::new(s.as_bytes().to_vec())).collect();
        let jwt = jwks.is_some() || !hs256.is_empty();
        if jwt && (cfg.issuer.is_empty() || cfg.audience.is_empty()) {
            return Err("auth.issuer and auth.audience are required when JWT keys are configured".into());
        }
        if !jwt && api_keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Authenticator {
            issuer: (!cfg.issuer.is_empty()).then(|| cfg.issuer.to_owned()),
            audience: (!cfg.audience.is_empty()).then(|| cfg.audience.to_owned()),
            leeway: cfg.leeway,
            jwks,
            hs256,
            api_keys,
            jwt_aliases: cfg.jwt_as_api_key_clients.iter().cloned().collect(),
        }))
    }

    /// What the API keys configured for `client` grant now (all of them together; nothing
    /// when the client has no key left). Send-time checks of API-key subscriptions use this,
    /// so a narrowed or removed key takes effect at the next start. A `jwt:` name gets nothing:
    /// no key may carry such a name (`from_config`).
    pub fn client_scopes(&self, client: &str) -> Scopes {
        let mut scopes = Scopes::default();
        for key in self.api_keys.iter().filter(|k| k.client == client) {
            scopes.extend(&key.scopes);
        }
        scopes
    }

    /// The caller behind `authorization` (the header value) or `api_key` (`X-API-Key`).
    pub fn authenticate(&self, authorization: Option<&str>, api_key: Option<&str>) -> Result<Principal, AuthError> {
        let bearer = authorization.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))).map(str::trim);
        let Some(credential) = api_key.map(str::trim).or(bearer) else { return Err(AuthError::Missing) };
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest = sha256(credential.as_bytes());
        if let Some(key) = self.api_keys.iter().find(|k| same(&k.digest, &digest)) {
            return Ok(Principal { client: Some(key.client.clone()), scopes: key.scopes.clone(), patient: None, via: Credential::ApiKey });
        }
        if api_key.is_some() || credential.matches('.').count() != 2 {
            return Err(AuthError::Invalid("unknown API key".into()));
        }
        self.jwt(credential)
    }

    fn jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        let mut keys: Vec<(DecodingKey, Algorithm)> = Vec::new();
        match header.alg {
            Algorithm::HS256 => keys.extend(self.hs256.iter().map(|s| (DecodingKey::from_secret(s.expose()), Algorithm::HS256))),
            alg => {
                let set = self.jwks.as_ref().ok_or_else(|| AuthError::Invalid(format!("no public keys configured for {alg:?}")))?;
                for jwk in &set.keys {
                    let kid_ok = match (&header.kid, &jwk.common.key_id) {
                        (Some(want), Some(have)) => want == have,
                        (None, _) => true,
                        (Some(_), None) => false,
                    };
                    if kid_ok {
                        if let Ok(key) = DecodingKey::from_jwk(jwk) {
                            keys.push((key, alg));
                        }
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(AuthError::Invalid("no key matches the token".into()));
        }
        let mut last = String::from("signature does not verify");
        for (key, alg) in keys {
            let mut v = Validation::new(alg);
            v.leeway = self.leeway.as_secs();
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            if let Some(iss) = &self.issuer {
                v.set_issuer(&[iss]);
            }
            if let Some(aud) = &self.audience {
                v.set_audience(&[aud]);
            }
            match decode::<Claims>(token, &key, &v) {
                Ok(data) => return self.principal_from(data.claims),
                Err(e) => last = e.to_string(),
            }
        }
        Err(AuthError::Invalid(last))
    }

    fn principal_from(&self, c: Claims) -> Result<Principal, AuthError> {
        let id = c.client_id.or(c.azp).or(c.sub).ok_or_else(|| AuthError::Invalid("the token names no client".into()))?;
        // The kind goes into the name, so that no token can be an API-key client by choosing
        // its client_id, unless the operator said they are the same.
        let client = if self.jwt_aliases.contains(&id) { id } else { format!("{JWT_CLIENT_PREFIX}{id}") };
        let scope_text = match (c.scope, c.scp) {
            (Some(s), _) => s,
            (None, Some(Value::Array(list))) => list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
            (None, Some(Value::String(s))) => s,
            _ => String::new(),
        };
        let scopes = Scopes::parse(&scope_text).map_err(|e| AuthError::Invalid(format!("scope: {e}")))?;
        Ok(Principal { client: Some(client), scopes, patient: c.patient, via: Credential::Jwt })
    }
}

/// Whether `scopes` (with the `patient` claim) cover reading a version of a `resource_type`
/// resource: a scope grants read or search on the type (a client that may search a type
/// learns its resources anyway) and, where only `patient/` scopes do, the version is in that
/// patient's compartment. A version without content (a deletion) cannot be placed in a
/// compartment, so `patient/`-only scopes do not cover it: the check fails closed.
pub fn covers(scopes: &Scopes, patient: Option<&str>, resource_type: &str, resource: Option<&Value>) -> bool {
    let mut patient_only = false;
    for perm in [Perm::Read, Perm::Search] {
        if scopes.allows(resource_type, perm) {
            if !scopes.needs_compartment(resource_type, perm) {
                return true;
            }
            patient_only = true;
        }
    }
    match (patient_only, patient, resource) {
        (true, Some(patient), Some(r)) => in_compartment(r, patient),
        _ => false,
    }
}

/// Resource fields that place a resource in a patient's compartment: a practical subset of
/// the Patient CompartmentDefinition, the same fields in R4, R4B and R5 (`compartment_tests`
/// checks it against the R4 and R4B definitions).
const COMPARTMENT_FIELDS: [&str; 4] = ["subject", "patient", "for", "beneficiary"];

/// Is `resource` in `Patient/{patient}`'s compartment?
pub fn in_compartment(resource: &Value, patient: &str) -> bool {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return resource.get("id").and_then(Value::as_str) == Some(patient);
    }
    let want = format!("Patient/{patient}");
    COMPARTMENT_FIELDS.iter().any(|f| {
        let refs: Vec<&Value> = match resource.get(*f) {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v) => vec![v],
            None => Vec::new(),
        };
        refs.iter().filter_map(|r| r.get("reference").and_then(Value::as_str)).any(|r| r == want || r.ends_with(&format!("/{want}")))
    })
}

#[cfg(test)]
mod compartment_tests;
#[cfg(test)]
mod tests;
