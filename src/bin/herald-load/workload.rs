//! The writes: `PUT {base}/Task/lt{n}` of a small Task (the shape of
//! `examples/write_load/post_task.lua`), or of one padded to a given size. Every write differs
//! from the previous version of its Task (Herald skips updates that change nothing) and carries
//! its wall-clock send time in a `note`, for a person reading a notification; latency itself is
//! measured with the monotonic clock (see `client::Sent`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Who owns the Task written, which decides which subscriptions match.
#[derive(Clone, Copy, Debug)]
pub enum Owners {
    /// Always `Organization/{name}`.
    One(&'static str),
    /// `Organization/o{i}`, `i` spread over `0..n` (S2: each event matches one subscription).
    Spread(usize),
}

impl Owners {
    pub fn reference(self, task: u32, seq: u64) -> String {
        match self {
            Owners::One(name) => format!("Organization/{name}"),
            Owners::Spread(n) => {
                let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
                let k = (u64::from(task).wrapping_mul(1_000_003).wrapping_add(seq)).wrapping_mul(7919) % n;
                format!("Organization/o{k}")
            }
        }
    }
}

/// One write, ready to send.
pub struct Request {
    pub url: String,
    pub body: Bytes,
}

#[derive(Clone, Debug)]
pub struct TaskWrites {
    /// FHIR base, e.g. `http://127.0.0.1:8080/fhir`.
    pub base: String,
    /// Cluster rows: the nodes' FHIR bases; Task `lt{n}` (worker `n` of the closed loop) is
    /// written through node `n % len`, so that every node takes its share. Empty: `base`.
    pub spread: Vec<String>,
    pub owners: Owners,
    /// Pad the description so that the body is about this many bytes (0: no padding).
    pub body_bytes: usize,
}

impl TaskWrites {
    pub fn new(base: &str, owners: Owners, body_bytes: usize) -> TaskWrites {
        TaskWrites { base: base.trim_end_matches('/').to_string(), spread: Vec::new(), owners, body_bytes }
    }

    pub fn with_base(&self, base: &str) -> TaskWrites {
        TaskWrites { base: base.trim_end_matches('/').to_string(), spread: Vec::new(), ..self.clone() }
    }

    /// The same writes, round-robin per Task over `bases` (see `spread`).
    pub fn spread_over(&self, bases: &[String]) -> TaskWrites {
        TaskWrites { spread: bases.iter().map(|b| b.trim_end_matches('/').to_string()).collect(), ..self.clone() }
    }

    /// The FHIR base Task `lt{task}` is written through.
    fn base_of(&self, task: u32) -> &str {
        let n = self.spread.len().max(1);
        usize::try_from(task).ok().and_then(|t| self.spread.get(t % n)).unwrap_or(&self.base)
    }

    /// The `seq`-th write to Task `lt{task}`.
    pub fn request(&self, task: u32, seq: u64) -> Request {
        let sent = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
        let owner = self.owners.reference(task, seq);
        let body = |pad: usize| {
            format!(
                concat!(
                    r#"{{"resourceType":"Task","id":"lt{task}","status":"in-progress","intent":"order","priority":"routine","#,
                    r#""code":{{"coding":[{{"system":"http://example.org/work","code":"draw-blood"}}]}},"#,
                    r#""focus":{{"reference":"ServiceRequest/sr-{task}"}},"requester":{{"reference":"Practitioner/pr-{req}"}},"#,
                    r#""owner":{{"reference":"{owner}"}},"description":"write {seq} {pad}","#,
                    r#""note":[{{"text":"herald-load sent-unix-us {sent}"}}]}}"#
                ),
                task = task,
                req = task % 97,
                owner = owner,
                seq = seq,
                pad = "x".repeat(pad),
                sent = sent,
            )
        };
        let mut text = body(0);
        if self.body_bytes > text.len() {
            text = body(self.body_bytes - text.len());
        }
        Request { url: format!("{}/Task/lt{task}", self.base_of(task)), body: Bytes::from(text) }
    }

    /// The size of a typical write (the sled ceiling writes records of this size).
    pub fn typical_bytes(&self) -> usize {
        self.request(0, 1_000_000).body.len()
    }
}

/// The key that joins a write with its notifications: the Task number and the version it made.
pub fn key(task: u32, version: u32) -> u64 {
    (u64::from(task) << 32) | u64::from(version)
}

/// `lt{n}` at the end of a Task URL.
pub fn task_number(url: &str) -> Option<u32> {
    url.rsplit('/').next()?.strip_prefix("lt")?.parse().ok()
}

/// The version in a weak ETag, `W/"3"`.
pub fn etag_version(etag: &str) -> Option<u32> {
    etag.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_of_the_asked_size_and_keys_round_trip() {
        let small = TaskWrites::new("http://h/fhir/", Owners::Spread(50), 0);
        let r = small.request(7, 3);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], "lt7");
        assert_eq!(r.url, "http://h/fhir/Task/lt7");
        assert!(v["owner"]["reference"].as_str().unwrap().starts_with("Organization/o"));
        let large = TaskWrites::new("http://h/fhir", Owners::One("load"), 10_240);
        let body = large.request(1, 1).body;
        assert!((10_240..10_260).contains(&body.len()), "{}", body.len());
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        assert_eq!(task_number("http://h/fhir/Task/lt42"), Some(42));
        assert_eq!(etag_version("W/\"12\""), Some(12));
        assert_eq!(key(1, 2), (1 << 32) | 2);
        let spread = small.spread_over(&["http://a/fhir".into(), "http://b/fhir/".into()]);
        assert_eq!(spread.request(0, 1).url, "http://a/fhir/Task/lt0");
        assert_eq!(spread.request(3, 1).url, "http://b/fhir/Task/lt3");
    }
}
