//! Keel's configuration: typed, layered, validated before anything starts.
//!
//! Layers, later wins: built-in defaults (`defaults.toml`, every key documented there) →
//! `config/default.toml` → `config/{APP_ENV}.toml` → `APP__SECTION__KEY` environment
//! variables (and the aliases `DATABASE_URL`, `RUST_LOG`) → `APP__SECTION__KEY_FILE` secret
//! files. Unknown keys and bad values stop startup with a message naming the key and where its
//! value came from. Secrets never appear in `Debug` output, logs or `config check`.

mod duration;
mod error;
mod sources;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use error::{ConfigError, Problem};
pub use sources::Sources;
pub use validate::{provider_url_allowed, webhook_secret_bytes};

/// The value `auth.jwt_secret` has unless configured; refused in production.
pub const DEVELOPMENT_JWT_SECRET: &str = "keel-local-development-secret-not-for-production";

/// The development pepper (`auth.peppers.dev`); refused in production.
pub const DEVELOPMENT_PEPPER: &str = "keel-local-development-pepper-not-for-production";

/// Shortest `auth.jwt_secret` accepted in production, in bytes (HS256 wants ≥ 256 bits).
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// Which kind of deployment this is; chosen by `APP_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine (the default).
    #[default]
    Local,
    /// Automated tests.
    Test,
    /// A real deployment: stricter checks, JSON logs, no automatic migrations.
    Production,
}

impl Environment {
    /// The `APP_ENV` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Test => "test",
            Self::Production => "production",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "local" => Some(Self::Local),
            "test" => Some(Self::Test),
            "production" => Some(Self::Production),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Set from `APP_ENV`, not from files.
    #[serde(skip_deserializing, default)]
    pub environment: Environment,
    /// Service identity.
    pub app: AppSettings,
    /// The api's HTTP server.
    pub server: ServerSettings,
    /// The worker's own health and metrics listener.
    pub worker: WorkerSettings,
    /// The api's operations listener (`/metrics`, `/health/*`), apart from the public port.
    pub ops: OpsSettings,
    /// The OpenAPI document and the interactive docs.
    pub docs: DocsSettings,
    /// The database.
    pub database: DatabaseSettings,
    /// Authentication.
    pub auth: AuthSettings,
    /// Per-IP rate limits at the HTTP edge.
    pub rate_limit: RateLimitSettings,
    /// Optional Redis for shared rate limits and caches.
    pub redis: RedisSettings,
    /// The features' read caches.
    pub cache: CacheSettings,
    /// Outbound HTTP calls to other services.
    pub http_client: HttpClientSettings,
    /// Where files live.
    pub storage: StorageSettings,
    /// The first administrator.
    pub bootstrap: BootstrapSettings,
    /// Outgoing mail.
    pub mail: MailSettings,
    /// Background jobs and schedules.
    pub jobs: JobsSettings,
    /// The activity log.
    pub activity: ActivitySettings,
    /// Signed webhooks from and to other services.
    pub webhooks: WebhooksSettings,
    /// WebSocket connections (`GET /api/v1/ws`).
    pub realtime: RealtimeSettings,
    /// Readiness checks.
    pub health: HealthSettings,
    /// Logs.
    pub telemetry: TelemetrySettings,
}

/// `[app]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// Service name used in logs.
    pub name: String,
    /// Base URL of links in mails.
    pub public_url: String,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// HTTP worker threads; one per CPU when unset.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Longest a handler may run before the caller gets 503.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Longest SIGTERM waits for in-flight requests.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long readiness answers 503 while requests are still served.
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    /// Idle keep-alive connection lifetime.
    #[serde(with = "duration")]
    pub keep_alive: Duration,
    /// Time a client has to send its request headers.
    #[serde(with = "duration")]
    pub client_request_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed; empty means the peer address is the
    /// client. A bare address is a single host.
    #[serde(deserialize_with = "cidr_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Cross-origin requests.
    pub cors: CorsSettings,
}

