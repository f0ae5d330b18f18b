//! The OpenAPI document, generated from the code: hand-written endpoints carry
//! `#[utoipa::path]` annotations, generic CRUD resources describe themselves
//! ([`crate::crud::openapi`]), and this module adds what they share: the problem document,
//! the error responses, the security schemes and the list-query parameters.
//!
//! Served at `GET /openapi.json` with Swagger UI at `GET /docs` (assets embedded in the
//! binary), printed by `api openapi`, and written to `docs/openapi.json` by `cargo xtask
//! openapi`.

use keel_kernel::query::{DEFAULT_LIMIT, FieldKind, ListSpec, MAX_LIMIT, MAX_TEXT_VALUE_CHARS};
use serde::Serialize;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, OpenApi, Ref, RefOr, Required, SecurityRequirement,
};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::API_PREFIX;
use crate::error::PROBLEM_JSON;

/// Name of the bearer (JWT access token) security scheme.
pub const BEARER: &str = "bearer";
/// Name of the `X-API-Key` security scheme.
pub const API_KEY: &str = "api_key";

/// Both ways to authenticate; an operation accepts either.
pub fn authenticated() -> Vec<SecurityRequirement> {
    vec![
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        SecurityRequirement::new(API_KEY, Vec::<String>::new()),
    ]
}

/// One field at fault, inside a problem document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FieldError, example = json!({"field": "name", "code": "length", "message": "must be between 1 and 200 characters long"}))]
pub struct FieldErrorDoc {
    /// Dotted path of the field, e.g. `name` or `items[2].name`; query parameters and
    /// headers are named as sent.
    pub field: String,
    /// Stable machine-readable code.
    pub code: String,
    /// A sentence a person can act on.
    pub message: String,
}

/// An RFC 9457 problem document: the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem, example = json!({
    "type": "urn:keel:problem:validation_failed",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "the request is invalid: see `errors`",
    "instance": "/api/v1/projects",
    "code": "validation_failed",
    "request_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "errors": [{"field": "name", "code": "length", "message": "must be between 1 and 200 characters long"}]
}))]
pub struct ProblemDoc {
    /// `urn:keel:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// The request path.
    pub instance: Option<String>,
    /// Stable machine-readable code (see `docs/errors.md`): `validation_failed`,
    /// `malformed_json`, `unauthenticated`, `invalid_credentials`, `invalid_token`,
    /// `account_inactive`, `auth.reauthentication_required`, `auth.mfa_required`,
    /// `auth.mfa_invalid`, `forbidden`,
    /// `auth.session_required`, `auth.email_unverified`, `role.admin_only`, `not_found`,
    /// `<domain>.<rule>` conflicts, `precondition_failed`, `payload_too_large`,
    /// `unsupported_media_type`, `rate_limited`, `service_unavailable`, `request_timeout`,
    /// `internal_error`.
    pub code: String,
    /// The request id, to quote when reporting a problem.
    pub request_id: Option<String>,
    /// One entry per field at fault (validation errors only).
    pub errors: Option<Vec<FieldErrorDoc>>,
    /// With `auth.mfa_required` only: the sign-in's challenge for `POST /auth/mfa/verify`
    /// (single use, valid five minutes).
    pub challenge: Option<String>,
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => $description:literal,)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name;

            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), problem_response($description).into())
                }
            }
        )*

        /// Every shared error response, for the components section.
        fn problem_response_components() -> Vec<(&'static str, RefOr<Response>)> {
            vec![$((stringify!($name), problem_response($description).into()),)*]
        }
    };
}

