#!/usr/bin/env bash
# Installs mnemo into a temp prefix with scripts/install, then builds
# bindings/c/examples/quickstart.c against the installed copy four ways (pkg-config dynamic
# and static, CMake find_package with mnemo::mnemo and mnemo::mnemo_static), runs each on a
# fresh SQLite file, and checks the SONAME and the links; builds bindings/cpp/example.cpp
# against the installed mnemo.hpp (pkg-config and CMake); and installs once more with a
# relative PREFIX from another directory. Prints "N passed, N failed".
#
# MNEMO_INSTALL_PREFIX=DIR reuses an install made by the caller (nothing is built then).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/mnemo-install-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@" >"$WORK/last.log" 2>&1; then ok "$what"; else bad "$what"; sed 's/^/     /' "$WORK/last.log"; fi
}

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
ABI=$(sed -n 's/^#define MNEMO_ABI_VERSION //p' include/mnemo.h)
PREFIX=${MNEMO_INSTALL_PREFIX:-$WORK/prefix}
if [ -z "${MNEMO_INSTALL_PREFIX:-}" ]; then
    if ! scripts/install "$PREFIX" >"$WORK/install.log" 2>&1; then
        cat "$WORK/install.log"
        echo "0 passed, 1 failed (scripts/install)"
        exit 1
    fi
fi
LIB=$PREFIX/lib
export PKG_CONFIG_PATH=$LIB/pkgconfig

# --- the installed files --------------------------------------------------------------
check "files installed" test -f "$LIB/libmnemo.so.$VERSION" -a -f "$LIB/libmnemo.a" \
    -a -f "$PREFIX/include/mnemo.h" -a -f "$PREFIX/include/mnemo.hpp" \
    -a -f "$PREFIX/include/mnemo_ffi.h" -a -f "$LIB/pkgconfig/mnemo.pc" \
    -a -f "$LIB/cmake/mnemo/mnemoConfig.cmake" -a -f "$LIB/cmake/mnemo/mnemoConfigVersion.cmake"
check "libmnemo.so.$ABI -> libmnemo.so.$VERSION" \
    test "$(readlink "$LIB/libmnemo.so.$ABI")" = "libmnemo.so.$VERSION"
check "libmnemo.so -> libmnemo.so.$ABI" test "$(readlink "$LIB/libmnemo.so")" = "libmnemo.so.$ABI"
check "SONAME is libmnemo.so.$ABI" \
    bash -c "readelf -d '$LIB/libmnemo.so.$VERSION' | grep -q 'SONAME.*\[libmnemo\.so\.$ABI\]'"
check "installed header is the tree's" cmp include/mnemo.h "$PREFIX/include/mnemo.h"
check "installed C++ wrapper is the tree's" cmp bindings/cpp/mnemo.hpp "$PREFIX/include/mnemo.hpp"
check "pkg-config --modversion is $VERSION" test "$(pkg-config --modversion mnemo)" = "$VERSION"
check "pkg-config Libs.private lists the static link's needs" \
    bash -c "pkg-config --static --libs mnemo | grep -q -- '-lpthread'"

# needs_libmnemo BINARY: whether the program asks for libmnemo.so.ABI at run time.
needs_libmnemo() { readelf -d "$1" | grep -q "NEEDED.*\[libmnemo\.so\.$ABI\]"; }
no_libmnemo() { ! readelf -d "$1" | grep -q 'NEEDED.*libmnemo'; }
# runs BINARY: the quickstart on a fresh SQLite file, twice (the second run finds its data).
runs() {
    local db="$WORK/$(basename "$1").db"
    "$1" "sqlite:$db" && "$1" "sqlite:$db" | grep -q "found database notes"
}

# --- pkg-config -------------------------------------------------------------------------
SRC=bindings/c/examples/quickstart.c
CFLAGS="-std=c11 -Wall -Wextra -Werror -pedantic -O2"
# shellcheck disable=SC2046,SC2086
check "pkg-config dynamic: builds" \
    gcc $CFLAGS $(pkg-config --cflags mnemo) "$SRC" -o "$WORK/qs-pc-dynamic" \
    $(pkg-config --libs mnemo) -Wl,-rpath,"$(pkg-config --variable=libdir mnemo)"
check "pkg-config dynamic: NEEDED libmnemo.so.$ABI" needs_libmnemo "$WORK/qs-pc-dynamic"
check "pkg-config dynamic: runs" runs "$WORK/qs-pc-dynamic"
# Static: the same flags with --static, naming the archive so the linker cannot pick the .so.
# shellcheck disable=SC2046,SC2086
check "pkg-config static: builds" \
    gcc $CFLAGS $(pkg-config --static --cflags mnemo) "$SRC" -o "$WORK/qs-pc-static" \
    $(pkg-config --static --libs mnemo | sed 's/-lmnemo\b/-l:libmnemo.a/')