/// `[server.cors]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed to call the API from a browser; `*` allows any.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_origins: Vec<String>,
    /// Whether browsers may send cookies and `Authorization` cross-origin.
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Address of the worker's health and metrics listener.
    pub host: String,
    /// Its port; 0 picks a free one.
    pub port: u16,
    /// Longest SIGTERM waits for running work.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

/// `[ops]`: the api's operations listener, meant for scrapers and probes, not the internet.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
}

/// `[docs]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DocsSettings {
    /// Serve `/openapi.json` and `/docs` on the public port.
    pub enabled: bool,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc` or `postgres://user:password@host/db`. May hold a password.
    #[serde(serialize_with = "redact_url_password")]
    pub url: SecretString,
    /// Apply pending migrations at startup (guarded against concurrent replicas).
    pub auto_migrate: bool,
    /// Pool size.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// Longest to wait for a new connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest a request waits for a pooled connection before failing with 503.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    /// Idle connections are closed after this long.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// How long a SQLite writer waits for the write lock.
    #[serde(with = "duration")]
    pub sqlite_busy_timeout: Duration,
    /// SQLite is refused in production unless this is set.
    pub allow_sqlite_in_production: bool,
}

impl DatabaseSettings {
    /// Whether the URL points at SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.url.expose_secret().starts_with("sqlite:")
    }
}

/// How access tokens are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `auth.jwt_secret`.
    HS256,
    /// Ed25519 with `auth.jwt_private_key`.
    EdDSA,
    /// RSA-SHA256 with `auth.jwt_private_key`.
    RS256,
}

/// A public key still accepted after rotation, listed in the JWKS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    /// Its `kid`.
    pub key_id: String,
    /// PEM public key.
    pub public_key: String,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Signing algorithm of access tokens.
    pub jwt_algorithm: JwtAlgorithm,
    /// HMAC key for HS256 access tokens.
    #[serde(serialize_with = "redact")]
    pub jwt_secret: SecretString,
    /// PEM private key for EdDSA or RS256.
    #[serde(
        default,
        serialize_with = "redact_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub jwt_private_key: Option<SecretString>,
    /// `kid` of the current signing key.
    pub jwt_key_id: String,
    /// Public keys still accepted (rotation).
    pub jwt_retired_keys: Vec<RetiredKey>,
    /// `iss` of issued tokens, required on verification.
    pub issuer: String,
    /// `aud` of issued tokens, required on verification.
    pub audience: String,
    /// Access-token lifetime.
    #[serde(with = "duration")]
    pub access_token_ttl: Duration,
    /// Sliding session expiry.
    #[serde(with = "duration")]
    pub refresh_token_idle_ttl: Duration,
    /// Absolute session expiry.
    #[serde(with = "duration")]
    pub refresh_token_max_ttl: Duration,
    /// How long session and account state may be cached.
    #[serde(with = "duration")]
    pub session_cache_ttl: Duration,
    /// Password-reset link lifetime.
    #[serde(with = "duration")]
    pub reset_token_ttl: Duration,
    /// Email-verification link lifetime.
    #[serde(with = "duration")]
    pub verification_token_ttl: Duration,
    /// New accounts must confirm their email.
    pub require_email_verification: bool,
    /// Consecutive failed logins before backoff.
    pub login_backoff_after: u32,
    /// Shortest password.
    pub password_min_length: usize,
    /// Longest password.
    pub password_max_length: usize,
    /// Argon2id memory cost, KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Concurrent hashing operations; 0 = one per CPU.
    pub hashing_concurrency: usize,
    /// Hashes allowed to wait for a slot; past that requests get 503 at once.
    pub hashing_queue_limit: usize,
    /// Creating an API key needs a session whose password was proved this recently.
    #[serde(with = "duration")]
    pub reauthentication_window: Duration,
    /// Lifetime of an API key created without `expires_at`.
    #[serde(with = "duration")]
    pub api_key_default_ttl: Duration,
    /// Longest lifetime an API key may have.
    #[serde(with = "duration")]
    pub api_key_max_ttl: Duration,
    /// A refresh token presented again this soon after its exchange (two tabs) gets the same
    /// successor instead of revoking the session.
    #[serde(with = "duration")]
    pub refresh_token_grace: Duration,
    /// Browser sessions: a sign-in may ask for its refresh token in an `HttpOnly` cookie.
    pub cookie_sessions: bool,
    /// The pepper new digests use.
    pub active_pepper: String,
    /// Every pepper still accepted, by id.
    #[serde(serialize_with = "redact_map")]
    pub peppers: BTreeMap<String, SecretString>,
    /// Second factors (`[auth.mfa]`).
    pub mfa: MfaSettings,
    /// External identity providers (`[auth.oidc]`).
    pub oidc: OidcSettings,
}

