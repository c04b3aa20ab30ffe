//! The floors written in C (tools/c/): built by the bench with the system's
//! C compiler into a directory of its own, so a baseline is always there,
//! whatever else is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: [(&str, &str); 3] = [
    ("init", include_str!("../c/init.c")),
    ("echo", include_str!("../c/echo.c")),
    ("spawnloop", include_str!("../c/spawnloop.c")),
];

/// Builds `name` (one of tools/c/) into `dir`; None, said loudly, when the
/// compiler is missing or fails.
pub fn build(dir: &Path, name: &str) -> Option<PathBuf> {
    let (_, src) = SOURCES.iter().find(|(n, _)| *n == name)?;
    std::fs::create_dir_all(dir).ok()?;
    let c = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    if exe.exists() {
        return Some(exe);
    }
    std::fs::write(&c, src).ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    match Command::new(&cc)
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&c)
        .status()
    {
        Ok(s) if s.success() => Some(exe),
        other => {
            println!("C baseline {name} NOT BUILT ({cc}: {other:?}): its rows are skipped");
            None
        }
    }
}

/// Where this run's C baselines go.
pub fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("archon-bench-c-{}", std::process::id()))
}
