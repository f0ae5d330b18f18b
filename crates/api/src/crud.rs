//! Generic HTTP endpoints for any resource built on the kernel's [`Crud`]: a domain declares
//! its wire types and path in a [`CrudApi`] impl, picks its [`Operations`], and gets routes,
//! conditional requests (`ETag`, `If-Match`, `If-None-Match`) and OpenAPI documentation.
//!
//! | route | operation |
//! |---|---|
//! | `GET {path}` | list (query language of the contract) |
//! | `POST {path}` | create → 201, `Location`, `ETag` |
//! | `POST {path}/bulk` | create up to 100 in one statement, all or nothing → 201 |
//! | `GET {path}/{id}` | read, `ETag`; `If-None-Match` → 304 |
//! | `PATCH {path}/{id}` | update; `If-Match` → 412 when stale |
//! | `DELETE {path}/{id}` | soft delete → 204; `If-Match` → 412 when stale |
//! | `POST {path}/{id}/restore` | undo a soft delete |

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use keel_kernel::crud::{Crud, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, Header, HttpMethod, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, Schema,
};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ListParams, StrictJson};
use crate::openapi::{authenticated, error_ref, list_parameters, page_schema};

/// Which of the generic endpoints a resource exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operations {
    /// `GET {path}`.
    pub list: bool,
    /// `GET {path}/{id}`.
    pub get: bool,
    /// `POST {path}`.
    pub create: bool,
    /// `POST {path}/bulk`.
    pub bulk_create: bool,
    /// `PATCH {path}/{id}`.
    pub update: bool,
    /// `DELETE {path}/{id}`.
    pub delete: bool,
    /// `POST {path}/{id}/restore`.
    pub restore: bool,
}

impl Operations {
    /// Every operation.
    pub const ALL: Self = Self {
        list: true,
        get: true,
        create: true,
        bulk_create: true,
        update: true,
        delete: true,
        restore: true,
    };
    /// Reads only.
    pub const READ_ONLY: Self = Self {
        list: true,
        get: true,
        create: false,
        bulk_create: false,
        update: false,
        delete: false,
        restore: false,
    };
}

/// The HTTP face of one [`Resource`].
pub trait CrudApi: 'static {
    /// The domain entity.
    type Resource: Resource;
    /// Its JSON representation.
    type View: Serialize + ToSchema + From<Self::Resource>;
    /// The body of a create (use `#[serde(deny_unknown_fields)]`: no mass assignment).
    type Create: DeserializeOwned + ToSchema + Into<<Self::Resource as Resource>::New>;
    /// The body of a PATCH (absent fields stay as they are; same rule on unknown fields).
    type Update: DeserializeOwned + ToSchema + Into<<Self::Resource as Resource>::Patch>;

    /// The collection's path under `/api/v1`, e.g. `/projects`.
    const PATH: &'static str;
    /// The OpenAPI tag grouping its operations.
    const TAG: &'static str;
    /// The endpoints it exposes.
    const OPERATIONS: Operations = Operations::ALL;
}

type Service<A> = web::Data<Crud<<A as CrudApi>::Resource>>;
type Id<A> = <<A as CrudApi>::Resource as Resource>::Id;

/// Registers `A`'s routes (inside the `/api/v1` scope). The service must be app data.
pub fn configure<A: CrudApi>(cfg: &mut web::ServiceConfig) {
    let ops = A::OPERATIONS;
    let mut collection = web::resource(A::PATH);
    if ops.list {
        collection = collection.route(web::get().to(list::<A>));
    }
    if ops.create {
        collection = collection.route(web::post().to(create::<A>));
    }
    cfg.service(collection);
    // Before `{id}`, which would otherwise capture "bulk".
    if ops.bulk_create {
        cfg.service(
            web::resource(format!("{}/bulk", A::PATH)).route(web::post().to(create_many::<A>)),
        );
    }
    let mut item = web::resource(format!("{}/{{id}}", A::PATH));
    if ops.get {
        item = item.route(web::get().to(get::<A>));
    }
    if ops.update {
        item = item.route(web::patch().to(update::<A>));
    }
    if ops.delete {
        item = item.route(web::delete().to(delete::<A>));
    }
    cfg.service(item);
    if ops.restore {
        cfg.service(
            web::resource(format!("{}/{{id}}/restore", A::PATH))
                .route(web::post().to(restore::<A>)),
        );
    }
}

/// The strong entity tag of a version.
pub fn etag(version: i64) -> String {
    format!("\"v{version}\"")
}

