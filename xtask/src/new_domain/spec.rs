//! What `cargo xtask new-domain` is asked for: a checked name and field list, from the command
//! line or from a domain's spec file (`crates/domains/<name>/domain.toml`), which also carries
//! the documentation and examples the API shows.

use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

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
    /// One of a fixed list of words (`enum(draft,live)`), stored as text; the first is the
    /// default.
    Enum,
}

/// Every type name the command line accepts.
pub(crate) const TYPE_NAMES: &str =
    "string, text, bool, i32, i64, f64, decimal, uuid, date, datetime, json, enum(a,b,…)";

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
            "enum" => Self::Enum,
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
            // The generated enum's name depends on the field; `Field::rust_type` gives it.
            Self::Enum => "String",
        }
    }

    /// The type's name in a spec file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Text => "text",
            Self::Bool => "bool",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F64 => "f64",
            Self::Decimal => "decimal",
            Self::Uuid => "uuid",
            Self::Date => "date",
            Self::DateTime => "datetime",
            Self::Json => "json",
            Self::Enum => "enum",
        }
    }

    /// Whether values are `Copy` (copied rather than cloned).
    pub(crate) fn is_copy(self) -> bool {
        !matches!(self, Self::String | Self::Text | Self::Json)
    }

    /// The default character limit, where one applies.
    pub(crate) fn max_chars(self) -> Option<usize> {
        match self {
            Self::String => Some(255),
            Self::Text => Some(100_000),
            _ => None,
        }
    }

    /// The `FieldKind` of lists, with whether it sorts, or `None` when it cannot be listed on.
    pub(crate) fn list_kind(self) -> Option<(&'static str, bool)> {
        match self {
            Self::String => Some(("FieldKind::Text", true)),
            Self::Enum => Some(("FieldKind::Enum", false)),
            Self::Bool => Some(("FieldKind::Boolean", false)),
            Self::I32 | Self::I64 => Some(("FieldKind::Integer", true)),
            Self::Uuid => Some(("FieldKind::Uuid", false)),
            Self::DateTime => Some(("FieldKind::Timestamp", true)),
            Self::Text | Self::F64 | Self::Decimal | Self::Date | Self::Json => None,
        }
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
            Self::Enum => ("string_len", ", 32"),
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
            Self::Enum => "\"?\"".to_owned(),
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
            Self::Enum => Some("\"no-such-value\""),
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
            Self::Enum => "Default::default()",
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
    /// The words of an `enum` field, first one the default.
    pub(crate) values: Vec<String>,
    /// The character limit of `string` and `text` fields.
    pub(crate) max_chars: Option<usize>,
    /// What the API documentation says of it (also the Rust doc), when not the default.
    pub(crate) doc: Option<String>,
    /// … in a create body, when not [`Field::doc`].
    pub(crate) new_doc: Option<String>,
    /// … in a PATCH body, when not [`Field::doc`].
    pub(crate) patch_doc: Option<String>,
    /// An example value (JSON), when not the type's default.
    pub(crate) example: Option<serde_json::Value>,
    /// An example value in a create body, when not [`Field::example`].
    pub(crate) new_example: Option<serde_json::Value>,
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
    /// The example body of a PATCH, when not the first field's example.
    pub(crate) patch_example: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A domain's spec file, `crates/domains/<name>/domain.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    singular: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patch_example: Option<toml::Table>,
    #[serde(rename = "field")]
    fields: Vec<FieldFile>,
}

/// One `[[field]]` of a spec file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    optional: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_chars: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    doc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_doc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patch_doc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    example: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_example: Option<toml::Value>,
}

fn to_json(value: toml::Value) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(value)?)
}

fn to_toml(value: &serde_json::Value) -> anyhow::Result<toml::Value> {
    Ok(toml::Value::try_from(value)?)
}

/// The spec file of a domain, relative to the workspace.
pub(crate) fn spec_path(name: &str) -> String {
    format!("crates/domains/{name}/domain.toml")
}

