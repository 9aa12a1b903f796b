//! The shipped topics of every version: identity, installation in the version's form, and
//! (in `check`) every element and search parameter they name against the version's official
//! definitions.

use super::*;
use crate::fhir::topic::stored::to_r5;

/// `version`'s built-ins in the R5 shape.
fn r5_of(version: FhirVersion) -> Vec<(String, Value)> {
    shipped_for(version)
        .into_iter()
        .map(|b| {
            let r5 = to_r5(version, topic_type(version), &b.resource).expect("a topic").expect("converts back");
            (b.id, r5)
        })
        .collect()
}

/// `install_for`, with its commits applied; the ids written.
fn installed(v: FhirVersion, store: &Store, now: i64) -> Vec<String> {
    let mut ids = Vec::new();
    for (id, commit) in install_for(v, store, "http://h/fhir", now).unwrap() {
        store.apply(commit).unwrap();
        ids.push(id);
    }
    ids
}

#[test]
fn every_shipped_topic_of_every_version_parses_with_its_reserved_id_and_url() {
    for version in FhirVersion::ALL {
        assert_eq!(shipped_for(version).len(), definitions(version).len(), "{version}: a shipped topic failed to parse; see the log");
        for (id, topic) in r5_of(version) {
            let url = topic["url"].as_str().unwrap_or_default();
            let name = url.strip_prefix(URL_PREFIX).unwrap_or_default();
            assert!(!name.is_empty(), "{url} is outside {URL_PREFIX}");
            assert_eq!(id, format!("{ID_PREFIX}{name}"), "id and url name must agree");
            assert!(topic["version"].is_string() && topic["description"].is_string() && topic["title"].is_string());
            assert_eq!(topic["status"], "active");
            for t in topic["resourceTrigger"].as_array().into_iter().flatten() {
                assert!(t["description"].is_string(), "{url}: every trigger says when it fires");
            }
            parse_topic(&id, &topic).unwrap();
        }
    }
}

/// Ids and urls are the same in every version. `version` is each definition's own: the R4/R4B
/// set and the R5 set are bumped separately, when that set's definition changes, so that an
/// instance never stores a new topic version whose definition did not change.
#[test]
fn every_version_ships_the_same_topics_under_the_same_ids_and_urls() {
    let identity = |version| -> Vec<(String, Value)> {
        let mut all: Vec<_> = r5_of(version).into_iter().map(|(id, t)| (id, t["url"].clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    let r5 = identity(FhirVersion::R5);
    assert_eq!(identity(FhirVersion::R4), r5);
    assert_eq!(identity(FhirVersion::R4B), r5);
    for version in FhirVersion::ALL {
        for (id, topic) in r5_of(version) {
            let semver = topic["version"].as_str().unwrap_or_default().split('.').map(|n| n.parse::<u32>().is_ok()).collect::<Vec<_>>();
            assert_eq!(semver, [true; 3], "{version} {id}: version {} is not major.minor.patch", topic["version"]);
        }
    }
    for b in shipped_for(FhirVersion::R4) {
        assert_eq!(b.resource["resourceType"], "Basic", "R4 stores topics as Basic");
    }
    for b in shipped_for(FhirVersion::R4B) {
        assert_eq!(b.resource["resourceType"], "SubscriptionTopic");
        assert!(b.resource.get("name").is_none(), "R4B has no SubscriptionTopic.name; it travels as an extension");
    }
}

#[test]
fn install_writes_once_then_only_when_the_shipped_definition_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = FhirVersion::R5;
    let all = shipped_for(v).len();
    assert_eq!(installed(v, &store, 1).len(), all);
    assert!(installed(v, &store, 2).is_empty(), "an unchanged definition is not rewritten");

    // An older release's definition is stored: the next start writes version 3 of the
    // same id, and nothing else.
    let id = "herald-task-assigned";
    let mut old = store.latest("SubscriptionTopic", id).unwrap().unwrap();
    old.seq = 2;
    old.version_id = "2".into();
    if let Some(r) = old.resource.as_mut() {
        r["version"] = json!("0.9.0");
    }
    let mut commit = Commit::new();
    commit.put_version(&old).unwrap();
    store.apply(commit).unwrap();
    assert_eq!(installed(v, &store, 3), vec![id.to_string()]);
    let now = store.latest("SubscriptionTopic", id).unwrap().unwrap();
    assert_eq!((now.seq, now.resource.unwrap()["version"].as_str()), (3, Some("1.0.0")));
    assert_eq!(store.history("SubscriptionTopic", id, 10).unwrap().len(), 3);

    // A built-in this release no longer ships is retired once, not deleted.
    let mut gone = store.latest("SubscriptionTopic", id).unwrap().unwrap();
    gone.id = "herald-dropped-topic".into();
    gone.seq = 1;
    gone.version_id = "1".into();
    let mut commit = Commit::new();
    commit.put_version(&gone).unwrap();
    store.apply(commit).unwrap();
    assert_eq!(installed(v, &store, 4), vec!["herald-dropped-topic".to_string()]);
    let retired = store.latest("SubscriptionTopic", "herald-dropped-topic").unwrap().unwrap();
    assert_eq!((retired.seq, retired.resource.unwrap()["status"].as_str()), (2, Some("retired")));
    assert!(installed(v, &store, 5).is_empty(), "retired once");
}

#[test]
fn r4_installs_basic_topics_and_retires_one_no_longer_shipped_through_its_modifier_extension() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = FhirVersion::R4;
    assert_eq!(installed(v, &store, 1).len(), shipped_for(v).len());
    assert!(installed(v, &store, 2).is_empty());
    assert!(store.latest("SubscriptionTopic", "herald-task-assigned").unwrap().is_none(), "nothing under the R5 type");
    let stored = store.latest("Basic", "herald-task-assigned").unwrap().unwrap();
    assert!(stored::is_topic(v, "Basic", stored.resource.as_ref().unwrap()));

    let mut gone = stored.clone();
    gone.id = "herald-dropped-topic".into();
    let mut commit = Commit::new();
    commit.put_version(&gone).unwrap();
    store.apply(commit).unwrap();
    assert_eq!(installed(v, &store, 3), vec!["herald-dropped-topic".to_string()]);
    let retired = store.latest("Basic", "herald-dropped-topic").unwrap().unwrap().resource.unwrap();
    let r5 = to_r5(v, "Basic", &retired).unwrap().unwrap();
    assert_eq!(r5["status"], "retired");
    assert!(installed(v, &store, 4).is_empty(), "retired once");
}
