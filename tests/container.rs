//! archon as PID 1 of a real container engine: podman with runc, on a
//! rootfs of busybox-static and the static (musl) archon that `make static`
//! builds; and the `FROM scratch` image of `examples/Dockerfile.scratch`.
//!
//! These need root, podman, runc, busybox-static and the musl target
//! (`.ci/run` installs them). Where any is missing, or the engine cannot
//! start a container, the tests fail with the reason; set
//! `ARCHON_SKIP_CONTAINER_TESTS=1` to skip them (they then say so loudly).
//!
//! podman is configured as PLATFORM-NOTES describes for these machines:
//! `--runtime runc` (crun refuses the hybrid cgroup setup) and a
//! `containers.conf` with `default_ulimits = []` (the default rlimits cannot
//! be set here), named by `CONTAINERS_CONF`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use util::temp_dir;

const MUSL: &str = "x86_64-unknown-linux-musl";
static NAMES: AtomicUsize = AtomicUsize::new(0);

/// true: the container tests are skipped on request (said loudly).
fn skip() -> bool {
    if std::env::var_os("ARCHON_SKIP_CONTAINER_TESTS").is_some_and(|v| v == "1") {
        eprintln!(
            "SKIPPED: ARCHON_SKIP_CONTAINER_TESTS=1; archon was NOT tested in a container engine"
        );
        return true;
    }
    false
}

/// The engine's settings for these machines, written once.
fn engine_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let dir = temp_dir("podman-conf");
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
        conf
    })
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", engine_conf())
        .arg("--runtime")
        .arg("runc");
    c
}

fn run(c: &mut Command) -> Output {
    let o = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    eprintln!(
        "{c:?} -> {:?}\n  stdout: {}\n  stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim_end(),
        String::from_utf8_lossy(&o.stderr).trim_end()
    );
    o
}

