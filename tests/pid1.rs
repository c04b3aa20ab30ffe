//! Entrypoint mode and PID 1 duties against the real binary: archon as PID 1
//! of a fresh PID namespace (`unshare --pid --fork --mount-proc`) and as a
//! plain child of the test. Most tests run in both modes.
//!
//! A namespace that cannot be created fails these tests, unless
//! ARCHON_TEST_SKIP_PIDNS=1 says to skip the namespace half (loudly).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Linux: PID namespaces, SIGPWR, /proc (FREEBSD.md is the plan for FreeBSD).
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;
use util::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// archon is PID 1 of a new PID namespace.
    Ns,
    /// archon is an ordinary child of the test (a subreaper).
    Plain,
}

/// The modes this machine can test. Without PID namespaces the test fails,
/// unless ARCHON_TEST_SKIP_PIDNS=1.
fn modes() -> Vec<Mode> {
    static CHECK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *CHECK.get_or_init(|| {
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if ok {
        return vec![Mode::Ns, Mode::Plain];
    }
    if std::env::var_os("ARCHON_TEST_SKIP_PIDNS").is_some_and(|v| v == "1") {
        eprintln!("!!! SKIPPING the PID-namespace half of this test: unshare --pid failed and ARCHON_TEST_SKIP_PIDNS=1");
        return vec![Mode::Plain];
    }
    panic!("cannot create a PID namespace (unshare --pid --fork --mount-proc true failed); run as root, or set ARCHON_TEST_SKIP_PIDNS=1 to skip");
}

fn h(actions: &str) -> Vec<String> {
    std::iter::once(HELPER.to_string())
        .chain(
            actions
                .split(' ')
                .filter(|a| !a.is_empty())
                .map(String::from),
        )
        .collect()
}

struct Init {
    child: Child,
    mode: Mode,
    dir: PathBuf,
    /// Where the reaper writes archon's pid (Plain mode).
    pidfile: PathBuf,
    status: Option<ExitStatus>,
}

impl Init {
    /// Starts `archon --no-socket --grace 1 ARGS -- CMD...` (options in
    /// `args` may replace `--no-socket`, e.g. with `--socket`).
    fn start(mode: Mode, name: &str, args: &[&str], cmd: &[String]) -> Init {
        Self::start_with(mode, name, args, cmd, |_| {})
    }

    fn start_with(
        mode: Mode,
        name: &str,
        args: &[&str],
        cmd: &[String],
        tweak: impl FnOnce(&mut Command),
    ) -> Init {
        let dir = temp_dir(name);
        let mut c = match mode {
            Mode::Ns => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", ARCHON]);
                c
            }
            // Under the helper's reaper, as the harness runs every archon:
            // whatever a failing test leaves is swept when archon is gone.
            Mode::Plain => {
                let mut c = Command::new(HELPER);
                c.arg("reaper")
                    .arg(dir.join("archon.pid"))
                    .arg("--")
                    .arg(ARCHON);
                c
            }
        };
        if !args.iter().any(|a| a.starts_with("--socket")) {
            c.arg("--no-socket");
        }
        // Entrypoint mode logs only warnings by default; these tests read
        // the info lines too.
        c.args(["--grace", "1", "--log-level", "info"])
            .args(args)
            .arg("--")
            .args(cmd);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tweak(&mut c);
        let child = c.spawn().unwrap();
        Init {
            child,
            mode,
            pidfile: dir.join("archon.pid"),
            dir,
            status: None,
        }
    }

    /// archon's pid as seen from here (in Ns mode: unshare's child).
    fn archon_pid(&self) -> i32 {
        let me = self.child.id();
        match self.mode {
            Mode::Plain => {
                let path = &self.pidfile;
                let mut pid = 0;
                wait_for("archon under the reaper", || {
                    pid = std::fs::read_to_string(path)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    pid > 0
                });
                let _ = me;
                pid
            }
            Mode::Ns => {
                let path = format!("/proc/{me}/task/{me}/children");
                let mut pid = 0;
                wait_for("archon under unshare", || {
                    pid = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0);
                    pid > 0
                });
                pid
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::kill(self.archon_pid(), sig) }, 0);
    }

    fn ready(&self, file: &str) {
        let p = self.dir.join(file);
        wait_for(&format!("{} ({:?})", p.display(), self.mode), || p.exists());
    }

    /// Waits for the exit (deadline) and returns (status, stdout, stderr).
    fn finish(&mut self) -> (ExitStatus, String, String) {
        let mut status = None;
        wait_for(&format!("archon to exit ({:?})", self.mode), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        self.status = status;
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out).unwrap();
        }
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status.unwrap(), out, err)
    }
}

