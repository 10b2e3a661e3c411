//! Generates `include/mnemo.h` with cbindgen, sets the shared library's SONAME (and gives
//! the build directory a file of that name), keeps the header's version macros in step with
//! Cargo.toml, and writes the `MNEMO_STATUS_*` constants from the one status list
//! (`src/error/statuses.rs`). A second cbindgen pass writes `include/mnemo_ffi.h`, the same
//! declarations for FFIs that parse C themselves (cffi, LuaJIT): no preprocessor lines, the
//! statuses as an enum.

use std::env;
use std::fs;
use std::path::PathBuf;

/// The ABI version: bumped only when the C ABI breaks.
const ABI_VERSION: u32 = 0;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/error/statuses.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmnemo.so.{ABI_VERSION}");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    soname_link(&out_dir);
    // src/ffi/status.rs includes this file; cbindgen reads it for the header.
    let status_codes = out_dir.join("status_codes.rs");
    fs::write(&status_codes, status_constants()).expect("OUT_DIR is writable");

    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    config.after_includes = Some(version_macros());
    let header = cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_src(&status_codes)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");

    header.write_to_file(out_dir.join("mnemo.h"));
    // Keep the committed copy current; the test suite fails if it differs from git's.
    header.write_to_file(crate_dir.join("include").join("mnemo.h"));
    fs::metadata(crate_dir.join("include/mnemo.h")).expect("header written");

    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    ffi_only(&mut config);
    let ffi_header = cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_src(&status_codes)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the FFI header");
    ffi_header.write_to_file(crate_dir.join("include").join("mnemo_ffi.h"));
}

/// Programs linked with `-lmnemo` ask for the SONAME, `libmnemo.so.N`, but cargo writes only
/// `libmnemo.so`. So that a program built against `target/debug` (or `target/release`) runs,
/// this makes `libmnemo.so.N -> libmnemo.so` in that directory. A build script runs before
/// the library is linked, so the link may dangle until the first link ends; it names the file,
/// so it follows every later build. Best effort: a failure is a warning, never a failed build.
fn soname_link(out_dir: &std::path::Path) {
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if env::var("CARGO_CFG_TARGET_FAMILY").as_deref() != Ok("unix")
        || matches!(target_os.as_str(), "macos" | "ios")
    {
        return; // no ELF SONAME there
    }
    // OUT_DIR is <profile dir>/build/mnemo-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    if out_dir.ancestors().nth(2).and_then(|p| p.file_name()) != Some("build".as_ref()) {
        return; // not the layout cargo documents: leave it alone
    }
    let link = profile_dir.join(format!("libmnemo.so.{ABI_VERSION}"));
    if fs::read_link(&link).is_ok_and(|to| to == std::path::Path::new("libmnemo.so")) {
        return;
    }
    #[cfg(unix)]
    {
        let _ = fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink("libmnemo.so", &link) {
            println!("cargo:warning=cannot make {}: {e}", link.display());
        }
    }
}

/// Turns mnemo.h's configuration into mnemo_ffi.h's: declarations only, which cffi's
/// `cdef` and LuaJIT's `ffi.cdef` take verbatim. No include guard, includes, macros or
/// `extern "C"`; plain typedef names (`mnemo_user *`, never `struct mnemo_user *`); no
/// must-use marker; no doc comments (mnemo.h is the manual). The `MNEMO_STATUS_*` and
/// version macros become enum constants; `mnemo_status` stays `int32_t`.
fn ffi_only(config: &mut cbindgen::Config) {
    config.header = Some(FFI_HEADER_COMMENT.trim_end().to_string());
    config.include_guard = None;
    config.pragma_once = false;
    config.no_includes = true;
    config.sys_includes.clear();
    config.includes.clear();
    config.cpp_compat = false;
    config.style = cbindgen::Style::Type;
    config.documentation = false;
    config.function.must_use = None;
    config.after_includes = Some(ffi_constants());
    config.export.exclude.extend(
        STATUSES
            .iter()
            .map(|(name, _)| format!("MNEMO_STATUS_{name}")),
    );
}

const FFI_HEADER_COMMENT: &str = "\
/*
 * mnemo_ffi.h: the declarations of mnemo.h for FFIs that read C declarations themselves
 * (Python cffi's cdef, LuaJIT's ffi.cdef, ...). C and C++ programs include mnemo.h.
 *
 * Generated from src/ffi/ by build.rs with cbindgen, with mnemo.h. Do not edit.
 *
 * Load it verbatim: it has declarations and comments only (no preprocessor lines, no
 * macros, no extern \"C\") and uses the types size_t, int32_t and uint32_t.
 * It differs from mnemo.h in these points only:
 * - The MNEMO_STATUS_* macros are the anonymous enum below, with the same values;
 *   mnemo_status stays int32_t, as functions return it.
 * - MNEMO_VERSION_MAJOR, _MINOR, _PATCH, _NUMBER and MNEMO_ABI_VERSION are enum constants
 *   of the version this file comes with; MNEMO_VERSION_STRING is left out (call
 *   mnemo_version()); so is MNEMO_MUST_USE (check every status all the same).
 * - Opaque handles are named by their typedefs (mnemo_user *, not struct mnemo_user *).
 * - No doc comments: each function's manual is its comment in mnemo.h.
 * The conventions of mnemo.h hold: strings are NUL-terminated UTF-8 whatever the locale;
 * strings out are freed with mnemo_string_free(); mnemo_last_error_message() is per thread.
 */
";

/// The status and version constants of mnemo_ffi.h, as anonymous enums.
fn ffi_constants() -> String {
    let mut out = String::from("\nenum {\n");
    for (name, code) in STATUSES {
        out.push_str(&format!("  MNEMO_STATUS_{name} = {code},\n"));
    }
    out.push_str("};\n\nenum {\n");
    let (major, minor, patch) = version();
    for (name, value) in [
        ("VERSION_MAJOR", major),
        ("VERSION_MINOR", minor),
        ("VERSION_PATCH", patch),
        ("VERSION_NUMBER", version_number()),
        ("ABI_VERSION", ABI_VERSION),
    ] {
        out.push_str(&format!("  MNEMO_{name} = {value},\n"));
    }
    out.push_str("};\n");
    out
}

/// The crate's (major, minor, patch) version, from Cargo.toml.
fn version() -> (u32, u32, u32) {
    let part = |name: &str| -> u32 {
        env::var(name)
            .expect("cargo sets it")
            .parse()
            .expect("numeric version")
    };
    (
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
    )
}

/// MAJOR*1000000 + MINOR*1000 + PATCH, as mnemo_version_number() returns it.
fn version_number() -> u32 {
    let (major, minor, patch) = version();
    major * 1_000_000 + minor * 1_000 + patch
}

fn version_macros() -> String {
    let (major, minor, patch) = version();
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
        number = version_number(),
    )
}

/// Turns the status list into Rust constants, one `MNEMO_STATUS_<NAME>` per status, with its
/// doc comment (which becomes the header's), and into `STATUSES`, (C name suffix, code).
macro_rules! status_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, $c_name:ident; )*) => {
        const STATUSES: &[(&str, i32)] = &[$( (stringify!($c_name), $code), )*];

        fn status_constants() -> String {
            let mut out = String::from("// Generated by build.rs from src/error/statuses.rs.\n");
            $(
                $( out.push_str(&format!("///{}\n", $doc)); )*
                out.push_str(&format!(
                    "pub const MNEMO_STATUS_{}: mnemo_status = {};\n",
                    stringify!($c_name),
                    $code
                ));
            )*
            out
        }
    };
}

include!("src/error/statuses.rs");