check "pkg-config static: no libmnemo at run time" no_libmnemo "$WORK/qs-pc-static"
check "pkg-config static: runs" runs "$WORK/qs-pc-static"
# C++: the installed wrapper, found through the same flags.
CXX_SRC=bindings/cpp/example.cpp
# shellcheck disable=SC2046,SC2086
check "pkg-config C++ (mnemo.hpp): builds" \
    g++ -std=c++17 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags mnemo) "$CXX_SRC" \
    -o "$WORK/cpp-pc" $(pkg-config --libs mnemo) -Wl,-rpath,"$(pkg-config --variable=libdir mnemo)"
check "pkg-config C++ (mnemo.hpp): runs" "$WORK/cpp-pc"

# --- CMake ------------------------------------------------------------------------------
if command -v cmake >/dev/null 2>&1; then
    mkdir -p "$WORK/cmake-src"
    cp "$SRC" "$WORK/cmake-src/quickstart.c"
    cp "$CXX_SRC" "$WORK/cmake-src/example.cpp"
    cat >"$WORK/cmake-src/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.10)
project(mnemo_quickstart C CXX)
find_package(mnemo $VERSION REQUIRED CONFIG)
add_executable(qs_dynamic quickstart.c)
target_link_libraries(qs_dynamic PRIVATE mnemo::mnemo)
add_executable(qs_static quickstart.c)
target_link_libraries(qs_static PRIVATE mnemo::mnemo_static)
add_executable(cpp_example example.cpp)
target_compile_features(cpp_example PRIVATE cxx_std_17)
target_link_libraries(cpp_example PRIVATE mnemo::mnemo)
CMAKE
    check "cmake find_package(mnemo $VERSION): configures" \
        cmake -S "$WORK/cmake-src" -B "$WORK/cmake-build" -DCMAKE_PREFIX_PATH="$PREFIX" \
        -DCMAKE_BUILD_TYPE=Release
    check "cmake: builds the C targets and the C++ one" cmake --build "$WORK/cmake-build"
    check "cmake mnemo::mnemo from C++ (mnemo.hpp): runs" "$WORK/cmake-build/cpp_example"
    check "cmake mnemo::mnemo: NEEDED libmnemo.so.$ABI" needs_libmnemo "$WORK/cmake-build/qs_dynamic"
    check "cmake mnemo::mnemo: runs" runs "$WORK/cmake-build/qs_dynamic"
    check "cmake mnemo::mnemo_static: no libmnemo at run time" no_libmnemo "$WORK/cmake-build/qs_static"
    check "cmake mnemo::mnemo_static: runs" runs "$WORK/cmake-build/qs_static"
    # An incompatible version request is refused.
    mkdir -p "$WORK/cmake-99"
    printf '%s\n' 'cmake_minimum_required(VERSION 3.10)' 'project(mnemo_99 C)' \
        'find_package(mnemo 99 QUIET CONFIG)' \
        'if(mnemo_FOUND)' '  message(FATAL_ERROR "mnemo 99 accepted")' 'endif()' \
        >"$WORK/cmake-99/CMakeLists.txt"
    check "cmake: find_package(mnemo 99) is refused" \
        cmake -S "$WORK/cmake-99" -B "$WORK/cmake-99/build" -DCMAKE_PREFIX_PATH="$PREFIX"
else
    bad "cmake is not installed"
fi

# --- a relative PREFIX is the caller's ----------------------------------------------------
# The build above is reused (MNEMO_SKIP_BUILD): only the path handling is tested.
if [ -z "${MNEMO_INSTALL_PREFIX:-}" ]; then
    mkdir -p "$WORK/caller"
    CALLER=$(cd "$WORK/caller" && pwd -P)
    check "scripts/install rel-prefix, run from another directory" \
        bash -c "cd '$WORK/caller' && MNEMO_SKIP_BUILD=1 '$ROOT/scripts/install' rel-prefix"
    check "the relative PREFIX is under the caller's directory" \
        test -f "$WORK/caller/rel-prefix/lib/libmnemo.so.$VERSION" -a ! -e "$ROOT/rel-prefix"
    check "its pkg-config prefix is absolute" \
        grep -qx "prefix=$CALLER/rel-prefix" "$WORK/caller/rel-prefix/lib/pkgconfig/mnemo.pc"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
