use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures_executor::block_on;
use keel_kernel::{Actor, Caller, DomainError, ManualClock, Origin, PermissionDef};

use super::*;
use crate::model::{ADMIN_ROLE, MEMBER_ROLE, UserStatus};
use crate::policy::{API_KEYS_MANAGE, PERMISSIONS, USERS_READ};
use crate::testing::{Fakes, fakes};

const PASSWORD: &str = "plum-orbit-kettle-7";

struct World {
    identity: Identity,
    fakes: Fakes,
    clock: Arc<ManualClock>,
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-01T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn world() -> World {
    world_with(IdentitySettings::default())
}

fn world_with(settings: IdentitySettings) -> World {
    let clock = Arc::new(ManualClock::new(start()));
    let fakes = fakes(clock.clone());
    // The ports are moved into Identity; the handles in `fakes` stay for assertions.
    let ports = IdentityPorts {
        users: fakes.ports.users.clone(),
        roles: fakes.ports.roles.clone(),
        sessions: fakes.ports.sessions.clone(),
        one_time_tokens: fakes.ports.one_time_tokens.clone(),
        api_keys: fakes.ports.api_keys.clone(),
        mfa: fakes.ports.mfa.clone(),
        external: fakes.ports.external.clone(),
        unit_of_work: fakes.ports.unit_of_work.clone(),
        activity: fakes.ports.activity.clone(),
        clock: fakes.ports.clock.clone(),
        hasher: fakes.ports.hasher.clone(),
        access_tokens: fakes.ports.access_tokens.clone(),
        secrets: fakes.ports.secrets.clone(),
        counters: fakes.ports.counters.clone(),
        cache: fakes.ports.cache.clone(),
        jobs: fakes.ports.jobs.clone(),
        templates: fakes.ports.templates.clone(),
        providers: fakes.ports.providers.clone(),
    };
    let identity = Identity::new(ports, settings);
    block_on(identity.for_system().sync_rbac(&catalog())).unwrap();
    World {
        identity,
        fakes,
        clock,
    }
}

/// Identity's permissions plus one from another domain.
fn catalog() -> Vec<PermissionDef> {
    PERMISSIONS
        .iter()
        .cloned()
        .chain([PermissionDef::new(
            keel_kernel::Permission::from_static("widgets:write"),
            "test",
        )])
        .collect()
}

fn anonymous() -> Caller {
    Caller {
        actor: Actor::Anonymous,
        origin: Origin {
            ip: Some("203.0.113.9".parse().unwrap()),
            user_agent: Some("test-agent".into()),
            request_id: Some("req-1".into()),
            trace_parent: None,
        },
    }
}

fn domain(error: IdentityError) -> DomainError {
    error.into()
}

impl World {
    fn register(&self, email: &str) -> crate::model::User {
        block_on(
            self.identity
                .for_caller(&anonymous())
                .register(Registration {
                    email: email.into(),
                    password: PASSWORD.into(),
                    full_name: Some("Test User".into()),
                }),
        )
        .unwrap()
    }

    fn login(&self, email: &str) -> Tokens {
        block_on(
            self.identity
                .for_caller(&anonymous())
                .login(email, PASSWORD),
        )
        .unwrap()
    }

    fn caller(&self, tokens: &Tokens) -> Caller {
        let actor = block_on(self.identity.authenticate_bearer(&tokens.access_token)).unwrap();
        Caller::new(actor)
    }

    /// Link mails enqueued so far, composed as the worker composes them.
    fn sent_mail(&self) -> Vec<keel_kernel::mail::Email> {
        self.fakes
            .jobs
            .payloads::<crate::jobs::SendTokenMail>()
            .iter()
            .map(|job| self.identity.compose_token_mail(job).unwrap().email)
            .collect()
    }

