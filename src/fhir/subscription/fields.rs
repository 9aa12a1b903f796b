//! Reading a stored Subscription's JSON without caring which FHIR version's shape it has: the
//! few elements code outside the parsers needs (operations, the operator API, the creation
//! guard). R5 keeps them at the root (`topic`, `channelType.code`, `endpoint`, `content`); an
//! R4/R4B backport Subscription under `criteria` and `channel` (`type`, `endpoint`, and the
//! `backport-payload-content` extension on `payload`).
//!
//! The shape is told from the resource itself ([`is_backport`]), so these work on any stored
//! Subscription and need no global. Stored Subscriptions passed their version's parser, so a
//! missing element means the client left it out, never a malformed one.

use serde_json::Value;

use super::backport::PAYLOAD_CONTENT_URL;
use super::ContentLevel;

/// Whether `sub` has the R4/R4B shape (`criteria`, `channel`) rather than the R5 one.
pub fn is_backport(sub: &Value) -> bool {
    sub.get("channel").is_some() || sub.get("criteria").is_some()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The topic canonical as written (`url` or `url|version`).
pub fn topic(sub: &Value) -> Option<&str> {
    if is_backport(sub) {
        str_at(sub, "/criteria")
    } else {
        str_at(sub, "/topic")
    }
}

/// The topic canonical without its `|version`.
pub fn topic_url(sub: &Value) -> Option<&str> {
    topic(sub).map(|t| t.split('|').next().unwrap_or(t))
}

/// The channel type code (`rest-hook`, `websocket`).
pub fn channel_code(sub: &Value) -> Option<&str> {
    if is_backport(sub) {
        str_at(sub, "/channel/type")
    } else {
        str_at(sub, "/channelType/code")
    }
}

/// The rest-hook endpoint as written.
pub fn endpoint(sub: &Value) -> Option<&str> {
    if is_backport(sub) {
        str_at(sub, "/channel/endpoint")
    } else {
        str_at(sub, "/endpoint")
    }
}

/// The notification content level. Backport: the `backport-payload-content` extension on
/// `channel.payload`; without a `channel.payload` there is no payload at all (R4's meaning),
/// which is `empty`.
pub fn content(sub: &Value) -> Option<ContentLevel> {
    if !is_backport(sub) {
        return str_at(sub, "/content").and_then(ContentLevel::from_code);
    }
    let extensions = sub.pointer("/channel/_payload/extension").and_then(Value::as_array);
    let code = extensions
        .into_iter()
        .flatten()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(PAYLOAD_CONTENT_URL))
        .and_then(|e| e.get("valueCode"))
        .and_then(Value::as_str);
    match code {
        Some(code) => ContentLevel::from_code(code),
        None if sub.pointer("/channel/payload").is_none() => Some(ContentLevel::Empty),
        None => None,
    }
}

/// The first `identifier` (R5; R4 and R4B Subscriptions have none).
pub fn identifier(sub: &Value) -> Option<&Value> {
    sub.get("identifier").and_then(Value::as_array).and_then(|a| a.first())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn both_shapes_read_the_same_facts() {
        let r5 = json!({ "resourceType": "Subscription", "topic": "http://t|2", "channelType": { "code": "rest-hook" },
            "endpoint": "https://rx/hook", "content": "full-resource", "identifier": [{ "value": "a" }] });
        let r4 = json!({ "resourceType": "Subscription", "criteria": "http://t|2",
            "channel": { "type": "rest-hook", "endpoint": "https://rx/hook", "payload": "application/fhir+json",
                "_payload": { "extension": [{ "url": PAYLOAD_CONTENT_URL, "valueCode": "full-resource" }] } } });
        for sub in [&r5, &r4] {
            assert_eq!(topic(sub), Some("http://t|2"));
            assert_eq!(topic_url(sub), Some("http://t"));
            assert_eq!(channel_code(sub), Some("rest-hook"));
            assert_eq!(endpoint(sub), Some("https://rx/hook"));
            assert_eq!(content(sub), Some(ContentLevel::FullResource));
        }
        assert!(!is_backport(&r5) && is_backport(&r4));
        assert!(identifier(&r5).is_some() && identifier(&r4).is_none());
    }

    #[test]
    fn a_backport_subscription_without_payload_is_empty() {
        let r4 = json!({ "criteria": "http://t", "channel": { "type": "websocket" } });
        assert_eq!(content(&r4), Some(ContentLevel::Empty));
        let r4 = json!({ "criteria": "http://t", "channel": { "type": "rest-hook", "payload": "application/json" } });
        assert_eq!(content(&r4), None, "the committer always fills the content in; without it, callers apply their default");
    }
}
