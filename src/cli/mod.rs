//! The operator CLI: `herald <command>` talking to a running Herald over HTTP: its FHIR API
//! (`$dead-letters`, `$resend`, Subscription reads and updates) and its operator API
//! (`/admin/api`, with `--token` when `admin.token` is set).
//!
//! Each command is one or a few requests; output is a human-readable table by default and JSON
//! with `--json`. The server is `--server` (or `HERALD_SERVER`), the FHIR base URL, default
//! `http://127.0.0.1:8080/fhir`; the operator API is at the same origin.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

/// A CLI failure, printed as is.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An operator command.
#[derive(Debug, Clone)]
pub enum Command {
    Status,
    SubscriptionsList,
    SubscriptionShow { subscription: String },
    SubscriptionPause { subscription: String },
    SubscriptionResume { subscription: String },
    TopicsList,
    Dead(DeadCommand),
    Audit(AuditCommand),
}

/// `herald audit`: entries of the audit trail, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditCommand {
    pub after: Option<u64>,
    pub limit: Option<usize>,
    pub subscription: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
}

/// `herald dead …`.
#[derive(Debug, Clone)]
pub enum DeadCommand {
    List { subscription: String },
    Show { subscription: String, number: u64 },
    Replay { subscription: String, from: Option<u64>, until: Option<u64>, wait: bool },
}