    fn admin(&self) -> (crate::model::User, Caller) {
        let user = block_on(
            self.identity
                .for_system()
                .create_admin("root@example.com", PASSWORD),
        )
        .unwrap();
        let tokens = self.login("root@example.com");
        (user, self.caller(&tokens))
    }
}

#[test]
fn registration_validates_normalises_and_grants_member() {
    let w = world();
    let err = block_on(w.identity.for_caller(&anonymous()).register(Registration {
        email: "not-an-email".into(),
        password: "password1234".into(),
        full_name: Some("x".repeat(201)),
    }))
    .unwrap_err();
    let DomainError::Validation(errors) = domain(err) else {
        panic!("expected validation")
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["email", "full_name", "password"]);

    let user = w.register("  Ada@Example.com ");
    assert_eq!(user.email.as_str(), "ada@example.com");
    assert_eq!(user.status, UserStatus::Active);
    let roles: Vec<String> = block_on(w.fakes.ports.users.roles_of(user.id))
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(roles, [MEMBER_ROLE]);
    assert!(matches!(
        block_on(w.identity.for_caller(&anonymous()).register(Registration {
            email: "ADA@example.com".into(),
            password: PASSWORD.into(),
            full_name: None,
        })),
        Err(IdentityError::EmailTaken)
    ));
    assert!(w.fakes.activity.actions().contains(&"user.registered"));
}

#[test]
fn wrong_password_and_unknown_email_are_indistinguishable() {
    let w = world();
    w.register("ada@example.com");
    let visitor = anonymous();
    let service = w.identity.for_caller(&visitor);
    let wrong = block_on(service.login("ada@example.com", "not-the-password")).unwrap_err();
    let unknown = block_on(service.login("nobody@example.com", PASSWORD)).unwrap_err();
    assert_eq!(
        format!("{:?}", domain(wrong)),
        format!("{:?}", domain(unknown))
    );
    // Both paths verified a password (the unknown one against the dummy hash).
    assert_eq!(w.fakes.hasher.verifications(), 2);
}

#[test]
fn repeated_failures_back_off_exponentially_and_success_resets() {
    let w = world();
    w.register("ada@example.com");
    let visitor = anonymous();
    let service = w.identity.for_caller(&visitor);
    for _ in 0..5 {
        assert!(matches!(
            block_on(service.login("ada@example.com", "wrong-password-x")),
            Err(IdentityError::InvalidCredentials)
        ));
    }
    // The sixth attempt is refused outright, even with the right password.
    match domain(block_on(service.login("ada@example.com", PASSWORD)).unwrap_err()) {
        DomainError::RateLimited { retry_after } => assert!(retry_after.as_secs() >= 1),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    // Unknown emails back off the same way (no enumeration through 429s).
    for _ in 0..5 {
        let _ = block_on(service.login("ghost@example.com", "wrong-password-x"));
    }
    assert!(matches!(
        domain(block_on(service.login("ghost@example.com", "x")).unwrap_err()),
        DomainError::RateLimited { .. }
    ));
}

#[test]
fn login_opens_a_session_with_its_origin_and_rehashes_old_hashes() {
    let w = world();
    let user = w.register("ada@example.com");
    // Pretend the stored hash was made with outdated parameters.
    {
        let mut outdated = user.clone();
        outdated.password_hash = format!("old${PASSWORD}");
        let mut tx = block_on(w.fakes.ports.unit_of_work.begin()).unwrap();
        block_on(w.fakes.ports.users.update(tx.as_mut(), &outdated)).unwrap();
    }
    let tokens = w.login("ada@example.com");
    assert_eq!(tokens.expires_in, 900);
    let session = &w.fakes.store.sessions()[0];
    assert_eq!(session.ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(session.user_agent.as_deref(), Some("test-agent"));
    let stored = block_on(w.fakes.ports.users.find(user.id))
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.password_hash,
        format!("fake${PASSWORD}"),
        "rehashed on login"
    );
    let caller = w.caller(&tokens);
    assert_eq!(caller.actor.user_id(), Some(user.id));
    assert!(caller.actor.can(&API_KEYS_MANAGE), "member permissions");
}

#[test]
fn refresh_rotates_and_reuse_kills_the_whole_session() {
    let w = world();
    w.register("ada@example.com");
    let first = w.login("ada@example.com");
    let visitor = anonymous();
    let service = w.identity.for_caller(&visitor);
    let second = block_on(service.refresh(&first.refresh_token)).unwrap();
    assert_eq!(second.session, first.session);
    assert_ne!(second.refresh_token, first.refresh_token);
    let live = block_on(w.identity.authenticate_bearer(&second.access_token));
    assert!(live.is_ok());

    // The stolen first token comes back after the grace window: refused, and the session dies.
    w.clock.advance(Duration::seconds(11));
    assert!(matches!(
        block_on(service.refresh(&first.refresh_token)),
        Err(IdentityError::InvalidToken)
    ));
    assert!(matches!(
        block_on(service.refresh(&second.refresh_token)),
        Err(IdentityError::InvalidToken)
    ));
    assert!(matches!(
        block_on(w.identity.authenticate_bearer(&second.access_token)),
        Err(IdentityError::InvalidToken)
    ));
    assert!(
        w.fakes
            .activity
            .actions()
            .contains(&"auth.refresh_token_reused")
    );
}

#[test]
fn refresh_tokens_expire_when_idle() {
    let w = world();
    w.register("ada@example.com");
    let tokens = w.login("ada@example.com");
    w.clock.advance(Duration::days(15));
    assert!(matches!(
        block_on(
            w.identity
                .for_caller(&anonymous())
                .refresh(&tokens.refresh_token)
        ),
        Err(IdentityError::InvalidToken)
    ));
}

#[test]
fn password_change_ends_other_sessions_but_not_this_one() {
    let w = world();
    w.register("ada@example.com");
    let laptop = w.login("ada@example.com");
    let phone = w.login("ada@example.com");
    let caller = w.caller(&laptop);
    let service = w.identity.for_caller(&caller);

    let err = block_on(service.change_password("wrong", "new-plum-orbit-8")).unwrap_err();
    let DomainError::Validation(errors) = domain(err) else {
        panic!()
    };
    assert_eq!(errors[0].field, "current_password");

    block_on(service.change_password(PASSWORD, "new-plum-orbit-8")).unwrap();
    assert!(block_on(w.identity.authenticate_bearer(&laptop.access_token)).is_ok());
    assert!(block_on(w.identity.authenticate_bearer(&phone.access_token)).is_err());
    assert!(
        block_on(
            w.identity
                .for_caller(&anonymous())
                .refresh(&phone.refresh_token)
        )
        .is_err()
    );
}

#[test]
fn reset_links_work_once_and_end_every_session() {
    let w = world();
    w.register("ada@example.com");
    let tokens = w.login("ada@example.com");
    let visitor = anonymous();
    let service = w.identity.for_caller(&visitor);
    block_on(service.forgot_password("nobody@example.com")).unwrap();
    assert!(w.sent_mail().is_empty(), "no mail for unknown addresses");
    block_on(service.forgot_password("ADA@example.com")).unwrap();
    let mail = w.sent_mail().pop().unwrap();
    assert_eq!(mail.to, "ada@example.com");
    let token = mail
        .text
        .split("?token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();

    let weak = block_on(service.reset_password(&token, "short")).unwrap_err();
    assert!(matches!(domain(weak), DomainError::Validation(_)));
    block_on(service.reset_password(&token, "brand-new-secret-9")).unwrap();
    let again = block_on(service.reset_password(&token, "another-secret-10")).unwrap_err();
    let DomainError::Validation(errors) = domain(again) else {
        panic!()
    };
    assert_eq!(errors[0].field, "token");
    assert!(block_on(w.identity.authenticate_bearer(&tokens.access_token)).is_err());
    assert!(block_on(service.login("ada@example.com", "brand-new-secret-9")).is_ok());
}

#[test]
fn reset_links_expire() {
    let w = world();
    w.register("ada@example.com");
    let visitor = anonymous();
    let service = w.identity.for_caller(&visitor);
    block_on(service.forgot_password("ada@example.com")).unwrap();
    let mail = w.sent_mail().pop().unwrap();
    let token = mail
        .text
        .split("?token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    w.clock.advance(Duration::minutes(31));
    assert!(block_on(service.reset_password(&token, "brand-new-secret-9")).is_err());
}

#[test]
fn suspension_stops_live_tokens_at_once() {
    let w = world();
    let (_, admin) = w.admin();
    let member = w.register("ada@example.com");
    let tokens = w.login("ada@example.com");
    assert!(block_on(w.identity.authenticate_bearer(&tokens.access_token)).is_ok());
    block_on(w.identity.for_caller(&admin).update_user(
        member.id,
        UserPatch {
            status: Some(UserStatus::Suspended),
            ..UserPatch::default()
        },
    ))
    .unwrap();
    assert!(block_on(w.identity.authenticate_bearer(&tokens.access_token)).is_err());
    assert!(matches!(
        block_on(
            w.identity
                .for_caller(&anonymous())
                .login("ada@example.com", PASSWORD)
        ),
        Err(IdentityError::AccountInactive)
    ));
}

#[test]
fn me_is_answered_from_what_authentication_cached_and_follows_every_change() {
    let w = world();
    let (_, root) = w.admin();
    let ada = w.register("ada@example.com");
    let tokens = w.login("ada@example.com");
    // Authenticating reads the account once and caches it with its roles.
    let caller = w.caller(&tokens);
    let reads = w.fakes.store.account_reads();
    let me = block_on(w.identity.for_caller(&caller).me()).unwrap();
    assert_eq!(
        w.fakes.store.account_reads(),
        reads,
        "no repository read while the cache is warm"
    );
    assert_eq!(me.user.id, ada.id);
    assert_eq!(me.user.email.as_str(), "ada@example.com");
    assert_eq!(me.user.full_name.as_deref(), Some("Test User"));
    assert_eq!(me.user.created_at, ada.created_at);
    assert!(me.user.password_hash.is_empty(), "the hash is never cached");
    let names = |me: &Me| me.roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&me), vec![MEMBER_ROLE.to_owned()]);
    assert_eq!(Some(&me.permissions), caller.actor.permissions());

    // The caller's own change shows at once, and so does the next request's.
    let changed = block_on(
        w.identity
            .for_caller(&caller)
            .update_me(Some("Ada L.".into())),
    )
    .unwrap();
    assert_eq!(changed.user.full_name.as_deref(), Some("Ada L."));
    let caller = w.caller(&tokens);
    let me = block_on(w.identity.for_caller(&caller).me()).unwrap();
    assert_eq!(me.user.full_name.as_deref(), Some("Ada L."));

    // So does a role an administrator grants.
    let auditors = block_on(w.identity.for_caller(&root).create_role(
        "auditors",
        None,
        &["users:read".into()],
    ))
    .unwrap();
    block_on(w.identity.for_caller(&root).grant_role(ada.id, auditors.id)).unwrap();
    let caller = w.caller(&tokens);
    let me = block_on(w.identity.for_caller(&caller).me()).unwrap();
    assert!(names(&me).contains(&"auditors".to_owned()));
    assert!(me.permissions.iter().any(|p| p.as_str() == "users:read"));
    assert!(
        caller
            .actor
            .permissions()
            .is_some_and(|p| p.iter().any(|p| p.as_str() == "users:read"))
    );
}

#[test]
fn the_last_admin_cannot_be_removed() {
    let w = world();
    let (root, admin) = w.admin();
    let service = w.identity.for_caller(&admin);
    let suspend = UserPatch {
        status: Some(UserStatus::Suspended),
        ..UserPatch::default()
    };
    assert!(matches!(
        block_on(service.update_user(root.id, suspend.clone())),
        Err(IdentityError::LastAdmin)
    ));
    assert!(matches!(
        block_on(service.delete_user(root.id)),
        Err(IdentityError::LastAdmin)
    ));
    let admin_role = block_on(w.fakes.ports.roles.find_by_name(ADMIN_ROLE))
        .unwrap()
        .unwrap();
    assert!(matches!(
        block_on(service.revoke_role(root.id, admin_role.id)),
        Err(IdentityError::LastAdmin)
    ));
    // With a second administrator, the first may go.
    let other = w.register("second@example.com");
    block_on(service.grant_role(other.id, admin_role.id)).unwrap();
    block_on(service.update_user(root.id, suspend)).unwrap();
}

#[test]
fn members_cannot_administer() {
    let w = world();
    w.register("ada@example.com");
    let member = w.caller(&w.login("ada@example.com"));
    let service = w.identity.for_caller(&member);
    let err =
        block_on(service.list_users(keel_kernel::ListQuery::first_page(&crate::USER_LIST_SPEC)))
            .unwrap_err();
    assert!(
        matches!(domain(err), DomainError::Forbidden { permission } if permission == USERS_READ.as_str())
    );
    assert!(block_on(service.list_roles()).is_err());
}

#[test]
fn api_keys_narrow_their_owner_and_stay_private() {
    let w = world();
    w.register("ada@example.com");
    let ada = w.caller(&w.login("ada@example.com"));
    let service = w.identity.for_caller(&ada);
    let err = block_on(service.create_api_key(NewApiKeyRequest {
        name: "ci".into(),
        scopes: Some(vec!["users:write".into(), "nonsense".into()]),
        expires_at: None,
    }))
    .unwrap_err();
    let DomainError::Validation(errors) = domain(err) else {
        panic!()
    };
    let codes: Vec<_> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            ("scopes[0]", "not_held"),
            ("scopes[1]", "unknown_permission")
        ]
    );

