//! Backport Subscription parsing: the IG's examples, every element's rules, and each refusal the
//! conformance kit's rejection group (6) and Herald's own rules ask for.

use serde_json::{json, Value};

use super::*;
use crate::fhir::subscription::{fields, parse_subscription_as, ContentLevel, FilterSource};

fn limits() -> SubscriptionLimits {
    SubscriptionLimits { max_timeout_secs: 120, max_heartbeat_secs: 86_400, max_count: 100, default_max_count: 1 }
}

/// The IG's admission example (`Subscription-subscription-admission.json`), endpoint kept.
fn admission() -> Value {
    json!({
        "resourceType": "Subscription",
        "meta": { "profile": [PROFILE_URL] },
        "status": "requested",
        "reason": "R4/B Example Topic-Based Subscription for Patient Admission",
        "criteria": "http://hl7.org/SubscriptionTopic/admission",
        "_criteria": { "extension": [{ "url": FILTER_CRITERIA_URL, "valueString": "Encounter?patient=Patient/123" }] },
        "channel": {
            "extension": [
                { "url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": 86400 },
                { "url": TIMEOUT_URL, "valueUnsignedInt": 60 },
                { "url": MAX_COUNT_URL, "valuePositiveInt": 20 }
            ],
            "type": "rest-hook",
            "endpoint": "https://example.org/Endpoints/d7dcc004-808d-452b-8030-3a3a13cd871d",
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": PAYLOAD_CONTENT_URL, "valueCode": "id-only" }] },
            "header": ["Authorization: Bearer secret-token-1"]
        },
        "end": "2020-12-31T12:00:00Z"
    })
}

fn parse_r4(sub: &Value) -> Result<SubscriptionSpec, Vec<Issue>> {
    parse(FhirVersion::R4, "s", sub, &limits(), 0)
}

/// The issues of a refused `sub`, as (path, code) pairs.
fn refused(sub: &Value) -> Vec<(String, IssueType)> {
    match parse_r4(sub) {
        Ok(spec) => panic!("accepted: {spec:?}\n{sub}"),
        Err(issues) => issues.iter().map(|i| (i.expression.clone().unwrap_or_default(), i.code)).collect(),
    }
}

fn assert_refused_at(sub: &Value, path: &str, code: IssueType) {
    let issues = refused(sub);
    assert!(issues.iter().any(|(p, c)| p == path && *c == code), "want {path} ({code:?}); got {issues:?}");
}

/// An IG example from ../shared; `None` (with a note) when the data set is absent, which fails
/// under CI.
fn shared_example(name: &str) -> Option<Value> {
    crate::testdata::fhir_json(&format!("backport/examples/{name}"))
}

#[test]
fn the_igs_examples_parse_and_the_custom_channel_one_is_refused() {
    for name in ["Subscription-subscription-admission.json", "Subscription-subscription-multi-resource.json"] {
        let Some(sub) = shared_example(name) else { return };
        let spec = parse_r4(&sub).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(spec.topic, "http://hl7.org/SubscriptionTopic/admission");
        assert_eq!(spec.requested_status, RequestedStatus::Active);
        assert_eq!((spec.heartbeat_period_secs, spec.timeout_secs, spec.max_count), (Some(86400), Some(60), 20));
        assert_eq!(spec.content, ContentLevel::IdOnly);
        assert_eq!(spec.filters.len(), 1);
        assert_eq!(spec.filters[0].value, "Patient/123");
    }
    let Some(zulip) = shared_example("Subscription-subscription-zulip.json") else { return };
    assert_refused_at(&zulip, "Subscription.channel.type.extension[0]", IssueType::NotSupported);
}

