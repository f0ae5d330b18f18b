//! What `cargo xtask new-domain` is asked for: a checked name and field list.

use anyhow::{bail, ensure};

/// A field type the generator supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// A one-line string, up to 255 characters.
    String,
    /// Free text, up to 100 000 characters.
    Text,
    Bool,
    I32,
    I64,
    F64,
    /// An exact decimal (`rust_decimal`), sent as a string.
    Decimal,
    Uuid,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339.
    DateTime,
    /// Any JSON value.
    Json,
}

/// Every type name the command line accepts.
pub(crate) const TYPE_NAMES: &str =
    "string, text, bool, i32, i64, f64, decimal, uuid, date, datetime, json";

impl FieldType {
    fn parse(raw: &str) -> anyhow::Result<Self> {
        Ok(match raw {
            "string" => Self::String,
            "text" => Self::Text,
            "bool" => Self::Bool,
            "i32" => Self::I32,
            "i64" => Self::I64,
            "f64" => Self::F64,
            "decimal" => Self::Decimal,
            "uuid" => Self::Uuid,
            "date" => Self::Date,
            "datetime" => Self::DateTime,
            "json" => Self::Json,
            other => bail!("unknown field type `{other}`; use one of: {TYPE_NAMES}"),
        })
    }

    /// The Rust type in the domain, the API and the entity.
    pub(crate) fn rust(self) -> &'static str {
        match self {
            Self::String | Self::Text => "String",
            Self::Bool => "bool",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F64 => "f64",
            Self::Decimal => "rust_decimal::Decimal",
            Self::Uuid => "uuid::Uuid",
            Self::Date => "chrono::NaiveDate",
            Self::DateTime => "chrono::DateTime<chrono::Utc>",
            Self::Json => "serde_json::Value",
        }
    }

    /// Whether values are `Copy` (copied rather than cloned).
    pub(crate) fn is_copy(self) -> bool {
        !matches!(self, Self::String | Self::Text | Self::Json)
    }

    /// Whether a character limit applies.
    pub(crate) fn max_chars(self) -> Option<&'static str> {
        match self {
            Self::String => Some("255"),
            Self::Text => Some("100_000"),
            _ => None,
        }
    }

    /// The `FieldKind` of lists, with whether it sorts, or `None` when it cannot be listed on.
    pub(crate) fn list_kind(self) -> Option<(&'static str, bool)> {
        match self {
            Self::String => Some(("FieldKind::Text", true)),
            Self::Bool => Some(("FieldKind::Boolean", false)),
            Self::I32 | Self::I64 => Some(("FieldKind::Integer", true)),
            Self::Uuid => Some(("FieldKind::Uuid", false)),
            Self::DateTime => Some(("FieldKind::Timestamp", true)),
            Self::Text | Self::F64 | Self::Decimal | Self::Date | Self::Json => None,
        }
    }

    /// Whether `q=` searches it.
    pub(crate) fn searchable(self) -> bool {
        matches!(self, Self::String | Self::Text)
    }

    /// The sea-orm-migration column function (without `_null`) and its extra arguments.
    pub(crate) fn column(self) -> (&'static str, &'static str) {
        match self {
            Self::String => ("string_len", ", 255"),
            Self::Text => ("text", ""),
            Self::Bool => ("boolean", ""),
            Self::I32 => ("integer", ""),
            Self::I64 => ("big_integer", ""),
            Self::F64 => ("double", ""),
            Self::Decimal => ("decimal_len", ", 20, 6"),
            Self::Uuid => ("uuid", ""),
            Self::Date => ("date", ""),
            Self::DateTime => ("timestamp_with_time_zone", ""),
            Self::Json => ("json", ""),
        }
    }

    /// A valid JSON value, for examples and tests.
    pub(crate) fn example(self, field: &str) -> String {
        match self {
            Self::String => format!("\"Sample {field}\""),
            Self::Text => format!("\"A longer {field}, over two lines.\\nSecond line.\""),
            Self::Bool => "true".to_owned(),
            Self::I32 | Self::I64 => "42".to_owned(),
            Self::F64 => "1.5".to_owned(),
            Self::Decimal => "\"12.50\"".to_owned(),
            Self::Uuid => "\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\"".to_owned(),
            Self::Date => "\"2026-11-23\"".to_owned(),
            Self::DateTime => "\"2026-11-23T10:00:00Z\"".to_owned(),
            Self::Json => "{\"key\": \"value\"}".to_owned(),
        }
    }

    /// A JSON value of the wrong type, or `None` when every JSON value is valid.
    pub(crate) fn wrong_type(self) -> Option<&'static str> {
        match self {
            Self::String | Self::Text => Some("42"),
            Self::Bool => Some("\"maybe\""),
            Self::I32 | Self::I64 | Self::F64 => Some("\"many\""),
            Self::Decimal => Some("true"),
            Self::Uuid => Some("\"not-a-uuid\""),
            Self::Date => Some("\"2026-13-45\""),
            Self::DateTime => Some("\"yesterday\""),
            Self::Json => None,
        }
    }

    /// A Rust expression making a realistic fake value (with `fake` in scope).
    pub(crate) fn fake(self) -> &'static str {
        match self {
            Self::String => "Words(1..4).fake::<Vec<String>>().join(\" \")",
            Self::Text => "Sentence(5..15).fake::<String>()",
            Self::Bool => "Boolean(50).fake::<bool>()",
            Self::I32 => "(1..1_000).fake::<i32>()",
            Self::I64 => "(1..1_000_000).fake::<i64>()",
            Self::F64 => "(0.0..1_000.0).fake::<f64>()",
            Self::Decimal => "rust_decimal::Decimal::new((100..100_000).fake::<i64>(), 2)",
            Self::Uuid => "uuid::Uuid::new_v4()",
            Self::Date => {
                "chrono::NaiveDate::from_ymd_opt((2020..2030).fake(), (1..=12).fake(), (1..=28).fake()).unwrap_or_default()"
            }
            Self::DateTime => {
                "chrono::Utc::now() - chrono::Duration::minutes((0..525_600).fake::<i64>())"
            }
            Self::Json => "serde_json::json!({ \"tag\": Word().fake::<String>() })",
        }
    }
}

