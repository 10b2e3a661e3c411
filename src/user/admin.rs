//! Instance administration: what the admin user (the first user created) may do.

use super::record::{UserRecord, USERS_STORE};
use super::User;
use crate::error::{Error, Result};

/// A user as an admin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The username.
    pub username: String,
    /// False once disabled.
    pub active: bool,
    /// Whether the user is the instance admin.
    pub admin: bool,
}

impl User {
    fn require_admin(&self) -> Result<()> {
        self.session.read()?;
        let me = self.instance.user_record(&self.username)?;
        if !(me.admin && me.active && me.id == self.id) {
            return Err(Error::PermissionDenied(format!(
                "user '{}' is not the instance admin",
                self.username
            )));
        }
        Ok(())
    }

    fn other_user(&self, username: &str) -> Result<UserRecord> {
        if username == self.username {
            return Err(Error::invalid(
                "an admin cannot disable or delete their own account",
            ));
        }
        self.instance.user_record(username).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!("no user '{username}'")),
            other => other,
        })
    }

    /// Every user with status and role, sorted by name (admin only).
    pub fn admin_list_users(&self) -> Result<Vec<UserInfo>> {
        self.require_admin()?;
        Ok(self
            .instance
            .user_records()?
            .into_iter()
            .map(|(username, r)| UserInfo {
                username,
                active: r.active,
                admin: r.admin,
            })
            .collect())
    }

    /// Disables (`false`) or re-enables (`true`) another user's account (admin only). A
    /// disabled user cannot log in; sessions already open go on until they log out.
    pub fn admin_set_active(&self, username: &str, active: bool) -> Result<()> {
        self.require_admin()?;
        let mut record = self.other_user(username)?;
        record.active = active;
        self.instance
            .system
            .users
            .set(USERS_STORE, username, &record.to_json())
            .map(drop)
    }

    /// Deletes another user's account (admin only): the name can be reused; the user's
    /// databases stay.
    pub fn admin_delete_user(&self, username: &str) -> Result<()> {
        self.require_admin()?;
        self.other_user(username)?;
        self.instance.system.users.delete(USERS_STORE, username)?;
        self.instance.release_username(username)
    }
}
