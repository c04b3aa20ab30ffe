//! The test helper's `reaper`, which the whole suite's harness stands on:
//! it exits as its command did and leaves nothing of it behind. (This
//! test also makes `cargo test` build the helper, next to archon, where
//! the harness looks for it.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The helper is Linux-only (prctl, abstract sockets).
#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::{Duration, Instant};

const HELPER: &str = env!("CARGO_BIN_EXE_archon-testhelper");

#[test]
fn reaper_mirrors_the_exit_and_sweeps_what_was_left() {
    let dir = std::env::temp_dir().join(format!("archon-reaper-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let left = dir.join("left");
    let script = format!("sleep 1000 & echo $! > {}; exit 3", left.display());
    let st = Command::new(HELPER)
        .arg("reaper")
        .arg(dir.join("pid"))
        .args(["--", "sh", "-c", &script])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));
    let pid: i32 = std::fs::read_to_string(&left)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Reaped and gone (a zombie would still have /proc/PID).
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the orphan {pid} survived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