/// The versions an `If-Match` header accepts: `None` without the header or with `*`. Weak or
/// malformed tags match nothing (RFC 9110 compares `If-Match` strongly), so they end in 412.
pub fn if_match(headers: &HeaderMap) -> Option<Vec<i64>> {
    if_match_values(headers.get_all(header::IF_MATCH).map(|v| v.as_bytes()))
}

/// [`if_match`] over the raw values of every `If-Match` header line, in order.
pub fn if_match_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<i64>> {
    let mut versions = Vec::new();
    let mut present = false;
    for value in values {
        present = true;
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for tag in text.split(',').map(str::trim) {
            if tag == "*" {
                return None;
            }
            if let Some(version) = tag
                .strip_prefix("\"v")
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse().ok())
            {
                versions.push(version);
            }
        }
    }
    present.then_some(versions)
}

/// Whether `If-None-Match` already names `version` (weak comparison, as RFC 9110 asks).
fn none_match(headers: &HeaderMap, version: i64) -> bool {
    let current = etag(version);
    headers
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == current)
}

fn with_etag<A: CrudApi>(
    mut response: actix_web::HttpResponseBuilder,
    row: A::Resource,
) -> HttpResponse {
    response
        .insert_header((header::ETAG, etag(row.meta().version)))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .json(A::View::from(row))
}

async fn list<A: CrudApi>(
    Caller(caller): Caller,
    params: ListParams,
    service: Service<A>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&<A::Resource as Resource>::LIST)?;
    let page = service.for_caller(&caller).list(query).await?;
    Ok(HttpResponse::Ok().json(page.map(A::View::from)))
}

async fn get<A: CrudApi>(
    req: HttpRequest,
    Caller(caller): Caller,
    IdPath(id): IdPath<Uuid>,
    service: Service<A>,
) -> Result<HttpResponse, ApiError> {
    let row = service.for_caller(&caller).get(Id::<A>::from(id)).await?;
    let version = row.meta().version;
    if none_match(req.headers(), version) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag(version)))
            .finish());
    }
    Ok(with_etag::<A>(HttpResponse::Ok(), row))
}

async fn create<A: CrudApi>(
    Caller(caller): Caller,
    service: Service<A>,
    StrictJson(body): StrictJson<A::Create>,
) -> Result<HttpResponse, ApiError> {
    let row = service.for_caller(&caller).create(body.into()).await?;
    let mut response = HttpResponse::Created();
    response.insert_header((
        header::LOCATION,
        format!("{API_PREFIX}{}/{}", A::PATH, row.id()),
    ));
    Ok(with_etag::<A>(response, row))
}

/// Body of `POST {path}/bulk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkCreate<T> {
    items: Vec<T>,
}

/// Answer of `POST {path}/bulk`: the created rows, in request order.
#[derive(Debug, Serialize)]
struct BulkCreated<T> {
    items: Vec<T>,
}

async fn create_many<A: CrudApi>(
    Caller(caller): Caller,
    service: Service<A>,
    StrictJson(body): StrictJson<BulkCreate<A::Create>>,
) -> Result<HttpResponse, ApiError> {
    let inputs = body.items.into_iter().map(Into::into).collect();
    let rows = service.for_caller(&caller).create_many(inputs).await?;
    Ok(HttpResponse::Created().json(BulkCreated {
        items: rows.into_iter().map(A::View::from).collect(),
    }))
}

async fn update<A: CrudApi>(
    req: HttpRequest,
    Caller(caller): Caller,
    IdPath(id): IdPath<Uuid>,
    service: Service<A>,
    StrictJson(body): StrictJson<A::Update>,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(req.headers());
    let row = service
        .for_caller(&caller)
        .update(Id::<A>::from(id), body.into(), expected.as_deref())
        .await?;
    Ok(with_etag::<A>(HttpResponse::Ok(), row))
}