impl Drop for Init {
    /// A failed test must leave nothing behind: SIGTERM, then SIGKILL (in
    /// Ns mode, killing archon kills the whole namespace).
    fn drop(&mut self) {
        if self.status.is_some() || self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = self.archon_pid();
        // SAFETY: plain syscalls.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed().as_secs() < 5 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // Plain mode: the reaper now sweeps what archon left, then exits.
        let start = Instant::now();
        while start.elapsed().as_secs() < 5 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn code(s: ExitStatus) -> i32 {
    s.code()
        .unwrap_or_else(|| panic!("expected an exit code, got {s:?}"))
}

#[test]
fn exit_status_and_deaths_by_signal_propagate() {
    for mode in modes() {
        for n in [0, 1, 42, 255] {
            let mut a = Init::start(mode, "exit", &[], &h(&format!("exit {n}")));
            assert_eq!(code(a.finish().0), n, "{mode:?} exit {n}");
        }
        for (sig, n) in [
            ("HUP", 1),
            ("INT", 2),
            ("KILL", 9),
            ("TERM", 15),
            ("USR1", 10),
            ("SEGV", 11),
        ] {
            let mut a = Init::start(mode, "die", &[], &h(&format!("kill-self {sig}")));
            assert_eq!(code(a.finish().0), 128 + n, "{mode:?} kill-self {sig}");
        }
    }
}

#[test]
fn exec_failures_are_127_and_126_with_the_reason() {
    for mode in modes() {
        let mut a = Init::start(mode, "noexec", &[], &["no-such-program-x".into()]);
        let (st, _, err) = a.finish();
        assert_eq!(code(st), 127, "{mode:?}");
        assert!(
            err.contains("no-such-program-x: command not found"),
            "{err}"
        );
        let mut a = Init::start(mode, "noexec", &[], &["/etc/hostname".into()]);
        let (st, _, err) = a.finish();
        assert_eq!(code(st), 126, "{mode:?}");
        assert!(err.contains("/etc/hostname"), "{err}");
    }
    let o = Command::new(ARCHON).arg("--no-socket").output().unwrap();
    assert_ne!(
        o.status.code(),
        Some(0),
        "no command and no socket is an error"
    );
}

/// Every forwarded signal reaches a child that traps it: the child blocks
/// them all and waits for each; TERM comes last (it also starts the
/// shutdown, and reaches the child as the forwarded signal).
#[test]
fn forwarded_signals_reach_a_trapping_child() {
    let sigs = [
        "HUP", "QUIT", "USR1", "USR2", "WINCH", "ALRM", "CONT", "RTMIN+1", "RTMAX",
    ];
    for mode in modes() {
        let mut actions = String::new();
        for s in sigs.iter().chain(&["TERM"]) {
            actions += &format!("block {s} ");
        }
        let d = temp_dir("fwd");
        actions += &format!(
            "touch {}/ready await {},TERM exit 0",
            d.display(),
            sigs.join(",")
        );
        let mut a = Init::start(mode, "fwd", &[], &h(&actions));
        a.dir = d;
        a.ready("ready");
        for s in sigs {
            a.signal(archon::platform::signal_number(s).unwrap());
        }
        a.signal(libc::SIGTERM);
        let (st, out, err) = a.finish();
        assert_eq!(code(st), 0, "{mode:?}: {out} {err}");
        assert!(out.contains("got [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"), "{out}");

        // SIGINT is forwarded too (and starts the shutdown).
        let d = temp_dir("fwdint");
        let acts = format!("block INT touch {}/ready await INT exit 0", d.display());
        let mut a = Init::start(mode, "fwdint", &[], &h(&acts));
        a.dir = d;
        a.ready("ready");
        a.signal(libc::SIGINT);
        assert_eq!(code(a.finish().0), 0, "{mode:?}");
    }
}

/// A child that traps SIGINT and shuts down on SIGTERM: ^C, then `docker
/// stop`. The second signal is forwarded, not turned into SIGKILL.
/// As tini: quiet unless something is wrong; `-e CODE` makes an expected
/// exit code a success; `-p SIGNAL` is set as the parent-death signal.
#[test]
fn entrypoint_is_quiet_and_takes_tinis_e_and_p() {
    let o = Command::new(ARCHON)
        .args(["--no-socket", "--", "sh", "-c", "exit 0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(ARCHON)
        .args([
            "--no-socket",
            "-e",
            "143",
            "-e",
            "3",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let o = Command::new(ARCHON)
        .args(["--no-socket", "-e", "143", "--", "sh", "-c", "exit 4"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    // -p TERM: archon's parent (a shell) goes, archon shuts down.
    let d = temp_dir("pdeath");
    let pidfile = d.join("archon.pid");
    let script = format!(
        "{ARCHON} -p TERM --no-socket -- {HELPER} hang & echo $! > {}; read x",
        pidfile.display()
    );
    let mut sh = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pid = 0;
    wait_for("archon's pid", || {
        pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    });
    /// Kills archon (and so its child) if the test fails before it goes.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if !pid_alive(self.0) {
                return;
            }
            let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.0))
                .unwrap_or_default();
            for k in kids
                .split_whitespace()
                .filter_map(|k| k.parse::<i32>().ok())
            {
                unsafe { libc::kill(k, libc::SIGKILL) };
            }
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(pid);
    // Its main command is running: archon is past its start-up, where the
    // parent-death signal is set (a parent gone before that is missed, as
    // with prctl(PR_SET_PDEATHSIG) anywhere).
    wait_for("archon's main command", || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .is_ok_and(|c| !c.trim().is_empty())
    });
    drop(sh.stdin.take());
    sh.wait().unwrap();
    wait_for("archon to go with its parent", || !pid_alive(pid));
    let status = Command::new(ARCHON)
        .args(["--no-socket", "-p", "NOSUCH", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2));
}

#[test]
fn a_second_signal_is_forwarded_not_escalated() {
    for mode in modes() {
        let d = temp_dir("second");
        let acts = format!(
            "block INT block TERM touch {0}/ready await INT touch {0}/int await TERM exit 0",
            d.display()
        );
        let mut a = Init::start(mode, "second", &["--grace", "30"], &h(&acts));
        a.dir = d;
        a.ready("ready");
        a.signal(libc::SIGINT);
        a.ready("int");
        a.signal(libc::SIGTERM);
        let (st, out, err) = a.finish();
        assert_eq!(code(st), 0, "{mode:?}: {out} {err}");
    }
}

#[test]
fn signals_kill_a_child_that_does_not_trap_them() {
    for mode in modes() {
        for (sig, n) in [
            (libc::SIGHUP, 1),
            (libc::SIGUSR1, 10),
            (libc::SIGALRM, 14),
            (libc::SIGQUIT, 3),
            (libc::SIGTERM, 15),
        ] {
            let d = temp_dir("kill");
            let acts = format!("touch {}/ready hang", d.display());
            let mut a = Init::start(mode, "kill", &[], &h(&acts));
            a.dir = d;
            a.ready("ready");
            a.signal(sig);
            assert_eq!(code(a.finish().0), 128 + n, "{mode:?} signal {sig}");
        }
    }
}

#[test]
fn forward_to_group_reaches_the_whole_process_group() {
    let d = temp_dir("group");
    let script = format!(
        "trap 'echo sh-got-usr1' USR1; {HELPER} block USR1 touch {}/ready await USR1 echo helper-got-usr1",
        d.display()
    );
    let cmd: Vec<String> = vec!["sh".into(), "-c".into(), script];
    let mut a = Init::start(Mode::Plain, "group", &["-g"], &cmd);
    a.dir = d;
    a.ready("ready");
    a.signal(libc::SIGUSR1);
    let (st, out, _) = a.finish();
    assert_eq!(code(st), 0);
    assert!(out.contains("helper-got-usr1"), "{out}");
    assert!(out.contains("sh-got-usr1"), "{out}");
}

#[test]
fn a_burst_of_300_signals_is_forwarded_in_full() {
    for mode in modes() {
        let d = temp_dir("burst");
        let acts = format!(
            "block RTMIN+2 block USR2 touch {}/ready await RTMIN+2 300 await USR2 exit 0",
            d.display()
        );
        let mut a = Init::start(mode, "burst", &[], &h(&acts));
        a.dir = d;
        a.ready("ready");
        let pid = a.archon_pid();
        let rt = archon::platform::signal_number("RTMIN+2").unwrap();
        for _ in 0..300 {
            // SAFETY: plain syscall. Real-time signals queue, one per kill.
            assert_eq!(unsafe { libc::kill(pid, rt) }, 0);
        }
        // Standard signals coalesce; 300 of them must still arrive at least once.
        for _ in 0..300 {
            unsafe { libc::kill(pid, libc::SIGUSR2) };
        }
        let (st, out, err) = a.finish();
        assert_eq!(code(st), 0, "{mode:?}: {out} {err}");
        assert!(out.contains("got [300]"), "{out}");
    }
}

#[test]
fn five_hundred_orphans_are_reaped_and_no_zombie_is_left() {
    for mode in modes() {
        let mut a = Init::start(mode, "orphans", &[], &h("orphans 500 wait-clean"));
        let (st, out, err) = a.finish();
        assert_eq!(code(st), 0, "{mode:?}: {out} {err}");
        assert!(out.contains("clean"), "{mode:?}: {out}");
    }
}

/// As PID 1, what the main command leaves behind is stopped before archon
/// exits: SIGTERM for all, SIGKILL for what ignores it.
#[test]
fn pid1_stops_descendants_left_behind() {
    if !modes().contains(&Mode::Ns) {
        return;
    }
    let d = temp_dir("leftover");
    let script = format!(
        "{HELPER} hang & {HELPER} ignore TERM touch {dir}/r2 hang & {HELPER} wait-file {dir}/r2; exit 3",
        dir = d.display()
    );
    let cmd: Vec<String> = vec!["sh".into(), "-c".into(), script];
    let mut a = Init::start(Mode::Ns, "leftover", &[], &cmd);
    let (st, _, err) = a.finish();
    assert_eq!(code(st), 3, "{err}");
    assert!(
        err.contains("sending SIGTERM to every remaining process count=2"),
        "{err}"
    );
    assert!(
        err.contains("sending SIGKILL to every remaining process count=1"),
        "{err}"
    );
}

#[test]
fn stdin_and_stdout_pass_through_byte_exact() {
    let data: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for mode in modes() {
        let mut a = Init::start_with(mode, "cat", &[], &h("cat"), |c| {
            c.stdin(Stdio::piped());
        });
        let mut stdin = a.child.stdin.take().unwrap();
        let input = data.clone();
        let writer = std::thread::spawn(move || {
            stdin.write_all(&input).unwrap();
        });
        let mut out = Vec::new();
        a.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        writer.join().unwrap();
        let (st, _, _) = a.finish();
        assert_eq!(code(st), 0);
        assert!(
            out == data,
            "{mode:?}: {} bytes back of {}",
            out.len(),
            data.len()
        );
    }
}

#[test]
fn argv_and_environment_pass_exactly() {
    let odd_args = [
        "a b",
        "q\"uo'te",
        "c,d",
        "new\nline",
        "ünï€ 😀",
        "",
        "  ",
        "-g",
        "--",
    ];
    let odd_env = [
        ("EMPTY", ""),
        ("EQ", "a=b=c"),
        ("NL", "x\ny"),
        ("SP", " lead"),
        ("UNI", "ü€"),
        ("QUOTE", "\"'`$"),
    ];
    for mode in modes() {
        let mut cmd = h("print argv print env --");
        cmd.extend(odd_args.iter().map(|s| s.to_string()));
        let mut a = Init::start_with(mode, "argv", &[], &cmd, |c| {
            c.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default());
            for (k, v) in odd_env {
                c.env(k, v);
            }
        });
        let (st, out, _) = a.finish();
        assert_eq!(code(st), 0);
        let argv_line = cmd.join("\u{1f}");
        assert!(
            out.starts_with(&format!("{argv_line}\n")),
            "{mode:?}: {out:?}"
        );
        let env_text = out[argv_line.len() + 1..].trim_end_matches('\n');
        let got: std::collections::BTreeSet<&str> = env_text.split('\u{1f}').collect();
        for (k, v) in odd_env {
            assert!(
                got.contains(format!("{k}={v}").as_str()),
                "{mode:?}: {k} in {got:?}"
            );
        }
    }
}

#[test]
fn working_directory_and_inherited_fds_are_kept() {
    for mode in modes() {
        let d = temp_dir("cwd");
        let file = std::fs::File::create(d.join("fd5")).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
        let dir = d.clone();
        let mut a = Init::start_with(mode, "cwd", &[], &h("print cwd print fds"), move |c| {
            c.current_dir(&dir);
            // SAFETY: only dup2 between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    // dup2 onto itself would keep close-on-exec.
                    if raw == 5 {
                        libc::fcntl(5, libc::F_SETFD, 0);
                    } else if libc::dup2(raw, 5) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Whatever else the test runner left open is not ours.
                    libc::syscall(libc::SYS_close_range, 3u32, 4u32, 0u32);
                    libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 0u32);
                    Ok(())
                });
            }
        });
        let (st, out, _) = a.finish();
        drop(file);
        assert_eq!(code(st), 0);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(d.to_str().unwrap()), "{mode:?}");
        // 3 is the helper's own handle on /proc/self/fd.
        assert_eq!(lines.next(), Some("0,1,2,3,5"), "{mode:?}");
    }
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{key} not in {status}"))
}

