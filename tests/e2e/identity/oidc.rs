//! External identity providers: a provider's access tokens act for the linked account, and a
//! browser signs in through the provider (authorization code with PKCE). The provider is a
//! real OpenID provider the test runs on loopback, with its own keys (fixtures), discovery,
//! JWKS, authorization and token endpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::ME;
use crate::support::{TestApp, assert_problem, json_of, spawn_app_with};

const RSA_1: &str = include_str!("../fixtures/oidc-rsa-1.pem");
const RSA_2: &str = include_str!("../fixtures/oidc-rsa-2.pem");
const RSA_FORGER: &str = include_str!("../fixtures/oidc-rsa-forger.pem");
const EC_1: &str = include_str!("../fixtures/oidc-ec-1.pem");
const ED_1: &str = include_str!("../fixtures/oidc-ed-1.pem");

const CLIENT_ID: &str = "keel-web";
const CLIENT_SECRET: &str = "s3cret:with&odd=chars";
const AUDIENCE: &str = "keel-api";

fn encoding_key(pem: &str, algorithm: Algorithm) -> EncodingKey {
    match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("a fixture key")
}

/// A signing key of the provider.
#[derive(Clone)]
struct Key {
    kid: String,
    algorithm: Algorithm,
    pem: &'static str,
}

impl Key {
    fn new(kid: &str, algorithm: Algorithm, pem: &'static str) -> Self {
        Self {
            kid: kid.to_owned(),
            algorithm,
            pem,
        }
    }

    fn jwk(&self) -> Value {
        let mut jwk =
            Jwk::from_encoding_key(&encoding_key(self.pem, self.algorithm), self.algorithm)
                .expect("a JWK");
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &encoding_key(self.pem, self.algorithm)).unwrap()
    }
}

/// A code the provider handed out, with what it was bound to.
struct Grant {
    claims: Value,
    challenge: String,
    redirect_uri: String,
    nonce: String,
}

#[derive(Default)]
struct IdpState {
    published: Vec<Key>,
    signing: Option<Key>,
    /// The claims of the user who signs in at `/authorize`.
    user: Value,
    codes: HashMap<String, Grant>,
    jwks_fetches: usize,
    /// Put another nonce in ID tokens (a replayed token).
    wrong_nonce: bool,
}

