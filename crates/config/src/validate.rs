//! Rules a configuration must satisfy beyond its types, checked before anything starts.

use secrecy::ExposeSecret;

use crate::error::Problem;
use crate::{
    DEVELOPMENT_JWT_SECRET, Environment, JwtAlgorithm, MIN_PRODUCTION_SECRET_BYTES, Settings,
};

/// Largest body limit accepted (1 GiB): anything bigger is a typo.
const MAX_BODY_LIMIT: usize = 1 << 30;

/// Collects every problem, so one run reports them all.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn check(&mut self, ok: bool, key: &str, message: &str) {
        if !ok {
            self.0.push(Problem::new(key, message));
        }
    }

    fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }
}

fn validate_jobs(settings: &Settings, problems: &mut Problems) {
    problems.check(
        settings.jobs.backend == crate::JobsBackend::Database || settings.redis.url.is_some(),
        "jobs.backend",
        "\"redis\" needs redis.url (REDIS_URL); set it, or set jobs.backend = \"database\"",
    );
    let jobs = &settings.jobs;
    problems.check(
        jobs.poll_interval >= std::time::Duration::from_millis(10),
        "jobs.poll_interval",
        "must be at least 10ms",
    );
    problems.check(
        jobs.heartbeat_interval >= std::time::Duration::from_secs(1),
        "jobs.heartbeat_interval",
        "must be at least 1s (heartbeats are stored with second precision)",
    );
    problems.check(
        (2..=100).contains(&jobs.missed_heartbeats),
        "jobs.missed_heartbeats",
        "must be between 2 and 100",
    );
    problems.check(
        !jobs.retention.is_zero(),
        "jobs.retention",
        "must be greater than zero",
    );
    for (name, queue) in [
        ("high", &jobs.queues.high),
        ("default", &jobs.queues.default),
        ("low", &jobs.queues.low),
    ] {
        problems.check(
            (1..=1024).contains(&queue.concurrency),
            &format!("jobs.queues.{name}.concurrency"),
            "must be between 1 and 1024",
        );
    }
}

fn validate_telemetry(settings: &Settings, problems: &mut Problems) {
    let otlp = &settings.telemetry.otlp;
    if let Some(endpoint) = &otlp.endpoint {
        problems.check(
            url::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
            "telemetry.otlp.endpoint",
            "must be an http(s) URL such as http://otel-collector:4318",
        );
    }
    problems.check(
        otlp.sample_ratio.is_none_or(|r| (0.0..=1.0).contains(&r)),
        "telemetry.otlp.sample_ratio",
        "must be between 0.0 and 1.0",
    );
    problems.check(
        !otlp.timeout.is_zero(),
        "telemetry.otlp.timeout",
        "must be greater than zero",
    );
    problems.check(
        otlp.service_name
            .as_deref()
            .is_none_or(|n| !n.trim().is_empty() && n.len() <= 128),
        "telemetry.otlp.service_name",
        "must be 1 to 128 characters",
    );
}

fn validate_smtp(settings: &Settings, production: bool, problems: &mut Problems) {
    if settings.mail.transport != crate::MailTransport::Smtp {
        return;
    }
    let smtp = &settings.mail.smtp;
    problems.check(
        !smtp.host.trim().is_empty(),
        "mail.smtp.host",
        "must not be empty",
    );
    problems.check(smtp.port != 0, "mail.smtp.port", "must not be 0");
    problems.check(
        smtp.username.is_some() == smtp.password.is_some(),
        "mail.smtp.password",
        "username and password go together: set both or neither",
    );
    problems.check(
        !smtp.timeout.is_zero(),
        "mail.smtp.timeout",
        "must be greater than zero",
    );
    problems.check(
        !(production && smtp.tls == crate::SmtpTls::None && smtp.password.is_some()),
        "mail.smtp.tls",
        "`none` would send the SMTP password in clear text; use starttls or tls in production",
    );
}

