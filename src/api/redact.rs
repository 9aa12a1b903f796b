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
