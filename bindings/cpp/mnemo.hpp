// mnemo.hpp: header-only C++17 RAII wrappers over the mnemo C API (include/mnemo.h).
//
// - Each class owns one handle and frees it in its destructor. Classes are move-only; a
//   moved-from object holds no handle, and calling it throws mnemo::error
//   (MNEMO_STATUS_INVALID_ARGUMENT), never crashes; ending it (a subscription's close() or
//   cancel()) does nothing.
// - Every failed call throws mnemo::error, carrying the status (error::status()) and the
//   library's message (what()).
// - Strings go in as std::string and come out as std::string; lists and records stay JSON
//   text, as in the C API. C takes a string up to its first NUL byte, so a std::string
//   argument that holds one would arrive cut short: the call throws mnemo::error
//   (MNEMO_STATUS_INVALID_ARGUMENT, "password contains a NUL byte") and calls nothing.
// - Timeouts are std::chrono::milliseconds; a negative one counts as 0, one longer than
//   UINT32_MAX ms (about 49.7 days) as UINT32_MAX ms.
// - Thread safety is the C API's: instance, user, database and sync objects may be used
//   from several threads at once; a transaction or a cursor from one thread at a time.
//
// Link with -lmnemo (pkg-config mnemo, or CMake's mnemo::mnemo). scripts/install puts this
// file beside mnemo.h, in PREFIX/include.
#ifndef MNEMO_HPP
#define MNEMO_HPP

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "mnemo.h"

namespace mnemo {

/// A failed mnemo call: the status and the library's message.
class error : public std::runtime_error {
public:
    error(mnemo_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    /// The MNEMO_STATUS_* code.
    mnemo_status status() const noexcept { return status_; }
    /// The status's name, e.g. "MNEMO_STATUS_NOT_FOUND".
    const char *status_name() const noexcept { return mnemo_status_str(status_); }

private:
    mnemo_status status_;
};

/// The loaded library's version, e.g. "0.1.0".
inline std::string version() { return mnemo_version(); }
/// The loaded library's version as MAJOR*1000000 + MINOR*1000 + PATCH.
inline std::uint32_t version_number() { return mnemo_version_number(); }

namespace detail {

/// The mnemo::error of a failed call: `what`, the status's name and the thread's message.
/// Make it before this thread makes another mnemo call, which replaces the message.
inline error failure(mnemo_status status, const char *what) {
    const char *detail = mnemo_last_error_message();
    std::string message = std::string(what) + ": " + mnemo_status_str(status);
    if (detail) message += std::string(" (") + detail + ")";
    return error(status, message);
}

/// Throws mnemo::error unless `status` is MNEMO_STATUS_OK.
inline void check(mnemo_status status, const char *what) {
    if (status != MNEMO_STATUS_OK) throw failure(status, what);
}

struct string_free {
    void operator()(char *s) const noexcept { mnemo_string_free(s); }
};

/// Takes ownership of a string mnemo returned and copies it into a std::string.
inline std::string take(char *s) {
    std::unique_ptr<char, string_free> owned(s);
    return s ? std::string(s) : std::string();
}

/// A string argument as C takes it. Throws mnemo::error (MNEMO_STATUS_INVALID_ARGUMENT)
/// naming the argument if `s` holds a NUL byte: C would read it only up to there.
inline const char *arg(const std::string &s, const char *name) {
    if (s.find('\0') != std::string::npos) {
        throw error(MNEMO_STATUS_INVALID_ARGUMENT, std::string(name) + " contains a NUL byte");
    }
    return s.c_str();
}

/// An optional string argument as C takes it: NULL when absent, else as arg() above.
inline const char *arg(const std::optional<std::string> &s, const char *name) {
    return s ? arg(*s, name) : nullptr;
}

/// A timeout as the C API's uint32_t milliseconds: 0 for a negative one, UINT32_MAX for
/// one longer (a plain cast would wrap: -1 ms would wait 49.7 days, 2^32 ms not at all).
inline std::uint32_t timeout_ms(std::chrono::milliseconds timeout) {
    constexpr auto most = std::numeric_limits<std::uint32_t>::max();
    if (timeout.count() <= 0) return 0;
    if (timeout.count() >= static_cast<std::chrono::milliseconds::rep>(most)) return most;
    return static_cast<std::uint32_t>(timeout.count());
}

template <class T, void (*Free)(T *)>
struct handle_free {
    void operator()(T *p) const noexcept { Free(p); }
};

template <class T, void (*Free)(T *)>
using owned = std::unique_ptr<T, handle_free<T, Free>>;

/// Ends a user session; the destructor cannot throw, so the status is dropped.
inline void logout_quietly(mnemo_user *u) noexcept {
    mnemo_status ignored = mnemo_user_logout(u);
    static_cast<void>(ignored);
}

}  // namespace detail

class database;
class user;
class sync;

/// A storage backend, before an instance takes it ("memory:", "sqlite:PATH",
/// "postgres://…").
class backend {
public:
    static backend open(const std::string &url) {
        mnemo_backend *b = nullptr;
        detail::check(mnemo_backend_open(detail::arg(url, "url"), &b), "mnemo_backend_open");
        return backend(b);
    }
    mnemo_backend *native_handle() const noexcept { return h_.get(); }
    /// Gives up ownership (mnemo_instance_open consumes the backend).
    mnemo_backend *release() noexcept { return h_.release(); }

private:
    explicit backend(mnemo_backend *b) : h_(b) {}
    detail::owned<mnemo_backend, mnemo_backend_free> h_;
};

/// A change notification: the database id, the entry id, and whether the change came from
/// elsewhere (sync, or another process writing the same storage) rather than a local commit.
using change_callback =
    std::function<void(const std::string &db_id, const std::string &entry_id, bool remote)>;

namespace detail {

/// What a subscription shares with mnemo's notification thread: the callback, and whether
/// mnemo has let go of it (its destroy callback ran: the callback will not run again).
struct subscription_state {
    change_callback callback;
    std::mutex mutex;
    std::condition_variable released_changed;
    bool released = false;
};

/// True on a thread once it has run a subscription callback, which only mnemo's
/// notification threads do. Ending a subscription there must not wait for its callbacks:
/// they run on that very thread, after the one running now.
inline bool &on_notification_thread() noexcept {
    thread_local bool flag = false;
    return flag;
}

/// mnemo's `cb`: `data` is a heap std::shared_ptr<subscription_state>, mnemo's own reference.
inline void call_subscriber(void *data, const char *db_id, const char *entry_id,
                            std::int32_t remote) {
    on_notification_thread() = true;
    subscription_state &state = **static_cast<std::shared_ptr<subscription_state> *>(data);
    try {
        state.callback(db_id, entry_id, remote != 0);
    } catch (...) {
    }
}

/// mnemo's `destroy`, after the last call of `cb`: destroys the callback (with its
/// captures), then wakes the subscription waiting for this, if any.
inline void release_subscriber(void *data) noexcept {
    auto *held = static_cast<std::shared_ptr<subscription_state> *>(data);
    std::shared_ptr<subscription_state> state = std::move(*held);
    delete held;
    state->callback = nullptr;
    {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->released = true;
    }
    state->released_changed.notify_all();
}

}  // namespace detail

/// A live subscription; it ends when destroyed, by close() or cancel(), or when another is
/// assigned to it. Changes committed after the end are not delivered; those committed before
/// it and still queued are (unless it ends by cancel(), which drops them), on the library
/// thread, and ending waits for them: once it returns, the callback is not running, will not
/// run again and has been destroyed, so it may capture locals by reference. On mnemo's
/// notification thread (in a callback, its own included, or in the destructor of something
/// a callback captured) ending does not wait, since the calls it would wait for run on that
/// thread, after the current one returns. Do not end a subscription while holding a lock its
/// callback takes: each would wait for the other. An ended or moved-from subscription is
/// empty: ending it again does nothing.
class subscription {
public:
    subscription(subscription &&other) noexcept
        : h_(std::exchange(other.h_, nullptr)), state_(std::move(other.state_)) {}
    subscription &operator=(subscription &&other) noexcept {
        if (this != &other) {
            close();
            h_ = std::exchange(other.h_, nullptr);
            state_ = std::move(other.state_);
        }
        return *this;
    }
    ~subscription() { close(); }

