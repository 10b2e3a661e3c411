#!/usr/bin/env bash
# Builds bindings/cpp/example.cpp (the header-only wrapper bindings/cpp/mnemo.hpp) with
# g++ -std=c++17 -Wall -Wextra -Werror -pedantic against the debug build, and runs it plainly,
# on a SQLite file (twice: the second run finds alice and her database), and under
# AddressSanitizer/UBSan (no leak, no misuse of a handle); then bindings/cpp/test_get.cpp
# (get and find through mnemo_db_get_into) and bindings/cpp/test_api.cpp (paths, history,
# verify, limits, tickets, strings with a NUL, timeouts, subscriptions ending: the rest of
# the API) under ASan/UBSan. Prints "N passed, N failed".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=target/cpp-wrapper
mkdir -p "$OUT"
rm -f "$OUT"/example.db*
passed=0
failed=0
check() {
    local what=$1
    shift
    if "$@" >"$OUT/last.log" 2>&1; then
        passed=$((passed + 1)); echo "ok   $what"
    else
        failed=$((failed + 1)); echo "FAIL $what"; sed 's/^/     /' "$OUT/last.log"
    fi
}
FLAGS="-std=c++17 -Wall -Wextra -Werror -pedantic -g -Iinclude -Ibindings/cpp"
LINK="-Ltarget/debug -Wl,-rpath,$ROOT/target/debug -lmnemo"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
# shellcheck disable=SC2086
check "example.cpp compiles (-Wall -Wextra -Werror -pedantic)" \
    g++ $FLAGS bindings/cpp/example.cpp -o "$OUT/example" $LINK
check "example runs on memory:" "$OUT/example"
check "example runs on a SQLite file" "$OUT/example" "sqlite:$ROOT/$OUT/example.db"
check "example runs again on the same file" "$OUT/example" "sqlite:$ROOT/$OUT/example.db"
# shellcheck disable=SC2086
check "example compiles with ASan/UBSan" g++ $FLAGS $SAN bindings/cpp/example.cpp -o "$OUT/example-san" $LINK
check "example runs clean under ASan/UBSan" env ASAN_OPTIONS=detect_leaks=1 "$OUT/example-san"
# shellcheck disable=SC2086
check "test_get.cpp compiles with ASan/UBSan" \
    g++ $FLAGS $SAN bindings/cpp/test_get.cpp -o "$OUT/test_get-san" $LINK -lpthread
check "test_get runs clean under ASan/UBSan" env ASAN_OPTIONS=detect_leaks=1 "$OUT/test_get-san"
# shellcheck disable=SC2086
check "test_api.cpp compiles with ASan/UBSan" \
    g++ $FLAGS $SAN bindings/cpp/test_api.cpp -o "$OUT/test_api-san" $LINK -lpthread
check "test_api runs clean under ASan/UBSan" env ASAN_OPTIONS=detect_leaks=1 "$OUT/test_api-san"
rm -f "$OUT"/example.db*
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
