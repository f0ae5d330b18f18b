//! sea-orm entities of the identity tables, one module per table.

/// `users`
pub mod users {
    use sea_orm::entity::prelude::*;

    /// One account.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Lowercased email.
        pub email: String,
        /// Display name.
        pub full_name: Option<String>,
        /// PHC hash.
        pub password_hash: String,
        /// Status name.
        pub status: String,
        /// Verification time.
        pub email_verified_at: Option<DateTimeUtc>,
        /// Last password change.
        pub password_changed_at: DateTimeUtc,
        /// Creation.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
        /// Soft deletion.
        pub deleted_at: Option<DateTimeUtc>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `one_time_tokens`
pub mod one_time_tokens {
    use sea_orm::entity::prelude::*;

    /// One reset or verification token digest.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "one_time_tokens")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Owner.
        pub user_id: Uuid,
        /// Purpose name.
        pub purpose: String,
        /// HMAC digest.
        pub digest: String,
        /// Expiry.
        pub expires_at: DateTimeUtc,
        /// Use.
        pub used_at: Option<DateTimeUtc>,
        /// Issue.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `roles`
pub mod roles {
    use sea_orm::entity::prelude::*;

    /// One role.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "roles")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Unique name.
        pub name: String,
        /// Purpose.
        pub description: String,
        /// Managed by Keel.
        pub is_system: bool,
        /// Creation.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `permissions`
pub mod permissions {
    use sea_orm::entity::prelude::*;

    /// One catalogued permission.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "permissions")]
    pub struct Model {
        /// `resource:action`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// What it allows.
        pub description: String,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `role_permissions`
pub mod role_permissions {
    use sea_orm::entity::prelude::*;

    /// One grant of a permission to a role.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "role_permissions")]
    pub struct Model {
        /// Role.
        #[sea_orm(primary_key, auto_increment = false)]
        pub role_id: Uuid,
        /// Permission name.
        #[sea_orm(primary_key, auto_increment = false)]
        pub permission: String,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `user_roles`
pub mod user_roles {
    use sea_orm::entity::prelude::*;

    /// One grant of a role to a user.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_roles")]
    pub struct Model {
        /// User.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        /// Role.
        #[sea_orm(primary_key, auto_increment = false)]
        pub role_id: Uuid,
        /// Grant time.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `sessions`
pub mod sessions {
    use sea_orm::entity::prelude::*;

    /// One session.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        /// Id (`sid`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Owner.
        pub user_id: Uuid,
        /// User agent at sign-in.
        pub user_agent: Option<String>,
        /// Address at sign-in.
        pub ip: Option<String>,
        /// Sign-in.
        pub created_at: DateTimeUtc,
        /// Last password proof (null: at sign-in, for sessions older than the column).
        pub authenticated_at: Option<DateTimeUtc>,
        /// Last refresh.
        pub last_used_at: DateTimeUtc,
        /// Sliding expiry.
        pub idle_expires_at: DateTimeUtc,
        /// Absolute expiry.
        pub expires_at: DateTimeUtc,
        /// Revocation.
        pub revoked_at: Option<DateTimeUtc>,
        /// Why revoked.
        pub revoked_reason: Option<String>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `refresh_tokens`
pub mod refresh_tokens {
    use sea_orm::entity::prelude::*;

    /// One refresh token digest.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Session.
        pub session_id: Uuid,
        /// HMAC digest.
        pub digest: String,
        /// Issue.
        pub created_at: DateTimeUtc,
        /// Exchange.
        pub rotated_at: Option<DateTimeUtc>,
        /// The token issued in exchange.
        pub replaced_by: Option<Uuid>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `api_keys`
pub mod api_keys {
    use sea_orm::entity::prelude::*;

    /// One API key.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Owner.
        pub user_id: Uuid,
        /// Label.
        pub name: String,
        /// Public lookup part.
        pub prefix: String,
        /// HMAC digest of the secret part.
        pub digest: String,
        /// Pepper of the digest.
        pub pepper_id: String,
        /// JSON array of permission names.
        #[sea_orm(column_type = "JsonBinary")]
        pub scopes: Json,
        /// Expiry.
        pub expires_at: Option<DateTimeUtc>,
        /// Last use.
        pub last_used_at: Option<DateTimeUtc>,
        /// Creation.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `mfa_totp`
pub mod mfa_totp {
    use sea_orm::entity::prelude::*;

    /// An account's TOTP authenticator (the secret is derived, never stored).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mfa_totp")]
    pub struct Model {
        /// Owner (one authenticator per account).
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        /// Pepper the secret is derived under.
        pub pepper_id: String,
        /// Random per enrolment.
        pub seed: String,
        /// When the first code was accepted.
        pub confirmed_at: Option<DateTimeUtc>,
        /// Time step of the last accepted code.
        pub last_step: i64,
        /// Enrolment.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `mfa_recovery_codes`
pub mod mfa_recovery_codes {
    use sea_orm::entity::prelude::*;

    /// One single-use recovery code.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mfa_recovery_codes")]
    pub struct Model {
        /// Id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Owner.
        pub user_id: Uuid,
        /// HMAC digest of the code.
        pub digest: String,
        /// Pepper of the digest.
        pub pepper_id: String,
        /// When it was used.
        pub used_at: Option<DateTimeUtc>,
        /// Issue time.
        pub created_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
