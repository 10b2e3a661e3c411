-- mnemo from LuaJIT's FFI (Debian: luajit): docs/other-languages.md.
-- Run: MNEMO_FFI_H=/usr/local/include/mnemo_ffi.h luajit example.lua
local ffi = require("ffi")

-- mnemo_ffi.h is declarations only: ffi.cdef takes it as it is (mnemo.h it would not).
local header = assert(io.open(os.getenv("MNEMO_FFI_H") or "/usr/local/include/mnemo_ffi.h"))
ffi.cdef(header:read("*a"))
header:close()
local C = ffi.load("libmnemo.so.0") -- by SONAME

-- LuaJIT calls run on this thread: the message is read right after, on it.
local function check(status)
  if status ~= C.MNEMO_STATUS_OK then
    error(ffi.string(C.mnemo_status_str(status)) .. ": " .. ffi.string(C.mnemo_last_error_message()))
  end
end

-- Copies an owned out-string into a Lua string, then frees it.
local function take(out)
  local s = ffi.string(out[0])
  C.mnemo_string_free(out[0])
  return s
end

local backend, inst = ffi.new("mnemo_backend *[1]"), ffi.new("mnemo_instance *[1]")
local user, db, out = ffi.new("mnemo_user *[1]"), ffi.new("mnemo_database *[1]"), ffi.new("char *[1]")
check(C.mnemo_backend_open("memory:", backend))
check(C.mnemo_instance_open(backend[0], inst)) -- consumes the backend
-- Lua strings are bytes, passed as they are: this file is UTF-8, so "zoë" is too.
check(C.mnemo_instance_create_user(inst[0], "zoë", nil))
check(C.mnemo_instance_login(inst[0], "zoë", nil, user))
check(C.mnemo_user_create_db(user[0], "notes", db))
check(C.mnemo_db_set(db[0], "todo", "milk", '{"done": false, "by": "zoë"}'))
check(C.mnemo_db_get(db[0], "todo", "milk", out))
local value = take(out)
assert(value == '{"by":"zoë","done":false}', value)
print("get: " .. value)

local status = C.mnemo_db_get(db[0], "todo", "bread", out)
assert(status == C.MNEMO_STATUS_NOT_FOUND)
print("missing key: " .. status .. " " .. ffi.string(C.mnemo_last_error_message()))

C.mnemo_db_free(db[0])
check(C.mnemo_user_logout(user[0]))
C.mnemo_instance_free(inst[0])
print("luajit: ok")
