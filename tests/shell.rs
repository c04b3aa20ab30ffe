//! The shell side: the scripts in scripts/ through real socat and nc, and
//! the protocol vectors replayed by a shell script. socat and nc are required
//! (CI installs them); a missing one fails the test, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::process::Command;
use util::*;

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        found,
        "{tool} is not installed: install it (see .ci/run) to run the shell tests"
    );
}

fn run_script(d: &Daemon, script: &str, client: &str) {
    let out = Command::new("bash")
        .arg(format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR")))
        .env("ARCHON_SOCKET", &d.sock)
        .env("ARCHON_CLIENT", client)
        // A reply that never comes fails the test instead of hanging it.
        .env("ARCHON_WAIT", "30")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} with {client} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn vectors_replayed_through_socat() {
    require("socat");
    let d = Daemon::start("shvectors");
    run_script(&d, "vectors.sh", "socat");
}

#[test]
fn scripts_through_socat() {
    require("socat");
    let d = Daemon::start("shsocat");
    run_script(&d, "scripts.sh", "socat");
}

#[test]
fn scripts_through_nc() {
    require("nc");
    let d = Daemon::start("shnc");
    run_script(&d, "scripts.sh", "nc");
}

fn lint(tool: &str, args: &[&str]) {
    require(tool);
    let out = Command::new(tool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_pages_are_lint_clean() {
    lint(
        "mandoc",
        &[
            "-Tlint",
            "-W",
            "warning",
            "man/archon.8",
            "man/archonctl.8",
            "man/archon-protocol.7",
            "man/archon-config.5",
            "man/archon-hooks.5",
        ],
    );
}

#[test]
fn shell_scripts_are_shellcheck_clean() {
    lint(
        "shellcheck",
        &[
            "scripts/archon-send",
            "scripts/archon-run",
            "scripts/archon-start",
            "scripts/archon-status",
            "scripts/archon-subscribe",
            "scripts/demo.sh",
            "scripts/fuzz.sh",
            "tests/vectors.sh",
            "tests/scripts.sh",
            ".ci/run",
        ],
    );
}
