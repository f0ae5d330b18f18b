//! The list query language: `limit`, `offset` or `cursor`, `sort`, filters and `q`.
//!
//! Each listable resource declares a [`ListSpec`]: which fields exist, which may be sorted and
//! filtered, and whether free-text search applies. [`ListQuery::parse`] checks raw query
//! parameters against that allow-list before any SQL exists, reports every problem at once
//! (naming the parameter at fault), and yields typed values the storage layer binds as
//! parameters. Nothing a caller sends is ever spliced into SQL.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainError, FieldError};
use crate::validation::FieldErrors;

/// Page size when the caller names none.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 100;
/// The deepest `offset` accepted; deeper pages must use the cursor, which stays fast.
pub const MAX_OFFSET: u64 = 1_000_000;
/// Most values an `__in` filter may list.
pub const MAX_IN_VALUES: usize = 100;
/// Longest accepted text filter or search value, in characters.
pub const MAX_TEXT_VALUE_CHARS: usize = 200;
/// Longest accepted cursor, in bytes.
const MAX_CURSOR_LEN: usize = 2048;
/// The implicit last sort key that makes every ordering total (and keyset paging exact).
pub const ID_FIELD: &str = "id";

/// The type of a listable field; decides how filter and cursor values are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Free text; equality and `__in` only (collations differ between databases).
    Text,
    /// One of a fixed set of lowercase words.
    Enum(&'static [&'static str]),
    /// An RFC 3339 instant; supports ranges.
    Timestamp,
    /// A signed 64-bit integer; supports ranges.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A UUID.
    Uuid,
}

impl FieldKind {
    /// Whether `__gte` and `__lte` apply.
    pub fn supports_ranges(self) -> bool {
        matches!(self, Self::Timestamp | Self::Integer)
    }

    /// What a value must look like, for error messages and API docs.
    pub fn describe(self) -> String {
        match self {
            Self::Text => "text".to_owned(),
            Self::Enum(values) => format!("one of: {}", values.join(", ")),
            Self::Timestamp => "an RFC 3339 timestamp such as 2026-01-31T12:00:00Z".to_owned(),
            Self::Integer => "an integer".to_owned(),
            Self::Boolean => "true or false".to_owned(),
            Self::Uuid => "a UUID".to_owned(),
        }
    }

    /// Parses a value sent by a caller.
    fn parse(self, raw: &str) -> Result<Value, String> {
        let invalid = || format!("must be {}", self.describe());
        match self {
            Self::Text => {
                if raw.chars().count() > MAX_TEXT_VALUE_CHARS {
                    Err(format!("must be at most {MAX_TEXT_VALUE_CHARS} characters"))
                } else {
                    Ok(Value::Text(raw.to_owned()))
                }
            }
            Self::Enum(values) => values
                .iter()
                .find(|v| **v == raw)
                .map(|v| Value::Text((*v).to_owned()))
                .ok_or_else(invalid),
            Self::Timestamp => DateTime::parse_from_rfc3339(raw)
                .map(|t| Value::Timestamp(t.with_timezone(&Utc)))
                .map_err(|_| invalid()),
            Self::Integer => raw.parse().map(Value::Integer).map_err(|_| invalid()),
            Self::Boolean => match raw {
                "true" => Ok(Value::Boolean(true)),
                "false" => Ok(Value::Boolean(false)),
                _ => Err(invalid()),
            },
            Self::Uuid => Uuid::parse_str(raw).map(Value::Uuid).map_err(|_| invalid()),
        }
    }
}

/// One field a list may expose to sorting or filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The public field name, as in the JSON representation.
    pub name: &'static str,
    /// Its type.
    pub kind: FieldKind,
    /// Whether `sort=` may name it.
    pub sortable: bool,
    /// Whether filters may name it.
    pub filterable: bool,
    /// Whether the column may hold NULL (NULLs sort last in both directions).
    pub nullable: bool,
}

impl FieldSpec {
    /// A field that is neither sortable nor filterable yet.
    pub const fn new(name: &'static str, kind: FieldKind) -> Self {
        Self {
            name,
            kind,
            sortable: false,
            filterable: false,
            nullable: false,
        }
    }

