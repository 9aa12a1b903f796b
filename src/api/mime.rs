//! Content negotiation on every FHIR route: the format (Herald produces and accepts JSON
//! only), `_format`, `_pretty`, and the `fhirVersion` MIME-type parameter (FHIR
//! http.html#version-parameter): which FHIR version a body is in (`Content-Type`) or a client
//! wants (`Accept`), as `major.minor` (`application/fhir+json; fhirVersion=4.0`).
//!
//! Formats:
//! - `_format` overrides `Accept`: `json`, `application/json`, `application/fhir+json` (and the
//!   DSTU2 `application/json+fhir`) are served; anything else (`xml`, `application/fhir+xml`,
//!   `ttl`, ...) is refused with 406 and an OperationOutcome naming what Herald produces.
//! - `Accept`: ranges with `q=0` are ignored. JSON types and wildcards (`*/*`, `application/*`)
//!   are served. When no range is, and one names XML (`application/fhir+xml`,
//!   `application/xml`, `text/xml`), the answer is 406; other ranges alone (a browser's
//!   `text/html`) get JSON anyway, as RFC 9110 §12.5.1 allows.
//! - The response's Content-Type is `application/fhir+json` unless `_format` asked for plain
//!   JSON (`json`, `application/json`): then it is `application/json`, the format the client
//!   asked for (FHIR http.html#mime-type), with the same parameters.
//! - `_pretty=true` indents the JSON body (errors too); `_pretty=false` or none: compact.
//! - Request bodies: `extract::FhirBody` answers 415 for a `Content-Type` that is not JSON
//!   (`FHIR_JSON_TYPES`); a form-encoded `_search` or operation body is the handler's.
//!
//! An instance serves one version (`fhir::version`), so:
//! - a `Content-Type` naming another version is refused with 415 and an OperationOutcome
//!   naming the version served;
//! - an `Accept` whose every media range names another version is refused with 406 (a range
//!   without the parameter, or naming the version served, is acceptable; `q=0` ranges are
//!   ignored);
//! - otherwise the request is served, and when it named the version (in either header) the
//!   response's `application/fhir+json` Content-Type carries `fhirVersion=<major.minor>` too.
//!   Responses to requests that did not ask are unchanged, so no existing client sees a new
//!   Content-Type.
//!
//! The full version number (`4.0.1`) and the release name (`R4`) are accepted as well.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::outcome::ApiError;
use crate::fhir::version::instance;
use crate::fhir::{FhirVersion, IssueType};

/// `major.minor`, the form the parameter takes.
pub fn short(version: FhirVersion) -> &'static str {
    match version {
        FhirVersion::R4 => "4.0",
        FhirVersion::R4B => "4.3",
        FhirVersion::R5 => "5.0",
    }
}

/// One media type or range: its parameters, names lower-cased, values unquoted.
fn params(media: &str) -> impl Iterator<Item = (String, &str)> {
    media.split(';').skip(1).filter_map(|p| {
        let (name, value) = p.split_once('=')?;
        Some((name.trim().to_ascii_lowercase(), value.trim().trim_matches('"')))
    })
}

/// The `fhirVersion` a media type names: `None` when it names none, `Some(Err(text))` when
/// it names one Herald does not know.
fn named_version(media: &str) -> Option<Result<FhirVersion, String>> {
    let (_, value) = params(media).find(|(n, _)| n == "fhirversion")?;
    Some(FhirVersion::parse(value).ok_or_else(|| value.to_owned()))
}

/// The media types Herald produces (and accepts as bodies), as the 406 and 415 answers name them.
pub const PRODUCES: &str = "application/fhir+json, application/json";

/// What a media type, a range or a `_format` value asks for.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Format {
    /// JSON, or a wildcard JSON satisfies.
    Json,
    /// XML: FHIR's other format, which Herald does not produce.
    Xml,
    /// Anything else (`text/html`, `ttl`, ...).
    Other,
}