    /// Ends the subscription now, waiting for the callbacks still queued (see the class).
    void close() noexcept { end(mnemo_subscription_free); }
    /// Ends the subscription now and drops the changes still queued for it
    /// (mnemo_subscription_cancel): the callback is not called again, but a call already
    /// under way finishes, and is waited for (see the class). For shutting down, when the
    /// backlog no longer matters.
    void cancel() noexcept { end(mnemo_subscription_cancel); }
    mnemo_subscription *native_handle() const noexcept { return h_; }

private:
    friend class database;
    subscription(mnemo_subscription *s, std::shared_ptr<detail::subscription_state> state) noexcept
        : h_(s), state_(std::move(state)) {}
    /// Frees the handle with `how`, then waits for mnemo's destroy callback (see the class).
    void end(void (*how)(mnemo_subscription *)) noexcept {
        if (!h_) return;
        how(std::exchange(h_, nullptr));
        std::shared_ptr<detail::subscription_state> state = std::move(state_);
        if (detail::on_notification_thread()) return;
        std::unique_lock<std::mutex> lock(state->mutex);
        state->released_changed.wait(lock, [&] { return state->released; });
    }
    mnemo_subscription *h_ = nullptr;
    std::shared_ptr<detail::subscription_state> state_;
};

/// A database's changes, queued for reading without a callback (database::watch): at most
/// 1024 changes; beyond, `{"overflow":n}` reports how many were dropped. Safe to read from
/// several threads at once.
class events {
public:
    /// The oldest pending event as JSON, waiting up to `timeout` (0: not at all); std::nullopt
    /// when none came in time. A change is `{"db":…,"entry":…,"origin":"local","remote":false}`
    /// (origin "local", "sync" or "other_process"; remote false only for "local"), and
    /// `{"overflow":n}` counts changes dropped because the queue was full.
    std::optional<std::string> next(
        std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
        char *out = nullptr;
        detail::check(mnemo_events_next(h_.get(), detail::timeout_ms(timeout), &out),
                      "mnemo_events_next");
        if (!out) return std::nullopt;
        return detail::take(out);
    }
    /// A descriptor readable exactly while events are pending (for poll/epoll); do not read
    /// from or close it. Valid as long as this object.
    int fd() const {
        int fd = -1;
        detail::check(mnemo_events_fd(h_.get(), &fd), "mnemo_events_fd");
        return fd;
    }
    mnemo_events *native_handle() const noexcept { return h_.get(); }

private:
    friend class database;
    explicit events(mnemo_events *e) : h_(e) {}
    detail::owned<mnemo_events, mnemo_events_free> h_;
};

/// Operations that commit together as one signed entry. Aborted if destroyed uncommitted.
/// Use from one thread at a time.
class transaction {
public:
    void set(const std::string &store, const std::string &key, const std::string &json) {
        detail::check(mnemo_txn_set(h_.get(), detail::arg(store, "store"), detail::arg(key, "key"),
                                    detail::arg(json, "json")),
                      "mnemo_txn_set");
    }
    /// Adds "set the part of `key`'s value at `pointer` (RFC 6901) to `json`"; it builds on
    /// earlier operations on the key in this transaction (see database::set_path).
    void set_path(const std::string &store, const std::string &key, const std::string &pointer,
                  const std::string &json) {
        detail::check(mnemo_txn_set_path(h_.get(), detail::arg(store, "store"),
                                         detail::arg(key, "key"), detail::arg(pointer, "pointer"),
                                         detail::arg(json, "json")),
                      "mnemo_txn_set_path");
    }
    void remove(const std::string &store, const std::string &key) {
        detail::check(mnemo_txn_delete(h_.get(), detail::arg(store, "store"),
                                       detail::arg(key, "key")),
                      "mnemo_txn_delete");
    }
    /// Commits everything, or nothing; returns the new entry's id. The transaction is over
    /// afterwards, whether it succeeded or not.
    std::string commit() {
        char *id = nullptr;
        detail::check(mnemo_txn_commit(h_.release(), &id), "mnemo_txn_commit");
        return detail::take(id);
    }
    /// Discards the operations (also what the destructor does).
    void abort() noexcept { h_.reset(); }
    mnemo_txn *native_handle() const noexcept { return h_.get(); }

private:
    friend class database;
    explicit transaction(mnemo_txn *t) : h_(t) {}
    detail::owned<mnemo_txn, mnemo_txn_abort> h_;
};

/// The keys of a store in bytewise order, read a page at a time (database::cursor). It holds
/// its own reference to the database. Use from one thread at a time.
class cursor {
public:
    /// The next key and its value's JSON text, or std::nullopt after the last key.
    std::optional<std::pair<std::string, std::string>> next() {
        char *key = nullptr;
        char *value = nullptr;
        detail::check(mnemo_cursor_next(h_.get(), &key, &value), "mnemo_cursor_next");
        // Both owned before either is copied: a copy that throws (std::bad_alloc) frees both.
        std::unique_ptr<char, detail::string_free> owned_key(key), owned_value(value);
        if (!key) return std::nullopt;
        return std::make_pair(std::string(key), std::string(value ? value : ""));
    }
    mnemo_cursor *native_handle() const noexcept { return h_.get(); }

private:
    friend class database;
    explicit cursor(mnemo_cursor *c) : h_(c) {}
    detail::owned<mnemo_cursor, mnemo_cursor_free> h_;
};

/// A database: stores of JSON values, merged across devices.
class database {
public:
    std::string id() const {
        char *out = nullptr;
        detail::check(mnemo_db_id(h_.get(), &out), "mnemo_db_id");
        return detail::take(out);
    }
    void set(const std::string &store, const std::string &key, const std::string &json) {
        detail::check(mnemo_db_set(h_.get(), detail::arg(store, "store"), detail::arg(key, "key"),
                                   detail::arg(json, "json")),
                      "mnemo_db_set");
    }
    /// The value's canonical JSON text; throws mnemo::error (MNEMO_STATUS_NOT_FOUND) if unset.
    std::string get(const std::string &store, const std::string &key) const {
        std::string out;
        detail::check(read(store, key, out), "mnemo_db_get_into");
        return out;
    }
    /// The value's JSON text, or std::nullopt if the key has no value. Throws mnemo::error
    /// (MNEMO_STATUS_NOT_FOUND) once the database was forgotten on this instance
    /// (user::forget_db), as get() does.
    std::optional<std::string> find(const std::string &store, const std::string &key) const {
        std::string out;
        mnemo_status s = read(store, key, out);
        if (s == MNEMO_STATUS_NOT_FOUND) {
            // A forgotten database gives the same status. Opening a cursor reads no key and
            // fails with MNEMO_STATUS_NOT_FOUND only then (see mnemo_database in mnemo.h).
            error missing = detail::failure(s, "mnemo_db_get_into");
            mnemo_cursor *probe = nullptr;
            mnemo_status still =
                mnemo_db_cursor(h_.get(), detail::arg(store, "store"), "", nullptr, &probe);
            mnemo_cursor_free(probe);
            if (still == MNEMO_STATUS_NOT_FOUND) throw missing;
            return std::nullopt;
        }
        detail::check(s, "mnemo_db_get_into");
        return out;
    }
    /// Sets the part of `key`'s value at `pointer` (RFC 6901, e.g. "/address/city"; "" is
    /// the whole value) to `json`, as one commit; missing objects on the way are created.
    void set_path(const std::string &store, const std::string &key, const std::string &pointer,
                  const std::string &json) {
        detail::check(mnemo_db_set_path(h_.get(), detail::arg(store, "store"),
                                        detail::arg(key, "key"), detail::arg(pointer, "pointer"),
                                        detail::arg(json, "json")),
                      "mnemo_db_set_path");
    }
    /// The part of `key`'s value at `pointer` as JSON text; throws mnemo::error
    /// (MNEMO_STATUS_NOT_FOUND) if the key has no value or nothing is at `pointer`.
    std::string get_path(const std::string &store, const std::string &key,
                         const std::string &pointer) const {
        char *out = nullptr;
        detail::check(mnemo_db_get_path(h_.get(), detail::arg(store, "store"),
                                        detail::arg(key, "key"), detail::arg(pointer, "pointer"),
                                        &out),
                      "mnemo_db_get_path");
        return detail::take(out);
    }
    /// Every change of `key`, newest first, at most `limit` (0: all), as a JSON array:
    /// [{"entry":…,"key":…,"height":n,"value":…}, …] ("deleted":true or "patch":{…} in
    /// place of "value"); [] for a key never written.
    std::string history(const std::string &store, const std::string &key,
                        std::size_t limit = 0) const {
        char *out = nullptr;
        detail::check(mnemo_db_history(h_.get(), detail::arg(store, "store"),
                                       detail::arg(key, "key"), limit, &out),
                      "mnemo_db_history");
        return detail::take(out);
    }
    void remove(const std::string &store, const std::string &key) {
        detail::check(mnemo_db_delete(h_.get(), detail::arg(store, "store"),
                                      detail::arg(key, "key")),
                      "mnemo_db_delete");
    }
    /// Every key of `store` with its value, as a JSON object.
    std::string get_all(const std::string &store) const {
        char *out = nullptr;
        detail::check(mnemo_db_get_all(h_.get(), detail::arg(store, "store"), &out),
                      "mnemo_db_get_all");
        return detail::take(out);
    }
    /// A page of the live keys of `store` in bytewise order, as a JSON array of [key, value]
    /// pairs: those starting with `prefix`, after `after`, at most `limit` (0: no limit).
    std::string scan(const std::string &store, const std::string &prefix = "",
                     const std::optional<std::string> &after = std::nullopt,
                     std::size_t limit = 0) const {
        char *out = nullptr;
        detail::check(mnemo_db_scan(h_.get(), detail::arg(store, "store"),
                                    detail::arg(prefix, "prefix"), detail::arg(after, "after"),
                                    limit, &out),
                      "mnemo_db_scan");
        return detail::take(out);
    }
    /// A cursor over the live keys of `store` starting with `prefix`, after `after`.
    mnemo::cursor cursor(const std::string &store, const std::string &prefix = "",
                         const std::optional<std::string> &after = std::nullopt) const {
        mnemo_cursor *c = nullptr;
        detail::check(mnemo_db_cursor(h_.get(), detail::arg(store, "store"),
                                      detail::arg(prefix, "prefix"), detail::arg(after, "after"),
                                      &c),
                      "mnemo_db_cursor");
        return mnemo::cursor(c);
    }
    /// Stores `json` under a new generated key (unique, increasing for this process) and
    /// returns the key.
    std::string insert(const std::string &store, const std::string &json) {
        char *out = nullptr;
        detail::check(mnemo_db_insert(h_.get(), detail::arg(store, "store"),
                                      detail::arg(json, "json"), &out),
                      "mnemo_db_insert");
        return detail::take(out);
    }
    /// Gives `pubkey` "admin", "write" or "read" permission (needs admin).
    void grant(const std::string &pubkey, const std::string &permission) {
        detail::check(mnemo_db_grant(h_.get(), detail::arg(pubkey, "pubkey"),
                                     detail::arg(permission, "permission")),
                      "mnemo_db_grant");
    }
    void revoke(const std::string &pubkey) {
        detail::check(mnemo_db_revoke(h_.get(), detail::arg(pubkey, "pubkey")), "mnemo_db_revoke");
    }
    /// The current tips, as a JSON array of entry ids.
    std::string tips() const {
        char *out = nullptr;
        detail::check(mnemo_db_tips(h_.get(), &out), "mnemo_db_tips");
        return detail::take(out);
    }
    /// Checks everything stored of the database against its signed entries; throws
    /// mnemo::error (MNEMO_STATUS_CORRUPT, the message says what differs) on damage.
    void verify() const { detail::check(mnemo_db_verify(h_.get()), "mnemo_db_verify"); }
    transaction begin() {
        mnemo_txn *t = nullptr;
        detail::check(mnemo_db_begin(h_.get(), &t), "mnemo_db_begin");
        return transaction(t);
    }
    /// Calls `callback` after every change, on a library thread, until the subscription ends
    /// (see mnemo::subscription). An exception escaping the callback is swallowed (it must
    /// not unwind through mnemo's thread). An empty `callback` throws mnemo::error
    /// (MNEMO_STATUS_INVALID_ARGUMENT), as a NULL one does in C.
    subscription subscribe(change_callback callback) {
        if (!callback) throw error(MNEMO_STATUS_INVALID_ARGUMENT, "callback is empty");
        auto state = std::make_shared<detail::subscription_state>();
        state->callback = std::move(callback);
        // mnemo's own reference, released by detail::release_subscriber.
        auto *held = new std::shared_ptr<detail::subscription_state>(state);
        mnemo_subscription *s = nullptr;
        mnemo_status status = mnemo_db_subscribe(h_.get(), &detail::call_subscriber, held,
                                                 &detail::release_subscriber, &s);
        if (status != MNEMO_STATUS_OK) {
            // mnemo never took `held`. Read the thread's message before the callback goes:
            // its captures' destructors may call mnemo, which would replace the message.
            error failed = detail::failure(status, "mnemo_db_subscribe");
            delete held;
            state.reset();
            throw failed;
        }
        return subscription(s, std::move(state));
    }
    /// Queues every change from now on for reading without a callback. Throws with
    /// MNEMO_STATUS_BUSY while the instance has as many watchers as its "watchers" limit
    /// allows (1024 by default; see instance::set_limits).
    events watch() {
        mnemo_events *e = nullptr;
        detail::check(mnemo_db_watch(h_.get(), &e), "mnemo_db_watch");
        return events(e);
    }
    /// Waits until every callback for the changes committed so far has run; throws
    /// MNEMO_STATUS_BUSY when `timeout` passes first (or from inside a callback).
    void flush_notifications(std::chrono::milliseconds timeout) {
        detail::check(mnemo_db_flush_notifications(h_.get(), detail::timeout_ms(timeout)),
                      "mnemo_db_flush_notifications");
    }
    mnemo_database *native_handle() const noexcept { return h_.get(); }

private:
    /// Reads a value with mnemo_db_get_into, one call for a value that fits a per-thread
    /// 1 KiB buffer; a longer one is read again straight into `out`, sized to the length the
    /// first call reported (again while the value keeps growing). `out` is set on OK only.
    mnemo_status read(const std::string &store, const std::string &key, std::string &out) const {
        thread_local char small[1024];
        const char *store_c = detail::arg(store, "store");
        const char *key_c = detail::arg(key, "key");
        std::size_t len = 0;
        mnemo_status s = mnemo_db_get_into(h_.get(), store_c, key_c, small, sizeof small, &len);
        if (s == MNEMO_STATUS_OK) out.assign(small, len);
        std::string big;
        while (s == MNEMO_STATUS_BUFFER_TOO_SMALL) {
            big.resize(len);  // len + 1 bytes with the terminator, which receives the NUL
            s = mnemo_db_get_into(h_.get(), store_c, key_c, &big[0], len + 1, &len);
            if (s == MNEMO_STATUS_OK) {
                big.resize(len);
                out = std::move(big);
            }
        }
        return s;
    }
    friend class user;
    explicit database(mnemo_database *d) : h_(d) {}
    detail::owned<mnemo_database, mnemo_db_free> h_;
};

/// A logged-in user's session. Destroying it logs out (wiping the session's keys).
class user {
public:
    database create_db(const std::string &name) {
        mnemo_database *d = nullptr;
        detail::check(mnemo_user_create_db(h_.get(), detail::arg(name, "name"), &d),
                      "mnemo_user_create_db");
        return database(d);
    }
    database load_db(const std::string &db_id) {
        mnemo_database *d = nullptr;
        detail::check(mnemo_user_load_db(h_.get(), detail::arg(db_id, "db_id"), &d),
                      "mnemo_user_load_db");
        return database(d);
    }
    /// The tracked database named `name`, or std::nullopt.
    std::optional<database> find_db(const std::string &name) {
        mnemo_database *d = nullptr;
        mnemo_status s = mnemo_user_find_db(h_.get(), detail::arg(name, "name"), &d);
        if (s == MNEMO_STATUS_NOT_FOUND) return std::nullopt;
        detail::check(s, "mnemo_user_find_db");
        return database(d);
    }
    /// JSON: [{"id":"sha256:…","name":"notes"}, …]
    std::string list_dbs() {
        char *out = nullptr;
        detail::check(mnemo_user_list_dbs(h_.get(), &out), "mnemo_user_list_dbs");
        return detail::take(out);
    }
    /// A new key; returns its public key.
    std::string add_private_key(const std::optional<std::string> &display_name = std::nullopt) {
        char *out = nullptr;
        detail::check(mnemo_user_add_private_key(h_.get(),
                                                 detail::arg(display_name, "display_name"), &out),
                      "mnemo_user_add_private_key");
        return detail::take(out);
    }
    /// JSON: [{"pubkey":"ed25519:…","name":"default","default":true}, …]
    std::string list_keys() {
        char *out = nullptr;
        detail::check(mnemo_user_list_keys(h_.get(), &out), "mnemo_user_list_keys");
        return detail::take(out);
    }
    /// Removes a key other than the default; its sealed private key is erased.
    void remove_key(const std::string &pubkey) {
        detail::check(mnemo_user_remove_key(h_.get(), detail::arg(pubkey, "pubkey")),
                      "mnemo_user_remove_key");
    }
    /// Makes one of the user's keys the default (stored: it holds at the next login).
    void set_default_key(const std::string &pubkey) {
        detail::check(mnemo_user_set_default_key(h_.get(), detail::arg(pubkey, "pubkey")),
                      "mnemo_user_set_default_key");
    }
    /// Removes a database from the user's list; its storage goes when no user keeps it.
    void forget_db(const std::string &db_id) {
        detail::check(mnemo_user_forget_db(h_.get(), detail::arg(db_id, "db_id")),
                      "mnemo_user_forget_db");
    }
    std::string signing_key(const std::string &db_id) {
        char *out = nullptr;
        detail::check(mnemo_user_get_signing_key(h_.get(), detail::arg(db_id, "db_id"), &out),
                      "mnemo_user_get_signing_key");
        return detail::take(out);
    }
    void change_password(const std::optional<std::string> &old_pw,
                         const std::optional<std::string> &new_pw) {
        detail::check(mnemo_user_change_password(h_.get(), detail::arg(old_pw, "old_pw"),
                                                 detail::arg(new_pw, "new_pw")),
                      "mnemo_user_change_password");
    }
    /// Admin only. JSON: [{"username":"alice","status":"active","admin":true}, …]
    std::string admin_list_users() {
        char *out = nullptr;
        detail::check(mnemo_user_admin_list_users(h_.get(), &out), "mnemo_user_admin_list_users");
        return detail::take(out);
    }
    void admin_disable(const std::string &username) {
        detail::check(mnemo_user_admin_disable(h_.get(), detail::arg(username, "username")),
                      "mnemo_user_admin_disable");
    }
    void admin_enable(const std::string &username) {
        detail::check(mnemo_user_admin_enable(h_.get(), detail::arg(username, "username")),
                      "mnemo_user_admin_enable");
    }
    void admin_delete(const std::string &username) {
        detail::check(mnemo_user_admin_delete(h_.get(), detail::arg(username, "username")),
                      "mnemo_user_admin_delete");
    }
    /// Logs out now, reporting failure; the object is empty afterwards either way.
    void logout() { detail::check(mnemo_user_logout(h_.release()), "mnemo_user_logout"); }
    mnemo_user *native_handle() const noexcept { return h_.get(); }

private:
    friend class instance;
    explicit user(mnemo_user *u) : h_(u) {}
    detail::owned<mnemo_user, detail::logout_quietly> h_;
};

/// One reference to an instance's sync engine.
class sync {
public:
    /// Serves other instances on `addr` ("127.0.0.1:0": any free port); returns the address.
    std::string listen(const std::string &addr) {
        char *out = nullptr;
        detail::check(mnemo_sync_listen(h_.get(), detail::arg(addr, "addr"), &out),
                      "mnemo_sync_listen");
        return detail::take(out);
    }
    /// Stops the listener started at `bound_addr` (what listen returned); its port is free
    /// again on return. Throws MNEMO_STATUS_NOT_FOUND if no listener of this engine is there.
    void unlisten(const std::string &bound_addr) {
        detail::check(mnemo_sync_unlisten(h_.get(), detail::arg(bound_addr, "bound_addr")),
                      "mnemo_sync_unlisten");
    }
    /// Proves identities with the peer; returns its device id.
    std::string connect(const std::string &peer_addr) {
        char *out = nullptr;
        detail::check(mnemo_sync_connect(h_.get(), detail::arg(peer_addr, "peer_addr"), &out),
                      "mnemo_sync_connect");
        return detail::take(out);
    }
    /// One pull-then-push round for `db_id`, as `u`.
    void sync_db(user &u, const std::string &peer_addr, const std::string &db_id) {
        detail::check(mnemo_sync_db(h_.get(), u.native_handle(),
                                    detail::arg(peer_addr, "peer_addr"),
                                    detail::arg(db_id, "db_id")),
                      "mnemo_sync_db");
    }
    /// Keeps `db_id` in sync with the peer in the background, as `u`.
    void track(user &u, const std::string &peer_addr, const std::string &db_id) {
        detail::check(mnemo_sync_track(h_.get(), u.native_handle(),
                                       detail::arg(peer_addr, "peer_addr"),
                                       detail::arg(db_id, "db_id")),
                      "mnemo_sync_track");
    }
    /// Stops keeping `db_id` in sync with the peer for `u`, and forgets it (no resuming at
    /// login); throws MNEMO_STATUS_NOT_FOUND if `u` does not track it with that peer.
    void untrack(user &u, const std::string &peer_addr, const std::string &db_id) {
        detail::check(mnemo_sync_untrack(h_.get(), u.native_handle(),
                                         detail::arg(peer_addr, "peer_addr"),
                                         detail::arg(db_id, "db_id")),
                      "mnemo_sync_untrack");
    }
    /// What `u` tracks, with how each is doing, as a JSON array of objects: {"db", "peer",
    /// "device", "running", "last_synced_ms", "last_error"}.
    std::string tracks(user &u) {
        char *out = nullptr;
        detail::check(mnemo_sync_tracks(h_.get(), u.native_handle(), &out), "mnemo_sync_tracks");
        return detail::take(out);
    }
    /// A signed share ticket ("mnemo:…") for `db_id`, held here, naming this device and
    /// where it listens (or the advertised addresses). It grants nothing by itself.
    std::string share(const std::string &db_id) {
        char *out = nullptr;
        detail::check(mnemo_sync_share(h_.get(), detail::arg(db_id, "db_id"), &out),
                      "mnemo_sync_share");
        return detail::take(out);
    }
    /// Adds `addr` ("host:port", as peers reach this device) to the addresses tickets name,
    /// in place of the listeners' own. At most 8.
    void advertise(const std::string &addr) {
        detail::check(mnemo_sync_advertise(h_.get(), detail::arg(addr, "addr")),
                      "mnemo_sync_advertise");
    }
    /// Asks the device `ticket` names for `permission` ("read", "write" or "admin") on its
    /// database, as `u` (signed by its default key); returns the request's id ("req-…").
    std::string request_access(user &u, const std::string &ticket, const std::string &permission) {
        char *out = nullptr;
        detail::check(mnemo_sync_request_access(h_.get(), u.native_handle(),
                                                detail::arg(ticket, "ticket"),
                                                detail::arg(permission, "permission"), &out),
                      "mnemo_sync_request_access");
        return detail::take(out);
    }
    /// The access requests waiting here for databases `admin` administers, as JSON:
    /// [{"id":"req-…","db":…,"key":…,"permission":…,"device":…,"requested_at":ms}, …]
    std::string list_requests(user &admin) {
        char *out = nullptr;
        detail::check(mnemo_sync_list_requests(h_.get(), admin.native_handle(), &out),
                      "mnemo_sync_list_requests");
        return detail::take(out);
    }
    /// Grants request `request_id` the permission it asked, signed by `admin`'s admin key.
    void approve(user &admin, const std::string &request_id) {
        detail::check(mnemo_sync_approve(h_.get(), admin.native_handle(),
                                         detail::arg(request_id, "request_id")),
                      "mnemo_sync_approve");
    }
    /// Rejects request `request_id`: its key is refused for 7 days.
    void reject(user &admin, const std::string &request_id) {
        detail::check(mnemo_sync_reject(h_.get(), admin.native_handle(),
                                        detail::arg(request_id, "request_id")),
                      "mnemo_sync_reject");
    }
    /// Grants requests for `db_id` of at most `permission` ("read", "write" or "admin") as
    /// they arrive, signed by `admin`'s key; std::nullopt removes the policy.
    void auto_approve(user &admin, const std::string &db_id,
                      const std::optional<std::string> &permission) {
        detail::check(mnemo_sync_auto_approve(h_.get(), admin.native_handle(),
                                              detail::arg(db_id, "db_id"),
                                              detail::arg(permission, "permission")),
                      "mnemo_sync_auto_approve");
    }
    /// Pulls the database `ticket` names, as `u`, once its request was approved (then
    /// user::load_db opens it); throws MNEMO_STATUS_PERMISSION_DENIED before that.
    void join(user &u, const std::string &ticket) {
        detail::check(mnemo_sync_join(h_.get(), u.native_handle(), detail::arg(ticket, "ticket")),
                      "mnemo_sync_join");
    }
    /// The engine's limits as a JSON object of numbers by name, e.g.
    /// {"max_connections":256, …, "max_received_bytes":134217728}.
    std::string limits() const {
        char *out = nullptr;
        detail::check(mnemo_sync_limits(h_.get(), &out), "mnemo_sync_limits");
        return detail::take(out);
    }
    /// What the engine runs now, and what its listeners refused, as a JSON object of numbers:
    /// {"listeners":n, "open_connections":n, "requests_in_flight":n, "watches":n,
    /// "tracks":n, "requests_refused_busy":n, "connections_refused":n} (the last two counted
    /// since sync was enabled; see mnemo_sync_stats).
    std::string stats() const {
        char *out = nullptr;
        detail::check(mnemo_sync_stats(h_.get(), &out), "mnemo_sync_stats");
        return detail::take(out);
    }
    /// Changes the limits a JSON object names (e.g. {"max_connections":8}), all or nothing;
    /// for listeners and rounds started afterwards.
    void set_limits(const std::string &limits_json) {
        detail::check(mnemo_sync_set_limits(h_.get(), detail::arg(limits_json, "limits_json")),
                      "mnemo_sync_set_limits");
    }
    /// Waits until earlier local commits on tracked databases are pushed.
    void flush(std::chrono::milliseconds timeout) {
        detail::check(mnemo_sync_flush(h_.get(), detail::timeout_ms(timeout)), "mnemo_sync_flush");
    }
    mnemo_sync *native_handle() const noexcept { return h_.get(); }

private:
    friend class instance;
    explicit sync(mnemo_sync *s) : h_(s) {}
    detail::owned<mnemo_sync, mnemo_sync_free> h_;
};

/// An open instance: the device identity and its users.
class instance {
public:
    /// Opens the backend at `url` and an instance on it.
    static instance open(const std::string &url) { return open(backend::open(url)); }
    /// Opens an instance on `b`, which it consumes.
    static instance open(backend &&b) {
        mnemo_instance *i = nullptr;
        detail::check(mnemo_instance_open(b.release(), &i), "mnemo_instance_open");
        return instance(i);
    }
    /// Like open(), choosing the Argon2id cost of passwords (memory KiB, passes, lanes).
    static instance open_with_argon2(backend &&b, std::uint32_t m_kib, std::uint32_t t,
                                     std::uint32_t p) {
        mnemo_instance *i = nullptr;
        detail::check(mnemo_instance_open_with_argon2(b.release(), m_kib, t, p, &i),
                      "mnemo_instance_open_with_argon2");
        return instance(i);
    }
    std::string device_id() const {
        char *out = nullptr;
        detail::check(mnemo_instance_device_id(h_.get(), &out), "mnemo_instance_device_id");
        return detail::take(out);
    }
    /// Creates a user; no password (std::nullopt) makes a passwordless user.
    void create_user(const std::string &username,
                     const std::optional<std::string> &password = std::nullopt) {
        detail::check(mnemo_instance_create_user(h_.get(), detail::arg(username, "username"),
                                                 detail::arg(password, "password")),
                      "mnemo_instance_create_user");
    }
    user login(const std::string &username,
               const std::optional<std::string> &password = std::nullopt) {
        mnemo_user *u = nullptr;
        detail::check(mnemo_instance_login(h_.get(), detail::arg(username, "username"),
                                           detail::arg(password, "password"), &u),
                      "mnemo_instance_login");
        return user(u);
    }
    /// JSON: ["alice","bob"]
    std::string list_users() const {
        char *out = nullptr;
        detail::check(mnemo_instance_list_users(h_.get(), &out), "mnemo_instance_list_users");
        return detail::take(out);
    }
    /// The instance's memory limits as a JSON object of numbers: by default
    /// {"idle_databases_kept":256,"queued_notifications":65536,
    /// "waiting_entries_per_database":100000,"waiting_bytes_per_database":16777216,
    /// "waiting_bytes":67108864,"waiting_time_ms":600000,"other_processes_poll_ms":200,
    /// "watchers":1024}.
    std::string limits() const {
        char *out = nullptr;
        detail::check(mnemo_instance_limits(h_.get(), &out), "mnemo_instance_limits");
        return detail::take(out);
    }
    /// What the instance holds now, as a JSON object of numbers: {"databases_in_memory":n,
    /// "notifications_queued":n, "waiting_entry_bytes":n, "databases_polled":n,
    /// "storage_connections":n, "password_derivations":n, "scrubs_pending":n, "watchers":n}.
    std::string stats() const {
        char *out = nullptr;
        detail::check(mnemo_instance_stats(h_.get(), &out), "mnemo_instance_stats");
        return detail::take(out);
    }
    /// Changes the limits a JSON object names (e.g. {"idle_databases_kept":0}), all or
    /// nothing.
    void set_limits(const std::string &limits_json) {
        detail::check(mnemo_instance_set_limits(h_.get(), detail::arg(limits_json, "limits_json")),
                      "mnemo_instance_set_limits");
    }
    void enable_sync() {
        detail::check(mnemo_instance_enable_sync(h_.get()), "mnemo_instance_enable_sync");
    }
    /// A new reference to the sync engine (enable_sync() first).
    mnemo::sync sync() {
        mnemo_sync *s = nullptr;
        detail::check(mnemo_instance_sync(h_.get(), &s), "mnemo_instance_sync");
        return mnemo::sync(s);
    }
    mnemo_instance *native_handle() const noexcept { return h_.get(); }

private:
    explicit instance(mnemo_instance *i) : h_(i) {}
    detail::owned<mnemo_instance, mnemo_instance_free> h_;
};

}  // namespace mnemo

#endif  // MNEMO_HPP
