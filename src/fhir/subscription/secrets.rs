//! What in a Subscription is secret, in one place: the rest-hook header values (often a bearer
//! token): R5 `parameter[].value`, and the value part of each R4/R4B `channel.header` string
//! (`Authorization: Bearer x` shows as `Authorization: [redacted]`); and Herald's
//! webhook-signing-secret extension (Standard Webhooks `whsec_` keys, repeatable for rotation).
//! Both Subscription shapes are handled by every function here, whatever the instance version.
//!
//! In: Subscription JSON. Out: the parsed signing keys (`signing_keys`), the resource with every
//! secret replaced by [`REDACTED`] (`redact` for output, `redacted` for matching and
//! indexing), and, on an update, the resource with the stored value put back wherever the
//! client sent [`REDACTED`] (`keep_stored`), so a read, edit, write round trip never overwrites
//! a secret with the placeholder. No message here ever
//! contains a secret value. Pure: no IO.

use std::borrow::Cow;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{json, Value};

use crate::fhir::outcome::{Issue, IssueType};
use crate::secret::Secret;

/// Herald's extension on Subscription holding one Standard Webhooks signing secret.
pub const SIGNING_SECRET_URL: &str = "http://herald.dev/fhir/StructureDefinition/webhook-signing-secret";

/// What reads show instead of a secret, and what an update may send to keep the stored one.
pub const REDACTED: &str = "[redacted]";

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

/// Replaces every secret of a Subscription with [`REDACTED`]; other resources are untouched.
pub fn redact(resource: &mut Value) {
    if resource.get("resourceType").and_then(Value::as_str) != Some("Subscription") {
        return;
    }
    if let Some(params) = resource.get_mut("parameter").and_then(Value::as_array_mut) {
        for value in params.iter_mut().filter_map(|p| p.get_mut("value")) {
            *value = json!(REDACTED);
        }
    }
    if let Some(headers) = resource.pointer_mut("/channel/header").and_then(Value::as_array_mut) {
        for header in headers.iter_mut() {
            *header = match header.as_str().and_then(|h| h.split_once(':')) {
                Some((name, _)) => json!(format!("{name}: {REDACTED}")),
                None => json!(REDACTED),
            };
        }
    }
    if let Some(extensions) = resource.get_mut("extension").and_then(Value::as_array_mut) {
        for ext in extensions.iter_mut().filter(|e| is_signing_secret(e)) {
            if let Some(value) = ext.get_mut("valueString") {
                *value = json!(REDACTED);
            }
        }
    }
}

/// `resource` as code that is not its owner's may see it: a Subscription as a redacted copy,
/// anything else as it is. Matching, `resolve()` during a commit and the search index read
/// resources through this, so no criteria, filter or index-only answer can test a secret.
pub fn redacted(resource: &Value) -> Cow<'_, Value> {
    if resource.get("resourceType").and_then(Value::as_str) != Some("Subscription") {
        return Cow::Borrowed(resource);
    }
    let mut copy = resource.clone();
    redact(&mut copy);
    Cow::Owned(copy)
}

/// One kind of secret in a resource: its slots in order, each with the key that groups them
/// (the lower-cased header name; one group for signing secrets) and the path to report.
struct Slot {
    group: String,
    path: String,
    value: Option<String>,
}

fn parameter_slots(sub: &Value) -> Vec<Slot> {
    let list = sub.get("parameter").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    list.iter()
        .enumerate()
        .map(|(i, p)| Slot {
            group: p.get("name").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase(),
            path: format!("Subscription.parameter[{i}].value"),
            value: p.get("value").and_then(Value::as_str).map(str::to_owned),
        })
        .collect()
}

/// R4/R4B `channel.header` strings: grouped by name, the value being what follows the first
/// colon, without surrounding blanks.
fn header_slots(sub: &Value) -> Vec<Slot> {
    let list = sub.pointer("/channel/header").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    list.iter()
        .enumerate()
        .map(|(i, h)| {
            let (group, value) = match h.as_str().and_then(|h| h.split_once(':')) {
                Some((name, value)) => (name.to_ascii_lowercase(), Some(value.trim_matches([' ', '\t']).to_owned())),
                None => (String::new(), None),
            };
            Slot { group, path: format!("Subscription.channel.header[{i}]"), value }
        })
        .collect()
}

