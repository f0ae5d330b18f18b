use std::io::Write;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

const STRONG_SECRET: &str = "f3a9c1e7b2d84a6f9e0c5b7a1d3f8e2c4b6a9d0e";
const STRONG_PEPPER: &str = "7c1e9a3f5b2d8e4a6c0f9b1d3e5a7c9e2b4d6f8a";

/// The production variables every valid production configuration needs besides its database.
fn production(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut vars = vec![
        ("APP_ENV", "production"),
        ("APP__AUTH__JWT_SECRET", STRONG_SECRET),
        ("APP__AUTH__PEPPERS__P1", STRONG_PEPPER),
        ("APP__AUTH__ACTIVE_PEPPER", "p1"),
        ("APP__APP__PUBLIC_URL", "https://app.example.com"),
    ];
    vars.extend_from_slice(extra);
    vars
}

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(&Sources::from_vars(vars.iter().copied()))
}

fn problem_keys(err: &ConfigError) -> Vec<&str> {
    err.problems().iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn no_configuration_at_all_gives_the_local_defaults() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.environment, Environment::Local);
    assert_eq!(settings.server.host, "127.0.0.1");
    assert_eq!(settings.server.port, 8080);
    assert_eq!(settings.worker.port, 8081);
    assert_eq!(
        settings.database.url.expose_secret(),
        "sqlite://./data/keel.db?mode=rwc"
    );
    assert!(settings.database.auto_migrate);
    assert_eq!(settings.server.request_timeout, Duration::from_secs(30));
    assert!(settings.server.cors.allowed_origins.is_empty());
}

#[test]
fn environment_variables_override_and_are_parsed_where_the_key_needs_it() {
    let settings = load(&[
        ("APP__SERVER__PORT", "9000"),
        ("APP__DATABASE__AUTO_MIGRATE", "false"),
        ("APP__SERVER__REQUEST_TIMEOUT", "2m"),
        ("APP__AUTH__JWT_SECRET", "12345"),
        (
            "APP__SERVER__CORS__ALLOWED_ORIGINS",
            "https://a.example.com, http://localhost:3000",
        ),
    ])
    .unwrap();
    assert_eq!(settings.server.port, 9000);
    assert!(!settings.database.auto_migrate);
    assert_eq!(settings.server.request_timeout, Duration::from_secs(120));
    // A numeric secret stays text.
    assert_eq!(settings.auth.jwt_secret.expose_secret(), "12345");
    assert_eq!(
        settings.server.cors.allowed_origins,
        ["https://a.example.com", "http://localhost:3000"]
    );
}

