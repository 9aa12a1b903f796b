//! The operator CLI: `herald <command>` talking to a running Herald over its FHIR API.
//!
//! Each command is one or a few HTTP requests; output is a human-readable table by default
//! and the server's JSON with `--json`. The server is `--server` (or `HERALD_SERVER`), the
//! FHIR base URL, default `http://127.0.0.1:8080/fhir`.

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
    pub fn new(base: &str) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { base: base.trim_end_matches('/').to_owned(), http })
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, CliError> {
        let url = format!("{}/{path}", self.base);
        let resp = self
            .http
            .request(method, &url)
            .header("accept", "application/fhir+json")
            .send()
            .await
            .map_err(|e| CliError(format!("{url}: {e}")))?;
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