async fn delete<A: CrudApi>(
    req: HttpRequest,
    Caller(caller): Caller,
    IdPath(id): IdPath<Uuid>,
    service: Service<A>,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(req.headers());
    service
        .for_caller(&caller)
        .delete(Id::<A>::from(id), expected.as_deref())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn restore<A: CrudApi>(
    Caller(caller): Caller,
    IdPath(id): IdPath<Uuid>,
    service: Service<A>,
) -> Result<HttpResponse, ApiError> {
    let row = service
        .for_caller(&caller)
        .restore(Id::<A>::from(id))
        .await?;
    Ok(with_etag::<A>(HttpResponse::Ok(), row))
}

// --- OpenAPI ---------------------------------------------------------------------------------

fn json_content(schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn string_header(description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(SchemaType::new(Type::String)));
    header.description = Some(description.to_owned());
    header
}

fn items_of(name: &str, description: &str) -> Schema {
    ObjectBuilder::new()
        .property(
            "items",
            ArrayBuilder::new()
                .items(Ref::from_schema_name(name))
                .min_items(Some(1))
                .max_items(Some(keel_kernel::crud::MAX_BULK)),
        )
        .required("items")
        .description(Some(description))
        .into()
}

/// `A`'s operations, schemas and tag, to merge into the API document.
pub fn openapi<A: CrudApi>() -> OpenApi {
    let ops = A::OPERATIONS;
    let kind = <A::Resource as Resource>::KIND;
    let tag = A::TAG;
    let view = A::View::name().into_owned();
    let create = A::Create::name().into_owned();
    let update = A::Update::name().into_owned();
    let page = format!("{view}Page");
    let bulk_body = format!("{create}Bulk");
    let bulk_result = format!("{view}BulkResult");
    let base = format!("{API_PREFIX}{}", A::PATH);

    let operation = |id: String, summary: String| {
        OperationBuilder::new()
            .tag(tag)
            .operation_id(Some(id))
            .summary(Some(summary))
            .securities(Some(authenticated()))
            .response("401", error_ref("Unauthenticated"))
            .response("403", error_ref("Forbidden"))
    };
    let id_parameter = ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Uuid,
                ))),
        ))
        .build();
    let if_match_parameter = ParameterBuilder::new()
        .name("If-Match")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The `ETag` last read (e.g. `\"v3\"`): the change applies only if nobody changed the row since; otherwise 412.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(SchemaType::new(Type::String))))
        .build();
    let body = |name: &str, description: &str| {
        RequestBodyBuilder::new()
            .description(Some(description))
            .required(Some(Required::True))
            .content(
                "application/json",
                json_content(Ref::from_schema_name(name)),
            )
            .build()
    };
    let one_row = |description: &str, status_headers: &[(&str, &str)]| {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            json_content(Ref::from_schema_name(&view)),
        );
        for (name, description) in status_headers {
            response = response.header(*name, string_header(description));
        }
        response.build()
    };
    let etag_header = (
        "ETag",
        "The row's version, for `If-Match` and `If-None-Match`.",
    );

    let mut paths = PathsBuilder::new();
    let mut collection = Vec::new();
    if ops.list {
        collection.push((
            HttpMethod::Get,
            operation(
                format!("list_{tag}"),
                format!("List {tag} in the caller's scope"),
            )
            .parameters(Some(list_parameters(&<A::Resource as Resource>::LIST)))
            .response(
                "200",
                ResponseBuilder::new().description("One page.").content(
                    "application/json",
                    json_content(Ref::from_schema_name(&page)),
                ),
            )
            .response("422", error_ref("ValidationFailed"))
            .build(),
        ));
    }
    if ops.create {
        collection.push((
            HttpMethod::Post,
            operation(
                format!("create_{kind}"),
                format!("Create a {kind} owned by the caller"),
            )
            .request_body(Some(body(&create, "The new row.")))
            .response(
                "201",
                one_row(
                    "Created.",
                    &[etag_header, ("Location", "The new row's URL.")],
                ),
            )
            .response("400", error_ref("BadRequest"))
            .response("413", error_ref("PayloadTooLarge"))
            .response("415", error_ref("UnsupportedMediaType"))
            .response("422", error_ref("ValidationFailed"))
            .build(),
        ));
    }
    if !collection.is_empty() {
        paths = paths.path(base.clone(), path_item(collection));
    }
    if ops.bulk_create {
        let operation = operation(
            format!("create_{tag}_in_bulk"),
            format!(
                "Create up to {} {tag} at once: all or none",
                keel_kernel::crud::MAX_BULK
            ),
        )
        .request_body(Some(body(&bulk_body, "The new rows.")))
        .response(
            "201",
            ResponseBuilder::new()
                .description("Every row created, in request order.")
                .content(
                    "application/json",
                    json_content(Ref::from_schema_name(&bulk_result)),
                ),
        )
        .response("400", error_ref("BadRequest"))
        .response("413", error_ref("PayloadTooLarge"))
        .response("415", error_ref("UnsupportedMediaType"))
        .response("422", error_ref("ValidationFailed"))
        .build();
        paths = paths.path(
            format!("{base}/bulk"),
            PathItem::new(HttpMethod::Post, operation),
        );
    }
    let mut item = Vec::new();
    if ops.get {
        item.push((
            HttpMethod::Get,
            operation(format!("get_{kind}"), format!("Read one {kind}"))
                .parameter(id_parameter.clone())
                .response("200", one_row("The row.", &[etag_header]))
                .response(
                    "304",
                    ResponseBuilder::new()
                        .description("`If-None-Match` names the current version."),
                )
                .response("404", error_ref("NotFound"))
                .response("422", error_ref("ValidationFailed"))
                .build(),
        ));
    }
    if ops.update {
        item.push((
            HttpMethod::Patch,
            operation(format!("update_{kind}"), format!("Change a {kind}"))
                .parameter(id_parameter.clone())
                .parameter(if_match_parameter.clone())
                .request_body(Some(body(
                    &update,
                    "The fields to change; absent fields stay.",
                )))
                .response("200", one_row("The changed row.", &[etag_header]))
                .response("400", error_ref("BadRequest"))
                .response("404", error_ref("NotFound"))
                .response("412", error_ref("PreconditionFailed"))
                .response("413", error_ref("PayloadTooLarge"))
                .response("415", error_ref("UnsupportedMediaType"))
                .response("422", error_ref("ValidationFailed"))
                .build(),
        ));
    }
    if ops.delete {
        item.push((
            HttpMethod::Delete,
            operation(
                format!("delete_{kind}"),
                format!("Delete a {kind} (restorable)"),
            )
            .parameter(id_parameter.clone())
            .parameter(if_match_parameter)
            .response("204", ResponseBuilder::new().description("Deleted."))
            .response("404", error_ref("NotFound"))
            .response("412", error_ref("PreconditionFailed"))
            .response("422", error_ref("ValidationFailed"))
            .build(),
        ));
    }
    if !item.is_empty() {
        paths = paths.path(format!("{base}/{{id}}"), path_item(item));
    }
    if ops.restore {
        let operation = operation(
            format!("restore_{kind}"),
            format!("Restore a deleted {kind}"),
        )
        .parameter(id_parameter)
        .response("200", one_row("The restored row.", &[etag_header]))
        .response("404", error_ref("NotFound"))
        .response("422", error_ref("ValidationFailed"))
        .build();
        paths = paths.path(
            format!("{base}/{{id}}/restore"),
            PathItem::new(HttpMethod::Post, operation),
        );
    }

    let mut schemas: Vec<(String, RefOr<Schema>)> = vec![
        (view.clone(), A::View::schema()),
        (create.clone(), A::Create::schema()),
        (update, A::Update::schema()),
        (page, page_schema(&view).into()),
        (bulk_body, items_of(&create, "Up to 100 new rows.").into()),
        (bulk_result, items_of(&view, "The created rows.").into()),
    ];
    A::View::schemas(&mut schemas);
    A::Create::schemas(&mut schemas);
    A::Update::schemas(&mut schemas);
    OpenApiBuilder::new()
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new().schemas_from_iter(schemas).build(),
        ))
        .build()
}

