//! Sharing by ticket through a `mnemo_sync`: tickets, access requests, approval, joining.

use std::ffi::c_char;

use super::guard::guard;
use super::handle::{out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use super::sync::mnemo_sync;
use super::user::mnemo_user;
use crate::database::Permission;
use crate::entry::EntryId;

/// Makes a share ticket for database `db_id`, which this instance holds: a text
/// ("mnemo:…") naming the database, where this engine listens, and this device's id,
/// signed by the device. Hand it to whoever should ask for access; it grants nothing by
/// itself, and a ticket altered in any way is refused. The addresses are those given to
/// `mnemo_sync_advertise`, else those the engine's listeners are bound to (except
/// wildcard ones such as 0.0.0.0).
///
/// - `out_ticket`: receives the ticket; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed id, no address to name: not listening, or only on a wildcard address with
/// nothing advertised), MNEMO_STATUS_NOT_FOUND (the database is not here),
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_share(
    sync: *mut mnemo_sync,
    db_id: *const c_char,
    out_ticket: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_ticket, "out_ticket")?;
        let sync = mnemo_sync::borrow(sync)?;
        let db = EntryId::parse(strings::arg(db_id, "db_id")?)?;
        *out = strings::to_c(sync.engine().share(&db)?)?;
        Ok(())
    })
}

/// Adds `addr` ("host:port": a public name or a forwarded port, as peers reach this
/// device) to the addresses tickets name, in place of the listeners' own. At most 8.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
/// "host:port" address with a port from 1 to 65535, more than 8 addresses). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_advertise(
    sync: *mut mnemo_sync,
    addr: *const c_char,
) -> mnemo_status {
    guard(|| {
        mnemo_sync::borrow(sync)?
            .engine()
            .advertise(strings::arg(addr, "addr")?)
    })
}

/// Asks the device a ticket names for `permission` on its database, as `user`: the request
/// is signed by the user's default key, which the admins there see (with this device's id)
/// and, if they approve, grant. Connects only to the device the ticket names, trying its
/// addresses in turn. Asking again while the request waits changes nothing (or its
/// permission); after a rejection, asking again is refused.
///
/// - `ticket`: from `mnemo_sync_share` on the other device.
/// - `permission`: "read", "write" or "admin".
/// - `out_request_id`: receives the request's id ("req-" and 16 hex digits, made from the
///   database's id and the key: the same on both devices); owned, free it with
///   `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK (also when the key holds the permission already),
/// MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a malformed or altered ticket,
/// a malformed permission), MNEMO_STATUS_PERMISSION_DENIED (an admin rejected this key's
/// request; the device no longer holds the database), MNEMO_STATUS_BUSY (too many requests
/// wait there, or this key's request there was made or last changed less than a minute ago,
/// or changed its permission 3 times already: it then waits as it is until answered or expired),
/// MNEMO_STATUS_NETWORK (no address of the ticket answered as its device, or the device
/// answered with an id other than the request's), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_request_access(
    sync: *mut mnemo_sync,
    user: *mut mnemo_user,
    ticket: *const c_char,
    permission: *const c_char,
    out_request_id: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_request_id, "out_request_id")?;
        let sync = mnemo_sync::borrow(sync)?;
        let user = sync.session(user)?;
        let ticket = strings::arg(ticket, "ticket")?;
        let permission = Permission::parse(strings::arg(permission, "permission")?)?;
        let id = sync
            .engine()
            .request_access(user.inner(), ticket, permission)?;
        *out = strings::to_c(id)?;
        Ok(())
    })
}

/// Lists the access requests waiting on this instance for databases where one of
/// `admin_user`'s keys is admin, as a JSON array of objects
/// `{"id", "db", "key", "permission", "device", "requested_at"}` (`requested_at` in
/// milliseconds since the Unix epoch). Requests are kept 7 days, at most 64 per database
/// and 1024 in all (the sync limits "max_access_requests_per_database" and
/// "max_access_requests"), and survive restarts. A request whose key already holds the
/// permission asked (granted otherwise, or by an approval a crash stopped before it
/// removed the request) is no longer waiting: it is not listed, and `mnemo_sync_approve`
/// and `mnemo_sync_reject` answer MNEMO_STATUS_NOT_FOUND (revoke to keep such a key out).
///
/// - `out_json`: receives the array; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_list_requests(
    sync: *mut mnemo_sync,
    admin_user: *mut mnemo_user,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let sync = mnemo_sync::borrow(sync)?;
        let admin = sync.session(admin_user)?;
        let requests = sync.engine().access_requests(admin.inner())?;
        let list: Vec<serde_json::Value> = requests
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "db": r.db.to_text(),
                    "key": r.key.to_text(),
                    "permission": r.permission.as_str(),
                    "device": r.device.to_text(),
                    "requested_at": r.requested_at,
                })
            })
            .collect();
        *out = strings::json_to_c(&serde_json::Value::Array(list))?;
        Ok(())
    })
}

