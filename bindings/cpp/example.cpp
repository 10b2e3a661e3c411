// The mnemo flow in C++17 with bindings/cpp/mnemo.hpp: two devices (two instances in this
// process), a shared notes database, a transaction, a subscription, errors as exceptions,
// and sync. Every handle is owned by an object and freed when it goes out of scope.
//
// Build, from the repository root after `cargo build` (one line):
//   g++ -std=c++17 -Iinclude -Ibindings/cpp bindings/cpp/example.cpp -o example
//       -Ltarget/debug -Wl,-rpath,"$PWD/target/debug" -lmnemo
// or against an installed copy (scripts/install):
//   g++ -std=c++17 example.cpp -o example $(pkg-config --cflags --libs mnemo)
// Usage: example [BACKEND_URL]   (alice's device; default "memory:")
#include <atomic>
#include <chrono>
#include <iostream>
#include <string>

#include "mnemo.hpp"

namespace {

// The user's default public key, from list_keys()'s JSON. A fresh user has exactly one key,
// so the first "pubkey" is it (a real program would use a JSON parser).
std::string default_key(mnemo::user &u) {
    const std::string keys = u.list_keys();
    const std::string field = "\"pubkey\":\"";
    const auto start = keys.find(field) + field.size();
    return keys.substr(start, keys.find('"', start) - start);
}

}  // namespace

int main(int argc, char **argv) {
    const std::string url = argc > 1 ? argv[1] : "memory:";
    try {
        std::cout << "mnemo " << mnemo::version() << "\n";

        // Device 1: alice's, serving its databases.
        auto laptop = mnemo::instance::open(url);
        try {
            laptop.create_user("alice", std::string("s3cret"));
        } catch (const mnemo::error &e) {
            if (e.status() != MNEMO_STATUS_ALREADY_EXISTS) throw;  // a second run on a file
        }
        auto alice = laptop.login("alice", std::string("s3cret"));
        auto found = alice.find_db("notes");
        auto notes = found ? std::move(*found) : alice.create_db("notes");
        const std::string db_id = notes.id();

        std::atomic<int> changes{0};
        auto watching = notes.subscribe([&changes](const std::string &, const std::string &, bool) { ++changes; });
        auto feed = notes.watch();  // the same changes, pulled instead of called back

        notes.set("todo", "milk", R"({"done": false})");
        {
            auto txn = notes.begin();  // one signed commit, all or nothing
            txn.set("todo", "bread", R"({"done": false})");
            txn.set("todo", "eggs", R"({"done": true})");
            std::cout << "committed " << txn.commit() << "\n";
        }
        notes.flush_notifications(std::chrono::seconds(10));
        std::cout << "callbacks: " << changes << "\n";
        while (auto event = feed.next()) std::cout << "event: " << *event << "\n";
        std::cout << "todo: " << notes.get_all("todo") << "\n";
        std::cout << "first two: " << notes.scan("todo", "", std::nullopt, 2) << "\n";
        auto todo = notes.cursor("todo");
        while (auto item = todo.next()) std::cout << "  " << item->first << " = " << item->second << "\n";
        std::cout << "logged as " << notes.insert("log", R"("example ran")") << "\n";
        if (!notes.find("todo", "jam")) std::cout << "no jam yet\n";
        try {
            notes.get("todo", "jam");
        } catch (const mnemo::error &e) {
            std::cout << "get todo/jam: " << e.status_name() << "\n";
        }

        laptop.enable_sync();
        auto laptop_sync = laptop.sync();
        const std::string addr = laptop_sync.listen("127.0.0.1:0");

        // Device 2: bob's phone. Alice grants bob's key; bob pulls the database by id.
        auto phone = mnemo::instance::open("memory:");
        phone.create_user("bob");  // passwordless
        auto bob = phone.login("bob");
        notes.grant(default_key(bob), "write");

        phone.enable_sync();
        auto phone_sync = phone.sync();
        std::cout << "connected to " << phone_sync.connect(addr) << "\n";
        phone_sync.sync_db(bob, addr, db_id);
        auto shared = bob.load_db(db_id);
        shared.set("todo", "jam", R"({"done": false, "by": "bob"})");
        phone_sync.sync_db(bob, addr, db_id);  // push bob's change to the laptop

        std::cout << "alice sees todo/jam = " << notes.get("todo", "jam") << "\n";
        watching.close();  // after this, the callback is not running and will not run again
        std::cout << "changes notified: " << changes.load() << "\n";
        alice.logout();
        return 0;
    } catch (const mnemo::error &e) {
        std::cerr << "mnemo error " << e.status_name() << ": " << e.what() << "\n";
        return 1;
    }
}