/// `[auth.oidc]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// How far a provider's clock may be off (`exp`, `nbf`, `iat`); at most 5m.
    #[serde(with = "duration")]
    pub clock_skew: Duration,
    /// A token signed with a key Keel has not seen refetches the provider's keys, at most
    /// this often (a stream of forged `kid`s must not become a stream of requests).
    #[serde(with = "duration")]
    pub jwks_refetch_interval: Duration,
    /// The age after which keys and discovery documents are fetched again (the copy in hand
    /// stays in use while that fails).
    #[serde(with = "duration")]
    pub jwks_max_age: Duration,
    /// Providers by name (the name is the `{provider}` path segment and the link's provider).
    #[serde(default)]
    pub providers: BTreeMap<String, OidcProviderSettings>,
}

/// `[auth.oidc.providers.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderSettings {
    /// The issuer URL, exactly as the provider's tokens carry it in `iss`; its discovery
    /// document is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The `aud` access tokens must carry; unset: `client_id`.
    #[serde(default)]
    pub audience: Option<String>,
    /// This service's client id at the provider (ID tokens' `aud`, `azp`).
    pub client_id: String,
    /// The client secret for the code exchange; unset: a public client (PKCE only).
    #[serde(
        default,
        serialize_with = "redact_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_secret: Option<SecretString>,
    /// Scopes asked for at sign-in (`openid` is always included).
    #[serde(default = "default_oidc_scopes", deserialize_with = "string_or_list")]
    pub scopes: Vec<String>,
    /// The claim listing the user's groups or roles (a dotted path such as
    /// `realm_access.roles`); set, the provider decides the account's roles.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Claim value → Keel role name; only mapped values grant roles.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// Clients (`azp`, or `client_id`) whose access tokens are accepted; empty: any client
    /// the provider issued a token for this audience.
    #[serde(default, deserialize_with = "string_or_list")]
    pub authorized_parties: Vec<String>,
    /// Create an account for a user seen for the first time (else only linked users get in).
    #[serde(default)]
    pub allow_signup: bool,
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(str::to_owned).to_vec()
}

/// `[auth.mfa]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MfaSettings {
    /// The name authenticator apps show beside the account; unset: `app.name`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Roles whose permissions count only once their holder has a second factor on (a list,
    /// or comma-separated text from the environment).
    #[serde(default, deserialize_with = "string_or_list")]
    pub required_roles: Vec<String>,
}

