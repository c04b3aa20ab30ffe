//! Linux backend: clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) so a pidfd
//! exists from the moment the child does (clone3 as a fallback), pidfd signalling, the single waitpid(-1) reaper, PIDFD_GET_INFO
//! for processes archon did not start, signalfd set-up.
//!
//! Between clone3 and execve the child calls only async-signal-safe syscalls
//! and never allocates: everything it needs is prepared in `SpawnSpec`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Why a program could not be started, with the code a shell would report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    pub code: i32,
    pub reason: String,
}

/// Why a path cannot be executed; made into words only when it is the
/// answer (a PATH search tries several candidates and most are missing).
enum Unusable {
    NulInName,
    /// `stat` failed: missing (127), or another error (126).
    Stat(io::Error),
    Dir,
    /// `access(X_OK)` failed.
    Denied(io::Error),
}

impl Unusable {
    fn into_error(self, path: &Path) -> ExecError {
        let (code, reason) = match self {
            Unusable::NulInName => (127, "program name contains NUL".into()),
            Unusable::Stat(e) => (
                if e.kind() == io::ErrorKind::NotFound {
                    127
                } else {
                    126
                },
                format!("{}: {e}", path.display()),
            ),
            Unusable::Dir => (126, format!("{}: is a directory", path.display())),
            Unusable::Denied(e) => (126, format!("{}: {e}", path.display())),
        };
        ExecError { code, reason }
    }
}

fn check_executable(path: &Path) -> Result<(), Unusable> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Unusable::NulInName)?;
    let meta = std::fs::metadata(path).map_err(Unusable::Stat)?;
    if meta.is_dir() {
        return Err(Unusable::Dir);
    }
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(Unusable::Denied(io::Error::last_os_error()));
    }
    Ok(())
}

/// Resolves argv[0] like execvp: names with a slash are used as given, others
/// are searched in `path_var`. Done in the parent so that "not found" (127)
/// and "not executable" (126) are known before anything is forked.
pub fn resolve_program(
    argv0: &std::ffi::OsStr,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<CString, ExecError> {
    let to_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| ExecError {
            code: 127,
            reason: "program name contains NUL".into(),
        })
    };
    if argv0.as_bytes().contains(&b'/') {
        let p = Path::new(argv0);
        check_executable(p).map_err(|u| u.into_error(p))?;
        return to_c(p);
    }
    let search = path_var
        .map(|p| p.as_bytes())
        .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied: Option<ExecError> = None;
    for dir in search.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let cand = Path::new(std::ffi::OsStr::from_bytes(dir)).join(argv0);
        match check_executable(&cand) {
            Ok(()) => return to_c(&cand),
            // Present but not runnable: the answer unless a later
            // directory has one that runs (as execvp does).
            Err(u @ (Unusable::Dir | Unusable::Denied(_))) => {
                if denied.is_none() {
                    denied = Some(u.into_error(&cand));
                }
            }
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or(ExecError {
        code: 127,
        reason: format!("{}: command not found", argv0.to_string_lossy()),
    }))
}

/// Everything the child needs, prepared before clone3.
pub struct SpawnSpec {
    pub program: CString,
    pub argv: Vec<CString>,
    /// Shared: archon's own variables are made into C strings once and
    /// handed to every child (`event_loop::Env`).
    pub envp: Vec<std::rc::Rc<CString>>,
    /// Fds that become 0, 1, 2 (each must be >= 3 or equal to its target).
    pub stdio: [RawFd; 3],
    /// The RLIMIT_NOFILE archon itself started with, restored in the child.
    pub nofile: libc::rlimit,
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
    /// One more fd for the child: (archon's fd, the number the child sees),
    /// e.g. the write end of an s6 readiness pipe.
    pub extra_fd: Option<(RawFd, RawFd)>,
    /// Resource limits to set: (RLIMIT_*, soft, hard).
    pub rlimits: Vec<(i32, libc::rlimit)>,
    pub umask: Option<u32>,
    /// Switch to these (uid, gid, supplementary groups) before exec.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Option<Vec<libc::gid_t>>,
    /// Exec nothing: once its stdio is in place, the child writes
    /// `archon: <reason>` to its stderr and exits with the code, as a shell's
    /// child does when the program cannot be run. `Run` uses it, so the
    /// reason reaches the caller's terminal and the reply is still the exit.
    pub fail_with: Option<(i32, CString)>,
}

