//! Rules a configuration must satisfy beyond its types, checked before anything starts.

use secrecy::ExposeSecret;

use crate::error::Problem;
use crate::{DEVELOPMENT_JWT_SECRET, Environment, MIN_PRODUCTION_SECRET_BYTES, Settings};

/// Largest body limit accepted (1 GiB): anything bigger is a typo.
const MAX_BODY_LIMIT: usize = 1 << 30;

pub(crate) fn validate(settings: &Settings) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, key: &str, message: &str| {
        if !ok {
            problems.push(Problem::new(key, message));
        }
    };
    let production = settings.environment == Environment::Production;

    check(
        !settings.app.name.trim().is_empty() && settings.app.name.len() <= 64,
        "app.name",
        "must be 1 to 64 characters",
    );

    let server = &settings.server;
    check(
        !server.host.trim().is_empty(),
        "server.host",
        "must not be empty",
    );
    check(
        server.workers.is_none_or(|w| (1..=1024).contains(&w)),
        "server.workers",
        "must be between 1 and 1024",
    );
    check(
        !server.request_timeout.is_zero(),
        "server.request_timeout",
        "must be greater than zero",
    );
    check(
        !server.client_request_timeout.is_zero(),
        "server.client_request_timeout",
        "must be greater than zero",
    );
    check(
        (1024..=MAX_BODY_LIMIT).contains(&server.body_limit),
        "server.body_limit",
        "must be between 1024 bytes and 1 GiB",
    );
    let origins = &server.cors.allowed_origins;
    let wildcard = origins.iter().any(|o| o == "*");
    check(
        !(wildcard && server.cors.allow_credentials),
        "server.cors.allow_credentials",
        "cannot be true while allowed_origins contains \"*\" (browsers reject it, and it would let any site act as the user); list the origins instead",
    );
    for origin in origins.iter().filter(|o| *o != "*") {
        if !is_origin(origin) {
            problems.push(Problem::new(
                "server.cors.allowed_origins",
                format!("`{origin}` is not an origin like https://app.example.com (scheme, host and optional port, no path)"),
            ));
        }
    }

    let mut check = |ok: bool, key: &str, message: &str| {
        if !ok {
            problems.push(Problem::new(key, message));
        }
    };
    check(
        !settings.worker.host.trim().is_empty(),
        "worker.host",
        "must not be empty",
    );

    let database = &settings.database;
    let url = database.url.expose_secret();
    let scheme_ok = url::Url::parse(url)
        .map(|u| matches!(u.scheme(), "sqlite" | "postgres" | "postgresql"))
        .unwrap_or(false);
    check(
        scheme_ok,
        "database.url",
        "must be a URL starting with sqlite:// or postgres:// (the value is not shown because it may hold a password)",
    );
    check(
        database.max_connections >= 1,
        "database.max_connections",
        "must be at least 1",
    );
    check(
        database.min_connections <= database.max_connections,
        "database.min_connections",
        "must not exceed database.max_connections",
    );
    check(
        !database.acquire_timeout.is_zero(),
        "database.acquire_timeout",
        "must be greater than zero",
    );
    check(
        !database.connect_timeout.is_zero(),
        "database.connect_timeout",
        "must be greater than zero",
    );
    check(
        !settings.health.check_timeout.is_zero(),
        "health.check_timeout",
        "must be greater than zero",
    );
    check(
        !settings.telemetry.log_level.trim().is_empty(),
        "telemetry.log_level",
        "must not be empty",
    );

    if production {
        check(
            !database.is_sqlite() || database.allow_sqlite_in_production,
            "database.url",
            "SQLite is refused in production; use PostgreSQL, or set database.allow_sqlite_in_production = true for a single-node deployment",
        );
        let secret = settings.auth.jwt_secret.expose_secret();
        check(
            secret != DEVELOPMENT_JWT_SECRET,
            "auth.jwt_secret",
            "is the development default; set APP__AUTH__JWT_SECRET or APP__AUTH__JWT_SECRET_FILE (e.g. `openssl rand -base64 48`)",
        );
        check(
            secret.len() >= MIN_PRODUCTION_SECRET_BYTES,
            "auth.jwt_secret",
            "must be at least 32 bytes in production",
        );
        check(
            distinct_bytes(secret) >= 8,
            "auth.jwt_secret",
            "is too repetitive to be a secret",
        );
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn distinct_bytes(s: &str) -> usize {
    let mut seen = [false; 256];
    s.bytes().for_each(|b| seen[usize::from(b)] = true);
    seen.iter().filter(|b| **b).count()
}

/// `scheme://host[:port]`, exactly as a browser sends it in `Origin`.
fn is_origin(origin: &str) -> bool {
    url::Url::parse(origin)
        .map(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.origin().ascii_serialization() == origin.trim_end_matches('/')
                && !origin.ends_with('/')
        })
        .unwrap_or(false)
}