    let created = block_on(service.create_api_key(NewApiKeyRequest {
        name: "ci".into(),
        scopes: Some(vec!["api_keys:manage".into()]),
        expires_at: Some(start() + Duration::days(30)),
    }))
    .unwrap();
    assert!(created.plaintext.starts_with("keel_"));
    let actor = block_on(w.identity.authenticate_api_key(&created.plaintext)).unwrap();
    assert!(matches!(&actor, Actor::ApiKey { owner, .. } if Some(*owner) == ada.actor.user_id()));
    assert!(actor.can(&API_KEYS_MANAGE));
    assert!(block_on(w.identity.authenticate_api_key("keel_nope_secret")).is_err());
    assert!(
        block_on(
            w.identity
                .authenticate_api_key(&format!("{}x", created.plaintext))
        )
        .is_err()
    );

    w.register("bob@example.com");
    let bob = w.caller(&w.login("bob@example.com"));
    assert!(matches!(
        block_on(w.identity.for_caller(&bob).delete_api_key(created.key.id)),
        Err(IdentityError::NotFound(_))
    ));
    assert!(
        block_on(w.identity.for_caller(&bob).list_api_keys())
            .unwrap()
            .is_empty()
    );

    w.clock.advance(Duration::days(31));
    assert!(
        block_on(w.identity.authenticate_api_key(&created.plaintext)).is_err(),
        "expired"
    );
}

#[test]
fn rbac_sync_is_idempotent_and_admin_holds_everything() {
    let w = world();
    let before = block_on(w.fakes.ports.roles.list()).unwrap();
    block_on(w.identity.for_system().sync_rbac(&catalog())).unwrap();
    let roles = block_on(w.fakes.ports.roles.list()).unwrap();
    let names: Vec<_> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [ADMIN_ROLE, MEMBER_ROLE]);
    assert_eq!(roles, before, "a second sync changes nothing");
    let admin = roles.iter().find(|r| r.name == ADMIN_ROLE).unwrap();
    assert!(
        admin
            .permissions
            .iter()
            .any(|p| p.as_str() == "widgets:write")
    );
    assert!(matches!(
        block_on(w.identity.for_system().set_role_permissions(admin.id, &[])),
        Err(IdentityError::SystemRole(_))
    ));
    let (_, root) = w.admin();
    assert!(root.actor.can(&USERS_READ));
}

#[test]
fn bootstrap_creates_the_first_admin_only_once() {
    let w = world();
    let first = block_on(
        w.identity
            .for_system()
            .bootstrap_admin("boot@example.com", PASSWORD),
    )
    .unwrap();
    assert!(first.is_some());
    let second = block_on(
        w.identity
            .for_system()
            .bootstrap_admin("other@example.com", PASSWORD),
    )
    .unwrap();
    assert!(second.is_none());
}

#[test]
fn factory_registrations_are_valid_and_distinct() {
    let w = world();
    let caller = anonymous();
    let service = w.identity.for_caller(&caller);
    let mut emails = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let registration = crate::testing::RegistrationFactory::new().build();
        let user = block_on(service.register(registration.clone())).unwrap();
        assert!(emails.insert(user.email.as_str().to_owned()));
        assert_eq!(user.full_name, registration.full_name);
    }
    let named = crate::testing::RegistrationFactory::new()
        .email("grace@example.com")
        .full_name(None)
        .build();
    let user = block_on(service.register(named)).unwrap();
    assert_eq!(
        (user.email.as_str(), user.full_name),
        ("grace@example.com", None)
    );
}

#[test]
fn ended_sessions_and_spent_tokens_are_purged_by_the_system_only() {
    let w = world();
    w.register("ada@example.com");
    w.login("ada@example.com");
    let visitor = anonymous();
    block_on(
        w.identity
            .for_caller(&visitor)
            .forgot_password("ada@example.com"),
    )
    .unwrap();

    let now = w.clock.now();
    let nothing_yet = block_on(w.identity.for_system().purge_expired_credentials(now)).unwrap();
    assert_eq!(nothing_yet, (0, 0), "live credentials stay");

    w.clock.advance(Duration::days(200));
    let later = w.clock.now();
    assert!(
        block_on(
            w.identity
                .for_caller(&visitor)
                .purge_expired_credentials(later)
        )
        .is_err()
    );
    let purged = block_on(w.identity.for_system().purge_expired_credentials(later)).unwrap();
    assert_eq!(purged, (1, 1), "the session and the reset token");
}