    /// Allows `sort=` on this field.
    pub const fn sortable(mut self) -> Self {
        self.sortable = true;
        self
    }

    /// Allows filters on this field.
    pub const fn filterable(mut self) -> Self {
        self.filterable = true;
        self
    }

    /// Marks the field as possibly NULL.
    pub const fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }
}

/// The allow-list for one listable resource.
#[derive(Debug, Clone, Copy)]
pub struct ListSpec {
    /// Fields callers may sort or filter on.
    pub fields: &'static [FieldSpec],
    /// Sort used when the caller gives none, in `sort=` syntax, e.g. `-published_at`.
    pub default_sort: &'static str,
    /// Whether `q=` (free-text search) is supported.
    pub searchable: bool,
}

impl ListSpec {
    fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    fn sortable_names(&self) -> Vec<&'static str> {
        self.fields
            .iter()
            .filter(|f| f.sortable)
            .map(|f| f.name)
            .collect()
    }

    /// Every query parameter name this spec accepts, for error messages and documentation.
    pub fn parameter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["limit", "offset", "cursor", "sort"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if self.searchable {
            names.push("q".to_owned());
        }
        for field in self.fields.iter().filter(|f| f.filterable) {
            names.push(field.name.to_owned());
            names.push(format!("{}__in", field.name));
            if field.kind.supports_ranges() {
                names.push(format!("{}__gte", field.name));
                names.push(format!("{}__lte", field.name));
            }
        }
        names
    }
}

/// A typed value from a filter or a cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text (also enum words).
    Text(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
    /// An instant.
    Timestamp(DateTime<Utc>),
    /// A UUID.
    Uuid(Uuid),
    /// SQL NULL (only in cursors over nullable sort fields).
    Null,
}

impl Value {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(s) => serde_json::Value::from(s.as_str()),
            Self::Integer(i) => serde_json::Value::from(*i),
            Self::Boolean(b) => serde_json::Value::from(*b),
            Self::Timestamp(t) => {
                serde_json::Value::from(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            Self::Uuid(u) => serde_json::Value::from(u.to_string()),
            Self::Null => serde_json::Value::Null,
        }
    }

    fn from_json(kind: FieldKind, nullable: bool, json: &serde_json::Value) -> Option<Self> {
        match (kind, json) {
            (_, serde_json::Value::Null) if nullable => Some(Self::Null),
            (FieldKind::Text | FieldKind::Enum(_), serde_json::Value::String(s)) => {
                Some(Self::Text(s.clone()))
            }
            (FieldKind::Integer, serde_json::Value::Number(n)) => n.as_i64().map(Self::Integer),
            (FieldKind::Boolean, serde_json::Value::Bool(b)) => Some(Self::Boolean(*b)),
            (FieldKind::Timestamp, serde_json::Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| Self::Timestamp(t.with_timezone(&Utc))),
            (FieldKind::Uuid, serde_json::Value::String(s)) => {
                Uuid::parse_str(s).ok().map(Self::Uuid)
            }
            _ => None,
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// One key of an ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// The public field name.
    pub field: &'static str,
    /// The field's type.
    pub kind: FieldKind,
    /// Whether the column may be NULL.
    pub nullable: bool,
    /// The direction.
    pub direction: Direction,
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.direction == Direction::Desc {
            f.write_str("-")?;
        }
        f.write_str(self.field)
    }
}

/// A filter condition on one field.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterOp {
    /// `field=value`
    Eq(Value),
    /// `field__in=a,b`
    In(Vec<Value>),
    /// `field__gte=value`
    Gte(Value),
    /// `field__lte=value`
    Lte(Value),
}

/// A filter on one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The public field name.
    pub field: &'static str,
    /// The condition.
    pub op: FilterOp,
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// Skip this many rows (cheap for shallow pages, slow for deep ones).
    Offset(u64),
    /// Continue after the row a cursor points at (constant cost at any depth).
    After(Cursor),
}

/// A decoded keyset cursor: the sort-key values of the last row of the previous page.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// One value per key of [`ListQuery::sort`], the implicit `id` key last.
    pub values: Vec<Value>,
}

