//! Extractors that check input before a handler runs, failing with precise problem documents.

use std::future::{Ready, ready};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::{self, X_FORWARDED_FOR};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::FutureExt as _;
use futures_util::future::LocalBoxFuture;
use ipnet::IpNet;
use keel_identity::{Identity, IdentityError};
use keel_kernel::{Actor, DomainError, FieldError, ListQuery, ListSpec, Origin};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use validator::Validate;

use crate::context::RequestId;
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
        let body = StrictJson::<T>::from_request(req, payload);
        Box::pin(async move {
            let StrictJson(value) = body.await?;
            value.validate().map_err(DomainError::from)?;
            Ok(Self(value))
        })
    }
}

/// A JSON body deserialized strictly, like [`ValidatedJson`], for types whose rules the domain
/// checks (the generic CRUD inputs).
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

impl<T> FromRequest for StrictJson<T>
where
    T: DeserializeOwned + 'static,
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
            deserialize_json(&bytes).map(Self)
        })
    }
}

/// Deserializes JSON, telling malformed JSON (400) from JSON of the wrong shape (422).
pub fn deserialize_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body is a JSON object; serde would also fill a struct from an array of its
    // fields in order (`["Zed"]`), which no client means.
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(ApiError::Domain(DomainError::invalid(
            "body",
            "invalid_type",
            "must be a JSON object",
        )));
    }
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

/// The reverse proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`);
/// registered as app data. Empty: the peer address is the client, whatever the headers say.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

/// Whether `ip` is a loopback, private or link-local address: where a reverse proxy lives.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// Behind a proxy nobody listed, every client has the proxy's address: they share one
/// rate-limit bucket and one password backoff, so a stranger can slow the owner down. Said
/// once per process, where an operator looks.
fn warn_untrusted_proxy_once(peer: IpAddr) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "X-Forwarded-For arrives from an internal address but server.trusted_proxies is empty: every client behind that proxy counts as the proxy's address for rate limits and password backoff; list the proxy's network in server.trusted_proxies"
        );
    }
}

impl TrustedProxies {
    /// Trusts the given networks.
    pub fn new(proxies: &[IpNet]) -> Self {
        Self(proxies.iter().copied().collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request whose TCP peer is `peer` and whose `X-Forwarded-For` header
    /// lines are `forwarded_for`, in the order received.
    ///
    /// Each proxy appends the address it received the request from, so only the right-most
    /// hops are written by proxies Keel trusts; everything to their left is whatever the client
    /// sent. The client is therefore the right-most hop that is not a trusted proxy. Hops left
    /// of it are never read, so a client cannot forge them into anything; an unreadable hop
    /// where the proxies should have written a valid one means a misconfigured chain, and the
    /// peer is used rather than a guess. When every hop is a trusted proxy (a request from
    /// inside the proxy network), the left-most is the client.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a header::HeaderValue>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        let lines: Vec<&header::HeaderValue> = forwarded_for.into_iter().collect();
        if !self.trusts(peer) {
            if self.0.is_empty() && !lines.is_empty() && is_internal(peer) {
                warn_untrusted_proxy_once(peer);
            }
            return peer;
        }
        let hops = lines
            .iter()
            .flat_map(|line| line.as_bytes().split(|b| *b == b','))
            // HTTP lists may contain empty elements (`a, , b`); they carry nothing.
            .filter(|hop| !hop.trim_ascii().is_empty())
            .rev();
        let mut leftmost = None;
        for hop in hops {
            let Some(ip) = parse_hop(hop) else {
                return peer;
            };
            if !self.trusts(ip) {
                return ip;
            }
            leftmost = Some(ip);
        }
        leftmost.unwrap_or(peer)
    }
}

/// The client's address: the TCP peer, or when the peer is a trusted proxy
/// (`server.trusted_proxies`), the right-most `X-Forwarded-For` hop that is not one.
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    Some(match req.app_data::<TrustedProxies>() {
        Some(proxies) => proxies.client(peer, req.headers().get_all(X_FORWARDED_FOR)),
        None => peer.to_canonical(),
    })
}