/// What production refuses at the HTTP edge: settings that are fine on a laptop but leave a
/// deployment open.
fn validate_production_edge(settings: &Settings, problems: &mut Problems) {
    problems.check(
        settings.rate_limit.enabled,
        "rate_limit.enabled",
        "must be true in production (per-IP limits are what stops password guessing and sign-up floods)",
    );
    problems.check(
        !settings
            .server
            .cors
            .allowed_origins
            .iter()
            .any(|o| o == "*"),
        "server.cors.allowed_origins",
        "must not contain \"*\" in production; list the origins of your web apps",
    );
    problems.check(
        settings.app.public_url.starts_with("https://"),
        "app.public_url",
        "must start with https:// in production (password-reset and verification links carry tokens)",
    );
}

fn validate_storage(settings: &Settings, problems: &mut Problems) {
    let storage = &settings.storage;
    problems.check(
        !storage.link_ttl.is_zero()
            && storage.link_ttl <= std::time::Duration::from_secs(7 * 86_400),
        "storage.link_ttl",
        "must be between 1s and 7d (S3 presigned links cannot live longer)",
    );
    problems.check(
        (1..=5 * (1 << 30)).contains(&storage.max_attachment_bytes),
        "storage.max_attachment_bytes",
        "must be between 1 byte and 5 GiB",
    );
    match storage.backend {
        crate::StorageBackend::Local => problems.check(
            !storage.local.dir.trim().is_empty(),
            "storage.local.dir",
            "must not be empty",
        ),
        crate::StorageBackend::S3 => {
            let s3 = &storage.s3;
            problems.check(
                !s3.bucket.trim().is_empty(),
                "storage.s3.bucket",
                "must name the bucket when storage.backend = \"s3\"",
            );
            problems.check(
                !s3.region.trim().is_empty(),
                "storage.s3.region",
                "must not be empty",
            );
            problems.check(
                s3.endpoint
                    .as_deref()
                    .is_none_or(|e| e.starts_with("http://") || e.starts_with("https://")),
                "storage.s3.endpoint",
                "must be an http:// or https:// URL",
            );
            problems.check(
                s3.access_key_id.is_some() == s3.secret_access_key.is_some(),
                "storage.s3.secret_access_key",
                "set both storage.s3.access_key_id and storage.s3.secret_access_key, or neither",
            );
        }
    }
}

fn validate_http_client(settings: &Settings, problems: &mut Problems) {
    let http = &settings.http_client;
    for (value, key) in [
        (http.connect_timeout, "http_client.connect_timeout"),
        (http.request_timeout, "http_client.request_timeout"),
        (http.total_timeout, "http_client.total_timeout"),
        (http.circuit_open_for, "http_client.circuit_open_for"),
    ] {
        problems.check(!value.is_zero(), key, "must be greater than zero");
    }
    problems.check(
        http.total_timeout >= http.request_timeout,
        "http_client.total_timeout",
        "must be at least http_client.request_timeout",
    );
    problems.check(
        http.retries <= 10,
        "http_client.retries",
        "must be at most 10",
    );
    problems.check(
        http.retry_min_delay <= http.retry_max_delay,
        "http_client.retry_min_delay",
        "must be at most http_client.retry_max_delay",
    );
    problems.check(
        http.circuit_failures >= 1,
        "http_client.circuit_failures",
        "must be at least 1",
    );
    problems.check(
        (1024..=1 << 30).contains(&http.max_response_bytes),
        "http_client.max_response_bytes",
        "must be between 1024 bytes and 1 GiB",
    );
    problems.check(
        !http.user_agent.trim().is_empty() && http.user_agent.is_ascii(),
        "http_client.user_agent",
        "must be non-empty ASCII",
    );
}

/// A Standard Webhooks secret: `whsec_` (optional) and base64 of 24 to 64 random bytes.
pub fn webhook_secret_bytes(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| (24..=64).contains(&key.len()))
}

fn validate_realtime(settings: &Settings, problems: &mut Problems) {
    let realtime = &settings.realtime;
    problems.check(
        (1..=1_000_000).contains(&realtime.max_connections),
        "realtime.max_connections",
        "must be between 1 and 1000000",
    );
    problems.check(
        (1..=10_000).contains(&realtime.send_queue),
        "realtime.send_queue",
        "must be between 1 and 10000",
    );
    problems.check(
        (std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(300))
            .contains(&realtime.heartbeat_interval),
        "realtime.heartbeat_interval",
        "must be between 100ms and 5m",
    );
    problems.check(
        (std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(60))
            .contains(&realtime.auth_timeout),
        "realtime.auth_timeout",
        "must be between 100ms and 1m",
    );
}

