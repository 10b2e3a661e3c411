// Tests of mnemo::database::get and find, which read through mnemo_db_get_into: values
// around the 1 KiB per-thread buffer, long values read into the string, missing keys,
// threads. Built and run (plainly and under ASan/UBSan) by tests/packaging/test-cpp.sh.
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "mnemo.hpp"

namespace {

int failures = 0;

void check(bool ok, const std::string &what) {
    if (!ok) {
        ++failures;
        std::cerr << "FAIL " << what << "\n";
    }
}

// A JSON string value whose text is exactly `n` bytes (n >= 2).
std::string json_of_length(std::size_t n) { return "\"" + std::string(n - 2, 'x') + "\""; }

}  // namespace

int main() {
    auto inst = mnemo::instance::open("memory:");
    inst.create_user("ann");
    auto ann = inst.login("ann");
    auto db = ann.create_db("d");

    for (std::size_t n : {2u, 3u, 1022u, 1023u, 1024u, 1025u, 5000u, 1u << 20}) {
        const std::string value = json_of_length(n);
        db.set("s", "k", value);
        check(db.get("s", "k") == value, "get of a " + std::to_string(n) + "-byte value");
        auto found = db.find("s", "k");
        check(found && *found == value, "find of a " + std::to_string(n) + "-byte value");
    }

    check(!db.find("s", "missing"), "find of a missing key is nullopt");
    try {
        db.get("s", "missing");
        check(false, "get of a missing key throws");
    } catch (const mnemo::error &e) {
        check(e.status() == MNEMO_STATUS_NOT_FOUND, "get of a missing key throws NOT_FOUND");
    }
    try {
        db.get("s", "");
        check(false, "get of an empty key throws");
    } catch (const mnemo::error &e) {
        check(e.status() == MNEMO_STATUS_INVALID_ARGUMENT, "get of an empty key throws INVALID_ARGUMENT");
    }

    // Threads reading values of different sizes through one handle, each its own.
    const std::vector<std::size_t> sizes = {2, 900, 1023, 1024, 3000, 70000};
    for (std::size_t i = 0; i < sizes.size(); ++i) db.set("t", std::to_string(i), json_of_length(sizes[i]));
    std::vector<int> bad(sizes.size(), 0);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
        threads.emplace_back([&, i] {
            const std::string want = json_of_length(sizes[i]);
            for (int round = 0; round < 100; ++round)
                if (db.get("t", std::to_string(i)) != want) ++bad[i];
        });
    }
    for (auto &t : threads) t.join();
    for (std::size_t i = 0; i < sizes.size(); ++i)
        check(bad[i] == 0, "thread " + std::to_string(i) + " always read its own value");

    std::cout << (failures == 0 ? "test_get: ok" : "test_get: FAILED") << "\n";
    return failures == 0 ? 0 : 1;
}