impl SpawnSpec {
    /// A child with these essentials and nothing else: no extra fd, no
    /// terminal, no identity change, archon's cwd and umask.
    pub fn new(
        program: CString,
        argv: Vec<CString>,
        envp: Vec<std::rc::Rc<CString>>,
        stdio: [RawFd; 3],
        nofile: libc::rlimit,
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
            extra_fd: None,
            rlimits: Vec::new(),
            umask: None,
            uid: None,
            gid: None,
            groups: None,
            fail_with: None,
        }
    }
}

/// The RLIMIT_* number of a resource name as the config spells it.
pub fn rlimit_resource(name: &str) -> Option<i32> {
    Some(match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    } as i32)
}

/// (uid, primary gid) of a user, by name or number.
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let user = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(name),
    };
    match user {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) if name.parse::<u32>().is_ok() => {
            // A number without a passwd entry is still a uid.
            let n = name.parse::<u32>().unwrap_or(u32::MAX);
            Ok((n, n))
        }
        Ok(None) => Err(format!("unknown user {name:?}")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

/// A group's gid, by name or number.
pub fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

/// The supplementary groups of a user (as initgroups would set them).
pub fn user_groups(name: &str, gid: u32) -> Vec<u32> {
    let Ok(c) = CString::new(name) else {
        return vec![gid];
    };
    nix::unistd::getgrouplist(&c, nix::unistd::Gid::from_raw(gid))
        .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid])
}

pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

pub fn to_cstrings<I, S>(items: I) -> Option<Vec<CString>>
where
    I: IntoIterator<Item = S>,
    S: Into<Vec<u8>>,
{
    items.into_iter().map(|s| CString::new(s).ok()).collect()
}

/// Stack for the vfork-style child: it only resets signals, dups fds and
/// execs, which needs a few KiB.
const CHILD_STACK: usize = 64 * 1024;

thread_local! {
    /// The vfork-style children's stack (see `spawn`).
    static CHILD_STACK_MEM: Box<[u8]> = vec![0u8; CHILD_STACK].into_boxed_slice();
}

struct ChildCtx<'a> {
    spec: &'a SpawnSpec,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg points at the ChildCtx on the parent's stack, which stays
    // valid because the parent is suspended (CLONE_VFORK) until exec or exit.
    unsafe {
        let ctx = &*(arg as *const ChildCtx);
        child_exec(ctx.spec, ctx.argv, ctx.envp)
    }
}

/// Starts a child in its own process group, with default signal handling,
/// an empty mask and the given stdio, and returns its pidfd.
///
/// Like posix_spawn, the child shares archon's memory and archon is
/// suspended until the child has exec'd (CLONE_VM | CLONE_VFORK), which
/// spares copying archon's page tables; CLONE_PIDFD gives the pidfd in the
/// same system call. If the kernel refuses that combination, a fork-style
/// clone3 does the same job more slowly.
pub fn spawn(spec: &SpawnSpec) -> io::Result<Spawned> {
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let ctx = ChildCtx {
        spec,
        argv: &argv,
        envp: &envp,
    };
    // One stack for every child, made once: children run one at a time
    // (archon is suspended until each has exec'd). A fresh heap block per
    // spawn fragmented the heap: with 1 000 services archon's PSS grew by
    // ~17 KiB per spawn, pages the children had touched.
    let stack_base = CHILD_STACK_MEM.with(|m| m.as_ptr() as usize);
    let top = (stack_base + CHILD_STACK) & !15;
    let mut pidfd: libc::c_int = -1;
    // CLONE_FILES too (unless the child keeps inherited fds): copying
    // archon's fd table, a pidfd per tracked process, into every child was
    // most of a spawn's cost with 1 000 daemons. The child unshares only
    // the few fds it needs (close_range with CLOSE_RANGE_UNSHARE).
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    if !spec.keep_inherited_fds {
        flags |= libc::CLONE_FILES;
    }
    // SAFETY: the child runs child_main on its own stack, touches only ctx
    // (alive until clone returns, see child_main) and never returns.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            flags,
            &ctx as *const ChildCtx as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) {
            return spawn_forking(spec, &argv, &envp);
        }
        return Err(err);
    }
    // SAFETY: the kernel wrote a fresh pidfd (CLONE_PIDFD implies O_CLOEXEC).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned { pid, pidfd })
}

