//! The `fhirVersion` MIME-type parameter (FHIR http.html#version-parameter): which FHIR
//! version a body is in (`Content-Type`) or a client wants (`Accept`), as `major.minor`
//! (`application/fhir+json; fhirVersion=4.0`).
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

/// What the request's headers say about versions, against `served`.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Served; `true` when the request named the version (the response says it too).
    Serve(bool),
    /// 415: the body is in another version (as written).
    BodyVersion(String),
    /// 406: only other versions are acceptable (as written).
    AcceptVersion(String),
}

fn verdict(content_type: Option<&str>, accept: Option<&str>, served: FhirVersion) -> Verdict {
    let mut named = false;
    if let Some(ct) = content_type {
        match named_version(ct) {
            Some(Ok(v)) if v == served => named = true,
            Some(Ok(v)) => return Verdict::BodyVersion(short(v).to_owned()),
            Some(Err(text)) => return Verdict::BodyVersion(text),
            None => {}
        }
    }
    if let Some(accept) = accept {
        let ranges: Vec<&str> = accept
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .filter(|r| !params(r).any(|(n, v)| n == "q" && v.parse::<f32>().is_ok_and(|q| q <= 0.0)))
            .collect();
        let mut refused = None;
        let mut acceptable = ranges.is_empty();
        for range in ranges {
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
        if let (false, Some(asked)) = (acceptable, refused) {
            return Verdict::AcceptVersion(asked);
        }
    }
    Verdict::Serve(named)
}

/// The middleware on every FHIR route.
pub(super) async fn fhir_version(req: Request, next: Next) -> Response {
    let served = instance();
    let decided = {
        let text = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        verdict(text(header::CONTENT_TYPE), text(header::ACCEPT), served)
    };
    let said = format!("this server serves FHIR {} (fhirVersion={})", served.number(), short(served));
    match decided {
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
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_content_type_and_accept_decide_415_406_or_service() {
        let r4 = FhirVersion::R4;
        let cases: [(Option<&str>, Option<&str>, Verdict); 13] = [
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
        ];
        for (ct, accept, expected) in cases {
            assert_eq!(verdict(ct, accept, r4), expected, "{ct:?} / {accept:?}");
        }
        assert_eq!(verdict(None, Some("application/fhir+json; fhirVersion=5.0"), FhirVersion::R5), Verdict::Serve(true));
    }
}