#[test]
fn every_element_lands_in_the_spec() {
    let spec = parse_r4(&admission()).unwrap();
    assert_eq!(spec.version, FhirVersion::R4);
    assert_eq!(spec.topic_url(), "http://hl7.org/SubscriptionTopic/admission");
    assert_eq!(spec.topic_path(), "Subscription.criteria");
    assert_eq!(spec.requested_status, RequestedStatus::Requested);
    assert_eq!(spec.channel, ChannelType::RestHook);
    assert_eq!(spec.endpoint.as_ref().map(url::Url::as_str), Some("https://example.org/Endpoints/d7dcc004-808d-452b-8030-3a3a13cd871d"));
    assert_eq!(spec.headers.len(), 1);
    assert_eq!(spec.headers[0].name, "Authorization");
    assert_eq!(spec.headers[0].value.expose(), "Bearer secret-token-1");
    assert_eq!(spec.content_type, "application/fhir+json");
    assert_eq!(spec.content, ContentLevel::IdOnly);
    assert_eq!((spec.heartbeat_period_secs, spec.timeout_secs, spec.max_count), (Some(86400), Some(60), 20));
    assert!(spec.end.is_some());
    assert!(spec.identifier.is_none());
    let f = &spec.filters[0];
    assert_eq!(
        (f.resource_type.as_deref(), f.parameter.as_str(), f.modifier.as_deref(), f.value.as_str()),
        (Some("Encounter"), "patient", None, "Patient/123")
    );
    assert_eq!(f.source, FilterSource::Criteria(0));
    assert_eq!(f.source.path("filterParameter"), "Subscription.criteria.extension[0].valueString");
    assert!(!format!("{spec:?}").contains("secret-token-1"), "header values are secret in debug output");
}

#[test]
fn the_parser_is_chosen_by_version_and_each_refuses_the_other_shape() {
    let r4 = admission();
    let r5 = json!({ "resourceType": "Subscription", "status": "requested", "topic": "http://t",
        "channelType": { "code": "rest-hook" }, "endpoint": "https://rx.example/hook" });
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        assert_eq!(parse_subscription_as(version, "s", &r4, &limits(), 0).unwrap().version, version);
        let issues = parse_subscription_as(version, "s", &r5, &limits(), 0).unwrap_err();
        assert!(issues.iter().any(|i| i.expression.as_deref() == Some("Subscription.topic")), "{issues:?}");
    }
    assert_eq!(parse_subscription_as(FhirVersion::R5, "s", &r5, &limits(), 0).unwrap().version, FhirVersion::R5);
    assert!(parse_subscription_as(FhirVersion::R5, "s", &r4, &limits(), 0).is_err());
}