/// The OpenID provider the tests run.
struct Idp {
    issuer: String,
    state: Arc<Mutex<IdpState>>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

impl Idp {
    async fn start(keys: Vec<Key>) -> Self {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), keys).await
    }

    /// The provider on `listener` (a port the app was told about before it came up).
    async fn start_on(listener: std::net::TcpListener, keys: Vec<Key>) -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        type Shared = (String, Arc<Mutex<IdpState>>);

        async fn discovery(shared: web::Data<Shared>) -> HttpResponse {
            let issuer = &shared.0;
            HttpResponse::Ok().json(json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                "code_challenge_methods_supported": ["S256"],
            }))
        }

        async fn jwks(shared: web::Data<Shared>) -> HttpResponse {
            let mut state = shared.1.lock().unwrap();
            state.jwks_fetches += 1;
            let keys: Vec<Value> = state.published.iter().map(Key::jwk).collect();
            HttpResponse::Ok().json(json!({ "keys": keys }))
        }

        async fn authorize(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
            let query: HashMap<String, String> =
                serde_urlencoded::from_str(req.query_string()).unwrap();
            assert_eq!(query["response_type"], "code");
            assert_eq!(query["client_id"], CLIENT_ID);
            assert_eq!(query["code_challenge_method"], "S256");
            assert!(query["scope"].split(' ').any(|s| s == "openid"));
            let code = uuid::Uuid::new_v4().to_string();
            let mut state = shared.1.lock().unwrap();
            let claims = state.user.clone();
            state.codes.insert(
                code.clone(),
                Grant {
                    claims,
                    challenge: query["code_challenge"].clone(),
                    redirect_uri: query["redirect_uri"].clone(),
                    nonce: query["nonce"].clone(),
                },
            );
            let location = format!(
                "{}?{}",
                query["redirect_uri"],
                serde_urlencoded::to_string([("code", code.as_str()), ("state", &query["state"])])
                    .unwrap()
            );
            HttpResponse::Found()
                .insert_header(("location", location))
                .finish()
        }

        async fn token(
            req: HttpRequest,
            form: web::Form<HashMap<String, String>>,
            shared: web::Data<Shared>,
        ) -> HttpResponse {
            let refuse = |error: &str| HttpResponse::BadRequest().json(json!({ "error": error }));
            // client_secret_basic, both halves form-encoded.
            let expected = format!("Basic {}", basic_credentials());
            if req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(expected.as_str())
            {
                return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client" }));
            }
            if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
                return refuse("unsupported_grant_type");
            }
            let mut state = shared.1.lock().unwrap();
            // Single use.
            let Some(grant) = form.get("code").and_then(|c| state.codes.remove(c)) else {
                return refuse("invalid_grant");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            if URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())) != grant.challenge
                || form.get("redirect_uri") != Some(&grant.redirect_uri)
            {
                return refuse("invalid_grant");
            }
            let mut claims = grant.claims.clone();
            claims["aud"] = json!(CLIENT_ID);
            claims["nonce"] = json!(if state.wrong_nonce {
                "another-sign-in"
            } else {
                grant.nonce.as_str()
            });
            let key = state.signing.clone().unwrap();
            let id_token = key.sign(&claims);
            let mut access = grant.claims;
            access["aud"] = json!(AUDIENCE);
            HttpResponse::Ok().json(json!({
                "access_token": key.sign(&access),
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": 300,
            }))
        }

        let state = Arc::new(Mutex::new(IdpState {
            signing: keys.first().cloned(),
            published: keys,
            ..IdpState::default()
        }));
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let data = web::Data::new((issuer.clone(), state.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/jwks", web::get().to(jwks))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            issuer,
            state,
            handle,
        }
    }

    /// Claims of an access token for `subject`, living five minutes.
    fn claims(&self, subject: &str, email: &str, groups: &[&str]) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": AUDIENCE,
            "azp": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "email": email,
            "email_verified": true,
            "name": "Ada Lovelace",
            "groups": groups,
        })
    }

    /// An access token signed with the current key.
    fn token(&self, subject: &str, email: &str, groups: &[&str]) -> String {
        let key = self.state.lock().unwrap().signing.clone().unwrap();
        key.sign(&self.claims(subject, email, groups))
    }

    fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }

    /// Publishes `keys` and signs with the first from now on.
    fn rotate(&self, keys: Vec<Key>) {
        let mut state = self.state.lock().unwrap();
        state.signing = keys.first().cloned();
        state.published = keys;
    }
}

/// `base64(urlencode(id):urlencode(secret))`, as RFC 6749 §2.3.1 builds Basic credentials.
fn basic_credentials() -> String {
    let encode = |s: &str| serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_owned();
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(CLIENT_ID),
        encode(CLIENT_SECRET)
    ))
}

async fn spawn_with_provider(idp: &Idp, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__ISSUER",
            idp.issuer.as_str(),
        ),
        ("APP__AUTH__OIDC__PROVIDERS__ACME__CLIENT_ID", CLIENT_ID),
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__CLIENT_SECRET",
            CLIENT_SECRET,
        ),
        ("APP__AUTH__OIDC__PROVIDERS__ACME__AUDIENCE", AUDIENCE),
        ("APP__AUTH__OIDC__PROVIDERS__ACME__ROLES_CLAIM", "groups"),
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__ROLE_MAP__KEEL_ADMINS",
            "admin",
        ),
        (
            "APP__AUTH__OIDC__PROVIDERS__ACME__AUTHORIZED_PARTIES",
            CLIENT_ID,
        ),
        ("APP__AUTH__OIDC__JWKS_REFETCH_INTERVAL", "1s"),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.authed(Method::GET, ME, token).send().await.unwrap()
}

