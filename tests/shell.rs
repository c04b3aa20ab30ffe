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
            "scripts/hot-text.sh",
            "tests/vectors.sh",
            "tests/scripts.sh",
            ".ci/run",
        ],
    );
}

/// The mdoc source of a page rendered as plain text (mandoc, overstrikes
/// removed).
fn rendered(page: &str) -> String {
    let out = Command::new("mandoc")
        .args(["-Tascii", "-Owidth=200"])
        .arg(format!("{}/man/{page}", env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    assert!(out.status.success());
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let mut text = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        text.push(c);
    }
    text
}

/// Every setting's synopsis in archon-config(5) renders with balanced
/// quotes and braces (nested mdoc quoting once garbled them), and every
/// example in the config and hooks pages is a config archon accepts.
#[test]
fn man_page_syntax_renders_and_examples_load() {
    require("mandoc");
    let text = rendered("archon-config.5");
    let mut settings = 0;
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let name = t.split(' ').next().unwrap_or("");
        if indent == 5
            && t.contains(" = ")
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == ',')
        {
            settings += 1;
            assert_eq!(t.matches('"').count() % 2, 0, "unbalanced quotes: {t}");
            // Inside quotes there is one word, never an alternative.
            let quoted_alternative = t
                .split('"')
                .skip(1)
                .step_by(2)
                .any(|q| q.contains('|') || q.is_empty());
            assert!(!quoted_alternative, "garbled quoting: {t}");
            assert_eq!(
                t.matches('{').count(),
                t.matches('}').count(),
                "unbalanced braces: {t}"
            );
        }
    }
    assert!(settings > 20, "only {settings} setting lines found");
    let mut examples = 0;
    for page in ["archon-config.5", "archon-hooks.5"] {
        let src =
            std::fs::read_to_string(format!("{}/man/{page}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut block: Option<String> = None;
        for line in src.lines() {
            match &mut block {
                None if line.starts_with(".Bd -literal") => block = Some(String::new()),
                Some(b) if line == ".Ed" => {
                    let lua = b.replace("\\e", "\\").replace("\\(dq", "\"");
                    block = None;
                    // Synopses ("...") and the state diagram are not configs.
                    if lua.contains("...") || lua.contains("-->") {
                        continue;
                    }
                    let dir = temp_dir("manexample");
                    let path = dir.join("example.lua");
                    std::fs::write(&path, &lua).unwrap();
                    let o = Command::new(ARCHON)
                        .args(["--check", "--config"])
                        .arg(&path)
                        .output()
                        .unwrap();
                    assert!(
                        o.status.success(),
                        "{page}: an example does not load:\n{lua}\n{}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    examples += 1;
                    std::fs::remove_dir_all(dir).unwrap();
                }
                Some(b) => {
                    b.push_str(line);
                    b.push('\n');
                }
                None => {}
            }
        }
    }
    assert!(examples >= 3, "only {examples} examples checked");
}

/// `make install` puts archon, archonctl and the man pages under DESTDIR
/// and PREFIX; `cargo install --path .` installs archon and archonctl and
/// nothing else (not the test helper, not the benchmark).
#[test]
fn install_paths_install_archon_and_archonctl_only() {
    require("make");
    let root = env!("CARGO_MANIFEST_DIR");
    let dest = temp_dir("install");
    let bin_dir = std::path::Path::new(ARCHON).parent().unwrap();
    let o = Command::new("make")
        .arg("-C")
        .arg(root)
        .arg("install")
        .arg(format!("BIN_DIR={}", bin_dir.display()))
        .arg(format!("DESTDIR={}", dest.display()))
        .arg("PREFIX=/usr")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "usr/bin/archon",
        "usr/bin/archonctl",
        "usr/share/man/man5/archon-config.5",
        "usr/share/man/man5/archon-hooks.5",
        "usr/share/man/man7/archon-protocol.7",
        "usr/share/man/man8/archon.8",
        "usr/share/man/man8/archonctl.8",
    ] {
        assert!(dest.join(f).exists(), "make install left out {f}");
    }
    // cargo install, in a target directory of its own (the test's is
    // locked by the cargo running it).
    let cargo_root = temp_dir("cargo-install");
    let o = Command::new(env!("CARGO"))
        .args([
            "install",
            "--locked",
            "--debug",
            "--offline",
            "--quiet",
            "--path",
            root,
            "--root",
        ])
        .arg(&cargo_root)
        .arg("--target-dir")
        .arg(cargo_root.join("target"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut bins: Vec<String> = std::fs::read_dir(cargo_root.join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    bins.sort();
    assert_eq!(bins, ["archon", "archonctl"]);
    std::fs::remove_dir_all(dest).unwrap();
    std::fs::remove_dir_all(cargo_root).unwrap();
}
