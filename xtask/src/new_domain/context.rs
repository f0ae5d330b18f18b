//! What the templates see: the spec's names and, per field, every spelling and snippet a
//! template needs (types, checks, columns, documentation, examples). Decisions about a type
//! live here, in one place; the templates only arrange them.

use serde::Serialize;
use serde_json::Value;

use super::spec::{Field, FieldType, Spec, pascal};

/// The whole template context.
#[derive(Debug, Serialize)]
pub(crate) struct Context {
    /// `projects`
    name: String,
    /// `project`
    singular: String,
    /// `Project`
    pascal: String,
    /// `Projects`
    plural: String,
    /// `projects` with `-` (crate name, URL)
    kebab: String,
    /// `/projects`
    path: String,
    /// `keel_projects`
    krate: String,
    /// `project` with spaces (`stock item`), for prose.
    words: String,
    /// The migration module, for scaffolds (`m20261201_000001_create_widgets`).
    migration: String,
    fields: Vec<FieldContext>,
    /// Fields the list language may sort or filter on.
    listable: Vec<FieldContext>,
    /// Fields `q=` searches.
    searchable: Vec<String>,
    /// Enum fields.
    enums: Vec<FieldContext>,
    /// Whether every field supports `Eq` (no `f64`).
    eq: bool,
    /// Whether any field is a decimal (which needs `rust_decimal` and a range check).
    uses_decimal: bool,
    /// The example body of a PATCH: field names and JSON values, in order.
    patch_example: Vec<(String, String)>,
    /// The sentence ending the PATCH body's doc (what `null` does).
    patch_null_doc: String,
    /// A field and a value the domain refuses, for the invalid-input tests (`None`: every
    /// value of every field is valid).
    invalid: Option<Invalid>,
    /// The `#[sea_orm]`-free column functions the migration imports.
    migration_functions: Vec<String>,
}

/// A field and a value breaking its rule.
#[derive(Debug, Serialize)]
struct Invalid {
    field: String,
    /// A Rust expression of the bad value (for domain tests).
    rust: String,
    /// A JSON value of the bad value (for HTTP tests).
    json: String,
}

/// One field, spelled every way a template needs.
#[derive(Debug, Clone, Serialize)]
struct FieldContext {
    name: String,
    /// `Status`
    pascal: String,
    /// `STATUS`
    screaming: String,
    /// `project status`: the field in prose
    words: String,
    ty: &'static str,
    optional: bool,
    copy: bool,
    is_enum: bool,
    is_string: bool,
    /// The domain type (`String`, `ProjectStatus`), without `Option`.
    rust: String,
    /// With `Option` when optional.
    rust_full: String,
    /// The entity's column type (enums are stored as text).
    column_rust: String,
    /// `#[sea_orm(...)]` arguments, if any.
    column_attrs: Option<String>,
    /// The migration column expression, e.g. `string_len(Widgets::Name, 200)`.
    migration_column: String,
    /// Enum words and variants.
    values: Vec<EnumValue>,
    /// `200`, `10_000`: the limit as Rust
    max_rust: Option<String>,
    /// `10000`: the limit as an OpenAPI literal
    max_plain: Option<String>,
    /// The validation in `build`, binding the field's value (a statement).
    build: String,
    /// The expression validating `value` (a `&` of the patch's type) in `apply`.
    apply: String,
    /// The field's value as a list-language `Value` (an expression on `self`).
    value_expr: Option<String>,
    /// `FieldKind::…`
    list_kind: Option<String>,
    sortable: bool,
    doc: String,
    new_doc: String,
    patch_doc: String,
    /// `#[schema(...)]` arguments on the view, create and patch fields.
    view_schema: Option<String>,
    new_schema: Option<String>,
    patch_schema: Option<String>,
    /// A fake value (Rust, with `fake` in scope).
    fake: String,
    /// The factory setter's argument type and assignment.
    setter_arg: String,
    setter_assign: String,
    /// A JSON value of the wrong type, for the HTTP tests.
    wrong_type: Option<String>,
    /// A valid JSON value.
    example: String,
    /// The value in the view's example (JSON).
    view_example: String,
    /// The value in the create body's example (JSON).
    new_example: String,
}

/// One word of an enum field.
#[derive(Debug, Clone, Serialize)]
struct EnumValue {
    name: String,
    pascal: String,
}

