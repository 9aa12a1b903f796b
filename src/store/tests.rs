//! Store round trips and the record format's refusal of what it does not know.

use serde_json::json;

use super::*;

/// Version `seq` of `Task/id` (shared with `outbox::versions::tests`).
pub(crate) fn version(id: &str, seq: u64) -> VersionRecord {
    VersionRecord {
        v: records::FORMAT,
        resource_type: "Task".into(),
        id: id.into(),
        seq,
        version_id: seq.to_string(),
        last_updated: 1,
        method: "PUT".into(),
        deleted: false,
        resource: Some(json!({ "resourceType": "Task", "id": id })),
        full_url: None,
    }
}

#[test]
fn commit_is_applied_whole_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    c.put_version(&version("a", 1)).unwrap();
    c.put_version(&version("a", 2)).unwrap();
    c.put_version(&version("b", 1)).unwrap();
    let mut lane = SubState::new(SubStatus::Active);
    lane.events_since_start = 2;
    c.put_sub_state("s1", &lane).unwrap();
    for n in [2u64, 1, 300] {
        c.put_event(
            "s1",
            &EventRecord {
                v: 1,
                number: n,
                timestamp: 0,
                topic: "t".into(),
                interaction: "create".into(),
                focus_type: "Task".into(),
                focus_id: "a".into(),
                focus_seq: 1,
                context: Vec::new(),
                incarnation: 0,
            },
        )
        .unwrap();
    }
    store.apply(c).unwrap();
    store.flush().unwrap();
    assert_eq!(store.latest("Task", "a").unwrap().unwrap().seq, 2);
    let hist: Vec<u64> = store.history("Task", "a", 10).unwrap().iter().map(|v| v.seq).collect();
    assert_eq!(hist, vec![2, 1]);
    let ids: Vec<String> = store.list_current("Task", None, 10).unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec!["a", "b"]);
    let after: Vec<String> = store.list_current("Task", Some("a"), 10).unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(after, vec!["b"]);
    let numbers: Vec<u64> = store.events("s1", 2, 10).unwrap().iter().map(|e| e.number).collect();
    assert_eq!(numbers, vec![2, 300], "big-endian keys keep numeric order");
    assert_eq!(store.sub_state("s1").unwrap().unwrap().events_since_start, 2);
}

