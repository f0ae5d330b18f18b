//! Turning rule violations into [`FieldError`]s, from the `validator` crate or by hand.

use validator::{ValidationErrors, ValidationErrorsKind};

use crate::error::{DomainError, FieldError};

/// Collects field errors so a caller sees every problem at once, not one per round trip.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one problem.
    pub fn add(
        &mut self,
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(FieldError::new(field, code, message));
    }

    /// Records everything the `validator` crate found.
    pub fn extend_from_validator(&mut self, errors: &ValidationErrors) {
        flatten(errors, "", &mut self.0);
    }

    /// A one-line name or label: trimmed, 1 to `max` characters, no control characters.
    /// Returns the trimmed value (recording a problem when it breaks a rule).
    pub fn line(&mut self, field: &str, raw: &str, max: usize) -> String {
        let value = raw.trim();
        let length = value.chars().count();
        if length == 0 || length > max {
            self.add(
                field,
                "length",
                format!("must be between 1 and {max} characters long"),
            );
        } else if value.chars().any(char::is_control) {
            self.add(
                field,
                "control_characters",
                "must not contain control characters",
            );
        }
        value.to_owned()
    }

    /// An optional one-line value: blank means absent; otherwise as [`Self::line`].
    pub fn optional_line(&mut self, field: &str, raw: Option<&str>, max: usize) -> Option<String> {
        let raw = raw.filter(|v| !v.trim().is_empty())?;
        Some(self.line(field, raw, max))
    }

    /// Free text: up to `max` characters, not blank, no NUL (which PostgreSQL refuses).
    pub fn text(&mut self, field: &str, raw: &str, max: usize) -> String {
        if raw.trim().is_empty() {
            self.add(field, "length", "must not be blank");
        } else if raw.chars().count() > max {
            self.add(
                field,
                "length",
                format!("must be at most {max} characters long"),
            );
        } else if raw.contains('\0') {
            self.add(
                field,
                "control_characters",
                "must not contain NUL characters",
            );
        }
        raw.to_owned()
    }

    /// Optional free text: blank means absent; otherwise as [`Self::text`].
    pub fn optional_text(&mut self, field: &str, raw: Option<&str>, max: usize) -> Option<String> {
        let raw = raw.filter(|v| !v.trim().is_empty())?;
        Some(self.text(field, raw, max))
    }

    /// A number that must be finite (no NaN or infinity reach storage).
    pub fn finite(&mut self, field: &str, value: f64) -> f64 {
        if !value.is_finite() {
            self.add(field, "not_finite", "must be a finite number");
        }
        value
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else a validation error with everything recorded.
    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Validation(self.0))
        }
    }

    /// The recorded errors.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

impl From<ValidationErrors> for FieldErrors {
    fn from(errors: ValidationErrors) -> Self {
        let mut out = Self::new();
        out.extend_from_validator(&errors);
        out
    }
}

impl From<ValidationErrors> for DomainError {
    fn from(errors: ValidationErrors) -> Self {
        DomainError::Validation(FieldErrors::from(errors).into_vec())
    }
}

/// Runs a `validator::Validate` implementation and converts its result.
pub fn validate(value: &impl validator::Validate) -> Result<(), DomainError> {
    value.validate().map_err(DomainError::from)
}

fn flatten(errors: &ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    // HashMap order is random; sort so responses (and tests) are deterministic.
    let mut entries: Vec<_> = errors.errors().iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in entries {
        let path = join_path(prefix, field);
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    out.push(FieldError::new(
                        path.clone(),
                        error.code.clone(),
                        message_for(error),
                    ));
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                let mut indexes: Vec<_> = items.iter().collect();
                indexes.sort_by_key(|(index, _)| **index);
                for (index, inner) in indexes {
                    flatten(inner, &format!("{path}[{index}]"), out);
                }
            }
        }
    }
}