fn spawn_forking(
    spec: &SpawnSpec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Result<Spawned> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: zeroed clone_args is the documented "no options" value.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    // No CLONE_FILES here: without vfork, archon runs on while the child
    // starts, and could close an fd meant for the child (a request's stdio)
    // in a shared table before the child has taken it.
    args.flags = libc::CLONE_PIDFD as u64;
    args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 without a stack behaves like fork; the child branch only
    // makes async-signal-safe calls on memory prepared above and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    let pid = cvt(ret)?;
    if pid == 0 {
        // SAFETY: in the child; see above.
        unsafe { child_exec(spec, argv, envp) }
    }
    // SAFETY: the kernel wrote a fresh pidfd (CLONE_PIDFD implies O_CLOEXEC).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: pid as i32,
        pidfd,
    })
}

unsafe fn child_exec(
    spec: &SpawnSpec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    libc::setpgid(0, 0);
    if let Some(tty) = spec.foreground_tty {
        // Still under archon's mask, where SIGTTOU is blocked: a background
        // group may take the terminal without being stopped.
        let pgrp: libc::pid_t = libc::getpid();
        libc::ioctl(tty, libc::TIOCSPGRP, &pgrp as *const libc::pid_t);
    }
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    // exec resets caught signals itself; only ignored ones survive it.
    for &sig in &spec.ignored_signals {
        set_default(sig);
    }
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    if !spec.keep_inherited_fds {
        // The fd table may still be archon's own (CLONE_FILES): take a
        // private copy of the fds below the highest one needed, closing the
        // rest, before touching anything. (Without CLONE_FILES this just
        // closes; on kernels without CLOSE_RANGE_UNSHARE, unshare copies all.)
        let top = spec
            .stdio
            .iter()
            .copied()
            .chain(spec.extra_fd.map(|(src, _)| src))
            .max()
            .unwrap_or(2)
            .max(2) as u32
            + 1;
        let r = libc::syscall(
            libc::SYS_close_range,
            top,
            u32::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        );
        if r < 0 && libc::unshare(libc::CLONE_FILES) < 0 {
            libc::_exit(127);
        }
    }
    for (target, &fd) in spec.stdio.iter().enumerate() {
        let target = target as RawFd;
        if fd == target {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else if libc::dup2(fd, target) < 0 {
            libc::_exit(127);
        }
    }
    let mut keep_extra = None;
    if let Some((src, target)) = spec.extra_fd {
        if src == target {
            let flags = libc::fcntl(src, libc::F_GETFD);
            libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else if libc::dup2(src, target) < 0 {
            libc::_exit(127);
        }
        keep_extra = Some(target as u32);
    }
    if !spec.keep_inherited_fds {
        // Nothing but 0, 1 and 2 (and the extra fd) crosses exec, not even
        // fds archon inherited.
        match keep_extra {
            Some(k) => {
                if k > 3 {
                    libc::syscall(libc::SYS_close_range, 3u32, k - 1, 0u32);
                }
                libc::syscall(libc::SYS_close_range, k + 1, u32::MAX, 0u32);
            }
            None => {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
        }
    }

    if let Some((code, reason)) = &spec.fail_with {
        let r = reason.as_bytes();
        libc::write(2, b"archon: ".as_ptr().cast(), 8);
        libc::write(2, r.as_ptr().cast(), r.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::_exit(*code);
    }
    // archon raised its soft limit to the hard one; when they were equal it
    // changed nothing and there is nothing to give back.
    if spec.nofile.rlim_cur != spec.nofile.rlim_max {
        libc::setrlimit(libc::RLIMIT_NOFILE, &spec.nofile);
    }
    for (res, lim) in &spec.rlimits {
        if libc::setrlimit(*res as _, lim) != 0 {
            child_fail(b"cannot set a resource limit");
        }
    }
    if let Some(m) = spec.umask {
        libc::umask(m as libc::mode_t);
    }
    // Raw system calls: glibc's wrappers may try to synchronise threads,
    // and this child shares archon's memory.
    if let Some(groups) = &spec.groups {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            child_fail(b"cannot set the supplementary groups");
        }
    }
    if let Some(g) = spec.gid {
        if libc::syscall(libc::SYS_setresgid, g, g, g) != 0 {
            child_fail(b"cannot change group");
        }
    }
    if let Some(u) = spec.uid {
        if libc::syscall(libc::SYS_setresuid, u, u, u) != 0 {
            child_fail(b"cannot change user");
        }
    }
    if let Some(dir) = &spec.cwd {
        if libc::chdir(dir.as_ptr()) != 0 {
            child_fail(b"cannot change to the service's directory");
        }
    }
    libc::execve(spec.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    let errno = *libc::__errno_location();
    // The parent resolved the program already; this is the rare late failure
    // (a bad binary format, a vanished file). Say so on the child's stderr.
    let why: &[u8] = match errno {
        libc::ENOENT => b": not found\n",
        libc::EACCES => b": permission denied\n",
        libc::ENOEXEC => b": exec format error\n",
        libc::E2BIG => b": argument list too long\n",
        libc::ENOMEM => b": out of memory\n",
        _ => b": cannot execute\n",
    };
    let prog = spec.program.as_bytes();
    libc::write(2, b"archon: exec ".as_ptr().cast(), 13);
    libc::write(2, prog.as_ptr().cast(), prog.len());
    libc::write(2, why.as_ptr().cast(), why.len());
    libc::_exit(if errno == libc::ENOENT { 127 } else { 126 });
}

/// In the child before exec: says why on its stderr and exits 126.
unsafe fn child_fail(why: &[u8]) -> ! {
    libc::write(2, b"archon: ".as_ptr().cast(), 8);
    libc::write(2, why.as_ptr().cast(), why.len());
    libc::write(2, b"\n".as_ptr().cast(), 1);
    libc::_exit(126)
}

/// The signals whose disposition is SIG_IGN in archon now: the only ones a
/// child would keep across exec (caught signals are reset by exec).
/// Found once at start-up instead of resetting all 64 in every child.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn ignored_signals() -> Vec<i32> {
    (1..=libc::SIGRTMAX())
        .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
        .filter(|&sig| {
            let mut old = [0usize; 4];
            // SAFETY: a NULL new action only queries; old is large enough for
            // the kernel's struct sigaction on the supported targets.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<u8>(),
                    old.as_mut_ptr(),
                    8usize,
                )
            };
            ret == 0 && old[0] == libc::SIG_IGN
        })
        .collect()
}

/// Elsewhere the kernel's sigaction layout differs: reset every signal.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn ignored_signals() -> Vec<i32> {
    (1..=libc::SIGRTMAX())
        .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
        .collect()
}

