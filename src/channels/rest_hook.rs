//! rest-hook: POST a notification Bundle to the subscription's endpoint.
//!
//! The client never follows redirects (a redirect could point at a private address), resolves
//! names through the address guard, and sends each `Subscription.parameter` as a header whose
//! value is marked sensitive, plus the Standard Webhooks headers (`signing`) when the
//! subscription has signing keys. Nothing here logs header values or bodies.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, HeaderValue};
use url::Url;

use super::guard::{check_literal, AddressPolicy, GuardedResolver};
use super::signing::{self, Signing};
use crate::fhir::subscription::ChannelHeader;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered with this status; `retry_after` from its header, if any.
    Answered { status: u16, retry_after: Option<Duration> },
    /// No answer.
    Failed { kind: FailureKind, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Dns,
    Connect,
    Timeout,
    /// The guard refused the address.
    Blocked,
    Other,
}

impl FailureKind {
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Blocked => "blocked",
            FailureKind::Other => "other",
        }
    }
}

#[derive(Clone)]
pub struct RestHookClient {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl RestHookClient {
    pub fn new(policy: AddressPolicy) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .no_proxy()
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(RestHookClient { client, policy })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Sends one notification, signed when `signing` has keys. Never panics, never logs secrets.
    pub async fn post(
        &self,
        url: &Url,
        headers: &[ChannelHeader],
        signing: Option<Signing<'_>>,
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> (Attempt, Duration) {
        let started = Instant::now();
        if let Err(e) = check_literal(url, &self.policy) {
            return (Attempt::Failed { kind: FailureKind::Blocked, detail: e.to_string() }, started.elapsed());
        }
        // Standard Webhooks: the timestamp is this attempt's, so a retry is signed afresh.
        let signed = signing.filter(|s| !s.keys.is_empty()).map(|s| {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            (s.message_id.to_owned(), now, signing::signature(s.keys, s.message_id, now, &body))
        });
        let mut req = self.client.post(url.clone()).timeout(timeout).header(http::header::CONTENT_TYPE, content_type).body(body);
        if let Some((id, timestamp, signature)) = signed {
            req = req
                .header(signing::ID_HEADER, id)
                .header(signing::TIMESTAMP_HEADER, timestamp.to_string())
                .header(signing::SIGNATURE_HEADER, signature);
        }
        for h in headers {
            let (Ok(name), Ok(mut value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(h.value.expose())) else {
                continue; // validated at creation; unreachable for stored subscriptions
            };
            value.set_sensitive(true);
            req = req.header(name, value);
        }
        let attempt = match req.send().await {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Attempt::Answered { status: resp.status().as_u16(), retry_after }
            }
            Err(e) => classify_error(&e),
        };
        (attempt, started.elapsed())
    }
}

fn classify_error(e: &reqwest::Error) -> Attempt {
    // Walk the source chain: the guard's refusal and DNS failures surface as connect errors.
    let mut chain = String::new();
    let mut src: Option<&dyn std::error::Error> = Some(e);
    let mut blocked = false;
    while let Some(err) = src {
        if err.downcast_ref::<super::guard::GuardError>().is_some() {
            blocked = true;
        }
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&err.to_string());
        src = err.source();
    }
    let lower = chain.to_ascii_lowercase();
    let kind = if blocked {
        FailureKind::Blocked
    } else if e.is_timeout() {
        FailureKind::Timeout
    } else if lower.contains("dns")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
        || lower.contains("no addresses")
    {
        FailureKind::Dns
    } else if e.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Other
    };
    // The URL is dropped from the detail: it is the subscriber's, and may carry a token in
    // its query string.
    let detail = match e.url() {
        Some(u) => chain.replace(u.as_str(), "<endpoint>"),
        None => chain,
    };
    Attempt::Failed { kind, detail }
}