fn secret_slots(sub: &Value) -> Vec<Slot> {
    let list = sub.get("extension").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    list.iter()
        .enumerate()
        .filter(|(_, e)| is_signing_secret(e))
        .map(|(i, e)| Slot {
            group: String::new(),
            path: format!("Subscription.extension[{i}].valueString"),
            value: e.get("valueString").and_then(Value::as_str).map(str::to_owned),
        })
        .collect()
}

/// For each slot of `new` holding the placeholder: the stored value to put there, by position
/// within its group (the n-th placeholder `Authorization` keeps the n-th stored one). A group
/// that shrank is ambiguous (which one was dropped?), so its placeholders are refused.
fn resolve(new: &[Slot], stored: &[Slot], what: &str) -> Result<Vec<Option<String>>, Vec<Issue>> {
    let count = |slots: &[Slot], group: &str| slots.iter().filter(|s| s.group == group).count();
    let mut issues = Vec::new();
    let mut out = Vec::with_capacity(new.len());
    for (i, slot) in new.iter().enumerate() {
        if slot.value.as_deref() != Some(REDACTED) {
            out.push(None);
            continue;
        }
        let position = new.iter().take(i).filter(|s| s.group == slot.group).count();
        let kept = stored.iter().filter(|s| s.group == slot.group).nth(position).and_then(|s| s.value.clone());
        let refuse = |why: String| Issue::at(IssueType::BusinessRule, slot.path.clone(), why);
        if count(new, &slot.group) < count(stored, &slot.group) {
            issues.push(refuse(format!(
                "'{REDACTED}' keeps a stored {what}, but this update lists fewer of them than are stored, so which to keep is \
                 ambiguous; send the values to keep in full"
            )));
        } else if kept.is_none() {
            issues.push(refuse(format!("'{REDACTED}' keeps a stored {what}, but there is none at this position; send the value itself")));
        }
        out.push(kept);
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// On a write of a Subscription whose current version is `stored`: every parameter value,
/// header value (`Name: [redacted]`) or signing secret sent as [`REDACTED`] takes the stored
/// value in its place. Refused (with the element's path) when there is nothing unambiguous to
/// keep, e.g. on a create.
pub fn keep_stored(new: &mut Value, stored: Option<&Value>) -> Result<(), Vec<Issue>> {
    let empty = json!({});
    let stored = stored.unwrap_or(&empty);
    let params = resolve(&parameter_slots(new), &parameter_slots(stored), "parameter value");
    let headers = resolve(&header_slots(new), &header_slots(stored), "header value");
    let secrets = resolve(&secret_slots(new), &secret_slots(stored), "signing secret");
    let (params, headers, secrets) = match (params, headers, secrets) {
        (Ok(p), Ok(h), Ok(s)) => (p, h, s),
        (p, h, s) => return Err(p.err().into_iter().chain(h.err()).chain(s.err()).flatten().collect()),
    };
    if let Some(list) = new.pointer_mut("/channel/header").and_then(Value::as_array_mut) {
        for (h, kept) in list.iter_mut().zip(headers) {
            let name = h.as_str().and_then(|h| h.split_once(':')).map(|(name, _)| name.to_owned());
            if let (Some(kept), Some(name)) = (kept, name) {
                *h = json!(format!("{name}: {kept}"));
            }
        }
    }
    if let Some(list) = new.get_mut("parameter").and_then(Value::as_array_mut) {
        for (p, kept) in list.iter_mut().zip(params) {
            if let (Some(kept), Some(value)) = (kept, p.get_mut("value")) {
                *value = json!(kept);
            }
        }
    }
    if let Some(list) = new.get_mut("extension").and_then(Value::as_array_mut) {
        for (ext, kept) in list.iter_mut().filter(|e| is_signing_secret(e)).zip(secrets) {
            if let (Some(kept), Some(value)) = (kept, ext.get_mut("valueString")) {
                *value = json!(kept);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
