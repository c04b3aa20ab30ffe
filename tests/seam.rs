//! The platform contract holds: nothing outside `src/platform/` uses
//! `libc`, `nix` or `unsafe` (ARCHITECTURE.md, "The platform contract"),
//! except the few places listed here with the reason.

use std::path::{Path, PathBuf};

/// (file, what the line contains, why). Each must still match: a stale
/// exception is an error too.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "src/bin/archonctl.rs",
        "#[unsafe(no_mangle)]",
        "archonctl's C `main` (no_main: std's runtime set-up is most of its start-up)",
    ),
    (
        "src/bin/archonctl.rs",
        "extern \"C\" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {",
        "the C `main` signature",
    ),
    (
        "src/bin/archonctl.rs",
        "fn c_args(argc: libc::c_int, argv: *const *const libc::c_char) -> Result<Vec<String>, String> {",
        "reading `main`'s argv (std::env::args is empty without std's main on musl)",
    ),
    (
        "src/bin/archonctl.rs",
        "let p = unsafe { *argv.add(i) };",
        "reading `main`'s argv",
    ),
    (
        "src/bin/archonctl.rs",
        "let c = unsafe { std::ffi::CStr::from_ptr(p) };",
        "reading `main`'s argv",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `word` occurs in `code` as a whole path segment (not the end
/// of a longer name: `unix::` is not `nix::`).
fn has_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The words that mean the OS is used directly.
fn offends(code: &str) -> bool {
    let code = code.split("//").next().unwrap_or("");
    [
        "libc::", "nix::", "use libc", "use nix", "unsafe ", "unsafe{", "unsafe(",
    ]
    .iter()
    .any(|w| has_word(code, w))
        || code.trim_start().starts_with("extern crate")
}

#[test]
fn only_the_platform_module_touches_the_kernel_directly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let platform = root.join("src/platform");
    let mut used = vec![false; EXCEPTIONS.len()];
    let mut bad = Vec::new();
    let mut scanned = 0;
    for f in files.iter().filter(|f| !f.starts_with(&platform)) {
        let rel = f
            .strip_prefix(root)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(f).unwrap_or_default();
        scanned += 1;
        for (n, line) in text.lines().enumerate() {
            if !offends(line) {
                continue;
            }
            match EXCEPTIONS
                .iter()
                .position(|(file, what, _)| *file == rel && line.trim() == *what)
            {
                Some(i) => used[i] = true,
                None => bad.push(format!("{rel}:{}: {}", n + 1, line.trim())),
            }
        }
    }
    assert!(scanned > 20, "scanned only {scanned} files");
    assert!(
        bad.is_empty(),
        "libc, nix or unsafe outside src/platform/ (move it behind the contract, \
         or add a justified exception):\n{}",
        bad.join("\n")
    );
    let stale: Vec<_> = EXCEPTIONS
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(e, _)| format!("{}: {}", e.0, e.1))
        .collect();
    assert!(stale.is_empty(), "exceptions that match nothing: {stale:?}");
}

#[test]
fn the_detector_sees_what_it_must() {
    assert!(offends("    let x = unsafe { libc::getpid() };"));
    assert!(offends("use nix::sys::socket;"));
    assert!(offends("        nix::unistd::getpid()"));
    assert!(!offends("    // unsafe code lives in platform, libc:: too"));
    assert!(!offends("    let unsafety = 1;"));
    assert!(!offends("use std::os::unix::net::UnixStream;"));
    assert!(offends("    ::libc::getpid();"));
}