#[test]
fn a_bad_value_names_its_key_and_its_variable() {
    let err = load(&[("APP__SERVER__PORT", "eighty")]).unwrap_err();
    let problem = &err.problems()[0];
    assert_eq!(problem.key, "server.port");
    assert_eq!(
        problem.origin.as_deref(),
        Some("set by environment variable APP__SERVER__PORT")
    );
    assert!(err.to_string().contains("server.port"), "{err}");

    let err = load(&[("APP__SERVER__SHUTDOWN_TIMEOUT", "soon")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["server.shutdown_timeout"]);
}

#[test]
fn unknown_keys_stop_startup() {
    let err = load(&[("APP__SERVER__PORTT", "1")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["server.portt"]);
    assert_eq!(
        err.problems()[0].origin.as_deref(),
        Some("set by environment variable APP__SERVER__PORTT")
    );
    assert!(err.problems()[0].message.contains("port"));

    let err = load(&[("APP__NOPE__X", "1")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["nope"]);

    let err = load(&[("APP____PORT", "1")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["APP____PORT"]);
}

#[test]
fn app_env_must_be_known() {
    let err = load(&[("APP_ENV", "staging")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["APP_ENV"]);
    assert_eq!(
        load(&[("APP_ENV", "test")]).unwrap().environment,
        Environment::Test
    );
}

#[test]
fn production_refuses_development_secrets_and_sqlite() {
    let err = load(&[("APP_ENV", "production")]).unwrap_err();
    let keys = problem_keys(&err);
    assert!(keys.contains(&"auth.jwt_secret"), "{err}");
    assert!(keys.contains(&"database.url"), "{err}");

    assert!(keys.contains(&"auth.active_pepper"), "{err}");

    let err = load(&[
        ("APP_ENV", "production"),
        ("APP__AUTH__JWT_SECRET", "short"),
        ("APP__AUTH__PEPPERS__P1", STRONG_PEPPER),
        ("APP__AUTH__ACTIVE_PEPPER", "p1"),
        ("APP__APP__PUBLIC_URL", "https://app.example.com"),
        ("DATABASE_URL", "postgres://keel@db/keel"),
    ])
    .unwrap_err();
    assert_eq!(problem_keys(&err), ["auth.jwt_secret", "auth.jwt_secret"]);

    let settings = load(&production(&[(
        "DATABASE_URL",
        "postgres://keel:pw@db/keel",
    )]))
    .unwrap();
    assert!(
        !settings.auth.peppers.contains_key("dev"),
        "the development pepper is dropped"
    );
    assert_eq!(settings.server.host, "0.0.0.0");
    assert_eq!(settings.ops.host, "0.0.0.0");
    assert_eq!(settings.ops.port, 8082);
    assert!(
        !settings.docs.enabled,
        "production hides the docs unless enabled"
    );
    assert!(!settings.database.auto_migrate);
    assert_eq!(settings.telemetry.log_format, LogFormat::Json);

    let settings = load(&production(&[(
        "APP__DATABASE__ALLOW_SQLITE_IN_PRODUCTION",
        "true",
    )]))
    .unwrap();
    assert!(settings.database.is_sqlite());
}

#[test]
fn wildcard_cors_with_credentials_is_refused_and_origins_are_checked() {
    let err = load(&[
        ("APP__SERVER__CORS__ALLOWED_ORIGINS", "*"),
        ("APP__SERVER__CORS__ALLOW_CREDENTIALS", "true"),
    ])
    .unwrap_err();
    assert_eq!(problem_keys(&err), ["server.cors.allow_credentials"]);

    let err = load(&[(
        "APP__SERVER__CORS__ALLOWED_ORIGINS",
        "https://ok.example.com,https://bad.example.com/path,ftp://x.example.com",
    )])
    .unwrap_err();
    assert_eq!(
        problem_keys(&err),
        ["server.cors.allowed_origins", "server.cors.allowed_origins"]
    );
}

#[test]
fn secret_files_are_read_and_win_over_plain_variables() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{STRONG_SECRET}").unwrap();
    let path = file.path().to_str().unwrap();
    let settings = load(&[
        ("APP__AUTH__JWT_SECRET", "plain"),
        ("APP__AUTH__JWT_SECRET_FILE", path),
    ])
    .unwrap();
    assert_eq!(settings.auth.jwt_secret.expose_secret(), STRONG_SECRET);

    let err = load(&[("APP__AUTH__JWT_SECRET_FILE", "/nonexistent/secret")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["APP__AUTH__JWT_SECRET_FILE"]);
}

#[test]
fn a_secret_file_pointing_at_a_device_or_a_huge_file_is_refused_not_read_whole() {
    // /dev/zero never ends: reading it whole would exhaust memory.
    let err = load(&[("APP__AUTH__JWT_SECRET_FILE", "/dev/zero")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["APP__AUTH__JWT_SECRET_FILE"]);
    assert!(err.to_string().contains("larger than 64 KiB"), "{err}");
}

#[test]
fn database_url_alias_yields_to_the_app_variable() {
    let settings = load(&[("DATABASE_URL", "postgres://alias@db/keel")]).unwrap();
    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://alias@db/keel"
    );
    let settings = load(&[
        ("DATABASE_URL", "postgres://alias@db/keel"),
        ("APP__DATABASE__URL", "postgres://explicit@db/keel"),
    ])
    .unwrap();
    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://explicit@db/keel"
    );
    let err = load(&[("DATABASE_URL", "mysql://x@db/keel")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["database.url"]);
    assert_eq!(
        err.problems()[0].origin.as_deref(),
        Some("set by environment variable DATABASE_URL")
    );
    assert!(!err.to_string().contains("mysql://x@db"));
}

#[test]
fn files_layer_in_order_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        "[server]\nport = 7000\n[app]\nname = \"shop\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("test.toml"), "[server]\nport = 7001\n").unwrap();
    let sources = |vars: &[(&str, &str)]| Sources {
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        config_dir: dir.path().to_owned(),
    };
    let local = Settings::load_from(&sources(&[])).unwrap();
    assert_eq!((local.server.port, local.app.name.as_str()), (7000, "shop"));
    let test = Settings::load_from(&sources(&[("APP_ENV", "test")])).unwrap();
    assert_eq!(test.server.port, 7001);
    let env_wins = Settings::load_from(&sources(&[
        ("APP_ENV", "test"),
        ("APP__SERVER__PORT", "7002"),
    ]))
    .unwrap();
    assert_eq!(env_wins.server.port, 7002);

    std::fs::write(dir.path().join("test.toml"), "[server]\nport = \"x\"\n").unwrap();
    let err = Settings::load_from(&sources(&[("APP_ENV", "test")])).unwrap_err();
    let origin = err.problems()[0].origin.clone().unwrap();
    assert!(origin.ends_with("test.toml"), "{origin}");
}

#[test]
fn secrets_never_show_in_debug_or_config_check() {
    let settings = load(&[
        ("APP__AUTH__JWT_SECRET", STRONG_SECRET),
        ("DATABASE_URL", "postgres://keel:hunter2@db:5432/keel"),
    ])
    .unwrap();
    let debug = format!("{settings:?}");
    assert!(!debug.contains(STRONG_SECRET));
    assert!(!debug.contains("hunter2"));
    let rendered = settings.to_redacted_toml();
    assert!(!rendered.contains(STRONG_SECRET), "{rendered}");
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(
        rendered.contains("url = \"postgres://keel:redacted@db:5432/keel\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("jwt_secret = \"[redacted]\""),
        "{rendered}"
    );
    assert!(rendered.contains("port = 8080"), "{rendered}");
}

#[test]
fn the_documented_defaults_file_is_complete() {
    // Every key in defaults.toml must deserialize without the help of serde defaults, so the
    // file stays the single reference of every key.
    let settings = load(&[]).unwrap();
    let rendered = settings.to_redacted_toml();
    for section in [
        "[app]",
        "[server]",
        "[server.cors]",
        "[worker]",
        "[ops]",
        "[docs]",
        "[database]",
        "[auth]",
        "[auth.peppers]",
        "[rate_limit]",
        "[redis]",
        "[bootstrap]",
        "[mail]",
        "[activity]",
        "[health]",
        "[telemetry]",
    ] {
        assert!(
            rendered.contains(section),
            "{section} missing from {rendered}"
        );
    }
}

#[test]
fn asymmetric_tokens_need_a_private_key_and_bootstrap_needs_both_halves() {
    let err = load(&[("APP__AUTH__JWT_ALGORITHM", "EdDSA")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["auth.jwt_private_key"]);
    let err = load(&[("APP__AUTH__JWT_ALGORITHM", "ES999")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["auth.jwt_algorithm"]);
    let err = load(&[("APP__BOOTSTRAP__ADMIN_EMAIL", "root@example.com")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["bootstrap.admin_email"]);
    let err = load(&[("REDIS_URL", "http://cache")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["redis.url"]);
    let settings = load(&[("REDIS_URL", "redis://:pw@127.0.0.1:6379/0")]).unwrap();
    assert!(
        settings
            .to_redacted_toml()
            .contains("redis://:redacted@127.0.0.1:6379/0")
    );
    let err = load(&[("APP__AUTH__LOGIN_BACKOFF_AFTER", "50")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["auth.login_backoff_after"]);
}

#[test]
fn production_refuses_an_open_edge_naming_each_key() {
    let postgres = ("DATABASE_URL", "postgres://keel@db/keel");
    for (var, value, key) in [
        ("APP__RATE_LIMIT__ENABLED", "false", "rate_limit.enabled"),
        (
            "APP__SERVER__CORS__ALLOWED_ORIGINS",
            "https://app.example.com,*",
            "server.cors.allowed_origins",
        ),
        (
            "APP__APP__PUBLIC_URL",
            "http://app.example.com",
            "app.public_url",
        ),
    ] {
        let err = load(&production(&[postgres, (var, value)])).unwrap_err();
        assert_eq!(problem_keys(&err), [key], "{err}");
        assert!(
            err.to_string().contains(var),
            "names where it was set: {err}"
        );
        // The same settings are a developer's choice outside production.
        assert!(
            load(&[(var, value)]).is_ok(),
            "{var}={value} is fine locally"
        );
    }
    // The built-in http:// default is refused too: production must name its public URL.
    let err = load(&[
        ("APP_ENV", "production"),
        ("APP__AUTH__JWT_SECRET", STRONG_SECRET),
        ("APP__AUTH__PEPPERS__P1", STRONG_PEPPER),
        ("APP__AUTH__ACTIVE_PEPPER", "p1"),
        postgres,
    ])
    .unwrap_err();
    assert_eq!(problem_keys(&err), ["app.public_url"]);
    // Docs may be turned back on.
    let settings = load(&production(&[postgres, ("APP__DOCS__ENABLED", "true")])).unwrap();
    assert!(settings.docs.enabled);
}

#[test]
fn the_ops_listener_defaults_to_loopback_on_its_own_port() {
    let settings = load(&[]).unwrap();
    assert_eq!(
        (settings.ops.host.as_str(), settings.ops.port),
        ("127.0.0.1", 8082)
    );
    assert!(settings.docs.enabled);
    let err = load(&[("APP__SERVER__PORT", "9000"), ("APP__OPS__PORT", "9000")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["ops.port"]);
    assert!(load(&[("APP__SERVER__PORT", "0"), ("APP__OPS__PORT", "0")]).is_ok());
    let rendered = settings.to_redacted_toml();
    assert!(
        rendered.contains("[ops]") && rendered.contains("port = 8082"),
        "{rendered}"
    );
}

#[test]
fn trusted_proxies_are_cidrs_checked_at_load() {
    let settings = load(&[]).unwrap();
    assert!(settings.server.trusted_proxies.is_empty());

    let settings = load(&[(
        "APP__SERVER__TRUSTED_PROXIES",
        "10.1.2.3/8, 127.0.0.1, fd00::/8",
    )])
    .unwrap();
    let proxies: Vec<String> = settings
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
    let rendered = settings.to_redacted_toml();
    assert!(
        rendered.contains("trusted_proxies = [")
            && rendered.contains(r#""10.0.0.0/8","#)
            && rendered.contains(r#""fd00::/8","#),
        "config check shows them: {rendered}"
    );

    let err = load(&[("APP__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,my-proxy")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["server.trusted_proxies"]);
    assert!(err.to_string().contains("my-proxy"), "{err}");
    assert_eq!(
        err.problems()[0].origin.as_deref(),
        Some("set by environment variable APP__SERVER__TRUSTED_PROXIES")
    );
    let err = load(&[("APP__SERVER__TRUSTED_PROXIES", "10.0.0.0/33")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["server.trusted_proxies"]);
}

#[test]
fn the_removed_forwarded_headers_switch_points_to_its_replacement() {
    let err = load(&[("APP__SERVER__TRUST_FORWARDED_HEADERS", "true")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["server.trust_forwarded_headers"]);
    assert!(
        err.problems()[0].message.contains("server.trusted_proxies"),
        "{err}"
    );
}

#[test]
fn activity_retention_defaults_to_90_days_and_must_be_positive() {
    let settings = load(&[]).unwrap();
    assert_eq!(
        settings.activity.retention,
        Duration::from_secs(90 * 24 * 3600)
    );
    assert!(
        settings
            .to_redacted_toml()
            .contains("[activity]\nretention = "),
        "config check shows it: {}",
        settings.to_redacted_toml()
    );
    let settings = load(&[("APP__ACTIVITY__RETENTION", "30d")]).unwrap();
    assert_eq!(
        settings.activity.retention,
        Duration::from_secs(30 * 24 * 3600)
    );
    let err = load(&[("APP__ACTIVITY__RETENTION", "0s")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["activity.retention"]);
    let err = load(&[("APP__ACTIVITY__RETENTION", "forever")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["activity.retention"]);
}

#[test]
fn production_drains_before_stopping_and_exposes_the_worker_probe() {
    let settings = load(&production(&[(
        "APP__DATABASE__URL",
        "postgres://keel@db/keel",
    )]))
    .unwrap();
    assert_eq!(settings.server.drain_delay, Duration::from_secs(5));
    assert_eq!(settings.worker.host, "0.0.0.0");
    assert_eq!(load(&[]).unwrap().server.drain_delay, Duration::ZERO);
    let err = load(&[("APP__SERVER__DRAIN_DELAY", "10m")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["server.drain_delay"]);
}

#[test]
fn trace_export_settings_are_checked() {
    let settings = load(&[
        (
            "APP__TELEMETRY__OTLP__ENDPOINT",
            "http://otel-collector:4318",
        ),
        ("APP__TELEMETRY__OTLP__PROTOCOL", "http/json"),
        ("APP__TELEMETRY__OTLP__SAMPLE_RATIO", "0.25"),
    ])
    .unwrap();
    assert_eq!(settings.telemetry.otlp.protocol, OtlpProtocol::HttpJson);
    assert_eq!(settings.telemetry.otlp.sample_ratio, Some(0.25));
    let err = load(&[
        ("APP__TELEMETRY__OTLP__ENDPOINT", "otel-collector:4318"),
        ("APP__TELEMETRY__OTLP__SAMPLE_RATIO", "1.5"),
    ])
    .unwrap_err();
    assert_eq!(
        problem_keys(&err),
        ["telemetry.otlp.endpoint", "telemetry.otlp.sample_ratio"]
    );
    assert!(load(&[("APP__TELEMETRY__OTLP__PROTOCOL", "grpc")]).is_err());
}

#[test]
fn migrations_need_only_the_database_settings() {
    let vars = [
        ("APP_ENV", "production"),
        ("APP__DATABASE__URL", "postgres://keel@db/keel"),
    ];
    let sources = Sources::from_vars(vars.iter().copied());
    let settings = Settings::load_database_only_from(&sources).unwrap();
    assert_eq!(settings.environment, Environment::Production);
    // The same configuration cannot serve: no secrets.
    let err = Settings::load_from(&sources).unwrap_err();
    assert!(problem_keys(&err).contains(&"auth.jwt_secret"));
    // A bad database setting still stops it.
    let vars = [
        ("APP_ENV", "production"),
        ("APP__DATABASE__URL", "mysql://keel@db/keel"),
    ];
    let err =
        Settings::load_database_only_from(&Sources::from_vars(vars.iter().copied())).unwrap_err();
    assert_eq!(problem_keys(&err), ["database.url"]);
}

#[test]
fn the_cache_section_has_defaults_bounds_and_shows_in_config_check() {
    let settings = load(&[]).unwrap();
    assert!(settings.cache.enabled);
    assert_eq!(settings.cache.ttl, Duration::from_secs(60));
    assert_eq!(settings.cache.memory_capacity_mib, 64);
    assert!(
        settings
            .to_redacted_toml()
            .contains("[cache]\nenabled = true"),
        "{}",
        settings.to_redacted_toml()
    );
    let settings = load(&[("APP__CACHE__ENABLED", "false"), ("APP__CACHE__TTL", "5m")]).unwrap();
    assert!(!settings.cache.enabled);
    assert_eq!(settings.cache.ttl, Duration::from_secs(300));
    for (key, value, at_fault) in [
        ("APP__CACHE__TTL", "0s", "cache.ttl"),
        ("APP__CACHE__TTL", "2d", "cache.ttl"),
        (
            "APP__CACHE__MEMORY_CAPACITY_MIB",
            "0",
            "cache.memory_capacity_mib",
        ),
        (
            "APP__CACHE__MEMORY_CAPACITY_MIB",
            "lots",
            "cache.memory_capacity_mib",
        ),
    ] {
        let err = load(&[(key, value)]).unwrap_err();
        assert_eq!(problem_keys(&err), [at_fault], "{key}={value}");
    }
}

#[test]
fn jobs_backend_is_the_database_and_redis_needs_a_redis_url() {
    assert_eq!(
        load(&[]).unwrap().jobs.backend,
        crate::JobsBackend::Database
    );
    assert!(load(&[("APP__JOBS__BACKEND", "database")]).is_ok());
    let err = load(&[("APP__JOBS__BACKEND", "redis")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["jobs.backend"]);
    let on_redis = load(&[
        ("APP__JOBS__BACKEND", "redis"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
    ])
    .unwrap();
    assert_eq!(on_redis.jobs.backend, crate::JobsBackend::Redis);
    let err = load(&[("APP__JOBS__BACKEND", "kafka")]).unwrap_err();
    assert_eq!(problem_keys(&err), ["jobs.backend"]);
}

#[test]
fn webhook_sources_need_secrets_that_decode_and_names_that_fit_a_path() {
    const SECRET: &str = "whsec_HY0Jvpuj4RWKROOtL28y4e11BibhIRDXqYnsvOnC+/U=";
    let settings = load(&[
        (
            "APP__WEBHOOKS__INBOUND__IDP__SECRETS",
            &format!("{SECRET}, HY0Jvpuj4RWKROOtL28y4e11BibhIRDXqYnsvOnC+/U="),
        ),
        ("APP__WEBHOOKS__INBOUND__IDP__SYNC_USERS", "true"),
    ])
    .unwrap();
    let idp = &settings.webhooks.inbound["idp"];
    assert_eq!(idp.secrets.len(), 2);
    assert!(idp.sync_users);
    assert!(!settings.webhooks.outbound.allow_private_targets);
    // Secrets never reach logs.
    let shown = serde_json::to_string(&settings).unwrap();
    assert!(!shown.contains("HY0Jvpuj"), "{shown}");

    let err = load(&[
        ("APP__WEBHOOKS__INBOUND__IDP__SECRETS", "whsec_c2hvcnQ="),
        ("APP__WEBHOOKS__INBOUND__BILLING__SYNC_USERS", "false"),
        ("APP__WEBHOOKS__INBOUND__ENDPOINTS__SECRETS", SECRET),
        ("APP__WEBHOOKS__INBOUND_RETENTION", "1m"),
    ])
    .unwrap_err();
    assert_eq!(
        problem_keys(&err),
        [
            "webhooks.inbound_retention",
            "webhooks.inbound.billing.secrets",
            "webhooks.inbound.endpoints",
            "webhooks.inbound.idp.secrets[0]"
        ]
    );
}

#[test]
fn identity_providers_need_a_usable_issuer_and_client_and_keep_their_secret() {
    let settings = load(&[
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__ISSUER",
            "https://login.acme.example",
        ),
        ("APP__AUTH__OIDC__PROVIDERS__ACME__CLIENT_ID", "keel"),
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__CLIENT_SECRET",
            "hunter2-secret",
        ),
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__ROLES_CLAIM",
            "realm_access.roles",
        ),
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__ROLE_MAP__KEEL_ADMINS",
            "admin",
        ),
        (
            "APP__AUTH__OIDC__PROVIDERS__LOCAL__ISSUER",
            "http://127.0.0.1:9000/realms/x",
        ),
        ("APP__AUTH__OIDC__PROVIDERS__LOCAL__CLIENT_ID", "keel"),
    ])
    .unwrap();
    let acme = &settings.auth.oidc.providers["acme"];
    assert_eq!(acme.scopes, ["openid", "email", "profile"]);
    assert_eq!(acme.role_map["keel_admins"], "admin");
    assert!(!acme.allow_signup);
    let shown = serde_json::to_string(&settings).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");

    let err = load(&[
        (
            "APP__AUTH__OIDC__PROVIDERS__PLAIN__ISSUER",
            "http://login.example",
        ),
        ("APP__AUTH__OIDC__PROVIDERS__PLAIN__CLIENT_ID", "keel"),
        (
            "APP__AUTH__OIDC__PROVIDERS__BAD__ISSUER",
            "https://login.example/?x=1",
        ),
        ("APP__AUTH__OIDC__PROVIDERS__BAD__CLIENT_ID", " "),
        ("APP__AUTH__OIDC__PROVIDERS__BAD__ROLE_MAP__A", "admin"),
        ("APP__AUTH__OIDC__CLOCK_SKEW", "10m"),
    ])
    .unwrap_err();
    assert_eq!(
        problem_keys(&err),
        [
            "auth.oidc.clock_skew",
            "auth.oidc.providers.bad.issuer",
            "auth.oidc.providers.bad.client_id",
            "auth.oidc.providers.bad.role_map",
            "auth.oidc.providers.plain.issuer",
        ]
    );
}