#[test]
fn unknown_format_and_damaged_records_are_errors_not_panics() {
    let bad_version = serde_json::from_str::<CurrentRecord>(r#"{"v":9,"seq":1,"version_id":"1","deleted":false}"#);
    assert!(bad_version.is_err());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.tree.insert(keys::current("Task", "x"), b"\xff garbage".to_vec()).unwrap();
    match store.current("Task", "x") {
        Err(StoreError::Corrupt { key, .. }) => assert!(key.starts_with("rTask")),
        other => panic!("expected a corrupt-record error, got {other:?}"),
    }
}

/// A SubState as an older release wrote it: no `owner_form`.
fn older_release_state(owner: &str, via: Option<GrantSource>) -> Vec<u8> {
    let mut state = SubState::new(SubStatus::Active);
    state.owner = Some(owner.into());
    state.grant = via.map(|via| StoredGrant { via, scopes: "system/*.rs".into(), patient: None });
    let mut value = serde_json::to_value(&state).unwrap();
    value.as_object_mut().unwrap().remove("owner_form");
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn older_token_owners_are_read_as_jwt_clients_and_current_records_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (sub, bytes) in [
        ("old-jwt", older_release_state("etl", Some(GrantSource::Jwt))),
        ("old-key", older_release_state("etl", Some(GrantSource::ApiKey))),
        ("old-ungranted", older_release_state("etl", None)),
    ] {
        store.tree.insert(keys::sub_state(sub), bytes).unwrap();
    }
    // Written by this release for an aliased token client: the bare name is meant.
    let mut aliased = SubState::new(SubStatus::Active);
    aliased.owner = Some("etl".into());
    aliased.grant = Some(StoredGrant { via: GrantSource::Jwt, scopes: "system/*.rs".into(), patient: None });
    let mut c = Commit::new();
    c.put_sub_state("aliased", &aliased).unwrap();
    store.apply(c).unwrap();

    let owner = |sub: &str| store.sub_state(sub).unwrap().unwrap().owner.unwrap();
    assert_eq!(owner("old-jwt"), "jwt:etl", "a token's bare id is not the API key's client");
    assert_eq!(owner("old-key"), "etl");
    assert_eq!(owner("old-ungranted"), "etl", "without a grant the credential kind is unknown");
    assert_eq!(owner("aliased"), "etl");
    let all: std::collections::HashMap<String, SubState> = store.sub_states().unwrap().into_iter().collect();
    assert_eq!(all["old-jwt"].owner.as_deref(), Some("jwt:etl"));
    assert_eq!(all["aliased"].owner.as_deref(), Some("etl"));
    assert!(all.values().all(|s| s.owner_form == OwnerForm::Kinded));
    // Upgrading twice changes nothing.
    assert_eq!(all["old-jwt"].clone().upgraded(), all["old-jwt"]);
}

fn event(n: u64) -> EventRecord {
    EventRecord {
        v: 1,
        number: n,
        timestamp: 0,
        topic: "t".into(),
        interaction: "create".into(),
        focus_type: "Task".into(),
        focus_id: "a".into(),
        focus_seq: 1,
        context: Vec::new(),
        incarnation: 0,
    }
}

#[test]
fn a_deleted_subscriptions_events_go_in_bounded_commits_recorded_until_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    for n in 1..=10 {
        c.put_event("gone", &event(n)).unwrap();
    }
    c.put_event("kept", &event(1)).unwrap();
    store.apply(c).unwrap();
    let mut steps = 0;
    loop {
        let mut c = Commit::new();
        let done = c.purge_outbox(&store, "gone", 4).unwrap();
        assert!(c.ops.len() <= 5, "at most 4 removals and the marker per commit");
        store.apply(c).unwrap();
        steps += 1;
        if done {
            break;
        }
        assert_eq!(store.purges().unwrap(), ["gone"], "the rest is recorded, for a restart to resume");
    }
    assert_eq!(steps, 3);
    assert!(store.events("gone", 1, 100).unwrap().is_empty());
    assert!(store.purges().unwrap().is_empty());
    assert_eq!(store.events("kept", 1, 10).unwrap().len(), 1, "another subscription's events stay");
}

#[test]
fn a_version_is_found_by_its_id_without_reading_every_resource() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    for seq in 1..=5 {
        c.put_version(&version("a", seq)).unwrap();
    }
    // A version mirrored from another server keeps that server's id.
    let mut foreign = version("a", 6);
    foreign.version_id = "W-remote-9".into();
    c.put_version(&foreign).unwrap();
    store.apply(c).unwrap();
    assert_eq!(store.version_by_id("Task", "a", "3").unwrap().map(|v| v.seq), Some(3));
    assert_eq!(store.version_by_id("Task", "a", "W-remote-9").unwrap().map(|v| v.seq), Some(6));
    assert!(store.version_by_id("Task", "a", "7").unwrap().is_none());
    assert!(store.version_by_id("Task", "b", "1").unwrap().is_none());
}

