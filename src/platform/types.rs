//! The contract's neutral types: every backend takes and returns these.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A process named by a kernel handle (Linux: a pidfd; FreeBSD: a process
/// descriptor), never by a bare pid. Each backend adds `open`,
/// `from_received`, `signal`, `has_exited` and `exit_info` in an `impl
/// ProcHandle` of its own (`platform/<os>/process.rs`).
#[derive(Debug)]
pub struct ProcHandle {
    pub(super) fd: OwnedFd,
    pid: i32,
}

impl AsFd for ProcHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ProcHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl ProcHandle {
    pub(super) fn new(fd: OwnedFd, pid: i32) -> ProcHandle {
        ProcHandle { fd, pid }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }
}

/// How a process ended, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawExit {
    Code(i32),
    Signal(i32),
}

/// What the kernel says of the end of a process archon is not the parent
/// of (a monitored process, a service's `MAINPID=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleExit {
    Exited(RawExit),
    /// Not reaped by its parent yet (or still running).
    NotYet,
    /// This kernel cannot tell (Linux before 6.15; FreeBSD gives the
    /// status with the exit event instead, see `ExitWatch::drain`).
    Unsupported,
}

/// Why a program could not be started, with the code a shell would report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    pub code: i32,
    pub reason: String,
}

/// A resource limit: soft and hard, `Rlimit::INFINITY` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub cur: u64,
    pub max: u64,
}

impl Rlimit {
    pub const INFINITY: u64 = u64::MAX;

    pub fn both(n: u64) -> Rlimit {
        Rlimit { cur: n, max: n }
    }
}

/// What `reboot` is asked to do at the end of an orderly shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootCmd {
    Poweroff,
    Reboot,
    Halt,
}

/// One process of the process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcNode {
    pub pid: i32,
    pub ppid: i32,
    /// The kernel's state letter (R, S, D, Z, T, ...).
    pub state: char,
    /// The command line; the name in parentheses when it has none (a
    /// zombie, a kernel thread).
    pub argv: Vec<String>,
}

/// One `recv_with_fds`: the bytes read, and whether descriptors were lost
/// (the control buffer was too small, or the caller's bound was reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub bytes: usize,
    pub truncated: bool,
}

/// Everything the child needs, prepared before it is forked: the child
/// side of `spawn` only reads this and allocates nothing.
pub struct SpawnSpec {
    pub program: CString,
    pub argv: Vec<CString>,
    /// Shared: archon's own variables are made into C strings once and
    /// handed to every child (`event_loop::Env`).
    pub envp: Vec<std::rc::Rc<CString>>,
    /// Fds that become 0, 1, 2 (each must be >= 3 or equal to its target).
    pub stdio: [RawFd; 3],
    /// The RLIMIT_NOFILE archon itself started with, restored in the child.
    pub nofile: Rlimit,
    /// Signals archon ignores (`ignored_signals()`), reset to SIG_DFL.
    pub ignored_signals: Vec<i32>,
    /// Keep every fd archon inherited (the entrypoint's main child): archon's
    /// own fds are all close-on-exec, so only inherited ones cross exec.
    /// Otherwise nothing but 0, 1 and 2 does.
    pub keep_inherited_fds: bool,
    /// Make the child's process group the foreground group of this terminal.
    pub foreground_tty: Option<RawFd>,
    /// Working directory to change to before exec.
    pub cwd: Option<CString>,
    /// More fds for the child: (archon's fd, the number the child sees),
    /// e.g. the write end of an s6 readiness pipe, or the sockets passed
    /// with systemd's protocol from 3 on. The numbers are distinct and at
    /// least 3; at most `MAX_EXTRA_FDS` (a spawn with more is refused).
    pub extra_fds: Vec<(RawFd, RawFd)>,
    /// Give the child `LISTEN_PID=<its own pid>` (systemd's socket
    /// passing: a program takes `LISTEN_FDS` only when it names it), set
    /// in the child between its start and exec.
    pub listen_pid: bool,
    /// Resource limits to set: (resource number from `rlimit_resource`, limit).
    pub rlimits: Vec<(i32, Rlimit)>,
    pub umask: Option<u32>,
    /// Switch to these (uid, gid, supplementary groups) before exec.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Option<Vec<u32>>,
    /// Exec nothing: once its stdio is in place, the child writes
    /// `archon: <reason>` to its stderr and exits with the code, as a shell's
    /// child does when the program cannot be run. `Run` uses it, so the
    /// reason reaches the caller's terminal and the reply is still the exit.
    pub fail_with: Option<(i32, CString)>,
}

/// A socket archon binds for services (`bind_service_socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec<'a> {
    Tcp(std::net::SocketAddr),
    Udp(std::net::SocketAddr),
    Unix {
        path: &'a std::path::Path,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    },
}

/// The most extra fds a child may get (the child moves them with a
/// fixed-size table: it cannot allocate).
pub const MAX_EXTRA_FDS: usize = 256;

/// Room for `LISTEN_PID=` and a pid, written by the child in place.
pub const PID_SLOT: usize = 24;

impl SpawnSpec {
    /// A child with these essentials and nothing else: no extra fd, no
    /// terminal, no identity change, archon's cwd and umask.
    pub fn new(
        program: CString,
        argv: Vec<CString>,
        envp: Vec<std::rc::Rc<CString>>,
        stdio: [RawFd; 3],
        nofile: Rlimit,
        ignored_signals: Vec<i32>,
    ) -> SpawnSpec {
        SpawnSpec {
            program,
            argv,
            envp,
            stdio,
            nofile,
            ignored_signals,
            keep_inherited_fds: false,
            foreground_tty: None,
            cwd: None,
            extra_fds: Vec::new(),
            listen_pid: false,
            rlimits: Vec::new(),
            umask: None,
            uid: None,
            gid: None,
            groups: None,
            fail_with: None,
        }
    }

    /// The highest fd the child must keep before it moves them into place.
    pub fn top_fd(&self) -> RawFd {
        self.stdio
            .iter()
            .copied()
            .chain(self.extra_fds.iter().map(|(src, _)| *src))
            .max()
            .unwrap_or(2)
            .max(2)
    }
}

/// What the kernel says a process costs (`ProcStats::sample`). `None`: the
/// platform cannot say (never a made-up number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSample {
    /// User + system CPU time, ns.
    pub cpu_ns: u64,
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
    /// The resident set's high-water mark.
    pub peak_rss_bytes: Option<u64>,
    /// Bytes the process made the storage layer read or write.
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub threads: Option<u32>,
    pub fds: Option<u32>,
    pub vcsw: Option<u64>,
    pub ivcsw: Option<u64>,
    /// Only for a process in a network namespace other than archon's:
    /// that namespace's bytes (without loopback).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// archon's own costs, for its `process_*` metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnUsage {
    pub cpu_ns: u64,
    pub rss_bytes: u64,
    pub vsize_bytes: Option<u64>,
    pub fds: Option<u32>,
    /// The soft RLIMIT_NOFILE.
    pub max_fds: Option<u64>,
}
