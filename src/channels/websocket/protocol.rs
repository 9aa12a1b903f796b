//! What clients send on a websocket and the non-Bundle frames Herald sends back.
//!
//! The R5 framing of `bind-with-token` is not pinned down (digest §4 item 4), so every form
//! seen in the wild is accepted, whitespace-trimmed:
//! - `bind-with-token <token>` and `bind-with-token: <token>` (backport IG diagram);
//! - `{"type":"bind-with-token","payload":{"token":"…"}}` (Medplum's client), optionally with
//!   `"eventsSinceNumber":"N"` in the payload: Herald then first replays the stored events
//!   from N on (Herald's extension);
//! - `unbind-from-token <token>` and `{"type":"unbind-from-token","payload":{"token":"…"}}`;
//! - `ping` and `{"type":"ping"}`, answered with `{"type":"pong"}` (Medplum's client
//!   reconnects when no pong comes back). Websocket-level pings are answered by the library.

use serde_json::{json, Value};

use crate::fhir::outcome::operation_outcome;
use crate::fhir::{Issue, IssueType};

/// Longest token accepted in a message (Herald's are 64 hex characters).
const MAX_TOKEN_LEN: usize = 512;

#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    Bind {
        token: String,
        since: Option<u64>,
    },
    Unbind {
        token: String,
    },
    Ping,
    /// Anything else, with the reason to tell the client.
    Invalid(String),
}

fn token_ok(token: &str) -> Result<String, String> {
    if token.is_empty() {
        Err("the message has no token".into())
    } else if token.len() > MAX_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("the token is not one Herald issued".into())
    } else {
        Ok(token.to_string())
    }
}

fn parse_since(raw: Option<&Value>) -> Result<Option<u64>, String> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| format!("eventsSinceNumber '{s}' is not a whole number")),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("eventsSinceNumber {v} is not a whole number")),
    }
}

fn parse_json(text: &str) -> ClientMessage {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return ClientMessage::Invalid("the message is not valid JSON".into());
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or_default();
    let payload = value.get("payload");
    let token = payload.and_then(|p| p.get("token")).and_then(Value::as_str).unwrap_or_default();
    let result = match kind {
        "bind-with-token" => token_ok(token).and_then(|token| {
            parse_since(payload.and_then(|p| p.get("eventsSinceNumber"))).map(|since| ClientMessage::Bind { token, since })
        }),
        "unbind-from-token" => token_ok(token).map(|token| ClientMessage::Unbind { token }),
        "ping" => Ok(ClientMessage::Ping),
        _ => Err("unknown message type; expected bind-with-token, unbind-from-token or ping".into()),
    };
    result.unwrap_or_else(ClientMessage::Invalid)
}

/// Parses one text message.
pub fn parse(text: &str) -> ClientMessage {
    let text = text.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    let (verb, rest) = match text.find(|c: char| c == ':' || c.is_whitespace()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let arg = rest.strip_prefix(':').unwrap_or(rest).trim();
    let result = match verb {
        "bind-with-token" => token_ok(arg).map(|token| ClientMessage::Bind { token, since: None }),
        "unbind-from-token" => token_ok(arg).map(|token| ClientMessage::Unbind { token }),
        "ping" if arg.is_empty() => Ok(ClientMessage::Ping),
        _ => Err("unknown message; expected bind-with-token <token>, unbind-from-token <token> or ping".into()),
    };
    result.unwrap_or_else(ClientMessage::Invalid)
}

/// An error frame: an OperationOutcome with one issue.
pub fn error_frame(code: IssueType, diagnostics: impl Into<String>) -> String {
    operation_outcome(&[Issue::new(code, diagnostics)]).to_string()
}

/// A note that is not an error (e.g. a replay that stopped early).
pub fn info_frame(diagnostics: impl Into<String>) -> String {
    operation_outcome(&[Issue::info(diagnostics)]).to_string()
}

/// The answer to a JSON or text `ping`.
pub fn pong_frame() -> String {
    json!({ "type": "pong" }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(token: &str, since: Option<u64>) -> ClientMessage {
        ClientMessage::Bind { token: token.into(), since }
    }

    #[test]
    fn every_bind_form_in_the_wild_parses() {
        assert_eq!(parse("bind-with-token abc"), bind("abc", None));
        assert_eq!(parse("  bind-with-token:   abc \n"), bind("abc", None));
        assert_eq!(parse("bind-with-token:abc"), bind("abc", None));
        assert_eq!(parse(r#"{"type":"bind-with-token","payload":{"token":"abc"}}"#), bind("abc", None));
        assert_eq!(parse(r#"{"type":"bind-with-token","payload":{"token":"abc","eventsSinceNumber":"7"}}"#), bind("abc", Some(7)));
        assert_eq!(parse(r#"{"type":"bind-with-token","payload":{"token":"abc","eventsSinceNumber":7}}"#), bind("abc", Some(7)));
        assert_eq!(parse("unbind-from-token abc"), ClientMessage::Unbind { token: "abc".into() });
        assert_eq!(parse(r#"{"type":"unbind-from-token","payload":{"token":"abc"}}"#), ClientMessage::Unbind { token: "abc".into() });
        assert_eq!(parse(r#"{"type":"ping"}"#), ClientMessage::Ping);
        assert_eq!(parse("ping"), ClientMessage::Ping);
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        for text in [
            "",
            "bind-with-token",
            "bind-with-token: ",
            "bind-with-token a b",
            "hello",
            "{",
            "{}",
            r#"{"type":"bind-with-token"}"#,
            r#"{"type":"bind-with-token","payload":{"token":5}}"#,
            r#"{"type":"bind-with-token","payload":{"token":"a","eventsSinceNumber":"-1"}}"#,
            r#"{"type":"bind-with-token","payload":{"token":"a","eventsSinceNumber":1.5}}"#,
            "[1,2]",
            "\u{0}\u{1}",
        ] {
            assert!(matches!(parse(text), ClientMessage::Invalid(_)), "{text:?} -> {:?}", parse(text));
        }
        assert!(matches!(parse(&format!("bind-with-token {}", "x".repeat(600))), ClientMessage::Invalid(_)));
    }

    #[test]
    fn frames_are_json() {
        let v: Value = serde_json::from_str(&error_frame(IssueType::Security, "no")).unwrap();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["code"], "security");
        assert_eq!(serde_json::from_str::<Value>(&pong_frame()).unwrap()["type"], "pong");
    }
}
