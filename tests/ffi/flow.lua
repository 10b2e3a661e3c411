-- LuaJIT loads include/mnemo_ffi.h verbatim with ffi.cdef and runs a flow through it:
-- memory backend, instance, user, login, database, set, get, strings freed, the error path.
-- Usage: luajit tests/ffi/flow.lua LIBRARY HEADER
-- (LIBRARY: a path to libmnemo.so, or its SONAME; HEADER: include/mnemo_ffi.h).
-- Prints "luajit flow: N passed, N failed"; exits 1 on a failure.
local ffi = require("ffi")

local library, header = arg[1], arg[2]
assert(library and header, "usage: luajit flow.lua LIBRARY HEADER")
local file = assert(io.open(header, "rb"))
ffi.cdef(file:read("*a")) -- verbatim: no edit, no preprocessing
file:close()
local C = ffi.load(library)

local passed, failed = 0, 0
local function check(ok, what)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    io.stderr:write("check failed: " .. what .. "\n")
  end
end

local function message()
  local m = C.mnemo_last_error_message()
  return m ~= nil and ffi.string(m) or nil
end

-- A status-returning call: checks it gives `want`, and that the thread's message is set
-- exactly when it failed.
local function expect(want, status, what)
  local m = message()
  check(status == want and ((status == C.MNEMO_STATUS_OK) == (m == nil)),
    string.format("%s returned %s, expected %s (message: %s)", what,
      ffi.string(C.mnemo_status_str(status)), ffi.string(C.mnemo_status_str(want)), tostring(m)))
end

-- Takes an owned out-string: its Lua copy, after mnemo_string_free.
local function take(out)
  local s = ffi.string(out[0])
  C.mnemo_string_free(out[0])
  out[0] = nil
  return s
end

check(ffi.string(C.mnemo_version()):match("^%d+%.%d+%.%d+$") ~= nil, "mnemo_version")
check(C.mnemo_version_number() == C.MNEMO_VERSION_NUMBER, "version number matches the header")
for code, name in pairs({ [0] = "OK", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS" }) do
  check(C["MNEMO_STATUS_" .. name] == code, "MNEMO_STATUS_" .. name)
  check(ffi.string(C.mnemo_status_str(code)) == "MNEMO_STATUS_" .. name, "mnemo_status_str " .. name)
end

local backend = ffi.new("mnemo_backend *[1]")
local inst = ffi.new("mnemo_instance *[1]")
local user = ffi.new("mnemo_user *[1]")
local db = ffi.new("mnemo_database *[1]")
local out = ffi.new("char *[1]")

expect(C.MNEMO_STATUS_OK, C.mnemo_backend_open("memory:", backend), "mnemo_backend_open")
expect(C.MNEMO_STATUS_OK, C.mnemo_instance_open(backend[0], inst), "mnemo_instance_open")
-- Lua strings are bytes: this source file is UTF-8, so "zoë" crosses as UTF-8.
expect(C.MNEMO_STATUS_OK, C.mnemo_instance_create_user(inst[0], "zoë", nil), "create_user")
expect(C.MNEMO_STATUS_ALREADY_EXISTS, C.mnemo_instance_create_user(inst[0], "zoë", nil),
  "create_user again")
expect(C.MNEMO_STATUS_OK, C.mnemo_instance_login(inst[0], "zoë", nil, user), "login")
expect(C.MNEMO_STATUS_OK, C.mnemo_instance_list_users(inst[0], out), "list_users")
check(take(out) == '["zoë"]', "list_users gives the UTF-8 name back")
expect(C.MNEMO_STATUS_OK, C.mnemo_user_create_db(user[0], "notes", db), "create_db")
expect(C.MNEMO_STATUS_OK, C.mnemo_db_set(db[0], "todo", "milk", '{"done":false,"by":"zoë"}'), "set")
expect(C.MNEMO_STATUS_OK, C.mnemo_db_get(db[0], "todo", "milk", out), "get")
check(take(out) == '{"by":"zoë","done":false}', "get gives the canonical JSON back")

-- The error path: the status, then this thread's message.
expect(C.MNEMO_STATUS_NOT_FOUND, C.mnemo_db_get(db[0], "todo", "bread", out), "get a missing key")
check(out[0] == nil, "the out-parameter stays NULL on failure")
local m = message()
check(m ~= nil and #m > 0, "a failed call leaves a message")
C.mnemo_string_free(nil) -- functions that return no status leave the message alone
check(message() == m, "mnemo_string_free does not clear the message")
expect(C.MNEMO_STATUS_INVALID_ARGUMENT, C.mnemo_db_set(db[0], "todo", "x", "{not json"), "bad JSON")
expect(C.MNEMO_STATUS_INVALID_ARGUMENT, C.mnemo_db_set(db[0], "todo", "\255\254", "1"), "bad UTF-8")
expect(C.MNEMO_STATUS_OK, C.mnemo_db_id(db[0], out), "db_id") -- a success clears it
check(take(out):match("^sha256:%x+$") ~= nil, "db id")

C.mnemo_db_free(db[0])
expect(C.MNEMO_STATUS_OK, C.mnemo_user_logout(user[0]), "logout")
C.mnemo_instance_free(inst[0])

print(string.format("luajit flow: %d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