/// `[rate_limit]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Whether per-IP limits apply.
    pub enabled: bool,
    /// Requests per minute per client IP on the sign-in and recovery endpoints.
    pub auth_per_ip_per_minute: u32,
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` URL; unset means in-memory adapters (one process).
    #[serde(
        default,
        serialize_with = "redact_optional_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<SecretString>,
    /// Prefix of every key Keel writes.
    pub key_prefix: String,
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Whether features read through their caches; `false` sends every read to the database.
    pub enabled: bool,
    /// How long a cached read lives at most (invalidation on writes usually ends it sooner).
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// Most memory, in MiB, the in-process cache holds (when `redis.url` is unset).
    pub memory_capacity_mib: u64,
}

/// `[http_client]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpClientSettings {
    /// Longest wait for a connection (TCP and TLS).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest one attempt may take, body included.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Longest a call may take with all its attempts and pauses.
    #[serde(with = "duration")]
    pub total_timeout: Duration,
    /// Attempts after the first for a retryable request (idempotent method or idempotency key).
    pub retries: u32,
    /// First pause before a retry (then doubling, with jitter).
    #[serde(with = "duration")]
    pub retry_min_delay: Duration,
    /// Longest pause before a retry (also the most of a `Retry-After` honoured).
    #[serde(with = "duration")]
    pub retry_max_delay: Duration,
    /// Consecutive failures of a host that open its circuit.
    pub circuit_failures: u32,
    /// How long an open circuit refuses calls before letting one through to probe.
    #[serde(with = "duration")]
    pub circuit_open_for: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: u64,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// The `User-Agent` sent.
    pub user_agent: String,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `local` (a directory) or `s3` (any S3-compatible service).
    pub backend: StorageBackend,
    /// How long download links work.
    #[serde(with = "duration")]
    pub link_ttl: Duration,
    /// Largest attachment accepted, in bytes.
    pub max_attachment_bytes: u64,
    /// `[storage.local]`
    pub local: LocalStorageSettings,
    /// `[storage.s3]`
    pub s3: S3Settings,
}

/// Which object store holds files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A directory (`storage.local.dir`).
    Local,
    /// An S3-compatible service (`[storage.s3]`).
    S3,
}

/// `[storage.local]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStorageSettings {
    /// The directory files are kept in (created).
    pub dir: String,
}

/// `[storage.s3]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The service's URL; unset means AWS S3 of `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region (`us-east-1` for most S3-compatible services).
    pub region: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The access key id; unset means the environment's credentials (instance role, `AWS_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The secret key (use `APP__STORAGE__S3__SECRET_ACCESS_KEY_FILE`).
    #[serde(
        default,
        serialize_with = "redact_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret_access_key: Option<SecretString>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (MinIO and most
    /// self-hosted services).
    pub path_style: bool,
}

/// `[bootstrap]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSettings {
    /// Email of the first administrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_email: Option<String>,
    /// Their password.
    #[serde(
        default,
        serialize_with = "redact_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub admin_password: Option<SecretString>,
}

/// How mail leaves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// One `.eml` file per message in `mail.dir`.
    File,
    /// A log line per message (bodies not logged).
    Log,
    /// An SMTP relay (`[mail.smtp]`).
    Smtp,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only for a relay on the same host or in tests.
    None,
}

/// `[mail.smtp]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Relay host name (also the name its certificate must carry).
    pub host: String,
    /// Relay port (587 for STARTTLS, 465 for TLS, 25 plain).
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// Login, if the relay requires authentication.
    pub username: Option<String>,
    /// Its password (use `APP__MAIL__SMTP__PASSWORD_FILE`).
    #[serde(serialize_with = "redact_optional")]
    pub password: Option<SecretString>,
    /// Longest one SMTP command may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// `[jobs]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSettings {
    /// Where queued jobs wait: `database` (the app's own) or `redis` (needs `redis.url`).
    pub backend: JobsBackend,
    /// How often an idle worker looks for new jobs.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How often a worker proves it is alive; its running jobs go back to the queue after
    /// `heartbeat_interval × missed_heartbeats` of silence (a killed worker).
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Heartbeats missed before a worker counts as dead.
    pub missed_heartbeats: u32,
    /// Finished jobs (succeeded or dead) older than this are purged by the `jobs.purge` schedule.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// Per-queue settings.
    pub queues: QueuesSettings,
    /// Schedule overrides by name (`jobs.schedules.<name>.cron`, `.enabled`).
    #[serde(default)]
    pub schedules: std::collections::BTreeMap<String, ScheduleSettings>,
}

/// Where queued jobs wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobsBackend {
    /// The app's database (SQLite or PostgreSQL), committed with the use case.
    Database,
    /// Redis (`redis.url`), fed from the database's outbox after commit.
    Redis,
}

