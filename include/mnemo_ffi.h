/*
 * mnemo_ffi.h: the declarations of mnemo.h for FFIs that read C declarations themselves
 * (Python cffi's cdef, LuaJIT's ffi.cdef, ...). C and C++ programs include mnemo.h.
 *
 * Generated from src/ffi/ by build.rs with cbindgen, with mnemo.h. Do not edit.
 *
 * Load it verbatim: it has declarations and comments only (no preprocessor lines, no
 * macros, no extern "C") and uses the types size_t, int32_t and uint32_t.
 * It differs from mnemo.h in these points only:
 * - The MNEMO_STATUS_* macros are the anonymous enum below, with the same values;
 *   mnemo_status stays int32_t, as functions return it.
 * - MNEMO_VERSION_MAJOR, _MINOR, _PATCH, _NUMBER and MNEMO_ABI_VERSION are enum constants
 *   of the version this file comes with; MNEMO_VERSION_STRING is left out (call
 *   mnemo_version()); so is MNEMO_MUST_USE (check every status all the same).
 * - Opaque handles are named by their typedefs (mnemo_user *, not struct mnemo_user *).
 * - No doc comments: each function's manual is its comment in mnemo.h.
 * The conventions of mnemo.h hold: strings are NUL-terminated UTF-8 whatever the locale;
 * strings out are freed with mnemo_string_free(); mnemo_last_error_message() is per thread.
 */


enum {
  MNEMO_STATUS_OK = 0,
  MNEMO_STATUS_INVALID_ARGUMENT = 1,
  MNEMO_STATUS_NOT_FOUND = 2,
  MNEMO_STATUS_ALREADY_EXISTS = 3,
  MNEMO_STATUS_AUTH_FAILED = 4,
  MNEMO_STATUS_PERMISSION_DENIED = 5,
  MNEMO_STATUS_LOGGED_OUT = 6,
  MNEMO_STATUS_SYNC_DISABLED = 7,
  MNEMO_STATUS_NETWORK = 8,
  MNEMO_STATUS_STORAGE = 9,
  MNEMO_STATUS_CORRUPT = 10,
  MNEMO_STATUS_INTERNAL = 11,
  MNEMO_STATUS_BUSY = 12,
  MNEMO_STATUS_BUFFER_TOO_SMALL = 13,
};

enum {
  MNEMO_VERSION_MAJOR = 0,
  MNEMO_VERSION_MINOR = 1,
  MNEMO_VERSION_PATCH = 0,
  MNEMO_VERSION_NUMBER = 1000,
  MNEMO_ABI_VERSION = 0,
};


typedef struct mnemo_backend mnemo_backend;

typedef struct mnemo_cursor mnemo_cursor;

typedef struct mnemo_database mnemo_database;

typedef struct mnemo_events mnemo_events;

typedef struct mnemo_instance mnemo_instance;

typedef struct mnemo_subscription mnemo_subscription;

typedef struct mnemo_sync mnemo_sync;

typedef struct mnemo_txn mnemo_txn;

typedef struct mnemo_user mnemo_user;

typedef int32_t mnemo_status;

typedef void (*mnemo_change_cb)(void *user_data, const char *db_id, const char *entry_id, int32_t remote);

typedef void (*mnemo_destroy_cb)(void *user_data);

mnemo_status mnemo_backend_open(const char *url, mnemo_backend **out);

void mnemo_backend_free(mnemo_backend *backend);

mnemo_status mnemo_db_id(const mnemo_database *db, char **out_id);

mnemo_status mnemo_db_set(mnemo_database *db, const char *store, const char *key, const char *json);

mnemo_status mnemo_db_insert(mnemo_database *db, const char *store, const char *json, char **out_key);

mnemo_status mnemo_db_get(const mnemo_database *db, const char *store, const char *key, char **out_json);

mnemo_status mnemo_db_get_into(const mnemo_database *db, const char *store, const char *key, char *buf, size_t cap, size_t *out_len);

