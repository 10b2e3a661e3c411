//! Instance administration: what the admin user (the first user created) may do.

use super::records::{AccountStatus, UserRecord};
use super::{check_username, User};
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
        let me = self.own_record()?;
        if !(me.admin && me.is_active()) {
            return Err(Error::PermissionDenied(format!(
                "user '{}' is not the instance admin",
                self.username
            )));
        }
        Ok(())
    }

    fn user(&self, username: &str) -> Result<UserRecord> {
        check_username(username)?;
        self.accounts
            .record(username)?
            .ok_or_else(|| no_user(username))
    }

    /// Every user with status and role, sorted by name (admin only).
    pub fn admin_list_users(&self) -> Result<Vec<UserInfo>> {
        self.require_admin()?;
        Ok(self
            .accounts
            .records()?
            .into_iter()
            .map(|(username, r)| UserInfo {
                username,
                active: r.is_active(),
                admin: r.admin,
            })
            .collect())
    }

    fn not_self(&self, username: &str) -> Result<()> {
        if username == self.username {
            return Err(Error::invalid(
                "an admin cannot disable or delete their own account",
            ));
        }
        Ok(())
    }

    /// Disables (`false`) or re-enables (`true`) a user's account (admin only; the admin's
    /// own account cannot be disabled). A disabled user cannot log in; sessions already open
    /// go on until they log out.
    pub fn admin_set_active(&self, username: &str, active: bool) -> Result<()> {
        self.require_admin()?;
        let mut record = self.user(username)?;
        if !active {
            self.not_self(username)?;
        }
        record.status = if active {
            AccountStatus::Active
        } else {
            AccountStatus::Disabled
        };
        self.accounts.put_record(username, &record)
    }

    /// Deletes another user's account (admin only): the name can be reused; the account's
    /// sealed keys and private records (its key and database lists) are erased, while the
    /// databases it created or kept stay. Sessions of the deleted user can no longer change
    /// its account. [`Error::Busy`] if one changed it during the deletion: delete it again.
    pub fn admin_delete_user(&self, username: &str) -> Result<()> {
        self.require_admin()?;
        check_username(username)?;
        let record = self
            .accounts
            .record_to_delete(username)?
            .ok_or_else(|| no_user(username))?;
        self.not_self(username)?;
        self.accounts.remove(username, &record.id, &record.db)
    }
}

fn no_user(username: &str) -> Error {
    Error::NotFound(format!("no user '{username}'"))
}