/// `10000` → `10_000`, as rustfmt and clippy like long literals.
fn rust_number(n: usize) -> String {
    let digits = n.to_string();
    if digits.len() <= 4 {
        return digits;
    }
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

/// `10000` → `10 000`, for prose.
fn prose_number(n: usize) -> String {
    if n < 10_000 {
        return n.to_string();
    }
    rust_number(n).replace('_', " ")
}

/// `a`, `b` or `c` (with backticks).
fn either(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn json_text(value: &Value) -> String {
    value.to_string()
}

impl FieldContext {
    fn new(spec: &Spec, field: &Field) -> Self {
        let name = field.name.clone();
        let words = name.replace('_', " ");
        let max = field.max_chars.or(field.ty.max_chars());
        let screaming = field.screaming();
        let is_enum = field.ty == FieldType::Enum;
        let rust = if is_enum {
            format!("{}{}", spec.pascal(), field.pascal())
        } else {
            field.ty.rust().to_owned()
        };
        let rust_full = if field.optional {
            format!("Option<{rust}>")
        } else {
            rust.clone()
        };
        let column_rust = if is_enum {
            "String".to_owned()
        } else if field.optional {
            format!("Option<{}>", field.ty.rust())
        } else {
            field.ty.rust().to_owned()
        };
        let mut attrs = Vec::new();
        match field.ty {
            FieldType::Text => attrs.push("column_type = \"Text\"".to_owned()),
            FieldType::Decimal => attrs.push("column_type = \"Decimal(Some((20, 6)))\"".to_owned()),
            FieldType::Json => attrs.push("column_type = \"Json\"".to_owned()),
            _ => {}
        }
        if field.optional {
            attrs.push("nullable".to_owned());
        }
        let table = spec.pascal_plural();
        let column = field.pascal();
        let migration_column = match field.ty {
            FieldType::String => format!(
                "string_len{}({table}::{column}, {})",
                if field.optional { "_null" } else { "" },
                max.unwrap_or(255)
            ),
            FieldType::Enum => format!(
                "string_len({table}::{column}, 32).check(Expr::col({table}::{column}).is_in([{}]))",
                field
                    .values
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => {
                let (function, args) = field.ty.column();
                format!(
                    "{function}{}({table}::{column}{args})",
                    if field.optional { "_null" } else { "" }
                )
            }
        };
        let max_const = format!("{screaming}_MAX_CHARS");
        let q = format!("{name:?}");
        let (build, apply) = match (field.ty, field.optional) {
            (FieldType::String, false) => (
                format!("errors.line({q}, &input.{name}, {max_const})"),
                format!("errors.line({q}, value, {max_const})"),
            ),
            (FieldType::String, true) => (
                format!("errors.optional_line({q}, input.{name}.as_deref(), {max_const})"),
                format!("errors.optional_line({q}, value.as_deref(), {max_const})"),
            ),
            (FieldType::Text, false) => (
                format!("errors.text({q}, &input.{name}, {max_const})"),
                format!("errors.text({q}, value, {max_const})"),
            ),
            (FieldType::Text, true) => (
                format!("errors.optional_text({q}, input.{name}.as_deref(), {max_const})"),
                format!("errors.optional_text({q}, value.as_deref(), {max_const})"),
            ),
            (FieldType::F64, false) => (
                format!("errors.finite({q}, input.{name})"),
                format!("errors.finite({q}, *value)"),
            ),
            (FieldType::F64, true) => (
                format!("input.{name}.map(|value| errors.finite({q}, value))"),
                format!("value.map(|v| errors.finite({q}, v))"),
            ),
            (FieldType::Enum, _) => (
                format!("input.{name}.unwrap_or_default()"),
                "*value".to_owned(),
            ),
            (FieldType::Decimal, false) => (
                format!("decimal(&mut errors, {q}, input.{name})"),
                format!("decimal(&mut errors, {q}, *value)"),
            ),
            (FieldType::Decimal, true) => (
                format!("input.{name}.map(|value| decimal(&mut errors, {q}, value))"),
                format!("value.map(|v| decimal(&mut errors, {q}, v))"),
            ),
            (ty, _) if ty.is_copy() => (format!("input.{name}"), "*value".to_owned()),
            _ => (format!("input.{name}"), "value.clone()".to_owned()),
        };
        let value_of = |inner: &str| -> String {
            match field.ty {
                FieldType::String | FieldType::Text => format!("Value::Text({inner}.clone())"),
                FieldType::Enum => format!("Value::Text({inner}.as_str().to_owned())"),
                FieldType::Bool => format!("Value::Boolean({inner})"),
                FieldType::I32 => format!("Value::Integer(i64::from({inner}))"),
                FieldType::I64 => format!("Value::Integer({inner})"),
                FieldType::Uuid => format!("Value::Uuid({inner})"),
                FieldType::DateTime => format!("Value::Timestamp({inner})"),
                _ => String::new(),
            }
        };
        let value_expr = field.ty.list_kind().map(|_| {
            if field.optional {
                let deref = if field.ty.is_copy() { "*v" } else { "v" };
                format!(
                    "self.{name}.as_ref().map(|v| {})",
                    value_of(deref).replace(&format!("{deref}.clone()"), "v.clone()")
                )
            } else {
                format!("Some({})", value_of(&format!("self.{name}")))
            }
        });
        let list_kind = field.ty.list_kind().map(|(kind, _)| {
            if is_enum {
                format!("FieldKind::Enum({rust}::NAMES)")
            } else {
                kind.to_owned()
            }
        });
        let sortable = field.ty.list_kind().is_some_and(|(_, sortable)| sortable);
        let doc = field.doc.clone().unwrap_or_else(|| match (field.ty, max) {
            (FieldType::String, Some(max)) if !field.optional => {
                format!("1 to {} characters.", prose_number(max))
            }
            (FieldType::String | FieldType::Text, Some(max)) => {
                format!("Up to {} characters.", prose_number(max))
            }
            (FieldType::Enum, _) => format!("{}.", either(&field.values)),
            _ => format!("The {words}."),
        });
        let new_doc = field.new_doc.clone().unwrap_or_else(|| match field.ty {
            FieldType::String => format!("{} (trimmed).", doc.trim_end_matches('.')),
            FieldType::Enum => format!("Defaults to `{}`.", field.values[0]),
            _ => doc.clone(),
        });
        let patch_doc = field.patch_doc.clone().unwrap_or_else(|| {
            if is_enum {
                format!("The new {words}.")
            } else if field.optional {
                format!("{}, or `null` to clear.", doc.trim_end_matches('.'))
            } else {
                doc.clone()
            }
        });
        let min = (field.ty == FieldType::String && !field.optional).then_some("min_length = 1");
        let max_plain = max.map(|m| m.to_string());
        let max_attr = max_plain.as_ref().map(|m| format!("max_length = {m}"));
        let enum_schema = is_enum.then(|| format!("schema_with = {name}_schema"));
        let value_type = |patch: bool| -> Option<String> {
            let inner = match field.ty {
                FieldType::Decimal => Some("String"),
                FieldType::Json => Some("Object"),
                _ if patch && field.optional && !is_enum => Some(field.ty.rust()),
                _ => None,
            };
            inner.map(|inner| {
                if field.optional || patch {
                    format!("value_type = Option<{inner}>")
                } else {
                    format!("value_type = {inner}")
                }
            })
        };
        let join = |parts: Vec<Option<String>>| -> Option<String> {
            let parts: Vec<String> = parts.into_iter().flatten().collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        let view_schema = join(vec![value_type(false), enum_schema.clone()]);
        let new_schema = join(vec![
            value_type(false),
            enum_schema.clone(),
            min.map(str::to_owned),
            max_attr.clone(),
        ]);
        let patch_schema = join(vec![
            value_type(true),
            enum_schema,
            min.map(str::to_owned),
            max_attr,
        ]);
        let fake = match (field.ty, max) {
            (FieldType::String, Some(max)) => format!(
                "Words(1..4).fake::<Vec<String>>().join(\" \").chars().take({}).collect::<String>()",
                rust_number(max)
            ),
            _ => field.ty.fake().to_owned(),
        };
        let fake = if field.optional {
            format!("Some({fake})")
        } else {
            fake
        };
        let (setter_arg, setter_assign) = if is_enum {
            (rust.clone(), format!("Some({name})"))
        } else if field.ty.is_copy() {
            (rust_full.clone(), name.clone())
        } else if field.optional {
            (
                format!("Option<impl Into<{rust}>>"),
                format!("{name}.map(Into::into)"),
            )
        } else {
            (format!("impl Into<{rust}>"), format!("{name}.into()"))
        };
        let example = field.example.as_ref().map_or_else(
            || {
                if is_enum {
                    format!("{:?}", field.values[0])
                } else {
                    field.ty.example(&name)
                }
            },
            json_text,
        );
        let view_example = field
            .example
            .as_ref()
            .map_or_else(|| example.clone(), json_text);
        let new_example = field
            .new_example
            .as_ref()
            .or(field.example.as_ref().filter(|_| !is_enum))
            .map_or_else(
                || {
                    if is_enum {
                        format!("{:?}", field.values[0])
                    } else {
                        example.clone()
                    }
                },
                json_text,
            );
        Self {
            view_example,
            new_example,
            pascal: field.pascal(),
            screaming,
            words,
            ty: field.ty.name(),
            optional: field.optional,
            copy: field.ty.is_copy(),
            is_enum,
            is_string: matches!(field.ty, FieldType::String | FieldType::Text),
            rust,
            rust_full,
            column_rust,
            column_attrs: (!attrs.is_empty()).then(|| attrs.join(", ")),
            migration_column,
            values: field
                .values
                .iter()
                .map(|v| EnumValue {
                    name: v.clone(),
                    pascal: pascal(v),
                })
                .collect(),
            max_rust: max.map(rust_number),
            max_plain,
            build,
            apply,
            value_expr,
            list_kind,
            sortable,
            doc,
            new_doc,
            patch_doc,
            view_schema,
            new_schema,
            patch_schema,
            fake,
            setter_arg,
            setter_assign,
            wrong_type: field.ty.wrong_type().map(str::to_owned),
            example,
            name,
        }
    }
}

/// The first field with a rule a value can break, and such a value.
fn invalid(spec: &Spec) -> Option<Invalid> {
    spec.fields.iter().find_map(|f| {
        let max = f.max_chars.or(f.ty.max_chars())?;
        let rust = format!("\"x\".repeat({})", rust_number(max + 1));
        Some(Invalid {
            field: f.name.clone(),
            rust: if f.optional {
                format!("Some({rust})")
            } else {
                rust
            },
            json: format!("\"x\".repeat({})", rust_number(max + 1)),
        })
    })
}

impl Context {
    /// Everything the templates of `spec` see; `migration` names its migration module.
    pub(crate) fn new(spec: &Spec, migration: &str) -> Self {
        let fields: Vec<FieldContext> = spec
            .fields
            .iter()
            .map(|f| FieldContext::new(spec, f))
            .collect();
        let patch_example = spec.patch_example.as_ref().map_or_else(
            || {
                fields
                    .first()
                    .map(|c| vec![(c.name.clone(), c.view_example.clone())])
                    .unwrap_or_default()
            },
            |map| {
                map.iter()
                    .map(|(key, value)| (key.clone(), json_text(value)))
                    .collect()
            },
        );
        let optional: Vec<&Field> = spec.fields.iter().filter(|f| f.optional).collect();
        let patch_null_doc = match optional.as_slice() {
            [] => ".".to_owned(),
            [one] => format!(
                "; `\"{}\": null` clears the {}.",
                one.name,
                one.name.replace('_', " ")
            ),
            _ => "; `null` clears an optional field.".to_owned(),
        };
        let mut migration_functions: Vec<String> = vec![
            "big_integer".into(),
            "timestamp_with_time_zone".into(),
            "timestamp_with_time_zone_null".into(),
            "uuid".into(),
            "uuid_null".into(),
        ];
        for c in &fields {
            if let Some(function) = c.migration_column.split('(').next() {
                migration_functions.push(function.to_owned());
            }
        }
        migration_functions.sort();
        migration_functions.dedup();
        Self {
            name: spec.name.clone(),
            singular: spec.singular.clone(),
            pascal: spec.pascal(),
            plural: spec.pascal_plural(),
            kebab: spec.kebab(),
            path: format!("/{}", spec.kebab()),
            krate: format!("keel_{}", spec.name),
            words: spec.singular.replace('_', " "),
            migration: migration.to_owned(),
            listable: fields
                .iter()
                .filter(|f| f.list_kind.is_some())
                .cloned()
                .collect(),
            searchable: fields
                .iter()
                .filter(|f| f.is_string)
                .map(|f| f.pascal.clone())
                .collect(),
            enums: fields.iter().filter(|f| f.is_enum).cloned().collect(),
            eq: spec.fields.iter().all(|f| f.ty != FieldType::F64),
            uses_decimal: spec.uses_decimal(),
            patch_example,
            patch_null_doc,
            invalid: invalid(spec),
            migration_functions,
            fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_spelled_for_rust_and_for_people() {
        assert_eq!(rust_number(200), "200");
        assert_eq!(rust_number(10_000), "10_000");
        assert_eq!(rust_number(100_000), "100_000");
        assert_eq!(rust_number(1_000_000), "1_000_000");
        assert_eq!(prose_number(10_000), "10 000");
        assert_eq!(prose_number(255), "255");
        assert_eq!(
            either(&["a".into(), "b".into(), "c".into()]),
            "`a`, `b` or `c`"
        );
    }
}
