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

fn count(store: &Store, code: &str, probe: &Probe) -> usize {
    ids(store, code, probe).len()
}

fn coded_task(id: &str, seq: u64) -> VersionRecord {
    let mut rec = task(id, seq, "Organization/lab-1", "requested", "2026-01-05");
    if let Some(r) = rec.resource.as_mut() {
        r["code"] = json!({ "coding": [{ "system": "http://example.org/work", "code": "draw" }] });
        r["requester"] = json!({ "reference": "Practitioner/pr-1/_history/2" });
    }
    rec
}

fn write(store: &Store, recs: &[&VersionRecord]) {
    let mut c = Commit::new();
    for rec in recs {
        c.put_version(rec).unwrap();
        c.index_version(store, rec, BASE).unwrap();
    }
    store.apply(c).unwrap();
}

#[test]
fn compact_keys_answer_every_r5_key_form_of_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_indexed(dir.path(), IndexSet::default(), BASE).unwrap();
    write(&store, &[&coded_task("a", 1)]);
    // One key per coding and per reference; every query form still finds the resource.
    for probe in ["draw", "http://example.org/work|draw"] {
        assert_eq!(ids(&store, "code", &Probe::Equal(probe.into())), vec!["a"], "{probe}");
    }
    assert_eq!(ids(&store, "status", &Probe::Equal("|requested".into())), vec!["a"]);
    for probe in ["Practitioner/pr-1", "pr-1", "Practitioner/pr-1/_history/2"] {
        assert_eq!(ids(&store, "requester", &Probe::Equal(probe.into())), vec!["a"], "{probe}");
        assert!(store.index_contains("Task", "requester", probe, "a").unwrap());
    }
    // A system-only token has no compact key: not answered by entries, but still scanned.
    let system_only = Probe::Equal("http://example.org/work|".into());
    assert!(!store.index_answers("Task", "code", &system_only));
    assert_eq!(ids(&store, "code", &system_only), vec!["a"]);
    assert_eq!(count(&store, "code", &Probe::Equal("http://other|".into())), 0);
    // Task gets status 1, owner 1, requester 1, code 1, authored-on 2, one key each.
    let list = store.tree.get(keys::index_entries("Task", "a")).unwrap().unwrap();
    assert_eq!(decode_entries(b"x", &list).unwrap().len(), 6);
}

#[test]
fn unindexed_parameters_are_answered_by_scanning_the_type() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_indexed(dir.path(), IndexSet::from_spec(&["Task.owner"]).unwrap(), BASE).unwrap();
    write(&store, &[&coded_task("a", 1), &task("b", 1, "Organization/lab-2", "completed", "2026-03-01")]);
    assert!(store.index_answers("Task", "owner", &Probe::Equal("Organization/lab-2".into())));
    assert!(!store.index_answers("Task", "status", &Probe::Equal("completed".into())));
    assert_eq!(ids(&store, "status", &Probe::Equal("completed".into())), vec!["b"]);
    assert_eq!(ids(&store, "intent", &Probe::Equal("order".into())), vec!["a", "b"]);
    let jan = crate::fhir::search::date::parse_range("2026-01").unwrap();
    assert_eq!(ids(&store, "authored-on", &Probe::Start { lo: jan.start, hi: jan.end }), vec!["a"]);
    assert!(store.index_contains("Task", "status", "anything", "a").unwrap(), "unanswered: the caller checks");
    assert!(store.tree.scan_prefix(keys::index_param_prefix("Task", "status")).next().is_none());
    assert!(store.check_index(BASE).unwrap().is_consistent());
}

#[test]
fn an_index_built_under_another_set_is_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, rebuilt) = Store::open_indexed(dir.path(), IndexSet::none(), BASE).unwrap();
        assert!(rebuilt.is_none(), "a new store has nothing to rebuild");
        write(&store, &[&coded_task("a", 1)]);
        assert!(store.tree.scan_prefix(keys::index_all_prefix()).next().is_none());
        store.flush().unwrap();
    }
    {
        // Plain open uses the recorded set: the check agrees with what is stored.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.index_set(), &IndexSet::none());
        assert!(store.check_index(BASE).unwrap().is_consistent());
    }
    {
        let (store, rebuilt) = Store::open_indexed(dir.path(), IndexSet::All, BASE).unwrap();
        let check = rebuilt.expect("set changed: rebuilt");
        assert!(check.is_consistent() && check.expected > 6, "{check:?}");
        assert_eq!(ids(&store, "intent", &Probe::Equal("order".into())), vec!["a"]);
        // A crash in the middle of a rebuild leaves `rebuilding` recorded: rebuilt again.
        store.tree.insert(keys::meta("index-set"), "rebuilding").unwrap();
        store.tree.remove(keys::index_entries("Task", "a")).unwrap();
        store.flush().unwrap();
    }
    {
        let (_store, rebuilt) = Store::open_indexed(dir.path(), IndexSet::All, BASE).unwrap();
        assert!(rebuilt.expect("interrupted rebuild redone").is_consistent());
    }
    {
        let (store, rebuilt) = Store::open_indexed(dir.path(), IndexSet::All, BASE).unwrap();
        assert!(rebuilt.is_none(), "same set: nothing to do");
        assert!(store.check_index(BASE).unwrap().is_consistent());
    }
    let (store, rebuilt) = Store::open_indexed(dir.path(), IndexSet::default(), BASE).unwrap();
    assert!(rebuilt.is_some());
    assert!(store.tree.scan_prefix(keys::index_param_prefix("Task", "intent")).next().is_none());
    assert_eq!(ids(&store, "owner", &Probe::Equal("Organization/lab-1".into())), vec!["a"]);
}