fn validate_webhooks(settings: &Settings, problems: &mut Problems) {
    let webhooks = &settings.webhooks;
    // A receipt must outlive the signature tolerance both ways (±5 min), or a captured
    // delivery could be processed again.
    problems.check(
        webhooks.inbound_retention >= std::time::Duration::from_secs(10 * 60),
        "webhooks.inbound_retention",
        "must be at least 10m (twice the 5-minute signature tolerance)",
    );
    let outbound = &webhooks.outbound;
    problems.check(
        (1..=50).contains(&outbound.max_attempts),
        "webhooks.outbound.max_attempts",
        "must be between 1 and 50",
    );
    problems.check(
        outbound.backoff >= std::time::Duration::from_millis(10)
            && outbound.backoff <= outbound.max_backoff,
        "webhooks.outbound.backoff",
        "must be at least 10ms and at most webhooks.outbound.max_backoff",
    );
    problems.check(
        (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(300))
            .contains(&outbound.timeout),
        "webhooks.outbound.timeout",
        "must be between 1s and 5m",
    );
    for (source, inbound) in &webhooks.inbound {
        let key = format!("webhooks.inbound.{source}");
        problems.check(
            !source.is_empty()
                && source.len() <= 64
                && source.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                }),
            &key,
            "the source name must be 1 to 64 of a-z, 0-9, `_` and `-` (it is a URL segment)",
        );
        problems.check(
            !matches!(source.as_str(), "endpoints" | "deliveries"),
            &key,
            "`endpoints` and `deliveries` are paths of outbound webhooks, not source names",
        );
        problems.check(
            !inbound.secrets.is_empty(),
            &format!("{key}.secrets"),
            "needs at least one secret: an unsigned delivery is never accepted",
        );
        for (i, secret) in inbound.secrets.iter().enumerate() {
            problems.check(
                webhook_secret_bytes(secret.expose_secret()).is_some(),
                &format!("{key}.secrets[{i}]"),
                "must be `whsec_` followed by the base64 of 24 to 64 random bytes \
                 (openssl rand -base64 32)",
            );
        }
    }
}

/// Whether `url` may be used to reach an identity provider: https, or http to a loopback
/// host outside production (a provider run on the developer's machine or by the tests).
pub fn provider_url_allowed(url: &url::Url, production: bool) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" if !production => match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

