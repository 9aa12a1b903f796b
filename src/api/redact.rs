//! What a caller may see of a stored resource's secrets: one function per kind of resource,
//! called by every handler that returns stored resources (read, vread, history, create/update
//! and batch/transaction responses) and by search's `StoreContext::load`, so that search
//! matches and includes are redacted and no search criterion ever sees a secret.
//!
//! A Subscription's header values (R5 `parameter[].value`, the value part of each R4/R4B
//! `channel.header` string) and webhook signing secrets are replaced by `[redacted]`
//! (`fhir::subscription::secrets`) for everyone but the authenticated client that owns it,
//! which reads its own values back (handlers ask `Access::shows_secrets` before calling this).
//! A client may send the placeholder back on update to keep the stored value (the committer
//! does that), so a read, edit, write round trip loses nothing.

use serde_json::Value;

use crate::fhir::subscription::secrets;

/// Redacts `resource` in place if it is a Subscription; other resources are left as they are.
pub fn subscription(resource: &mut Value) {
    secrets::redact(resource);
}

/// The backport `channel.header` strings a request body carries, placeholders left out.
pub fn sent_headers(body: &Value) -> Vec<String> {
    body.pointer("/channel/header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|h| !h.contains(secrets::REDACTED))
        .map(str::to_owned)
        .collect()
}

/// Puts back, in a redacted answer, each stored `channel.header` string that the request
/// itself sent (`stored` is the header array before redaction, in the same order).
pub fn echo_sent_headers(redacted: &mut Value, stored: Option<&Value>, sent: &[String]) {
    let (Some(stored), Some(shown)) =
        (stored.and_then(Value::as_array), redacted.pointer_mut("/channel/header").and_then(Value::as_array_mut))
    else {
        return;
    };
    for (shown, original) in shown.iter_mut().zip(stored) {
        if original.as_str().is_some_and(|o| sent.iter().any(|s| s == o)) {
            *shown = original.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_headers_the_request_sent_are_echoed() {
        let stored =
            json!({ "resourceType": "Subscription", "channel": { "header": ["Authorization: Bearer sent", "X-Kept: from-storage"] } });
        let request =
            json!({ "resourceType": "Subscription", "channel": { "header": ["Authorization: Bearer sent", "X-Kept: [redacted]"] } });
        let sent = sent_headers(&request);
        assert_eq!(sent, vec!["Authorization: Bearer sent".to_owned()]);
        let mut answer = stored.clone();
        let original = answer.pointer("/channel/header").cloned();
        subscription(&mut answer);
        echo_sent_headers(&mut answer, original.as_ref(), &sent);
        assert_eq!(answer["channel"]["header"], json!(["Authorization: Bearer sent", "X-Kept: [redacted]"]));
    }
}