#[test]
fn a_rebuild_reports_progress_per_step_and_can_be_interrupted() {
    use std::ops::ControlFlow;
    let dir = tempfile::tempdir().unwrap();
    let resources = 2 * PROGRESS_EVERY + 500;
    {
        let (store, _) = Store::open_indexed(dir.path(), IndexSet::none(), BASE).unwrap();
        for chunk in (0..resources).collect::<Vec<_>>().chunks(500) {
            let recs: Vec<VersionRecord> =
                chunk.iter().map(|i| task(&format!("t{i}"), 1, "Organization/lab-1", "requested", "2026-01-05")).collect();
            write(&store, &recs.iter().collect::<Vec<_>>());
        }
        store.flush().unwrap();
    }
    // Interrupted while writing entries: the set stays `rebuilding`, so the next open rebuilds.
    let mut seen = Vec::new();
    let mut stop_at_first_write_report = |p: RebuildProgress| {
        seen.push(p);
        if p.step == RebuildStep::Writing && p.done > 0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let interrupted =
        crate::store::when_unlocked(|| Store::open_indexed_with(dir.path(), IndexSet::All, BASE, Some(&mut stop_at_first_write_report)));
    assert!(matches!(interrupted, Err(StoreError::Interrupted)), "{:?}", interrupted.err());
    assert_eq!(seen.first().map(|p| p.step), Some(RebuildStep::Clearing));
    assert_eq!(seen.last(), Some(&RebuildProgress { step: RebuildStep::Writing, done: PROGRESS_EVERY, total: resources }));
    let mut seen = Vec::new();
    let mut record = |p: RebuildProgress| {
        seen.push(p);
        ControlFlow::Continue(())
    };
    let (store, rebuilt) =
        crate::store::when_unlocked(|| Store::open_indexed_with(dir.path(), IndexSet::All, BASE, Some(&mut record))).unwrap();
    assert!(rebuilt.expect("interrupted rebuild redone").is_consistent());
    assert!(store.check_index(BASE).unwrap().is_consistent());
    // Each step starts at 0, counts up by PROGRESS_EVERY and ends at the total.
    for step in [RebuildStep::Writing, RebuildStep::Checking] {
        let done: Vec<usize> = seen.iter().filter(|p| p.step == step).map(|p| p.done).collect();
        assert_eq!(done, vec![0, PROGRESS_EVERY, 2 * PROGRESS_EVERY, resources], "{step:?}");
        assert!(seen.iter().filter(|p| p.step == step).all(|p| p.total == resources));
    }
    let steps: Vec<RebuildStep> = seen.iter().map(|p| p.step).collect();
    assert!(steps.windows(2).all(|w| w[0] as u8 <= w[1] as u8), "steps run in order: {steps:?}");
}

#[test]
fn index_sets_parse_and_name_bad_entries() {
    assert_eq!(IndexSet::from_spec(&["all"]).unwrap(), IndexSet::All);
    assert_eq!(IndexSet::from_spec(&["none"]).unwrap(), IndexSet::none());
    let set = IndexSet::from_spec(&["default", "Task.intent", "Device.*"]).unwrap();
    assert!(set.covers("Task", "intent") && set.covers("Task", "owner") && set.covers("Device", "udi-di"));
    assert!(!set.covers("Task", "priority"));
    let default = IndexSet::default();
    assert_eq!(IndexSet::from_fingerprint(&default.fingerprint()), Some(default), "every default entry is a real parameter");
    assert_eq!(IndexSet::from_fingerprint(&set.fingerprint()), Some(set));
    assert_eq!(IndexSet::from_fingerprint(&IndexSet::All.fingerprint()), Some(IndexSet::All));
    assert_eq!(IndexSet::from_fingerprint("herald-index/1 all"), None);
    for bad in ["Task.nope", "Nope.x", "owner", "Task.priority-x"] {
        assert!(IndexSet::from_spec(&[bad]).unwrap_err().contains(bad), "{bad}");
    }
}

#[test]
fn a_subscriptions_secrets_get_no_index_entry_and_no_scan_finds_them() {
    const SECRET: &str = "Bearer idx-secret-58";
    // An operator's parameter on the header values: the way a count could test a guess.
    let params = crate::fhir::search::SearchParams::r5().unwrap();
    let header_value = json!({ "resourceType": "SearchParameter", "url": "http://herald.test/sp/subscription-header-value",
        "code": "header-value", "base": ["Subscription"], "type": "token", "expression": "Subscription.parameter.value" });
    params.register_custom(crate::fhir::search::custom::custom_param(&header_value, params).unwrap());
    let sub = VersionRecord {
        v: records::FORMAT,
        resource_type: "Subscription".into(),
        id: "s1".into(),
        seq: 1,
        version_id: "1".into(),
        last_updated: 1,
        method: "PUT".into(),
        deleted: false,
        resource: Some(json!({ "resourceType": "Subscription", "id": "s1", "status": "active", "topic": "http://t",
            "channelType": { "code": "rest-hook" }, "endpoint": "https://rx.example/hook",
            "parameter": [{ "name": "Authorization", "value": SECRET }] })),
        full_url: None,
    };
    let every = extract::entries(&IndexSet::All, "Subscription", sub.resource.as_ref().unwrap(), BASE);
    assert!(!every.is_empty(), "status, topic, url... are indexed");
    assert!(every.iter().all(|e| !String::from_utf8_lossy(&e.suffix()).contains("idx-secret")), "{every:?}");

    let dir = tempfile::tempdir().unwrap();
    // Custom parameters get no entries: a lookup reads the resources (`scan_unindexed`).
    let (store, _) = Store::open_indexed(dir.path(), IndexSet::default(), BASE).unwrap();
    write(&store, &[&sub]);
    assert!(!store.index_answers("Subscription", "header-value", &Probe::Equal(SECRET.into())));
    let found = |value: &str| {
        let mut out = Vec::new();
        store
            .index_scan("Subscription", "header-value", &Probe::Equal(value.into()), |id| {
                out.push(id.to_owned());
                true
            })
            .unwrap();
        out
    };
    assert!(found(SECRET).is_empty(), "the secret value is never counted");
    assert_eq!(found(crate::fhir::subscription::secrets::REDACTED), ["s1"], "the parameter itself works");
    assert!(store.check_index(BASE).unwrap().is_consistent());
    params.unregister_custom("http://herald.test/sp/subscription-header-value");
}

#[test]
fn each_version_has_its_own_default_index_set_and_reads_it_back() {
    use crate::fhir::FhirVersion;
    for version in FhirVersion::ALL {
        let default = IndexSet::default_for(version);
        // The recorded fingerprint reads back to the same set in that version.
        let fingerprint = default.fingerprint();
        let items: Vec<&str> = fingerprint.split_once(' ').map(|(_, rest)| rest.split(',').collect()).unwrap_or_default();
        assert_eq!(IndexSet::from_spec_for(version, &items).as_ref(), Ok(&default), "{version}");
        assert!(default.covers("Task", "owner") && default.covers("Task", "output"), "{version}");
        assert_eq!(default.covers("SubscriptionTopic", "url"), version != FhirVersion::R4, "{version}");
        assert_eq!(default.covers("Basic", "code"), version.is_backport(), "{version}");
        assert_eq!(default.covers("ServiceRequest", "code-concept"), version == FhirVersion::R5, "{version}");
        assert_eq!(default.covers("ServiceRequest", "code"), version.is_backport(), "{version}");
    }
    // A parameter only R4 has is an error for R5 and fine for R4 (configuration is checked
    // before the instance's version is selected).
    assert!(IndexSet::from_spec_for(FhirVersion::R5, &["DeviceUseStatement.subject"]).is_err());
    assert!(IndexSet::from_spec_for(FhirVersion::R4, &["DeviceUseStatement.subject"]).is_ok());
}

#[test]
fn an_equality_walk_merges_values_in_id_order_from_a_position_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    for (id, status) in
        [("a", "requested"), ("b", "accepted"), ("c", "completed"), ("d", "requested"), ("e", "accepted"), ("f", "requested")]
    {
        let t = task(id, 1, "Organization/lab-1", status, "2026-01-05");
        c.put_version(&t).unwrap();
        c.index_version(&store, &t, BASE).unwrap();
    }
    store.apply(c).unwrap();
    let probes = [Probe::Equal("requested".into()), Probe::Equal("accepted".into()), Probe::Equal("requested".into())];
    let walk = |after: Option<&str>, back: bool| {
        let mut out = Vec::new();
        let walked = store
            .index_walk("Task", "status", &probes, Position { after, back }, |id| {
                out.push(id.to_owned());
                true
            })
            .unwrap();
        assert!(walked);
        out
    };
    assert_eq!(walk(None, false), ["a", "b", "d", "e", "f"], "each id once, a repeated value too");
    assert_eq!(walk(Some("b"), false), ["d", "e", "f"]);
    assert_eq!(walk(Some("e"), true), ["d", "b", "a"]);
    assert_eq!(walk(None, true), ["f", "e", "d", "b", "a"]);
    let mut current = Vec::new();
    store
        .current_walk("Task", Position { after: Some("c"), back: false }, |id| {
            current.push(id.to_owned());
            current.len() < 2
        })
        .unwrap();
    assert_eq!(current, ["d", "e"], "stops when told");
    // A date range is ordered by date first: not walked in id order.
    let jan = crate::fhir::search::date::parse_range("2026-01").unwrap();
    let range = [Probe::Start { lo: jan.start, hi: jan.end }];
    assert!(!store.index_walk("Task", "authored-on", &range, Position { after: None, back: false }, |_| true).unwrap());
}