problem_responses! {
    /// 400.
    BadRequest => "Malformed JSON or an unreadable request.",
    /// 401.
    Unauthenticated => "No valid credentials: a missing, expired or revoked access token or API key (`unauthenticated`, `invalid_token`, `invalid_credentials`, `account_inactive`), a session whose sign-in is older than `auth.reauthentication_window` (`auth.reauthentication_required`), a right password on an account with a second factor (`auth.mfa_required`, with a `challenge` for `POST /auth/mfa/verify`), or a wrong, used or expired second-factor code or challenge (`auth.mfa_invalid`).",
    /// 403.
    Forbidden => "Authenticated, but not allowed: a missing permission (`forbidden`, `detail` names it), an API key on account self-service (`auth.session_required`), an account whose email is not confirmed (`auth.email_unverified`), a browser-session refresh without its CSRF token or from another site (`auth.csrf_failed`), or a role change reserved to administrators (`role.admin_only`).",
    /// 404.
    NotFound => "No such resource, or it is outside the caller's scope.",
    /// 409.
    Conflict => "The change conflicts with stored data: a unique value is taken, the last active administrator would lose that power (`user.last_admin`), a system role would change (`role.system`), a request with the same `Idempotency-Key` still runs (`idempotency.in_progress`), or took effect but lost its answer in a crash (`idempotency.answer_lost`).",
    /// 412.
    PreconditionFailed => "`If-Match` names a version that is no longer current: re-read and retry.",
    /// 413.
    PayloadTooLarge => "The body is larger than `server.body_limit`.",
    /// 415.
    UnsupportedMediaType => "The body is not `application/json`.",
    /// 422.
    ValidationFailed => "The input breaks a rule; `errors` names every field or parameter at fault.",
    /// 429.
    TooManyRequests => "Rate limited; `Retry-After` says when to try again.",
    /// 500.
    InternalError => "An unexpected failure; logged with the request id, no internals sent.",
    /// 502.
    BadGateway => "A service Keel depends on (an identity provider, another API) failed or answered with something unusable.",
    /// 503.
    Unavailable => "A dependency (database, cache) is unavailable, password hashing is saturated, or the request timed out; `Retry-After` says when to retry.",
}

/// References a shared error response.
pub fn error_ref(name: &str) -> RefOr<Response> {
    RefOr::Ref(Ref::from_response_name(name))
}

/// Adds what every operation shares: the security schemes, the problem schema, the error
/// responses, and 500/503 on every operation (any request can meet them).
#[derive(Debug)]
pub struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from `POST /api/v1/auth/login`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key from `POST /api/v1/api-keys`: `keel_<prefix>_<secret>`.",
            ))),
        );
        let mut schemas = vec![(ProblemDoc::name().into_owned(), ProblemDoc::schema())];
        <ProblemDoc as ToSchema>::schemas(&mut schemas);
        components.schemas.extend(schemas);
        for (name, response) in problem_response_components() {
            components.responses.insert(name.to_owned(), response);
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                for (status, name) in shape_responses(operation) {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_ref(name));
                }
            }
        }
    }
}

/// The error responses an operation can meet because of its shape, whatever its handler
/// does: any request can meet 500 and 503; a credential can be malformed, doubled (400) or
/// stale (401); a body can be unreadable (400), too large (413), not JSON (415) or break a
/// rule (422); a path id can be malformed (422) or unknown (404); a query can be refused (422).
fn shape_responses(operation: &Operation) -> Vec<(&'static str, &'static str)> {
    let mut found = vec![("500", "InternalError"), ("503", "Unavailable")];
    let authenticated = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    if authenticated {
        found.extend([("400", "BadRequest"), ("401", "Unauthenticated")]);
    }
    if operation.request_body.is_some() {
        found.extend([
            ("400", "BadRequest"),
            ("413", "PayloadTooLarge"),
            ("415", "UnsupportedMediaType"),
            ("422", "ValidationFailed"),
        ]);
    }
    for parameter in operation.parameters.iter().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        match parameter.parameter_in {
            ParameterIn::Path => {
                found.extend([("404", "NotFound"), ("422", "ValidationFailed")]);
            }
            ParameterIn::Query => found.push(("422", "ValidationFailed")),
            _ => {}
        }
    }
    found
}

fn operations_mut(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The operation at `method path`, if documented.
pub fn operation_mut<'a>(
    openapi: &'a mut OpenApi,
    path: &str,
    method: &HttpMethod,
) -> Option<&'a mut Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        HttpMethod::Head => item.head.as_mut(),
        HttpMethod::Options => item.options.as_mut(),
        HttpMethod::Trace => item.trace.as_mut(),
    }
}

fn string_schema(description: impl Into<String>) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .description(Some(description))
        .into()
}