/// One field of the new resource.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// snake_case name.
    pub(crate) name: String,
    /// Its type.
    pub(crate) ty: FieldType,
    /// Whether it may be absent (`?`).
    pub(crate) optional: bool,
}

impl Field {
    /// PascalCase, as sea-orm names the column variant.
    pub(crate) fn pascal(&self) -> String {
        pascal(&self.name)
    }

    /// SCREAMING_CASE, for its constants.
    pub(crate) fn screaming(&self) -> String {
        self.name.to_uppercase()
    }

    /// The field's Rust type, `Option` when optional.
    pub(crate) fn rust(&self) -> String {
        if self.optional {
            format!("Option<{}>", self.ty.rust())
        } else {
            self.ty.rust().to_owned()
        }
    }
}

/// The resource to generate.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Plural snake_case: module, table, permission prefix (`widgets`).
    pub(crate) name: String,
    /// Singular snake_case (`widget`).
    pub(crate) singular: String,
    /// Its fields, in order.
    pub(crate) fields: Vec<Field>,
}

/// Names a new domain may not take: Keel's own modules, tables and routes.
const RESERVED_NAMES: &[&str] = &[
    "activity",
    "api",
    "api_keys",
    "app",
    "auth",
    "config",
    "crud",
    "database",
    "docs",
    "domains",
    "error",
    "health",
    "identity",
    "infrastructure",
    "jobs",
    "kernel",
    "listing",
    "mail",
    "metrics",
    "migrate",
    "migration",
    "openapi",
    "permissions",
    "projects",
    "release_notes",
    "releases",
    "roles",
    "security",
    "seaql_migrations",
    "sessions",
    "stores",
    "support",
    "telemetry",
    "testing",
    "tests",
    "unit_of_work",
    "users",
    "worker",
    "workers",
    "xtask",
];

/// Field names Keel's own columns, the list query language or Rust already use.
const RESERVED_FIELDS: &[&str] = &[
    "id",
    "owner_id",
    "version",
    "created_by",
    "updated_by",
    "created_at",
    "updated_at",
    "deleted_at",
    "meta",
    "items",
    "limit",
    "offset",
    "cursor",
    "sort",
    "q",
];

const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !name.contains("__")
}

/// `snake_case` → `PascalCase`.
pub(crate) fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// A plural English noun's singular, for the common regular forms.
fn singular_of(plural: &str) -> String {
    if let Some(stem) = plural.strip_suffix("ies") {
        format!("{stem}y")
    } else if ["sses", "xes", "ches", "shes", "zes"]
        .iter()
        .any(|suffix| plural.ends_with(suffix))
    {
        plural[..plural.len() - 2].to_owned()
    } else if let Some(stem) = plural.strip_suffix('s')
        && !plural.ends_with("ss")
    {
        stem.to_owned()
    } else {
        plural.to_owned()
    }
}