fn validate_oidc(settings: &Settings, problems: &mut Problems) {
    let oidc = &settings.auth.oidc;
    let production = settings.environment == Environment::Production;
    problems.check(
        oidc.clock_skew <= std::time::Duration::from_secs(300),
        "auth.oidc.clock_skew",
        "must be at most 5m (a longer tolerance keeps expired tokens alive)",
    );
    problems.check(
        oidc.jwks_refetch_interval >= std::time::Duration::from_secs(1)
            && oidc.jwks_refetch_interval <= oidc.jwks_max_age,
        "auth.oidc.jwks_refetch_interval",
        "must be at least 1s and at most auth.oidc.jwks_max_age",
    );
    problems.check(
        oidc.jwks_max_age <= std::time::Duration::from_secs(7 * 24 * 3600),
        "auth.oidc.jwks_max_age",
        "must be at most 7d (a provider that withdraws a key expects it gone within days)",
    );
    for (name, provider) in &oidc.providers {
        let key = format!("auth.oidc.providers.{name}");
        problems.check(
            !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                }),
            &key,
            "the provider name must be 1 to 64 of a-z, 0-9, `_` and `-` (it is a URL segment)",
        );
        let issuer = url::Url::parse(&provider.issuer).ok();
        problems.check(
            issuer.as_ref().is_some_and(|url| {
                provider_url_allowed(url, production)
                    && url.query().is_none()
                    && url.fragment().is_none()
            }),
            &format!("{key}.issuer"),
            if production {
                "must be an https URL with no query or fragment"
            } else {
                "must be an https URL (http only to 127.0.0.1, ::1 or localhost) with no query or fragment"
            },
        );
        problems.check(
            !provider.client_id.trim().is_empty(),
            &format!("{key}.client_id"),
            "must not be empty",
        );
        problems.check(
            provider
                .audience
                .as_deref()
                .is_none_or(|audience| !audience.trim().is_empty()),
            &format!("{key}.audience"),
            "must not be empty when set (unset means client_id)",
        );
        problems.check(
            provider.roles_claim.as_deref().is_none_or(|claim| {
                !claim.trim().is_empty() && !claim.split('.').any(str::is_empty)
            }),
            &format!("{key}.roles_claim"),
            "must be a claim name or a dotted path such as realm_access.roles",
        );
        problems.check(
            provider.role_map.is_empty() == provider.roles_claim.is_none(),
            &format!("{key}.role_map"),
            "goes with roles_claim: set both (only mapped claim values grant roles), or neither",
        );
        problems.check(
            provider
                .role_map
                .iter()
                .all(|(value, role)| !value.is_empty() && !role.trim().is_empty()),
            &format!("{key}.role_map"),
            "maps non-empty claim values to Keel role names",
        );
        problems.check(
            oidc.providers
                .iter()
                .take_while(|(other, _)| *other != name)
                .all(|(_, other)| other.issuer != provider.issuer),
            &format!("{key}.issuer"),
            "another provider has this issuer: a token's `iss` must name one provider",
        );
        problems.check(
            provider.scopes.iter().all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            }),
            &format!("{key}.scopes"),
            "each scope must be printable ASCII with no spaces, quotes or backslashes",
        );
    }
}