mnemo_status mnemo_db_delete(mnemo_database *db, const char *store, const char *key);

mnemo_status mnemo_db_get_all(const mnemo_database *db, const char *store, char **out_json);

mnemo_status mnemo_db_scan(const mnemo_database *db, const char *store, const char *prefix, const char *after, size_t limit, char **out_json);

mnemo_status mnemo_db_cursor(const mnemo_database *db, const char *store, const char *prefix, const char *after, mnemo_cursor **out);

mnemo_status mnemo_db_grant(mnemo_database *db, const char *pubkey, const char *permission);

mnemo_status mnemo_db_revoke(mnemo_database *db, const char *pubkey);

mnemo_status mnemo_db_verify(const mnemo_database *db);

mnemo_status mnemo_db_tips(const mnemo_database *db, char **out_json);

mnemo_status mnemo_db_begin(mnemo_database *db, mnemo_txn **out);

mnemo_status mnemo_db_subscribe(mnemo_database *db, mnemo_change_cb cb, void *user_data, mnemo_destroy_cb destroy, mnemo_subscription **out);

void mnemo_db_free(mnemo_database *db);

mnemo_status mnemo_db_set_path(mnemo_database *db, const char *store, const char *key, const char *pointer, const char *json);

mnemo_status mnemo_db_get_path(const mnemo_database *db, const char *store, const char *key, const char *pointer, char **out_json);

mnemo_status mnemo_db_history(const mnemo_database *db, const char *store, const char *key, size_t limit, char **out_json);

mnemo_status mnemo_cursor_next(mnemo_cursor *cursor, char **out_key, char **out_value);

void mnemo_cursor_free(mnemo_cursor *cursor);

mnemo_status mnemo_db_watch(mnemo_database *db, mnemo_events **out);

mnemo_status mnemo_events_next(mnemo_events *events, uint32_t timeout_ms, char **out_json);

mnemo_status mnemo_events_fd(const mnemo_events *events, int *out_fd);

void mnemo_events_free(mnemo_events *events);

mnemo_status mnemo_instance_open(mnemo_backend *backend, mnemo_instance **out);

mnemo_status mnemo_instance_open_with_argon2(mnemo_backend *backend, uint32_t m_kib, uint32_t t, uint32_t p, mnemo_instance **out);

void mnemo_instance_free(mnemo_instance *instance);

mnemo_status mnemo_instance_device_id(const mnemo_instance *instance, char **out_pubkey);

mnemo_status mnemo_instance_limits(const mnemo_instance *instance, char **out_json);

mnemo_status mnemo_instance_set_limits(mnemo_instance *instance, const char *limits_json);

mnemo_status mnemo_instance_stats(const mnemo_instance *instance, char **out_json);

mnemo_status mnemo_instance_create_user(mnemo_instance *instance, const char *username, const char *password);

mnemo_status mnemo_instance_login(mnemo_instance *instance, const char *username, const char *password, mnemo_user **out);

mnemo_status mnemo_instance_list_users(const mnemo_instance *instance, char **out_json);

mnemo_status mnemo_instance_enable_sync(mnemo_instance *instance);

mnemo_status mnemo_instance_sync(mnemo_instance *instance, mnemo_sync **out);

const char *mnemo_version(void);

uint32_t mnemo_version_number(void);

const char *mnemo_last_error_message(void);

const char *mnemo_status_str(mnemo_status status);

void mnemo_string_free(char *s);

void mnemo_subscription_free(mnemo_subscription *subscription);

void mnemo_subscription_cancel(mnemo_subscription *subscription);

mnemo_status mnemo_db_flush_notifications(mnemo_database *db, uint32_t timeout_ms);

mnemo_status mnemo_sync_listen(mnemo_sync *sync, const char *addr, char **out_bound_addr);

mnemo_status mnemo_sync_unlisten(mnemo_sync *sync, const char *bound_addr);

mnemo_status mnemo_sync_connect(mnemo_sync *sync, const char *peer_addr, char **out_peer_device_id);

