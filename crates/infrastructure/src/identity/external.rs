//! Links to accounts at external identity providers (`external_identities`).

use async_trait::async_trait;
use keel_identity::model::{ExternalIdentity, ExternalIdentityId};
use keel_identity::repository::ExternalIdentityRepository;
use keel_kernel::{RepoError, Transaction, UserId};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};

use super::SeaIdentityStore;
use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

/// The sea-orm entity for `external_identities`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One row of `external_identities`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "external_identities")]
    pub struct Model {
        /// Primary key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// The provider's configured name.
        pub provider: String,
        /// The provider's id of the user.
        pub subject: String,
        /// The linked account.
        pub user_id: Option<Uuid>,
        /// The last reported email.
        pub email: Option<String>,
        /// Deleted at the provider.
        pub deleted: bool,
        /// When the last applied event happened.
        pub synced_at: DateTimeUtc,
        /// Creation time.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity, Model};

fn from_model(model: Model) -> ExternalIdentity {
    ExternalIdentity {
        id: ExternalIdentityId::from_uuid(model.id),
        provider: model.provider,
        subject: model.subject,
        user_id: model.user_id.map(UserId::from_uuid),
        email: model.email,
        deleted: model.deleted,
        synced_at: model.synced_at,
        created_at: model.created_at,
        updated_at: model.updated_at,
    }
}

fn to_model(link: &ExternalIdentity) -> Model {
    Model {
        id: link.id.as_uuid(),
        provider: link.provider.clone(),
        subject: link.subject.clone(),
        user_id: link.user_id.map(|id| id.as_uuid()),
        email: link.email.clone(),
        deleted: link.deleted,
        synced_at: link.synced_at,
        created_at: link.created_at,
        updated_at: link.updated_at,
    }
}

#[async_trait]
impl ExternalIdentityRepository for SeaIdentityStore {
    async fn find(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>, RepoError> {
        Ok(Entity::find()
            .filter(Column::Provider.eq(provider))
            .filter(Column::Subject.eq(subject))
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(from_model))
    }

    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>, RepoError> {
        let txn = sea_txn(tx)?;
        Ok(Entity::find()
            .filter(Column::Provider.eq(provider))
            .filter(Column::Subject.eq(subject))
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(repo_err)?
            .map(from_model))
    }

    async fn insert(
        &self,
        tx: &mut dyn Transaction,
        link: &ExternalIdentity,
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        Entity::insert(to_model(link).into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn update(
        &self,
        tx: &mut dyn Transaction,
        link: &ExternalIdentity,
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        to_model(link)
            .into_active_model()
            .reset_all()
            .update(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}
