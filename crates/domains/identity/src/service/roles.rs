//! Roles and permissions: the catalogue, role definitions, and who holds which role.

use std::collections::BTreeSet;

use keel_kernel::validation::FieldErrors;
use keel_kernel::{
    DomainError, NewActivity, Permission, PermissionDef, PermissionSet, RepoError, Transaction,
    UserId,
};
use serde_json::json;

use super::IdentityService;
use super::accounts::UserWithRoles;
use crate::error::IdentityError;
use crate::model::{
    ADMIN_ROLE, MEMBER_ROLE, PermissionInfo, ROLE_NAME_MAX_CHARS, Role, RoleId, User, UserStatus,
};
use crate::policy::{ROLES_READ, ROLES_WRITE, USERS_WRITE};

fn check_role_name(name: &str, errors: &mut FieldErrors) -> String {
    let name = name.trim().to_owned();
    let valid = !name.is_empty()
        && name.len() <= ROLE_NAME_MAX_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        errors.add(
            "name",
            "format",
            format!(
                "must be 1 to {ROLE_NAME_MAX_CHARS} characters: lowercase letters, digits, _ and -"
            ),
        );
    }
    name
}

impl IdentityService<'_> {
    pub(super) async fn admin_role(&self) -> Result<Role, IdentityError> {
        self.ports()
            .roles
            .find_by_name(ADMIN_ROLE)
            .await?
            .ok_or_else(|| {
                DomainError::internal("the admin role is missing; RBAC was not seeded").into()
            })
    }

    /// Fails with [`IdentityError::LastAdmin`] when `user` is the only active administrator.
    /// Runs after the user row is locked in `tx`, so two administrators demoting each other
    /// concurrently cannot both succeed.
    pub(super) async fn ensure_not_last_admin(
        &self,
        tx: &mut dyn Transaction,
        user: &User,
    ) -> Result<(), IdentityError> {
        let admin = self
            .ports()
            .roles
            .find_by_name_in(tx, ADMIN_ROLE)
            .await?
            .ok_or_else(|| {
                DomainError::internal("the admin role is missing; RBAC was not seeded")
            })?;
        let is_admin = self.ports().users.holds_role(tx, user.id, admin.id).await?;
        if is_admin && user.can_sign_in() && user.status == UserStatus::Active {
            self.ports().roles.lock(tx, admin.id).await?;
            let active_admins = self
                .ports()
                .users
                .count_active_with_role(tx, admin.id)
                .await?;
            if active_admins <= 1 {
                return Err(IdentityError::LastAdmin);
            }
        }
        Ok(())
    }

    /// Grants a role (`users:write`, and every permission the role carries; `admin` only by
    /// an administrator).
    pub async fn grant_role(
        &self,
        user: UserId,
        role: RoleId,
    ) -> Result<UserWithRoles, IdentityError> {
        self.require(&USERS_WRITE)?;
        let role = self
            .ports()
            .roles
            .find(role)
            .await?
            .ok_or(IdentityError::NotFound("role"))?;
        if role.name == ADMIN_ROLE {
            self.require_admin().await?;
        }
        self.require_holds(&role.permissions)?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports()
            .users
            .find_for_update(tx.as_mut(), user)
            .await?
            .filter(|u| u.deleted_at.is_none())
            .ok_or(IdentityError::NotFound("user"))?;
        if self
            .ports()
            .users
            .grant_role(tx.as_mut(), user, role.id, now)
            .await?
        {
            let entry = NewActivity::new("user.role_granted", "user", now)
                .resource(user)
                .subject(user)
                .changes(json!({ "role": role.name }));
            self.identity
                .record(tx.as_mut(), self.caller, entry)
                .await?;
            tx.commit().await?;
            self.identity.forget(Some(user), &[]).await;
        } else {
            drop(tx);
        }
        self.get_user(user).await
    }

    /// Revokes a role (`users:write`, every permission the role carries, and every permission
    /// the account holds; `admin` only by an administrator); the last active administrator
    /// keeps `admin`.
    pub async fn revoke_role(&self, user: UserId, role: RoleId) -> Result<(), IdentityError> {
        self.require(&USERS_WRITE)?;
        let role = self
            .ports()
            .roles
            .find(role)
            .await?
            .ok_or(IdentityError::NotFound("role"))?;
        if role.name == ADMIN_ROLE {
            self.require_admin().await?;
        }
        self.require_holds(&role.permissions)?;
        self.require_outranks(user).await?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let account = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), user)
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        if role.name == ADMIN_ROLE {
            self.ensure_not_last_admin(tx.as_mut(), &account).await?;
        }
        if !self
            .ports()
            .users
            .revoke_role(tx.as_mut(), user, role.id)
            .await?
        {
            return Err(IdentityError::NotFound("role grant"));
        }
        let entry = NewActivity::new("user.role_revoked", "user", now)
            .resource(user)
            .subject(user)
            .changes(json!({ "role": role.name }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.identity.forget(Some(user), &[]).await;
        Ok(())
    }

    /// Every role (`roles:read`).
    pub async fn list_roles(&self) -> Result<Vec<Role>, IdentityError> {
        self.require(&ROLES_READ)?;
        Ok(self.ports().roles.list().await?)
    }

    /// The permission catalogue (`roles:read`).
    pub async fn list_permissions(&self) -> Result<Vec<PermissionInfo>, IdentityError> {
        self.require(&ROLES_READ)?;
        Ok(self.ports().roles.list_permissions().await?)
    }

    /// Checks that every name is a catalogued permission; errors name `permissions[i]`.
    pub(super) async fn catalogued(
        &self,
        names: &[String],
    ) -> Result<PermissionSet, IdentityError> {
        let catalog: BTreeSet<String> = self
            .ports()
            .roles
            .list_permissions()
            .await?
            .into_iter()
            .map(|p| p.name.to_string())
            .collect();
        let mut errors = FieldErrors::new();
        let mut set = PermissionSet::empty();
        for (i, name) in names.iter().enumerate() {
            match Permission::parse(name) {
                Ok(permission) if catalog.contains(permission.as_str()) => set.insert(permission),
                _ => errors.add(
                    format!("permissions[{i}]"),
                    "unknown_permission",
                    format!("`{name}` is not a permission; see GET /api/v1/permissions"),
                ),
            }
        }
        errors.into_result()?;
        Ok(set)
    }

    /// Creates a role (`roles:write`).
    pub async fn create_role(
        &self,
        name: &str,
        description: Option<String>,
        permissions: &[String],
    ) -> Result<Role, IdentityError> {
        self.require(&ROLES_WRITE)?;
        let mut errors = FieldErrors::new();
        let name = check_role_name(name, &mut errors);
        let description = description.unwrap_or_default().trim().to_owned();
        if description.chars().count() > 500 {
            errors.add(
                "description",
                "length",
                "must be at most 500 characters long",
            );
        }
        errors.into_result()?;
        let permissions = self.catalogued(permissions).await?;
        self.require_holds(permissions.iter())?;
        let now = self.ports().clock.now();
        let role = Role {
            id: RoleId::new(),
            name: name.clone(),
            description,
            is_system: false,
            permissions: permissions.iter().cloned().collect(),
            created_at: now,
        };
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports()
            .roles
            .insert(tx.as_mut(), &role)
            .await
            .map_err(|e| match e {
                RepoError::UniqueViolation { .. } => IdentityError::RoleNameTaken(name.clone()),
                other => other.into(),
            })?;
        let entry = NewActivity::new("role.created", "role", now)
            .resource(role.id)
            .changes(json!({ "name": role.name, "permissions": permissions }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        Ok(role)
    }

    /// Replaces a role's permissions (`roles:write`); `admin` always holds every permission.
    /// Holders' cached permissions are dropped, so the change applies to their next request.
    pub async fn set_role_permissions(
        &self,
        id: RoleId,
        permissions: &[String],
    ) -> Result<Role, IdentityError> {
        self.require(&ROLES_WRITE)?;
        let role = self
            .ports()
            .roles
            .find(id)
            .await?
            .ok_or(IdentityError::NotFound("role"))?;
        if role.name == ADMIN_ROLE {
            return Err(IdentityError::SystemRole(role.name));
        }
        if role.name == MEMBER_ROLE {
            // Every account holds `member`: changing it changes everyone.
            self.require_admin().await?;
        }
        let permissions = self.catalogued(permissions).await?;
        // What it carried and what it will carry: both must be the caller's own power.
        self.require_holds(role.permissions.iter().chain(permissions.iter()))?;
        let before: PermissionSet = role.permissions.iter().cloned().collect();
        let added: Vec<String> = permissions
            .iter()
            .filter(|p| !before.contains(p))
            .map(ToString::to_string)
            .collect();
        let removed: Vec<String> = before
            .iter()
            .filter(|p| !permissions.contains(p))
            .map(ToString::to_string)
            .collect();
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports()
            .roles
            .set_permissions(tx.as_mut(), id, &permissions)
            .await?;
        let entry = NewActivity::new("role.permissions_changed", "role", now)
            .resource(id)
            .changes(json!({ "added": added, "removed": removed }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        for holder in self.ports().users.holders_of(id).await? {
            self.identity.forget(Some(holder), &[]).await;
        }
        self.ports()
            .roles
            .find(id)
            .await?
            .ok_or(IdentityError::NotFound("role"))
    }

    /// Keel's own bookkeeping at startup (system caller): stores the permission catalogue,
    /// creates `admin` and `member` when missing, gives `admin` every permission and `member`
    /// the ones marked `for_members` (adding, never removing). Idempotent.
    pub async fn sync_rbac(&self, catalog: &[PermissionDef]) -> Result<(), IdentityError> {
        self.require_system()?;
        let now = self.ports().clock.now();
        let infos: Vec<PermissionInfo> = catalog
            .iter()
            .map(|def| PermissionInfo {
                name: def.permission.clone(),
                description: def.description.to_owned(),
            })
            .collect();
        let everything: PermissionSet = catalog.iter().map(|d| d.permission.clone()).collect();
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports()
            .roles
            .upsert_permissions(tx.as_mut(), &infos)
            .await?;
        for (name, description) in [
            (ADMIN_ROLE, "Every permission Keel defines"),
            (MEMBER_ROLE, "Every signed-up account"),
        ] {
            let existing = self
                .ports()
                .roles
                .find_by_name_in(tx.as_mut(), name)
                .await?;
            let role = match existing {
                Some(role) => role,
                None => {
                    let role = Role {
                        id: RoleId::new(),
                        name: name.to_owned(),
                        description: description.to_owned(),
                        is_system: true,
                        permissions: Vec::new(),
                        created_at: now,
                    };
                    self.ports().roles.insert(tx.as_mut(), &role).await?;
                    role
                }
            };
            let mut wanted: PermissionSet = if name == ADMIN_ROLE {
                everything.clone()
            } else {
                role.permissions.iter().cloned().collect()
            };
            if name == MEMBER_ROLE {
                // Added when missing, never removed: administrators may narrow `member`.
                for def in catalog.iter().filter(|d| d.for_members) {
                    wanted.insert(def.permission.clone());
                }
            }
            let current: PermissionSet = role.permissions.iter().cloned().collect();
            if wanted != current {
                self.ports()
                    .roles
                    .set_permissions(tx.as_mut(), role.id, &wanted)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