/// Resets a signal to SIG_DFL with the raw syscall: glibc's wrappers refuse
/// 32 and 33 (reserved for its threads), which a parent may still have left
/// ignored.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn set_default(sig: i32) {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    libc::syscall(
        libc::SYS_rt_sigaction,
        sig,
        &act as *const KernelSigaction,
        std::ptr::null_mut::<KernelSigaction>(),
        8usize,
    );
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn set_default(sig: i32) {
    libc::signal(sig, libc::SIG_DFL);
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd returned is owned by us.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: fresh fd from the kernel (pidfds are always close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_send_signal(pidfd: &impl AsRawFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with no info pointer.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(|_| ())
}

/// Signals a whole process group. Safe against reuse only while the group
/// leader is unreaped or the group still has members (the kernel does not
/// hand out a pid that is still a live process group id).
pub fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::kill(-pgid, sig) } as libc::c_long).map(|_| ())
}

/// How a process ended, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawExit {
    Code(i32),
    Signal(i32),
}

fn decode_wait_status(status: libc::c_int) -> Option<RawExit> {
    if libc::WIFEXITED(status) {
        Some(RawExit::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(RawExit::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// The one reaper: reaps one exited child of archon (tracked or orphan).
/// Stopped or continued children are not reported. None when nothing is left.
pub fn reap_one() -> Option<(i32, RawExit)> {
    reap_from(-1)
}

/// Reaps one known child if it has exited. `waitpid(-1)` walks every child
/// of archon in the kernel; with 1 000 children, reaping a burst of exits
/// that way is quadratic. A child whose pidfd said it exited is reaped by
/// its pid instead.
pub fn reap_pid(pid: i32) -> Option<(i32, RawExit)> {
    if pid <= 0 {
        return None;
    }
    reap_from(pid)
}

fn reap_from(which: i32) -> Option<(i32, RawExit)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain syscall.
        let pid = unsafe { libc::waitpid(which, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return None;
        }
        if let Some(exit) = decode_wait_status(status) {
            return Some((pid, exit));
        }
    }
}

/// What PIDFD_GET_INFO says of a process archon is not the parent of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidfdExit {
    Exited(RawExit),
    /// Not reaped by its parent yet (or still running).
    NotYet,
    /// This kernel cannot tell (before 6.15).
    Unsupported,
}

pub fn pidfd_exit_info(pidfd: &impl AsRawFd) -> PidfdExit {
    // SAFETY: pidfd_info is plain data; zero is a valid request.
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = libc::PIDFD_INFO_EXIT as u64;
    // SAFETY: the ioctl writes at most size_of::<pidfd_info>() bytes into info.
    let ret = unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_INFO, &mut info) };
    if ret < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => PidfdExit::NotYet,
            _ => PidfdExit::Unsupported,
        };
    }
    if info.mask & libc::PIDFD_INFO_EXIT as u64 == 0 {
        return PidfdExit::NotYet;
    }
    match decode_wait_status(info.exit_code) {
        Some(e) => PidfdExit::Exited(e),
        None => PidfdExit::Unsupported,
    }
}

