//! Extractors that check input before a handler runs, failing with precise problem documents.

use std::future::{Ready, ready};
use std::str::FromStr;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;
use keel_kernel::{Actor, DomainError, FieldError, ListQuery, ListSpec};
use serde::de::DeserializeOwned;
use validator::Validate;

use crate::error::ApiError;

/// The largest request body, from `server.body_limit`; registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body, deserialized strictly and validated.
///
/// Wrong media type → 415; too large → 413; not JSON → 400; JSON of the wrong shape (unknown
/// field, wrong type, missing field) or failing validation → 422 naming every field at fault.
/// Request types should use `#[serde(deny_unknown_fields)]`: that is what stops mass
/// assignment (`{"roles": ["admin"]}` on a sign-up).
#[derive(Debug)]
pub struct ValidatedJson<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    match req.mime_type() {
        Ok(Some(mime)) => {
            mime.type_() == actix_web::mime::APPLICATION
                && (mime.subtype() == actix_web::mime::JSON
                    || mime.suffix() == Some(actix_web::mime::JSON))
        }
        _ => false,
    }
}

impl<T> FromRequest for ValidatedJson<T>
where
    T: DeserializeOwned + Validate + 'static,
{
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<BodyLimit>().map_or(256 * 1024, |l| l.0);
        if !is_json(req) {
            return Box::pin(async { Err(ApiError::UnsupportedMediaType) });
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Box::pin(async move { Err(ApiError::PayloadTooLarge { limit }) });
        }
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = body
                .await
                .map_err(|error| match error.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ApiError::PayloadTooLarge { limit },
                    _ => ApiError::BadRequest("the request body could not be read".to_owned()),
                })?;
            let value: T = deserialize_json(&bytes)?;
            value.validate().map_err(DomainError::from)?;
            Ok(Self(value))
        })
    }
}

/// Deserializes JSON, telling malformed JSON (400) from JSON of the wrong shape (422).
pub fn deserialize_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    if !inner.is_data() {
        return ApiError::MalformedJson(inner.to_string());
    }
    // serde's messages end with " at line L column C"; the field path says more.
    let message = inner.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head);
    let parent = if path == "." { String::new() } else { path };
    // serde_path_to_error includes an unknown field's own name in the path, not a missing one's.
    let join = |name: &str| {
        if parent == name || parent.ends_with(&format!(".{name}")) {
            parent.clone()
        } else if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    let field_error = if let Some(name) = quoted_after(message, "unknown field `") {
        FieldError::new(join(name), "unknown_field", "is not an accepted field")
    } else if let Some(name) = quoted_after(message, "missing field `") {
        FieldError::new(join(name), "required", "is required")
    } else if message.starts_with("unknown variant") {
        FieldError::new(field_or_body(&parent), "invalid_value", message)
    } else {
        FieldError::new(field_or_body(&parent), "invalid_type", message)
    };
    ApiError::Domain(DomainError::Validation(vec![field_error]))
}

fn field_or_body(path: &str) -> String {
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name)
}

/// The raw query parameters, percent-decoded, in order; checked by [`ListParams::parse`].
#[derive(Debug, Clone)]
pub struct ListParams(Vec<(String, String)>);

impl ListParams {
    /// Checks the parameters against a resource's list allow-list.
    pub fn parse(&self, spec: &ListSpec) -> Result<ListQuery, ApiError> {
        ListQuery::parse(spec, self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(ApiError::from)
    }
}

impl FromRequest for ListParams {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
                .map(Self)
                .map_err(|_| ApiError::BadRequest("the query string is malformed".to_owned())),
        )
    }
}

/// The `{id}` path segment, parsed into a typed id; anything else is 422 naming `id`.
#[derive(Debug)]
pub struct IdPath<T>(pub T);

impl<T: FromStr> FromRequest for IdPath<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = req.match_info().get("id").and_then(|raw| raw.parse().ok());
        ready(parsed.map(Self).ok_or_else(|| {
            ApiError::invalid(
                "id",
                "invalid_id",
                "must be a UUID such as 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            )
        }))
    }
}

/// Who is calling. Until the identity domain lands every caller is anonymous; handlers
/// already pass the actor to services, so authentication plugs in here alone.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(_: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self(Actor::Anonymous)))
    }
}

#[cfg(test)]
mod tests {
    use keel_kernel::DomainError;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        title: String,
        count: u32,
        #[serde(default)]
        items: Vec<Inner>,
    }

    fn field_errors_of(json: &str) -> Vec<FieldError> {
        match deserialize_json::<Outer>(json.as_bytes()) {
            Err(ApiError::Domain(DomainError::Validation(errors))) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_400_kind_of_error() {
        for body in [
            "",
            "{",
            "{\"title\": }",
            "{\"title\":\"a\",\"count\":1} trailing",
        ] {
            assert!(
                matches!(
                    deserialize_json::<Outer>(body.as_bytes()),
                    Err(ApiError::MalformedJson(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let errors = field_errors_of(r#"{"title":"a","count":1,"roles":["admin"]}"#);
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            ("roles", "unknown_field")
        );

        let errors = field_errors_of(r#"{"title":"a"}"#);
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            ("count", "required")
        );

        let errors = field_errors_of(r#"{"title":"a","count":"many"}"#);
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            ("count", "invalid_type")
        );
        assert!(!errors[0].message.contains("line"), "{}", errors[0].message);

        let errors =
            field_errors_of(r#"{"title":"a","count":1,"items":[{"name":"x"},{"nam":"y"}]}"#);
        assert_eq!(errors[0].field, "items[1].nam");

        let errors = field_errors_of("42");
        assert_eq!(errors[0].field, "body");
    }
}
