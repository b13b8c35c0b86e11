//! Permission strings (`resource:action`), the built-in roles, and resolving a user's roles to
//! the permissions they grant.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_store::records::identity::{IdentityRepo, Role};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Every permission a role or key may hold. `*` grants all of them.
pub const ALL: &[&str] = &[
    "profile:read",
    "profile:write",
    "apikey:read",
    "apikey:write",
    "model:read",
    "model:write",
    "dataset:read",
    "dataset:write",
    "project:read",
    "project:write",
    "task:read",
    "task:write",
    "finetune:read",
    "finetune:create",
    "inference:create",
    "deployment:read",
    "deployment:write",
    "usage:read",
    "users:read",
    "users:write",
    "roles:read",
    "roles:write",
];

/// A permission string in the OpenAPI document: one of the catalogue, or `*`.
pub struct Permission;

impl PartialSchema for Permission {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(std::iter::once("*").chain(ALL.iter().copied())))
            .into()
    }
}

impl ToSchema for Permission {
    fn name() -> Cow<'static, str> {
        "Permission".into()
    }
}

/// A role's name in the OpenAPI document (the same rule as `roles::check_name`).
pub struct RoleName;

impl PartialSchema for RoleName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[a-z0-9_-]{2,32}$"))
            .into()
    }
}

impl ToSchema for RoleName {
    fn name() -> Cow<'static, str> {
        "RoleName".into()
    }
}

/// A tag in the OpenAPI document: 1 to 50 printable characters, not only spaces.
pub struct TagName;

impl PartialSchema for TagName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(50))
            .pattern(Some(
                "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$",
            ))
            .into()
    }
}

impl ToSchema for TagName {
    fn name() -> Cow<'static, str> {
        "TagName".into()
    }
}

pub fn is_known(p: &str) -> bool {
    p == "*" || ALL.contains(&p)
}

/// What `/permissions/roles/init` seeds, and what a role means before it has been seeded.
pub fn builtin(name: &str) -> Option<Vec<String>> {
    let perms: &[&str] = match name {
        "admin" => &["*"],
        // Everything except administering users and roles.
        "user" => {
            return Some(
                ALL.iter()
                    .filter(|p| !p.starts_with("users:") && !p.starts_with("roles:"))
                    .map(|p| p.to_string())
                    .collect(),
            )
        }
        "viewer" => &[
            "profile:read",
            "model:read",
            "deployment:read",
            "dataset:read",
            "project:read",
            "task:read",
            "finetune:read",
            "usage:read",
        ],
        _ => return None,
    };
    Some(perms.iter().map(|p| p.to_string()).collect())
}

pub const BUILTIN_ROLES: &[&str] = &["admin", "user", "viewer"];

/// A set of permissions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grants(pub BTreeSet<String>);

impl Grants {
    pub fn allows(&self, permission: &str) -> bool {
        self.0.contains("*") || self.0.contains(permission)
    }

    /// What both grant: an API key never exceeds its user.
    pub fn within(&self, key: &[String]) -> Grants {
        Grants(key.iter().filter(|p| self.allows(p)).cloned().collect())
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

/// How long a role's permissions are remembered per process: role edits apply within this.
const ROLE_TTL: Duration = Duration::from_secs(5);

/// Resolves role names to permissions, remembering roles briefly.
#[derive(Default)]
pub struct RoleCache {
    roles: Mutex<HashMap<String, Remembered>>,
}

/// When a role was read, and its permissions (`None`: no such role).
type Remembered = (Instant, Option<Vec<String>>);

impl RoleCache {
    pub async fn grants(&self, repo: &IdentityRepo, roles: &[String]) -> Result<Grants, maas_store::StoreError> {
        let mut grants = BTreeSet::new();
        for name in roles {
            grants.extend(self.permissions(repo, name).await?.unwrap_or_default());
        }
        Ok(Grants(grants))
    }

    async fn permissions(
        &self,
        repo: &IdentityRepo,
        name: &str,
    ) -> Result<Option<Vec<String>>, maas_store::StoreError> {
        if let Some((at, perms)) = self.roles.lock().expect("lock").get(name) {
            if at.elapsed() < ROLE_TTL {
                return Ok(perms.clone());
            }
        }
        let perms = repo
            .role(name)
            .await?
            .map(|r: Role| r.permissions)
            .or_else(|| builtin(name));
        self.roles
            .lock()
            .expect("lock")
            .insert(name.to_string(), (Instant::now(), perms.clone()));
        Ok(perms)
    }

    /// Forgets everything, after this process changed a role.
    pub fn clear(&self) {
        self.roles.lock().expect("lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_exceeds_its_user() {
        let user = Grants(builtin("viewer").unwrap().into_iter().collect());
        let key = user.within(&["model:read".into(), "users:write".into()]);
        assert!(key.allows("model:read") && !key.allows("users:write") && !key.allows("dataset:read"));
        let admin = Grants(builtin("admin").unwrap().into_iter().collect());
        assert!(admin.allows("roles:write"));
    }

    #[test]
    fn builtin_roles_only_name_known_permissions() {
        for r in BUILTIN_ROLES {
            assert!(builtin(r).unwrap().iter().all(|p| is_known(p)), "{r}");
        }
    }
}
