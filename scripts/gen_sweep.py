#!/usr/bin/env python3
"""Generates the header-driven bad-input sweep of mnemo's C ABI.

Reads include/mnemo.h (no hand list of functions: a function added to the header is swept
the next time this runs) and writes target/sweep/sweep.c, a C11 program that, for every
exported function, calls it once with valid arguments (the baseline) and then:

  - with NULL in each pointer parameter in turn (the others valid),
  - with invalid UTF-8 ("\\xff\\xfe") in each `const char *` parameter in turn,
  - with "" in each `const char *` parameter in turn,

and checks the header's and /work/shared/API.md's conventions:

  - NULL where the doc does not make the parameter optional, and invalid UTF-8, give
    MNEMO_STATUS_INVALID_ARGUMENT with a message from mnemo_last_error_message();
  - a parameter documented as optional/nullable may take NULL, and "" may be valid (unless
    the doc says "1 to N bytes" or "non-empty"): then OK is accepted, but the call must not
    crash, must not panic (MNEMO_STATUS_INTERNAL) and must leave its outputs consistent;
  - a void function taking a pointer must document NULL as a no-op, and is called with it;
  - every out-parameter set to a non-NULL sentinel before a failed call is NULL after it,
    and set to a fresh value after a successful one (which the sweep then frees); an
    `int *` out-parameter (a file descriptor) is -1 after a failed call and >= 0 after a
    successful one;
  - a caller's buffer (`char *` followed by its `size_t cap`, filled with 'x' before the
    call) holds "" after a failure and, after a success, a string whose length the
    `size_t *` out-parameter reports; no byte after the string's NUL changes; that length
    is 0 after a failure (other than MNEMO_STATUS_BUFFER_TOO_SMALL);
  - OK comes with no message, a failure with a non-empty one;
  - a destroy callback runs once for a subscription that succeeded, never for a call
    refused with MNEMO_STATUS_INVALID_ARGUMENT.

Each case runs in a forked child with fresh fixtures (instance, users, database, ...), so a
crash or a leak is reported against the exact call and the other cases still run. A
function or parameter this script cannot classify becomes a case that always FAILS with a
message saying what to teach this script: new functions are never skipped silently.

Usage: scripts/gen_sweep.py [--header include/mnemo.h] [--out target/sweep/sweep.c]
"""

import argparse
import os
import re
import sys

BAD_UTF8 = "BAD_UTF8"
EMPTY = "EMPTY"
NULL = "NULL"
BASELINE = "BASELINE"

# ---------------------------------------------------------------------------------------
# Header parsing
# ---------------------------------------------------------------------------------------


class Param:
    def __init__(self, index, text):
        self.index = index
        self.text = " ".join(text.split())
        self.name = None
        self.ctype = None  # the declaration's type, for a C local variable
        self.base = None  # "char", "mnemo_user", "void", "uint32_t", ...
        self.const = False
        self.depth = 0  # pointer depth
        self.fnptr = None  # (ret, args) of an inline function-pointer parameter
        self.kind = None  # see classify_param
        self.problem = None


class Function:
    def __init__(self, name, ret, params, doc):
        self.name = name
        self.ret = ret
        self.params = params
        self.doc = doc
        self.problems = []


def strip_doc(raw):
    lines = []
    for line in raw.splitlines():
        line = line.strip()
        line = re.sub(r"^/\*\*", "", line)
        line = re.sub(r"\*/$", "", line)
        line = re.sub(r"^\*\s?", "", line)
        lines.append(line.rstrip())
    return "\n".join(lines).strip()


def statements(text):
    """Yields (statement, doc comment before it) for the header's top-level statements."""
    i, n = 0, len(text)
    doc, stmt, depth = "", [], 0
    at_line_start = True
    while i < n:
        c = text[i]
        if text.startswith("/**", i) and not text.startswith("/**/", i):
            j = text.index("*/", i + 3)
            doc = strip_doc(text[i : j + 2])
            i = j + 2
            continue
        if text.startswith("/*", i):
            i = text.index("*/", i + 2) + 2
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "#" and at_line_start and not "".join(stmt).strip():
            doc = ""  # a macro's doc comment is not the next function's
            while True:  # a preprocessor line, with its continuations
                j = text.find("\n", i)
                if j < 0:
                    i = n
                    break
                if text[j - 1] == "\\":
                    i = j + 1
                    continue
                i = j
                break
            continue
        if c == "\n":
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if depth == 0 and c in "{}":
            stmt = []  # extern "C" { ... }
            i += 1
            continue
        if depth == 0 and c == ";":
            s = " ".join("".join(stmt).split())
            if s:
                yield s, doc
            stmt, doc = [], ""
            i += 1
            continue
        stmt.append(c)
        i += 1


def split_top(s, sep=","):
    parts, depth, cur = [], 0, []
    for c in s:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_type(t):
    """'const struct mnemo_database *' -> (base, const, depth)."""
    t = t.replace("*", " * ")
    words = t.split()
    const = "const" in words[: words.index("*")] if "*" in words else "const" in words
    depth = words.count("*")
    rest = [w for w in words if w not in ("const", "struct", "*", "enum")]
    base = " ".join(rest)
    return base, const, depth


def parse_param(index, text):
    p = Param(index, text)
    m = re.match(r"^(?P<ret>.+?)\(\s*\*\s*(?P<name>\w+)\s*\)\s*\((?P<args>.*)\)$", p.text)
    if m:
        p.name = m.group("name")
        p.fnptr = (m.group("ret").strip(), m.group("args").strip())
        p.ctype = None
        p.base, p.const, p.depth = "fnptr", False, 0
        return p
    m = re.match(r"^(?P<type>.*?[\s*])(?P<name>\w+)$", p.text)
    if not m:
        p.name = "arg%d" % index
        p.problem = "cannot parse parameter %r" % p.text
        return p
    p.name = m.group("name")
    p.ctype = " ".join(m.group("type").split())
    p.base, p.const, p.depth = parse_type(p.ctype)
    return p


