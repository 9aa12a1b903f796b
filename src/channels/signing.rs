//! Standard Webhooks signatures (standardwebhooks.com) on rest-hook POSTs.
//!
//! Each signed request carries `webhook-id`, `webhook-timestamp` (Unix seconds of this attempt)
//! and `webhook-signature`: a space-separated `v1,<base64 HMAC-SHA256>` for every key, over
//! `{id}.{timestamp}.{body}`, so a receiver that knows any one of the keys can verify it while a
//! secret is being rotated. The id names the message, not the attempt: an event batch keeps it
//! on every retry and resend, so receivers can de-duplicate on it. Keys come in as
//! `SigningKey`s and never leave this file.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::fhir::instant::Millis;
use crate::fhir::subscription::SigningKey;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// What a rest-hook POST needs to sign its body.
#[derive(Clone, Copy, Debug)]
pub struct Signing<'a> {
    pub keys: &'a [SigningKey],
    pub message_id: &'a str,
}

/// The id of an event notification carrying events `first..=last` of `subscription`: the same
/// for every attempt at that batch. The first event's commit time is part of it because event
/// numbers start again at 1 when a subscription id is deleted and created anew, and a receiver
/// de-duplicating on the id must not drop the new subscription's events.
pub fn event_message_id(subscription: &str, first: u64, last: u64, first_committed_at: Millis) -> String {
    let digest = Sha256::new()
        .chain_update(subscription.as_bytes())
        .chain_update(format!("\n{first}\n{last}\n{first_committed_at}").as_bytes())
        .finalize();
    let mut id = String::from("msg_");
    for byte in digest.iter().take(16) {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The id of a handshake or heartbeat: each is a message of its own.
pub fn fresh_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// The `webhook-signature` value: one `v1,` signature per key, space-separated.
pub fn signature(keys: &[SigningKey], message_id: &str, timestamp: u64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        // HMAC takes keys of any length, so this never fails.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose()) else { continue };
        for part in [message_id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
            mac.update(part);
        }
        out.push(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_reference_example() {
        // The example in the Standard Webhooks specification and its libraries' tests.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(&[key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_key_signs_for_rotation() {
        let a = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = SigningKey::parse("whsec_c2Vjb25kLXNpZ25pbmcta2V5LWZvci1yb3RhdGlvbg==").unwrap();
        let both = signature(&[a.clone(), b.clone()], "msg_1", 1, b"{}");
        assert_eq!(both, format!("{} {}", signature(&[a], "msg_1", 1, b"{}"), signature(&[b], "msg_1", 1, b"{}")));
    }

    #[test]
    fn event_ids_are_stable_per_batch_and_differ_otherwise() {
        let id = event_message_id("sub-1", 3, 5, 1_700_000_000_000);
        assert_eq!(id, event_message_id("sub-1", 3, 5, 1_700_000_000_000));
        assert_eq!(id.len(), 4 + 32);
        for other in [
            event_message_id("sub-2", 3, 5, 1_700_000_000_000),
            event_message_id("sub-1", 3, 4, 1_700_000_000_000),
            event_message_id("sub-1", 3, 5, 1_700_000_000_001),
        ] {
            assert_ne!(id, other);
        }
        assert_ne!(fresh_message_id(), fresh_message_id());
    }
}
