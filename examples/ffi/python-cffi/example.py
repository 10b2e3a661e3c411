"""mnemo from Python with cffi in ABI mode (pip install cffi): docs/other-languages.md.
Run: MNEMO_FFI_H=/usr/local/include/mnemo_ffi.h python3 example.py"""
import os

from cffi import FFI

ffi = FFI()
# mnemo_ffi.h is declarations only: cdef takes it as it is (mnemo.h it would not).
with open(os.environ.get("MNEMO_FFI_H", "/usr/local/include/mnemo_ffi.h"), encoding="utf-8") as f:
    ffi.cdef(f.read())
lib = ffi.dlopen("libmnemo.so.0")  # by SONAME


def check(status: int) -> None:
    """cffi calls run on this thread: the message is read right after, on it."""
    if status != lib.MNEMO_STATUS_OK:
        name = ffi.string(lib.mnemo_status_str(status)).decode()
        raise RuntimeError(f"{name}: {ffi.string(lib.mnemo_last_error_message()).decode()}")


def take(out) -> str:
    """Copies an owned out-string (UTF-8) into a str, then frees it."""
    try:
        return ffi.string(out[0]).decode("utf-8")
    finally:
        lib.mnemo_string_free(out[0])


backend, inst = ffi.new("mnemo_backend **"), ffi.new("mnemo_instance **")
user, db, out = ffi.new("mnemo_user **"), ffi.new("mnemo_database **"), ffi.new("char **")
check(lib.mnemo_backend_open(b"memory:", backend))
check(lib.mnemo_instance_open(backend[0], inst))  # consumes the backend
name = "zoë".encode("utf-8")  # char * takes bytes: encode as UTF-8, never with the locale
check(lib.mnemo_instance_create_user(inst[0], name, ffi.NULL))
check(lib.mnemo_instance_login(inst[0], name, ffi.NULL, user))
check(lib.mnemo_user_create_db(user[0], b"notes", db))
check(lib.mnemo_db_set(db[0], b"todo", b"milk", '{"done": false, "by": "zoë"}'.encode("utf-8")))
check(lib.mnemo_db_get(db[0], b"todo", b"milk", out))
value = take(out)
assert value == '{"by":"zoë","done":false}', value
print("get:", value)

status = lib.mnemo_db_get(db[0], b"todo", b"bread", out)
assert status == lib.MNEMO_STATUS_NOT_FOUND
print("missing key:", status, ffi.string(lib.mnemo_last_error_message()).decode())

lib.mnemo_db_free(db[0])
check(lib.mnemo_user_logout(user[0]))
lib.mnemo_instance_free(inst[0])
print("python + cffi: ok")