/// Names a new domain may not take: Keel's own modules, tables and routes.
const RESERVED_NAMES: &[&str] = &[
    "activity",
    "adapters",
    "api",
    "api_keys",
    "app",
    "auth",
    "background",
    "bench",
    "cli",
    "config",
    "context",
    "crud",
    "custom",
    "database",
    "docs",
    "domains",
    "error",
    "extract",
    "health",
    "idempotency",
    "idempotency_keys",
    "identity",
    "infrastructure",
    "job_outbox",
    "jobs",
    "kernel",
    "limits",
    "listing",
    "mail",
    "mail_deliveries",
    "metrics",
    "mfa",
    "mfa_recovery_codes",
    "mfa_totp",
    "middleware",
    "migrate",
    "migration",
    "openapi",
    "permissions",
    "one_time_tokens",
    "projects",
    "queue",
    "ratelimit",
    "refresh_tokens",
    "release_notes",
    "releases",
    "role_permissions",
    "roles",
    "schedules",
    "security",
    "seaql_migrations",
    "seed",
    "server",
    "sessions",
    "signals",
    "startup",
    "state",
    "stores",
    "support",
    "telemetry",
    "testing",
    "tests",
    "unit_of_work",
    "user_roles",
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

/// Names the generated files import or define; a domain's types may not take them.
const RESERVED_TYPES: &[&str] = &[
    "Actor",
    "ActiveModel",
    "Adapters",
    "AppData",
    "AppState",
    "AppStateBuilder",
    "Caller",
    "Column",
    "Crud",
    "CrudActions",
    "CrudApi",
    "DateTime",
    "Deserialize",
    "Entity",
    "FieldErrors",
    "FieldKind",
    "FieldSpec",
    "Fixture",
    "FromStr",
    "ListQuery",
    "ListSpec",
    "Listable",
    "Meta",
    "MissingService",
    "Model",
    "Page",
    "Permission",
    "PermissionDef",
    "RegisterError",
    "Relation",
    "RepoError",
    "Resource",
    "Schema",
    "ScopeRule",
    "SeaCrud",
    "SeaResource",
    "Serialize",
    "ToSchema",
    "UserId",
    "Utc",
    "Uuid",
    "Value",
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
    /// Checks the command line of a new domain: a plural snake_case name Keel does not use
    /// itself and `field:type[?]` arguments.
    pub(crate) fn parse(
        name: &str,
        singular: Option<&str>,
        raw_fields: &[String],
    ) -> anyhow::Result<Self> {
        ensure!(
            !RESERVED_NAMES.contains(&name),
            "`{name}` is taken by Keel itself; choose another name"
        );
        Self::parse_fields(name, singular, raw_fields)
    }

    /// [`Spec::parse`] without the reserved names (an existing domain's spec names itself).
    fn parse_fields(
        name: &str,
        singular: Option<&str>,
        raw_fields: &[String],
    ) -> anyhow::Result<Self> {
        ensure!(
            is_identifier(name),
            "`{name}` is not a valid domain name: use lower-case letters, digits and single underscores, starting with a letter (e.g. `widgets`)"
        );
        ensure!(
            !RUST_KEYWORDS.contains(&name),
            "`{name}` is a Rust keyword; choose another name"
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
            let (ty, values) = match ty.strip_prefix("enum(").and_then(|v| v.strip_suffix(')')) {
                Some(values) => (
                    FieldType::Enum,
                    values.split(',').map(|v| v.trim().to_owned()).collect(),
                ),
                None => (FieldType::parse(ty)?, Vec::new()),
            };
            fields.push(Field {
                name: field.to_owned(),
                ty,
                optional,
                values,
                max_chars: None,
                doc: None,
                new_doc: None,
                patch_doc: None,
                example: None,
                new_example: None,
            });
        }
        let spec = Self {
            name: name.to_owned(),
            singular,
            fields,
            patch_example: None,
        };
        spec.check_fields()?;
        Ok(spec)
    }

    /// Rules on fields a spec file could break too: enum words, limits, type names.
    fn check_fields(&self) -> anyhow::Result<()> {
        let (p, plural) = (self.pascal(), self.pascal_plural());
        let generated = [
            p.clone(),
            format!("{p}Id"),
            format!("New{p}"),
            format!("{p}Patch"),
            format!("{p}View"),
            format!("Create{p}"),
            format!("Update{p}"),
            format!("{p}Repository"),
            format!("{p}Error"),
            format!("New{p}Factory"),
            plural.clone(),
            format!("{plural}Api"),
        ];
        for name in [&p, &plural] {
            ensure!(
                !RESERVED_TYPES.contains(&name.as_str()),
                "`{}` would generate the type `{name}`, which Keel's generated code already uses; choose another name",
                self.name
            );
        }
        for field in &self.fields {
            let name = &field.name;
            if field.ty == FieldType::Enum {
                let ty = format!("{p}{}", field.pascal());
                ensure!(
                    !generated.contains(&ty) && !RESERVED_TYPES.contains(&ty.as_str()),
                    "enum field `{name}` would generate the type `{ty}`, which is taken; rename the field"
                );
                let mut variants: Vec<String> = field.values.iter().map(|v| pascal(v)).collect();
                variants.sort();
                variants.dedup();
                ensure!(
                    variants.len() == field.values.len(),
                    "two words of enum field `{name}` give the same Rust variant; rename one"
                );
            }
            if field.ty == FieldType::Enum {
                ensure!(
                    !field.values.is_empty(),
                    "enum field `{name}` needs its words, e.g. `{name}:enum(draft,live)`"
                );
                for value in &field.values {
                    ensure!(
                        is_identifier(value) && value.len() <= 32,
                        "`{value}` (field `{name}`) is not a valid enum word: lower-case letters, digits and single underscores, at most 32"
                    );
                    ensure!(
                        field.values.iter().filter(|v| *v == value).count() == 1,
                        "enum word `{value}` is given twice in field `{name}`"
                    );
                }
                ensure!(
                    !field.optional,
                    "enum field `{name}` cannot be optional: its first word is the default"
                );
            } else {
                ensure!(
                    field.values.is_empty(),
                    "only enum fields take `values` (field `{name}`)"
                );
            }
            if let Some(max) = field.max_chars {
                ensure!(
                    field.ty.max_chars().is_some() && (1..=1_000_000).contains(&max),
                    "`max_chars` applies to string and text fields, from 1 to 1000000 (field `{name}`)"
                );
            }
        }
        Ok(())
    }

    /// Reads a domain's spec file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the spec {}", path.display()))?;
        let file: SpecFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let raw: Vec<String> = file
            .fields
            .iter()
            .map(|f| {
                let ty = if f.ty == "enum" {
                    format!("enum({})", f.values.join(","))
                } else {
                    f.ty.clone()
                };
                format!("{}:{ty}{}", f.name, if f.optional { "?" } else { "" })
            })
            .collect();
        // Keel's own names are refused here too (a copied spec must not regenerate, say, jobs),
        // except for the example domain, which is generated like any other.
        ensure!(
            file.name == "projects" || !RESERVED_NAMES.contains(&file.name.as_str()),
            "`{}` is taken by Keel itself",
            file.name
        );
        let mut spec = Self::parse_fields(&file.name, file.singular.as_deref(), &raw)?;
        for (field, given) in spec.fields.iter_mut().zip(file.fields) {
            field.max_chars = given.max_chars;
            field.doc = given.doc;
            field.new_doc = given.new_doc;
            field.patch_doc = given.patch_doc;
            field.example = given.example.map(to_json).transpose()?;
            field.new_example = given.new_example.map(to_json).transpose()?;
        }
        spec.patch_example = match file.patch_example {
            Some(table) => match to_json(toml::Value::Table(table))? {
                serde_json::Value::Object(map) => Some(map),
                _ => None,
            },
            None => None,
        };
        if let Some(example) = &spec.patch_example {
            for key in example.keys() {
                ensure!(
                    spec.fields.iter().any(|f| &f.name == key),
                    "patch_example names `{key}`, which is not a field"
                );
            }
        }
        spec.check_fields()?;
        Ok(spec)
    }

    /// The spec file's text.
    pub(crate) fn to_file(&self) -> anyhow::Result<String> {
        let file = SpecFile {
            name: self.name.clone(),
            singular: (self.singular != singular_of(&self.name)).then(|| self.singular.clone()),
            patch_example: match &self.patch_example {
                Some(map) => match to_toml(&serde_json::Value::Object(map.clone()))? {
                    toml::Value::Table(table) => Some(table),
                    _ => None,
                },
                None => None,
            },
            fields: self
                .fields
                .iter()
                .map(|f| {
                    Ok(FieldFile {
                        name: f.name.clone(),
                        ty: f.ty.name().to_owned(),
                        optional: f.optional,
                        values: f.values.clone(),
                        max_chars: f.max_chars,
                        doc: f.doc.clone(),
                        new_doc: f.new_doc.clone(),
                        patch_doc: f.patch_doc.clone(),
                        example: f.example.as_ref().map(to_toml).transpose()?,
                        new_example: f.new_example.as_ref().map(to_toml).transpose()?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let body = toml::to_string(&file)?;
        Ok(format!(
            "# What `cargo xtask new-domain` generates this domain from. The generated files say so in\n# their first line; change this spec (or xtask/templates), then run\n# `cargo xtask new-domain --regenerate {name}`. Keys: docs/adding-a-domain.md.\n\n{body}",
            name = self.name
        ))
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
            ("values", vec!["a:bool"]),
            ("limits", vec!["a:bool"]),
            ("refresh_tokens", vec!["a:bool"]),
            ("widgets", vec!["patch:enum(a,b)"]),
            ("widgets", vec!["stage:enum(a1,a_1)"]),
            ("widgets", vec!["stage:enum(draft,Live)"]),
            ("widgets", vec!["stage:enum()"]),
            ("widgets", vec!["stage:enum(a,b)?"]),
        ] {
            assert!(
                Spec::parse(name, None, &fields(&raw)).is_err(),
                "{name} {raw:?}"
            );
        }
        assert!(Spec::parse("sheep", Some("one_sheep"), &fields(&["a:bool"])).is_ok());
    }
}