#[derive(Serialize, Deserialize)]
struct CursorWire {
    /// The ordering the cursor was made for; a cursor is only valid with the same `sort`.
    s: String,
    /// Sort-key values of the last row.
    v: Vec<serde_json::Value>,
}

impl Cursor {
    /// Encodes the cursor that continues after a row whose sort-key values are `values`.
    pub fn encode(sort: &[SortKey], values: &[Value]) -> String {
        let wire = CursorWire {
            s: sort_fingerprint(sort),
            v: values.iter().map(Value::to_json).collect(),
        };
        // Serializing plain strings and JSON values cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(sort: &[SortKey], raw: &str) -> Result<Self, String> {
        const INVALID: &str = "is not a cursor this list returned";
        if raw.len() > MAX_CURSOR_LEN {
            return Err(INVALID.to_owned());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| INVALID.to_owned())?;
        let wire: CursorWire = serde_json::from_slice(&bytes).map_err(|_| INVALID.to_owned())?;
        if wire.s != sort_fingerprint(sort) {
            return Err(
                "was issued for a different sort order; send the same sort parameter".to_owned(),
            );
        }
        if wire.v.len() != sort.len() {
            return Err(INVALID.to_owned());
        }
        let values = sort
            .iter()
            .zip(&wire.v)
            .map(|(key, json)| Value::from_json(key.kind, key.nullable, json))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| INVALID.to_owned())?;
        Ok(Self { values })
    }
}

fn sort_fingerprint(sort: &[SortKey]) -> String {
    sort.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A checked list request, ready for a repository.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Page size, `1..=MAX_LIMIT`.
    pub limit: u32,
    /// Where the page starts.
    pub position: Position,
    /// The ordering; always ends with the `id` key so it is total.
    pub sort: Vec<SortKey>,
    /// Conditions, all of which must hold.
    pub filters: Vec<Filter>,
    /// Free-text search, trimmed and non-empty.
    pub search: Option<String>,
}

impl ListQuery {
    /// The first page with the spec's default ordering.
    pub fn first_page(spec: &ListSpec) -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            position: Position::Offset(0),
            sort: parse_sort(spec, spec.default_sort)
                .unwrap_or_else(|_| vec![id_key(Direction::Asc)]),
            filters: Vec::new(),
            search: None,
        }
    }

    /// Parses raw query parameters against `spec`.
    ///
    /// Every problem is reported at once, each naming its parameter: unknown or repeated
    /// parameters, out-of-range limits, unsortable fields, malformed values, foreign cursors.
    pub fn parse<K, V>(
        spec: &ListSpec,
        params: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, DomainError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut errors = FieldErrors::new();
        let mut seen = BTreeSet::new();
        let mut query = Self::first_page(spec);
        let mut offset = None;
        let mut cursor_raw = None;
        let mut unknown = Vec::new();

        for (key, value) in params {
            let (key, value) = (key.as_ref(), value.as_ref());
            if !seen.insert(key.to_owned()) {
                errors.add(key, "duplicate_parameter", "is given more than once");
                continue;
            }
            match key {
                "limit" => match value.parse::<u32>() {
                    Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => query.limit = limit,
                    _ => errors.add(
                        "limit",
                        "range",
                        format!("must be an integer between 1 and {MAX_LIMIT}"),
                    ),
                },
                "offset" => match value.parse::<u64>() {
                    Ok(o) if o <= MAX_OFFSET => offset = Some(o),
                    _ => errors.add(
                        "offset",
                        "range",
                        format!(
                            "must be an integer between 0 and {MAX_OFFSET}; use `cursor` for deeper pages"
                        ),
                    ),
                },
                "cursor" => cursor_raw = Some(value.to_owned()),
                "sort" => match parse_sort(spec, value) {
                    Ok(sort) => query.sort = sort,
                    Err(error) => errors.add("sort", error.code, error.message),
                },
                "q" if spec.searchable => {
                    let trimmed = value.trim();
                    if trimmed.is_empty() || trimmed.chars().count() > MAX_TEXT_VALUE_CHARS {
                        errors.add(
                            "q",
                            "length",
                            format!("must be between 1 and {MAX_TEXT_VALUE_CHARS} characters"),
                        );
                    } else {
                        query.search = Some(trimmed.to_owned());
                    }
                }
                _ => match parse_filter(spec, key, value) {
                    Some(Ok(filter)) => query.filters.push(filter),
                    Some(Err(error)) => errors.add(key, error.code, error.message),
                    None => unknown.push(key.to_owned()),
                },
            }
        }

        if !unknown.is_empty() {
            let allowed = spec.parameter_names().join(", ");
            for key in unknown {
                errors.add(
                    key,
                    "unknown_parameter",
                    format!("is not a parameter of this list; allowed: {allowed}"),
                );
            }
        }

        match (offset, cursor_raw) {
            (Some(_), Some(_)) => errors.add(
                "cursor",
                "conflict",
                "cannot be combined with offset; send one of them",
            ),
            (Some(offset), None) => query.position = Position::Offset(offset),
            (None, Some(raw)) => match Cursor::decode(&query.sort, &raw) {
                Ok(cursor) => query.position = Position::After(cursor),
                Err(message) => errors.add("cursor", "invalid_cursor", message),
            },
            (None, None) => {}
        }

        errors.into_result().map(|()| query)
    }

    /// The offset of this page, when it is offset-based.
    pub fn offset(&self) -> Option<u64> {
        match self.position {
            Position::Offset(offset) => Some(offset),
            Position::After(_) => None,
        }
    }
}