/// `[realtime]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSettings {
    /// Open connections one api process accepts; more are refused with 503.
    pub max_connections: usize,
    /// Events waiting to be written to one connection; a client that lets more pile up is
    /// disconnected (it is too slow to keep up).
    pub send_queue: usize,
    /// How often the server pings; a connection silent for three intervals is closed.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// How long a connection may take to authenticate.
    #[serde(with = "duration")]
    pub auth_timeout: Duration,
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// How long receipts of inbound deliveries are kept.
    #[serde(with = "duration")]
    pub inbound_retention: Duration,
    /// The senders Keel accepts deliveries from, by source name.
    #[serde(default)]
    pub inbound: BTreeMap<String, InboundWebhookSettings>,
    /// Deliveries to other services.
    pub outbound: OutboundWebhookSettings,
}

/// `[webhooks.inbound.<source>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundWebhookSettings {
    /// Standard Webhooks secrets (`whsec_` and base64); a delivery signed with any of them is
    /// accepted, so a new secret can be added before the sender switches to it.
    #[serde(
        deserialize_with = "secret_list",
        serialize_with = "redact_list",
        default
    )]
    pub secrets: Vec<SecretString>,
    /// The source is an identity provider whose `user.*` events keep accounts in step.
    #[serde(default)]
    pub sync_users: bool,
}

/// `[webhooks.outbound]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundWebhookSettings {
    /// Deliver to private, loopback and link-local addresses too (development only).
    pub allow_private_targets: bool,
    /// Attempts per delivery before it is `failed` (an admin can still redeliver it).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles after each failure (with jitter).
    #[serde(with = "duration")]
    pub backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Longest an attempt may take, connection included.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// `[activity]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitySettings {
    /// Entries older than this are purged by the `purge_old_activity` schedule.
    #[serde(with = "duration")]
    pub retention: Duration,
}

/// `[jobs.queues]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesSettings {
    /// The `high` queue.
    pub high: QueueSettings,
    /// The `default` queue.
    pub default: QueueSettings,
    /// The `low` queue.
    pub low: QueueSettings,
}

/// `[jobs.queues.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Jobs of this queue one worker process runs at once.
    pub concurrency: usize,
}

/// `[jobs.schedules.<name>]`: overrides a schedule declared in code.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// A cron expression with seconds: `sec min hour day-of-month month day-of-week`.
    pub cron: Option<String>,
    /// `false` turns the schedule off.
    pub enabled: Option<bool>,
}

/// `[mail]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    /// Transport.
    pub transport: MailTransport,
    /// Directory of the file transport.
    pub dir: String,
    /// Sender mailbox, e.g. `Keel <no-reply@example.com>`.
    pub from: String,
    /// Files here override the built-in mail templates by name (absent: built-ins only).
    pub templates_dir: String,
    /// The relay, when `transport = "smtp"`.
    pub smtp: SmtpSettings,
}

/// `[health]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Each readiness check fails after this long.
    #[serde(with = "duration")]
    pub check_timeout: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal in `local`, JSON otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured on a terminal.
    Pretty,
}

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Log line format.
    pub log_format: LogFormat,
    /// Which events to keep, in `tracing` EnvFilter syntax.
    pub log_level: String,
    /// Trace export over OTLP/HTTP.
    pub otlp: OtlpSettings,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    /// Protocol buffers over HTTP (`/v1/traces`), what every collector accepts.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// JSON over HTTP.
    #[serde(rename = "http/json")]
    HttpJson,
}