/// Whether a request's `traceparent` may be continued: it came from inside (a loopback,
/// private or link-local peer) or through a trusted proxy. A client on the internet must not
/// choose trace ids or force every request it sends to be recorded.
pub fn trace_context_trusted(req: &HttpRequest) -> bool {
    let Some(peer) = req.peer_addr().map(|addr| addr.ip().to_canonical()) else {
        return false;
    };
    is_internal(peer)
        || req
            .app_data::<TrustedProxies>()
            .is_some_and(|proxies| proxies.trusts(peer))
}

/// One `X-Forwarded-For` element: an address, optionally with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:443`) as some proxies write it.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let raw = std::str::from_utf8(raw.trim_ascii()).ok()?;
    let ip = raw
        .parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse::<IpAddr>().ok())
        })?;
    Some(ip.to_canonical())
}

/// Where the request came from, for the activity log.
pub fn origin(req: &HttpRequest) -> Origin {
    Origin {
        ip: client_ip(req),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect()),
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|id| id.as_str().to_owned()),
        // This request's span as the parent of whatever continues its trace (jobs).
        trace_parent: keel_telemetry::traces::current_traceparent(),
    }
}

/// The API-key header.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Who is calling, authenticated from `Authorization: Bearer <access token>` or
/// `X-API-Key: keel_…`, and from where. No credentials means an anonymous caller (each use case
/// decides whether that is enough); invalid credentials are refused with 401 before the
/// handler runs.
#[derive(Debug, Clone)]
pub struct Caller(pub keel_kernel::Caller);

/// Runs an authentication on its own task, so it finishes (and fills the session cache) even
/// when the request is dropped: actix drops every extractor as soon as one fails, and a
/// database query cancelled mid-flight costs the pool its connection. Without this, a client
/// sending valid tokens with invalid ids would make Keel reconnect to the database per request.
async fn completed(
    authentication: impl Future<Output = Result<Actor, IdentityError>> + 'static,
) -> Result<Actor, ApiError> {
    // In the request's span: its statements are traced, its log lines carry the request id.
    let mut authentication = Box::pin(tracing::Instrument::in_current_span(authentication));
    // With the session cache warm it is done at the first poll, and needs no task of its own.
    let done = match (&mut authentication).now_or_never() {
        Some(done) => done,
        None => actix_web::rt::spawn(authentication).await.map_err(|_| {
            ApiError::Domain(DomainError::internal("the authentication task failed"))
        })?,
    };
    done.map_err(|e| ApiError::Domain(e.into()))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Authenticated once per request: the idempotency middleware may have done it already.
        if let Some(caller) = req.extensions().get::<Caller>().cloned() {
            return Box::pin(async move { Ok(caller) });
        }
        let origin = origin(req);
        let identity = req.app_data::<web::Data<Identity>>().cloned();
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        let api_key = req
            .headers()
            .get(API_KEY_HEADER)
            .map(|v| v.to_str().map(str::to_owned));
        Box::pin(async move {
            let invalid = || ApiError::Domain(IdentityError::InvalidToken.into());
            let actor = match (authorization, api_key) {
                (None, None) => Actor::Anonymous,
                (Some(_), Some(_)) => {
                    return Err(ApiError::BadRequest(
                        "send either Authorization or X-API-Key, not both".to_owned(),
                    ));
                }
                (Some(value), None) => {
                    let value = value.map_err(|_| invalid())?;
                    let token = value
                        .strip_prefix("Bearer ")
                        .or_else(|| value.strip_prefix("bearer "))
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .ok_or_else(invalid)?;
                    let identity = identity.ok_or_else(invalid)?;
                    let token = token.to_owned();
                    completed(async move { identity.authenticate_bearer(&token).await }).await?
                }
                (None, Some(value)) => {
                    let key = value.map_err(|_| invalid())?;
                    let identity = identity.ok_or_else(invalid)?;
                    completed(async move { identity.authenticate_api_key(key.trim()).await })
                        .await?
                }
            };
            // Who made the request, on its span: the access line and every log line say it.
            let span = tracing::Span::current();
            if let Some(user) = actor.user_id() {
                span.record("user_id", tracing::field::display(user));
            }
            span.record(
                "credential",
                match &actor {
                    Actor::ApiKey { .. } => "api_key",
                    Actor::Federated { .. } => "provider_token",
                    Actor::User { .. } | Actor::Unverified { .. } => "session",
                    Actor::Anonymous | Actor::System => "none",
                },
            );
            Ok(Self(keel_kernel::Caller { actor, origin }))
        })
    }
}