/// True when the process behind the pidfd has exited (the pidfd polls readable).
pub fn pidfd_exited(pidfd: &impl AsRawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout: never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// Checks that `fd` is a pidfd and returns the pid it refers to.
pub fn pidfd_pid(fd: &impl AsRawFd) -> Result<i32, String> {
    let raw = fd.as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
        .map_err(|e| format!("cannot inspect fd: {e}"))?;
    let pid = text
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .ok_or_else(|| "fd is not a pidfd".to_string())?;
    // Signal 0 through it: EBADF would mean it is not a pidfd after all.
    match pidfd_send_signal(fd, 0) {
        Ok(()) => Ok(pid),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(pid),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(pid),
        Err(_) => Err("fd is not a pidfd".into()),
    }
}

/// The command line of a process, for `Status` of monitored processes.
pub fn proc_cmdline(pid: i32) -> Vec<String> {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) => bytes
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What `/proc` says of one process, for the process tree.
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

/// One process's node, or None when it is gone.
pub fn proc_node(pid: i32) -> Option<ProcNode> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let comm = head.split_once(" (").map_or("", |(_, c)| c);
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let mut argv = proc_cmdline(pid);
    argv.truncate(64);
    if argv.is_empty() {
        argv.push(format!("({comm})"));
    }
    Some(ProcNode {
        pid,
        ppid,
        state,
        argv,
    })
}

/// The children of a process: `/proc/PID/task/*/children` (every thread's),
/// so a walk down from archon reads only its own descendants. None when the
/// kernel lacks CONFIG_PROC_CHILDREN or the process is gone.
pub fn proc_children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut seen_file = false;
    for t in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        seen_file = true;
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    seen_file.then_some(out)
}

/// Makes archon a child subreaper so orphans of its children come back to it.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } as libc::c_long)
        .map(|_| ())
}

/// `struct sched_attr` of sched_setattr(2); the libc crate does not have it.
#[repr(C)]
#[derive(Default, Debug)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    /// For SCHED_OTHER on Linux >= 6.12: the slice, in ns.
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

