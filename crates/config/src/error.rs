//! Configuration errors that name the key at fault and where its value came from.

use std::fmt;

use figment::error::Kind;
use figment::{Figment, Metadata, Profile, Source};

/// Keys whose values must never be echoed in an error message.
const SECRET_KEYS: &[&str] = &[
    "database.url",
    "redis.url",
    "auth.jwt_secret",
    "auth.jwt_private_key",
    "bootstrap.admin_password",
];

/// Keys that existed once, with what to use instead: a clearer message than "unknown key" for
/// a configuration written for an older Keel.
const REPLACED_KEYS: &[(&str, &str)] = &[(
    "server.trust_forwarded_headers",
    "was replaced by server.trusted_proxies: list the CIDRs of your reverse proxies (see docs/operations.md)",
)];

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The configuration key (`server.port`) or variable (`APP_ENV`) at fault.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
    /// Where the value came from, e.g. `set by environment variable APP__SERVER__PORT`.
    pub origin: Option<String>,
}

impl Problem {
    /// A problem with no known origin yet.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }

    /// Fills in the origin from the provider that set the key.
    pub(crate) fn with_origin_from(mut self, figment: &Figment) -> Self {
        if self.origin.is_none() {
            self.origin = figment
                .find_metadata(&self.key)
                .map(|metadata| describe_origin(metadata, &self.key));
        }
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " ({origin})")?;
        }
        Ok(())
    }
}

/// Configuration could not be loaded; startup must stop.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One or more keys are unknown or hold bad values.
    #[error("invalid configuration:\n{}", list(.problems))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems, for callers that want to inspect them.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems } => problems,
        }
    }

    pub(crate) fn from_figment(figment: &Figment, error: figment::Error) -> Self {
        let problems = error
            .into_iter()
            .map(|e| {
                let mut path = e.path.clone();
                let message = match &e.kind {
                    Kind::UnknownField(field, expected) => {
                        if path.last() != Some(field) {
                            path.push(field.clone());
                        }
                        match REPLACED_KEYS.iter().find(|(old, _)| path.join(".") == *old) {
                            Some((_, hint)) => (*hint).to_owned(),
                            None => {
                                format!("unknown key; expected one of: {}", expected.join(", "))
                            }
                        }
                    }
                    Kind::MissingField(field) => {
                        if path.last().map(String::as_str) != Some(field.as_ref()) {
                            path.push(field.to_string());
                        }
                        "is required".to_owned()
                    }
                    Kind::UnknownVariant(found, expected) => {
                        format!("`{found}` is not one of: {}", expected.join(", "))
                    }
                    Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
                        let key = path.join(".");
                        if SECRET_KEYS.contains(&key.as_str()) || key.starts_with("auth.peppers.") {
                            format!("expected {expected}")
                        } else {
                            format!("expected {expected}, found {found}")
                        }
                    }
                    Kind::Message(message) => message.clone(),
                    other => other.to_string(),
                };
                let key = path.join(".");
                let origin = figment
                    .find_metadata(&key)
                    .or(e.metadata.as_ref())
                    .map(|metadata| describe_origin(metadata, &key));
                Problem {
                    key,
                    message,
                    origin,
                }
            })
            .collect();
        Self::Invalid { problems }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_origin(metadata: &Metadata, key: &str) -> String {
    let keys: Vec<&str> = key.split('.').collect();
    match (&metadata.source, metadata.name.as_ref()) {
        (Some(Source::File(path)), _) => format!("set in {}", path.display()),
        (_, "environment variable") => format!(
            "set by environment variable {}",
            metadata.interpolate(&Profile::Default, &keys)
        ),
        (_, "secret file") => format!(
            "read from the file named by {}",
            metadata.interpolate(&Profile::Default, &keys)
        ),
        _ => "built-in default".to_owned(),
    }
}
