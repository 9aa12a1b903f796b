//! What the scenarios ask of Herald's REST API: the topic and rest-hook Subscriptions they
//! deliver through, Task writes (an `Answer` keeps the status, headers and body that a fault
//! scenario reports), reads back, and a subscription's `$status` and `$events`. Every request
//! has a timeout: a Herald that hangs must show up as a finding, not hang the harness.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use serde_json::{json, Value};

use crate::receiver::segment_after;
use crate::Result;

pub const TOPIC: &str = "http://example.org/topics/herald-chaos-task";

pub fn build() -> Result<reqwest::Client> {
    build_with(Duration::from_secs(10))
}

/// A client whose every request gives up after `timeout`.
pub fn build_with(timeout: Duration) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().tcp_nodelay(true).timeout(timeout).build()?)
}

/// One answer, as far as the findings need it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether the body is an OperationOutcome.
    pub fn is_outcome(&self) -> bool {
        serde_json::from_str::<Value>(&self.body).ok().and_then(|v| v.get("resourceType").cloned()) == Some(json!("OperationOutcome"))
    }

    /// The first issue's diagnostics or code, else the start of the body.
    pub fn gist(&self) -> String {
        let v: Option<Value> = serde_json::from_str(&self.body).ok();
        let issue = v.as_ref().and_then(|v| v.pointer("/issue/0"));
        let said = issue
            .and_then(|i| i.get("diagnostics").or_else(|| i.pointer("/details/text")).or_else(|| i.get("code")))
            .and_then(Value::as_str)
            .map(str::to_string);
        said.unwrap_or_else(|| self.body.chars().take(120).collect())
    }

    /// "503 OperationOutcome 'store unavailable', Retry-After 1" and the like.
    pub fn describe(&self) -> String {
        let kind = if self.is_outcome() {
            "OperationOutcome".to_string()
        } else if self.body.is_empty() {
            "empty body".to_string()
        } else {
            format!("{} body", self.content_type.as_deref().unwrap_or("untyped"))
        };
        let retry = self.retry_after.as_deref().map_or_else(|| "no Retry-After".to_string(), |r| format!("Retry-After {r}"));
        format!("{} {kind} '{}', {retry}", self.status, self.gist())
    }
}

async fn answer(resp: reqwest::Response) -> Result<Answer> {
    let status = resp.status().as_u16();
    let header = |name| resp.headers().get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok()).map(str::to_string);
    let retry_after = header(RETRY_AFTER);
    let content_type = header(CONTENT_TYPE);
    let location = header(LOCATION);
    let mut body = resp.text().await?;
    // Keep what a created resource's id can be told from even when the body is empty.
    if body.is_empty() {
        if let Some(l) = location {
            body = json!({ "location": l }).to_string();
        }
    }
    Ok(Answer { status, retry_after, content_type, body })
}

pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<Answer> {
    let resp = client.post(url).header(CONTENT_TYPE, "application/fhir+json").body(body.to_string()).send().await?;
    answer(resp).await
}

pub async fn get(client: &reqwest::Client, url: &str) -> Result<Answer> {
    answer(client.get(url).send().await?).await
}

/// A created resource's id: from its body, else from its Location.
pub fn created_id(a: &Answer, resource_type: &str) -> Option<String> {
    let v: Value = serde_json::from_str(&a.body).ok()?;
    if let Some(id) = v.get("id").and_then(Value::as_str) {
        return Some(id.to_string());
    }
    v.get("location").and_then(Value::as_str).and_then(|l| segment_after(l, resource_type))
}

/// A Task to create; `note_bytes` of filler make it as large as a scenario needs. The filler
/// is pseudo-random and differs from Task to Task: the store compresses its pages, and a run
/// of one letter would take almost no room on disk (the disk-full scenario needs it to).
pub fn task(note_bytes: usize) -> Value {
    static TASKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut t = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
    if note_bytes > 0 {
        let mut x = TASKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let filler: String = (0..note_bytes)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_".get((x >> 58) as usize).copied().unwrap_or(b'a'),
                )
            })
            .collect();
        if let Some(obj) = t.as_object_mut() {
            obj.insert("note".into(), json!([{ "text": filler }]));
        }
    }
    t
}