class Header:
    def __init__(self, text):
        self.handles = set()  # "mnemo_user", ...
        self.callbacks = {}  # typedef name -> (ret, args)
        self.scalars = set()  # typedefs of integers, e.g. mnemo_status
        self.functions = []
        self.unparsed = []  # statements naming mnemo_ functions we could not parse
        for stmt, doc in statements(text):
            self._statement(stmt, doc)

    def _statement(self, s, doc):
        m = re.match(r"^typedef struct (\w+) (\w+)$", s)
        if m and m.group(1) == m.group(2):
            self.handles.add(m.group(1))
            return
        m = re.match(r"^typedef (?P<ret>.+?)\(\s*\*\s*(?P<name>\w+)\s*\)\s*\((?P<args>.*)\)$", s)
        if m:
            self.callbacks[m.group("name")] = (m.group("ret").strip(), m.group("args").strip())
            return
        m = re.match(r"^typedef (?:u?int\d+_t|size_t|int|unsigned|bool) (\w+)$", s)
        if m:
            self.scalars.add(m.group(1))
            return
        if s.startswith("typedef"):
            return
        m = re.match(r"^(?P<attrs>(?:MNEMO_\w+\s+)*)(?P<ret>[\w\s\*]+?)\s*\b(?P<name>mnemo_\w+)\s*\((?P<params>.*)\)$", s)
        if m:
            params_text = m.group("params").strip()
            parts = [] if params_text in ("", "void") else split_top(params_text)
            params = [parse_param(i, t) for i, t in enumerate(parts)]
            ret = " ".join(m.group("ret").split())
            self.functions.append(Function(m.group("name"), ret, params, doc))
            return
        if re.search(r"\bmnemo_\w+\s*\(", s):
            self.unparsed.append(s)


# ---------------------------------------------------------------------------------------
# Reading the doc comments
# ---------------------------------------------------------------------------------------


def doc_units(doc):
    """Bullets ("- `x`: ...", with their continuation lines) and paragraphs."""
    units, cur = [], []
    for line in doc.splitlines():
        s = line.strip()
        if not s:
            if cur:
                units.append(" ".join(cur))
            cur = []
        elif s.startswith("- "):
            if cur:
                units.append(" ".join(cur))
            cur = [s[2:]]
        else:
            cur.append(s)
    if cur:
        units.append(" ".join(cur))
    return units


def about(doc, name):
    """The text the doc says about parameter `name`: its bullet, and sentences starting
    with `name`."""
    out = []
    tick = "`%s`" % name
    for unit in doc_units(doc):
        if unit.startswith(tick):
            if re.match(r"^`%s`\s*:" % re.escape(name), unit):
                out.append(unit)
                continue
        for sentence in re.split(r"(?<=[.;])\s+(?=[A-Z`])", unit):
            if sentence.startswith(tick):
                out.append(sentence)
    return " ".join(out)


NULLABLE = re.compile(
    r"\boptional\b|\bnullable\b|may be NULL|\bNULL for\b|\(NULL\b|\bNULL:|NULL makes|NULL means|"
    r"NULL is a no-op|NULL \(no-op\)"
)
NON_EMPTY = re.compile(r"\b1 to [\d ]+bytes|\bnon-empty\b|\bat least 1 byte")


def nullable(fn, p):
    text = about(fn.doc, p.name)
    if re.search(r"\brequired\b", text):
        return False
    return bool(NULLABLE.search(text))


def must_be_non_empty(fn, p):
    return bool(NON_EMPTY.search(about(fn.doc, p.name)))


def null_is_noop(fn):
    flat = " ".join(fn.doc.split())
    return bool(re.search(r"NULL is a no-op|NULL \(no-op\)|may be NULL \(no-op\)", flat))


def documented_statuses(fn, by_name, seen=None):
    """The statuses the doc says `fn` returns, following "Returns the statuses of `f`" and
    "Statuses as for `f`"; None when the doc names none (then any status is accepted)."""
    seen = seen or set()
    seen.add(fn.name)
    flat = " ".join(fn.doc.split())
    found = set(re.findall(r"\bMNEMO_STATUS_[A-Z_]+\b", flat))
    for ref in re.findall(r"[Ss]tatuses (?:of|as for) `(mnemo_\w+)`", flat):
        if ref in by_name and ref not in seen:
            found |= documented_statuses(by_name[ref], by_name, seen) or set()
    return found or None


def consumption(fn, p, handle_params):
    """None, "always" or "success": whether the call takes ownership of handle `p`."""
    flat = " ".join(fn.doc.split())
    units = doc_units(fn.doc)
    summary = units[0] if units and not fn.doc.lstrip().startswith("- ") else ""
    text = about(fn.doc, p.name)
    n = re.escape(p.name)
    hit = (
        re.search(r"[Cc]onsumes?\s+`%s`" % n, flat)
        or re.search(r"\bconsumed\b", text)
        or re.search(r"[Ff]rees\s+`%s`" % n, flat)
        or re.search(r"do not use\s+`%s`" % n, flat)
        # "Logs the user out: ... frees the handle": in the summary, not in a bullet about
        # an out-parameter ("end it with `mnemo_txn_commit` ... (each frees it)").
        or (len(handle_params) == 1 and re.search(r"\b[Ff]rees (it|the handle)\b", summary))
    )
    if fn.ret == "void" and len(handle_params) == 1 and null_is_noop(fn):
        if re.search(r"_(free|abort)$", fn.name) or hit:
            return "always"
    if not hit:
        return None
    return "always" if re.search(r"on failure", flat) else "success"


# ---------------------------------------------------------------------------------------
# Classifying parameters and choosing valid values
# ---------------------------------------------------------------------------------------

# Handle types the C fixtures know how to make: world slot (W.<slot>, built by need_<slot>()).
HANDLE_SLOTS = {
    "mnemo_backend": "backend",
    "mnemo_instance": "instance",
    "mnemo_user": "user",
    "mnemo_database": "db",
    "mnemo_txn": "txn",
    "mnemo_subscription": "subscription",
    "mnemo_events": "events",
    "mnemo_sync": "sync",
    "mnemo_cursor": "cursor",
}

# Valid integer values, by parameter name (integers are never swept, only supplied).
INT_VALUES = {
    "m_kib": "19456",  # the Argon2id defaults, the smallest accepted
    "t": "2",
    "p": "1",
    "timeout_ms": "1000",
    "limit": "10",  # a page of scanned keys
    "cap": "64",  # a caller's buffer: the size of the one the sweep passes (BUF_SIZE)
}

INTEGER_TYPES = {"uint8_t", "uint16_t", "uint32_t", "uint64_t", "int8_t", "int16_t", "int32_t",
                 "int64_t", "size_t", "int", "unsigned", "bool"}


def classify_param(header, p):
    if p.problem:
        return
    if p.fnptr:
        p.kind = "callback"
    elif p.base in header.callbacks and p.depth == 0:
        p.kind = "callback"
    elif p.base in header.handles and p.depth == 1:
        p.kind = "handle_in"
    elif p.base in header.handles and p.depth == 2 and not p.const:
        p.kind = "handle_out"
    elif p.base == "char" and p.depth == 1 and p.const:
        p.kind = "str_in"
    elif p.base == "char" and p.depth == 2 and not p.const:
        p.kind = "str_out"
    elif p.base == "char" and p.depth == 1:
        p.kind = "str_owned"  # a string mnemo returned, given back (mnemo_string_free)
    elif p.base == "int" and p.depth == 1 and not p.const:
        p.kind = "int_out"  # a file descriptor: -1 on failure
    elif p.base == "size_t" and p.depth == 1 and not p.const:
        p.kind = "len_out"  # a length: 0 on failure
    elif p.base == "void" and p.depth == 1:
        p.kind = "user_data"
    elif p.depth == 0 and (p.base in INTEGER_TYPES or p.base in header.scalars):
        p.kind = "int"
    else:
        p.problem = "parameter `%s` has a type the sweep does not know: %s" % (p.name, p.text)
        return
    if p.kind in ("handle_in", "handle_out") and p.base not in HANDLE_SLOTS:
        p.problem = ("parameter `%s`: handle type %s has no fixture in scripts/gen_sweep.py "
                     "(HANDLE_SLOTS and need_*() in the C prelude)" % (p.name, p.base))