/// `[telemetry.otlp]`: off unless an endpoint is set here or in `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the other standard `OTEL_*` variables apply
/// where these keys are unset.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSettings {
    /// Collector base URL, e.g. `http://otel-collector:4318` (spans go to `/v1/traces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Wire format.
    pub protocol: OtlpProtocol,
    /// `service.name`; default `OTEL_SERVICE_NAME`, else `<app.name>-api` / `<app.name>-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Share of new traces recorded (0.0 to 1.0); a caller's sampling decision is kept.
    /// Default `OTEL_TRACES_SAMPLER_ARG` with `parentbased_traceidratio`, else 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
    /// Extra resource attributes (`deployment.environment` is set from `APP_ENV`); merged
    /// with `OTEL_RESOURCE_ATTRIBUTES`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Longest one export may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Settings {
    /// Loads from the process environment and `./config` (or `$APP_CONFIG_DIR`).
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(&Sources::from_process()?)
    }

    /// Loads from explicit sources; tests use this to avoid touching the process environment.
    pub fn load_from(sources: &Sources) -> Result<Self, ConfigError> {
        Self::load_checked(sources, |_| true)
    }

    /// Loads for a command that only touches the database (`api migrate`): the values must
    /// still have the right types, but only `database.*`, `telemetry.*` and `APP_ENV` are
    /// checked, so a migrations job needs no JWT secret or pepper it never uses.
    pub fn load_database_only() -> Result<Self, ConfigError> {
        Self::load_database_only_from(&Sources::from_process()?)
    }

    /// [`Settings::load_database_only`] from explicit sources.
    pub fn load_database_only_from(sources: &Sources) -> Result<Self, ConfigError> {
        Self::load_checked(sources, |problem| {
            problem.key == "APP_ENV"
                || problem.key.starts_with("database.")
                || problem.key.starts_with("telemetry.")
        })
    }

    fn load_checked(
        sources: &Sources,
        relevant: impl Fn(&Problem) -> bool,
    ) -> Result<Self, ConfigError> {
        let environment = sources.environment()?;
        let figment = sources.figment(environment)?;
        let mut settings: Settings = figment
            .extract_lossy()
            .map_err(|e| ConfigError::from_figment(&figment, e))?;
        settings.environment = environment;
        if environment == Environment::Production {
            // The development pepper is public: never accept digests made with it in production.
            settings
                .auth
                .peppers
                .retain(|_, pepper| pepper.expose_secret() != DEVELOPMENT_PEPPER);
        }
        if let Err(problems) = validate::validate(&settings) {
            let problems: Vec<Problem> = problems
                .into_iter()
                .filter(|p| relevant(p))
                .map(|p| p.with_origin_from(&figment))
                .collect();
            if !problems.is_empty() {
                return Err(ConfigError::Invalid { problems });
            }
        }
        Ok(settings)
    }

    /// The effective configuration as TOML, secrets redacted (`api config check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# configuration could not be rendered: {e}\n"))
    }
}

/// Placeholder shown instead of a secret.
pub const REDACTED: &str = "[redacted]";

fn redact<S: Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(REDACTED)
}

/// Shows a database URL with its password replaced, so operators can still check host and name.
pub fn redacted_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            // Replacing the password only fails for URLs that cannot have one.
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => REDACTED.to_owned(),
    }
}

fn redact_optional<S: Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_str(REDACTED),
        None => serializer.serialize_none(),
    }
}

fn redact_optional_url<S: Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(url) => serializer.serialize_str(&redacted_url(url.expose_secret())),
        None => serializer.serialize_none(),
    }
}

fn redact_map<S: Serializer>(
    value: &BTreeMap<String, SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let redacted: BTreeMap<&str, &str> = value.keys().map(|k| (k.as_str(), REDACTED)).collect();
    redacted.serialize(serializer)
}

fn redact_url_password<S: Serializer>(
    url: &SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redacted_url(url.expose_secret()))
}

fn redact_list<S: Serializer>(value: &[SecretString], serializer: S) -> Result<S::Ok, S::Error> {
    vec![REDACTED; value.len()].serialize(serializer)
}

/// A list of secrets, or (from environment variables) a comma-separated string of them.
fn secret_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(string_or_list(deserializer)?
        .into_iter()
        .map(SecretString::from)
        .collect())
}

/// Accepts a list, or (from environment variables) a comma-separated string.
fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(list) => list,
    })
}

/// A list of CIDRs (or bare addresses), or (from environment variables) a comma-separated
/// string of them; a bad entry fails the load naming the key.
fn cidr_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    string_or_list(deserializer)?
        .iter()
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{entry}` is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32, nor an IP address"
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests;
