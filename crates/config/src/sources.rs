//! Where configuration comes from: built-in defaults, TOML files, environment variables and
//! secret files, each a figment provider that remembers which variable or file set a key.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::Environment;
use crate::error::{ConfigError, Problem};

const DEFAULTS: &str = include_str!("defaults.toml");
const PRODUCTION_DEFAULTS: &str = r#"
[server]
host = "0.0.0.0"
drain_delay = "5s"
[worker]
host = "0.0.0.0"
[ops]
host = "0.0.0.0"
[docs]
enabled = false
[database]
auto_migrate = false
[telemetry]
log_format = "json"
"#;
const TEST_DEFAULTS: &str = r#"
[telemetry]
log_level = "warn"
"#;

/// Prefix of configuration environment variables; sections are separated by `__`.
const PREFIX: &str = "APP__";
/// Suffix that makes a variable name a file to read the value from.
const FILE_SUFFIX: &str = "_FILE";
/// Conventional variable names accepted as aliases of configuration keys.
const ALIASES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("RUST_LOG", "telemetry.log_level"),
];

/// Everything configuration is read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Environment variables (name, value).
    pub vars: Vec<(String, String)>,
    /// Directory holding `default.toml` and `{APP_ENV}.toml`.
    pub config_dir: PathBuf,
}

impl Sources {
    /// The process environment and `$APP_CONFIG_DIR` (default `./config`).
    pub fn from_process() -> Result<Self, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let relevant =
                name.starts_with("APP_") || ALIASES.iter().any(|(alias, _)| *alias == name);
            match value.into_string() {
                Ok(value) => vars.push((name.to_owned(), value)),
                Err(_) if relevant => {
                    return Err(ConfigError::Invalid {
                        problems: vec![Problem::new(name, "is not valid UTF-8")],
                    });
                }
                Err(_) => {}
            }
        }
        let config_dir = vars
            .iter()
            .find(|(name, _)| name == "APP_CONFIG_DIR")
            .map_or_else(|| PathBuf::from("config"), |(_, dir)| PathBuf::from(dir));
        Ok(Self { vars, config_dir })
    }

    /// Sources with the given variables and no config directory (for tests and tools).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            config_dir: PathBuf::from("/nonexistent/keel-config"),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn environment(&self) -> Result<Environment, ConfigError> {
        match self.var("APP_ENV") {
            None | Some("") => Ok(Environment::Local),
            Some(raw) => Environment::parse(raw).ok_or_else(|| ConfigError::Invalid {
                problems: vec![Problem::new(
                    "APP_ENV",
                    format!("`{raw}` is not one of: local, test, production"),
                )],
            }),
        }
    }

    pub(crate) fn figment(&self, environment: Environment) -> Result<Figment, ConfigError> {
        let overlay = match environment {
            Environment::Production => PRODUCTION_DEFAULTS,
            Environment::Test => TEST_DEFAULTS,
            Environment::Local => "",
        };
        let mut figment = Figment::new()
            .merge(Toml::string(DEFAULTS))
            .merge(Toml::string(overlay));
        for name in ["default", environment.as_str()] {
            let path = self.config_dir.join(format!("{name}.toml"));
            if path.is_file() {
                figment = figment.merge(Toml::file_exact(&path));
            }
        }
        Ok(figment
            .merge(AliasVars::collect(self))
            .merge(AppVars::collect(self)?)
            .merge(SecretFiles::collect(self)?))
    }
}

/// `APP__SECTION__KEY` → `section.key`; `None` when the name has an empty segment.
fn key_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix(PREFIX)?;
    let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return None;
    }
    Some(segments.join("."))
}

fn insert(dict: &mut Dict, key: &str, value: String) {
    let mut segments = key.split('.').peekable();
    let mut current = dict;
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            current.insert(segment.to_owned(), Value::from(value));
            return;
        }
        let entry = current
            .entry(segment.to_owned())
            .or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::from(Dict::new());
        }
        let Value::Dict(_, next) = entry else { return };
        current = next;
    }
}

/// `APP__SECTION__KEY=value` variables. Values stay text; numbers and booleans are read from
/// text where the key needs one, so a numeric password is still a string.
struct AppVars(Dict);

impl AppVars {
    fn collect(sources: &Sources) -> Result<Self, ConfigError> {
        let mut dict = Dict::new();
        let mut problems = Vec::new();
        for (name, value) in &sources.vars {
            if !name.starts_with(PREFIX) || name.ends_with(FILE_SUFFIX) {
                continue;
            }
            match key_of(name) {
                Some(key) => insert(&mut dict, &key, value.clone()),
                None => problems.push(Problem::new(
                    name,
                    "is not of the form APP__SECTION__KEY (empty section or key)",
                )),
            }
        }
        if problems.is_empty() {
            Ok(Self(dict))
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

impl Provider for AppVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_profile, keys| {
            format!("{PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// `DATABASE_URL` and `RUST_LOG`: conventional names, below `APP__…` in precedence.
struct AliasVars(Dict);

impl AliasVars {
    fn collect(sources: &Sources) -> Self {
        let mut dict = Dict::new();
        for (alias, key) in ALIASES {
            if let Some(value) = sources.var(alias).filter(|v| !v.is_empty()) {
                insert(&mut dict, key, value.to_owned());
            }
        }
        Self(dict)
    }
}

impl Provider for AliasVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_profile, keys| {
            let key = keys.join(".");
            ALIASES
                .iter()
                .find(|(_, k)| *k == key)
                .map_or(key, |(alias, _)| (*alias).to_owned())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// `APP__SECTION__KEY_FILE=/run/secrets/x`: the value is the file's content (Docker and
/// Kubernetes secrets), without its trailing newline.
struct SecretFiles(Dict);

impl SecretFiles {
    fn collect(sources: &Sources) -> Result<Self, ConfigError> {
        let mut dict = Dict::new();
        let mut problems = Vec::new();
        for (name, path) in &sources.vars {
            let Some(base) = name
                .strip_suffix(FILE_SUFFIX)
                .filter(|_| name.starts_with(PREFIX))
            else {
                continue;
            };
            let Some(key) = key_of(base) else {
                problems.push(Problem::new(
                    name,
                    "is not of the form APP__SECTION__KEY_FILE",
                ));
                continue;
            };
            match read_secret(Path::new(path)) {
                Ok(value) => insert(&mut dict, &key, value),
                Err(message) => problems.push(Problem::new(name, message)),
            }
        }
        if problems.is_empty() {
            Ok(Self(dict))
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

/// Largest secret file read; a path pointing at a device or a log must not exhaust memory.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_secret(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| format!("cannot read secret file {}: {e}", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "secret file {} is larger than {} KiB",
            path.display(),
            MAX_SECRET_FILE_BYTES / 1024
        ));
    }
    let content = String::from_utf8(bytes)
        .map_err(|_| format!("secret file {} is not valid UTF-8", path.display()))?;
    let value = content.strip_suffix('\n').unwrap_or(&content);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(value.to_owned())
}

impl Provider for SecretFiles {
    fn metadata(&self) -> Metadata {
        Metadata::named("secret file").interpolater(|_profile, keys| {
            format!(
                "{PREFIX}{}{FILE_SUFFIX}",
                keys.join("__").to_ascii_uppercase()
            )
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}
