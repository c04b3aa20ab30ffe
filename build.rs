//! Links the unwinder statically on glibc targets.
//!
//! Rust's standard library asks for `libgcc_s.so` (the unwinder) on
//! `*-linux-gnu`, and loading that second shared library is most of what a
//! small Rust program costs at exec time over a C one: about 100 us per
//! start on the benchmark machine (BENCHMARKS.md). `archonctl` is started
//! once per command, so that cost is the difference between it and
//! `/bin/true`. Linking gcc's own static copy of the same unwinder
//! (`libgcc_eh.a`, which is what Rust itself links under `crt-static`) whole,
//! ahead of the standard library's `-lgcc_s`, leaves nothing for
//! `libgcc_s.so` to provide, so `--as-needed` drops it; libc stays dynamic
//! (NSS look-ups need it).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let crt_static = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if gnu_linux && !crt_static {
        println!("cargo:rustc-link-lib=static:-bundle,+whole-archive=gcc_eh");
    }
}