def classify_buffers(fn):
    """A `char *` followed by a `size_t cap` is a buffer the caller provides, not a string
    mnemo returned."""
    for p, nxt in zip(fn.params, fn.params[1:]):
        if p.kind == "str_owned" and nxt.kind == "int" and nxt.base == "size_t" and nxt.name == "cap":
            p.kind = "buf_out"


def is_pointer(p):
    return p.kind in ("handle_in", "handle_out", "str_in", "str_out", "str_owned", "callback",
                      "user_data", "int_out", "len_out", "buf_out")


def callback_sig(header, p):
    return p.fnptr if p.fnptr else header.callbacks[p.base]


def is_destroy_cb(header, fn, p):
    """A `void (*)(void *)` callback next to a `void *` parameter releases that user data."""
    ret, args = callback_sig(header, p)
    return (ret == "void" and re.fullmatch(r"void\s*\*\s*\w*", args) is not None
            and any(q.kind == "user_data" for q in fn.params))


def str_value(fn, p):
    """(C expression, guard, shown): a valid value for a `const char *` parameter. The guard
    says the expression may be NULL when a fixture failed (the case then stops); `shown` is
    how the case's name prints it. (None, problem, None) when no value is known."""
    n, f = p.name, fn.name
    literals = {
        "url": "memory:",
        "store": "s",  # the fixture database holds s/k = 1
        "key": "k",
        "json": "1",
        "pointer": "/a",
        "permission": "read",
        "display_name": "laptop",
        "prefix": "k",  # keys the fixture store holds start with it
        "after": "a",  # a key sorting before the fixture store's keys
        "limits_json": "{}",  # changes no limit
        "bound_addr": "127.0.0.1:1",  # no listener there: NOT_FOUND
    }
    if n in literals:
        return c_string(literals[n]), False, c_string(literals[n])
    if n == "name":
        return "need_db_name()", True, '"d"'  # the fixture database's name (it exists)
    if n == "username":
        if "create" in f:
            return '"carol"', False, '"carol"'  # a new name
        if "login" in f:
            return "need_alice()", True, '"alice"'  # the passwordless fixture user
        return "need_bob()", True, '"bob"'  # another user (admin functions act on others)
    if n in ("password", "old_pw", "new_pw", "pw") or n.endswith("_password"):
        if not nullable(fn, p):
            return None, "password parameter `%s` is not documented as nullable" % n, None
        return "NULL", False, "NULL"  # passwordless: no Argon2 (slow under valgrind)
    if n in ("db_id", "database_id"):
        return "need_db_id()", True, "<db id>"
    if n in ("pubkey", "public_key"):
        return "need_pubkey()", True, "<device id>"  # granted "read" on the fixture database
    if n == "addr" and "advertise" in f:
        return '"127.0.0.1:7000"', False, '"127.0.0.1:7000"'  # advertised: a real port
    if n in ("addr", "listen_addr", "bind_addr"):
        return '"127.0.0.1:0"', False, '"127.0.0.1:0"'
    if n == "ticket":
        return "need_ticket()", True, "<ticket>"  # for the fixture database
    if n == "request_id":
        return '"req-0000000000000000"', False, '"req-0000000000000000"'  # none such
    if n in ("peer_addr", "peer") or n.startswith("peer_"):
        return '"127.0.0.1:1"', False, '"127.0.0.1:1"'  # a closed local port
    return None, "no valid value known for `const char *%s`" % n, None


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------
# Generating the C program
# ---------------------------------------------------------------------------------------