#[test]
fn filter_criteria_follow_the_igs_search_syntax() {
    let parsed = |text: &str| parse_filter_criteria(text, FilterSource::Criteria(0));
    let two = parsed("Encounter?patient=Patient/123&status:not=finished").unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!((two[1].parameter.as_str(), two[1].modifier.as_deref(), two[1].value.as_str()), ("status", Some("not"), "finished"));
    assert!(two.iter().all(|f| f.resource_type.as_deref() == Some("Encounter") && f.comparator.is_none()));
    let bare = parsed("patient=Patient/1,Patient/2").unwrap();
    assert_eq!((bare[0].resource_type.as_deref(), bare[0].value.as_str()), (None, "Patient/1,Patient/2"));
    let dated = parsed("Observation?date=ge2024-01-01T00:00:00+01:00&code=http%3A%2F%2Floinc.org%7C1234-5").unwrap();
    assert_eq!(dated[0].value, "ge2024-01-01T00:00:00+01:00", "a plus stays a plus; the prefix stays in the value");
    assert_eq!(dated[1].value, "http://loinc.org|1234-5");
    // The conformance kit's presets write the earlier ballots' form.
    let dotted = parsed("Encounter.patient=Patient/123").unwrap();
    assert_eq!((dotted[0].resource_type.as_deref(), dotted[0].parameter.as_str()), (Some("Encounter"), "patient"));
    for bad in [
        "",
        "Encounter?",
        "Encounter?patient",
        "Encounter?patient=",
        "Nope?patient=x",
        "Encounter?:not=x",
        "Encounter?status:=x",
        "subject.name=x",
    ] {
        assert!(parsed(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn several_extensions_and_filters_are_anded_and_each_is_reported_at_its_extension() {
    let mut sub = admission();
    sub["_criteria"]["extension"] = json!([
        { "url": FILTER_CRITERIA_URL, "valueString": "Encounter?patient=Patient/1" },
        { "url": FILTER_CRITERIA_URL, "valueString": "Encounter?status=in-progress&class=IMP" }
    ]);
    let spec = parse_r4(&sub).unwrap();
    let sources: Vec<_> = spec.filters.iter().map(|f| f.source).collect();
    assert_eq!(sources, [FilterSource::Criteria(0), FilterSource::Criteria(1), FilterSource::Criteria(1)]);
    sub["_criteria"]["extension"][1]["valueString"] = json!("Encounter?status");
    assert_refused_at(&sub, "Subscription.criteria.extension[1].valueString", IssueType::Value);
    sub["_criteria"]["extension"][1] = json!({ "url": FILTER_CRITERIA_URL, "valueCode": "x" });
    assert_refused_at(&sub, "Subscription.criteria.extension[1]", IssueType::Structure);
}

#[test]
fn criteria_is_a_required_absolute_topic_canonical() {
    let mut sub = admission();
    sub["criteria"] = json!("http://hl7.org/SubscriptionTopic/admission|1.1");
    assert_eq!(parse_r4(&sub).unwrap().topic_version(), Some("1.1"));
    for bad in ["Observation?code=1234-5", "admission", "", "http://x y/t"] {
        sub["criteria"] = json!(bad);
        assert_refused_at(&sub, "Subscription.criteria", IssueType::Value);
    }
    sub["criteria"] = json!(7);
    assert_refused_at(&sub, "Subscription.criteria", IssueType::Structure);
    sub.as_object_mut().unwrap().remove("criteria");
    assert_refused_at(&sub, "Subscription.criteria", IssueType::Required);
}

#[test]
fn reason_is_required_and_status_takes_the_r4_codes() {
    for code in ["requested", "active", "error", "off"] {
        let mut sub = admission();
        sub["status"] = json!(code);
        assert!(parse_r4(&sub).is_ok(), "{code}");
    }
    let mut sub = admission();
    sub["status"] = json!("entered-in-error");
    assert_refused_at(&sub, "Subscription.status", IssueType::Value);
    sub.as_object_mut().unwrap().remove("status");
    assert_refused_at(&sub, "Subscription.status", IssueType::Required);
    let mut sub = admission();
    sub["reason"] = json!("  ");
    assert_refused_at(&sub, "Subscription.reason", IssueType::Required);
    sub.as_object_mut().unwrap().remove("reason");
    assert_refused_at(&sub, "Subscription.reason", IssueType::Required);
}

#[test]
fn channel_types_are_rest_hook_and_websocket_only() {
    let mut sub = admission();
    for code in ["email", "sms", "message", "zulip"] {
        sub["channel"]["type"] = json!(code);
        assert_refused_at(&sub, "Subscription.channel.type", IssueType::NotSupported);
    }
    sub["channel"].as_object_mut().unwrap().remove("type");
    assert_refused_at(&sub, "Subscription.channel.type", IssueType::Required);
    sub.as_object_mut().unwrap().remove("channel");
    assert_refused_at(&sub, "Subscription.channel", IssueType::Required);

    let mut ws = admission();
    ws["channel"]["type"] = json!("websocket");
    ws["channel"]["endpoint"] = json!("not even a url");
    let spec = parse_r4(&ws).unwrap();
    assert_eq!((spec.channel, spec.endpoint), (ChannelType::Websocket, None), "a websocket endpoint is ignored, as in R5");
    ws["channel"]["_type"] = json!({ "extension": [{ "url": CHANNEL_TYPE_URL, "valueCoding": { "code": "zulip" } }] });
    assert_refused_at(&ws, "Subscription.channel.type.extension[0]", IssueType::NotSupported);
}

#[test]
fn a_rest_hook_needs_an_http_endpoint_without_credentials() {
    let mut sub = admission();
    sub["channel"]["endpoint"] = json!("http://rx.example/hook");
    assert!(parse_r4(&sub).is_ok());
    for bad in ["ftp://rx.example/hook", "https://user:pw@rx.example/hook", "/relative", "mailto:a@b.example"] {
        sub["channel"]["endpoint"] = json!(bad);
        assert_refused_at(&sub, "Subscription.channel.endpoint", IssueType::Value);
    }
    sub["channel"].as_object_mut().unwrap().remove("endpoint");
    assert_refused_at(&sub, "Subscription.channel.endpoint", IssueType::Required);
}

#[test]
fn payload_mime_types_are_fhir_json_or_json_in_the_instance_version() {
    let mut sub = admission();
    for ok in ["application/fhir+json", "application/json", "application/fhir+json; charset=utf-8", "application/fhir+json;fhirVersion=4.0"]
    {
        sub["channel"]["payload"] = json!(ok);
        assert_eq!(parse_r4(&sub).unwrap().content_type, ok);
    }
    for bad in ["application/fhir+xml", "application/unsupported+payload", "text/plain", "application/fhir+json;fhirVersion=5.0"] {
        sub["channel"]["payload"] = json!(bad);
        assert_refused_at(&sub, "Subscription.channel.payload", IssueType::NotSupported);
    }
    sub["channel"]["payload"] = json!("application/fhir+json;fhirVersion=4.3");
    assert!(parse_r4(&sub).is_err());
    assert!(parse(FhirVersion::R4B, "s", &sub, &limits(), 0).is_ok());
}

#[test]
fn content_levels_come_from_the_payload_extension() {
    for code in ["empty", "id-only", "full-resource"] {
        let mut sub = admission();
        sub["channel"]["_payload"]["extension"][0]["valueCode"] = json!(code);
        assert_eq!(parse_r4(&sub).unwrap().content.code(), code);
    }
    let mut sub = admission();
    sub["channel"]["_payload"]["extension"][0]["valueCode"] = json!("everything");
    assert_refused_at(&sub, "Subscription.channel.payload.extension[0].valueCode", IssueType::Value);
    sub["channel"]["_payload"]["extension"][0] = json!({ "url": PAYLOAD_CONTENT_URL, "valueString": "empty" });
    assert_refused_at(&sub, "Subscription.channel.payload.extension[0]", IssueType::Structure);
    sub["channel"]["_payload"]["extension"] = json!([{ "url": "http://example.org/other", "valueCode": "x" }]);
    assert_refused_at(&sub, "Subscription.channel.payload.extension[0]", IssueType::NotSupported);

    // No content extension: id-only (written back by fill_defaults). No payload: empty.
    let mut sub = admission();
    sub["channel"].as_object_mut().unwrap().remove("_payload");
    assert_eq!(parse_r4(&sub).unwrap().content, ContentLevel::IdOnly);
    sub["channel"].as_object_mut().unwrap().remove("payload");
    let spec = parse_r4(&sub).unwrap();
    assert_eq!((spec.content, spec.content_type.as_str()), (ContentLevel::Empty, "application/fhir+json"));
    // A content level without a MIME type is ambiguous.
    let mut sub = admission();
    sub["channel"].as_object_mut().unwrap().remove("payload");
    assert_refused_at(&sub, "Subscription.channel.payload", IssueType::Required);
}

#[test]
fn fill_defaults_writes_the_applied_content_level_and_nothing_else() {
    let mut sub = admission();
    sub["channel"].as_object_mut().unwrap().remove("_payload");
    let spec = parse_r4(&sub).unwrap();
    let before = sub.clone();
    crate::fhir::subscription::fill_defaults(&mut sub, &spec);
    assert_eq!(sub["channel"]["_payload"], json!({ "extension": [{ "url": PAYLOAD_CONTENT_URL, "valueCode": "id-only" }] }));
    assert_eq!(fields::content(&sub), Some(ContentLevel::IdOnly));
    sub["channel"].as_object_mut().unwrap().remove("_payload");
    assert_eq!(sub, before);

    let mut full = admission();
    let spec = parse_r4(&full).unwrap();
    let before = full.clone();
    crate::fhir::subscription::fill_defaults(&mut full, &spec);
    assert_eq!(full, before, "what the client wrote is echoed exactly");

    let mut none = admission();
    none["channel"].as_object_mut().unwrap().remove("payload");
    none["channel"].as_object_mut().unwrap().remove("_payload");
    let spec = parse_r4(&none).unwrap();
    let before = none.clone();
    crate::fhir::subscription::fill_defaults(&mut none, &spec);
    assert_eq!(none, before, "no payload stays no payload (empty)");
}

#[test]
fn headers_are_name_colon_value_strings_and_never_echoed() {
    let mut sub = admission();
    sub["channel"]["header"] = json!(["Authorization: Bearer a:b", "X-Tenant:north", "X-Empty:"]);
    let spec = parse_r4(&sub).unwrap();
    let pairs: Vec<_> = spec.headers.iter().map(|h| (h.name.as_str(), h.value.expose().as_str())).collect();
    assert_eq!(pairs, [("Authorization", "Bearer a:b"), ("X-Tenant", "north"), ("X-Empty", "")]);

    sub["channel"]["header"] = json!([
        "Bearer hunter2-secret",
        "Content-Type: text/plain",
        "X-Key: abc\r\nhunter2-secret",
        "Bad Name: hunter2-secret",
        "Bearer hunter2-secret:x",
        7
    ]);
    let issues = parse_r4(&sub).unwrap_err();
    let paths: Vec<_> = issues.iter().filter_map(|i| i.expression.as_deref()).collect();
    for i in 0..6 {
        assert!(paths.contains(&format!("Subscription.channel.header[{i}]").as_str()), "header {i}: {paths:?}");
    }
    assert!(issues.iter().all(|i| !i.diagnostics.contains("hunter2")), "a header value was echoed: {issues:?}");
    sub["channel"]["header"] = json!("Authorization: Bearer x");
    assert_refused_at(&sub, "Subscription.channel.header", IssueType::Structure);
}

#[test]
fn channel_extensions_need_their_exact_value_types_and_limits() {
    let with = |ext: Value| {
        let mut sub = admission();
        sub["channel"]["extension"] = json!([ext]);
        sub
    };
    let ok = parse_r4(&with(json!({ "url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": 30 }))).unwrap();
    assert_eq!((ok.heartbeat_period_secs, ok.timeout_secs, ok.max_count), (Some(30), None, 1));
    let at = "Subscription.channel.extension[0]";
    for wrong in [
        json!({ "url": HEARTBEAT_PERIOD_URL, "valueInteger": 30 }),
        json!({ "url": HEARTBEAT_PERIOD_URL, "valuePositiveInt": 30 }),
        json!({ "url": TIMEOUT_URL, "valueDecimal": 30 }),
        json!({ "url": TIMEOUT_URL }),
        json!({ "url": MAX_COUNT_URL, "valueUnsignedInt": 5 }),
        json!({ "url": MAX_COUNT_URL, "valueInteger": 5 }),
    ] {
        assert_refused_at(&with(wrong), at, IssueType::Structure);
    }
    for (url, key, bad) in [
        (HEARTBEAT_PERIOD_URL, "valueUnsignedInt", json!("30")),
        (HEARTBEAT_PERIOD_URL, "valueUnsignedInt", json!(-1)),
        (TIMEOUT_URL, "valueUnsignedInt", json!(1.5)),
    ] {
        assert_refused_at(&with(json!({ "url": url, key: bad })), &format!("{at}.{key}"), IssueType::Structure);
    }
    for (url, key, n) in
        [(HEARTBEAT_PERIOD_URL, "valueUnsignedInt", 0), (TIMEOUT_URL, "valueUnsignedInt", 121), (MAX_COUNT_URL, "valuePositiveInt", 101)]
    {
        assert_refused_at(&with(json!({ "url": url, key: n })), &format!("{at}.{key}"), IssueType::BusinessRule);
    }
    let mut twice = admission();
    twice["channel"]["extension"] = json!([{ "url": TIMEOUT_URL, "valueUnsignedInt": 5 }, { "url": TIMEOUT_URL, "valueUnsignedInt": 6 }]);
    assert_refused_at(&twice, "Subscription.channel.extension[1]", IssueType::Structure);
    assert_refused_at(&with(json!({ "url": "http://example.org/other", "valueString": "x" })), at, IssueType::NotSupported);
}

#[test]
fn unknown_and_cross_version_extensions_are_refused() {
    // Kit test 6.01: the whole _criteria replaced by a filter under a cross-version URL.
    let mut sub = admission();
    sub["_criteria"] = json!({ "extension": [{
        "url": "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria",
        "valueString": "Encounter.patient=Patient/123" }] });
    assert_refused_at(&sub, "Subscription.criteria.extension[0]", IssueType::NotSupported);

    let cross = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.topic";
    assert!(is_cross_version_subscription_extension(cross));
    assert!(is_cross_version_subscription_extension("http://hl7.org/fhir/4.3/StructureDefinition/extension-Subscription.filterBy"));
    assert!(!is_cross_version_subscription_extension(FILTER_CRITERIA_URL));
    assert!(!is_cross_version_subscription_extension("http://hl7.org/fhir/StructureDefinition/extension-Subscription.topic"));
    assert!(!is_cross_version_subscription_extension("http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url"));
    let mut sub = admission();
    sub["extension"] = json!([{ "url": cross, "valueCanonical": "http://t" }]);
    assert_refused_at(&sub, "Subscription.extension[0]", IssueType::NotSupported);
    let mut sub = admission();
    sub["channel"]["_endpoint"] = json!({ "extension": [{ "url": cross, "valueString": "x" }] });
    assert_refused_at(&sub, "Subscription.channel.endpoint.extension[0]", IssueType::NotSupported);
    let mut sub = admission();
    sub["channel"]["extension"][0]["extension"] = json!([{ "url": cross, "valueString": "x" }]);
    assert!(parse_r4(&sub).is_err(), "nested cross-version extensions are found too");

    let mut sub = admission();
    sub["modifierExtension"] = json!([{ "url": "http://example.org/m", "valueBoolean": true }]);
    assert_refused_at(&sub, "Subscription.modifierExtension", IssueType::NotSupported);
    let mut sub = admission();
    sub["channel"]["modifierExtension"] = json!([{ "url": "http://example.org/m", "valueBoolean": true }]);
    assert_refused_at(&sub, "Subscription.channel.modifierExtension", IssueType::NotSupported);
    // Other extensions on the resource are stored and ignored, as FHIR allows.
    let mut sub = admission();
    sub["extension"] = json!([{ "url": "http://example.org/note", "valueString": "x" }]);
    assert!(parse_r4(&sub).is_ok());
}

#[test]
fn r5_elements_in_an_r4_body_are_refused_with_their_r4_place() {
    for (key, value) in [
        ("topic", json!("http://t")),
        ("channelType", json!({ "code": "rest-hook" })),
        ("endpoint", json!("https://rx/")),
        ("parameter", json!([])),
        ("content", json!("empty")),
        ("contentType", json!("application/json")),
        ("heartbeatPeriod", json!(5)),
        ("timeout", json!(5)),
        ("maxCount", json!(5)),
        ("filterBy", json!([])),
    ] {
        let mut sub = admission();
        sub[key] = value;
        let issues = parse_r4(&sub).unwrap_err();
        assert_eq!(issues[0].expression.as_deref(), Some(format!("Subscription.{key}").as_str()));
        assert!(issues[0].diagnostics.contains("R5 element"), "{issues:?}");
    }
}

#[test]
fn signing_secrets_and_end_work_as_in_r5() {
    let mut sub = admission();
    sub["extension"] = json!([{ "url": secrets::SIGNING_SECRET_URL, "valueString": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=" }]);
    assert_eq!(parse_r4(&sub).unwrap().signing_keys.len(), 1);
    sub["extension"][0]["valueString"] = json!("whsec_short");
    assert_refused_at(&sub, "Subscription.extension[0].valueString", IssueType::Value);
    let mut sub = admission();
    sub["end"] = json!("2020-12-31");
    assert_refused_at(&sub, "Subscription.end", IssueType::Value);
    sub["end"] = json!("2020-12-31T12:00:00Z");
    assert!(parse(FhirVersion::R4, "s", &sub, &limits(), i64::MAX).is_err(), "an end in the past is refused");
}

/// Kit group 6 (6.02-6.07): each edit of the workflow Subscription is refused by the parser,
/// except an unknown topic or a filter the topic does not allow, which only the registry can
/// judge (tests/it/backport_subscription.rs).
#[test]
fn each_kit_rejection_edit_is_refused() {
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 6] = [
        ("6.03 malformed filter (one the topic does not allow is the registry's)", |s| {
            s["_criteria"] = json!({ "extension": [{ "url": FILTER_CRITERIA_URL, "valueString": "Encounter?patient" }] })
        }),
        ("6.04 channel type", |s| s["channel"]["type"] = json!("email")),
        ("6.05 channel endpoint", |s| s["channel"]["endpoint"] = json!("ftp://example.org/hook")),
        ("6.06 payload type", |s| s["channel"]["payload"] = json!("application/unsupported+payload")),
        ("6.07 channel/payload combination", |s| {
            s["channel"]["type"] = json!("message");
            s["channel"]["payload"] = json!("application/fhir+xml");
        }),
        ("6.07 websocket with an unsupported MIME type", |s| {
            s["channel"]["type"] = json!("websocket");
            s["channel"]["payload"] = json!("text/plain");
        }),
    ];
    for (name, edit) in edits {
        let mut sub = admission();
        edit(&mut sub);
        assert!(parse_r4(&sub).is_err(), "{name} was accepted");
    }
}
