//! Key layout of the single `herald` tree. One prefix byte per namespace, then fields joined by
//! NUL (ids and type names never contain NUL: ids are `[A-Za-z0-9\-.]{1,64}`), numbers as
//! big-endian `u64` so that byte order is numeric order.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `r` | type NUL id | `CurrentRecord`: latest version's seq, versionId, deleted |
//! | `h` | type NUL id NUL seq | `VersionRecord`: one version of a resource |
//! | `s` | subscription id | `SubState`: status, event counter, delivery cursor |
//! | `e` | subscription id NUL event number | `EventRecord`: one matched event |
//! | `d` | subscription id NUL event number | `DeadRecord`: an event that was given up on |
//! | `i` | type NUL param code NUL kind escaped-value NUL id | empty: one search index entry |
//! | `x` | type NUL id | the resource's index entries (`index::Entries`), to remove them on change |
//! | `a` | sequence number | `AuditEntry`: one entry of the audit trail (`ops::audit`) |
//! | `p` | subscription id | empty: a deleted subscription whose events are still being removed |
//! | `m` | name | store metadata: `index-set`, the fingerprint of the index set (`index::set`) |
//!
//! Index values are escaped (`00` as `01 01`, `01` as `01 02`) so that the NUL after them ends
//! them unambiguously while byte order, and prefixes, are kept; see `index`.

fn join(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    key.push(prefix);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

pub fn current(resource_type: &str, id: &str) -> Vec<u8> {
    join(b'r', &[resource_type.as_bytes(), id.as_bytes()])
}

pub fn current_type_prefix(resource_type: &str) -> Vec<u8> {
    join(b'r', &[resource_type.as_bytes(), b""])
}

pub fn history(resource_type: &str, id: &str, seq: u64) -> Vec<u8> {
    join(b'h', &[resource_type.as_bytes(), id.as_bytes(), &seq.to_be_bytes()])
}

pub fn history_prefix(resource_type: &str, id: &str) -> Vec<u8> {
    join(b'h', &[resource_type.as_bytes(), id.as_bytes(), b""])
}

pub fn sub_state(sub: &str) -> Vec<u8> {
    join(b's', &[sub.as_bytes()])
}

/// A deleted subscription whose events and dead letters are still being removed.
pub fn purge(sub: &str) -> Vec<u8> {
    join(b'p', &[sub.as_bytes()])
}

pub fn purge_prefix() -> Vec<u8> {
    vec![b'p']
}

pub fn sub_state_prefix() -> Vec<u8> {
    vec![b's']
}

pub fn event(sub: &str, number: u64) -> Vec<u8> {
    join(b'e', &[sub.as_bytes(), &number.to_be_bytes()])
}

pub fn event_prefix(sub: &str) -> Vec<u8> {
    join(b'e', &[sub.as_bytes(), b""])
}

pub fn dead(sub: &str, number: u64) -> Vec<u8> {
    join(b'd', &[sub.as_bytes(), &number.to_be_bytes()])
}

pub fn dead_prefix(sub: &str) -> Vec<u8> {
    join(b'd', &[sub.as_bytes(), b""])
}

/// `i` type NUL code NUL: every index entry of one parameter of one type.
pub fn index_param_prefix(resource_type: &str, code: &str) -> Vec<u8> {
    join(b'i', &[resource_type.as_bytes(), code.as_bytes(), b""])
}

/// `i` type NUL: every index entry of one type.
pub fn index_type_prefix(resource_type: &str) -> Vec<u8> {
    join(b'i', &[resource_type.as_bytes(), b""])
}

pub fn index_all_prefix() -> Vec<u8> {
    vec![b'i']
}

pub fn index_entries(resource_type: &str, id: &str) -> Vec<u8> {
    join(b'x', &[resource_type.as_bytes(), id.as_bytes()])
}

pub fn index_entries_all_prefix() -> Vec<u8> {
    vec![b'x']
}

/// `a` seq: one audit trail entry.
pub fn audit(seq: u64) -> Vec<u8> {
    join(b'a', &[&seq.to_be_bytes()])
}

pub fn audit_prefix() -> Vec<u8> {
    vec![b'a']
}

/// `m` name: one metadata record.
pub fn meta(name: &str) -> Vec<u8> {
    join(b'm', &[name.as_bytes()])
}

/// What the namespace under `prefix` holds, as the table above names it (`Store::usage`).
pub fn family(prefix: u8) -> &'static str {
    match prefix {
        b'r' => "current records",
        b'h' => "version history",
        b's' => "subscription state",
        b'p' => "purges",
        b'e' => "events",
        b'd' => "dead letters",
        b'i' => "search index entries",
        b'x' => "search index entry lists",
        b'a' => "audit",
        b'm' => "metadata",
        _ => "unknown",
    }
}

/// A key for error messages: printable bytes kept, the rest hex-escaped.
pub fn display(key: &[u8]) -> String {
    key.iter().map(|&b| if b.is_ascii_graphic() { (b as char).to_string() } else { format!("\\x{b:02x}") }).collect()
}