fn path_item(operations: Vec<(HttpMethod, utoipa::openapi::path::Operation)>) -> PathItem {
    let mut item = PathItem::default();
    for (method, operation) in operations {
        item.merge_operations(PathItem::new(method, operation));
    }
    item
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn if_match_accepts_strong_tags_and_star() {
        assert_eq!(if_match(&HeaderMap::new()), None);
        assert_eq!(if_match(&headers(&header::IF_MATCH, &["*"])), None);
        assert_eq!(
            if_match(&headers(&header::IF_MATCH, &["\"v3\""])),
            Some(vec![3])
        );
        assert_eq!(
            if_match(&headers(&header::IF_MATCH, &["\"v3\", \"v4\"", "\"v9\""])),
            Some(vec![3, 4, 9])
        );
        // Weak and malformed tags never match: the request must fail with 412, not pass.
        assert_eq!(
            if_match(&headers(&header::IF_MATCH, &["W/\"v3\""])),
            Some(vec![])
        );
        assert_eq!(
            if_match(&headers(&header::IF_MATCH, &["3", "\"x\""])),
            Some(vec![])
        );
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match(
            &headers(&header::IF_NONE_MATCH, &["W/\"v2\""]),
            2
        ));
        assert!(none_match(
            &headers(&header::IF_NONE_MATCH, &["\"v1\", \"v2\""]),
            2
        ));
        assert!(none_match(&headers(&header::IF_NONE_MATCH, &["*"]), 2));
        assert!(!none_match(
            &headers(&header::IF_NONE_MATCH, &["\"v1\""]),
            2
        ));
        assert!(!none_match(&HeaderMap::new(), 2));
    }
}