mnemo_status mnemo_sync_db(mnemo_sync *sync, mnemo_user *user, const char *peer_addr, const char *db_id);

mnemo_status mnemo_sync_track(mnemo_sync *sync, mnemo_user *user, const char *peer_addr, const char *db_id);

mnemo_status mnemo_sync_untrack(mnemo_sync *sync, mnemo_user *user, const char *peer_addr, const char *db_id);

mnemo_status mnemo_sync_tracks(mnemo_sync *sync, mnemo_user *user, char **out_json);

mnemo_status mnemo_sync_flush(mnemo_sync *sync, uint32_t timeout_ms);

mnemo_status mnemo_sync_limits(const mnemo_sync *sync, char **out_json);

mnemo_status mnemo_sync_stats(const mnemo_sync *sync, char **out_json);

mnemo_status mnemo_sync_set_limits(mnemo_sync *sync, const char *limits_json);

void mnemo_sync_free(mnemo_sync *sync);

mnemo_status mnemo_sync_share(mnemo_sync *sync, const char *db_id, char **out_ticket);

mnemo_status mnemo_sync_advertise(mnemo_sync *sync, const char *addr);

mnemo_status mnemo_sync_request_access(mnemo_sync *sync, mnemo_user *user, const char *ticket, const char *permission, char **out_request_id);

mnemo_status mnemo_sync_list_requests(mnemo_sync *sync, mnemo_user *admin_user, char **out_json);

mnemo_status mnemo_sync_approve(mnemo_sync *sync, mnemo_user *admin_user, const char *request_id);

mnemo_status mnemo_sync_reject(mnemo_sync *sync, mnemo_user *admin_user, const char *request_id);

mnemo_status mnemo_sync_auto_approve(mnemo_sync *sync, mnemo_user *admin_user, const char *db_id, const char *permission);

mnemo_status mnemo_sync_join(mnemo_sync *sync, mnemo_user *user, const char *ticket);

mnemo_status mnemo_txn_set(mnemo_txn *txn, const char *store, const char *key, const char *json);

mnemo_status mnemo_txn_set_path(mnemo_txn *txn, const char *store, const char *key, const char *pointer, const char *json);

mnemo_status mnemo_txn_delete(mnemo_txn *txn, const char *store, const char *key);

mnemo_status mnemo_txn_commit(mnemo_txn *txn, char **out_entry_id);

void mnemo_txn_abort(mnemo_txn *txn);

mnemo_status mnemo_user_create_db(mnemo_user *user, const char *name, mnemo_database **out);

mnemo_status mnemo_user_load_db(mnemo_user *user, const char *db_id, mnemo_database **out);

mnemo_status mnemo_user_find_db(mnemo_user *user, const char *name, mnemo_database **out);

mnemo_status mnemo_user_list_dbs(mnemo_user *user, char **out_json);

mnemo_status mnemo_user_forget_db(mnemo_user *user, const char *db_id);

mnemo_status mnemo_user_add_private_key(mnemo_user *user, const char *display_name, char **out_pubkey);

mnemo_status mnemo_user_list_keys(mnemo_user *user, char **out_json);

mnemo_status mnemo_user_remove_key(mnemo_user *user, const char *pubkey);

mnemo_status mnemo_user_set_default_key(mnemo_user *user, const char *pubkey);

mnemo_status mnemo_user_get_signing_key(mnemo_user *user, const char *db_id, char **out_pubkey);

mnemo_status mnemo_user_change_password(mnemo_user *user, const char *old_pw, const char *new_pw);

mnemo_status mnemo_user_admin_list_users(mnemo_user *user, char **out_json);

mnemo_status mnemo_user_admin_disable(mnemo_user *user, const char *username);

mnemo_status mnemo_user_admin_enable(mnemo_user *user, const char *username);

mnemo_status mnemo_user_admin_delete(mnemo_user *user, const char *username);

mnemo_status mnemo_user_logout(mnemo_user *user);