/// Talks to one Herald.
pub struct Client {
    base: String,
    origin: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The diagnostics of an OperationOutcome, joined.
fn outcome_text(body: &Value) -> String {
    let issues = body.get("issue").and_then(Value::as_array).into_iter().flatten();
    let texts: Vec<&str> = issues.filter_map(|i| i.get("diagnostics").and_then(Value::as_str)).collect();
    if texts.is_empty() {
        body.to_string()
    } else {
        texts.join("; ")
    }
}

impl Client {
    pub fn new(base: &str, token: Option<&str>) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError(format!("cannot build an HTTP client: {e}")))?;
        let base = base.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base).map_err(|e| CliError(format!("--server {base}: {e}")))?;
        let origin = match base.strip_suffix("/fhir") {
            Some(o) => o.to_owned(),
            None => parsed.origin().ascii_serialization(),
        };
        Ok(Client { base, origin, token: token.filter(|t| !t.is_empty()).map(str::to_owned), http })
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, CliError> {
        self.send(method, format!("{}/{path}", self.base), None).await
    }

    /// The operator API (`/admin/api/…`).
    async fn admin(&self, method: reqwest::Method, path: &str) -> Result<Value, CliError> {
        self.send(method, format!("{}/admin/api/{path}", self.origin), None).await
    }

    async fn send(&self, method: reqwest::Method, url: String, body: Option<&Value>) -> Result<Value, CliError> {
        let mut req = self.http.request(method, &url).header("accept", "application/fhir+json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/fhir+json").body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| CliError(format!("{url}: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(CliError(format!("{url}: {status}: {}", outcome_text(&body))))
        }
    }

    async fn dead_letters(&self, sub: &str) -> Result<Value, CliError> {
        self.call(reqwest::Method::GET, &format!("Subscription/{sub}/$dead-letters")).await
    }

    /// Runs a command; returns what to print.
    pub async fn run(&self, cmd: &Command, json: bool) -> Result<String, CliError> {
        match cmd {
            Command::Dead(d) => self.dead(d, json).await,
            Command::Audit(a) => {
                let (body, _) = self.audit(a).await?;
                Ok(if json { body.to_string() } else { audit_table(&body) })
            }
            Command::Status => {
                let s = self.admin(reqwest::Method::GET, "summary").await?;
                if json {
                    let subs = s.get("subscriptions").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
                    return Ok(serde_json::json!({ "at": s.get("at"), "totals": s.get("totals"), "subscriptions": subs }).to_string());
                }
                Ok(status_text(&s))
            }
            Command::SubscriptionsList => {
                let s = self.admin(reqwest::Method::GET, "summary").await?;
                let subs = s.get("subscriptions").cloned().unwrap_or(Value::Array(Vec::new()));
                Ok(if json { subs.to_string() } else { subscriptions_table(&subs) })
            }
            Command::TopicsList => {
                let s = self.admin(reqwest::Method::GET, "summary").await?;
                let topics = s.get("topics").cloned().unwrap_or(Value::Array(Vec::new()));
                Ok(if json { topics.to_string() } else { topics_table(&topics) })
            }
            Command::SubscriptionShow { subscription } => {
                let d = self.admin(reqwest::Method::GET, &format!("subscriptions/{subscription}")).await?;
                Ok(if json { d.to_string() } else { subscription_text(&d) })
            }
            Command::SubscriptionPause { subscription } => self.set_status(subscription, "off", json).await,
            Command::SubscriptionResume { subscription } => self.set_status(subscription, "requested", json).await,
        }
    }

    /// Pause (`off`) or resume (`requested`: a new handshake, then delivery resumes).
    async fn set_status(&self, sub: &str, status: &str, json: bool) -> Result<String, CliError> {
        let mut resource = self.call(reqwest::Method::GET, &format!("Subscription/{sub}")).await?;
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("status".into(), Value::String(status.to_owned()));
            obj.remove("meta");
        }
        let url = format!("{}/Subscription/{sub}", self.base);
        let stored = self.send(reqwest::Method::PUT, url, Some(&resource)).await?;
        let now = stored.get("status").and_then(Value::as_str).unwrap_or("?");
        Ok(if json { stored.to_string() } else { format!("Subscription/{sub} is now {now}") })
    }

    /// One page of the audit trail, and the sequence number to ask after for the next.
    pub async fn audit(&self, a: &AuditCommand) -> Result<(Value, Option<u64>), CliError> {
        let mut url = url::Url::parse(&format!("{}/admin/api/audit", self.origin)).map_err(|e| CliError(format!("{e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(after) = a.after {
                q.append_pair("after", &after.to_string());
            }
            if let Some(limit) = a.limit {
                q.append_pair("limit", &limit.to_string());
            }
            for (k, v) in [("subscription", &a.subscription), ("action", &a.action), ("actor", &a.actor)] {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
        }
        let body = self.send(reqwest::Method::GET, url.to_string(), None).await?;
        let next = body.get("next").and_then(Value::as_u64);
        Ok((body, next))
    }

    /// Runs a `dead` command; returns what to print.
    pub async fn dead(&self, cmd: &DeadCommand, json: bool) -> Result<String, CliError> {
        match cmd {
            DeadCommand::List { subscription } => {
                let body = self.dead_letters(subscription).await?;
                Ok(if json { body.to_string() } else { dead_table(&body) })
            }
            DeadCommand::Show { subscription, number } => {
                let body = self.dead_letters(subscription).await?;
                let found = letters(&body).into_iter().find(|l| part(l, "eventNumber") == number.to_string());
                let letter = found.ok_or_else(|| CliError(format!("no dead letter {number} on Subscription/{subscription}")))?;
                if json {
                    return Ok(letter.to_string());
                }
                let mut out = String::new();
                for name in ["eventNumber", "timestamp", "topic", "interaction", "focus", "parkedAt", "attempts", "reason"] {
                    let _ = writeln!(out, "{name:<12} {}", part(letter, name));
                }
                Ok(out)
            }
            DeadCommand::Replay { subscription, from, until, wait } => {
                let before = letters(&self.dead_letters(subscription).await?).len();
                let mut query = vec!["deadLetters=true".to_owned()];
                query.extend(from.map(|n| format!("eventsSinceNumber={n}")));
                query.extend(until.map(|n| format!("eventsUntilNumber={n}")));
                let path = format!("Subscription/{subscription}/$resend?{}", query.join("&"));
                let answer = self.call(reqwest::Method::POST, &path).await?;
                let mut out = if json { answer.to_string() } else { outcome_text(&answer) };
                if *wait && before > 0 {
                    // Progress until the dead letters in the range are gone.
                    let target = before;
                    let mut last = usize::MAX;
                    loop {
                        let left = letters(&self.dead_letters(subscription).await?)
                            .iter()
                            .filter(|l| {
                                let n: u64 = part(l, "eventNumber").parse().unwrap_or(0);
                                from.is_none_or(|f| n >= f) && until.is_none_or(|u| n <= u)
                            })
                            .count();
                        if left != last {
                            eprintln!("replayed {}/{target}", target.saturating_sub(left));
                            last = left;
                        }
                        if left == 0 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    if !json {
                        out.push_str("\ndone");
                    }
                }
                Ok(out)
            }
        }
    }
}

fn letters(body: &Value) -> Vec<&Value> {
    body.get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("deadLetter"))
        .collect()
}

/// The text of part `name` of a `deadLetter` parameter.
fn part(letter: &Value, name: &str) -> String {
    let parts = letter.get("part").and_then(Value::as_array).into_iter().flatten();
    let Some(p) = parts.into_iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name)) else { return String::new() };
    let Some(obj) = p.as_object() else { return String::new() };
    match obj.iter().find(|(k, _)| k.starts_with("value")).map(|(_, v)| v) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("reference").and_then(Value::as_str).unwrap_or_default().to_owned(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn dead_table(body: &Value) -> String {
    let rows = letters(body);
    if rows.is_empty() {
        return "no dead letters".to_owned();
    }
    let mut out = format!("{:>8}  {:<24}  {:>8}  {:<40}  {}\n", "EVENT", "PARKED AT", "ATTEMPTS", "FOCUS", "REASON");
    for l in rows {
        let _ = writeln!(
            out,
            "{:>8}  {:<24}  {:>8}  {:<40}  {}",
            part(l, "eventNumber"),
            part(l, "parkedAt"),
            part(l, "attempts"),
            part(l, "focus"),
            part(l, "reason")
        );
    }
    out
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn status_text(s: &Value) -> String {
    let totals = s.get("totals").cloned().unwrap_or(Value::Null);
    let subs = s.get("subscriptions").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = format!("at {}\n", text(s, "at"));
    for k in ["writes", "events", "delivered", "failed", "dead", "websocketConnections"] {
        let _ = writeln!(out, "{k:<22} {}", text(&totals, k));
    }
    for st in ["active", "requested", "error", "off", "entered-in-error"] {
        let n = subs.iter().filter(|x| x.get("status").and_then(Value::as_str) == Some(st)).count();
        let _ = writeln!(out, "subscriptions {st:<9} {n}");
    }
    let pending: u64 = subs.iter().filter_map(|x| x.get("pending").and_then(Value::as_u64)).sum();
    let dead: u64 = subs.iter().filter_map(|x| x.get("dead").and_then(Value::as_u64)).sum();
    let _ = writeln!(out, "{:<22} {pending}", "pending events");
    let _ = writeln!(out, "{:<22} {dead}", "dead letters held");
    out
}

fn subscriptions_table(subs: &Value) -> String {
    let rows = subs.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return "no subscriptions".to_owned();
    }
    let mut out = format!(
        "{:<38}  {:<16}  {:<10}  {:>8}  {:>8}  {:>6}  {:>8}  {}\n",
        "ID", "STATUS", "CHANNEL", "EVENTS", "PENDING", "DEAD", "FAILURES", "TOPIC"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<38}  {:<16}  {:<10}  {:>8}  {:>8}  {:>6}  {:>8}  {}",
            text(&r, "id"),
            text(&r, "status"),
            text(&r, "channel"),
            text(&r, "events"),
            text(&r, "pending"),
            text(&r, "dead"),
            text(&r, "recentFailures"),
            text(&r, "topic")
        );
    }
    out
}