fn id_key(direction: Direction) -> SortKey {
    SortKey {
        field: ID_FIELD,
        kind: FieldKind::Uuid,
        nullable: false,
        direction,
    }
}

fn parse_sort(spec: &ListSpec, raw: &str) -> Result<Vec<SortKey>, FieldError> {
    let mut keys: Vec<SortKey> = Vec::new();
    for part in raw.split(',') {
        let (direction, name) = match part.strip_prefix('-') {
            Some(name) => (Direction::Desc, name),
            None => (Direction::Asc, part.strip_prefix('+').unwrap_or(part)),
        };
        let field = spec.field(name).filter(|f| f.sortable).ok_or_else(|| {
            FieldError::new(
                "sort",
                "unknown_sort_field",
                format!(
                    "cannot sort by `{name}`; sortable fields: {}",
                    spec.sortable_names().join(", ")
                ),
            )
        })?;
        if keys.iter().any(|k| k.field == field.name) {
            return Err(FieldError::new(
                "sort",
                "duplicate_sort_field",
                format!("names `{name}` more than once"),
            ));
        }
        keys.push(SortKey {
            field: field.name,
            kind: field.kind,
            nullable: field.nullable,
            direction,
        });
    }
    // Ties are broken by id in the direction of the last key, which makes the order total.
    let tie_direction = keys.last().map_or(Direction::Asc, |k| k.direction);
    keys.push(id_key(tie_direction));
    Ok(keys)
}

fn parse_filter(spec: &ListSpec, key: &str, raw: &str) -> Option<Result<Filter, FieldError>> {
    let (name, op) = match key.rsplit_once("__") {
        Some((name, op @ ("in" | "gte" | "lte"))) => (name, op),
        Some(_) => return None,
        None => (key, "eq"),
    };
    let field = spec.field(name).filter(|f| f.filterable)?;
    let error = |code: &str, message: String| Some(Err(FieldError::new(key, code, message)));
    let parse_one = |raw: &str| field.kind.parse(raw);

    let op = match op {
        "eq" => match parse_one(raw) {
            Ok(value) => FilterOp::Eq(value),
            Err(message) => return error("invalid_value", message),
        },
        "in" => {
            let parts: Vec<&str> = raw.split(',').collect();
            if parts.len() > MAX_IN_VALUES {
                return error(
                    "too_many_values",
                    format!("may list at most {MAX_IN_VALUES} values"),
                );
            }
            match parts
                .into_iter()
                .map(parse_one)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(values) => FilterOp::In(values),
                Err(message) => return error("invalid_value", format!("each value {message}")),
            }
        }
        range if field.kind.supports_ranges() => match parse_one(raw) {
            Ok(value) if range == "gte" => FilterOp::Gte(value),
            Ok(value) => FilterOp::Lte(value),
            Err(message) => return error("invalid_value", message),
        },
        _ => {
            return error(
                "unsupported_operator",
                format!("`{name}` supports equality and __in only"),
            );
        }
    };
    Some(Ok(Filter {
        field: field.name,
        op,
    }))
}