PRELUDE = r'''/* Generated by scripts/gen_sweep.py from include/mnemo.h. Do not edit: regenerate.
 *
 * The header-driven bad-input sweep of mnemo's C ABI: every exported function with NULL in
 * each pointer parameter, invalid UTF-8 and "" in each string parameter, one at a time.
 * Each case runs in a forked child with fresh fixtures; see scripts/gen_sweep.py.
 *
 * Usage: sweep [--no-fork] [--verbose] [SUBSTRING...]  (runs the cases whose name contains
 * one of the substrings; all by default). Prints "sweep: N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mnemo.h"

/* Fixtures and callbacks a header may not need. */
#if defined(__GNUC__) || defined(__clang__)
#define SWEEP_UNUSED __attribute__((unused))
#else
#define SWEEP_UNUSED
#endif

static const char BAD_UTF8[] = "\xff" "\xfe";
static char sentinel_object[16];
#define SENTINEL ((void *)sentinel_object)

/* The case being run, and whether it failed. */
static const char *case_name = "";
static int case_failed = 0;
static int verbose = 0;

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s: ", case_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    case_failed = 1;
}

/* ---- fixtures: built on demand, fresh in every case ---------------------------------- */

static struct {
    mnemo_backend *backend;
    mnemo_instance *instance;
    mnemo_user *user;
    mnemo_database *db;
    mnemo_txn *txn;
    mnemo_subscription *subscription;
    mnemo_events *events;
    mnemo_sync *sync;
    mnemo_cursor *cursor;
    int alice, bob, granted, sync_enabled;
    char *db_id;
    char *device_id;
    char *ticket;
} W;

static int fixture(mnemo_status status, const char *call) {
    if (status == MNEMO_STATUS_OK) return 1;
    const char *msg = mnemo_last_error_message();
    fail("fixture %s returned %s (%s)", call, mnemo_status_str(status), msg ? msg : "no message");
    return 0;
}

SWEEP_UNUSED static void noop_change(void *user_data, const char *db_id, const char *entry_id, int32_t remote) {
    (void)user_data;
    (void)db_id;
    (void)entry_id;
    (void)remote;
}

/* Counts the calls of a destroy callback in a case. */
static int destroy_calls = 0;
static int destroy_marker = 0;
SWEEP_UNUSED static void counting_destroy(void *user_data) {
    (void)user_data;
    destroy_calls++;
}

SWEEP_UNUSED static mnemo_backend *need_backend(void) {
    if (!W.backend) fixture(mnemo_backend_open("memory:", &W.backend), "mnemo_backend_open(\"memory:\")");
    return W.backend;
}

SWEEP_UNUSED static mnemo_instance *need_instance(void) {
    if (!W.instance) {
        mnemo_backend *backend = NULL;
        if (fixture(mnemo_backend_open("memory:", &backend), "mnemo_backend_open(\"memory:\")"))
            fixture(mnemo_instance_open(backend, &W.instance), "mnemo_instance_open");
    }
    return W.instance;
}

/* "alice": the first user (the instance admin), passwordless. */
SWEEP_UNUSED static const char *need_alice(void) {
    if (!W.alice && need_instance())
        W.alice = fixture(mnemo_instance_create_user(W.instance, "alice", NULL),
                          "mnemo_instance_create_user(\"alice\", NULL)");
    return W.alice ? "alice" : NULL;
}

/* "bob": another passwordless user. */
SWEEP_UNUSED static const char *need_bob(void) {
    if (!W.bob && need_alice())
        W.bob = fixture(mnemo_instance_create_user(W.instance, "bob", NULL),
                        "mnemo_instance_create_user(\"bob\", NULL)");
    return W.bob ? "bob" : NULL;
}

/* alice's session. */
SWEEP_UNUSED static mnemo_user *need_user(void) {
    if (!W.user && need_alice())
        fixture(mnemo_instance_login(W.instance, "alice", NULL, &W.user), "mnemo_instance_login(\"alice\")");
    return W.user;
}

/* alice's database "d", holding s/k = 1. */
SWEEP_UNUSED static mnemo_database *need_db(void) {
    if (!W.db && need_user()) {
        if (fixture(mnemo_user_create_db(W.user, "d", &W.db), "mnemo_user_create_db(\"d\")"))
            fixture(mnemo_db_set(W.db, "s", "k", "1"), "mnemo_db_set(\"s\", \"k\", \"1\")");
    }
    return W.db;
}

SWEEP_UNUSED SWEEP_UNUSED static const char *need_db_name(void) {
    return need_db() ? "d" : NULL;
}

static const char *need_db_id(void) {
    if (!W.db_id && need_db()) fixture(mnemo_db_id(W.db, &W.db_id), "mnemo_db_id");
    return W.db_id;
}

SWEEP_UNUSED static const char *need_device_id(void) {
    if (!W.device_id && need_instance())
        fixture(mnemo_instance_device_id(W.instance, &W.device_id), "mnemo_instance_device_id");
    return W.device_id;
}

/* A real public key with an active "read" grant on the fixture database (so it can be
 * granted again or revoked): the device id. */
SWEEP_UNUSED static const char *need_pubkey(void) {
    if (!W.granted && need_device_id() && need_db())
        W.granted = fixture(mnemo_db_grant(W.db, W.device_id, "read"), "mnemo_db_grant(<device id>, \"read\")");
    return W.granted ? W.device_id : NULL;
}

/* A transaction on the fixture database with one operation (so it can commit). */
SWEEP_UNUSED static mnemo_txn *need_txn(void) {
    if (!W.txn && need_db()) {
        if (fixture(mnemo_db_begin(W.db, &W.txn), "mnemo_db_begin"))
            fixture(mnemo_txn_set(W.txn, "s", "k2", "2"), "mnemo_txn_set(\"s\", \"k2\", \"2\")");
    }
    return W.txn;
}

/* A cursor over the fixture database's store "s" (it holds s/k = 1). */
SWEEP_UNUSED static mnemo_cursor *need_cursor(void) {
    if (!W.cursor && need_db())
        fixture(mnemo_db_cursor(W.db, "s", NULL, NULL, &W.cursor), "mnemo_db_cursor(\"s\")");
    return W.cursor;
}

SWEEP_UNUSED static mnemo_subscription *need_subscription(void) {
    if (!W.subscription && need_db())
        fixture(mnemo_db_subscribe(W.db, noop_change, NULL, NULL, &W.subscription), "mnemo_db_subscribe");
    return W.subscription;
}

/* A watcher on the fixture database with one event pending (so that next returns one). */
SWEEP_UNUSED static mnemo_events *need_events(void) {
    if (!W.events && need_db()) {
        if (fixture(mnemo_db_watch(W.db, &W.events), "mnemo_db_watch"))
            fixture(mnemo_db_set(W.db, "s", "k", "3"), "mnemo_db_set(\"s\", \"k\", \"3\")");
    }
    return W.events;
}

SWEEP_UNUSED /* The instance, with sync enabled (for functions documented to need it). */
SWEEP_UNUSED static mnemo_instance *need_sync_instance(void) {
    if (!W.sync_enabled && need_instance())
        W.sync_enabled = fixture(mnemo_instance_enable_sync(W.instance), "mnemo_instance_enable_sync");
    return W.sync_enabled ? W.instance : NULL;
}

/* A sync handle whose tickets name 127.0.0.1:1 (a closed port: no listener needed). */
static mnemo_sync *need_sync(void) {
    if (!W.sync && need_sync_instance()
        && fixture(mnemo_instance_sync(W.instance, &W.sync), "mnemo_instance_sync"))
        fixture(mnemo_sync_advertise(W.sync, "127.0.0.1:1"), "mnemo_sync_advertise(\"127.0.0.1:1\")");
    return W.sync;
}

/* A ticket for the fixture database. */
SWEEP_UNUSED static const char *need_ticket(void) {
    if (!W.ticket && need_sync() && need_db_id())
        fixture(mnemo_sync_share(W.sync, W.db_id, &W.ticket), "mnemo_sync_share");
    return W.ticket;
}

/* A string mnemo returned, to give back (e.g. to mnemo_string_free). */
SWEEP_UNUSED static char *need_owned_string(void) {
    char *s = NULL;
    if (need_instance()) fixture(mnemo_instance_device_id(W.instance, &s), "mnemo_instance_device_id");
    return s;
}

static void need_owned_string_free(void) {
    mnemo_string_free(need_owned_string());
}

/* ---- checks --------------------------------------------------------------------------- */

enum expect {
    EXPECT_INVALID, /* NULL where required, invalid UTF-8: MNEMO_STATUS_INVALID_ARGUMENT */
    EXPECT_FAILURE, /* "" where the doc requires a non-empty string: any failure */
    EXPECT_ANY,     /* optional NULL, "": OK or a failure, consistent either way */
    EXPECT_BASELINE /* valid arguments: not INVALID_ARGUMENT */
};

/* Whether `st` is among the statuses the function's doc lists (n = 0: no list). */
static int documented(mnemo_status st, const mnemo_status *allowed, int n) {
    if (n == 0) return 1;
    for (int i = 0; i < n; i++)
        if (allowed[i] == st) return 1;
    return 0;
}

static void check_status(const char *call, mnemo_status st, const char *msg, enum expect want,
                         const mnemo_status *allowed, int n_allowed) {
    int has_msg = msg != NULL && msg[0] != '\0';
    if (st != MNEMO_STATUS_INTERNAL && !documented(st, allowed, n_allowed))
        fail("returned %s, which the function's doc does not list (message: %s)", mnemo_status_str(st),
             msg ? msg : "none");
    if (verbose) fprintf(stderr, "note %s -> %s (%s)\n", call, mnemo_status_str(st), msg ? msg : "no message");
    if (st == MNEMO_STATUS_INTERNAL) {
        fail("returned MNEMO_STATUS_INTERNAL (a panic or broken invariant): %s", msg ? msg : "no message");
        return;
    }
    switch (want) {
    case EXPECT_INVALID:
        if (st != MNEMO_STATUS_INVALID_ARGUMENT)
            fail("returned %s, expected MNEMO_STATUS_INVALID_ARGUMENT (message: %s)", mnemo_status_str(st),
                 msg ? msg : "none");
        break;
    case EXPECT_FAILURE:
        if (st == MNEMO_STATUS_OK)
            fail("returned MNEMO_STATUS_OK; the doc requires a non-empty string");
        break;
    case EXPECT_ANY:
        break;
    case EXPECT_BASELINE:
        if (st == MNEMO_STATUS_INVALID_ARGUMENT)
            fail("with valid arguments returned MNEMO_STATUS_INVALID_ARGUMENT (%s): "
                 "the sweep's fixtures are wrong, fix scripts/gen_sweep.py",
                 msg ? msg : "no message");
        break;
    }
    if (st != MNEMO_STATUS_OK && !has_msg)
        fail("returned %s with %s message", mnemo_status_str(st), msg ? "an empty" : "no");
    if (st == MNEMO_STATUS_OK && msg != NULL)
        fail("returned MNEMO_STATUS_OK but mnemo_last_error_message() is \"%s\" (expected NULL)", msg);
}

/* An out-parameter after the call: NULL after a failure, fresh after a success. Returns
 * whether it holds something to free. */
static int check_out(mnemo_status st, const void *out, const char *param) {
    if (st != MNEMO_STATUS_OK) {
        if (out == SENTINEL)
            fail("returned %s but left out-parameter `%s` as it was (expected NULL)", mnemo_status_str(st), param);
        else if (out != NULL)
            fail("returned %s but wrote %p to out-parameter `%s` (expected NULL)", mnemo_status_str(st), out, param);
        return 0;
    }
    if (out == SENTINEL) {
        fail("returned MNEMO_STATUS_OK but did not write out-parameter `%s`", param);
        return 0;
    }
    if (out == NULL) {
        fail("returned MNEMO_STATUS_OK but set out-parameter `%s` to NULL", param);
        return 0;
    }
    return 1;
}

/* The size of the buffers the sweep passes to functions that take one (INT_VALUES["cap"]). */
#define BUF_SIZE 64

/* A caller's buffer after the call (it was filled with 'x'): "" after a failure; after a
 * success, a string of the reported length within BUF_SIZE; nothing changed after its NUL. */
SWEEP_UNUSED static void check_buffer(mnemo_status st, const char *buf, const char *param, size_t len) {
    const char *nul = (const char *)memchr(buf, '\0', BUF_SIZE);
    size_t end = nul ? (size_t)(nul - buf) : BUF_SIZE;
    if (st != MNEMO_STATUS_OK && end != 0)
        fail("returned %s but buffer `%s` does not hold \"\" (expected it cleared)", mnemo_status_str(st), param);
    if (st == MNEMO_STATUS_OK && (nul == NULL || end != len))
        fail("returned MNEMO_STATUS_OK but buffer `%s` holds %zu bytes before a NUL and the length says %zu",
             param, end, len);
    for (size_t i = end + 1; i < BUF_SIZE; i++)
        if (buf[i] != 'x') {
            fail("wrote byte %zu of buffer `%s`, after the string's NUL", i, param);
            break;
        }
}

SWEEP_UNUSED static void check_owned_string(const char *call, const char *s, const char *param) {
    size_t n = strlen(s); /* valgrind checks the bytes are there */
    if (n == 0 && verbose) fprintf(stderr, "note %s: `%s` is empty\n", call, param);
}

/* The destroy callback: once for a subscription that was made (freed since), never for a
 * call refused as invalid. */
SWEEP_UNUSED static void check_destroy(mnemo_status st) {
    if ((st == MNEMO_STATUS_OK || st == MNEMO_STATUS_INTERNAL) && destroy_calls != 1)
        fail("returned %s, then destroy(user_data) ran %d times by the end (expected once)",
             mnemo_status_str(st), destroy_calls);
    if (st == MNEMO_STATUS_INVALID_ARGUMENT && destroy_calls != 0)
        fail("was refused as invalid but destroy(user_data) ran %d times (expected never)", destroy_calls);
}

static void copy_message(char *buf, size_t size, const char **msg) {
    if (*msg) {
        snprintf(buf, size, "%s", *msg);
        *msg = buf;
    }
}

'''

