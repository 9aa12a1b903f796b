//! `$get-ws-binding-token` tokens: random (256 bits), short-lived, and good only for the
//! subscriptions they were issued for. They exist only in this process, and only as SHA-256
//! digests: the token itself is returned to the caller once and never kept, logged or stored.
//! A token may bind any number of sockets until it expires (a client reconnecting within the
//! lifetime needs no new token); expiry is checked at bind time only. Each token remembers
//! the caller it was issued to, so that the bind can check again that this caller may still
//! use every subscription the token names (one may have been deleted and its id reused).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::fhir::instant::{now_millis, Millis};
use crate::secret::Secret;

/// Most live tokens at once; beyond it issuing fails until some expire (a bound on memory
/// that a client calling the non-idempotent operation in a loop could otherwise grow).
const MAX_LIVE_TOKENS: usize = 100_000;

/// A token as handed to the caller.
pub struct Issued {
    pub token: Secret<String>,
    pub expires_at: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the operating system's random source failed")]
    Random(#[source] rand::Error),
    #[error("too many live binding tokens; retry once some have expired")]
    Full,
}

struct Grant {
    subscriptions: Vec<String>,
    holder: Arc<Principal>,
    expires: Instant,
}

/// What a live token binds, and for whom.
pub struct Redeemed {
    pub subscriptions: Vec<String>,
    /// The caller the token was issued to.
    pub holder: Arc<Principal>,
}

pub struct Tokens {
    lifetime: Duration,
    grants: Mutex<HashMap<[u8; 32], Grant>>,
}

/// The SHA-256 digest a token is known by (sockets remember which token bound what by it).
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn new(lifetime: Duration) -> Self {
        Tokens { lifetime, grants: Mutex::new(HashMap::new()) }
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Grant>> {
        // A panic while holding this lock cannot leave a half-written map entry.
        self.grants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new token for `subscriptions`, issued to `holder` (not idempotent: every call makes
    /// another).
    pub fn issue(&self, subscriptions: Vec<String>, holder: Arc<Principal>) -> Result<Issued, TokenError> {
        let mut raw = [0u8; 32];
        OsRng.try_fill_bytes(&mut raw).map_err(TokenError::Random)?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut grants = self.grants();
        grants.retain(|_, g| g.expires > now);
        if grants.len() >= MAX_LIVE_TOKENS {
            return Err(TokenError::Full);
        }
        grants.insert(digest(&token), Grant { subscriptions, holder, expires: now + self.lifetime });
        let lifetime_ms = i64::try_from(self.lifetime.as_millis()).unwrap_or(i64::MAX / 2);
        Ok(Issued { token: Secret::new(token), expires_at: now_millis().saturating_add(lifetime_ms) })
    }

    /// The subscriptions `token` may bind and its holder, if it is known and not expired.
    pub fn redeem(&self, token: &str) -> Option<Redeemed> {
        let key = digest(token);
        let mut grants = self.grants();
        match grants.get(&key) {
            Some(g) if g.expires > Instant::now() => Some(Redeemed { subscriptions: g.subscriptions.clone(), holder: g.holder.clone() }),
            Some(_) => {
                grants.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Live tokens (expired ones may still be counted until the next `issue`).
    pub fn len(&self) -> usize {
        self.grants().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder() -> Arc<Principal> {
        Arc::new(Principal::anonymous())
    }

    fn subs(tokens: &Tokens, token: &str) -> Option<Vec<String>> {
        tokens.redeem(token).map(|r| r.subscriptions)
    }

    #[test]
    fn tokens_are_random_bound_to_their_subscriptions_and_expire() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let a = tokens.issue(vec!["s1".into(), "s2".into()], holder()).unwrap();
        let b = tokens.issue(vec!["s1".into()], holder()).unwrap();
        assert_ne!(a.token.expose(), b.token.expose());
        assert_eq!(a.token.expose().len(), 64);
        assert_eq!(subs(&tokens, a.token.expose()), Some(vec!["s1".to_string(), "s2".to_string()]));
        assert_eq!(subs(&tokens, a.token.expose()), Some(vec!["s1".to_string(), "s2".to_string()]), "reusable until expiry");
        assert_eq!(subs(&tokens, "nope"), None);
        assert!(format!("{:?}", a.token).contains("redacted"));
        assert!(b.expires_at > now_millis());
        let expired = Tokens::new(Duration::ZERO);
        let c = expired.issue(vec!["s1".into()], holder()).unwrap();
        assert_eq!(subs(&expired, c.token.expose()), None, "a token past its lifetime binds nothing");
        assert!(expired.is_empty(), "and is forgotten");
    }

    #[test]
    fn a_token_remembers_whom_it_was_issued_to() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let mut who = Principal::anonymous();
        who.client = Some("lab".into());
        let issued = tokens.issue(vec!["s".into()], Arc::new(who)).unwrap();
        let redeemed = tokens.redeem(issued.token.expose()).unwrap();
        assert_eq!(redeemed.holder.client.as_deref(), Some("lab"));
    }

    #[test]
    fn only_digests_are_kept() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let issued = tokens.issue(vec!["s".into()], holder()).unwrap();
        let grants = tokens.grants();
        assert!(grants.keys().all(|k| k.as_slice() != issued.token.expose().as_bytes()));
        assert!(grants.contains_key(&digest(issued.token.expose())));
    }
}