fn join_path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn message_for(error: &validator::ValidationError) -> String {
    if let Some(message) = &error.message {
        return message.to_string();
    }
    let param = |name: &str| error.params.get(name).map(ToString::to_string);
    match error.code.as_ref() {
        "length" => match (param("min"), param("max"), param("equal")) {
            (_, _, Some(equal)) => format!("must be exactly {equal} characters long"),
            (Some(min), Some(max), _) => format!("must be between {min} and {max} characters long"),
            (Some(min), None, _) => format!("must be at least {min} characters long"),
            (None, Some(max), _) => format!("must be at most {max} characters long"),
            _ => "has an invalid length".to_owned(),
        },
        "range" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be between {min} and {max}"),
            (Some(min), None) => format!("must be at least {min}"),
            (None, Some(max)) => format!("must be at most {max}"),
            _ => "is out of range".to_owned(),
        },
        "email" => "must be a valid email address".to_owned(),
        "url" => "must be a valid URL".to_owned(),
        "required" => "is required".to_owned(),
        other => format!("is invalid ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use validator::Validate;

    #[derive(Validate)]
    struct Item {
        #[validate(length(min = 1, max = 5))]
        name: String,
    }

    #[derive(Validate)]
    struct Batch {
        #[validate(range(min = 1, max = 10))]
        size: u32,
        #[validate(nested)]
        items: Vec<Item>,
    }

    #[test]
    fn nested_errors_get_dotted_indexed_paths_in_stable_order() {
        let batch = Batch {
            size: 0,
            items: vec![
                Item { name: "ok".into() },
                Item {
                    name: "too long".into(),
                },
            ],
        };
        let errors = FieldErrors::from(batch.validate().unwrap_err()).into_vec();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["items[1].name", "size"]);
        assert_eq!(errors[0].message, "must be between 1 and 5 characters long");
        assert_eq!(errors[1].message, "must be between 1 and 10");
    }

    #[test]
    fn empty_collector_is_ok() {
        assert!(FieldErrors::new().into_result().is_ok());
        let mut errors = FieldErrors::new();
        errors.add("x", "bad", "is bad");
        assert!(matches!(errors.into_result(), Err(DomainError::Validation(v)) if v.len() == 1));
    }
}

#[cfg(test)]
mod field_rule_tests {
    use super::*;

    fn codes(errors: FieldErrors) -> Vec<String> {
        errors.into_vec().into_iter().map(|e| e.code).collect()
    }

    #[test]
    fn lines_are_trimmed_bounded_and_single_line() {
        let mut errors = FieldErrors::new();
        assert_eq!(errors.line("name", "  Ada  ", 5), "Ada");
        assert!(errors.is_empty());
        errors.line("name", "   ", 5);
        errors.line("name", "abcdef", 5);
        errors.line("name", "a\nb", 5);
        assert_eq!(codes(errors), ["length", "length", "control_characters"]);

        let mut errors = FieldErrors::new();
        assert_eq!(errors.optional_line("nick", Some("  "), 5), None);
        assert_eq!(errors.optional_line("nick", None, 5), None);
        assert_eq!(
            errors.optional_line("nick", Some(" x "), 5).as_deref(),
            Some("x")
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn text_keeps_its_layout_but_not_nul_or_excess() {
        let mut errors = FieldErrors::new();
        assert_eq!(errors.text("body", " two\nlines ", 20), " two\nlines ");
        assert!(errors.is_empty());
        errors.text("body", "", 20);
        errors.text("body", &"x".repeat(21), 20);
        errors.text("body", "a\0b", 20);
        assert_eq!(codes(errors), ["length", "length", "control_characters"]);
        let mut errors = FieldErrors::new();
        assert_eq!(errors.optional_text("body", Some(" "), 20), None);
        errors.finite("ratio", f64::NAN);
        errors.finite("ratio", 1.5);
        assert_eq!(codes(errors), ["not_finite"]);
    }
}
