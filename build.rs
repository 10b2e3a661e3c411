//! Generates `include/mnemo.h` with cbindgen, sets the shared library's SONAME, and
//! keeps the header's version macros in step with Cargo.toml.

use std::env;
use std::fs;
use std::path::PathBuf;

/// The ABI version: bumped only when the C ABI breaks.
const ABI_VERSION: u32 = 0;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmnemo.so.{ABI_VERSION}");

    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    config.after_includes = Some(version_macros());
    let header = cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    header.write_to_file(out_dir.join("mnemo.h"));
    // Keep the committed copy current; the test suite fails if it differs from git's.
    header.write_to_file(crate_dir.join("include").join("mnemo.h"));
    fs::metadata(crate_dir.join("include/mnemo.h")).expect("header written");
}

fn version_macros() -> String {
    let part = |name: &str| -> u32 {
        env::var(name)
            .expect("cargo sets it")
            .parse()
            .expect("numeric version")
    };
    let (major, minor, patch) = (
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
    );
    format!(
        "\n#define MNEMO_VERSION_MAJOR {major}\n\
         #define MNEMO_VERSION_MINOR {minor}\n\
         #define MNEMO_VERSION_PATCH {patch}\n\
         #define MNEMO_VERSION_NUMBER {number}\n\
         #define MNEMO_VERSION_STRING \"{major}.{minor}.{patch}\"\n\
         /** The ABI version: the N in the SONAME libmnemo.so.N. */\n\
         #define MNEMO_ABI_VERSION {ABI_VERSION}\n\n\
         /** Marks functions whose status must be checked. */\n\
         #if defined(__GNUC__) || defined(__clang__)\n\
         #define MNEMO_MUST_USE __attribute__((warn_unused_result))\n\
         #else\n\
         #define MNEMO_MUST_USE\n\
         #endif\n",
        number = major * 1_000_000 + minor * 1_000 + patch,
    )
}
