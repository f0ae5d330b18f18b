//! The longest value each request-body field accepts, checked by `#[validate(length(max = …))]`
//! before a handler runs (so before any store, counter or activity entry is touched) and shown
//! as `maxLength` / `maxItems` in the OpenAPI document.
//!
//! Where a domain defines the rule, the constant here is that rule (the domain checks it again);
//! the others bound what only the wire sees (passwords, tokens). `utoipa` takes literals only,
//! so `#[schema(max_length = N)]` repeats the numbers: the test below keeps them equal.

use std::borrow::Cow;

use validator::ValidationError;

/// An email address (RFC 5321 path limit, as identity checks it).
pub const EMAIL: u64 = keel_identity::model::EMAIL_MAX_CHARS as u64;
/// Any password field (the configurable policy tops out at 1024, `auth.password_max_length`).
pub const PASSWORD: u64 = 1024;
/// A refresh, password-reset or verification token (Keel's are far shorter).
pub const TOKEN: u64 = 512;
/// A display name.
pub const FULL_NAME: u64 = keel_identity::model::FULL_NAME_MAX_CHARS as u64;
/// A role name.
pub const ROLE_NAME: u64 = keel_identity::model::ROLE_NAME_MAX_CHARS as u64;
/// A role description (identity's rule).
pub const ROLE_DESCRIPTION: u64 = 500;
/// An API key's label (identity's rule).
pub const API_KEY_NAME: u64 = 100;
/// Permissions one list (role grants, API-key scopes) may name.
pub const PERMISSION_LIST: u64 = 100;
/// One permission name: `resource:action`, each part at most 64 characters.
pub const PERMISSION_NAME: usize = 64 + 1 + 64;
/// A release note's version.
pub const RELEASE_VERSION: u64 = keel_release_notes::model::VERSION_MAX_CHARS as u64;
/// A release note's title.
pub const RELEASE_TITLE: u64 = keel_release_notes::model::TITLE_MAX_CHARS as u64;
/// A release note's Markdown body.
pub const RELEASE_BODY: u64 = keel_release_notes::model::BODY_MAX_CHARS as u64;

/// `validator` custom rule for permission lists: every name at most [`PERMISSION_NAME`]
/// characters (the list's own length is a `length(max = …)` rule beside it).
pub fn permission_names(names: &[String]) -> Result<(), ValidationError> {
    if names
        .iter()
        .all(|name| name.chars().count() <= PERMISSION_NAME)
    {
        return Ok(());
    }
    let mut error = ValidationError::new("length").with_message(Cow::Owned(format!(
        "each permission must be at most {PERMISSION_NAME} characters long"
    )));
    error.add_param(Cow::Borrowed("max"), &PERMISSION_NAME);
    Err(error)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn schema_of(document: &Value, name: &str, field: &str) -> Value {
        document["components"]["schemas"][name]["properties"][field].clone()
    }

    #[test]
    fn the_documented_maximums_are_the_enforced_ones() {
        let document = serde_json::to_value(crate::openapi::document()).unwrap();
        let length = |name: &str, field: &str| {
            let schema = schema_of(&document, name, field);
            assert!(!schema.is_null(), "{name}.{field} is documented");
            schema["maxLength"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}.{field} has maxLength: {schema}"))
        };
        let items = |name: &str, field: &str| {
            let schema = schema_of(&document, name, field);
            schema["maxItems"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}.{field} has maxItems: {schema}"))
        };
        for (name, field, max) in [
            ("Registration", "email", EMAIL),
            ("Registration", "password", PASSWORD),
            ("Registration", "full_name", FULL_NAME),
            ("Login", "email", EMAIL),
            ("Login", "password", PASSWORD),
            ("Refresh", "refresh_token", TOKEN),
            ("ProfileChange", "full_name", FULL_NAME),
            ("PasswordChange", "current_password", PASSWORD),
            ("PasswordChange", "new_password", PASSWORD),
            ("PasswordForgot", "email", EMAIL),
            ("PasswordReset", "token", TOKEN),
            ("PasswordReset", "new_password", PASSWORD),
            ("EmailConfirmation", "token", TOKEN),
            ("UserChange", "full_name", FULL_NAME),
            ("CreateRole", "name", ROLE_NAME),
            ("CreateRole", "description", ROLE_DESCRIPTION),
            ("CreateApiKey", "name", API_KEY_NAME),
            ("CreateReleaseNote", "version", RELEASE_VERSION),
            ("CreateReleaseNote", "title", RELEASE_TITLE),
            ("CreateReleaseNote", "body", RELEASE_BODY),
            ("UpdateReleaseNote", "version", RELEASE_VERSION),
            ("UpdateReleaseNote", "title", RELEASE_TITLE),
            ("UpdateReleaseNote", "body", RELEASE_BODY),
            (
                "CreateProject",
                "name",
                keel_projects::model::NAME_MAX_CHARS as u64,
            ),
            (
                "CreateProject",
                "description",
                keel_projects::model::DESCRIPTION_MAX_CHARS as u64,
            ),
            (
                "UpdateProject",
                "name",
                keel_projects::model::NAME_MAX_CHARS as u64,
            ),
            (
                "UpdateProject",
                "description",
                keel_projects::model::DESCRIPTION_MAX_CHARS as u64,
            ),
        ] {
            assert_eq!(length(name, field), max, "{name}.{field}");
        }
        for (name, field) in [
            ("CreateRole", "permissions"),
            ("RolePermissions", "permissions"),
            ("CreateApiKey", "scopes"),
        ] {
            assert_eq!(items(name, field), PERMISSION_LIST, "{name}.{field}");
        }
    }

    #[test]
    fn permission_lists_bound_each_name() {
        assert!(permission_names(&["projects:write".to_owned()]).is_ok());
        let error = permission_names(&["a".repeat(PERMISSION_NAME + 1)]).unwrap_err();
        assert_eq!(error.code, "length");
    }
}