#[test]
fn usage_by_family_adds_up_to_exactly_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    for (id, seq) in [("a", 1), ("a", 2), ("b", 1)] {
        let mut v = version(id, seq);
        v.resource = Some(json!({ "resourceType": "Task", "id": id, "status": "ready", "owner": { "reference": "Organization/o1" } }));
        c.put_version(&v).unwrap();
        c.index_version(&store, &v, "http://h/fhir").unwrap();
    }
    c.put_sub_state("s1", &SubState::new(SubStatus::Active)).unwrap();
    c.put_event("s1", &event(1)).unwrap();
    c.put_dead("s1", &DeadRecord { v: 1, number: 1, parked_at: 0, attempts: 3, reason: "410".into() }).unwrap();
    c.put_audit(store.next_audit_seq(), &json!({ "action": "create" })).unwrap();
    let ops = c.into_ops();
    // What the store should hold: the last write of each key.
    let mut written = std::collections::BTreeMap::new();
    for (k, v) in &ops {
        written.insert(k.clone(), v.clone());
    }
    store.apply_logged(1, &ops).unwrap();
    store.flush().unwrap();

    let usage = store.usage().unwrap();
    for prefix in [b'r', b'h', b'i', b'x', b's', b'e', b'd', b'a'] {
        let (mut n, mut key_bytes, mut value_bytes) = (0, 0, 0);
        for (k, v) in written.iter().filter(|(k, _)| k.first() == Some(&prefix)) {
            if let Some(v) = v {
                n += 1;
                key_bytes += k.len() as u64;
                value_bytes += v.len() as u64;
            }
        }
        let f = usage.family(prefix).unwrap_or_else(|| panic!("no {} family", prefix as char));
        assert_eq!((f.keys, f.key_bytes, f.value_bytes), (n, key_bytes, value_bytes), "{}", f.name);
        assert!(n > 0, "the test writes every family");
    }
    let meta: u64 =
        store.contents(&[]).unwrap().iter().filter(|(k, _)| k.first() == Some(&b'm')).map(|(k, v)| (k.len() + v.len()) as u64).sum();
    assert_eq!(usage.family(b'm').map(Family::bytes), Some(meta));
    let all: u64 = store.contents(&[]).unwrap().iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    assert_eq!(usage.logical_bytes(), all, "no other tree holds anything");
}

fn marker_format(dir: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("herald-store.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["format"].as_u64().unwrap()
}

/// Creates (or opens) the store at `path` with `options`, writes version 1 of `Task/id`, flushes
/// and closes it.
fn write_one(path: &std::path::Path, options: OpenOptions, id: &str) {
    let store = Store::open_with(path, options).unwrap();
    let mut c = Commit::new();
    c.put_version(&version(id, 1)).unwrap();
    store.apply(c).unwrap();
    store.flush().unwrap();
}

#[test]
fn an_uncompressed_format_1_store_opens_and_stays_format_1_and_new_compressed_stores_are_format_2() {
    let compressing = OpenOptions { compression: Some(crate::store::DEFAULT_COMPRESSION_LEVEL), ..OpenOptions::default() };
    // A store as every release before issue #23 wrote it: pages uncompressed, format 1.
    let old = tempfile::tempdir().unwrap();
    write_one(old.path(), OpenOptions { compression: None, ..OpenOptions::default() }, "a");
    assert_eq!(marker_format(old.path()), 1);
    assert_eq!(dir::sled_compression(old.path()).unwrap(), Some(false));
    // This build, configured to compress new stores, opens it as it is and reads it.
    let store = when_unlocked(|| Store::open_with(old.path(), compressing)).unwrap();
    assert_eq!(store.latest("Task", "a").unwrap().map(|v| v.seq), Some(1));
    drop(store);
    assert_eq!(marker_format(old.path()), 1, "an existing store keeps its format");
    assert_eq!(dir::sled_compression(old.path()).unwrap(), Some(false));

    let new = tempfile::tempdir().unwrap();
    write_one(new.path(), compressing, "b");
    assert_eq!(marker_format(new.path()), u64::from(dir::FORMAT));
    assert_eq!(dir::sled_compression(new.path()).unwrap(), Some(true));
    // Configured not to compress, this build still opens a compressed store as it is.
    let store = when_unlocked(|| Store::open_with(new.path(), OpenOptions { compression: None, ..OpenOptions::default() })).unwrap();
    assert_eq!(store.latest("Task", "b").unwrap().map(|v| v.seq), Some(1));
}

#[test]
fn stores_are_created_uncompressed_format_1_unless_compression_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    write_one(dir.path(), OpenOptions::default(), "c");
    assert_eq!(marker_format(dir.path()), 1);
    assert_eq!(dir::sled_compression(dir.path()).unwrap(), Some(false));
}
