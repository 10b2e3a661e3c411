#!/usr/bin/env bash
# `pip install ./bindings/python` into a fresh venv (target/pkg-venv), then runs
# examples/quickstart.py from a temp dir outside the repository without MNEMO_LIB: the
# installed package must find the libmnemo.so it bundles. Prints "N passed, N failed".
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VENV=$ROOT/target/pkg-venv
WORK=$(mktemp -d /tmp/mnemo-pip-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() {
    local what=$1
    shift
    if "$@" >"$WORK/last.log" 2>&1; then ok "$what"; else bad "$what"; sed 's/^/     /' "$WORK/last.log"; fi
}

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
rm -rf "$VENV"
check "fresh venv" python3 -m venv "$VENV"
unset MNEMO_LIB PYTHONPATH
# MNEMO_PACKAGE_LIB=path bundles that library (setup.py's MNEMO_LIB) instead of a release
# build: `make test` passes its debug build, `make test-full` builds the release one.
bundle=(env)
[ -n "${MNEMO_PACKAGE_LIB:-}" ] && bundle=(env MNEMO_LIB="$MNEMO_PACKAGE_LIB")
check "pip install ./bindings/python" "${bundle[@]}" "$VENV/bin/pip" install -q --disable-pip-version-check ./bindings/python
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
check "libmnemo.so bundled in the package" test -f "$SITE/mnemo/libmnemo.so"
check "py.typed installed" test -f "$SITE/mnemo/py.typed"
check "package version is Cargo.toml's ($VERSION)" \
    test "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mnemo"))')" = "$VERSION"

# From outside the repository, with nothing pointing at it.
mkdir -p "$WORK/elsewhere/app"
cp bindings/python/examples/quickstart.py "$WORK/elsewhere/app/"
cd "$WORK/elsewhere/app" || exit 1
check "the bundled library is the one loaded" env -u MNEMO_LIB "$VENV/bin/python" -c \
    "import mnemo, mnemo._native as n, sys; sys.exit(0 if n.LIBRARY_PATH == '$SITE/mnemo/libmnemo.so' and mnemo.version() == '$VERSION' else n.LIBRARY_PATH)"
check "examples/quickstart.py runs from $WORK/elsewhere/app, no MNEMO_LIB" \
    env -u MNEMO_LIB "$VENV/bin/python" quickstart.py
cd "$ROOT" || exit 1

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