/// The slice archon asks the fair scheduler for, in ns: the smallest the
/// kernel takes.
pub const SHORT_SLICE_NS: u64 = 100_000;
pub const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// The scheduling attributes of a process (0: archon itself).
pub fn sched_getattr(pid: i32) -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: attr is a valid, writable sched_attr of `size` bytes.
    cvt(unsafe { libc::syscall(libc::SYS_sched_getattr, pid, &mut attr, size, 0) })?;
    Ok(attr)
}

fn sched_setattr(attr: &SchedAttr) -> io::Result<()> {
    // SAFETY: attr is a valid sched_attr; the kernel only reads it.
    cvt(unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr, 0) }).map(|_| ())
}

/// Makes archon's one thread win the CPU from the children it starts, so
/// that under load it accepts, spawns and reaps without queueing behind
/// them (with 16 clients running commands on 2 CPUs, archon at nice 0 spent
/// three times its own CPU time waiting for a CPU):
/// - nice `nice` (-20..=0): a heavier weight in the fair scheduler;
/// - a short slice (EEVDF, Linux >= 6.12; ignored before): an earlier
///   deadline, so archon runs as soon as it wakes up;
/// - SCHED_FLAG_RESET_ON_FORK: every child starts at nice 0 with the default
///   slice, as if archon had never changed anything.
///
/// Only done when archon was started as SCHED_OTHER at nice 0: a policy or
/// nice value the admin chose is left alone, and then children inherit it.
/// Without the privilege to lower its nice, archon keeps nice 0 and still
/// takes the short slice. Returns the nice value and slice (0 when the kernel
/// reports none) in effect afterwards.
pub fn prioritise(nice: i32) -> io::Result<(i32, u64)> {
    let mut attr = sched_getattr(0)?;
    if attr.policy != libc::SCHED_OTHER as u32 || attr.nice != 0 {
        return Err(io::Error::other(format!(
            "started with policy {} nice {}; left as it is",
            attr.policy, attr.nice
        )));
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.nice = nice;
    attr.runtime = SHORT_SLICE_NS;
    attr.flags |= SCHED_FLAG_RESET_ON_FORK;
    if let Err(e) = sched_setattr(&attr) {
        if e.raw_os_error() != Some(libc::EPERM) || nice == 0 {
            return Err(e);
        }
        attr.nice = 0;
        sched_setattr(&attr)?;
    }
    let now = sched_getattr(0)?;
    Ok((now.nice, now.runtime))
}

/// Raises the soft fd limit to the hard one; returns the original limit,
/// which children get back.
pub fn raise_nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
    lim
}

/// Makes sure 0, 1 and 2 are open (on /dev/null if not), so no socket or
/// pidfd is ever given one of those numbers.
pub fn ensure_stdio_open() {
    for fd in 0..3 {
        // SAFETY: fcntl F_GETFD only queries.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            let path = c"/dev/null";
            // SAFETY: valid path; the fd is deliberately leaked to fill the slot.
            unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The signals archon handles itself, blocked and read through a signalfd.
pub fn handled_signals() -> Vec<i32> {
    // 32 and 33 belong to glibc's threads (below SIGRTMIN), never ours.
    let mut v: Vec<i32> = (1..=libc::SIGRTMAX())
        .filter(|&s| s < 32 || s >= libc::SIGRTMIN())
        .filter(|s| !NEVER_BLOCKED.contains(s))
        .collect();
    v.sort_unstable();
    v
}

/// Signals archon never blocks: the unblockable ones, faults raised by its
/// own code (which must kill it, not queue), and SIGPIPE (ignored: archon's
/// writes get EPIPE instead).
const NEVER_BLOCKED: [i32; 10] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGSYS,
    libc::SIGPIPE,
];

/// Whether a signal received by archon is passed on to the main child: every
/// signal archon handles except SIGCHLD and the terminal's SIGTTIN/SIGTTOU
/// (which concern archon's own access to the terminal).
pub fn is_forwarded(sig: i32) -> bool {
    !matches!(sig, libc::SIGCHLD | libc::SIGTTIN | libc::SIGTTOU) && !NEVER_BLOCKED.contains(&sig)
}

/// fd 0 when it is a terminal whose foreground group is archon's own: then
/// the main child should take the terminal over (as a shell gives it a job).
pub fn foreground_tty() -> Option<RawFd> {
    // SAFETY: plain queries on fd 0.
    unsafe { (libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp()).then_some(0) }
}

pub fn getpid() -> i32 {
    // SAFETY: cannot fail.
    unsafe { libc::getpid() }
}

/// PID 1 of the system itself (not of a container): the initial PID
/// namespace has a fixed inode number (PROC_PID_INIT_INO). Without /proc,
/// archon cannot tell and assumes a container.
pub fn is_system_init() -> bool {
    use std::os::unix::fs::MetadataExt;
    getpid() == 1 && std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == 0xEFFF_FFFC)
}