/// Approves access request `request_id`: grants its key the permission asked, signed by
/// `admin_user`'s admin key (a junior admin, for "admin"). The asker can then
/// `mnemo_sync_join`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
/// request id: "req-" and 16 lower-case hex digits),
/// MNEMO_STATUS_NOT_FOUND (no such pending request on a database this user administers),
/// MNEMO_STATUS_PERMISSION_DENIED (this user's admin key may not grant that key, see
/// `mnemo_db_grant`), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_approve(
    sync: *mut mnemo_sync,
    admin_user: *mut mnemo_user,
    request_id: *const c_char,
) -> mnemo_status {
    guard(|| {
        let (sync, admin, id) = decision_args(sync, admin_user, request_id)?;
        sync.engine().approve(admin.inner(), id)
    })
}

/// Rejects access request `request_id`: the asker's key gets MNEMO_STATUS_PERMISSION_DENIED
/// when it joins or asks again, until the rejection expires (7 days).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
/// request id: "req-" and 16 lower-case hex digits),
/// MNEMO_STATUS_NOT_FOUND (no such pending request on a database this user administers),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_reject(
    sync: *mut mnemo_sync,
    admin_user: *mut mnemo_user,
    request_id: *const c_char,
) -> mnemo_status {
    guard(|| {
        let (sync, admin, id) = decision_args(sync, admin_user, request_id)?;
        sync.engine().reject(admin.inner(), id)
    })
}

/// The arguments `mnemo_sync_approve` and `mnemo_sync_reject` share, checked.
unsafe fn decision_args<'a>(
    sync: *mut mnemo_sync,
    admin_user: *mut mnemo_user,
    request_id: *const c_char,
) -> crate::Result<(&'a mnemo_sync, &'a mnemo_user, &'a str)> {
    let sync = mnemo_sync::borrow(sync)?;
    Ok((
        sync,
        sync.session(admin_user)?,
        strings::arg(request_id, "request_id")?,
    ))
}

/// Sets the auto-approve policy of database `db_id`: access requests for at most
/// `permission` are granted as they arrive, signed by `admin_user`'s admin key, while a
/// session of that user is logged in here with sync enabled; requests arriving otherwise
/// wait, and are granted when that user next logs in with sync enabled. Requests already
/// waiting that the policy covers are granted now. The policy is kept across restarts. A key
/// the database revoked is never granted by a policy: its request waits for an admin. A key
/// that still holds a grant may ask for more, a demoted one too: the policy grants it up to
/// its level (to keep a key below a level, revoke it or lower the policy).
///
/// - `permission`: "read", "write" or "admin"; NULL means no policy (it removes one).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL sync, user or id, bad
/// UTF-8, a malformed id or permission), MNEMO_STATUS_PERMISSION_DENIED (no key of this
/// user is admin of the database, or it is not here), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_auto_approve(
    sync: *mut mnemo_sync,
    admin_user: *mut mnemo_user,
    db_id: *const c_char,
    permission: *const c_char,
) -> mnemo_status {
    guard(|| {
        let sync = mnemo_sync::borrow(sync)?;
        let admin = sync.session(admin_user)?;
        let db = EntryId::parse(strings::arg(db_id, "db_id")?)?;
        let permission = strings::optional_arg(permission, "permission")?
            .map(Permission::parse)
            .transpose()?;
        sync.engine().auto_approve(admin.inner(), &db, permission)
    })
}

/// Pulls the database a ticket names from the device it names, as `user`, once an admin
/// there approved the user's access request; afterwards `mnemo_user_load_db` (or
/// `mnemo_user_find_db`) opens it, and `mnemo_sync_track` keeps it in sync.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed or altered ticket), MNEMO_STATUS_PERMISSION_DENIED (not approved yet, or
/// rejected), and the other statuses of `mnemo_sync_db`. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_join(
    sync: *mut mnemo_sync,
    user: *mut mnemo_user,
    ticket: *const c_char,
) -> mnemo_status {
    guard(|| {
        let sync = mnemo_sync::borrow(sync)?;
        let user = sync.session(user)?;
        sync.engine()
            .join(user.inner(), strings::arg(ticket, "ticket")?)
    })
}