/// A text parameter of at most [`MAX_TEXT_VALUE_CHARS`] characters (`q`, text filters).
fn bounded_text_schema(description: impl Into<String>) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .description(Some(description))
        .max_length(Some(MAX_TEXT_VALUE_CHARS))
        .into()
}

fn query(name: &str, schema: Schema, description: impl Into<String>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The query parameters of a list endpoint whose allow-list is `spec`: paging, sorting,
/// search and one parameter per allowed filter.
pub fn list_parameters(spec: &ListSpec) -> Vec<Parameter> {
    let integer = |minimum: u32, maximum: Option<u32>, default: Option<u32>| -> Schema {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Integer))
            .minimum(Some(minimum))
            .maximum(maximum)
            .default(default.map(Into::into))
            .into()
    };
    let sortable: Vec<&str> = spec
        .fields
        .iter()
        .filter(|f| f.sortable)
        .map(|f| f.name)
        .collect();
    let mut parameters = vec![
        query(
            "limit",
            integer(1, Some(MAX_LIMIT), Some(DEFAULT_LIMIT)),
            format!("Page size, 1 to {MAX_LIMIT}."),
        ),
        query(
            "offset",
            integer(0, None, Some(0)),
            "Rows to skip; cannot be combined with `cursor`.",
        ),
        query(
            "cursor",
            string_schema("opaque"),
            "`next_cursor` of the previous page: a keyset page, fast at any depth.",
        ),
        query(
            "sort",
            string_schema("comma-separated fields, `-` for descending"),
            format!(
                "Sort order, e.g. `{}`. Sortable: {}.",
                spec.default_sort,
                if sortable.is_empty() {
                    "none".to_owned()
                } else {
                    sortable.join(", ")
                }
            ),
        ),
    ];
    if spec.searchable {
        parameters.push(query(
            "q",
            bounded_text_schema("text"),
            "Case-insensitive substring search.",
        ));
    }
    for field in spec.fields.iter().filter(|f| f.filterable) {
        let kind = field.kind.describe();
        let value_schema = if field.kind == FieldKind::Text {
            bounded_text_schema(kind.clone())
        } else {
            string_schema(kind.clone())
        };
        parameters.push(query(
            field.name,
            value_schema,
            format!("Equal to this value ({kind})."),
        ));
        parameters.push(query(
            &format!("{}__in", field.name),
            string_schema("comma-separated values"),
            format!("Equal to any of these comma-separated values ({kind})."),
        ));
        if field.kind.supports_ranges() {
            for (suffix, word) in [("gte", "at least"), ("lte", "at most")] {
                parameters.push(query(
                    &format!("{}__{suffix}", field.name),
                    string_schema(kind.clone()),
                    format!("{word} this value ({kind})."),
                ));
            }
        }
    }

    parameters
}

/// Adds the list parameters of `spec` to `GET {API_PREFIX}{path}`.
pub fn add_list_parameters(openapi: &mut OpenApi, path: &str, spec: &ListSpec) {
    if let Some(operation) =
        operation_mut(openapi, &format!("{API_PREFIX}{path}"), &HttpMethod::Get)
    {
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .extend(list_parameters(spec).into_iter().map(RefOr::T));
    }
}

/// The schema of one page of `item` (the list body of the HTTP contract).
pub fn page_schema(item: &str) -> Schema {
    let nullable = |ty: Type, description: &str| -> Schema {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([ty, Type::Null]))
            .description(Some(description))
            .into()
    };
    ObjectBuilder::new()
        .property(
            "items",
            ArrayBuilder::new().items(Ref::from_schema_name(item)),
        )
        .required("items")
        .property(
            "total",
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::Integer))
                .minimum(Some(0))
                .description(Some("Rows matching the filters, across all pages.")),
        )
        .required("total")
        .property(
            "limit",
            ObjectBuilder::new().schema_type(SchemaType::new(Type::Integer)),
        )
        .required("limit")
        .property(
            "offset",
            nullable(Type::Integer, "This page's offset; null on cursor pages."),
        )
        .required("offset")
        .property(
            "next_cursor",
            nullable(
                Type::String,
                "Pass as `cursor=` for the next page; null on the last.",
            ),
        )
        .required("next_cursor")
        .into()
}