/// The child starts with an empty mask, nothing ignored, and leads its own
/// process group, even when archon was started with signals ignored and
/// blocked. (`cat` is C: Rust programs ignore SIGPIPE themselves.)
#[test]
fn child_starts_with_clean_signals_in_its_own_group() {
    for mode in modes() {
        let cmd: Vec<String> = vec!["cat".into(), "/proc/self/status".into()];
        let mut a = Init::start_with(mode, "clean", &[], &cmd, |c| {
            // SAFETY: signal calls only, between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    libc::signal(libc::SIGINT, libc::SIG_IGN);
                    libc::signal(libc::SIGHUP, libc::SIG_IGN);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGUSR1);
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    Ok(())
                });
            }
        });
        let (st, out, _) = a.finish();
        assert_eq!(code(st), 0);
        assert_eq!(
            status_field(&out, "SigBlk:"),
            "0000000000000000",
            "{mode:?}"
        );
        assert_eq!(
            status_field(&out, "SigIgn:"),
            "0000000000000000",
            "{mode:?}"
        );
        let pid = status_field(&out, "NSpid:").split_whitespace().last();
        let pgid = status_field(&out, "NSpgid:").split_whitespace().last();
        assert_eq!(pid, pgid, "{mode:?}: the child leads its process group");
    }
}

