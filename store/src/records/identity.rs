//! Users, their sessions (refresh-token families), API keys, roles, and usage counters.
//!
//! | record          | pk                         | sk                  | gsi1pk        | gsi1sk                |
//! |-----------------|----------------------------|---------------------|---------------|-----------------------|
//! | user            | `USERID#{user_id}`         | `PROFILE`           | `USERS`       | `{created:012}#{id}`  |
//! | unique claim    | `UNIQUE#{kind}#{value}`    | `UNIQUE`            |               |                       |
//! | session         | `USERID#{user_id}`         | `SESSION#{sid}`     |               |                       |
//! | API key         | `SECRET#{key_id}`          | `SECRET`            | `KEYS#{user}` | `{key_id}`            |
//! | role            | `ROLE#{name}`              | `ROLE`              | `ROLES`       | `{name}`              |
//! | counter         | `COUNT#{scope}`            | `{window}`          |               |                       |
//!
//! A user's username and email are claimed by unique-claim items written in the same
//! transaction as the user, with `NotExists`, so two concurrent sign-ups can never both win.
//! API keys are [`Secret`]s with an owner: the SGT API and `/api/v1` share one credential kind.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::sgt::Secret;
use super::{from_item, to_item, Record};
use crate::error::{StoreError, StoreResult};
use crate::item::{as_i64, Key};
use crate::keys::part;
use crate::table::{Cond, Query, Table, Write};
use crate::Stores;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct User {
    pub user_id: String,
    pub username: String,
    pub email: String,
    /// argon2id PHC string; `None` for accounts that only sign in through an OAuth provider.
    pub password_hash: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub organization: String,
    #[serde(default)]
    pub avatar_url: String,
    pub roles: Vec<String>,
    /// `provider:subject` of the linked OAuth identity, if any.
    #[serde(default)]
    pub oauth: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Record for User {
    fn key(&self) -> Key {
        User::key_for(&self.user_id)
    }
    fn gsi1(&self) -> Option<Key> {
        Some(Key::new("USERS", format!("{:012}#{}", self.created_at, self.user_id)))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

impl User {
    pub fn key_for(user_id: &str) -> Key {
        Key::new(format!("USERID#{}", part(user_id)), "PROFILE")
    }
}

/// Which unique value a claim item holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unique {
    Username,
    Email,
    OAuth,
}

impl Unique {
    /// Usernames and emails compare case-insensitively.
    pub fn key(self, value: &str) -> Key {
        let kind = match self {
            Unique::Username => "USERNAME",
            Unique::Email => "EMAIL",
            Unique::OAuth => "OAUTH",
        };
        Key::new(format!("UNIQUE#{kind}#{}", part(&value.to_lowercase())), "UNIQUE")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Claim {
    #[serde(skip)]
    key: Option<Key>,
    user_id: String,
    #[serde(default)]
    ver: u64,
}

impl Record for Claim {
    fn key(&self) -> Key {
        self.key.clone().expect("claims are built with their key")
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// A login session: one refresh-token family. Only the SHA-256 of the current refresh secret
/// is stored; presenting an older one revokes the family (the session is deleted).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub session_id: String,
    pub user_id: String,
    pub refresh_hash: String,
    pub created_at: i64,
    /// Epoch seconds; also the item's `ttl`.
    pub expires_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Record for Session {
    fn key(&self) -> Key {
        Session::key_for(&self.user_id, &self.session_id)
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

impl Session {
    pub fn key_for(user_id: &str, session_id: &str) -> Key {
        Key::new(
            format!("USERID#{}", part(user_id)),
            format!("SESSION#{}", part(session_id)),
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Record for Role {
    fn key(&self) -> Key {
        Role::key_for(&self.name)
    }
    fn gsi1(&self) -> Option<Key> {
        Some(Key::new("ROLES", part(&self.name)))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

impl Role {
    pub fn key_for(name: &str) -> Key {
        Key::new(format!("ROLE#{}", part(name)), "ROLE")
    }
}

/// Why creating a user failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("username is taken")]
    UsernameTaken,
    #[error("email is taken")]
    EmailTaken,
    #[error("identity is already linked")]
    OAuthTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Identity records and their access patterns.
#[derive(Clone)]
pub struct IdentityRepo {
    pub table: Arc<dyn Table>,
}

fn put(r: &impl Record, cond: Cond) -> StoreResult<Write> {
    Ok(Write::Put {
        item: to_item(r)?,
        cond,
    })
}

impl IdentityRepo {
    pub fn new(stores: &Stores) -> Self {
        IdentityRepo {
            table: stores.table.clone(),
        }
    }

    async fn get<R: Record>(&self, key: &Key) -> StoreResult<Option<R>> {
        self.table.get(key).await?.map(from_item).transpose()
    }

    async fn list<R: Record>(&self, query: Query) -> StoreResult<Vec<R>> {
        self.table.query(&query).await?.into_iter().map(from_item).collect()
    }

    pub async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        self.get(&User::key_for(user_id)).await
    }

    /// The user holding a unique username, email or OAuth identity.
    pub async fn user_by(&self, kind: Unique, value: &str) -> StoreResult<Option<User>> {
        let Some(item) = self.table.get(&kind.key(value)).await? else {
            return Ok(None);
        };
        let claim: Claim = from_item(item)?;
        self.user(&claim.user_id).await
    }

    fn claims(user: &User) -> Vec<(Unique, String)> {
        let mut claims = vec![
            (Unique::Username, user.username.clone()),
            (Unique::Email, user.email.clone()),
        ];
        claims.extend(user.oauth.clone().map(|o| (Unique::OAuth, o)));
        claims
    }

    fn claim_write(user: &User, kind: Unique, value: &str) -> StoreResult<Write> {
        let claim = Claim {
            key: Some(kind.key(value)),
            user_id: user.user_id.clone(),
            ver: 0,
        };
        put(&claim, Cond::NotExists)
    }

    /// Creates the user and claims its username, email (and OAuth identity) in one transaction.
    pub async fn create_user(&self, user: &User) -> Result<(), CreateUserError> {
        let mut writes = vec![put(user, Cond::NotExists)?];
        for (kind, value) in Self::claims(user) {
            writes.push(Self::claim_write(user, kind, &value)?);
        }
        match self.table.write(writes).await {
            Err(StoreError::ConditionFailed) => Err(self.which_claim_is_taken(user).await),
            other => Ok(other?),
        }
    }

    async fn which_claim_is_taken(&self, user: &User) -> CreateUserError {
        for (kind, value) in Self::claims(user) {
            match self.table.get(&kind.key(&value)).await {
                Ok(Some(_)) => {
                    return match kind {
                        Unique::Username => CreateUserError::UsernameTaken,
                        Unique::Email => CreateUserError::EmailTaken,
                        Unique::OAuth => CreateUserError::OAuthTaken,
                    }
                }
                Ok(None) => {}
                Err(e) => return e.into(),
            }
        }
        CreateUserError::Store(StoreError::ConditionFailed)
    }

    /// Writes a changed user (same username and email) if nobody changed it since `user.ver`.
    pub async fn update_user(&self, user: &User) -> StoreResult<User> {
        let mut next = user.clone();
        next.ver += 1;
        next.updated_at = crate::now_secs();
        self.table.put(to_item(&next)?, Cond::Version(user.ver)).await?;
        Ok(next)
    }

    /// Deletes the user, its claims, sessions and API keys.
    pub async fn delete_user(&self, user: &User) -> StoreResult<()> {
        let mut writes = vec![Write::Delete {
            key: user.key(),
            cond: Cond::Version(user.ver),
        }];
        for (kind, value) in Self::claims(user) {
            writes.push(Write::Delete {
                key: kind.key(&value),
                cond: Cond::Always,
            });
        }
        self.table.write(writes).await?;
        self.revoke_all_sessions(&user.user_id).await?;
        for key in self.api_keys(&user.user_id).await? {
            self.table.delete(key.key(), Cond::Always).await?;
        }
        Ok(())
    }

    /// Users, oldest first.
    pub async fn users(&self) -> StoreResult<Vec<User>> {
        self.list(Query::gsi1("USERS", "")).await
    }

    pub async fn session(&self, user_id: &str, session_id: &str) -> StoreResult<Option<Session>> {
        self.get(&Session::key_for(user_id, session_id)).await
    }

    pub async fn put_session(&self, session: &Session, cond: Cond) -> StoreResult<()> {
        let mut item = to_item(session)?;
        item.0.insert(crate::item::attr::TTL.into(), session.expires_at.into());
        self.table.put(item, cond).await
    }

    pub async fn revoke_session(&self, user_id: &str, session_id: &str) -> StoreResult<()> {
        self.table
            .delete(Session::key_for(user_id, session_id), Cond::Always)
            .await
    }

    pub async fn revoke_all_sessions(&self, user_id: &str) -> StoreResult<()> {
        let sessions: Vec<Session> = self
            .list(Query::primary(format!("USERID#{}", part(user_id)), "SESSION#"))
            .await?;
        for s in sessions {
            self.table.delete(s.key(), Cond::Always).await?;
        }
        Ok(())
    }

    /// A user's API keys (their hashes included; callers must not return them).
    pub async fn api_keys(&self, user_id: &str) -> StoreResult<Vec<Secret>> {
        self.list(Query::gsi1(format!("KEYS#{}", part(user_id)), "")).await
    }

    pub async fn api_key(&self, key_id: &str) -> StoreResult<Option<Secret>> {
        self.get(&Secret::key_for(key_id)).await
    }

    pub async fn create_api_key(&self, key: &Secret) -> StoreResult<()> {
        self.table.put(to_item(key)?, Cond::NotExists).await
    }

    pub async fn delete_api_key(&self, key: &Secret) -> StoreResult<()> {
        self.table.delete(key.key(), Cond::Always).await
    }

    pub async fn role(&self, name: &str) -> StoreResult<Option<Role>> {
        self.get(&Role::key_for(name)).await
    }

    pub async fn roles(&self) -> StoreResult<Vec<Role>> {
        self.list(Query::gsi1("ROLES", "")).await
    }

    /// Creates (`Cond::NotExists`) or replaces (`Cond::Version`) a role.
    pub async fn put_role(&self, role: &Role, cond: Cond) -> StoreResult<()> {
        self.table.put(to_item(role)?, cond).await
    }

    pub async fn delete_role(&self, name: &str) -> StoreResult<()> {
        self.table.delete(Role::key_for(name), Cond::Exists).await
    }

    /// Adds to a counter (`COUNT#{scope}`, window `window`) that disappears after `ttl`.
    pub async fn count(&self, scope: &str, window: &str, by: i64, ttl: Option<i64>) -> StoreResult<i64> {
        self.table
            .add(&Key::new(format!("COUNT#{scope}"), window.to_string()), "n", by, ttl)
            .await
    }

    /// One counter's value; 0 when it does not exist.
    pub async fn counter(&self, scope: &str, window: &str) -> StoreResult<i64> {
        let item = self
            .table
            .get(&Key::new(format!("COUNT#{scope}"), window.to_string()))
            .await?;
        Ok(item.and_then(|i| i.0.get("n").and_then(as_i64)).unwrap_or(0))
    }

    /// Counter values of one scope whose window starts with `prefix`, as (window, value).
    pub async fn counters(&self, scope: &str, prefix: &str) -> StoreResult<Vec<(String, i64)>> {
        let items = self
            .table
            .query(&Query::primary(format!("COUNT#{scope}"), prefix))
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|i| {
                let window = i.0.get("sk")?.as_str()?.to_string();
                let n = as_i64(i.0.get("n")?)?;
                Some((window, n))
            })
            .collect())
    }
}