fn role_names(me: &Value) -> Vec<String> {
    let mut names: Vec<String> = me["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_provider_token_reaches_me_with_mapped_roles_and_keys_rotate_while_forgeries_fail() {
    let rsa_1 = Key::new("rsa-1", Algorithm::RS256, RSA_1);
    let ec_1 = Key::new("ec-1", Algorithm::ES256, EC_1);
    let ed_1 = Key::new("ed-1", Algorithm::EdDSA, ED_1);
    let idp = Idp::start(vec![rsa_1.clone(), ec_1.clone(), ed_1.clone()]).await;
    let app = spawn_with_provider(
        &idp,
        &[("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true")],
    )
    .await;

    // First sight: an account is created, linked and given the mapped role.
    let token = idp.token("u-ada", "ada@idp.test", &["keel_admins", "unmapped"]);
    let ada = json_of(me(&app, &token).await, 200).await;
    assert_eq!(ada["email"], "ada@idp.test");
    assert_eq!(role_names(&ada), ["admin", "member"]);
    // The permissions are the account's: an administrator's list works.
    json_of(
        app.authed(Method::GET, "/api/v1/users", &token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    // The same user again (any of the provider's algorithms) is the same account.
    for key in [&ec_1, &ed_1] {
        let again = key.sign(&idp.claims("u-ada", "ada@idp.test", &["keel_admins"]));
        assert_eq!(json_of(me(&app, &again).await, 200).await["id"], ada["id"]);
    }
    // No Keel session stands behind a provider's token: self-service is closed to it.
    assert_problem(
        app.authed(Method::POST, "/api/v1/api-keys", &token)
            .json(&json!({"name": "k"}))
            .send()
            .await
            .unwrap(),
        403,
        "auth.session_required",
    )
    .await;

    // Forged: a key the provider never published, under a known kid and under a new one.
    let forger = Key::new("rsa-1", Algorithm::RS256, RSA_FORGER);
    let forged = forger.sign(&idp.claims("u-ada", "ada@idp.test", &["keel_admins"]));
    assert_problem(me(&app, &forged).await, 401, "invalid_token").await;
    let fetches = idp.jwks_fetches();
    let forger = Key::new("evil-1", Algorithm::RS256, RSA_FORGER);
    for subject in ["u-1", "u-2", "u-3"] {
        let forged = forger.sign(&idp.claims(subject, "x@idp.test", &[]));
        assert_problem(me(&app, &forged).await, 401, "invalid_token").await;
    }
    // A stream of unknown kids is one refetch at most, not one per token.
    assert!(
        idp.jwks_fetches() <= fetches + 1,
        "{} fetches after {fetches}",
        idp.jwks_fetches()
    );

    // Wrong audience, expired, another issuer, HS256 with any secret: all refused.
    let mut claims = idp.claims("u-ada", "ada@idp.test", &[]);
    claims["aud"] = json!("someone-else");
    assert_problem(me(&app, &rsa_1.sign(&claims)).await, 401, "invalid_token").await;
    let mut claims = idp.claims("u-ada", "ada@idp.test", &[]);
    claims["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    assert_problem(me(&app, &rsa_1.sign(&claims)).await, 401, "invalid_token").await;
    let mut claims = idp.claims("u-ada", "ada@idp.test", &[]);
    claims["iss"] = json!("http://127.0.0.1:1");
    assert_problem(me(&app, &rsa_1.sign(&claims)).await, 401, "invalid_token").await;
    // An ID token (it carries a nonce) is no credential for the API, even for its audience.
    let mut claims = idp.claims("u-ada", "ada@idp.test", &["keel_admins"]);
    claims["nonce"] = json!("n-1");
    assert_problem(me(&app, &rsa_1.sign(&claims)).await, 401, "invalid_token").await;
    // A token the provider issued to another of its clients (azp) is not accepted.
    let mut claims = idp.claims("u-ada", "ada@idp.test", &["keel_admins"]);
    claims["azp"] = json!("someone-elses-app");
    assert_problem(me(&app, &rsa_1.sign(&claims)).await, 401, "invalid_token").await;
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &idp.claims("u-ada", "ada@idp.test", &["keel_admins"]),
        &EncodingKey::from_secret(b"anything"),
    )
    .unwrap();
    assert_problem(me(&app, &hs).await, 401, "invalid_token").await;

    // The provider rotates its keys: a token from the new key works once the refetch
    // interval has passed, and the withdrawn key's tokens stop at the next fetch.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    idp.rotate(vec![Key::new("rsa-2", Algorithm::RS256, RSA_2)]);
    let rotated = idp.token("u-ada", "ada@idp.test", &["keel_admins"]);
    assert_eq!(
        json_of(me(&app, &rotated).await, 200).await["id"],
        ada["id"]
    );
    let old = rsa_1.sign(&idp.claims("u-ada", "ada@idp.test", &["keel_admins"]));
    assert_problem(me(&app, &old).await, 401, "invalid_token").await;

    // Roles follow the claim, except that the last administrator keeps `admin`.
    let grace = idp.token("u-grace", "grace@idp.test", &["keel_admins"]);
    assert_eq!(
        role_names(&json_of(me(&app, &grace).await, 200).await),
        ["admin", "member"]
    );
    let ada_plain = idp.token("u-ada", "ada@idp.test", &[]);
    assert_eq!(
        role_names(&json_of(me(&app, &ada_plain).await, 200).await),
        ["member"]
    );
    assert_problem(
        app.authed(Method::GET, "/api/v1/users", &ada_plain)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let grace_plain = idp.token("u-grace", "grace@idp.test", &[]);
    assert_eq!(
        role_names(&json_of(me(&app, &grace_plain).await, 200).await),
        ["admin", "member"],
        "the last administrator is never removed by a claim"
    );
}

#[tokio::test]
async fn unknown_users_need_signup_and_never_take_over_an_address() {
    let idp = Idp::start(vec![Key::new("rsa-1", Algorithm::RS256, RSA_1)]).await;
    let app = spawn_with_provider(&idp, &[]).await;
    // allow_signup is off: a valid token of an unknown user gets no account.
    let token = idp.token("u-new", "new@idp.test", &[]);
    assert_problem(me(&app, &token).await, 403, "auth.signup_closed").await;

    let app = spawn_with_provider(
        &idp,
        &[("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true")],
    )
    .await;
    // An address a local account holds is never linked to the provider's user.
    let (_, local) = app.member("taken@example.com").await;
    let token = idp.token("u-taken", "taken@example.com", &[]);
    assert_problem(me(&app, &token).await, 409, "auth.external_email_taken").await;
    assert_eq!(
        json_of(me(&app, &local).await, 200).await["email"],
        "taken@example.com"
    );
    // Concurrent first requests of one new user make one account.
    let token = idp.token("u-race", "race@idp.test", &[]);
    let answers = futures_util::future::join_all((0..6).map(|_| me(&app, &token))).await;
    let mut ids = Vec::new();
    for answer in answers {
        ids.push(json_of(answer, 200).await["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location")
        .to_str()
        .unwrap()
        .to_owned()
}

fn query_of(url: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str(url.split_once('?').map_or("", |(_, q)| q)).unwrap()
}

/// The state cookie `start` set.
fn state_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-keel_oidc_state="))
        .and_then(|c| c.split(';').next())
        .expect("the state cookie")
        .to_owned()
}

/// Starts a sign-in and lets the provider approve it: the callback's query and the browser's
/// state cookie.
async fn approved_sign_in(app: &TestApp, idp: &Idp) -> (HashMap<String, String>, String) {
    approved_sign_in_to(app, idp, None).await
}

async fn approved_sign_in_to(
    app: &TestApp,
    idp: &Idp,
    return_to: Option<&str>,
) -> (HashMap<String, String>, String) {
    let browser = browser();
    let mut path = "/api/v1/auth/oidc/acme/start".to_owned();
    if let Some(url) = return_to {
        path.push('?');
        path.push_str(&serde_urlencoded::to_string([("return_to", url)]).unwrap());
    }
    let start = browser.get(app.url(&path)).send().await.unwrap();
    assert_eq!(start.status(), 302);
    let cookie = state_cookie(&start);
    let authorize = location(&start);
    assert!(
        authorize.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{authorize}"
    );
    let params = query_of(&authorize);
    for param in ["state", "nonce", "code_challenge"] {
        assert!(
            params[param].len() >= 43,
            "{param} is too short to be secret"
        );
    }
    let approved = browser.get(&authorize).send().await.unwrap();
    assert_eq!(approved.status(), 302);
    let callback = location(&approved);
    assert!(
        callback.contains("/api/v1/auth/oidc/acme/callback?"),
        "{callback}"
    );
    (query_of(&callback), cookie)
}

async fn callback(
    app: &TestApp,
    query: &HashMap<String, String>,
    cookie: &str,
) -> reqwest::Response {
    browser()
        .get(app.url(&format!(
            "/api/v1/auth/oidc/acme/callback?{}",
            serde_urlencoded::to_string(query).unwrap()
        )))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_pkce_sign_in_opens_a_session_and_a_tampered_state_fails() {
    let idp = Idp::start(vec![Key::new("rsa-1", Algorithm::RS256, RSA_1)]).await;
    let app = spawn_with_provider(
        &idp,
        &[("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true")],
    )
    .await;
    idp.state.lock().unwrap().user = idp.claims("u-ada", "ada@idp.test", &["keel_admins"]);

    let (query, cookie) = approved_sign_in(&app, &idp).await;
    // A tampered state: refused whether or not the cookie was changed to match it, and the
    // browser is told to forget its state cookie.
    let mut tampered = query.clone();
    tampered.insert("state".into(), format!("{}x", query["state"]));
    let refused = callback(&app, &tampered, &cookie).await;
    assert!(
        refused.headers().get_all("set-cookie").iter().any(|c| {
            let c = c.to_str().unwrap();
            c.starts_with("__Host-keel_oidc_state=;")
                || c.starts_with("__Host-keel_oidc_state=\"\"")
        }),
        "the state cookie is cleared on failure too"
    );
    assert_problem(refused, 401, "auth.oidc_state_invalid").await;
    let forged_cookie = format!("__Host-keel_oidc_state={}", tampered["state"]);
    assert_problem(
        callback(&app, &tampered, &forged_cookie).await,
        401,
        "auth.oidc_state_invalid",
    )
    .await;
    // Another browser (no state cookie, or another sign-in's) cannot finish this sign-in.
    assert_problem(
        callback(&app, &query, "").await,
        401,
        "auth.oidc_state_invalid",
    )
    .await;

    // The browser that started it finishes it: a Keel session.
    let tokens = json_of(callback(&app, &query, &cookie).await, 200).await;
    let access = tokens["access_token"].as_str().unwrap();
    let ada = json_of(me(&app, access).await, 200).await;
    assert_eq!(ada["email"], "ada@idp.test");
    assert_eq!(role_names(&ada), ["admin", "member"]);
    let sessions = json_of(
        app.authed(Method::GET, "/api/v1/auth/sessions", access)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(
        sessions.to_string().contains("\"current\":true"),
        "{sessions}"
    );
    // The same callback again (a replayed URL) is refused: a state is used once.
    assert_problem(
        callback(&app, &query, &cookie).await,
        401,
        "auth.oidc_state_invalid",
    )
    .await;

    // An ID token that is not this sign-in's (another nonce) is refused.
    idp.state.lock().unwrap().wrong_nonce = true;
    let (query, cookie) = approved_sign_in(&app, &idp).await;
    assert_problem(
        callback(&app, &query, &cookie).await,
        401,
        "auth.oidc_failed",
    )
    .await;
    idp.state.lock().unwrap().wrong_nonce = false;

    // The provider's refusal, and an unknown provider.
    let (mut query, cookie) = approved_sign_in(&app, &idp).await;
    query.insert("error".into(), "access_denied".into());
    assert_problem(
        callback(&app, &query, &cookie).await,
        401,
        "auth.oidc_failed",
    )
    .await;
    assert_problem(
        browser()
            .get(app.url("/api/v1/auth/oidc/nope/start"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    // No open redirect: return_to must be one of this service's origins.
    let refused = browser()
        .get(app.url("/api/v1/auth/oidc/acme/start?return_to=https%3A%2F%2Fevil.example%2F"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(refused, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "return_to");
}

#[tokio::test]
async fn in_cookie_mode_the_sign_in_ends_in_a_browser_session() {
    let idp = Idp::start(vec![Key::new("ec-1", Algorithm::ES256, EC_1)]).await;
    let app = spawn_with_provider(
        &idp,
        &[
            ("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true"),
            ("APP__AUTH__COOKIE_SESSIONS", "true"),
        ],
    )
    .await;
    idp.state.lock().unwrap().user = idp.claims("u-lin", "lin@idp.test", &[]);
    let public = app.settings.app.public_url.trim_end_matches('/').to_owned();
    let return_to = format!("{public}/projects?tab=mine#top");
    let (query, cookie) = approved_sign_in_to(&app, &idp, Some(&return_to)).await;
    let done = callback(&app, &query, &cookie).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), return_to);
    let cookies = set_cookies(&done);
    let refresh = cookies
        .iter()
        .find(|c| c.starts_with("__Secure-keel_refresh="))
        .expect("the refresh cookie");
    assert!(
        refresh.contains("HttpOnly") && refresh.contains("SameSite=Strict"),
        "{refresh}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-keel_oidc_state=;")
                || c.starts_with("__Host-keel_oidc_state=\"\"")),
        "the state cookie is cleared: {cookies:?}"
    );
    assert!(!cookies.iter().any(|c| c.contains("access_token")));

    // The app then refreshes with the cookie, as after any cookie sign-in.
    let access = refresh_from_cookies(&app, &cookies).await;
    assert_eq!(
        json_of(me(&app, &access).await, 200).await["email"],
        "lin@idp.test"
    );
}

/// Every `Set-Cookie` of a response.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// What a browser-session app does after a cookie-mode sign-in: refresh with the refresh
/// cookie, the CSRF cookie's token and its own origin; returns the access token.
async fn refresh_from_cookies(app: &TestApp, cookies: &[String]) -> String {
    let value = |name: &str| {
        cookies
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .and_then(|c| c.split(';').next())
            .expect("the cookie")
            .to_owned()
    };
    let refreshed = browser()
        .post(app.url("/api/v1/auth/refresh"))
        .header(
            "cookie",
            format!("__Secure-keel_refresh={}", value("__Secure-keel_refresh")),
        )
        .header("x-csrf-token", value("__Host-keel_csrf"))
        .header("origin", app.settings.app.public_url.trim_end_matches('/'))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    json_of(refreshed, 200).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_provider_that_is_down_answers_502_and_is_used_once_it_is_back() {
    let key = Key::new("rsa-1", Algorithm::RS256, RSA_1);
    // The app knows the provider's address before the provider is up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let app = spawn_app_with(&[
        ("APP__AUTH__OIDC__PROVIDERS__ACME__ISSUER", issuer.as_str()),
        ("APP__AUTH__OIDC__PROVIDERS__ACME__CLIENT_ID", CLIENT_ID),
        ("APP__AUTH__OIDC__PROVIDERS__ACME__AUDIENCE", AUDIENCE),
        ("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true"),
        ("APP__AUTH__OIDC__JWKS_REFETCH_INTERVAL", "1s"),
        ("APP__HTTP_CLIENT__RETRIES", "0"),
        ("APP__HTTP_CLIENT__CIRCUIT_FAILURES", "100"),
    ])
    .await;
    let now = chrono::Utc::now().timestamp();
    let token = key.sign(&json!({
        "iss": issuer, "sub": "u-1", "aud": AUDIENCE, "iat": now, "exp": now + 300,
        "email": "one@idp.test", "email_verified": true,
    }));
    // Down: the provider's failure (502), never a 500, and the rest of the API unaffected.
    for _ in 0..3 {
        assert_problem(me(&app, &token).await, 502, "upstream_unavailable").await;
    }
    assert_eq!(app.get("/health/ready").await.status(), 200);
    // Back: within the refetch interval its keys are fetched and the token works.
    let listener = std::net::TcpListener::bind(issuer.trim_start_matches("http://")).unwrap();
    let idp = Idp::start_on(listener, vec![key.clone()]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        json_of(me(&app, &token).await, 200).await["email"],
        "one@idp.test"
    );
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn with_a_keel_second_factor_the_provider_sign_in_asks_for_the_code() {
    let idp = Idp::start(vec![Key::new("ed-1", Algorithm::EdDSA, ED_1)]).await;
    let app = spawn_with_provider(
        &idp,
        &[
            ("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true"),
            ("APP__AUTH__COOKIE_SESSIONS", "true"),
        ],
    )
    .await;
    idp.state.lock().unwrap().user = idp.claims("u-kim", "kim@idp.test", &[]);
    let public = app.settings.app.public_url.trim_end_matches('/').to_owned();
    let return_to = format!("{public}/after");

    // First sign-in: a session; the account turns a Keel second factor on.
    let (query, cookie) = approved_sign_in_to(&app, &idp, Some(&return_to)).await;
    let done = callback(&app, &query, &cookie).await;
    assert_eq!(done.status(), 303);
    let access = refresh_from_cookies(&app, &set_cookies(&done)).await;
    let enrolment = json_of(
        app.post("/api/v1/auth/mfa/totp", Some(&access), &json!({}))
            .await,
        200,
    )
    .await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    json_of(
        app.post(
            "/api/v1/auth/mfa/totp/confirm",
            Some(&access),
            &json!({ "code": super::mfa::code(&secret, -1) }),
        )
        .await,
        200,
    )
    .await;

    // Next sign-in: the provider's word is not enough. The app gets a challenge in the
    // fragment of its own page, and the code finishes the sign-in.
    let (query, cookie) = approved_sign_in_to(&app, &idp, Some(&return_to)).await;
    let asked = callback(&app, &query, &cookie).await;
    assert_eq!(asked.status(), 303);
    assert!(
        !asked
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("__Secure-keel_refresh=")),
        "no session before the code"
    );
    let location = location(&asked);
    let challenge = location
        .strip_prefix(&format!("{return_to}#mfa_challenge="))
        .unwrap_or_else(|| panic!("a challenge in the fragment: {location}"));
    let verified = app
        .post(
            "/api/v1/auth/mfa/verify",
            None,
            &json!({ "challenge": challenge, "code": super::mfa::code(&secret, 0), "cookie": true }),
        )
        .await;
    let access = json_of(verified, 200).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        json_of(me(&app, &access).await, 200).await["email"],
        "kim@idp.test"
    );
}

#[tokio::test]
async fn racing_callbacks_open_one_session_and_hostile_inputs_get_problems() {
    let idp = Idp::start(vec![Key::new("rsa-1", Algorithm::RS256, RSA_1)]).await;
    let app = spawn_with_provider(
        &idp,
        &[("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true")],
    )
    .await;
    idp.state.lock().unwrap().user = idp.claims("u-race", "race@idp.test", &[]);

    // One approved sign-in, its callback sent five times at once: one session, four refusals.
    let (query, cookie) = approved_sign_in(&app, &idp).await;
    let answers =
        futures_util::future::join_all((0..5).map(|_| callback(&app, &query, &cookie))).await;
    let mut signed_in = 0;
    for answer in answers {
        if answer.status() == 200 {
            signed_in += 1;
        } else {
            assert_problem(answer, 401, "auth.oidc_state_invalid").await;
        }
    }
    assert_eq!(signed_in, 1);

    // Oversized or malformed input: a problem naming it, never a 500.
    let long_name = "p".repeat(3000);
    assert_problem(
        browser()
            .get(app.url(&format!("/api/v1/auth/oidc/{long_name}/start")))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let public = app.settings.app.public_url.trim_end_matches('/').to_owned();
    for query in [
        serde_urlencoded::to_string([("return_to", format!("{public}/{}", "a".repeat(3000)))])
            .unwrap(),
        format!("return_to={public}/&return_to={public}/"),
        "surprise=1".to_owned(),
    ] {
        let problem = assert_problem(
            browser()
                .get(app.url(&format!("/api/v1/auth/oidc/acme/start?{query}")))
                .send()
                .await
                .unwrap(),
            422,
            "validation_failed",
        )
        .await;
        assert!(
            !problem["errors"].as_array().unwrap().is_empty(),
            "{problem}"
        );
    }
    let (mut query, cookie) = approved_sign_in(&app, &idp).await;
    query.insert("code".into(), "c".repeat(5000));
    assert_problem(
        callback(&app, &query, &cookie).await,
        401,
        "auth.oidc_state_invalid",
    )
    .await;

    // Tokens naming the provider but broken in every other way: 401, and nothing stored.
    let now = chrono::Utc::now().timestamp();
    let mut claims = idp.claims("u-x", "x@idp.test", &[]);
    claims["pad"] = json!("x".repeat(20 * 1024));
    let huge = Key::new("rsa-1", Algorithm::RS256, RSA_1).sign(&claims);
    let long_kid = Key::new(&"k".repeat(1000), Algorithm::RS256, RSA_FORGER).sign(&idp.claims(
        "u-x",
        "x@idp.test",
        &[],
    ));
    let payload = URL_SAFE_NO_PAD
        .encode(json!({"iss": idp.issuer, "sub": "u-x", "exp": now + 60}).to_string());
    for token in [
        huge,
        long_kid,
        format!("e30.{payload}.c2ln"),
        format!("not-base64!.{payload}.x"),
        "a.b.c".to_owned(),
    ] {
        assert_problem(me(&app, &token).await, 401, "invalid_token").await;
    }
    use sea_orm::ConnectionTrait;
    let backend = app.pool.get_database_backend();
    let row = app
        .pool
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM external_identities WHERE subject = 'u-x'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap(),
        0,
        "no link was stored"
    );
}

#[tokio::test]
async fn with_redis_gone_provider_tokens_still_work_and_a_sign_in_answers_503() {
    let Some(mut redis) = crate::jobs::PrivateRedis::start() else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let idp = Idp::start(vec![Key::new("rsa-1", Algorithm::RS256, RSA_1)]).await;
    let url = redis.url();
    let app = spawn_with_provider(
        &idp,
        &[
            ("APP__AUTH__OIDC__PROVIDERS__ACME__ALLOW_SIGNUP", "true"),
            ("APP__REDIS__URL", url.as_str()),
        ],
    )
    .await;
    let token = idp.token("u-r", "r@idp.test", &["keel_admins"]);
    let before = json_of(me(&app, &token).await, 200).await;
    redis.stop();
    // The caches are a shortcut: the database answers in their place.
    let during = json_of(me(&app, &token).await, 200).await;
    assert_eq!(during["id"], before["id"]);
    assert_eq!(role_names(&during), ["admin", "member"]);
    // A browser sign-in cannot be finished without its stored state: refused at the start.
    assert_problem(
        browser()
            .get(app.url("/api/v1/auth/oidc/acme/start"))
            .send()
            .await
            .unwrap(),
        503,
        "service_unavailable",
    )
    .await;
}