pub(crate) fn validate(settings: &Settings) -> Result<(), Vec<Problem>> {
    let mut problems = Problems::default();
    let production = settings.environment == Environment::Production;

    problems.check(
        !settings.app.name.trim().is_empty() && settings.app.name.len() <= 64,
        "app.name",
        "must be 1 to 64 characters",
    );

    let server = &settings.server;
    problems.check(
        !server.host.trim().is_empty(),
        "server.host",
        "must not be empty",
    );
    problems.check(
        server.workers.is_none_or(|w| (1..=1024).contains(&w)),
        "server.workers",
        "must be between 1 and 1024",
    );
    problems.check(
        !server.request_timeout.is_zero(),
        "server.request_timeout",
        "must be greater than zero",
    );
    problems.check(
        !server.client_request_timeout.is_zero(),
        "server.client_request_timeout",
        "must be greater than zero",
    );
    problems.check(
        (1024..=MAX_BODY_LIMIT).contains(&server.body_limit),
        "server.body_limit",
        "must be between 1024 bytes and 1 GiB",
    );
    validate_jobs(settings, &mut problems);
    validate_webhooks(settings, &mut problems);
    validate_oidc(settings, &mut problems);
    validate_realtime(settings, &mut problems);
    validate_telemetry(settings, &mut problems);
    problems.check(
        server.drain_delay <= std::time::Duration::from_secs(300),
        "server.drain_delay",
        "must be at most 5m (orchestrators stop waiting long before that)",
    );
    problems.check(
        !settings.activity.retention.is_zero(),
        "activity.retention",
        "must be greater than zero",
    );
    problems.check(
        !settings.cache.ttl.is_zero()
            && settings.cache.ttl <= std::time::Duration::from_secs(86_400),
        "cache.ttl",
        "must be between 1ms and 1d",
    );
    problems.check(
        (1..=65_536).contains(&settings.cache.memory_capacity_mib),
        "cache.memory_capacity_mib",
        "must be between 1 and 65536",
    );
    validate_http_client(settings, &mut problems);
    validate_storage(settings, &mut problems);
    validate_smtp(settings, production, &mut problems);

    let origins = &server.cors.allowed_origins;
    let wildcard = origins.iter().any(|o| o == "*");
    problems.check(
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

    problems.check(
        !settings.worker.host.trim().is_empty(),
        "worker.host",
        "must not be empty",
    );
    problems.check(
        !settings.ops.host.trim().is_empty(),
        "ops.host",
        "must not be empty",
    );
    problems.check(
        settings.ops.port == 0 || settings.ops.port != server.port,
        "ops.port",
        "must differ from server.port (the operations listener is a separate port)",
    );

    let database = &settings.database;
    let url = database.url.expose_secret();
    let scheme_ok = url::Url::parse(url)
        .map(|u| matches!(u.scheme(), "sqlite" | "postgres" | "postgresql"))
        .unwrap_or(false);
    problems.check(
        scheme_ok,
        "database.url",
        "must be a URL starting with sqlite:// or postgres:// (the value is not shown because it may hold a password)",
    );
    problems.check(
        database.max_connections >= 1,
        "database.max_connections",
        "must be at least 1",
    );
    problems.check(
        database.min_connections <= database.max_connections,
        "database.min_connections",
        "must not exceed database.max_connections",
    );
    problems.check(
        !database.acquire_timeout.is_zero(),
        "database.acquire_timeout",
        "must be greater than zero",
    );
    problems.check(
        !database.connect_timeout.is_zero(),
        "database.connect_timeout",
        "must be greater than zero",
    );
    problems.check(
        !settings.health.check_timeout.is_zero(),
        "health.check_timeout",
        "must be greater than zero",
    );
    problems.check(
        !settings.telemetry.log_level.trim().is_empty(),
        "telemetry.log_level",
        "must not be empty",
    );

    problems.check(
        url::Url::parse(&settings.app.public_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
        "app.public_url",
        "must be an http(s) URL such as https://app.example.com",
    );

    let auth = &settings.auth;
    let asymmetric = auth.jwt_algorithm != JwtAlgorithm::HS256;
    problems.check(
        !asymmetric || auth.jwt_private_key.is_some(),
        "auth.jwt_private_key",
        "is required for EdDSA and RS256 (a PEM private key; use APP__AUTH__JWT_PRIVATE_KEY_FILE)",
    );
    problems.check(
        !auth.jwt_key_id.trim().is_empty(),
        "auth.jwt_key_id",
        "must not be empty",
    );
    problems.check(
        !auth.issuer.trim().is_empty(),
        "auth.issuer",
        "must not be empty",
    );
    problems.check(
        !auth.audience.trim().is_empty(),
        "auth.audience",
        "must not be empty",
    );
    for (key, value) in [
        ("auth.access_token_ttl", auth.access_token_ttl),
        ("auth.refresh_token_idle_ttl", auth.refresh_token_idle_ttl),
        ("auth.refresh_token_max_ttl", auth.refresh_token_max_ttl),
        ("auth.session_cache_ttl", auth.session_cache_ttl),
        ("auth.reset_token_ttl", auth.reset_token_ttl),
        ("auth.verification_token_ttl", auth.verification_token_ttl),
    ] {
        problems.check(!value.is_zero(), key, "must be greater than zero");
    }
    problems.check(
        !auth.reauthentication_window.is_zero()
            && auth.reauthentication_window <= std::time::Duration::from_secs(24 * 3600),
        "auth.reauthentication_window",
        "must be between 1s and 24h (longer would let any stolen session mint API keys)",
    );
    problems.check(
        !auth.api_key_default_ttl.is_zero() && auth.api_key_default_ttl <= auth.api_key_max_ttl,
        "auth.api_key_default_ttl",
        "must be greater than zero and at most auth.api_key_max_ttl",
    );
    problems.check(
        auth.api_key_max_ttl <= std::time::Duration::from_secs(10 * 366 * 24 * 3600),
        "auth.api_key_max_ttl",
        "must be at most 10 years (rotate keys instead)",
    );
    problems.check(
        auth.refresh_token_grace <= std::time::Duration::from_secs(60),
        "auth.refresh_token_grace",
        "must be at most 60s (a longer window lets a stolen refresh token be replayed unnoticed)",
    );
    problems.check(
        auth.hashing_queue_limit <= 10_000,
        "auth.hashing_queue_limit",
        "must be at most 10000",
    );
    problems.check(
        auth.refresh_token_idle_ttl <= auth.refresh_token_max_ttl,
        "auth.refresh_token_idle_ttl",
        "must not exceed auth.refresh_token_max_ttl",
    );
    problems.check(
        (1..=10).contains(&auth.login_backoff_after),
        "auth.login_backoff_after",
        "must be between 1 and 10",
    );
    problems.check(
        (8..=1024).contains(&auth.password_min_length)
            && auth.password_min_length <= auth.password_max_length
            && auth.password_max_length <= 1024,
        "auth.password_min_length",
        "must be at least 8, at most auth.password_max_length, which is at most 1024",
    );
    let issuer = auth.mfa.issuer.as_deref().unwrap_or(&settings.app.name);
    problems.check(
        !issuer.trim().is_empty() && issuer.chars().count() <= 64 && !issuer.contains(':'),
        if auth.mfa.issuer.is_some() {
            "auth.mfa.issuer"
        } else {
            "app.name"
        },
        "authenticator apps show it as the issuer: 1 to 64 characters, no `:`",
    );
    problems.check(
        auth.mfa
            .required_roles
            .iter()
            .all(|r| !r.trim().is_empty() && r.len() <= 64),
        "auth.mfa.required_roles",
        "must list role names (1 to 64 characters each)",
    );
    problems.check(
        auth.peppers.contains_key(&auth.active_pepper),
        "auth.active_pepper",
        "must name one of auth.peppers (in production the development pepper is dropped: add one with APP__AUTH__PEPPERS__<ID>_FILE and name it here)",
    );
    for (id, pepper) in &auth.peppers {
        if pepper.expose_secret().len() < 16 {
            problems.push(Problem::new(
                format!("auth.peppers.{id}"),
                "must be at least 16 bytes (32+ recommended)",
            ));
        }
    }
    problems.check(
        auth.peppers.keys().all(|id| {
            !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }),
        "auth.peppers",
        "ids must be 1 to 32 letters, digits, _ or -",
    );
    problems.check(
        settings.rate_limit.auth_per_ip_per_minute >= 1,
        "rate_limit.auth_per_ip_per_minute",
        "must be at least 1",
    );
    if let Some(url) = &settings.redis.url {
        problems.check(
            url::Url::parse(url.expose_secret())
                .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss")),
            "redis.url",
            "must be a redis:// or rediss:// URL (the value is not shown because it may hold a password)",
        );
    }
    let bootstrap = &settings.bootstrap;
    problems.check(
        bootstrap.admin_email.is_some() == bootstrap.admin_password.is_some(),
        "bootstrap.admin_email",
        "bootstrap.admin_email and bootstrap.admin_password must be set together",
    );
    problems.check(
        !settings.mail.from.trim().is_empty(),
        "mail.from",
        "must not be empty",
    );

    if production {
        validate_production_edge(settings, &mut problems);
        problems.check(
            !database.is_sqlite() || database.allow_sqlite_in_production,
            "database.url",
            "SQLite is refused in production; use PostgreSQL, or set database.allow_sqlite_in_production = true for a single-node deployment",
        );
        if !asymmetric {
            let secret = auth.jwt_secret.expose_secret();
            problems.check(
                secret != DEVELOPMENT_JWT_SECRET,
                "auth.jwt_secret",
                "is the development default; set APP__AUTH__JWT_SECRET or APP__AUTH__JWT_SECRET_FILE (e.g. `openssl rand -base64 48`)",
            );
            problems.check(
                secret.len() >= MIN_PRODUCTION_SECRET_BYTES,
                "auth.jwt_secret",
                "must be at least 32 bytes in production",
            );
            problems.check(
                distinct_bytes(secret) >= 8,
                "auth.jwt_secret",
                "is too repetitive to be a secret",
            );
        }
        for (id, pepper) in &auth.peppers {
            let pepper = pepper.expose_secret();
            if pepper.len() < MIN_PRODUCTION_SECRET_BYTES {
                problems.push(Problem::new(
                    format!("auth.peppers.{id}"),
                    "must be at least 32 bytes in production",
                ));
            }
        }
    }

    if problems.0.is_empty() {
        Ok(())
    } else {
        Err(problems.0)
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