/// Declares `$page` as the list-page schema of `$item` (a [`ToSchema`] type), for
/// `#[utoipa::path]` response bodies.
#[macro_export]
macro_rules! page_of {
    ($(#[$doc:meta])* $page:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $page;

        impl utoipa::PartialSchema for $page {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::openapi::page_schema(&<$item as utoipa::ToSchema>::name()).into()
            }
        }

        impl utoipa::ToSchema for $page {
            fn schemas(
                schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>,
            ) {
                schemas.push((
                    <$item as utoipa::ToSchema>::name().into_owned(),
                    <$item as utoipa::PartialSchema>::schema(),
                ));
                <$item as utoipa::ToSchema>::schemas(schemas);
            }
        }
    };
}

/// A string schema limited to `names`, for domain enums (which stay free of utoipa).
pub fn string_enum(names: &[&str]) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .enum_values(Some(names.iter().copied()))
        .into()
}

/// The parts of the document not generated from a route: title, description, tags.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "Keel API",
        description = "A production-ready backend foundation. Errors are RFC 9457 problem documents \
(`application/problem+json`) naming every field at fault. Lists take `limit`, `offset` or `cursor`, \
`sort`, filters and `q` as described per endpoint; unknown parameters are rejected. Authenticate with \
`Authorization: Bearer <access token>` or `X-API-Key: keel_<prefix>_<secret>`.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "auth", description = "Accounts, sign-in, tokens, sessions and recovery."),
        (name = "api-keys", description = "The caller's API keys."),
        (name = "users", description = "Account administration."),
        (name = "rbac", description = "Roles and permissions."),
        (name = "activity", description = "The append-only activity log."),
        (name = "release-notes", description = "The public \"What's New\" feed."),
        (name = "projects", description = "The example owner-scoped resource."),
        (name = "webhooks", description = "Signed webhooks (Standard Webhooks): received from other services, sent to subscribed endpoints."),
        (name = "realtime", description = "Live changes over a WebSocket (messages in docs/realtime.md)."),
        (name = "operations", description = "Health checks and metrics.")
    )
)]
struct KeelDoc;

/// The complete OpenAPI document of the api process.
pub fn document() -> OpenApi {
    use utoipa::OpenApi as _;

    let mut document = KeelDoc::openapi();
    document.merge(crate::health::HealthDoc::openapi());
    document.merge(crate::server::ServerDoc::openapi());
    for feature in crate::feature_documents() {
        document.merge(feature);
    }
    add_idempotency(&mut document);
    Shared.modify(&mut document);
    document
}

/// [`document`] as pretty JSON with a trailing newline: what `/openapi.json` serves, `api
/// openapi` prints and `docs/openapi.json` holds.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned());
    json.push('\n');
    json
}

/// Documents `Idempotency-Key` on every POST whose answer may be replayed (all but sign-in
/// and API-key creation, whose answers are credentials): the header, the replay marker and the
/// 409 of a concurrent duplicate.
pub fn add_idempotency(openapi: &mut OpenApi) {
    for (path, item) in &mut openapi.paths.paths {
        if !path.starts_with(API_PREFIX) || !crate::idempotency::replayable(path) {
            continue;
        }
        let Some(operation) = item.post.as_mut() else {
            continue;
        };
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::T(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "Makes a retry safe: the same key with the same request within 24 h replays the first 2xx answer (with `Idempotent-Replayed: true`) instead of running again; the same key with another request is 422 (`key_reused`); while the first still runs, 409 `idempotency.in_progress`; if the first took effect but its answer was lost in a crash, 409 `idempotency.answer_lost` (it never runs twice). 1 to 255 visible ASCII characters, per caller.",
                    ))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(SchemaType::new(Type::String))
                            .min_length(Some(1))
                            .max_length(Some(keel_kernel::idempotency::MAX_KEY_LEN)),
                    ))
                    .build(),
            ));
        // The key's request body is read (and bounded) to fingerprint it, body or not.
        for (status, name) in [("409", "Conflict"), ("413", "PayloadTooLarge")] {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| error_ref(name));
        }
    }
}
