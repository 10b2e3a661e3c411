// Tests of the wrapper's paths, history, verification, limits and ticket sharing: each
// method through real calls on "memory:" instances (several in this process, syncing over
// 127.0.0.1), values read back, and failing calls throwing mnemo::error with the status
// include/mnemo.h gives. Built and run under ASan/UBSan by tests/packaging/test-cpp.sh.
#include <iostream>
#include <optional>
#include <string>
#include <utility>

#include "mnemo.hpp"

namespace {

int passed = 0;
int failed = 0;

void check(bool ok, const std::string &what) {
    if (ok) {
        ++passed;
    } else {
        ++failed;
        std::cerr << "FAIL " << what << "\n";
    }
}

bool contains(const std::string &text, const std::string &part) {
    return text.find(part) != std::string::npos;
}

bool starts_with(const std::string &text, const std::string &prefix) {
    return text.compare(0, prefix.size(), prefix) == 0;
}

std::size_t count(const std::string &text, const std::string &part) {
    std::size_t n = 0;
    for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
}

// Runs `call`, which must throw mnemo::error with `status`.
template <class F>
void expect_status(mnemo_status status, const std::string &what, F call) {
    try {
        call();
        check(false, what + " throws " + mnemo_status_str(status) + " (it returned)");
    } catch (const mnemo::error &e) {
        check(e.status() == status, what + " throws " + mnemo_status_str(status) + " (got " +
                                        e.status_name() + ": " + e.what() + ")");
    }
}

// Runs `call`, which must not throw.
template <class F>
void expect_ok(const std::string &what, F call) {
    try {
        call();
        check(true, what);
    } catch (const mnemo::error &e) {
        check(false, what + " (threw " + e.status_name() + ": " + e.what() + ")");
    }
}

// One device: an instance on memory with a passwordless user logged in and sync enabled.
struct side {
    mnemo::instance inst;
    mnemo::user u;
    mnemo::sync engine;
};

side open_side(const std::string &name) {
    auto inst = mnemo::instance::open("memory:");
    inst.create_user(name);
    auto u = inst.login(name);
    inst.enable_sync();
    auto engine = inst.sync();
    return side{std::move(inst), std::move(u), std::move(engine)};
}

void test_paths_history_verify() {
    auto inst = mnemo::instance::open("memory:");
    inst.create_user("ann");
    auto ann = inst.login("ann");
    auto db = ann.create_db("d");

    db.set_path("s", "person", "/address/city", "\"Paris\"");
    check(db.get("s", "person") == "{\"address\":{\"city\":\"Paris\"}}",
          "set_path creates the objects on the way");
    db.set_path("s", "person", "/name", "\"Ann\"");
    check(db.get_path("s", "person", "/name") == "\"Ann\"", "get_path reads a set path");
    check(db.get_path("s", "person", "/address") == "{\"city\":\"Paris\"}",
          "get_path reads an object");
    check(db.get_path("s", "person", "") == db.get("s", "person"),
          "get_path of \"\" is the whole value");
    expect_status(MNEMO_STATUS_NOT_FOUND, "get_path of a missing key",
                  [&] { db.get_path("s", "nobody", "/name"); });
    expect_status(MNEMO_STATUS_NOT_FOUND, "get_path of a missing path",
                  [&] { db.get_path("s", "person", "/age"); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "get_path of a malformed pointer",
                  [&] { db.get_path("s", "person", "name"); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "set_path of a malformed pointer",
                  [&] { db.set_path("s", "person", "name", "1"); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "set_path of malformed JSON",
                  [&] { db.set_path("s", "person", "/name", "{"); });
    check(db.get_path("s", "person", "/name") == "\"Ann\"", "failed set_path changed nothing");

    // A transaction: a path write on a value set earlier in it, then a malformed one that
    // leaves the transaction usable.
    auto txn = db.begin();
    txn.set("s", "t", "{\"a\":1}");
    txn.set_path("s", "t", "/b", "2");
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "txn set_path of a malformed pointer",
                  [&] { txn.set_path("s", "t", "b", "3"); });
    txn.set_path("s", "t", "/c/d", "true");
    const std::string entry = txn.commit();
    check(starts_with(entry, "sha256:"), "commit returns an entry id");
    check(db.get("s", "t") == "{\"a\":1,\"b\":2,\"c\":{\"d\":true}}",
          "txn set_path builds on the value set in the transaction");
    check(!db.find("s", "t2"), "nothing else was written");

    // History, newest first: a delete, a path write, a whole value.
    db.set("s", "h", "1");
    db.set_path("s", "h", "/x", "2");
    db.remove("s", "h");
    const std::string all = db.history("s", "h");
    check(count(all, "\"entry\":") == 3, "history lists every change: " + all);
    check(count(all, "\"height\":") == 3, "history gives each change's height");
    const auto deleted = all.find("\"deleted\":true");
    const auto patch = all.find("\"patch\":{\"/x\":2}");
    const auto value = all.find("\"value\":1");
    check(deleted != std::string::npos && patch != std::string::npos && value != std::string::npos,
          "history shows the delete, the patch and the value: " + all);
    check(deleted < patch && patch < value, "history is newest first: " + all);
    const std::string newest = db.history("s", "h", 1);
    check(count(newest, "\"entry\":") == 1 && contains(newest, "\"deleted\":true"),
          "history with a limit gives the newest: " + newest);
    check(db.history("s", "never") == "[]", "history of a key never written is []");
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "history of an empty key",
                  [&] { db.history("s", ""); });

    expect_ok("verify of an intact database", [&] { db.verify(); });
    auto moved = std::move(db);
    expect_ok("verify through the moved-to handle", [&] { moved.verify(); });
    // The moved-from handle is empty on purpose: the call must throw, not crash.
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "verify of a moved-from database",
                  [&] { db.verify(); });
}

void test_limits() {
    auto inst = mnemo::instance::open("memory:");
    check(contains(inst.stats(),
                   "\"notifications_queued\":0,\"waiting_entry_bytes\":0,\"databases_polled\":0,"
                   "\"storage_connections\":0}"),
          "instance stats: " + inst.stats());
    inst.enable_sync();
    check(inst.sync().stats() == "{\"listeners\":0,\"open_connections\":0,"
                                 "\"requests_in_flight\":0,\"watches\":0,\"tracks\":0,"
                                 "\"requests_refused_busy\":0,\"connections_refused\":0}",
          "sync stats: " + inst.sync().stats());
    const std::string waiting_defaults =
        ",\"waiting_entries_per_database\":100000,\"waiting_bytes_per_database\":16777216,"
        "\"waiting_bytes\":67108864,\"waiting_time_ms\":600000,"
        "\"other_processes_poll_ms\":200}";
    check(inst.limits() == "{\"idle_databases_kept\":256,\"queued_notifications\":65536" +
                               waiting_defaults,
          "instance limits are the defaults: " + inst.limits());
    inst.set_limits("{\"idle_databases_kept\": 3}");
    check(inst.limits() ==
              "{\"idle_databases_kept\":3,\"queued_notifications\":65536" + waiting_defaults,
          "instance set_limits changes one limit: " + inst.limits());
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "instance set_limits out of bounds", [&] {
        inst.set_limits("{\"idle_databases_kept\": 1, \"queued_notifications\": 0}");
    });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "instance set_limits of an unknown name",
                  [&] { inst.set_limits("{\"max_connections\": 1}"); });
    check(inst.limits() ==
              "{\"idle_databases_kept\":3,\"queued_notifications\":65536" + waiting_defaults,
          "refused instance set_limits changed nothing: " + inst.limits());

    inst.enable_sync();
    auto engine = inst.sync();
    const std::string defaults = engine.limits();
    check(contains(defaults, "\"max_connections\":256,") &&
              contains(defaults, "\"round_deadline_ms\":600000}"),
          "sync limits are the defaults: " + defaults);
    engine.set_limits("{\"max_connections\": 8, \"idle_timeout_ms\": 5000}");
    check(contains(engine.limits(), "\"max_connections\":8,") &&
              contains(engine.limits(), "\"idle_timeout_ms\":5000,"),
          "sync set_limits changes the limits named: " + engine.limits());
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "sync set_limits with max_connections 0",
                  [&] { engine.set_limits("{\"max_connections\": 0}"); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "sync set_limits of an unknown name",
                  [&] { engine.set_limits("{\"max_conections\": 9}"); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "sync set_limits of an array",
                  [&] { engine.set_limits("[9]"); });
    check(contains(engine.limits(), "\"max_connections\":8,"),
          "refused sync set_limits changed nothing: " + engine.limits());
}

