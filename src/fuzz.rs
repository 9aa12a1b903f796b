//! Property tests over every parser client input reaches, beyond FHIRPath (which has its own,
//! `fhir::fhirpath::fuzz`): search strings, backport filter criteria, Subscription and
//! SubscriptionTopic JSON, websocket client frames, SMART scopes and configuration overrides.
//! Whatever the input, parsing ends in a value or an error; nothing panics or hangs.
//!
//! Generators mix raw strings with soups of each grammar's own tokens, which reach further
//! than random bytes. `PROPTEST_CASES` sets the number of cases: CI runs the default (256 per
//! property); a long run is `PROPTEST_CASES=100000 cargo test --release --lib fuzz::`.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::fhir::search::query::{parse_filter_criteria, Query};
use crate::fhir::search::SearchParams;
use crate::fhir::subscription::{parse_subscription_as, SubscriptionLimits};
use crate::fhir::topic::parse_topic;
use crate::fhir::version::FhirVersion;

const SEARCH_TOKENS: &[&str] = &[
    "status",
    "owner",
    "code",
    "subject",
    "date",
    "_id",
    "_has",
    ":",
    "Task",
    "Patient",
    "=",
    "&",
    ",",
    "|",
    "$",
    "\\",
    "?",
    ".",
    "eq",
    "ne",
    "gt",
    "lt",
    "ge",
    "le",
    "sa",
    "eb",
    "ap",
    "2026",
    "-01",
    "-05T10:00:00Z",
    ":not",
    ":missing",
    ":exact",
    ":contains",
    ":text",
    ":in",
    ":below",
    ":above",
    ":of-type",
    ":identifier",
    ":Patient",
    "owner:Organization.name",
    "_has:Task:focus:status",
    "http://loinc.org",
    "1234-5",
    "%20",
    "%",
    "requested",
    "true",
    "1e400",
    "-",
    "_sort",
    "_count",
    "_include",
    "Task:focus",
    ":iterate",
    "_elements",
    "_total",
    "accurate",
    "",
];

fn soup(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(tokens), 0..max).prop_map(|parts| parts.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9:/|.$%-]{0,12}".prop_map(Value::String),
        prop::sample::select(
            &[
                "rest-hook",
                "websocket",
                "full-resource",
                "id-only",
                "empty",
                "requested",
                "active",
                "Task",
                "owner",
                "eq",
                "not",
                "application/fhir+json",
                "Authorization: Bearer x",
                "Task?owner=Organization/1",
                crate::fhir::subscription::backport::FILTER_CRITERIA_URL,
                crate::fhir::subscription::backport::PAYLOAD_CONTENT_URL,
                crate::fhir::subscription::backport::HEARTBEAT_PERIOD_URL,
                crate::fhir::subscription::backport::MAX_COUNT_URL,
            ][..]
        )
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(
                    &[
                        "topic",
                        "status",
                        "channelType",
                        "code",
                        "endpoint",
                        "content",
                        "filterBy",
                        "filterParameter",
                        "value",
                        "comparator",
                        "modifier",
                        "parameter",
                        "name",
                        "heartbeatPeriod",
                        "timeout",
                        "maxCount",
                        "end",
                        "url",
                        "resourceTrigger",
                        "resource",
                        "supportedInteraction",
                        "queryCriteria",
                        "current",
                        "previous",
                        "fhirPathCriteria",
                        "canFilterBy",
                        "notificationShape",
                        "include",
                        "revInclude",
                        "eventTrigger",
                        "event",
                        "coding",
                        "system",
                        "extension",
                        "criteria",
                        "_criteria",
                        "reason",
                        "channel",
                        "type",
                        "_type",
                        "payload",
                        "_payload",
                        "header",
                        "valueString",
                        "valueCode",
                        "valueUnsignedInt",
                        "valuePositiveInt",
                    ][..]
                ),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #[test]
    fn search_strings_parse_or_fail_cleanly(text in prop_oneof![any::<String>(), soup(SEARCH_TOKENS, 24)]) {
        let params = SearchParams::r5().expect("official parameters load");
        let _ = Query::parse("Task", &text, params);
        let _ = Query::parse("Patient", &text, params);
        let _ = parse_filter_criteria(&text);
        let _ = crate::fhir::subscription::backport::parse_filter_criteria(&text, crate::fhir::subscription::FilterSource::Criteria(0));
    }

    #[test]
    fn subscriptions_and_topics_parse_or_fail_cleanly(body in json_value()) {
        let limits = SubscriptionLimits { max_timeout_secs: 120, max_heartbeat_secs: 86_400, max_count: 1000 , default_max_count: 1};
        let mut sub = body.clone();
        if let Some(o) = sub.as_object_mut() {
            o.insert("resourceType".into(), json!("Subscription"));
        }
        for version in FhirVersion::ALL {
            let _ = parse_subscription_as(version, "s", &sub, &limits, 0);
        }
        let mut topic = body;
        if let Some(o) = topic.as_object_mut() {
            o.insert("resourceType".into(), json!("SubscriptionTopic"));
        }
        let _ = parse_topic("t", &topic);
    }

    #[test]
    fn websocket_frames_parse_or_fail_cleanly(text in prop_oneof![
        any::<String>(),
        soup(&["bind-with-token", "unbind-from-token", ":", " ", "{", "}", "\"type\"", "\"payload\"", "\"token\"", "\"eventsSinceNumber\"", ",", "\"ping\"", "\"bind-with-token\"", "abc", "-1", "99999999999999999999"], 16),
    ]) {
        let _ = crate::channels::websocket::protocol::parse(&text);
    }

    #[test]
    fn scopes_parse_or_fail_cleanly(text in prop_oneof![any::<String>(), soup(&["system/", "user/", "patient/", "*", "Task", "Observation", ".", "c", "r", "u", "d", "s", "read", "write", "?x=y", " ", "openid"], 12)]) {
        let _ = crate::auth::Scopes::parse(&text);
    }

    #[test]
    fn configuration_overrides_load_or_fail_cleanly(key in prop::sample::select(&["HERALD_DELIVERY__MAX_ATTEMPTS", "HERALD_SEARCH__INDEX", "HERALD_SERVER__LISTEN", "HERALD_WEBSOCKET__URL", "HERALD_SUBSCRIPTIONS__EVENTS_MAX_AGE", "HERALD_AUTH__API_KEYS", "HERALD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "HERALD_X__Y"][..]), value in any::<String>()) {
        let _ = crate::config::Config::load(None, vec![(key.to_owned(), value)], &crate::config::Overrides::default());
    }
}
