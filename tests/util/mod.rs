//! Shared harness: a real archon on a temp socket, killed on drop; a line
//! client; deadlines instead of sleeps.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const ARCHON: &str = env!("CARGO_BIN_EXE_archon");
pub const CTL: &str = env!("CARGO_BIN_EXE_archonctl");
/// Built by `cargo test` from tools/ (default-members) into the same
/// directory as archon.
pub const HELPER: &str = concat!(env!("CARGO_BIN_EXE_archon"), "-testhelper");
pub const DEADLINE: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn temp_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("archon-test-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `cond` until it holds or the deadline passes (then panics with `what`).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still has /proc/PID; look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn pid_gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// A real archon, run under the test helper's `reaper`: however the test
/// ends, every process archon started (services, daemons, their orphans)
/// is SIGKILLed and reaped when archon is gone.
pub struct Daemon {
    /// The reaper; archon is its child.
    pub child: Child,
    archon: i32,
    pub dir: PathBuf,
    pub sock: PathBuf,
}

impl Daemon {
    pub fn start(name: &str) -> Daemon {
        Self::start_with(name, &[], |_| {})
    }

    pub fn start_with(name: &str, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Daemon {
        let dir = temp_dir(name);
        let sock = dir.join("archon.sock");
        let pidfile = dir.join("archon.pid");
        let mut cmd = Command::new(HELPER);
        cmd.arg("reaper").arg(&pidfile).arg("--").arg(ARCHON);
        cmd.arg("--socket")
            .arg(&sock)
            .arg("--grace")
            .arg("2")
            .args(args)
            .env("ARCHON_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("archon.out")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("archon.log")).unwrap(),
            ));
        tweak(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let mut archon = 0;
        wait_for("archon's pid", || {
            archon = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            archon > 0 || child.try_wait().unwrap().is_some()
        });
        let d = Daemon {
            child,
            archon,
            dir,
            sock,
        };
        wait_for("archon's socket", || UnixStream::connect(&d.sock).is_ok());
        d
    }

    pub fn pid(&self) -> i32 {
        self.archon
    }

    pub fn conn(&self) -> Conn {
        Conn::new(UnixStream::connect(&self.sock).unwrap())
    }

    /// One request on a fresh connection; returns every reply line.
    pub fn ask(&self, line: &str) -> Vec<String> {
        self.conn().request(line)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("archon.log")).unwrap_or_default()
    }

    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(CTL)
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Waits for archon to exit by itself (its main command ended).
    pub fn terminate_after_main(&mut self) -> std::process::ExitStatus {
        let mut st = None;
        wait_for("archon to exit after its main command", || {
            st = self.child.try_wait().unwrap();
            st.is_some()
        });
        st.unwrap()
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > DEADLINE {
                panic!("archon did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            // archon first: the reaper then sweeps what is left below it.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- archon log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Conn {
    pub reader: BufReader<UnixStream>,
}

pub fn is_final(line: &str) -> bool {
    line == "Ok"
        || line.starts_with("Ok,")
        || line.starts_with("Error,")
        || line.starts_with("ExitStatus,")
}

impl Conn {
    pub fn new(s: UnixStream) -> Conn {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Conn {
            reader: BufReader::new(s),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        self.reader.get_ref()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    pub fn send_with_fds(&mut self, bytes: &[u8], fds: &[RawFd]) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let iov = [IoSlice::new(bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let n = sendmsg::<()>(
            self.stream().as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert_eq!(n, bytes.len());
    }

    /// Reads one line; None at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) => None,
            Ok(_) => Some(s.trim_end_matches('\n').to_string()),
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Reads lines up to and including the final one of a reply (events skipped).
    pub fn reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line().expect("connection closed before the reply");
            if l.starts_with("Event,") {
                continue;
            }
            let fin = is_final(&l);
            out.push(l);
            if fin {
                return out;
            }
        }
    }

    pub fn request(&mut self, line: &str) -> Vec<String> {
        self.send(format!("{line}\n").as_bytes());
        self.reply()
    }

    /// Reads until an event line matching `pred`.
    pub fn event(&mut self, pred: impl Fn(&[&str]) -> bool) -> String {
        loop {
            let l = self
                .line()
                .expect("connection closed while waiting for an event");
            let f: Vec<&str> = l.split(',').collect();
            if f[0] == "Event" && pred(&f) {
                return l;
            }
        }
    }
}

/// The last reply line of a request.
pub fn last(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or("")
}

/// Id from an `Ok,<id>` line.
pub fn ok_id(lines: &[String]) -> u64 {
    let l = last(lines);
    l.strip_prefix("Ok,")
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not Ok,<id>: {l}"))
}

/// The `Process` row for an id.
pub fn row(d: &Daemon, id: u64) -> Vec<String> {
    let lines = d.ask(&format!("Status,{id}"));
    assert_eq!(last(&lines), "Ok", "{lines:?}");
    lines[0].split(',').map(String::from).collect()
}

/// A helper process started by a test directly (not through archon): killed
/// and reaped on drop, so a failing test leaves nothing behind and never
/// holds the test runner's output pipe open.
pub struct Spawned(pub std::process::Child);

/// Starts the helper and returns once its exec has completed: `spawn`
/// returns as soon as the child has left the parent's memory, before the
/// kernel has set up its new command line, and a `MonitorPid` in between
/// would record an empty command.
pub fn spawn_helper(args: &[&str]) -> Spawned {
    let child = Command::new(HELPER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let cmdline = format!("/proc/{}/cmdline", child.id());
    wait_for("the helper's exec", || {
        std::fs::read(&cmdline).is_ok_and(|b| b.starts_with(HELPER.as_bytes()))
    });
    Spawned(child)
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
    pub fn kill(&mut self) {
        let _ = self.0.kill();
    }
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Lua string literal for a path or word (configs written by tests).
pub fn lua_str(s: &str) -> String {
    format!("{s:?}")
}

/// `{ "helper", "a", "b" }`: the test helper with these actions, as a Lua
/// list for a config's `cmd`.
pub fn lua_helper(actions: &str) -> String {
    let mut parts = vec![lua_str(HELPER)];
    parts.extend(actions.split(' ').filter(|a| !a.is_empty()).map(lua_str));
    format!("{{ {} }}", parts.join(", "))
}

/// A daemon with this Lua config (written to its own temp dir) and these
/// extra options.
pub fn with_config(name: &str, lua: &str, extra: &[&str]) -> Daemon {
    let dir = temp_dir(&format!("{name}-cfg"));
    let path = dir.join("archon.lua");
    std::fs::write(&path, lua).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Daemon::start_with(name, &args, |_| {})
}

/// `archon --check` refuses a one-service config with `key = value`, saying
/// where (`a.lua:1`) and `says`.
#[allow(dead_code)] // not every test binary uses it
pub fn assert_refused(key: &str, value: &str, says: &str) {
    let dir = temp_dir(&format!("refused-{key}"));
    let path = dir.join("a.lua");
    std::fs::write(
        &path,
        format!("service \"x\" {{ cmd = {{ \"true\" }}, {key} = {value} }}"),
    )
    .unwrap();
    let out = std::process::Command::new(ARCHON)
        .args(["--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{key} = {value}: {err}");
    assert!(
        err.contains("a.lua:1") && err.contains(says),
        "{key} = {value}: {err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A free TCP port on 127.0.0.1 (bound and let go: another process could
/// take it before the caller, which then fails loudly).
#[allow(dead_code)] // not every test binary uses it
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when this is dropped, also when
/// the test fails.
#[allow(dead_code)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