/// Creates a Task; `Ok((answer, id))`, the id only when it was acknowledged (201).
pub async fn create_task(client: &reqwest::Client, base: &str, note_bytes: usize) -> Result<(Answer, Option<String>)> {
    let a = post(client, &format!("{base}/Task"), &task(note_bytes)).await?;
    let id = if a.status == 201 { created_id(&a, "Task") } else { None };
    Ok((a, id))
}

/// The ids that do not read back with 200 (eight reads at a time), each with what its read
/// got instead.
pub async fn unreadable(client: &reqwest::Client, base: &str, ids: &[String]) -> Vec<(String, String)> {
    stream::iter(ids)
        .map(|id| async move {
            match get(client, &format!("{base}/Task/{id}")).await {
                Ok(a) if a.status == 200 => None,
                Ok(a) => Some((id.clone(), a.describe())),
                Err(e) => Some((id.clone(), format!("no answer: {}", crate::chain(e.as_ref())))),
            }
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

pub async fn create_topic(client: &reqwest::Client, base: &str) -> Result<()> {
    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": TOPIC,
        "status": "active",
        "title": "herald-chaos: every Task create",
        "resourceTrigger": [{ "resource": "Task" }]
    });
    let a = post(client, &format!("{base}/SubscriptionTopic"), &topic).await?;
    if !a.ok() {
        return Err(format!("creating the topic: {}", a.describe()).into());
    }
    Ok(())
}

/// Creates an id-only rest-hook Subscription to `endpoint` and waits until it is active.
pub async fn subscribe(client: &reqwest::Client, base: &str, endpoint: &str) -> Result<String> {
    let sub = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "topic": TOPIC,
        "channelType": { "code": "rest-hook" },
        "endpoint": endpoint,
        "content": "id-only"
    });
    let a = post(client, &format!("{base}/Subscription"), &sub).await?;
    let id = created_id(&a, "Subscription").filter(|_| a.ok()).ok_or_else(|| format!("creating a Subscription: {}", a.describe()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = sub_status(client, base, &id).await?;
        if status == "active" {
            return Ok(id);
        }
        if Instant::now() > deadline {
            return Err(format!("Subscription {id} is {status:?}, not active, after 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `$status`: the subscription's status and `eventsSinceSubscriptionStart`.
pub async fn sub_status(client: &reqwest::Client, base: &str, id: &str) -> Result<(String, u64)> {
    let a = get(client, &format!("{base}/Subscription/{id}/$status")).await?;
    if !a.ok() {
        return Err(format!("$status of {id}: {}", a.describe()).into());
    }
    let v: Value = serde_json::from_str(&a.body)?;
    let st = v.pointer("/entry/0/resource").ok_or_else(|| format!("$status of {id} holds no SubscriptionStatus"))?;
    let status = st.get("status").and_then(Value::as_str).unwrap_or_default().to_string();
    let since = st.get("eventsSinceSubscriptionStart").and_then(int64).unwrap_or(0);
    Ok((status, since))
}

/// `$events?eventsSinceNumber=since`: the event numbers still stored.
pub async fn stored_events(client: &reqwest::Client, base: &str, id: &str, since: u64) -> Result<Vec<u64>> {
    let a = get(client, &format!("{base}/Subscription/{id}/$events?eventsSinceNumber={since}")).await?;
    if !a.ok() {
        return Err(format!("$events of {id}: {}", a.describe()).into());
    }
    let v: Value = serde_json::from_str(&a.body)?;
    let events = v.pointer("/entry/0/resource/notificationEvent").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(events.iter().filter_map(|e| e.get("eventNumber").and_then(int64)).collect())
}

/// A FHIR int64 (`eventNumber`, `eventsSinceSubscriptionStart`): a string in R5 JSON; a number
/// is taken too.
pub fn int64(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}