POSTLUDE = r'''
/* ---- the runner ----------------------------------------------------------------------- */

static void world_free(void);

/* A child's exit status when its checks failed (valgrind's --error-exitcode is another). */
#define CHECKS_FAILED 3

/* Runs the common fixtures once in the parent before forking: under valgrind, code is
 * translated once per process, so children inherit the translations instead of redoing them
 * (this makes the valgrind run several times faster). Nothing that starts a thread (a
 * subscription, a listener, tracking): the parent stays single-threaded for fork(). */
static void warm_up(void) {
    mnemo_backend *backend = NULL;
    case_name = "warm-up";
    memset(&W, 0, sizeof W);
    need_txn();
    need_pubkey();
    need_bob();
    need_sync();
    need_owned_string_free();
    if (mnemo_backend_open(NULL, &backend) == MNEMO_STATUS_OK) mnemo_backend_free(backend);
    world_free();
    /* fork() copies only this thread: say so if mnemo left another running. */
    DIR *tasks = opendir("/proc/self/task");
    if (tasks) {
        int threads = 0;
        struct dirent *e;
        while ((e = readdir(tasks)) != NULL) threads += e->d_name[0] != '.';
        closedir(tasks);
        if (threads > 1) fprintf(stderr, "sweep: note: %d threads alive before forking\n", threads);
    }
}

static int run_one(int i) {
    case_name = cases[i].name;
    case_failed = 0;
    destroy_calls = 0;
    memset(&W, 0, sizeof W);
    if (verbose) fprintf(stderr, "run  %s\n", case_name);
    cases[i].run();
    world_free();
    if (cases[i].after) cases[i].after();
    return case_failed;
}

static int selected(int i, int argc, char **argv, int first) {
    int any = 0;
    for (int a = first; a < argc; a++) {
        any = 1;
        if (strstr(cases[i].name, argv[a])) return 1;
    }
    return !any;
}

int main(int argc, char **argv) {
    int use_fork = 1, first = 1, passed = 0, failed = 0, tried = 0;
    int by_kind[5] = {0, 0, 0, 0, 0};
    while (first < argc && argv[first][0] == '-' && argv[first][1] == '-') {
        if (strcmp(argv[first], "--no-fork") == 0) use_fork = 0;
        else if (strcmp(argv[first], "--verbose") == 0) verbose = 1;
        else {
            fprintf(stderr, "usage: %s [--no-fork] [--verbose] [SUBSTRING...]\n", argv[0]);
            return 2;
        }
        first++;
    }
    if (use_fork) warm_up();
    for (int i = 0; i < NCASES; i++) {
        if (!selected(i, argc, argv, first)) continue;
        tried++;
        by_kind[cases[i].kind]++;
        int bad = 0;
        if (!use_fork) {
            bad = run_one(i);
        } else {
            fflush(stdout);
            fflush(stderr);
            pid_t pid = fork();
            if (pid < 0) {
                perror("fork");
                return 2;
            }
            if (pid == 0) {
                alarm(120); /* a hung call ends as SIGALRM */
                int rc = run_one(i);
                fflush(stdout);
                fflush(stderr);
                exit(rc ? CHECKS_FAILED : 0);
            }
            int wstatus = 0;
            while (waitpid(pid, &wstatus, 0) < 0) {}
            if (WIFSIGNALED(wstatus)) {
                int sig = WTERMSIG(wstatus);
                fprintf(stderr, "FAIL %s: %s (signal %d)\n", cases[i].name,
                        sig == SIGALRM ? "timed out after 120 s" : "crashed", sig);
                bad = 1;
            } else if (WEXITSTATUS(wstatus) == CHECKS_FAILED) {
                bad = 1; /* the child printed why */
            } else if (WEXITSTATUS(wstatus) != 0) {
                bad = 1; /* valgrind's --error-exitcode: its report is above */
                fprintf(stderr, "FAIL %s: exit status %d (valgrind errors or leaks, reported above)\n",
                        cases[i].name, WEXITSTATUS(wstatus));
            }
        }
        if (bad) failed++;
        else passed++;
    }
    printf("sweep: %d functions in the header: %d swept with bad input, %d without pointer parameters, "
           "%d that the generator cannot classify\n",
           NFUNCTIONS, NSWEPT, NFUNCTIONS - NSWEPT - NUNCLASSIFIED, NUNCLASSIFIED);
    printf("sweep: ran %d cases: %d bad-input cases (function, parameter, bad value): "
           "%d NULL, %d invalid UTF-8, %d empty string; %d baseline calls with valid arguments; "
           "%d unclassified\n",
           tried, by_kind[1] + by_kind[2] + by_kind[3], by_kind[1], by_kind[2], by_kind[3], by_kind[0],
           by_kind[4]);
    printf("sweep: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
'''

