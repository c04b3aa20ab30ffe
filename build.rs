//! Link-time choices for glibc targets (see BENCHMARKS.md for the numbers).
//!
//! 1. The unwinder, for every binary. Rust's standard library asks for
//!    `libgcc_s.so` on `*-linux-gnu`, and loading that second shared library
//!    costs about 100 us per start on the benchmark machine. Linking gcc's own
//!    static copy of the same unwinder (`libgcc_eh.a`, which Rust itself uses
//!    under `crt-static`) whole, ahead of the standard library's `-lgcc_s`,
//!    leaves nothing for `libgcc_s.so` to provide, so `--as-needed` drops it.
//!
//! 2. `archonctl` is linked statically (static-pie). It is started once per
//!    command, and the dynamic loader's work (mapping libc, relocating,
//!    looking up symbols) is most of what it costs over `/bin/true`; static,
//!    it starts faster than `/bin/true` does. Cargo has no per-binary
//!    `crt-static`, so for that binary alone the linker gets `-static-pie`
//!    and a search directory, searched before the system's, where `libc.so`,
//!    `libm.so` and `libgcc_s.so` are linker scripts naming the static
//!    archives (`-L` applies to every `-l`, wherever it stands). Skipped when
//!    the C compiler does not know `libc.a` (no libc6-dev): archonctl is then
//!    dynamic, and only slower to start.
//!
//!    `archon` stays dynamic: with 1000 services running, libc's pages are
//!    shared with every one of them, so they add nearly nothing to archon's
//!    PSS, where a static copy is archon's alone (+700 KiB measured); and NSS
//!    modules beyond `files` need the shared libc.
//!
//! 3. The hot text, for `archon` on Linux (glibc and musl): the functions
//!    listed in `link/hot-text.txt` (what archon runs as a container's init,
//!    found by `scripts/hot-text.sh`) go first in the text, in a section of
//!    their own. The kernel maps 64 KiB of a file around every page fault,
//!    so start-up code spread over the whole text made all of it resident
//!    (1.2 of 1.5 MiB); together, it takes a few windows. A linker script
//!    with `INSERT BEFORE .text` adds to the default layout rather than
//!    replacing it; GNU ld and lld both read it. Entries are globs, Rust's
//!    legacy hashes replaced by `*`, so most changes leave the list valid;
//!    a stale entry matches nothing and costs only memory.
//!
//! 4. DT_RELR for the musl (static) builds, below.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" {
        hot_text(&PathBuf::from(var("OUT_DIR")));
    }
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "musl" {
        // 4. Packed relative relocations (DT_RELR) for the static builds:
        //    the self-relocation at start reads 0.4 KB instead of 40 KB of
        //    `.rela.dyn` (-32 KiB of PSS as PID 1). musl's own start code
        //    applies them, so the binary needs nothing of the host; a
        //    glibc build would need glibc >= 2.36 wherever it runs.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let crt_static = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if !gnu_linux || crt_static {
        return;
    }
    println!("cargo:rustc-link-lib=static:-bundle,+whole-archive=gcc_eh");
    if let Some(dir) = static_libs_dir(&PathBuf::from(var("OUT_DIR"))) {
        println!("cargo:rustc-link-arg-bin=archonctl=-static-pie");
        println!("cargo:rustc-link-arg-bin=archonctl=-L{}", dir.display());
    }
}

/// Writes the hot-text linker script and hands it to archon's link.
fn hot_text(out: &Path) {
    let list = Path::new("link/hot-text.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let Ok(text) = std::fs::read_to_string(list) else {
        println!(
            "cargo:warning=no {}: archon's start-up text is not grouped",
            list.display()
        );
        return;
    };
    let mut script = String::from("SECTIONS\n{\n  .text.archon_hot :\n  {\n");
    for entry in text.lines().map(str::trim) {
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if entry.ends_with(".lo") {
            // A member of musl's libc.a, which has one .text per file.
            script.push_str(&format!("    *libc.a:{entry}(.text .text.*)\n"));
        } else {
            // LLVM puts functions it deems cold (`#[cold]`: a Vec's
            // growth) in `.text.unlikely.*`.
            script.push_str(&format!("    *(.text.{entry} .text.unlikely.{entry})\n"));
        }
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    let path = out.join("hot-text.ld");
    if std::fs::write(&path, script).is_ok() {
        println!("cargo:rustc-link-arg-bin=archon=-Wl,-T,{}", path.display());
    }
}

/// Where the C compiler finds `name`, if it does.
fn archive(name: &str) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Without the file, the compiler prints the bare name back.
    (p.is_absolute() && p.is_file()).then_some(p)
}

/// Writes the linker scripts that send `-lc`, `-lm` and `-lgcc_s` to the
/// static archives; None if an archive is missing.
fn static_libs_dir(out: &Path) -> Option<PathBuf> {
    let dir = out.join("static-archonctl");
    std::fs::create_dir_all(&dir).ok()?;
    for (lib, ar) in [
        ("libc.so", "libc.a"),
        ("libm.so", "libm.a"),
        ("libgcc_s.so", "libgcc_eh.a"),
    ] {
        let script = format!("INPUT ( {} )\n", archive(ar)?.display());
        std::fs::write(dir.join(lib), script).ok()?;
    }
    Some(dir)
}
