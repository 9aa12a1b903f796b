//! What a scenario creates over Herald's REST API before writing: one SubscriptionTopic that
//! fires on every Task create and update (no criteria; filterable by `owner`), and rest-hook
//! Subscriptions to the receiver, created concurrently. Herald handshakes each one; a
//! subscription is ready when its `$status` says `active`.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::Result;

pub const TOPIC: &str = "http://example.org/herald-load/SubscriptionTopic/task-written";

pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let resp = client.post(url).header("content-type", "application/fhir+json").json(body).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status}: {}", text.chars().take(500).collect::<String>()).into());
    }
    Ok(serde_json::from_str(&text)?)
}

pub async fn create_topic(client: &reqwest::Client, base: &str) -> Result<()> {
    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": TOPIC,
        "status": "active",
        "title": "herald-load: every Task create and update",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }],
        "canFilterBy": [{ "resource": "Task", "filterParameter": "owner" }],
        "notificationShape": [{ "resource": "Task" }]
    });
    post(client, &format!("{base}/SubscriptionTopic"), &topic).await?;
    Ok(())
}

/// The Subscriptions to create.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    pub count: usize,
    /// `id-only` or `full-resource`.
    pub content: &'a str,
    pub filter: Filter<'a>,
    /// `maxCount`, when set.
    pub max_count: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
pub enum Filter<'a> {
    /// Every subscription filtered on `owner=Organization/{name}`.
    Owner(&'a str),
    /// Subscription `i` filtered on `owner=Organization/o{i}` (S2).
    OwnOwner,
}

pub fn subscription(plan: &Plan<'_>, endpoint: &str, i: usize) -> Value {
    let owner = match plan.filter {
        Filter::Owner(name) => format!("Organization/{name}"),
        Filter::OwnOwner => format!("Organization/o{i}"),
    };
    let mut sub = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "topic": TOPIC,
        "filterBy": [{ "resourceType": "Task", "filterParameter": "owner", "value": owner }],
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
        "endpoint": endpoint,
        "content": plan.content,
        "contentType": "application/fhir+json"
    });
    if let (Some(n), Some(obj)) = (plan.max_count, sub.as_object_mut()) {
        obj.insert("maxCount".into(), json!(n));
    }
    sub
}

/// Creates the plan's subscriptions, `concurrency` requests at a time; returns their ids.
pub async fn subscribe(client: &reqwest::Client, base: &str, endpoint: &str, plan: Plan<'_>, concurrency: usize) -> Result<Vec<String>> {
    let url = format!("{base}/Subscription");
    stream::iter(0..plan.count)
        .map(|i| {
            let (url, body) = (url.clone(), subscription(&plan, endpoint, i));
            async move {
                let created = post(client, &url, &body).await?;
                created.get("id").and_then(Value::as_str).map(str::to_string).ok_or_else(|| "a created Subscription has no id".into())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Waits until every subscription's `$status` is `active` (the handshake was answered and
/// recorded), polling `concurrency` at a time.
pub async fn wait_active(client: &reqwest::Client, base: &str, ids: &[String], concurrency: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    stream::iter(ids)
        .map(|id| async move {
            let url = format!("{base}/Subscription/{id}/$status");
            loop {
                let status: Value = client.get(&url).send().await?.json().await?;
                let now = status.pointer("/entry/0/resource/status").and_then(Value::as_str).unwrap_or_default().to_string();
                if now == "active" {
                    return Ok::<(), crate::Error>(());
                }
                if now == "error" || now == "off" || Instant::now() > deadline {
                    return Err(format!("Subscription {id} is {now:?}, not active (handshake refused or too slow)").into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Cluster rows: waits until a write through each of `bases` is acknowledged, i.e. a writer
/// was elected and every node forwards to it. Each node writes its own probe Task (written
/// before the topic exists, so it notifies nothing); 503 (no writer yet) and refused
/// connections are retried until `within` has passed.
pub async fn wait_writer(client: &reqwest::Client, bases: &[String], within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    for (i, base) in bases.iter().enumerate() {
        let url = format!("{base}/Task/herald-load-probe-{i}");
        let body = json!({ "resourceType": "Task", "id": format!("herald-load-probe-{i}"), "status": "requested", "intent": "order" });
        loop {
            let last = match client.put(&url).header("content-type", "application/fhir+json").json(&body).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => "503".to_string(),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(format!("PUT {url}: {status}: {}", text.chars().take(500).collect::<String>()).into());
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!("no write through {base} was acknowledged within {} s (last: {last})", within.as_secs()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