impl Spec {
    /// Checks the command line: a plural snake_case name and `field:type[?]` arguments.
    pub(crate) fn parse(
        name: &str,
        singular: Option<&str>,
        raw_fields: &[String],
    ) -> anyhow::Result<Self> {
        ensure!(
            is_identifier(name),
            "`{name}` is not a valid domain name: use lower-case letters, digits and single underscores, starting with a letter (e.g. `widgets`)"
        );
        ensure!(
            !RESERVED_NAMES.contains(&name) && !RUST_KEYWORDS.contains(&name),
            "`{name}` is taken by Keel itself; choose another name"
        );
        let singular = singular.map_or_else(|| singular_of(name), str::to_owned);
        ensure!(
            is_identifier(&singular)
                && singular != name
                && !RUST_KEYWORDS.contains(&singular.as_str()),
            "cannot use `{singular}` as the singular of `{name}`; pass one with --singular"
        );
        ensure!(
            !raw_fields.is_empty(),
            "give at least one field, e.g. `cargo xtask new-domain {name} title:string count:i32?`"
        );
        let mut fields: Vec<Field> = Vec::new();
        for raw in raw_fields {
            let Some((field, ty)) = raw.split_once(':') else {
                bail!("`{raw}` is not `name:type`; types: {TYPE_NAMES} (add `?` for optional)");
            };
            let (ty, optional) = match ty.strip_suffix('?') {
                Some(ty) => (ty, true),
                None => (ty, false),
            };
            ensure!(
                is_identifier(field),
                "`{field}` is not a valid field name: use lower-case letters, digits and single underscores"
            );
            ensure!(
                !RESERVED_FIELDS.contains(&field) && !RUST_KEYWORDS.contains(&field),
                "`{field}` is reserved (Keel's own columns, list parameters and Rust keywords are)"
            );
            ensure!(
                fields.iter().all(|f| f.name != field),
                "field `{field}` is given twice"
            );
            fields.push(Field {
                name: field.to_owned(),
                ty: FieldType::parse(ty)?,
                optional,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            singular,
            fields,
        })
    }

    /// `Widget`.
    pub(crate) fn pascal(&self) -> String {
        pascal(&self.singular)
    }

    /// `Widgets`.
    pub(crate) fn pascal_plural(&self) -> String {
        pascal(&self.name)
    }

    /// `widgets` as a URL segment and crate suffix (`-` for `_`).
    pub(crate) fn kebab(&self) -> String {
        self.name.replace('_', "-")
    }

    /// Whether any field is a decimal (which needs `rust_decimal`).
    pub(crate) fn uses_decimal(&self) -> bool {
        self.fields.iter().any(|f| f.ty == FieldType::Decimal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_names_types_and_optionality() {
        let spec = Spec::parse(
            "widgets",
            None,
            &fields(&["name:string", "quantity:i32", "note:text?"]),
        )
        .unwrap();
        assert_eq!(spec.singular, "widget");
        assert_eq!(spec.pascal(), "Widget");
        assert_eq!(spec.fields[2].rust(), "Option<String>");
        assert!(spec.fields[2].optional && !spec.fields[0].optional);
        assert_eq!(
            Spec::parse("categories", None, &fields(&["a:bool"]))
                .unwrap()
                .singular,
            "category"
        );
        assert_eq!(
            Spec::parse("bushes", None, &fields(&["a:bool"]))
                .unwrap()
                .singular,
            "bush"
        );
        assert_eq!(
            Spec::parse("stock_items", None, &fields(&["a:bool"]))
                .unwrap()
                .pascal(),
            "StockItem"
        );
    }

    #[test]
    fn refuses_bad_names_types_and_fields() {
        for (name, raw) in [
            ("Widgets", vec!["a:bool"]),
            ("projects", vec!["a:bool"]),
            ("users", vec!["a:bool"]),
            ("type", vec!["a:bool"]),
            ("widgets", vec![]),
            ("widgets", vec!["a"]),
            ("widgets", vec!["a:float"]),
            ("widgets", vec!["id:uuid"]),
            ("widgets", vec!["owner_id:uuid"]),
            ("widgets", vec!["sort:string"]),
            ("widgets", vec!["type:string"]),
            ("widgets", vec!["a:bool", "a:i32"]),
            ("widgets", vec!["a__in:bool"]),
            ("sheep", vec!["a:bool"]),
        ] {
            assert!(
                Spec::parse(name, None, &fields(&raw)).is_err(),
                "{name} {raw:?}"
            );
        }
        assert!(Spec::parse("sheep", Some("one_sheep"), &fields(&["a:bool"])).is_ok());
    }
}
