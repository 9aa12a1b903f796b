//! What in a Subscription is secret, in one place: `parameter[].value` (rest-hook headers, often
//! a bearer token) and Herald's webhook-signing-secret extension (Standard Webhooks `whsec_`
//! keys, repeatable for rotation).
//!
//! In: Subscription JSON. Out: the parsed signing keys (`signing_keys`). No message here ever
//! contains a secret value. Pure: no IO.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::Value;

use crate::fhir::outcome::{Issue, IssueType};
use crate::secret::Secret;

/// Herald's extension on Subscription holding one Standard Webhooks signing secret.
pub const SIGNING_SECRET_URL: &str = "http://herald.dev/fhir/StructureDefinition/webhook-signing-secret";

/// Standard Webhooks: a secret is this prefix and the base64 of the key bytes.
const SECRET_PREFIX: &str = "whsec_";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

/// Signing secrets per subscription: enough for a rotation with room to spare, and a bound on
/// the HMACs computed per delivery.
pub const MAX_SIGNING_SECRETS: usize = 4;

/// Standard alphabet, padding optional: the Standard Webhooks libraries decode both.
const BASE64: GeneralPurpose =
    GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// An HMAC-SHA256 key from a `whsec_` secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey(Secret<Vec<u8>>);

impl SigningKey {
    /// Parses `whsec_` + base64 of 24 to 64 bytes. The error names the rule, never the value.
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let Some(encoded) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "a webhook signing secret is '{SECRET_PREFIX}' followed by the base64 of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes"
            ));
        };
        let bytes = BASE64.decode(encoded).map_err(|_| format!("the part after '{SECRET_PREFIX}' is not standard base64"))?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
            return Err(format!("the key is {} bytes long; {MIN_KEY_BYTES} to {MAX_KEY_BYTES} are allowed", bytes.len()));
        }
        Ok(SigningKey(Secret::new(bytes)))
    }

    /// The key bytes; only the signer calls this.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}

fn is_signing_secret(extension: &Value) -> bool {
    extension.get("url").and_then(Value::as_str) == Some(SIGNING_SECRET_URL)
}

/// The subscription's signing keys, in order; problems go to `issues` with their path.
pub fn signing_keys(sub: &Value, issues: &mut Vec<Issue>) -> Vec<SigningKey> {
    let mut keys = Vec::new();
    let list = sub.get("extension").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (i, ext) in list.iter().enumerate().filter(|(_, e)| is_signing_secret(e)) {
        match ext.get("valueString").and_then(Value::as_str) {
            Some(text) => match SigningKey::parse(text) {
                Ok(key) => keys.push(key),
                Err(why) => issues.push(Issue::at(IssueType::Value, format!("Subscription.extension[{i}].valueString"), why)),
            },
            None => issues.push(Issue::at(
                IssueType::Required,
                format!("Subscription.extension[{i}]"),
                "the webhook-signing-secret extension takes a valueString ('whsec_' + base64)",
            )),
        }
    }
    if keys.len() > MAX_SIGNING_SECRETS {
        issues.push(Issue::at(
            IssueType::BusinessRule,
            "Subscription.extension",
            format!("at most {MAX_SIGNING_SECRETS} webhook signing secrets are allowed"),
        ));
    }
    keys
}

#[cfg(test)]
mod tests;