fn link_token(mail: &keel_kernel::mail::Email) -> String {
    mail.text
        .split("?token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned()
}

#[test]
fn two_tabs_refreshing_at_once_get_the_same_successor() {
    let w = world();
    w.register("ada@example.com");
    let first = w.login("ada@example.com");
    let visitor = anonymous();
    let service = w.identity.for_caller(&visitor);
    let tab_a = block_on(service.refresh(&first.refresh_token)).unwrap();
    w.clock.advance(Duration::seconds(5));
    let tab_b = block_on(service.refresh(&first.refresh_token)).unwrap();
    assert_eq!(tab_a.refresh_token, tab_b.refresh_token);
    assert!(block_on(w.identity.authenticate_bearer(&tab_b.access_token)).is_ok());
    // Once the successor is used, the old token has no grace left: reuse revokes.
    let next = block_on(service.refresh(&tab_a.refresh_token)).unwrap();
    assert!(block_on(service.refresh(&first.refresh_token)).is_err());
    assert!(block_on(w.identity.authenticate_bearer(&next.access_token)).is_err());
}

#[test]
fn link_mails_carry_no_usable_token_in_the_job() {
    let w = world();
    w.register("ada@example.com");
    block_on(
        w.identity
            .for_caller(&anonymous())
            .forgot_password("ada@example.com"),
    )
    .unwrap();
    let token = link_token(&w.sent_mail().pop().unwrap());
    for job in w.fakes.jobs.payloads::<crate::jobs::SendTokenMail>() {
        let payload = serde_json::to_string(&job).unwrap();
        assert!(!payload.contains(&token), "{payload}");
    }
}

#[test]
fn a_reset_ends_every_other_link_and_every_api_key() {
    let w = world();
    w.register("ada@example.com");
    let ada = w.caller(&w.login("ada@example.com"));
    let key = block_on(
        w.identity
            .for_caller(&ada)
            .create_api_key(NewApiKeyRequest {
                name: "ci".into(),
                ..NewApiKeyRequest::default()
            }),
    )
    .unwrap();
    let visitor = anonymous();
    let service = w.identity.for_caller(&visitor);
    block_on(service.forgot_password("ada@example.com")).unwrap();
    block_on(service.forgot_password("ada@example.com")).unwrap();
    let mails = w.sent_mail();
    let (older, newer) = (link_token(&mails[0]), link_token(&mails[1]));
    block_on(service.reset_password(&newer, "brand-new-secret-9")).unwrap();
    assert!(block_on(service.reset_password(&older, "another-secret-10")).is_err());
    assert!(block_on(w.identity.authenticate_api_key(&key.plaintext)).is_err());
}

#[test]
fn api_keys_need_a_fresh_session_and_always_expire() {
    let w = world();
    w.register("ada@example.com");
    let ada = w.caller(&w.login("ada@example.com"));
    let service = w.identity.for_caller(&ada);
    let key = block_on(service.create_api_key(NewApiKeyRequest {
        name: "ci".into(),
        ..NewApiKeyRequest::default()
    }))
    .unwrap();
    assert_eq!(key.key.expires_at, Some(start() + Duration::days(90)));
    let too_far = block_on(service.create_api_key(NewApiKeyRequest {
        name: "ci".into(),
        expires_at: Some(start() + Duration::days(400)),
        ..NewApiKeyRequest::default()
    }))
    .unwrap_err();
    assert!(
        matches!(domain(too_far), DomainError::Validation(e) if e[0].field == "expires_at" && e[0].code == "too_far")
    );
    // A key cannot mint keys, nor manage the account.
    let by_key = Caller::new(block_on(w.identity.authenticate_api_key(&key.plaintext)).unwrap());
    let keys = w.identity.for_caller(&by_key);
    assert!(matches!(
        block_on(keys.create_api_key(NewApiKeyRequest::default())),
        Err(IdentityError::SessionRequired)
    ));
    assert!(matches!(
        block_on(keys.logout_all()),
        Err(IdentityError::SessionRequired)
    ));
    assert!(matches!(
        block_on(keys.change_password(PASSWORD, "new-plum-orbit-8")),
        Err(IdentityError::SessionRequired)
    ));
    // Eleven minutes after sign-in (refreshes do not count), a session must prove itself again.
    w.clock.advance(Duration::minutes(11));
    assert!(matches!(
        block_on(service.create_api_key(NewApiKeyRequest {
            name: "late".into(),
            ..NewApiKeyRequest::default()
        })),
        Err(IdentityError::ReauthenticationRequired)
    ));
    block_on(service.change_password(PASSWORD, "new-plum-orbit-8")).unwrap();
    assert!(
        block_on(service.create_api_key(NewApiKeyRequest {
            name: "after password change".into(),
            ..NewApiKeyRequest::default()
        }))
        .is_ok()
    );
}

#[test]
fn wrong_current_passwords_are_counted_like_failed_logins() {
    let w = world();
    w.register("ada@example.com");
    let ada = w.caller(&w.login("ada@example.com"));
    let service = w.identity.for_caller(&ada);
    for _ in 0..5 {
        assert!(matches!(
            domain(
                block_on(service.change_password("wrong-guess-123", "new-plum-orbit-8"))
                    .unwrap_err()
            ),
            DomainError::Validation(_)
        ));
    }
    let before = w.fakes.hasher.verifications();
    assert!(matches!(
        domain(block_on(service.change_password(PASSWORD, "new-plum-orbit-8")).unwrap_err()),
        DomainError::RateLimited { .. }
    ));
    assert_eq!(
        w.fakes.hasher.verifications(),
        before,
        "refused before hashing"
    );
}

#[test]
fn roles_are_only_handed_out_by_those_who_hold_their_power() {
    let w = world();
    let (_, root) = w.admin();
    let admin_role = block_on(w.identity.for_system().list_roles())
        .unwrap()
        .into_iter()
        .find(|r| r.name == ADMIN_ROLE)
        .unwrap();
    let member_role = block_on(w.identity.for_system().list_roles())
        .unwrap()
        .into_iter()
        .find(|r| r.name == MEMBER_ROLE)
        .unwrap();
    let managers = block_on(w.identity.for_caller(&root).create_role(
        "managers",
        None,
        &[
            "users:read".into(),
            "users:write".into(),
            "roles:write".into(),
            "roles:read".into(),
        ],
    ))
    .unwrap();
    let eve = w.register("eve@example.com");
    block_on(w.identity.for_caller(&root).grant_role(eve.id, managers.id)).unwrap();
    let eve_caller = w.caller(&w.login("eve@example.com"));
    let eve_service = w.identity.for_caller(&eve_caller);

    // Not admin for herself, not the member role rewritten, not a role with power she lacks.
    assert!(matches!(
        block_on(eve_service.grant_role(eve.id, admin_role.id)),
        Err(IdentityError::AdminOnly)
    ));
    assert!(matches!(
        block_on(eve_service.set_role_permissions(member_role.id, &["widgets:write".into()])),
        Err(IdentityError::AdminOnly)
    ));
    assert!(matches!(
        domain(block_on(eve_service.create_role("power", None, &["widgets:write".into()])).unwrap_err()),
        DomainError::Forbidden { permission } if permission == "widgets:write"
    ));
    // Nor can she suspend the administrator, who holds more than she does.
    let (root_user, _) = (
        block_on(
            w.identity
                .for_system()
                .list_users(keel_kernel::ListQuery::first_page(&crate::USER_LIST_SPEC)),
        )
        .unwrap()
        .items
        .into_iter()
        .find(|u| u.email.as_str() == "root@example.com")
        .unwrap(),
        (),
    );
    assert!(matches!(
        domain(
            block_on(eve_service.update_user(
                root_user.id,
                UserPatch {
                    status: Some(UserStatus::Suspended),
                    ..UserPatch::default()
                }
            ))
            .unwrap_err()
        ),
        DomainError::Forbidden { .. }
    ));
    // What she holds, she may grant.
    let bob = w.register("bob@example.com");
    let readers = block_on(w.identity.for_caller(&root).create_role(
        "readers",
        None,
        &["users:read".into()],
    ))
    .unwrap();
    assert!(block_on(eve_service.grant_role(bob.id, readers.id)).is_ok());
}

#[test]
fn unverified_accounts_may_only_read_their_profile_and_verify() {
    let clock = Arc::new(ManualClock::new(start()));
    let f = fakes(clock);
    let identity = Identity::new(
        f.ports,
        IdentitySettings {
            require_email_verification: true,
            ..IdentitySettings::default()
        },
    );
    block_on(identity.for_system().sync_rbac(&catalog())).unwrap();
    block_on(identity.for_caller(&anonymous()).register(Registration {
        email: "ada@example.com".into(),
        password: PASSWORD.into(),
        full_name: None,
    }))
    .unwrap();
    let tokens = block_on(
        identity
            .for_caller(&anonymous())
            .login("ada@example.com", PASSWORD),
    )
    .unwrap();
    let actor = block_on(identity.authenticate_bearer(&tokens.access_token)).unwrap();
    assert!(matches!(actor, Actor::Unverified { .. }));
    let caller = Caller::new(actor);
    let service = identity.for_caller(&caller);
    assert!(block_on(service.me()).is_ok());
    assert!(block_on(service.request_email_verification()).is_ok());
    let refused = |e: IdentityError| {
        matches!(
            domain(e),
            DomainError::Refused {
                code: "auth.email_unverified",
                ..
            }
        )
    };
    assert!(refused(
        block_on(service.create_api_key(NewApiKeyRequest::default())).unwrap_err()
    ));
    assert!(refused(block_on(service.sessions()).unwrap_err()));
    assert!(refused(
        block_on(service.update_me(Some("Ada".into()))).unwrap_err()
    ));
    assert!(block_on(service.logout()).is_ok());
}

#[test]
fn ipv6_clients_are_counted_by_their_64() {
    let bucket = |ip: &str| super::client_bucket(Some(ip.parse().unwrap()));
    assert_eq!(
        bucket("2001:db8:1:2:aaaa::1"),
        bucket("2001:db8:1:2:bbbb::9")
    );
    assert_ne!(bucket("2001:db8:1:2::1"), bucket("2001:db8:1:3::1"));
    assert_eq!(bucket("::ffff:203.0.113.9"), bucket("203.0.113.9"));
    assert_ne!(bucket("203.0.113.9"), bucket("203.0.113.10"));
}

#[test]
fn a_password_change_from_a_session_revoked_meanwhile_is_refused() {
    let w = world();
    w.register("ada@example.com");
    let tokens = w.login("ada@example.com");
    // Authenticated before the session ends (say, a reset elsewhere revokes it mid-request).
    let caller = w.caller(&tokens);
    block_on(w.identity.for_caller(&caller).logout()).unwrap();
    assert!(matches!(
        block_on(
            w.identity
                .for_caller(&caller)
                .change_password(PASSWORD, "new-plum-orbit-8")
        ),
        Err(IdentityError::InvalidToken)
    ));
    assert!(
        block_on(
            w.identity
                .for_caller(&anonymous())
                .login("ada@example.com", PASSWORD)
        )
        .is_ok()
    );
}

#[test]
fn the_last_admin_cannot_be_set_back_to_pending_verification() {
    let w = world();
    let (root, caller) = w.admin();
    let err = block_on(w.identity.for_caller(&caller).update_user(
        root.id,
        UserPatch {
            status: Some(UserStatus::PendingVerification),
            ..UserPatch::default()
        },
    ))
    .unwrap_err();
    assert!(matches!(err, IdentityError::LastAdmin));
}

#[test]
fn signing_out_of_a_session_that_already_ended_succeeds_without_a_second_entry() {
    let w = world();
    w.register("ada@example.com");
    let tokens = w.login("ada@example.com");
    // The caller was authenticated while the session was live (a cached check), then another
    // device signed out everywhere.
    let caller = w.caller(&tokens);
    block_on(w.identity.for_caller(&caller).logout()).unwrap();
    block_on(w.identity.for_caller(&caller).logout()).unwrap();
    assert_eq!(
        w.fakes
            .activity
            .actions()
            .iter()
            .filter(|a| **a == "auth.logout")
            .count(),
        1
    );
}

mod mfa {
    use super::*;
    use crate::service::{SecondFactor, TotpEnrolment};

    /// The code an authenticator holding `enrolment` shows at `at`.
    pub(super) fn code(enrolment: &TotpEnrolment, at: DateTime<Utc>) -> String {
        let secret = totp_rs::Secret::Encoded(enrolment.secret.clone())
            .to_bytes()
            .unwrap();
        let totp = totp_rs::TOTP::new(
            totp_rs::Algorithm::SHA1,
            6,
            0,
            30,
            secret,
            None,
            String::new(),
        )
        .unwrap();
        totp.generate(at.timestamp() as u64)
    }

    /// Ada, signed in, with an authenticator on; returns the enrolment and recovery codes.
    fn enrolled(w: &World) -> (Caller, TotpEnrolment, Vec<String>) {
        w.register("ada@example.com");
        let caller = w.caller(&w.login("ada@example.com"));
        let service = w.identity.for_caller(&caller);
        let enrolment = block_on(service.enrol_totp()).unwrap();
        assert!(
            enrolment
                .otpauth_uri
                .starts_with("otpauth://totp/Keel:ada%40example.com?")
        );
        let codes = block_on(service.confirm_totp(&code(&enrolment, w.clock.now()))).unwrap();
        assert_eq!(codes.len(), 10);
        (caller, enrolment, codes)
    }

    /// The `change` of every security notice mailed so far, oldest first.
    fn notices(w: &World) -> Vec<String> {
        w.fakes
            .jobs
            .payloads::<keel_kernel::mail::SendEmail>()
            .iter()
            .filter(|job| job.email.subject == "identity/security_notice")
            .map(|job| {
                assert_eq!(job.email.to, "ada@example.com");
                job.email
                    .text
                    .lines()
                    .find_map(|line| line.strip_prefix("change: "))
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    fn challenge(w: &World) -> String {
        match block_on(
            w.identity
                .for_caller(&anonymous())
                .login("ada@example.com", PASSWORD),
        ) {
            Err(IdentityError::MfaRequired(challenge)) => challenge,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    fn verify(w: &World, challenge: &str, answer: SecondFactor) -> Result<Tokens, IdentityError> {
        block_on(
            w.identity
                .for_caller(&anonymous())
                .verify_mfa(challenge, answer),
        )
    }

    #[test]
    fn sign_in_needs_the_code_once_on_and_a_code_works_once() {
        let w = world();
        let (_, enrolment, _) = enrolled(&w);
        let first = challenge(&w);
        // The code that confirmed the authenticator cannot be replayed.
        let replay = verify(
            &w,
            &first,
            SecondFactor::Code(code(&enrolment, w.clock.now())),
        );
        assert!(
            matches!(replay, Err(IdentityError::InvalidMfaCode)),
            "{replay:?}"
        );
        w.clock.advance(Duration::seconds(30));
        let now = code(&enrolment, w.clock.now());
        let tokens = verify(&w, &first, SecondFactor::Code(now.clone())).unwrap();
        assert!(!tokens.access_token.is_empty());
        // The challenge is spent, and so is the code on a new challenge.
        let again = verify(&w, &first, SecondFactor::Code(now.clone()));
        assert!(matches!(again, Err(IdentityError::InvalidMfaCode)));
        let second = challenge(&w);
        let replay = verify(&w, &second, SecondFactor::Code(now));
        assert!(matches!(replay, Err(IdentityError::InvalidMfaCode)));
        // A challenge expires after five minutes.
        w.clock.advance(Duration::minutes(6));
        let late = verify(
            &w,
            &second,
            SecondFactor::Code(code(&enrolment, w.clock.now())),
        );
        assert!(matches!(late, Err(IdentityError::InvalidMfaCode)));
    }

    #[test]
    fn a_recovery_code_works_once_in_any_case_and_spacing() {
        let w = world();
        let (_, _, codes) = enrolled(&w);
        let typed = format!(" {} ", codes[3].to_uppercase().replace('-', " "));
        verify(
            &w,
            &challenge(&w),
            SecondFactor::RecoveryCode(typed.clone()),
        )
        .unwrap();
        let reused = verify(&w, &challenge(&w), SecondFactor::RecoveryCode(typed));
        assert!(matches!(reused, Err(IdentityError::InvalidMfaCode)));
        let status = block_on(
            w.identity
                .for_caller(
                    &w.caller(
                        &verify(
                            &w,
                            &challenge(&w),
                            SecondFactor::RecoveryCode(codes[4].clone()),
                        )
                        .unwrap(),
                    ),
                )
                .mfa_status(),
        )
        .unwrap();
        assert!(status.enabled);
        assert_eq!(status.recovery_codes_left, 8);
    }

    #[test]
    fn ten_wrong_codes_are_throttled_even_with_the_right_one_next() {
        let w = world();
        let (_, enrolment, _) = enrolled(&w);
        w.clock.advance(Duration::seconds(30));
        let challenge = challenge(&w);
        for _ in 0..10 {
            let wrong = verify(&w, &challenge, SecondFactor::Code("000000".into()));
            assert!(
                matches!(wrong, Err(IdentityError::InvalidMfaCode)),
                "{wrong:?}"
            );
        }
        let limited = verify(
            &w,
            &challenge,
            SecondFactor::Code(code(&enrolment, w.clock.now())),
        );
        assert!(
            matches!(
                limited.map_err(domain),
                Err(DomainError::RateLimited { .. })
            ),
            "after ten wrong codes even the right one waits"
        );
    }

    #[test]
    fn turning_it_off_needs_the_password_and_an_admin_can_reset_it() {
        let w = world();
        let (caller, _, _) = enrolled(&w);
        let wrong = block_on(w.identity.for_caller(&caller).disable_totp("not-it-at-all"));
        assert!(matches!(
            wrong.map_err(domain),
            Err(DomainError::Validation(_))
        ));
        challenge(&w);
        block_on(w.identity.for_caller(&caller).disable_totp(PASSWORD)).unwrap();
        w.login("ada@example.com");

        // Back on, then reset by an administrator.
        let service = w.identity.for_caller(&caller);
        let enrolment = block_on(service.enrol_totp()).unwrap();
        w.clock.advance(Duration::seconds(30));
        block_on(service.confirm_totp(&code(&enrolment, w.clock.now()))).unwrap();
        challenge(&w);
        let member = block_on(
            w.identity
                .for_caller(&caller)
                .reset_mfa(caller.actor.user_id().unwrap()),
        );
        assert!(
            matches!(member.map_err(domain), Err(DomainError::Forbidden { .. })),
            "a member cannot reset (even their own)"
        );
        let (_, admin) = w.admin();
        block_on(
            w.identity
                .for_caller(&admin)
                .reset_mfa(caller.actor.user_id().unwrap()),
        )
        .unwrap();
        w.login("ada@example.com");
        assert_eq!(
            notices(&w),
            ["mfa_enabled", "mfa_disabled", "mfa_enabled", "mfa_reset"],
            "the owner hears of every change"
        );
    }

    #[test]
    fn an_administrator_cannot_reset_their_own_factor() {
        let w = world();
        let (_, admin) = w.admin();
        let service = w.identity.for_caller(&admin);
        let enrolment = block_on(service.enrol_totp()).unwrap();
        block_on(service.confirm_totp(&code(&enrolment, w.clock.now()))).unwrap();
        let own = block_on(service.reset_mfa(admin.actor.user_id().unwrap()));
        assert!(
            matches!(
                own.map_err(domain),
                Err(DomainError::Refused {
                    code: "mfa.reset_own",
                    ..
                })
            ),
            "a stolen admin session must not strip its own factor without the password"
        );
    }

    #[test]
    fn wrong_passwords_to_turn_it_off_share_the_password_change_backoff() {
        let w = world();
        let (caller, _, _) = enrolled(&w);
        let service = w.identity.for_caller(&caller);
        let mut limited = false;
        for _ in 0..20 {
            match block_on(service.disable_totp("not-it-at-all")).map_err(domain) {
                Err(DomainError::Validation(_)) => {}
                Err(DomainError::RateLimited { .. }) => {
                    limited = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(limited, "guessing the password here is throttled");
        let change = block_on(service.change_password("still-guessing", "brand-new-secret-9"));
        assert!(
            matches!(change.map_err(domain), Err(DomainError::RateLimited { .. })),
            "one budget for both endpoints"
        );
    }

    #[test]
    fn a_challenge_won_before_a_password_change_is_dead_after_it() {
        let w = world();
        let (caller, enrolment, _) = enrolled(&w);
        let pending = challenge(&w);
        // A guesser holding the challenge spends the account's budget …
        for _ in 0..10 {
            let _ = verify(&w, &pending, SecondFactor::Code("000000".into()));
        }
        let spent = verify(&w, &pending, SecondFactor::Code("000000".into()));
        assert!(
            matches!(spent.map_err(domain), Err(DomainError::RateLimited { .. })),
            "the budget is spent"
        );
        // The same instant: the challenge ends with the password, whatever the timestamps.
        block_on(
            w.identity
                .for_caller(&caller)
                .change_password(PASSWORD, "brand-new-secret-9"),
        )
        .unwrap();
        w.clock.advance(Duration::seconds(31));
        // … until the password changes: the old challenge is refused uncounted, and the owner
        // signs in at once.
        let stale = verify(
            &w,
            &pending,
            SecondFactor::Code(code(&enrolment, w.clock.now())),
        );
        assert!(
            matches!(stale, Err(IdentityError::InvalidMfaCode)),
            "{stale:?}"
        );
        let fresh = match block_on(
            w.identity
                .for_caller(&anonymous())
                .login("ada@example.com", "brand-new-secret-9"),
        ) {
            Err(IdentityError::MfaRequired(challenge)) => challenge,
            other => panic!("expected a challenge, got {other:?}"),
        };
        verify(
            &w,
            &fresh,
            SecondFactor::Code(code(&enrolment, w.clock.now())),
        )
        .unwrap();
    }

    #[test]
    fn turning_it_on_ends_every_other_session_and_api_key() {
        let w = world();
        w.register("ada@example.com");
        let other = w.login("ada@example.com");
        let own = w.login("ada@example.com");
        let caller = w.caller(&own);
        let service = w.identity.for_caller(&caller);
        let key = block_on(service.create_api_key(NewApiKeyRequest {
            name: "ci".into(),
            ..NewApiKeyRequest::default()
        }))
        .unwrap();
        let enrolment = block_on(service.enrol_totp()).unwrap();
        block_on(service.confirm_totp(&code(&enrolment, w.clock.now()))).unwrap();
        assert!(block_on(w.identity.authenticate_bearer(&other.access_token)).is_err());
        assert!(block_on(w.identity.authenticate_api_key(&key.plaintext)).is_err());
        assert!(
            block_on(w.identity.authenticate_bearer(&own.access_token)).is_ok(),
            "this session goes on"
        );
        assert!(block_on(service.mfa_status()).unwrap().enabled);
    }

    #[test]
    fn enrolment_needs_a_recent_password_and_is_refused_while_on() {
        let w = world();
        let (caller, _, _) = enrolled(&w);
        let again = block_on(w.identity.for_caller(&caller).enrol_totp());
        assert!(matches!(again, Err(IdentityError::MfaAlreadyEnabled)));
        w.clock.advance(Duration::minutes(11));
        let stale = block_on(w.identity.for_caller(&caller).regenerate_recovery_codes());
        assert!(
            matches!(stale, Err(IdentityError::ReauthenticationRequired)),
            "{stale:?}"
        );
    }

    #[test]
    fn a_role_that_requires_mfa_grants_nothing_until_it_is_on() {
        let w = world_with(IdentitySettings {
            mfa_required_roles: vec![ADMIN_ROLE.to_owned()],
            ..IdentitySettings::default()
        });
        let (_, admin) = w.admin();
        assert!(
            !admin.actor.can(&USERS_READ),
            "the admin role counts for nothing without a second factor"
        );
        let service = w.identity.for_caller(&admin);
        let enrolment = block_on(service.enrol_totp()).unwrap();
        block_on(service.confirm_totp(&code(&enrolment, w.clock.now()))).unwrap();
        let tokens = match block_on(
            w.identity
                .for_caller(&anonymous())
                .login("root@example.com", PASSWORD),
        ) {
            Err(IdentityError::MfaRequired(challenge)) => {
                w.clock.advance(Duration::seconds(30));
                verify(
                    &w,
                    &challenge,
                    SecondFactor::Code(code(&enrolment, w.clock.now())),
                )
                .unwrap()
            }
            other => panic!("expected a challenge, got {other:?}"),
        };
        assert!(w.caller(&tokens).actor.can(&USERS_READ));
    }
}

mod external_users {
    use super::*;
    use crate::repository::{RoleRepository, UserRepository};
    use crate::service::{ExternalUser, ExternalUserChange, SyncOutcome};

    fn upsert(subject: &str, email: Option<&str>, name: Option<&str>) -> ExternalUserChange {
        ExternalUserChange::Upsert(ExternalUser {
            subject: subject.into(),
            email: email.map(Into::into),
            name: name.map(Into::into),
            email_verified: true,
        })
    }

    fn sync(w: &World, change: ExternalUserChange, at: i64) -> Result<SyncOutcome, IdentityError> {
        block_on(w.identity.for_system().sync_external_user(
            "idp",
            change,
            start() + Duration::seconds(at),
        ))
    }

    #[test]
    fn events_apply_once_and_in_the_order_they_happened() {
        let w = world();
        let SyncOutcome::Created(id) =
            sync(&w, upsert("u1", Some("a@example.com"), None), 1).unwrap()
        else {
            panic!("expected a new account")
        };
        // The same event again: same result, no second account.
        assert_eq!(
            sync(&w, upsert("u1", Some("a@example.com"), None), 1).unwrap(),
            SyncOutcome::Updated(id)
        );
        assert_eq!(
            sync(&w, upsert("u1", None, Some("Ada")), 3).unwrap(),
            SyncOutcome::Updated(id)
        );
        assert_eq!(
            sync(&w, upsert("u1", None, Some("Older")), 2).unwrap(),
            SyncOutcome::Stale
        );
        let user = block_on(UserRepository::find(w.fakes.store.as_ref(), id))
            .unwrap()
            .unwrap();
        assert_eq!(user.full_name.as_deref(), Some("Ada"));
        assert_eq!(user.password_hash, crate::model::NO_PASSWORD);
        assert!(
            block_on(
                w.identity
                    .for_caller(&anonymous())
                    .login("a@example.com", "!external")
            )
            .is_err()
        );
        assert_eq!(
            sync(
                &w,
                ExternalUserChange::Delete {
                    subject: "u1".into()
                },
                4
            )
            .unwrap(),
            SyncOutcome::Deleted(Some(id))
        );
        assert!(
            block_on(UserRepository::find(w.fakes.store.as_ref(), id))
                .unwrap()
                .unwrap()
                .deleted_at
                .is_some()
        );
        // Re-created later: the same account comes back.
        assert_eq!(
            sync(&w, upsert("u1", Some("a@example.com"), None), 5).unwrap(),
            SyncOutcome::Updated(id)
        );
        assert!(
            block_on(UserRepository::find(w.fakes.store.as_ref(), id))
                .unwrap()
                .unwrap()
                .deleted_at
                .is_none()
        );
    }

    #[test]
    fn an_unlinked_account_is_never_taken_over_and_bad_data_is_named() {
        let w = world();
        w.register("taken@example.com");
        assert!(matches!(
            sync(&w, upsert("u2", Some("Taken@Example.com"), None), 1),
            Err(IdentityError::EmailTaken)
        ));
        let field = |r: Result<SyncOutcome, IdentityError>| match r.map_err(domain) {
            Err(DomainError::Validation(errors)) => errors[0].field.clone(),
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(field(sync(&w, upsert("u3", None, None), 1)), "data.email");
        assert_eq!(
            field(sync(&w, upsert("u4", Some("not an address"), None), 1)),
            "data.email"
        );
        assert_eq!(
            field(sync(
                &w,
                upsert("u5", Some("e@example.com"), Some(&"n".repeat(201))),
                1
            )),
            "data.name"
        );
        assert_eq!(
            field(sync(&w, upsert("", Some("e@example.com"), None), 1)),
            "data.id"
        );
        // Only Keel itself runs the sync.
        let (_, admin) = w.admin();
        assert!(
            block_on(w.identity.for_caller(&admin).sync_external_user(
                "idp",
                upsert("u6", Some("f@example.com"), None),
                start(),
            ))
            .is_err()
        );
    }

    #[test]
    fn unconfirmed_addresses_ties_and_local_deletions() {
        let w = world();
        let unverified = |subject: &str, email: &str| {
            ExternalUserChange::Upsert(ExternalUser {
                subject: subject.into(),
                email: Some(email.into()),
                name: None,
                email_verified: false,
            })
        };
        // No account for an address the provider has not confirmed.
        assert!(matches!(
            sync(&w, unverified("u9", "victim@example.com"), 1).map_err(domain),
            Err(DomainError::Validation(_))
        ));
        let SyncOutcome::Created(id) =
            sync(&w, upsert("u9", Some("v@example.com"), None), 2).unwrap()
        else {
            panic!("expected a new account")
        };
        // An unconfirmed new address is not taken over; the rest of the update applies.
        sync(&w, unverified("u9", "other@example.com"), 3).unwrap();
        let user = block_on(UserRepository::find(w.fakes.store.as_ref(), id))
            .unwrap()
            .unwrap();
        assert_eq!(user.email.as_str(), "v@example.com");
        // Created and deleted in the same second, in either order: deleted.
        assert_eq!(
            sync(
                &w,
                ExternalUserChange::Delete {
                    subject: "u9".into()
                },
                4
            )
            .unwrap(),
            SyncOutcome::Deleted(Some(id))
        );
        assert_eq!(
            sync(&w, upsert("u9", None, Some("x")), 4).unwrap(),
            SyncOutcome::Stale
        );
        // An account deleted here (by an administrator) is not brought back by an update.
        let SyncOutcome::Created(other) =
            sync(&w, upsert("u10", Some("w@example.com"), None), 1).unwrap()
        else {
            panic!("expected a new account")
        };
        block_on(w.identity.for_system().delete_user(other)).unwrap();
        sync(&w, upsert("u10", None, Some("Renamed")), 2).unwrap();
        // Nor by the provider deleting and re-creating the user afterwards.
        sync(
            &w,
            ExternalUserChange::Delete {
                subject: "u10".into(),
            },
            3,
        )
        .unwrap();
        sync(&w, upsert("u10", Some("w@example.com"), None), 4).unwrap();
        let user = block_on(UserRepository::find(w.fakes.store.as_ref(), other))
            .unwrap()
            .unwrap();
        assert!(user.deleted_at.is_some());
    }

    #[test]
    fn the_last_administrator_cannot_be_deleted_by_the_provider() {
        let w = world();
        let SyncOutcome::Created(id) =
            sync(&w, upsert("u7", Some("boss@example.com"), None), 1).unwrap()
        else {
            panic!("expected a new account")
        };
        let admin_role = block_on(w.fakes.store.find_by_name(ADMIN_ROLE))
            .unwrap()
            .unwrap();
        let mut tx = block_on(w.fakes.ports.unit_of_work.begin()).unwrap();
        block_on(
            w.fakes
                .store
                .grant_role(tx.as_mut(), id, admin_role.id, start()),
        )
        .unwrap();
        assert!(matches!(
            sync(
                &w,
                ExternalUserChange::Delete {
                    subject: "u7".into()
                },
                2
            ),
            Err(IdentityError::LastAdmin)
        ));
    }

    #[test]
    fn provider_events_are_read_from_their_types() {
        let data = serde_json::json!({ "id": "u8", "email": "g@example.com", "full_name": "G" });
        assert!(matches!(
            ExternalUserChange::from_event("user.updated", &data),
            Ok(Some(ExternalUserChange::Upsert(ExternalUser {
                name: Some(_),
                ..
            })))
        ));
        assert_eq!(
            ExternalUserChange::from_event("user.deleted", &data),
            Ok(Some(ExternalUserChange::Delete {
                subject: "u8".into()
            }))
        );
        assert_eq!(
            ExternalUserChange::from_event("invoice.paid", &data),
            Ok(None)
        );
        assert!(ExternalUserChange::from_event("user.created", &serde_json::json!([1])).is_err());
    }
}

mod oidc {
    use super::*;
    use crate::repository::UserRepository;
    use crate::security::ProviderClaims;
    use crate::service::{ExternalUser, ProviderSignIn};

    fn claims(subject: &str, email: &str, roles: Option<&[&str]>, signup: bool) -> ProviderClaims {
        ProviderClaims {
            provider: "idp".into(),
            user: ExternalUser {
                subject: subject.into(),
                email: Some(email.into()),
                name: Some("Ada".into()),
                email_verified: true,
            },
            roles: roles.map(|r| r.iter().map(|s| (*s).to_owned()).collect()),
            allow_signup: signup,
        }
    }

    fn bearer(w: &World, token: &str) -> Result<Actor, IdentityError> {
        block_on(w.identity.authenticate_bearer(token))
    }

    fn role_names(w: &World, id: UserId) -> Vec<String> {
        let mut names: Vec<String> = block_on(UserRepository::roles_of(w.fakes.store.as_ref(), id))
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_subject_gets_an_account_only_where_signup_is_allowed() {
        let w = world();
        w.fakes
            .providers
            .vouch("idp.closed", claims("u1", "a@example.com", None, false));
        assert!(matches!(
            bearer(&w, "idp.closed"),
            Err(IdentityError::SignupClosed)
        ));
        w.fakes
            .providers
            .vouch("idp.open", claims("u1", "a@example.com", None, true));
        let Ok(Actor::Federated { id, provider, .. }) = bearer(&w, "idp.open") else {
            panic!("expected a federated actor")
        };
        assert_eq!(provider, "idp");
        assert_eq!(role_names(&w, id), [MEMBER_ROLE]);
        // Once linked, signup no longer matters; the same subject is the same account.
        let Ok(Actor::Federated { id: again, .. }) = bearer(&w, "idp.closed") else {
            panic!("expected a federated actor")
        };
        assert_eq!(again, id);
        // Not the provider's to vouch for: a bad signature, or nobody's token at all.
        assert!(matches!(
            bearer(&w, "idp.forged"),
            Err(IdentityError::InvalidToken)
        ));
        assert!(matches!(
            bearer(&w, "garbage"),
            Err(IdentityError::InvalidToken)
        ));
        // No session: self-service that needs one is refused.
        let caller = Caller::new(bearer(&w, "idp.open").unwrap());
        assert!(matches!(
            block_on(w.identity.for_caller(&caller).logout()),
            Err(IdentityError::SessionRequired)
        ));
    }

    #[test]
    fn an_address_held_by_an_unlinked_account_is_never_taken_over() {
        let w = world();
        let local = w.register("taken@example.com");
        w.fakes
            .providers
            .vouch("idp.t", claims("u9", "taken@example.com", None, true));
        assert!(matches!(
            bearer(&w, "idp.t"),
            Err(IdentityError::ExternalEmailTaken)
        ));
        assert!(
            block_on(UserRepository::find(w.fakes.store.as_ref(), local.id))
                .unwrap()
                .unwrap()
                .deleted_at
                .is_none()
        );
    }

    #[test]
    fn claimed_roles_replace_the_accounts_roles_but_the_last_admin_keeps_admin() {
        let w = world();
        let admin = ["admin", "no-such-role"];
        w.fakes.providers.vouch(
            "idp.a1",
            claims("a", "a@example.com", Some(&admin[..]), true),
        );
        w.fakes.providers.vouch(
            "idp.b1",
            claims("b", "b@example.com", Some(&admin[..]), true),
        );
        w.fakes
            .providers
            .vouch("idp.a0", claims("a", "a@example.com", Some(&[][..]), true));
        w.fakes
            .providers
            .vouch("idp.b0", claims("b", "b@example.com", Some(&[][..]), true));
        let id = |token| bearer(&w, token).unwrap().user_id().unwrap();
        let a = id("idp.a1");
        assert_eq!(role_names(&w, a), [ADMIN_ROLE, MEMBER_ROLE]);
        let b = id("idp.b1");
        // `a` is not the last administrator: the claim takes `admin` away.
        let actor = bearer(&w, "idp.a0").unwrap();
        assert_eq!(role_names(&w, a), [MEMBER_ROLE]);
        assert!(!actor.can(&USERS_READ));
        // `b` is: it keeps `admin` whatever the claim says.
        bearer(&w, "idp.b0").unwrap();
        assert_eq!(role_names(&w, b), [ADMIN_ROLE, MEMBER_ROLE]);
        let synced = w
            .fakes
            .activity
            .entries()
            .into_iter()
            .filter(|(_, e)| e.action == "user.synced")
            .count();
        assert_eq!(synced, 3, "created a, created b, a's roles changed");
    }

    #[test]
    fn accounts_deleted_here_or_at_the_provider_do_not_get_in() {
        let w = world();
        w.fakes
            .providers
            .vouch("idp.u", claims("u", "u@example.com", None, true));
        let user = bearer(&w, "idp.u").unwrap().user_id().unwrap();
        // Deleted at the provider (its webhook): the link is a tombstone.
        block_on(w.identity.for_system().sync_external_user(
            "idp",
            crate::service::ExternalUserChange::Delete {
                subject: "u".into(),
            },
            keel_kernel::Clock::now(w.clock.as_ref()) + Duration::seconds(1),
        ))
        .unwrap();
        block_on(w.fakes.cache.delete("identity:external:v1:idp:u")).unwrap();
        assert!(matches!(
            bearer(&w, "idp.u"),
            Err(IdentityError::InvalidToken)
        ));
        assert!(
            block_on(UserRepository::find(w.fakes.store.as_ref(), user))
                .unwrap()
                .unwrap()
                .deleted_at
                .is_some()
        );
    }

    #[test]
    fn a_browser_sign_in_uses_its_state_once_for_its_provider_and_opens_a_session() {
        let w = world();
        let anonymous = anonymous();
        let service = w.identity.for_caller(&anonymous);
        assert!(matches!(
            block_on(service.start_provider_sign_in("nope", "https://app/cb", "https://app/")),
            Err(IdentityError::NotFound(_))
        ));
        let redirect =
            block_on(service.start_provider_sign_in("idp", "https://app/cb", "https://app/after"))
                .unwrap();
        let started = w.fakes.providers.started.lock().unwrap().clone();
        let (state, nonce, verifier) = &started[0];
        assert_eq!(state, &redirect.state);
        assert_ne!(nonce, state);
        assert_ne!(verifier, state);
        w.fakes
            .providers
            .vouch("code-1", claims("s", "s@example.com", None, true));
        // An unknown state does not finish it, nor does another provider's callback (which
        // spends that state).
        assert!(matches!(
            block_on(service.finish_provider_sign_in("idp", "unknown", "code-1")),
            Err(IdentityError::ProviderStateInvalid)
        ));
        let other =
            block_on(service.start_provider_sign_in("idp", "https://app/cb", "https://app/"))
                .unwrap();
        assert!(matches!(
            block_on(service.finish_provider_sign_in("elsewhere", &other.state, "code-1")),
            Err(IdentityError::ProviderStateInvalid)
        ));
        assert!(matches!(
            block_on(service.finish_provider_sign_in("idp", &other.state, "code-1")),
            Err(IdentityError::ProviderStateInvalid)
        ));
        let (ProviderSignIn::SignedIn(tokens), return_to) =
            block_on(service.finish_provider_sign_in("idp", &redirect.state, "code-1")).unwrap()
        else {
            panic!("expected a session")
        };
        assert_eq!(return_to, "https://app/after");
        assert!(matches!(
            bearer(&w, &tokens.access_token),
            Ok(Actor::User { .. })
        ));
        // Used once.
        assert!(matches!(
            block_on(service.finish_provider_sign_in("idp", &redirect.state, "code-1")),
            Err(IdentityError::ProviderStateInvalid)
        ));
        // A code the provider refuses.
        let again =
            block_on(service.start_provider_sign_in("idp", "https://app/cb", "https://app/"))
                .unwrap();
        assert!(matches!(
            block_on(service.finish_provider_sign_in("idp", &again.state, "bad-code")),
            Err(IdentityError::ProviderSignInFailed)
        ));
    }

    #[test]
    fn a_keel_second_factor_is_asked_at_provider_sign_in_and_never_counts_for_provider_tokens() {
        let w = world_with(IdentitySettings {
            mfa_required_roles: vec![ADMIN_ROLE.to_owned()],
            ..IdentitySettings::default()
        });
        let admin = ["admin"];
        w.fakes.providers.vouch(
            "idp.m",
            claims("m", "m@example.com", Some(&admin[..]), true),
        );
        w.fakes.providers.vouch(
            "code-m",
            claims("m", "m@example.com", Some(&admin[..]), true),
        );
        let anonymous = anonymous();
        let service = w.identity.for_caller(&anonymous);
        let sign_in = |code: &str| {
            let started =
                block_on(service.start_provider_sign_in("idp", "https://app/cb", "https://app/"))
                    .unwrap();
            block_on(service.finish_provider_sign_in("idp", &started.state, code))
        };
        let Ok((ProviderSignIn::SignedIn(tokens), _)) = sign_in("code-m") else {
            panic!("expected a session")
        };
        let caller = w.caller(&tokens);
        let own = w.identity.for_caller(&caller);
        let enrolment = block_on(own.enrol_totp()).unwrap();
        block_on(own.confirm_totp(&super::mfa::code(&enrolment, w.clock.now()))).unwrap();
        // The provider's sign-in stands in for the password, not for the code.
        assert!(matches!(
            sign_in("code-m"),
            Ok((ProviderSignIn::SecondFactor { .. }, _))
        ));
        // A provider token never carries a role that requires Keel's second factor.
        let actor = bearer(&w, "idp.m").unwrap();
        assert!(matches!(actor, Actor::Federated { .. }));
        assert!(!actor.can(&USERS_READ));
    }
}
