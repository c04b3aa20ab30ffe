//! The benchmark: measures archon against baselines taken in the same run on
//! the same machine and prints each figure as a ratio, as a table and as
//! JSON. Run with `cargo build --release && target/release/archon-bench` (see
//! BENCHMARKS.md): it starts the archon next to it.
//! Options: `--quick` (fewer iterations, 2 s idle), `--json FILE`,
//! `--entrypoint-only` (archon as a container's init against tini),
//! `--fixed-only` (issue 16's other fixed costs: memory with one service,
//! cold start, a query on a fresh connection), `--monitor-only` (issue 14:
//! sampling cost, /metrics with 1 000 services, a memory limit's latency),
//! `--probes-only` (issue 15: HTTP probes, a rolling restart behind
//! HAProxy, restarts on a held socket).
//!
//! Linux only (the proc connector, PID namespaces, sched_setaffinity,
//! prctl): elsewhere it says so and exits 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(target_os = "linux")]
#[path = "../bench.rs"]
mod bench;

#[cfg(target_os = "linux")]
fn main() {
    bench::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("archon-bench: Linux only");
    std::process::exit(2);
}