/// Asks the kernel to send SIGINT to init on Ctrl-Alt-Del instead of
/// rebooting at once.
pub fn ctrl_alt_del_to_sigint() -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) } as libc::c_long).map(|_| ())
}

/// What `reboot(2)` is asked to do at the end of an orderly shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootCmd {
    Poweroff,
    Reboot,
    Halt,
}

/// `sync`, then `reboot(2)`. On the real system this does not return; in a
/// PID namespace the kernel ends the namespace, reporting SIGHUP (reboot) or
/// SIGINT (poweroff, halt) to its parent. Returns only on failure.
pub fn reboot(cmd: RebootCmd) -> io::Error {
    let how = match cmd {
        RebootCmd::Poweroff => libc::LINUX_REBOOT_CMD_POWER_OFF,
        RebootCmd::Reboot => libc::LINUX_REBOOT_CMD_RESTART,
        RebootCmd::Halt => libc::LINUX_REBOOT_CMD_HALT,
    };
    // SAFETY: plain syscalls.
    unsafe {
        libc::sync();
        libc::reboot(how);
    }
    io::Error::last_os_error()
}

/// A pipe: (read end, non-blocking, close-on-exec; write end, blocking,
/// close-on-exec until given to a child).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills in two fds.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: fresh fds we now own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain fcntl on our fd.
    unsafe {
        let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

/// A non-blocking datagram socket bound to `name` in the abstract
/// namespace, with SO_PASSCRED.
pub fn notify_socket(name: &str) -> io::Result<OwnedFd> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::PassCred, &true)?;
    let addr = UnixAddr::new_abstract(name.as_bytes())?;
    bind(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

/// One notification: the sender's pid (from the kernel) and the text.
/// None when nothing is waiting.
pub fn recv_notify(fd: &OwnedFd) -> Option<(i32, String)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    loop {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(UnixCredentials, [RawFd; 8]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut pid = None;
                for c in msg.cmsgs().into_iter().flatten() {
                    match c {
                        ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid()),
                        // Fds sent along (FDSTORE) are not kept.
                        ControlMessageOwned::ScmRights(fds) => {
                            for f in fds {
                                // SAFETY: the kernel just gave us this fd.
                                drop(unsafe { OwnedFd::from_raw_fd(f) });
                            }
                        }
                        _ => {}
                    }
                }
                let n = msg.bytes;
                let Some(pid) = pid else { continue };
                return Some((pid, String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Gives free heap memory back to the kernel (after a config's Lua state
/// is gone, its pages would otherwise stay in archon's RSS).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: plain glibc call.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether archon has any child left (exited or not), without reaping.
pub fn has_children() -> bool {
    // SAFETY: siginfo is plain data the kernel fills in.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let ret = libc::waitid(libc::P_ALL, 0, &mut info, flags);
        !(ret < 0 && *libc::__errno_location() == libc::ECHILD)
    }
}

/// Waits for any child and reaps it (the system init's last resort, when
/// nothing else is left to do).
pub fn reap_blocking() {
    let mut status = 0;
    // SAFETY: plain syscall.
    let ret = unsafe { libc::waitpid(-1, &mut status, 0) };
    if ret < 0 {
        // No children at all (and signals are blocked, so pause() would
        // never return): look again in a second.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `kill(-1, sig)`: every process archon may signal except itself.
pub fn kill_all(sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::kill(-1, sig) } as libc::c_long).map(|_| ())
}

/// The processes in archon's view of /proc that still run, other than
/// archon itself and kernel threads (zombies are dead already). `None` when
/// /proc cannot be read, or is not of archon's PID namespace (`unshare
/// --pid` without `--mount-proc`: it lists the parent namespace's
/// processes, which archon can neither see die nor signal).
pub fn other_live_pids() -> Option<Vec<i32>> {
    let me = getpid();
    let own = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()));
    if own != Some(me) {
        return None;
    }
    let dir = std::fs::read_dir("/proc").ok()?;
    let mut out = Vec::new();
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        // Fields after the command name, which may itself hold ") ".
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let state = f.first().copied().unwrap_or("");
        let flags: u64 = f.get(6).and_then(|v| v.parse().ok()).unwrap_or(0);
        const PF_KTHREAD: u64 = 0x0020_0000;
        if state == "Z" || state == "X" || flags & PF_KTHREAD != 0 {
            continue;
        }
        out.push(pid);
    }
    Some(out)
}

/// Blocks `signals`, ignores SIGPIPE, and returns a non-blocking signalfd.
pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local, then plain syscalls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads one pending signal from a signalfd; None when drained.
pub fn read_signal(fd: &impl AsRawFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data; read writes at most its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = libc::read(
            fd.as_raw_fd(),
            &mut info as *mut _ as *mut libc::c_void,
            size,
        );
        (n == size as isize).then_some(info.ssi_signo as i32)
    }
}

