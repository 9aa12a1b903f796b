//! The address guard: delivery connects only to global addresses unless the operator allows
//! private ones (`--allow-private-endpoints`, or `delivery.allow_private_networks` CIDRs).
//!
//! It acts twice: when a Subscription is written (`check_endpoint`: resolve now, refuse a host
//! that resolves to a forbidden address) and at every connection (`GuardedResolver`, plugged
//! into the HTTP client, drops forbidden addresses from every DNS answer; literal-IP URLs are
//! checked before sending), because DNS can change between the two.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

/// Which non-global addresses the operator allows.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    pub allow_all_private: bool,
    pub allow_nets: Vec<IpNet>,
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240 // reserved
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_forbidden(v4);
    }
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10: deprecated, still routed inside some sites
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 can reach IPv4 private space
        || s[0] == 0x2002 // 6to4 embeds an IPv4 address, private ones included, behind a relay
        || (s[0] == 0x2001 && s[1] == 0x0000) // Teredo tunnels to an embedded IPv4 address too
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only 100::/64
        || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)
    // IPv4-compatible
}

/// True for loopback, private, link-local, CGNAT, multicast, documentation, metadata and other
/// non-global addresses, and for the IPv6 prefixes that tunnel to an embedded IPv4 address
/// (NAT64, 6to4, Teredo) or are reserved (site-local, discard).
pub fn is_non_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => v6_forbidden(v6),
    }
}

impl AddressPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_non_global(ip) || self.allow_all_private || self.allow_nets.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The URL names the address itself, so repeating it tells the caller nothing new.
    #[error("endpoint address {0} is loopback, private, link-local or otherwise not public; the operator has not allowed it")]
    Forbidden(IpAddr),
    /// The text names the host but never the address it resolved to: this error reaches the
    /// subscriber (422 on create, `$status` after a delivery, the audit trail), and naming the
    /// address would let anyone use Subscription creation to resolve names inside the network.
    /// `ip` is kept for operator-level logs only.
    #[error("endpoint host {host} resolves to an address that is not public; the operator has not allowed it")]
    ResolvesForbidden { host: String, ip: IpAddr },
    #[error("endpoint URL has no host")]
    NoHost,
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Checks a literal-IP URL without resolving; `Ok` for host names (the resolver checks those).
pub fn check_literal(url: &Url, policy: &AddressPolicy) -> Result<(), GuardError> {
    match literal_ip(url) {
        Some(ip) if !policy.permits(ip) => Err(GuardError::Forbidden(ip)),
        _ => Ok(()),
    }
}

/// Creation-time check: a literal IP, or every address the host resolves to now, must be
/// permitted. A host that does not resolve now is let through: the connect-time guard still
/// applies, and the handshake will report the DNS failure.
pub async fn check_endpoint(url: &Url, policy: &AddressPolicy) -> Result<(), GuardError> {
    check_literal(url, policy)?;
    let Some(url::Host::Domain(host)) = url.host() else {
        return if url.host().is_some() { Ok(()) } else { Err(GuardError::NoHost) };
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host((host, port))).await;
    if let Ok(Ok(addrs)) = lookup {
        for addr in addrs {
            if !policy.permits(addr.ip()) {
                tracing::debug!(host, ip = %addr.ip(), "endpoint host resolves to a forbidden address");
                return Err(GuardError::ResolvesForbidden { host: host.to_string(), ip: addr.ip() });
            }
        }
    }
    Ok(())
}

/// Whether every address `url` names is non-global (loopback, private, link-local...): plain
/// http there does not cross a public network. Names that do not resolve count as global.
pub async fn stays_private(url: &Url) -> bool {
    if let Some(ip) = literal_ip(url) {
        return is_non_global(ip);
    }
    let Some(url::Host::Domain(host)) = url.host() else { return false };
    let port = url.port_or_known_default().unwrap_or(80);
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| is_non_global(a.ip()))
        }
        _ => false,
    }
}

/// DNS resolution for the delivery client that drops forbidden addresses.
pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| policy.permits(a.ip())).collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match addrs.first() {
                    Some(a) => {
                        tracing::debug!(host, ip = %a.ip(), "delivery host resolves only to forbidden addresses");
                        Box::new(GuardError::ResolvesForbidden { host, ip: a.ip() })
                    }
                    None => format!("{host} has no addresses").into(),
                };
                return Err(err);
            }
            let iter: Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_global_addresses_are_forbidden_by_default() {
        let policy = AddressPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!policy.permits(ip), "{ip} should be forbidden");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.permits(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn operator_allowlist_opens_exactly_its_networks() {
        let policy = AddressPolicy { allow_all_private: false, allow_nets: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("10.0.0.1".parse().unwrap()));
        let open = AddressPolicy { allow_all_private: true, allow_nets: vec![] };
        assert!(open.permits("10.0.0.1".parse().unwrap()));
    }

    /// Each tunnelling or reserved IPv6 prefix, with an address inside it.
    const TUNNELS_AND_RESERVED: [(&str, &str); 4] = [
        ("2002::/16", "2002:c0a8:101::1"),    // 6to4 wrapping 192.168.1.1
        ("fec0::/10", "fec0::1"),             // site-local
        ("2001::/32", "2001:0:4136:e378::1"), // Teredo
        ("100::/64", "100::1"),               // discard
    ];

    #[test]
    fn tunnel_and_reserved_v6_prefixes_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for (net, ip) in TUNNELS_AND_RESERVED {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!policy.permits(ip), "{ip} in {net} should be forbidden");
        }
        // Neighbours of those prefixes stay global.
        for ip in ["2001:4860::8888", "2003::1", "100:0:0:1::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.permits(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn tunnel_and_reserved_v6_prefixes_are_permitted_when_allowlisted() {
        for (net, ip) in TUNNELS_AND_RESERVED {
            let policy = AddressPolicy { allow_all_private: false, allow_nets: vec![net.parse().unwrap()] };
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.permits(ip), "{ip} should be permitted once {net} is allowlisted");
        }
    }

    #[test]
    fn a_resolved_address_never_appears_in_the_error_text() {
        let err = GuardError::ResolvesForbidden { host: "intranet.example".into(), ip: "10.9.8.7".parse().unwrap() };
        let text = err.to_string();
        assert!(text.contains("intranet.example"), "{text}");
        assert!(text.contains("resolves to an address that is not public"), "{text}");
        assert!(!text.contains("10.9.8.7"), "{text}");
    }

    #[tokio::test]
    async fn creation_check_hides_what_localhost_resolves_to() {
        let err = check_endpoint(&Url::parse("http://localhost:9/x").unwrap(), &AddressPolicy::default()).await.unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("127.0.0.1") && !text.contains("::1"), "{text}");
    }

    #[tokio::test]
    async fn creation_check_refuses_localhost_names_and_literals() {
        let policy = AddressPolicy::default();
        assert!(check_endpoint(&Url::parse("http://127.0.0.1:9/x").unwrap(), &policy).await.is_err());
        assert!(check_endpoint(&Url::parse("http://[::1]:9/x").unwrap(), &policy).await.is_err());
        assert!(check_endpoint(&Url::parse("http://localhost:9/x").unwrap(), &policy).await.is_err());
    }
}