/// The static archon and archonctl, built once per test run by `make
/// static` (so the Makefile's target is what is tested), in a target
/// directory of their own: the test's own is locked by the cargo running it.
fn static_bins() -> &'static Path {
    static BINS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINS.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let target = Path::new(root).join("target").join("static");
        let o = Command::new("make")
            .arg("-C")
            .arg(root)
            .arg("static")
            .arg(format!("STATIC_TARGET_DIR={}", target.display()))
            .arg(format!("CARGO={}", env!("CARGO")))
            .output()
            .map_err(|e| format!("make: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "`make static` failed (is the {MUSL} target installed? rustup target add {MUSL}; \
                 and musl-tools?):\n{}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(target.join(MUSL).join("release"))
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A fresh rootfs: busybox-static as /bin/*, the static archon and
/// archonctl, the directories a container needs.
fn rootfs(name: &str) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no busybox: apt-get install busybox-static"));
    let o = Command::new(busybox).arg("--list").output().unwrap();
    assert!(o.status.success());
    let static_ok = Command::new("ldd")
        .arg(busybox)
        .output()
        .map(|o| !o.status.success());
    assert!(
        static_ok.unwrap_or(true),
        "{} is dynamic: install busybox-static",
        busybox.display()
    );
    let dir = temp_dir(name).join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "run", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in String::from_utf8_lossy(&o.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    let bins = static_bins();
    for b in ["archon", "archonctl"] {
        std::fs::copy(bins.join(b), dir.join("bin").join(b)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
    dir
}

/// A detached container, removed (killed first) on drop, even when the
/// test fails.
struct Container {
    name: String,
}

impl Container {
    fn start(rootfs: &Path, cmd: &[&str]) -> Container {
        let name = format!(
            "archon-test-{}-{}",
            std::process::id(),
            NAMES.fetch_add(1, Ordering::SeqCst)
        );
        let o = run(podman()
            .args([
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                &name,
                "--rootfs",
            ])
            .arg(rootfs)
            .args(cmd));
        assert!(o.status.success(), "podman run -d failed");
        Container { name }
    }

    /// archon (with `opts`) running `sh -c "TRAP; echo ready; loop"` as its
    /// main command, once the shell has set its trap.
    fn looping(rootfs: &Path, opts: &[&str], trap: &str) -> Container {
        let script = format!("{trap}; echo ready; while :; do sleep 0.1; done");
        let mut cmd = vec!["/bin/archon"];
        cmd.extend_from_slice(opts);
        cmd.extend_from_slice(&["--", "/bin/sh", "-c", &script]);
        let c = Container::start(rootfs, &cmd);
        wait_until("the main command to start", || c.logs().contains("ready"));
        c
    }

    fn exec(&self, cmd: &[&str]) -> Output {
        run(podman().args(["exec", &self.name]).args(cmd))
    }

    fn logs(&self) -> String {
        let o = podman().args(["logs", &self.name]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    fn running(&self) -> bool {
        let o = podman()
            .args(["inspect", "-f", "{{.State.Running}}", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim() == "true"
    }

    /// The exit code podman recorded, once the container has exited.
    fn wait(&self) -> i32 {
        let o = run(podman().args(["wait", &self.name]));
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

/// Polls (podman calls are slow: every 50 ms) until `cond` or 60 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `podman run --rm` of the rootfs, to its end.
fn run_once(rootfs: &Path, cmd: &[&str]) -> Output {
    run(podman()
        .args(["run", "--rm", "--network", "none", "--rootfs"])
        .arg(rootfs)
        .args(cmd))
}

#[test]
fn exit_codes_pass_through_the_engine() {
    if skip() {
        return;
    }
    let r = rootfs("exit-codes");
    let o = run_once(
        &r,
        &["/bin/archon", "--", "/bin/sh", "-c", "echo pid $$; exit 7"],
    );
    assert_eq!(o.status.code(), Some(7));
    // archon is PID 1; its main command is not.
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("pid ") && !out.contains("pid 1\n"), "{out}");
    let o = run_once(
        &r,
        &[
            "/bin/archon",
            "--",
            "/bin/sh",
            "-c",
            "ps -o pid,comm | grep -q '^ *1 archon$'",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "archon is not PID 1 of the container"
    );
    // Killed by a signal: 128 + n, as a shell reports it.
    let o = run_once(&r, &["/bin/archon", "--", "/bin/sh", "-c", "kill -USR1 $$"]);
    assert_eq!(o.status.code(), Some(128 + 10));
    // tini's -e: a remapped code.
    let o = run_once(
        &r,
        &["/bin/archon", "-e", "3", "--", "/bin/sh", "-c", "exit 3"],
    );
    assert_eq!(o.status.code(), Some(0));
    // A command that cannot run: 127 and a reason on stderr.
    let o = run_once(&r, &["/bin/archon", "--", "/no/such/program"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/program"));
}

/// `podman stop -t N`: SIGTERM reaches the main command through archon;
/// a command that ignores it is killed by archon after `--grace`, well
/// before the engine's own SIGKILL.
#[test]
fn podman_stop_terms_then_kills() {
    if skip() {
        return;
    }
    let r = rootfs("stop");
    let polite = Container::looping(&r, &[], "trap 'echo got TERM; exit 0' TERM");
    let o = run(podman().args(["stop", "-t", "60", &polite.name]));
    assert!(o.status.success());
    assert_eq!(polite.wait(), 0);
    assert!(polite.logs().contains("got TERM"), "{}", polite.logs());

    // A main command that ignores SIGTERM: archon kills it after its own
    // grace, long before podman's 60 s. `-e 137` maps that death to 0, so
    // exit 0 proves archon did it (podman's SIGKILL of archon is 137).
    let stubborn = Container::looping(&r, &["-e", "137", "--grace", "1"], "trap '' TERM");
    let o = run(podman().args(["stop", "-t", "60", &stubborn.name]));
    assert!(o.status.success());
    assert_eq!(stubborn.wait(), 0, "not archon's SIGKILL after --grace");

    // A main command that ignores SIGTERM under a long grace: the engine's
    // SIGKILL of PID 1 after -t ends the container (137), and nothing stays.
    let long = Container::looping(&r, &["--grace", "600"], "trap '' TERM");
    let o = run(podman().args(["stop", "-t", "1", &long.name]));
    assert!(o.status.success());
    assert_eq!(long.wait(), 137);
}

#[test]
fn podman_kill_hup_is_forwarded() {
    if skip() {
        return;
    }
    let r = rootfs("hup");
    let c = Container::looping(&r, &[], "trap 'echo got HUP' HUP");
    let o = run(podman().args(["kill", "-s", "HUP", &c.name]));
    assert!(o.status.success());
    wait_until("the HUP to reach the main command", || {
        c.logs().contains("got HUP")
    });
    assert!(c.running(), "a forwarded HUP ended the container");
}

/// Orphans re-parented to archon (PID 1) are reaped: each writes its pid,
/// exits, and its /proc entry (a zombie keeps one) disappears.
#[test]
fn orphans_in_the_container_are_reaped() {
    if skip() {
        return;
    }
    let r = rootfs("zombies");
    let c = Container::start(
        &r,
        &[
            "/bin/archon",
            "--",
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do (sh -c 'echo $$ >> /tmp/orphans' &); done; echo ready; exec sleep 1000",
        ],
    );
    wait_until("the orphans to have run", || {
        let o = c.exec(&["/bin/sh", "-c", "cat /tmp/orphans 2>/dev/null"]);
        String::from_utf8_lossy(&o.stdout).lines().count() == 8
    });
    let o = c.exec(&["/bin/cat", "/tmp/orphans"]);
    let pids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    wait_until("every orphan to be reaped", || {
        let probe = pids
            .iter()
            .map(|p| format!("test -e /proc/{p} && echo {p};"))
            .collect::<String>();
        let o = c.exec(&["/bin/sh", "-c", &format!("{probe} true")]);
        o.stdout.is_empty()
    });
    // And no zombie anywhere in the container.
    let o = c.exec(&["/bin/sh", "-c", "cat /proc/[0-9]*/stat"]);
    let stats = String::from_utf8_lossy(&o.stdout);
    assert!(
        !stats
            .lines()
            .any(|l| l.rsplit(')').next().unwrap_or("").starts_with(" Z")),
        "{stats}"
    );
}

/// archon with a config of services as the container's init, driven from
/// `podman exec ... archonctl`.
#[test]
fn services_in_a_container_with_archonctl_exec() {
    if skip() {
        return;
    }
    let r = rootfs("services");
    std::fs::write(
        r.join("etc/archon.lua"),
        r#"
service "db" { cmd = { "/bin/sh", "-c", "echo db up; exec sleep 1000" } }
service "web" {
  cmd = { "/bin/sh", "-c", "echo web ${ARCHON_INSTANCE}; exec sleep 1000" },
  replicas = 2,
  depends_on = { "db" },
}
"#,
    )
    .unwrap();
    let c = Container::start(&r, &["/bin/archon", "--config", "/etc/archon.lua"]);
    wait_until("three instances running", || {
        let o = c.exec(&["/bin/archonctl", "status"]);
        String::from_utf8_lossy(&o.stdout)
            .matches("running")
            .count()
            >= 3
    });
    let o = c.exec(&["/bin/archonctl", "status", "web"]);
    assert!(o.status.success());
    let o = c.exec(&["/bin/archonctl", "scale", "web", "3"]);
    assert!(o.status.success());
    wait_until("the third web instance", || {
        let o = c.exec(&["/bin/archonctl", "status", "web"]);
        String::from_utf8_lossy(&o.stdout)
            .matches("running")
            .count()
            == 3
    });
    // The tree as PID 1: archon is pid 1, the services below it.
    let o = c.exec(&["/bin/archonctl", "--csv", "status", "--tree"]);
    let tree = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(tree.starts_with("Tree,0,1,0,archon,"), "{tree}");
    assert!(
        tree.lines()
            .any(|l| l.starts_with("Tree,1,") && l.contains(",1,service:web.2,")),
        "{tree}"
    );
    wait_until("the services' output in the engine's log", || {
        let l = c.logs();
        l.contains("db up") && l.contains("web 2")
    });
    let o = run(podman().args(["stop", "-t", "30", &c.name]));
    assert!(o.status.success());
    assert_eq!(c.wait(), 0, "a clean stop of a supervisor is exit 0");
}

/// `examples/Dockerfile.scratch` builds (`podman build`) into an image that
/// runs: the static archon as PID 1 of an image with nothing else in it.
#[test]
fn scratch_image_builds_and_runs() {
    if skip() {
        return;
    }
    let ctx = temp_dir("scratch-ctx");
    std::fs::create_dir_all(ctx.join("bin")).unwrap();
    for b in ["archon", "archonctl"] {
        std::fs::copy(static_bins().join(b), ctx.join("bin").join(b)).unwrap();
    }
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/Dockerfile.scratch");
    let tag = format!("localhost/archon-test-{}:scratch", std::process::id());
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = podman().args(["rmi", "-f", &self.0]).output();
        }
    }
    let o = run(podman()
        .args(["build", "-q", "--build-arg", "BIN=bin", "-t", &tag, "-f"])
        .arg(&dockerfile)
        .arg(&ctx));
    assert!(
        o.status.success(),
        "podman build of Dockerfile.scratch failed"
    );
    let _image = Image(tag.clone());
    // The image's default command: archonctl asks archon (PID 1) for its version.
    let o = run(podman().args(["run", "--rm", "--network", "none", &tag]));
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("archon"),
        "no version from archon"
    );
    let o = run(podman().args(["run", "--rm", "--network", "none", &tag, "/no/such/program"]));
    assert_eq!(o.status.code(), Some(127));
}