/// A typed path segment other than `{id}` (e.g. `{role_id}`); 422 naming it when malformed.
pub fn path_param<T: FromStr>(req: &HttpRequest, name: &str) -> Result<T, ApiError> {
    req.match_info()
        .get(name)
        .and_then(|raw| raw.parse().ok())
        .ok_or_else(|| ApiError::invalid(name, "invalid_id", "must be a UUID"))
}

/// For PATCH bodies: tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
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

    fn client_of(trusted: &[&str], peer: &str, lines: &[&str]) -> String {
        let nets: Vec<IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        let values: Vec<header::HeaderValue> = lines
            .iter()
            .map(|l| header::HeaderValue::from_str(l).unwrap())
            .collect();
        TrustedProxies::new(&nets)
            .client(peer.parse().unwrap(), &values)
            .to_string()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        assert_eq!(
            client_of(&[], "198.51.100.9", &["203.0.113.7"]),
            "198.51.100.9"
        );
        assert_eq!(
            client_of(&["10.0.0.0/8"], "198.51.100.9", &["203.0.113.7"]),
            "198.51.100.9"
        );
        // A trusted peer without the header is the client itself.
        assert_eq!(client_of(&["10.0.0.0/8"], "10.0.0.2", &[]), "10.0.0.2");
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_across_every_header_line() {
        let proxies = ["10.0.0.0/8", "2001:db8:ffff::/48"];
        // The client forged the left-most hop; the proxies appended the real one.
        assert_eq!(
            client_of(&proxies, "10.0.0.2", &["1.1.1.1, 203.0.113.7, 10.0.0.1"]),
            "203.0.113.7"
        );
        // Lines are one list, in order; ports and empty elements are tolerated.
        assert_eq!(
            client_of(
                &proxies,
                "10.0.0.2",
                &["1.1.1.1", "203.0.113.7:4711, , 10.0.0.1"]
            ),
            "203.0.113.7"
        );
        assert_eq!(
            client_of(&proxies, "2001:db8:ffff::2", &["[2001:db8:1::5]:443"]),
            "2001:db8:1::5"
        );
        // Garbage left of the client is never read; garbage where a proxy writes is.
        assert_eq!(
            client_of(&proxies, "10.0.0.2", &["not-an-ip, 203.0.113.7"]),
            "203.0.113.7"
        );
        assert_eq!(
            client_of(&proxies, "10.0.0.2", &["203.0.113.7, bogus"]),
            "10.0.0.2"
        );
        // Every hop trusted: the left-most is the client.
        assert_eq!(
            client_of(&proxies, "10.0.0.2", &["10.9.9.9, 10.0.0.1"]),
            "10.9.9.9"
        );
        // IPv4-mapped IPv6 peers match IPv4 networks.
        assert_eq!(
            client_of(&proxies, "::ffff:10.0.0.2", &["203.0.113.7"]),
            "203.0.113.7"
        );
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

        // Fields in order as an array: serde would take it; a body is an object.
        let errors = field_errors_of(r#"  ["a", 1]"#);
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            ("body", "invalid_type")
        );
    }
}