/// One page of results, serialized as the list body of the HTTP contract (and read back from
/// caches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// How many rows match the filters, across all pages.
    pub total: u64,
    /// The page size asked for.
    pub limit: u32,
    /// The offset of this page; `null` for cursor-based pages.
    pub offset: Option<u64>,
    /// Pass as `cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of `query` from `rows`: the rows of this page in order, fetched with one more
    /// than `query.limit` when another page follows. Drops that extra row and, when it was
    /// there, sets `next_cursor` from the last row kept (`cursor_values` gives its sort-key
    /// values, the implicit `id` last).
    pub fn of_window<E>(
        mut rows: Vec<T>,
        query: &ListQuery,
        total: u64,
        cursor_values: impl Fn(&T) -> Result<Vec<Value>, E>,
    ) -> Result<Self, E> {
        let limit = query.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|last| cursor_values(last).map(|values| Cursor::encode(&query.sort, &values)))
                .transpose()?
        } else {
            None
        };
        Ok(Self {
            items: rows,
            total,
            limit: query.limit,
            offset: query.offset(),
            next_cursor,
        })
    }

    /// Converts every item, keeping the paging data.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            limit: self.limit,
            offset: self.offset,
            next_cursor: self.next_cursor,
        }
    }

    /// Converts every item with a fallible conversion (e.g. a stored row into an entity),
    /// failing on the first error.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
            total: self.total,
            limit: self.limit,
            offset: self.offset,
            next_cursor: self.next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUSES: &[&str] = &["draft", "published"];
    const FIELDS: &[FieldSpec] = &[
        FieldSpec::new("title", FieldKind::Text)
            .sortable()
            .filterable(),
        FieldSpec::new("status", FieldKind::Enum(STATUSES)).filterable(),
        FieldSpec::new("published_at", FieldKind::Timestamp)
            .sortable()
            .filterable()
            .nullable(),
        FieldSpec::new("created_at", FieldKind::Timestamp).sortable(),
    ];
    const SPEC: ListSpec = ListSpec {
        fields: FIELDS,
        default_sort: "-published_at",
        searchable: true,
    };

    fn parse(params: &[(&str, &str)]) -> Result<ListQuery, Vec<FieldError>> {
        ListQuery::parse(&SPEC, params.iter().copied()).map_err(|e| match e {
            DomainError::Validation(errors) => errors,
            other => panic!("unexpected error {other:?}"),
        })
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let query = parse(&[]).unwrap();
        assert_eq!(query.limit, DEFAULT_LIMIT);
        assert_eq!(query.position, Position::Offset(0));
        let sort: Vec<String> = query.sort.iter().map(ToString::to_string).collect();
        assert_eq!(sort, ["-published_at", "-id"]);
    }

    #[test]
    fn limit_must_be_within_bounds() {
        for bad in ["0", "101", "1000", "-1", "ten", ""] {
            let errors = parse(&[("limit", bad)]).unwrap_err();
            assert_eq!(fields(&errors), ["limit"], "limit={bad}");
        }
        assert_eq!(parse(&[("limit", "100")]).unwrap().limit, 100);
    }

    #[test]
    fn sorting_only_on_allowed_fields() {
        let query = parse(&[("sort", "title,-created_at")]).unwrap();
        let sort: Vec<String> = query.sort.iter().map(ToString::to_string).collect();
        assert_eq!(sort, ["title", "-created_at", "-id"]);
        for bad in ["status", "password_hash", "title,title", "", "-"] {
            let errors = parse(&[("sort", bad)]).unwrap_err();
            assert_eq!(fields(&errors), ["sort"], "sort={bad}");
        }
    }

    #[test]
    fn every_unknown_parameter_is_named() {
        let errors = parse(&[("owner_id", "1"), ("limit", "5"), ("drop", "x")]).unwrap_err();
        assert_eq!(fields(&errors), ["owner_id", "drop"]);
        assert!(
            errors[0]
                .message
                .contains("allowed: limit, offset, cursor, sort, q")
        );
    }

    #[test]
    fn filters_are_typed_and_checked() {
        let query = parse(&[
            ("status", "published"),
            ("title__in", "a,b"),
            ("published_at__gte", "2026-01-01T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(query.filters.len(), 3);
        assert_eq!(
            query.filters[0].op,
            FilterOp::Eq(Value::Text("published".into()))
        );

        let errors = parse(&[
            ("status", "archived"),
            ("published_at__gte", "yesterday"),
            ("title__gte", "a"),
            ("created_at", "2026-01-01T00:00:00Z"),
        ])
        .unwrap_err();
        assert_eq!(
            fields(&errors),
            ["status", "published_at__gte", "title__gte", "created_at"]
        );
    }

    #[test]
    fn sql_looking_values_are_plain_data() {
        let query = parse(&[("title", "x' OR '1'='1"), ("q", "'; DROP TABLE users; --")]).unwrap();
        assert_eq!(
            query.filters[0].op,
            FilterOp::Eq(Value::Text("x' OR '1'='1".into()))
        );
        assert_eq!(query.search.as_deref(), Some("'; DROP TABLE users; --"));
    }

    #[test]
    fn repeated_parameters_are_rejected() {
        let errors = parse(&[("limit", "5"), ("limit", "6")]).unwrap_err();
        assert_eq!(fields(&errors), ["limit"]);
        assert_eq!(errors[0].code, "duplicate_parameter");
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_sort() {
        let sort = parse(&[("sort", "title")]).unwrap().sort;
        let id = Uuid::now_v7();
        let encoded = Cursor::encode(&sort, &[Value::Text("abc".into()), Value::Uuid(id)]);
        let query = parse(&[("sort", "title"), ("cursor", &encoded)]).unwrap();
        assert_eq!(
            query.position,
            Position::After(Cursor {
                values: vec![Value::Text("abc".into()), Value::Uuid(id)]
            })
        );
        assert_eq!(query.offset(), None);

        let errors = parse(&[("sort", "-title"), ("cursor", &encoded)]).unwrap_err();
        assert_eq!(fields(&errors), ["cursor"]);
        let errors = parse(&[("cursor", "bm90LWpzb24")]).unwrap_err();
        assert_eq!(errors[0].code, "invalid_cursor");
        let errors =
            parse(&[("cursor", &encoded), ("offset", "3"), ("sort", "title")]).unwrap_err();
        assert_eq!(fields(&errors), ["cursor"]);
    }

    #[test]
    fn nullable_sort_keys_accept_null_cursor_values() {
        let sort = ListQuery::first_page(&SPEC).sort;
        let encoded = Cursor::encode(&sort, &[Value::Null, Value::Uuid(Uuid::now_v7())]);
        assert!(parse(&[("cursor", &encoded)]).is_ok());
        let sort = parse(&[("sort", "title")]).unwrap().sort;
        let encoded = Cursor::encode(&sort, &[Value::Null, Value::Uuid(Uuid::now_v7())]);
        assert!(parse(&[("sort", "title"), ("cursor", &encoded)]).is_err());
    }

    #[test]
    fn search_is_trimmed_and_bounded() {
        assert_eq!(
            parse(&[("q", "  rust  ")]).unwrap().search.as_deref(),
            Some("rust")
        );
        assert!(parse(&[("q", "   ")]).is_err());
        assert!(parse(&[("q", &"x".repeat(201))]).is_err());
    }

    #[test]
    fn deep_offsets_point_to_the_cursor() {
        let errors = parse(&[("offset", "1000001")]).unwrap_err();
        assert!(errors[0].message.contains("cursor"));
        assert_eq!(parse(&[("offset", "40")]).unwrap().offset(), Some(40));
    }
}
