//! Index entries: written and replaced with their version, probed by value, prefix and range.

use serde_json::json;

use super::*;
use crate::store::records;

const BASE: &str = "http://herald.test/fhir";

fn task(id: &str, seq: u64, owner: &str, status: &str, authored: &str) -> VersionRecord {
    VersionRecord {
        v: records::FORMAT,
        resource_type: "Task".into(),
        id: id.into(),
        seq,
        version_id: seq.to_string(),
        last_updated: 1,
        method: "PUT".into(),
        deleted: false,
        resource: Some(json!({
            "resourceType": "Task", "id": id, "status": status, "intent": "order",
            "owner": { "reference": owner }, "authoredOn": authored, "description": "Draw Blood"
        })),
        full_url: None,
    }
}

fn ids(store: &Store, code: &str, probe: &Probe) -> Vec<String> {
    let mut out = Vec::new();
    store
        .index_scan("Task", code, probe, |id| {
            out.push(id.to_owned());
            true
        })
        .unwrap();
    out
}

#[test]
fn entries_follow_the_current_version_within_and_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    let a1 = task("a", 1, "Organization/lab-1", "requested", "2026-01-05");
    c.put_version(&a1).unwrap();
    c.index_version(&store, &a1, BASE).unwrap();
    // A second version of the same resource in the same commit replaces the first's entries.
    let a2 = task("a", 2, "Organization/lab-2", "requested", "2026-01-05");
    c.put_version(&a2).unwrap();
    c.index_version(&store, &a2, BASE).unwrap();
    let b1 = task("b", 1, &format!("{BASE}/Organization/lab-1"), "completed", "2026-02-01T10:00:00Z");
    c.put_version(&b1).unwrap();
    c.index_version(&store, &b1, BASE).unwrap();
    store.apply(c).unwrap();
    assert_eq!(ids(&store, "owner", &Probe::Equal("Organization/lab-1".into())), vec!["b"], "absolute on our base is local");
    assert_eq!(ids(&store, "owner", &Probe::Equal("Organization/lab-2".into())), vec!["a"]);
    assert_eq!(ids(&store, "owner", &Probe::Equal("lab-2".into())), vec!["a"], "a bare id finds any type");
    assert_eq!(ids(&store, "status", &Probe::Equal("requested".into())), vec!["a"]);
    let jan = crate::fhir::search::date::parse_range("2026-01").unwrap();
    assert_eq!(ids(&store, "authored-on", &Probe::Start { lo: jan.start, hi: jan.end }), vec!["a"]);
    assert_eq!(ids(&store, "authored-on", &Probe::End { lo: jan.end, hi: i64::MAX }), vec!["b"]);
    assert!(store.index_contains("Task", "status", "completed", "b").unwrap());
    assert!(!store.index_contains("Task", "status", "completed", "a").unwrap());

    // Update and delete in later commits remove what the earlier version wrote.
    let mut c = Commit::new();
    let b2 = task("b", 2, "Organization/lab-3", "completed", "2026-02-01");
    c.put_version(&b2).unwrap();
    c.index_version(&store, &b2, BASE).unwrap();
    let mut a3 = a2.clone();
    a3.seq = 3;
    a3.deleted = true;
    a3.resource = None;
    c.put_version(&a3).unwrap();
    c.index_version(&store, &a3, BASE).unwrap();
    store.apply(c).unwrap();
    assert!(ids(&store, "owner", &Probe::Equal("Organization/lab-1".into())).is_empty());
    assert!(ids(&store, "status", &Probe::Equal("requested".into())).is_empty());
    assert_eq!(ids(&store, "owner", &Probe::Equal("Organization/lab-3".into())), vec!["b"]);
    let check = store.check_index(BASE).unwrap();
    assert!(check.is_consistent(), "{check:?}");
    assert_eq!(check.resources, 1);
}

#[test]
fn strings_are_found_by_normalized_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut rec = task("p", 1, "Organization/x", "requested", "2026");
    rec.resource_type = "Patient".into();
    rec.resource = Some(json!({ "resourceType": "Patient", "id": "p", "name": [{ "family": "Müller", "given": ["Eve Anne"] }] }));
    let mut c = Commit::new();
    c.index_version(&store, &rec, BASE).unwrap();
    store.apply(c).unwrap();
    let mut found = Vec::new();
    store
        .index_scan("Patient", "name", &Probe::Prefix(EntryKind::Text, "mul".into()), |id| {
            found.push(id.to_owned());
            true
        })
        .unwrap();
    assert_eq!(found, vec!["p"]);
}

#[test]
fn check_finds_stale_and_missing_entries_and_rebuild_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    let a = task("a", 1, "Organization/lab-1", "requested", "2026-01-05");
    c.put_version(&a).unwrap();
    // A version written without its entries (as a store from before indexing would hold).
    store.apply(c).unwrap();
    let check = store.check_index(BASE).unwrap();
    assert!(check.missing > 0 && !check.is_consistent(), "{check:?}");
    store.tree.insert(entry_key("Task", &Entry::text("status", EntryKind::Equal, "bogus").suffix(), "zz"), Vec::<u8>::new()).unwrap();
    let check = store.rebuild_index(BASE).unwrap();
    assert!(check.is_consistent(), "{check:?}");
    assert_eq!(ids(&store, "status", &Probe::Equal("requested".into())), vec!["a"]);
}

#[test]
fn escaping_keeps_order_and_values_with_nul_bytes() {
    let mut a = Vec::new();
    escape_into(&[0, 1, 2], &mut a);
    let mut b = Vec::new();
    escape_into(&[1], &mut b);
    assert!(a < b);
    assert!(!a.contains(&0));
    assert!(time_bytes(-5) < time_bytes(3));
    assert_eq!(cut(&"é".repeat(150)).len(), 200);
    let list = encode_entries(&[b"x\0=a".to_vec(), b"y".to_vec()]);
    assert_eq!(decode_entries(b"k", &list).unwrap(), vec![b"x\0=a".to_vec(), b"y".to_vec()]);
    assert!(decode_entries(b"k", &[1, 0, 9, 1]).is_err());
    assert!(decode_entries(b"k", &[7]).is_err());
}