void test_sharing() {
    side a = open_side("alice"), b = open_side("bob");
    const std::string addr = a.engine.listen("127.0.0.1:0");

    // A second listener, stopped: its port is refused, and another stop finds nothing.
    const std::string second = a.engine.listen("127.0.0.1:0");
    expect_ok("unlisten a second listener", [&] { a.engine.unlisten(second); });
    expect_status(MNEMO_STATUS_NETWORK, "connect to a stopped listener",
                  [&] { b.engine.connect(second); });
    expect_status(MNEMO_STATUS_NOT_FOUND, "unlisten twice", [&] { a.engine.unlisten(second); });
    check(b.engine.connect(addr) == a.inst.device_id(), "the first listener still serves");

    auto db = a.u.create_db("shared");
    const std::string db_id = db.id();
    db.set("notes", "hello", "\"from alice\"");

    const std::string ticket = a.engine.share(db_id);
    check(starts_with(ticket, "mnemo:"), "share gives a ticket: " + ticket);
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "share of a malformed id",
                  [&] { a.engine.share("sha256:nope"); });
    expect_status(MNEMO_STATUS_NOT_FOUND, "share of a database not here",
                  [&] { b.engine.share(db_id); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "advertise of a malformed address",
                  [&] { a.engine.advertise("nonsense"); });

    // Bob asks, Alice approves, Bob joins.
    expect_status(MNEMO_STATUS_PERMISSION_DENIED, "join before approval",
                  [&] { b.engine.join(b.u, ticket); });
    const std::string request = b.engine.request_access(b.u, ticket, "write");
    check(starts_with(request, "req-"), "request_access gives a request id: " + request);
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "request_access of a malformed permission",
                  [&] { b.engine.request_access(b.u, ticket, "owner"); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "request_access with a malformed ticket",
                  [&] { b.engine.request_access(b.u, "mnemo:", "read"); });
    const std::string listed = a.engine.list_requests(a.u);
    check(count(listed, "\"id\":") == 1 && contains(listed, "\"id\":\"" + request + "\"") &&
              contains(listed, "\"db\":\"" + db_id + "\"") &&
              contains(listed, "\"permission\":\"write\"") &&
              contains(listed, "\"device\":\"" + b.inst.device_id() + "\"") &&
              contains(listed, "\"requested_at\":"),
          "list_requests shows the request: " + listed);
    check(b.engine.list_requests(b.u) == "[]", "list_requests elsewhere is []");
    expect_ok("approve of a waiting request", [&] { a.engine.approve(a.u, request); });
    check(a.engine.list_requests(a.u) == "[]", "an approved request is no longer listed");
    expect_status(MNEMO_STATUS_NOT_FOUND, "approve of a request approved already",
                  [&] { a.engine.approve(a.u, request); });
    b.engine.join(b.u, ticket);
    auto copy = b.u.load_db(db_id);
    check(copy.get("notes", "hello") == "\"from alice\"", "join pulls the database");
    copy.set("notes", "reply", "\"from bob\"");
    b.engine.sync_db(b.u, addr, db_id);
    check(db.get("notes", "reply") == "\"from bob\"", "the approved key may write");

    // Advertising gives a device that does not listen an address for its tickets.
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "share while not listening",
                  [&] { b.engine.share(db_id); });
    b.engine.advertise("127.0.0.1:9");
    check(starts_with(b.engine.share(db_id), "mnemo:"), "share after advertise gives a ticket");

    // Tracking, listed, then untracking; a second untrack finds nothing.
    b.engine.track(b.u, addr, db_id);
    const std::string tracked = b.engine.tracks(b.u);
    check(contains(tracked, "\"db\":\"" + db_id + "\"") &&
              contains(tracked, "\"peer\":\"" + addr + "\"") &&
              contains(tracked, "\"running\":true"),
          "tracks lists the track: " + tracked);
    expect_ok("untrack of a tracked database", [&] { b.engine.untrack(b.u, addr, db_id); });
    expect_status(MNEMO_STATUS_NOT_FOUND, "untrack of a database no longer tracked",
                  [&] { b.engine.untrack(b.u, addr, db_id); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "untrack with a malformed address",
                  [&] { b.engine.untrack(b.u, "nonsense", db_id); });
    check(b.engine.tracks(b.u) == "[]", "tracks after untrack is []");

    // Auto-approval: Carol's read request is granted as it arrives, and she joins at once.
    a.engine.auto_approve(a.u, db_id, std::string("read"));
    side c = open_side("carol");
    c.engine.request_access(c.u, ticket, "read");
    c.engine.join(c.u, ticket);
    check(c.u.load_db(db_id).get("notes", "hello") == "\"from alice\"",
          "auto_approve grants a read request on arrival");
    expect_status(MNEMO_STATUS_PERMISSION_DENIED, "auto_approve by a user who is no admin",
                  [&] { b.engine.auto_approve(b.u, db_id, std::string("read")); });
    expect_status(MNEMO_STATUS_INVALID_ARGUMENT, "auto_approve of a malformed permission",
                  [&] { a.engine.auto_approve(a.u, db_id, std::string("owner")); });

    // Without the policy Dave's request waits; Alice rejects it and he stays refused.
    a.engine.auto_approve(a.u, db_id, std::nullopt);
    side d = open_side("dave");
    const std::string dave_request = d.engine.request_access(d.u, ticket, "read");
    check(contains(a.engine.list_requests(a.u), "\"id\":\"" + dave_request + "\""),
          "with the policy removed, a request waits");
    expect_ok("reject of a waiting request", [&] { a.engine.reject(a.u, dave_request); });
    check(a.engine.list_requests(a.u) == "[]", "a rejected request is no longer listed");
    expect_status(MNEMO_STATUS_PERMISSION_DENIED, "join after a rejection",
                  [&] { d.engine.join(d.u, ticket); });
    expect_status(MNEMO_STATUS_PERMISSION_DENIED, "request_access after a rejection",
                  [&] { d.engine.request_access(d.u, ticket, "read"); });
    expect_status(MNEMO_STATUS_NOT_FOUND, "reject of a request rejected already",
                  [&] { a.engine.reject(a.u, dave_request); });
}

}  // namespace

int main() {
    try {
        test_paths_history_verify();
        test_limits();
        test_sharing();
    } catch (const std::exception &e) {
        check(false, std::string("unexpected exception: ") + e.what());
    }
    std::cout << passed << " passed, " << failed << " failed\n";
    return failed == 0 ? 0 : 1;
}