pub fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The calling process gets SIGKILL when its parent dies (the Lua worker:
/// it must not outlive archon).
pub fn die_with_parent() {
    parent_death_signal(libc::SIGKILL);
}

/// The calling process gets `sig` when its parent dies (`--parent-death-signal`).
pub fn parent_death_signal(sig: i32) {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
}

/// Names the calling process for ps and top (`comm`, 15 bytes at most):
/// the worker is exec'd through /proc/self/exe, whose name is "exe".
pub fn set_process_name(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of which the
        // kernel keeps 15 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
    }
}

/// archon's effective uid: 0 when it may switch a child to another user.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The peer of a connected Unix socket as of its connect(): uid and gid
/// (SO_PEERCRED), groups left empty (an admin needs none, so `peer_groups`
/// is asked only for the others: one system call less per connection).
/// None when the kernel gives no credentials.
pub fn peer_credentials(fd: &impl AsRawFd) -> Option<crate::access::Peer> {
    let mut cred: libc::ucred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len describe a valid, writable ucred.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    Some(crate::access::Peer {
        uid: cred.uid,
        gid: cred.gid,
        groups: Vec::new(),
    })
}

/// The peer's supplementary groups (SO_PEERGROUPS); empty where unknown.
pub fn peer_groups(fd: &impl AsRawFd) -> Vec<u32> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr() as *mut libc::c_void,
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return groups;
        }
        let erange = io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE);
        if !erange || n <= groups.len() || n > 65536 {
            return Vec::new();
        }
        groups.resize(n, 0);
    }
}

/// The process group of a process (a zombie still has one), if it exists.
pub fn process_group(pid: i32) -> Option<i32> {
    // SAFETY: plain syscall.
    let g = unsafe { libc::getpgid(pid) };
    (g > 0).then_some(g)
}

/// The real uid a live process runs as (from /proc), for checking that a
/// peer asks to watch only its own processes.
pub fn process_uid(pid: i32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(code: &str) -> SpawnSpec {
        SpawnSpec::new(
            CString::new("/bin/sh").unwrap(),
            to_cstrings(["sh", "-c", code]).unwrap(),
            Vec::new(),
            [0, 1, 2],
            libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            },
            ignored_signals(),
        )
    }

    fn wait_exit(s: &Spawned) -> i32 {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                s.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        assert_eq!(ret, 0);
        unsafe { info.si_status() }
    }

    #[test]
    fn both_spawn_paths_give_a_pidfd_and_a_status() {
        let a = spawn(&spec("exit 5")).unwrap();
        assert_eq!(wait_exit(&a), 5);
        let s = spec("exit 6");
        let argv: Vec<_> = s
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = [std::ptr::null()];
        let b = spawn_forking(&s, &argv, &envp).unwrap();
        assert_eq!(wait_exit(&b), 6);
    }
}