/// Graceful shutdown: SIGTERM reaches the main command, which ignores it;
/// after the grace period it is killed.
#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    for mode in modes() {
        let d = temp_dir("stubborn");
        let acts = format!("ignore TERM touch {}/ready hang", d.display());
        let mut a = Init::start(mode, "stubborn", &[], &h(&acts));
        a.dir = d;
        a.ready("ready");
        a.signal(libc::SIGTERM);
        let (st, _, err) = a.finish();
        assert_eq!(code(st), 128 + 9, "{mode:?}: {err}");
        // And says why, at warn (the entrypoint's default level).
        assert!(
            err.contains("main id=1 pid=") && err.contains("did not exit within its grace period"),
            "{mode:?}: {err}"
        );
    }
}

/// Main command and daemons together: when the main command exits, the
/// daemons are stopped newest first, and archon exits with its status.
/// `archonctl status` works meanwhile (as `docker exec` would use it).
#[test]
fn daemons_stop_together_after_the_main_command() {
    for mode in modes() {
        let d = temp_dir("both");
        let sock = d.join("s.sock");
        let sock_arg = format!("--socket={}", sock.display());
        let acts = format!("wait-file {}/go exit 5", d.display());
        let mut a = Init::start(mode, "both", &[&sock_arg], &h(&acts));
        a.dir = d;
        wait_for("socket", || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        let conn = || Conn::new(std::os::unix::net::UnixStream::connect(&sock).unwrap());
        let mut c = conn();
        // Five that ignore SIGTERM: one by one they would take five grace
        // periods; together, one.
        let mut ids: Vec<u64> = (0..5)
            .map(|_| ok_id(&c.request(&format!("StartDaemon,{},ignore,TERM,hang", HELPER))))
            .collect();
        let o = Command::new(CTL)
            .args(["--socket", sock.to_str().unwrap(), "status"])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(table.contains(" main "), "{table}");
        let mut sub = conn();
        sub.request("Subscribe");
        std::fs::write(a.dir.join("go"), "").unwrap();
        let mut stopping = Vec::new();
        let mut exited_before_all_stopping = false;
        while let Some(line) = sub.line() {
            let f: Vec<&str> = line.split(',').collect();
            if f[0] != "Event" || f[3] != "daemon" {
                continue;
            }
            match f[5] {
                "stopping" => stopping.push(f[2].parse::<u64>().unwrap()),
                "exited" if stopping.len() < ids.len() => exited_before_all_stopping = true,
                _ => {}
            }
        }
        let (st, _, err) = a.finish();
        assert_eq!(code(st), 5, "{mode:?}: {err}");
        stopping.sort();
        ids.sort();
        assert_eq!(stopping, ids, "{mode:?}");
        assert!(
            !exited_before_all_stopping,
            "{mode:?}: daemons were stopped one by one"
        );
    }
}

#[test]
fn poweroff_reboot_halt_end_the_namespace_and_are_root_only() {
    let has_ns = modes().contains(&Mode::Ns);
    for (verb, mode, expect) in [
        ("poweroff", Mode::Ns, Err(libc::SIGINT)),
        ("reboot", Mode::Ns, Err(libc::SIGHUP)),
        ("halt", Mode::Ns, Err(libc::SIGINT)),
        // Not PID 1: archon just stops, with the main command's status.
        ("poweroff", Mode::Plain, Ok(143)),
    ] {
        if mode == Mode::Ns && !has_ns {
            continue;
        }
        let d = temp_dir("power");
        let sock = d.join("s.sock");
        let sock_arg = format!("--socket={}", sock.display());
        let mut a = Init::start(mode, "power", &[&sock_arg, "--socket-mode=666"], &h("hang"));
        wait_for("socket", || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        let ctl = |uid: Option<u32>| {
            let mut c = Command::new(CTL);
            c.args(["--socket", sock.to_str().unwrap(), verb]);
            if let Some(u) = uid {
                c.uid(u);
            }
            c.output().unwrap()
        };
        if verb == "poweroff" {
            // SAFETY: getuid cannot fail.
            if unsafe { libc::getuid() } == 0 {
                let o = ctl(Some(65534));
                assert_eq!(o.status.code(), Some(1));
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains("permission"),
                    "{o:?}"
                );
            } else {
                eprintln!("!!! not root: the uid check of {verb} is tested only as root");
            }
        }
        let o = ctl(None);
        assert!(o.status.success(), "{verb}: {o:?}");
        let (st, _, err) = a.finish();
        match expect {
            Ok(c) => assert_eq!(st.code(), Some(c), "{verb} {mode:?}: {err}"),
            // unshare re-raises the signal that ended its child, the
            // namespace's init.
            Err(sig) => assert_eq!(st.signal(), Some(sig), "{verb} {mode:?}: {st:?} {err}"),
        }
    }
}

/// On a terminal (`docker run -it`), the main command becomes the
/// foreground process group: it can read the terminal, and ^C reaches it
/// (not archon), so archon exits 130.
#[test]
fn the_main_command_owns_the_terminal_and_ctrl_c_gives_130() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills in two fds.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds from openpty.
    let master = unsafe { std::fs::File::from_raw_fd(master) };
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let d = temp_dir("tty");
    let acts = format!("print tty-fg readline touch {}/ready hang", d.display());
    let mut a = Init::start_with(Mode::Plain, "tty", &[], &h(&acts), |c| {
        c.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl only, between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    drop(slave);
    a.dir = d;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        let seen = seen.clone();
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once archon and its child have closed the tty.
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
    wait_for("tty-fg line", || {
        text().contains("fg\r\n") || text().contains("bg")
    });
    assert!(
        text().contains("fg\r\n"),
        "the child is not in the foreground: {}",
        text()
    );
    (&master).write_all(b"hello\n").unwrap();
    wait_for("the child to read the terminal", || {
        text().contains("line:hello")
    });
    a.ready("ready");
    (&master).write_all(&[3]).unwrap(); // ^C
    let (st, _, _) = a.finish();
    assert_eq!(code(st), 130, "{}", text());
    drop(master);
    let _ = reader.join();
}

/// SIGPWR to PID 1 (what `lxc-stop` sends) powers off in order.
#[test]
fn sigpwr_to_pid1_powers_off() {
    if !modes().contains(&Mode::Ns) {
        return;
    }
    let d = temp_dir("pwr");
    let acts = format!("touch {}/ready hang", d.display());
    let mut a = Init::start(Mode::Ns, "pwr", &[], &h(&acts));
    a.dir = d;
    a.ready("ready");
    a.signal(libc::SIGPWR);
    let (st, _, err) = a.finish();
    assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?} {err}");
    assert!(err.contains("child exited id=1"), "{err}");
}

/// A stopped main command is not an exited one: archon stays, and the
/// command can be continued.
#[test]
fn a_stopped_child_is_not_an_exited_one() {
    for mode in modes() {
        let d = temp_dir("stopped");
        let sock = d.join("s.sock");
        let sock_arg = format!("--socket={}", sock.display());
        let acts = format!("pidfile {}/pid hang", d.display());
        let mut a = Init::start(mode, "stopped", &[&sock_arg], &h(&acts));
        a.dir = d.clone();
        a.ready("pid");
        // The main command's pid as seen from here: archon's only child.
        let archon = a.archon_pid();
        let kids = format!("/proc/{archon}/task/{archon}/children");
        let mut main = 0;
        wait_for("main command", || {
            main = std::fs::read_to_string(&kids)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            main > 0
        });
        unsafe { libc::kill(main, libc::SIGSTOP) };
        wait_for("stopped state", || {
            std::fs::read_to_string(format!("/proc/{main}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('T')))
        });
        // Two round trips: the SIGCHLD of the stop has been handled by then.
        let mut c = Conn::new(std::os::unix::net::UnixStream::connect(&sock).unwrap());
        c.request("Status,1");
        let r = c.request("Status,1");
        assert!(
            r[0].contains(",main,") && r[0].contains(",running,"),
            "{mode:?}: {r:?}"
        );
        assert!(
            a.child.try_wait().unwrap().is_none(),
            "{mode:?}: archon exited"
        );
        unsafe { libc::kill(main, libc::SIGCONT) };
        a.signal(libc::SIGTERM);
        assert_eq!(code(a.finish().0), 143, "{mode:?}");
    }
}

/// PID 1 of a namespace without a /proc of its own (`unshare --pid --fork`,
/// no `--mount-proc`: /proc lists the parent namespace): the final sweep
/// must not wait for processes it cannot see die. It asks the kernel
/// (kill(-1)) instead: an orphan left behind is stopped and archon exits
/// at once, not after its (here 600 s) grace.
#[test]
fn pid1_without_its_own_proc_does_not_wait_for_the_parent_namespace() {
    if !modes().contains(&Mode::Ns) {
        return;
    }
    let dir = temp_dir("foreignproc");
    let pidfile = dir.join("orphan");
    // Under the helper's reaper: should archon hang, killing unshare (the
    // reaper's command) makes the reaper SIGKILL archon and what is left.
    let unshare_pid = dir.join("unshare.pid");
    let mut child = Command::new(HELPER)
        .arg("reaper")
        .arg(&unshare_pid)
        .args(["--", "unshare", "--pid", "--fork", "--"])
        .arg(ARCHON)
        .args(["--no-socket", "--grace", "600", "--", "sh", "-c"])
        .arg(format!(
            "{HELPER} pidfile {} hang & while [ ! -e {} ]; do sleep 0.01; done; exit 3",
            pidfile.display(),
            pidfile.display()
        ))
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            if let Ok(p) = std::fs::read_to_string(&unshare_pid) {
                unsafe { libc::kill(p.trim().parse().unwrap(), libc::SIGKILL) };
            }
            let _ = child.wait();
            panic!("archon as PID 1 waited for the parent namespace's processes");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(code(status), 3);
    assert!(pidfile.exists(), "the orphan never ran");
}