fn format_of(media: &str) -> Format {
    let mime = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir" | "*/*" | "application/*" => Format::Json,
        "xml" | "text/xml" | "application/xml" | "application/fhir+xml" | "application/xml+fhir" => Format::Xml,
        _ => Format::Other,
    }
}

/// `_format` asks for plain `application/json` rather than `application/fhir+json`.
fn asks_plain_json(format: Option<&str>) -> bool {
    format.is_some_and(|f| {
        let mime = f.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        mime == "json" || mime == "application/json"
    })
}

/// `application/fhir+json; charset=utf-8` as `application/json; charset=utf-8`; other
/// Content-Types unchanged.
fn as_plain_json(resp: &mut Response) {
    let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Some(rest) = ct.strip_prefix("application/fhir+json") {
        if let Ok(v) = HeaderValue::from_str(&format!("application/json{rest}")) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
    }
}

/// What the request's headers (and `_format`) say about formats and versions, against `served`.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Served; `true` when the request named the version (the response says it too).
    Serve(bool),
    /// 415: the body is in another version (as written).
    BodyVersion(String),
    /// 406: only other versions are acceptable (as written).
    AcceptVersion(String),
    /// 406: only a format Herald does not produce is acceptable (as written).
    AcceptFormat(String),
}

fn verdict(content_type: Option<&str>, accept: Option<&str>, format: Option<&str>, served: FhirVersion) -> Verdict {
    let mut named = false;
    if let Some(ct) = content_type {
        match named_version(ct) {
            Some(Ok(v)) if v == served => named = true,
            Some(Ok(v)) => return Verdict::BodyVersion(short(v).to_owned()),
            Some(Err(text)) => return Verdict::BodyVersion(text),
            None => {}
        }
    }
    // `_format` overrides the formats in `Accept` (its versions still count).
    if let Some(f) = format {
        if format_of(f) != Format::Json {
            return Verdict::AcceptFormat(format!("_format={f}"));
        }
    }
    if let Some(accept) = accept {
        let ranges: Vec<&str> = accept
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .filter(|r| !params(r).any(|(n, v)| n == "q" && v.parse::<f32>().is_ok_and(|q| q <= 0.0)))
            .collect();
        let mut refused = None;
        let mut xml = None;
        let mut json = false;
        let mut acceptable = ranges.is_empty();
        for range in ranges {
            match (format.is_some(), format_of(range)) {
                (false, Format::Xml) => {
                    xml = xml.or(Some(range.trim().to_owned()));
                    continue;
                }
                (false, Format::Other) => continue,
                _ => json = true,
            }
            match named_version(range) {
                None => acceptable = true,
                Some(Ok(v)) if v == served => {
                    acceptable = true;
                    named = true;
                }
                Some(Ok(v)) => refused = refused.or(Some(short(v).to_owned())),
                Some(Err(text)) => refused = refused.or(Some(text)),
            }
        }
        if !acceptable {
            if let Some(asked) = refused {
                return Verdict::AcceptVersion(asked);
            }
            if let (false, Some(asked)) = (json, xml) {
                return Verdict::AcceptFormat(format!("Accept: {asked}"));
            }
        }
    }
    Verdict::Serve(named)
}

/// The first value of `name` in a query string.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
}

/// The JSON body of `resp` indented (`_pretty=true`); any other body unchanged.
async fn pretty(resp: Response) -> Response {
    let json = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.contains("json"));
    if !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueType::Exception, "the response body could not be read")
            .into_response();
    };
    let shown = serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| serde_json::to_vec_pretty(&v).ok());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(shown.unwrap_or_else(|| bytes.to_vec())))
}

/// The middleware on every FHIR route.
pub(super) async fn fhir_version(req: Request, next: Next) -> Response {
    let served = instance();
    let query = req.uri().query();
    // An unencoded `+` (`_format=application/fhir+json`) arrives as a space; no media type has one.
    let format = query_value(query, "_format").map(|f| f.trim().replace(' ', "+"));
    let indent = query_value(query, "_pretty").is_some_and(|p| p == "true");
    let plain = asks_plain_json(format.as_deref());
    let decided = {
        let text = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        verdict(text(header::CONTENT_TYPE), text(header::ACCEPT), format.as_deref(), served)
    };
    let said = format!("this server serves FHIR {} (fhirVersion={})", served.number(), short(served));
    let resp = match decided {
        Verdict::BodyVersion(asked) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            format!("the request body is fhirVersion={asked}; {said}, one version per instance"),
        )
        .into_response(),
        Verdict::AcceptVersion(asked) => ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            format!("only fhirVersion={asked} is acceptable to the client; {said}, one version per instance"),
        )
        .into_response(),
        Verdict::AcceptFormat(asked) => ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            format!("{asked} asks for a format this server does not produce; it produces JSON only ({PRODUCES})"),
        )
        .into_response(),
        Verdict::Serve(named) => {
            let mut resp = next.run(req).await;
            if named {
                let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
                if ct.starts_with("application/fhir+json") && named_version(ct).is_none() {
                    if let Ok(v) = HeaderValue::from_str(&format!("{ct}; fhirVersion={}", short(served))) {
                        resp.headers_mut().insert(header::CONTENT_TYPE, v);
                    }
                }
            }
            if plain {
                as_plain_json(&mut resp);
            }
            resp
        }
    };
    if indent {
        pretty(resp).await
    } else {
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_content_type_and_accept_decide_415_406_or_service() {
        let r4 = FhirVersion::R4;
        let cases: [(Option<&str>, Option<&str>, Verdict); 20] = [
            (None, None, Verdict::Serve(false)),
            (Some("application/fhir+json"), Some("application/fhir+json"), Verdict::Serve(false)),
            (Some("application/fhir+json; fhirVersion=4.0"), None, Verdict::Serve(true)),
            (Some("application/fhir+json;charset=utf-8;FHIRVERSION=\"4.0.1\""), None, Verdict::Serve(true)),
            (Some("application/fhir+json; fhirVersion=5.0"), None, Verdict::BodyVersion("5.0".into())),
            (Some("application/fhir+json; fhirVersion=3.0"), None, Verdict::BodyVersion("3.0".into())),
            (None, Some("application/fhir+json; fhirVersion=4.0"), Verdict::Serve(true)),
            (None, Some("application/fhir+json; fhirVersion=4.3"), Verdict::AcceptVersion("4.3".into())),
            (None, Some("application/fhir+json; fhirVersion=4.3, */*;q=0.1"), Verdict::Serve(false)),
            (None, Some("application/fhir+json; fhirVersion=4.3, application/fhir+json; fhirVersion=4.0"), Verdict::Serve(true)),
            (None, Some("application/fhir+json; fhirVersion=5.0, */*;q=0"), Verdict::AcceptVersion("5.0".into())),
            (
                Some("application/fhir+json; fhirVersion=4.0"),
                Some("application/fhir+json; fhirVersion=5.0"),
                Verdict::AcceptVersion("5.0".into()),
            ),
            (
                Some("application/fhir+json; fhirVersion=4.3"),
                Some("application/fhir+json; fhirVersion=4.0"),
                Verdict::BodyVersion("4.3".into()),
            ),
            (None, Some("application/fhir+xml"), Verdict::AcceptFormat("Accept: application/fhir+xml".into())),
            (None, Some("application/xml, text/xml;q=0.5"), Verdict::AcceptFormat("Accept: application/xml".into())),
            (None, Some("application/fhir+xml, */*;q=0.1"), Verdict::Serve(false)),
            (None, Some("application/fhir+xml, application/json;q=0"), Verdict::AcceptFormat("Accept: application/fhir+xml".into())),
            (None, Some("application/fhir+xml;q=0, application/fhir+json"), Verdict::Serve(false)),
            (None, Some("text/html"), Verdict::Serve(false)),
            (None, Some("text/html, application/xml;q=0.9"), Verdict::AcceptFormat("Accept: application/xml;q=0.9".into())),
        ];
        for (ct, accept, expected) in cases {
            assert_eq!(verdict(ct, accept, None, r4), expected, "{ct:?} / {accept:?}");
        }
        assert_eq!(verdict(None, Some("application/fhir+json; fhirVersion=5.0"), None, FhirVersion::R5), Verdict::Serve(true));
        // `_format` overrides the formats `Accept` names, not its versions.
        let xml = Some("application/fhir+xml");
        assert_eq!(verdict(None, xml, Some("json"), r4), Verdict::Serve(false));
        assert_eq!(verdict(None, None, Some("application/fhir+json"), r4), Verdict::Serve(false));
        assert_eq!(verdict(None, None, Some("application/json"), r4), Verdict::Serve(false));
        assert_eq!(verdict(None, None, Some("xml"), r4), Verdict::AcceptFormat("_format=xml".into()));
        assert_eq!(
            verdict(None, Some("application/fhir+json"), Some("application/fhir+xml"), r4),
            Verdict::AcceptFormat("_format=application/fhir+xml".into())
        );
        assert_eq!(verdict(None, Some("application/fhir+json; fhirVersion=5.0"), Some("json"), r4), Verdict::AcceptVersion("5.0".into()));
    }
}