UNCLASSIFIED = "UNCLASSIFIED"
KIND_INDEX = {BASELINE: 0, NULL: 1, BAD_UTF8: 2, EMPTY: 3, UNCLASSIFIED: 4}


class Gen:
    def __init__(self, header):
        self.h = header
        self.out = []
        self.cases = []  # (name, function, after function or None, kind)
        self.destructors = {}  # handle type -> (function name, returns status)
        self.swept = 0
        self.unclassified = 0
        self.emitted = set()
        self.by_name = {fn.name: fn for fn in header.functions}

    # -- destructors, derived from the header -------------------------------------------

    def find_destructors(self):
        for t in sorted(self.h.handles):
            best = None
            for fn in self.h.functions:
                hp = [p for p in fn.params if p.kind == "handle_in"]
                if len(fn.params) != 1 or len(hp) != 1 or hp[0].base != t:
                    continue
                if consumption(fn, hp[0], hp) is None:
                    continue
                score = (fn.ret == "void", fn.name.endswith("_free"))
                if best is None or score > best[0]:
                    best = (score, fn)
            if best:
                fn = best[1]
                self.destructors[t] = (fn.name, fn.ret != "void")

    def emit_destructors(self):
        o = self.out
        o.append("/* ---- destructors, found in the header ------------------------------------- */\n")
        for t, (name, status) in sorted(self.destructors.items()):
            o.append("static void destroy_%s(struct %s *h) {" % (t, t))
            if status:
                o.append("    if (!h) return;")
                o.append("    mnemo_status st = %s(h);" % name)
                o.append("    if (st != MNEMO_STATUS_OK) {")
                o.append("        const char *msg = mnemo_last_error_message();")
                o.append('        fail("cleanup %s returned %%s (%%s)", mnemo_status_str(st), msg ? msg : "no message");' % name)
                o.append("    }")
            else:
                o.append("    %s(h);" % name)
            o.append("}\n")
        o.append("static void world_free(void) {")
        # Leaves first: what depends on a handle goes before it.
        for slot_type in ("mnemo_events", "mnemo_subscription", "mnemo_cursor", "mnemo_txn", "mnemo_sync", "mnemo_database",
                          "mnemo_user", "mnemo_instance", "mnemo_backend"):
            slot = HANDLE_SLOTS[slot_type]
            if slot_type in self.destructors:
                o.append("    destroy_%s(W.%s);" % (slot_type, slot))
            else:
                o.append('    if (W.%s) fail("no destructor found in the header for %s");' % (slot, slot_type))
        o.append("    mnemo_string_free(W.db_id);")
        o.append("    mnemo_string_free(W.ticket);")
        o.append("    mnemo_string_free(W.device_id);")
        o.append("    memset(&W, 0, sizeof W);")
        o.append("}\n")

    def emit_callbacks(self):
        o = self.out
        o.append("/* ---- no-op callbacks, one per callback type in the header ------------------ */\n")
        for name, (ret, args) in sorted(self.h.callbacks.items()):
            o.append(self.noop_fn("noop_" + name, ret, args))

    def noop_fn(self, fname, ret, args):
        parts = [] if args in ("", "void") else split_top(args)
        decl, uses = [], []
        for i, a in enumerate(parts):
            m = re.match(r"^(.*?[\s*])(\w+)$", a)
            if m and m.group(2) not in ("int", "char", "void", "bool"):
                decl.append(a)
                uses.append(m.group(2))
            else:
                decl.append("%s a%d" % (a, i))
                uses.append("a%d" % i)
        body = "".join("    (void)%s;\n" % u for u in uses)
        if ret != "void":
            body += "    return (%s){0};\n" % ret
        return "SWEEP_UNUSED static %s %s(%s) {\n%s}\n" % (ret, fname, ", ".join(decl) or "void", body)

    # -- cases ---------------------------------------------------------------------------

    def add_problem_case(self, fn, problem):
        cname = "%s: cannot classify" % fn.name
        cid = "case_%d" % len(self.cases)
        msg = ("%s cannot be swept: %s. Teach scripts/gen_sweep.py about it." % (fn.name, problem))
        self.out.append("static void %s(void) {\n    fail(%s);\n}\n" % (cid, c_string(msg).replace("%", "%%")))
        self.cases.append((cname, cid, None, UNCLASSIFIED))
        self.unclassified += 1
        print("gen_sweep: %s" % msg, file=sys.stderr)

    def problems_of(self, fn):
        problems = list(fn.problems)
        for p in fn.params:
            if p.problem:
                problems.append(p.problem)
        if problems:
            return problems
        pointers = [p for p in fn.params if is_pointer(p)]
        if fn.ret == "void":
            for p in pointers:
                if not (null_is_noop(fn) or nullable(fn, p)):
                    problems.append("void function: its doc does not say NULL `%s` is a no-op" % p.name)
        elif fn.ret != "mnemo_status" and pointers:
            problems.append("returns %s, not mnemo_status, yet takes pointers" % fn.ret)
        for p in fn.params:
            if p.kind == "int" and p.base not in self.h.scalars and p.name not in INT_VALUES and p.base != "mnemo_status":
                problems.append("no valid value known for integer parameter `%s`" % p.name)
            if p.kind == "str_in":
                v, extra, _ = str_value(fn, p)
                if v is None:
                    problems.append(extra)
            if p.kind == "handle_out" and p.base not in self.destructors:
                problems.append("out-parameter `%s`: no destructor for %s in the header" % (p.name, p.base))
            if p.kind == "callback" and not p.fnptr and p.base not in self.h.callbacks:
                problems.append("unknown callback type %s" % p.base)
        return problems

    def gen_function(self, fn):
        problems = self.problems_of(fn)
        if problems:
            self.add_problem_case(fn, "; ".join(problems))
            return
        pointers = [p for p in fn.params if is_pointer(p)]
        if fn.ret == "void":
            # Only NULL where the doc makes it a no-op: the other values would free fixtures.
            for p in pointers:
                self.gen_case(fn, p, NULL)
            if pointers:
                self.swept += 1
            return
        self.gen_case(fn, None, BASELINE)
        if not pointers or fn.ret != "mnemo_status":
            return
        self.swept += 1
        for p in pointers:
            self.gen_case(fn, p, NULL)
        for p in fn.params:
            if p.kind == "str_in":
                self.gen_case(fn, p, BAD_UTF8)
                self.gen_case(fn, p, EMPTY)

    def gen_case(self, fn, bad, mode):
        cid = "case_%d" % len(self.cases)
        o = []
        status_fn = fn.ret == "mnemo_status"
        handle_params = [p for p in fn.params if p.kind == "handle_in"]
        args, shown, outs, consumed, destroy_passed = [], [], [], [], False
        int_outs, len_outs, bufs = [], [], []
        after = None
        o.append("static void %s(void) {" % cid)
        for p in fn.params:
            v = "a%d" % p.index
            under_test = bad is not None and p.name == bad.name
            if p.kind == "handle_in":
                slot = HANDLE_SLOTS[p.base]
                if under_test:
                    o.append("    %s %s = NULL;" % (p.ctype, v))
                    shown.append("NULL")
                else:
                    need = slot
                    if slot == "instance" and "MNEMO_STATUS_SYNC_DISABLED" in fn.doc:
                        need = "sync_instance"  # "call `mnemo_instance_enable_sync` first"
                    o.append("    %s %s = need_%s();" % (p.ctype, v, need))
                    o.append("    if (!%s) return;" % v)
                    shown.append("<%s>" % p.name)
                    c = consumption(fn, p, handle_params)
                    if c:
                        consumed.append((slot, c))
                args.append(v)
            elif p.kind in ("handle_out", "str_out"):
                pointee = p.ctype.rstrip()
                assert pointee.endswith("*")
                pointee = pointee[:-1].rstrip()
                if not under_test:
                    o.append("    %s %s = SENTINEL;" % (pointee, v))
                if under_test:
                    args.append("NULL")
                    shown.append("NULL")
                else:
                    args.append("&" + v)
                    shown.append("&%s" % p.name)
                    outs.append(p)
            elif p.kind == "str_in":
                if under_test:
                    expr = {NULL: "NULL", BAD_UTF8: "BAD_UTF8", EMPTY: '""'}[mode]
                    o.append("    %s %s = %s;" % (p.ctype, v, expr))
                    shown.append({NULL: "NULL", BAD_UTF8: '"\\xff\\xfe"', EMPTY: '""'}[mode])
                else:
                    expr, guard, show = str_value(fn, p)
                    o.append("    %s %s = %s;" % (p.ctype, v, expr))
                    if guard:
                        o.append("    if (!%s) return;" % v)
                    shown.append(show)
                args.append(v)
            elif p.kind == "str_owned":
                if under_test:
                    o.append("    %s %s = NULL;" % (p.ctype, v))
                    shown.append("NULL")
                else:
                    o.append("    %s %s = need_owned_string();" % (p.ctype, v))
                    o.append("    if (!%s) return;" % v)
                    shown.append("<owned string>")
                args.append(v)
            elif p.kind == "callback":
                destroy = is_destroy_cb(self.h, fn, p)
                if p.fnptr:
                    fname = "noop_%s_%s" % (fn.name, p.name)
                    if fname not in self.emitted:
                        self.emitted.add(fname)
                        self.out.append(self.noop_fn(fname, *p.fnptr))
                    decl = "%s (*%s)(%s)" % (p.fnptr[0], v, p.fnptr[1])
                else:
                    fname = "noop_" + p.base
                    decl = "%s %s" % (p.base, v)
                if destroy:
                    fname = "counting_destroy"
                if under_test:
                    o.append("    %s = NULL;" % decl)
                    shown.append("NULL")
                else:
                    o.append("    %s = %s;" % (decl, fname))
                    shown.append(fname)
                    destroy_passed = destroy_passed or destroy
                args.append(v)
            elif p.kind in ("int_out", "len_out"):
                if under_test:
                    args.append("NULL")
                    shown.append("NULL")
                else:
                    o.append("    %s %s = 42; /* a sentinel */" % (p.base, v))
                    args.append("&" + v)
                    shown.append("&%s" % p.name)
                    (int_outs if p.kind == "int_out" else len_outs).append(p)
            elif p.kind == "buf_out":
                if under_test:
                    args.append("NULL")
                    shown.append("NULL")
                else:
                    o.append("    char %s[BUF_SIZE];" % v)
                    o.append("    memset(%s, 'x', sizeof %s);" % (v, v))
                    args.append(v)
                    shown.append("%s[BUF_SIZE]" % p.name)
                    bufs.append(p)
            elif p.kind == "user_data":
                o.append("    %s %s = %s;" % (p.ctype, v, "NULL" if under_test else "&destroy_marker"))
                shown.append("NULL" if under_test else "&user_data")
                args.append(v)
            elif p.kind == "int":
                if p.base == "mnemo_status":
                    val = "MNEMO_STATUS_OK"
                elif p.name in INT_VALUES:
                    val = INT_VALUES[p.name]
                else:
                    val = "0"
                o.append("    %s %s = %s;" % (p.ctype, v, val))
                shown.append(val)
                args.append(v)
            else:  # classify_param made this a problem already
                raise AssertionError(p.text)

        call = "%s(%s)" % (fn.name, ", ".join(shown))
        cname = call if mode == BASELINE else "%s [%s]" % (call, bad.name)
        o.append("    const char *call = %s;" % c_string(cname))
        call_c = "%s(%s)" % (fn.name, ", ".join(args))
        if not status_fn:
            if fn.ret == "void":
                o.append("    %s;" % call_c)
            else:
                o.append("    %s r = %s;" % (fn.ret, call_c))
                o.append("    (void)r;")
            for slot, _ in consumed:
                o.append("    W.%s = NULL;" % slot)
            o.append("    (void)call;")
            o.append("}\n")
        else:
            if mode == BASELINE:
                want = "EXPECT_BASELINE"
            elif mode == NULL and bad.kind == "buf_out":
                want = "EXPECT_INVALID"  # NULL with a capacity other than 0
            elif mode == NULL:
                want = "EXPECT_ANY" if nullable(fn, bad) else "EXPECT_INVALID"
            elif mode == BAD_UTF8:
                want = "EXPECT_INVALID"
            else:
                want = "EXPECT_FAILURE" if must_be_non_empty(fn, bad) else "EXPECT_ANY"
            o.append("    mnemo_status st = %s;" % call_c)
            o.append("    const char *msg = mnemo_last_error_message();")
            o.append("    char msgbuf[1024];")
            o.append("    copy_message(msgbuf, sizeof msgbuf, &msg);")
            allowed = documented_statuses(fn, self.by_name)
            if allowed:
                o.append("    static const mnemo_status allowed[] = {%s};" % ", ".join(sorted(allowed)))
                o.append("    check_status(call, st, msg, %s, allowed, (int)(sizeof allowed / sizeof allowed[0]));" % want)
            else:
                o.append("    check_status(call, st, msg, %s, NULL, 0);" % want)
            for slot, c in consumed:
                if c == "always":
                    o.append("    W.%s = NULL; /* consumed on success and on failure */" % slot)
                else:
                    o.append("    if (st == MNEMO_STATUS_OK) W.%s = NULL; /* consumed on success */" % slot)
            for p in outs:
                v = "a%d" % p.index
                o.append("    if (check_out(st, %s, %s)) {" % (v, c_string(p.name)))
                if p.kind == "str_out":
                    o.append("        check_owned_string(call, %s, %s);" % (v, c_string(p.name)))
                    o.append("        mnemo_string_free(%s);" % v)
                else:
                    o.append("        destroy_%s(%s);" % (p.base, v))
                o.append("    }")
            for p in int_outs:
                v = "a%d" % p.index
                o.append("    if (st != MNEMO_STATUS_OK && %s != -1)" % v)
                o.append('        fail("returned %%s but left out-parameter `%s` at %%d (expected -1)", mnemo_status_str(st), %s);' % (p.name, v))
                o.append("    if (st == MNEMO_STATUS_OK && %s < 0)" % v)
                o.append('        fail("returned MNEMO_STATUS_OK but wrote %%d to out-parameter `%s`", %s);' % (p.name, v))
            for p in len_outs:
                v = "a%d" % p.index
                o.append("    if (st != MNEMO_STATUS_OK && st != MNEMO_STATUS_BUFFER_TOO_SMALL && %s != 0)" % v)
                o.append('        fail("returned %%s but left out-parameter `%s` at %%zu (expected 0)", mnemo_status_str(st), %s);' % (p.name, v))
            for b in bufs:
                # The length out-parameter, when the case passes one (else the call failed).
                length = "a%d" % len_outs[0].index if len_outs else "0"
                o.append("    check_buffer(st, %s, %s, %s);" % ("a%d" % b.index, c_string(b.name), length))
            if destroy_passed:
                after = "after_" + cid
                o.append("    last_status_%s = st;" % cid)
            o.append("}\n")
            if after:
                self.out.append("static mnemo_status last_status_%s = -1;" % cid)
                o.append("static void %s(void) {" % after)
                o.append("    if (last_status_%s != -1) check_destroy(last_status_%s);" % (cid, cid))
                o.append("}\n")
        self.out.extend(o)
        self.cases.append((cname, cid, after, mode))

    def generate(self):
        for fn in self.h.functions:
            for p in fn.params:
                classify_param(self.h, p)
            classify_buffers(fn)
        self.find_destructors()
        self.out.append(PRELUDE)
        self.emit_callbacks()
        self.emit_destructors()
        self.out.append("/* ---- cases ---------------------------------------------------------------- */\n")
        for s in self.h.unparsed:
            fn = Function("<unparsed>", "", [], "")
            self.add_problem_case(fn, "cannot parse the declaration %r" % s)
        for fn in self.h.functions:
            self.gen_function(fn)
        o = self.out
        o.append("struct sweep_case {\n    const char *name;\n    void (*run)(void);\n"
                 "    void (*after)(void);\n    int kind; /* 0 baseline, 1 NULL, 2 bad UTF-8, 3 empty, 4 unclassified */\n};\n")
        o.append("static const struct sweep_case cases[] = {")
        for name, cid, after, mode in self.cases:
            o.append("    {%s, %s, %s, %d}," % (c_string(name), cid, after or "NULL", KIND_INDEX[mode]))
        o.append("};")
        o.append("#define NCASES ((int)(sizeof cases / sizeof cases[0]))")
        o.append("#define NFUNCTIONS %d" % len(self.h.functions))
        o.append("#define NSWEPT %d" % self.swept)
        o.append("#define NUNCLASSIFIED %d" % self.unclassified)
        o.append(POSTLUDE)
        return "\n".join(o)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--header", default=os.path.join(root, "include", "mnemo.h"))
    ap.add_argument("--out", default=os.path.join(root, "target", "sweep", "sweep.c"))
    args = ap.parse_args()
    with open(args.header, encoding="utf-8") as f:
        header = Header(f.read())
    if not header.functions:
        print("gen_sweep: no functions found in %s" % args.header, file=sys.stderr)
        return 1
    gen = Gen(header)
    text = gen.generate()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.out)
    print("gen_sweep: %d functions, %d cases -> %s" % (len(header.functions), len(gen.cases), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
