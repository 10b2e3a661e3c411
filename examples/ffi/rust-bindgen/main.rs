//! mnemo's C library from Rust through bindgen (cargo install bindgen-cli; it needs libclang):
//! docs/other-languages.md. A Rust program can also depend on the mnemo crate itself.
//!
//! bindgen include/mnemo.h -o mnemo_sys.rs --default-macro-constant-type signed \
//!     --allowlist-function 'mnemo_.*' --allowlist-type 'mnemo_.*' --allowlist-var 'MNEMO_.*'
//! MNEMO_SYS_RS=$PWD/mnemo_sys.rs rustc --edition 2021 main.rs -L /usr/local/lib -l mnemo
use std::ffi::{c_char, CStr, CString};
use std::ptr;

#[allow(non_camel_case_types, non_upper_case_globals, dead_code)]
mod sys {
    include!(env!("MNEMO_SYS_RS"));
}
use sys::*;

/// Fails with the status's name and this thread's message (read right after the call, on
/// the thread that made it: keep both inside one closure if an async runtime moves tasks).
fn check(status: mnemo_status) {
    // MNEMO_STATUS_OK is i32 like mnemo_status only with --default-macro-constant-type signed.
    if status != MNEMO_STATUS_OK {
        let name = unsafe { CStr::from_ptr(mnemo_status_str(status)) };
        panic!("{}: {}", name.to_string_lossy(), last_error());
    }
}

fn last_error() -> String {
    let m = unsafe { mnemo_last_error_message() };
    if m.is_null() { String::new() } else { unsafe { CStr::from_ptr(m) }.to_string_lossy().into_owned() }
}

/// Copies an owned out-string, then frees it with mnemo_string_free.
fn take(s: *mut c_char) -> String {
    let copy = unsafe { CStr::from_ptr(s) }.to_str().expect("mnemo returns UTF-8").to_owned();
    unsafe { mnemo_string_free(s) };
    copy
}

/// Rust strings are UTF-8 already: only the NUL is added.
fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL inside")
}

fn main() {
    let (mut backend, mut inst, mut user, mut db) =
        (ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
    let mut out: *mut c_char = ptr::null_mut();
    unsafe {
        check(mnemo_backend_open(c("memory:").as_ptr(), &mut backend));
        check(mnemo_instance_open(backend, &mut inst)); // consumes the backend
        check(mnemo_instance_create_user(inst, c("zoë").as_ptr(), ptr::null()));
        check(mnemo_instance_login(inst, c("zoë").as_ptr(), ptr::null(), &mut user));
        check(mnemo_user_create_db(user, c("notes").as_ptr(), &mut db));
        check(mnemo_db_set(db, c("todo").as_ptr(), c("milk").as_ptr(), c(r#"{"done": false, "by": "zoë"}"#).as_ptr()));
        check(mnemo_db_get(db, c("todo").as_ptr(), c("milk").as_ptr(), &mut out));
        let value = take(out);
        assert_eq!(value, r#"{"by":"zoë","done":false}"#);
        println!("get: {value}");

        let status = mnemo_db_get(db, c("todo").as_ptr(), c("bread").as_ptr(), &mut out);
        assert_eq!(status, MNEMO_STATUS_NOT_FOUND);
        println!("missing key: {status} {}", last_error());

        mnemo_db_free(db);
        check(mnemo_user_logout(user));
        mnemo_instance_free(inst);
    }
    println!("rust + bindgen: ok");
}