fn topics_table(topics: &Value) -> String {
    let rows = topics.as_array().cloned().unwrap_or_default();
    let mut out = format!("{:>11}  {:<8}  {:<70}  {}\n", "SUBSCRIBERS", "STATUS", "URL", "TITLE");
    for r in rows {
        let _ = writeln!(out, "{:>11}  {:<8}  {:<70}  {}", text(&r, "subscribers"), text(&r, "status"), text(&r, "url"), text(&r, "title"));
    }
    out
}

fn subscription_text(d: &Value) -> String {
    let mut out = String::new();
    for k in [
        "id",
        "status",
        "channel",
        "endpoint",
        "topic",
        "content",
        "events",
        "deliveredThrough",
        "pending",
        "dead",
        "withheld",
        "lastDeliveryAt",
    ] {
        let _ = writeln!(out, "{k:<17} {}", text(d, k));
    }
    if let Some(e) = d.get("error").filter(|e| !e.is_null()) {
        let _ = writeln!(out, "{:<17} {}: {}", "error", text(e, "code"), text(e, "text"));
    }
    let list = |key: &str| d.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let _ = writeln!(out, "\npending events (first 20)");
    for e in list("pendingEvents") {
        let _ =
            writeln!(out, "  {:>8}  {}  {:<8}  {}", text(&e, "number"), text(&e, "timestamp"), text(&e, "interaction"), text(&e, "focus"));
    }
    let _ = writeln!(out, "\ndead letters");
    for e in list("deadLetters") {
        let _ = writeln!(
            out,
            "  {:>8}  {}  attempts {}  {}",
            text(&e, "number"),
            text(&e, "parkedAt"),
            text(&e, "attempts"),
            text(&e, "reason")
        );
    }
    let _ = writeln!(out, "\ndelivery log (newest first)");
    for a in list("deliveries") {
        let result = if a.get("status").is_some_and(|v| !v.is_null()) { text(&a, "status") } else { text(&a, "error") };
        let _ = writeln!(
            out,
            "  {}  {:<18}  events {:<9}  {:<9}  {:<5}  {:<9}  {} ms",
            text(&a, "at"),
            text(&a, "kind"),
            text(&a, "events"),
            text(&a, "channel"),
            result,
            text(&a, "outcome"),
            text(&a, "millis")
        );
    }
    out
}

/// One line per audit entry: sequence, time, actor, action, outcome, subscription or entity,
/// then the details as `key=value`.
pub fn audit_table(body: &Value) -> String {
    let rows = body.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    for e in rows {
        let at = e.get("at").and_then(Value::as_i64).map(crate::fhir::instant::format_millis).unwrap_or_default();
        let what = match (e.get("entity").and_then(Value::as_str), e.get("subscription").and_then(Value::as_str)) {
            (Some(entity), _) => entity.to_owned(),
            (None, Some(sub)) => format!("Subscription/{sub}"),
            (None, None) => String::new(),
        };
        let detail = e
            .get("detail")
            .and_then(Value::as_object)
            .map(|d| {
                d.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>8}  {}  {:<20}  {:<19}  {:<7}  {:<40}  {}",
            text(&e, "seq"),
            at,
            text(&e, "actor"),
            text(&e, "action"),
            text(&e, "outcome"),
            what,
            detail
        );
    }
    out
}
