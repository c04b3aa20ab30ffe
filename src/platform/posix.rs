//! What every POSIX backend does the same way: program search, NSS
//! look-ups, the waitpid reaper, process groups, pipes, SCM_RIGHTS, the
//! listening socket, raw reads and writes, stdio. Part of the contract
//! (re-exported by `platform`), not a backend.

use super::types::{ExecError, RawExit, Received, Rlimit};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(super) fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
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

/// `access(path, X_OK)`: archon may execute it.
pub fn is_executable(path: &CStr) -> bool {
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

fn check_executable(path: &Path) -> Result<(), Unusable> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Unusable::NulInName)?;
    let meta = std::fs::metadata(path).map_err(Unusable::Stat)?;
    if meta.is_dir() {
        return Err(Unusable::Dir);
    }
    if !is_executable(&c) {
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

pub fn to_cstrings<I, S>(items: I) -> Option<Vec<CString>>
where
    I: IntoIterator<Item = S>,
    S: Into<Vec<u8>>,
{
    items.into_iter().map(|s| CString::new(s).ok()).collect()
}

/// (uid, primary gid) of a user, by name or number. NSS: only the Lua
/// worker and start-up call this, never the loop.
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

/// Signals a whole process group. Safe against reuse only while the group
/// leader is unreaped or the group still has members (the kernel does not
/// hand out a pid that is still a live process group id).
pub fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::kill(-pgid, sig) } as libc::c_long).map(|_| ())
}

/// `kill(-1, sig)`: every process archon may signal except itself.
pub fn kill_all(sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::kill(-1, sig) } as libc::c_long).map(|_| ())
}

/// The traditional wait status, the same on Linux and FreeBSD.
pub(super) fn decode_wait_status(status: libc::c_int) -> Option<RawExit> {
    if libc::WIFEXITED(status) {
        Some(RawExit::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(RawExit::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// The one reaper: reaps one exited child of archon (tracked or orphan).
/// Stopped or continued children are not reported. None when nothing is
/// left. (FreeBSD's `wait(-1)` passes over children that have a process
/// descriptor: those are reaped by `reap_pid` when their exit event comes.)
pub fn reap_one() -> Option<(i32, RawExit)> {
    reap_from(-1)
}

/// Reaps one known child if it has exited. `waitpid(-1)` walks every child
/// of archon in the kernel; with 1 000 children, reaping a burst of exits
/// that way is quadratic. A child whose handle said it exited is reaped by
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

/// Whether archon has any child left (exited or not), without reaping.
pub fn has_children() -> bool {
    // SAFETY: siginfo is plain data the kernel fills in.
    let ret = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_ALL, 0, &mut info, flags)
    };
    !(ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
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

/// The process group of a process (a zombie still has one), if it exists.
pub fn process_group(pid: i32) -> Option<i32> {
    // SAFETY: plain syscall.
    let g = unsafe { libc::getpgid(pid) };
    (g > 0).then_some(g)
}

pub fn getpid() -> i32 {
    // SAFETY: cannot fail.
    unsafe { libc::getpid() }
}

pub fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// archon's effective uid: 0 when it may switch a child to another user.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Blocks `signals` (they wait to be read from the signal source) and
/// ignores SIGPIPE (writes get EPIPE); returns the blocked set.
pub(super) fn block_signals(signals: &[i32]) -> io::Result<libc::sigset_t> {
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
        Ok(set)
    }
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

// rlim_t is u64 on Linux, i64 on FreeBSD.
#[allow(clippy::unnecessary_cast)]
pub(super) fn to_libc(l: Rlimit) -> libc::rlimit {
    let conv = |v: u64| {
        if v == Rlimit::INFINITY {
            libc::RLIM_INFINITY
        } else {
            v as libc::rlim_t
        }
    };
    libc::rlimit {
        rlim_cur: conv(l.cur),
        rlim_max: conv(l.max),
    }
}

#[allow(clippy::unnecessary_cast)]
fn from_libc(l: libc::rlimit) -> Rlimit {
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            Rlimit::INFINITY
        } else {
            v as u64
        }
    };
    Rlimit {
        cur: conv(l.rlim_cur),
        max: conv(l.rlim_max),
    }
}

/// The soft RLIMIT_NOFILE now.
pub fn nofile_soft() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a local.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then(|| from_libc(lim).cur)
}

/// Raises the soft fd limit to the hard one; returns the original limit,
/// which children get back.
pub fn raise_nofile() -> Rlimit {
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
    from_libc(lim)
}

/// Makes sure 0, 1 and 2 are open (on /dev/null if not), so no socket or
/// handle is ever given one of those numbers.
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

/// fd 0 when it is a terminal whose foreground group is archon's own: then
/// the main child should take the terminal over (as a shell gives it a job).
pub fn foreground_tty() -> Option<RawFd> {
    // SAFETY: plain queries on fd 0.
    unsafe { (libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp()).then_some(0) }
}

/// Whether an fd is a pipe or a character device (a terminal): the kinds
/// a write may block on.
pub fn is_pipe_or_tty(fd: RawFd) -> bool {
    // SAFETY: fstat into a local.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0
            && matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFCHR)
    }
}

/// Whether an fd is a socket (journald's stdout stream, a socketpair).
pub fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat into a local.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    }
}

/// One `send(2)` that never blocks (MSG_DONTWAIT) and never raises
/// SIGPIPE, for a socket whose description archon shares with others
/// (its stdout): O_NONBLOCK is not set on it. EINTR is retried.
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: sending from a valid buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `write(2)` to an fd archon holds (its stdout or stderr, or a
/// description `reopen_nonblocking` gave). EINTR is retried.
pub fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: writing from a valid buffer of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `read(2)` from an fd archon holds. EINTR is retried.
pub fn read_fd(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: reading into a valid buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes ownership of an fd this process was started with (the Lua
/// worker's socket, fd 3), if it is open.
pub fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the fd is open, was inherited for this purpose, and nothing
    // else in this process owns it (the caller takes it once, at start).
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `_exit(code)`: ends the process at once, running no destructors and
/// flushing nothing (archonctl, when its stdout is gone).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: plain exit.
    unsafe { libc::_exit(code) }
}

/// EMFILE or ENFILE: out of descriptors (accept answers and drains).
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The control-message buffer `recv_with_fds` reads into: room for
/// `max_fds` descriptors. Made once and reused (a fresh one per read was a
/// 1 KiB calloc per request).
pub fn cmsg_buffer(max_fds: usize) -> Vec<u8> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) };
    vec![0u8; space as usize]
}

/// One `recvmsg` on a stream socket, non-blocking, with the descriptors
/// that came along (close-on-exec) appended to `fds`.
#[allow(clippy::ptr_arg)] // nix's recvmsg takes the Vec (it uses its length)
pub fn recv_with_fds(
    sock: BorrowedFd,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Received> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [io::IoSliceMut::new(buf)];
    loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => {
                for c in msg.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(got) = c {
                        for fd in got {
                            // SAFETY: the kernel just installed this fd for us.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                return Ok(Received {
                    bytes: msg.bytes,
                    truncated: msg.flags.contains(MsgFlags::MSG_CTRUNC),
                });
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// One `sendmsg` of `buf` with `fds` as SCM_RIGHTS (none: a plain send),
/// with MSG_NOSIGNAL (a closed peer is an EPIPE, never a SIGPIPE).
/// Returns the bytes sent.
pub fn send_with_fds(sock: BorrowedFd, buf: &[u8], fds: &[BorrowedFd]) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [io::IoSlice::new(buf)];
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsgs };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// A listening, non-blocking, close-on-exec Unix stream socket at `path`
/// with `mode`. The socket is never reachable with a wider mode than
/// asked, even for the instant between bind and chmod.
pub fn bind_listener(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener, String> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    use std::os::unix::fs::PermissionsExt;
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr =
        UnixAddr::new(path).map_err(|e| format!("bad socket path {}: {e}", path.display()))?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o777));
    let bound = bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    listen(&fd, Backlog::new(4096).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| format!("listen: {e}"))?;
    Ok(std::os::unix::net::UnixListener::from(fd))
}

/// Whether something is bound and listening at the Unix socket `path`
/// (a stale file left by a dead process refuses). Without blocking: a
/// full backlog (EAGAIN) or a socket of another type (EPROTOTYPE) counts
/// as alive.
pub fn unix_path_answers(path: &Path) -> bool {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    !matches!(
        connect(fd.as_raw_fd(), &addr),
        Err(Errno::ECONNREFUSED | Errno::ENOENT | Errno::ENOTDIR)
    )
}

/// A socket bound for services to inherit (`BindSpec`): close-on-exec in
/// archon (the spawn clears it in the child) and blocking, as systemd
/// passes sockets. TCP gets SO_REUSEADDR (a restarted archon rebinds past
/// TIME_WAIT) and `backlog`; a Unix socket's file is replaced only when it
/// is a stale socket (nothing answers on it), and it is chmod and chown'd
/// before listen.
pub fn bind_service_socket(spec: &super::types::BindSpec, backlog: u32) -> Result<OwnedFd, String> {
    use super::types::BindSpec;
    use nix::sys::socket::{listen, Backlog};
    let backlog = Backlog::new(backlog.min(65535) as i32).unwrap_or(Backlog::MAXCONN);
    match spec {
        BindSpec::Tcp(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot bind tcp {addr}: {e}"))?;
            let fd = OwnedFd::from(l);
            listen(&fd, backlog).map_err(|e| format!("listen {addr}: {e}"))?;
            Ok(fd)
        }
        BindSpec::Udp(addr) => std::net::UdpSocket::bind(addr)
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot bind udp {addr}: {e}")),
        BindSpec::Unix {
            path,
            mode,
            uid,
            gid,
        } => {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(m) = std::fs::symlink_metadata(path) {
                if !m.file_type().is_socket() {
                    return Err(format!("{} exists and is not a socket", path.display()));
                }
                if unix_path_answers(path) {
                    return Err(format!(
                        "{} is in use: something accepts connections on it",
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(path);
            }
            let l = bind_listener(path, *mode)?;
            l.set_nonblocking(false)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(path, *uid, *gid)
                    .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
            }
            let fd = OwnedFd::from(l);
            listen(&fd, backlog).map_err(|e| format!("listen {}: {e}", path.display()))?;
            Ok(fd)
        }
    }
}

/// The child side of `spawn`, for both backends: moves the spec's fds into
/// place and closes the rest (`close_above` closes every fd from its
/// argument up), writes `archon: why` to the child's stderr.
///
/// # Safety
/// Only between fork and exec: async-signal-safe calls, no allocation.
pub(super) unsafe fn child_place_fds(
    spec: &super::types::SpawnSpec,
    close_range: unsafe fn(u32, u32),
) {
    for (target, &fd) in spec.stdio.iter().enumerate() {
        let target = target as RawFd;
        if fd == target {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else if libc::dup2(fd, target) < 0 {
            libc::_exit(127);
        }
    }
    place_extra_fds(&spec.extra_fds);
    if !spec.keep_inherited_fds {
        // Nothing but 0, 1 and 2 (and the extra fds) crosses exec, not even
        // fds archon inherited.
        let top = spec.extra_fds.iter().map(|e| e.1).max().unwrap_or(2);
        for fd in 3..top {
            if !spec.extra_fds.iter().any(|e| e.1 == fd) {
                libc::close(fd);
            }
        }
        close_range(top.max(2) as u32 + 1, u32::MAX);
    }
}

/// Moves each (source, target) of `extra` to its target (close-on-exec
/// cleared), in two steps so a source that is another's target is not
/// overwritten first: every source that is not already in place is
/// copied above all the targets, then copied down. No allocation (a
/// vfork-style child shares archon's memory).
unsafe fn place_extra_fds(extra: &[(RawFd, RawFd)]) {
    let above = extra.iter().map(|e| e.1).max().unwrap_or(2) + 1;
    let mut temp: [RawFd; super::types::MAX_EXTRA_FDS] = [-1; super::types::MAX_EXTRA_FDS];
    for (i, &(src, target)) in extra.iter().enumerate().take(temp.len()) {
        if src != target {
            temp[i] = libc::fcntl(src, libc::F_DUPFD, above);
            if temp[i] < 0 {
                libc::_exit(127);
            }
        }
    }
    for (i, &(_, target)) in extra.iter().enumerate().take(temp.len()) {
        if temp[i] < 0 {
            let flags = libc::fcntl(target, libc::F_GETFD);
            libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else {
            if libc::dup2(temp[i], target) < 0 {
                libc::_exit(127);
            }
            libc::close(temp[i]);
        }
    }
}

/// In the child: completes `LISTEN_PID=` in `slot` (made by `c_arrays`)
/// with the child's own pid.
pub(super) unsafe fn child_listen_pid(spec: &super::types::SpawnSpec, slot: *mut u8) {
    if !spec.listen_pid {
        return;
    }
    let mut pid = libc::getpid() as u32;
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let start = LISTEN_PID.len();
    for i in 0..n {
        *slot.add(start + i) = digits[n - 1 - i];
    }
    *slot.add(start + n) = 0;
}

const LISTEN_PID: &[u8] = b"LISTEN_PID=";

/// The child side of `spawn` after its fds are in place and before the
/// identity change: `fail_with`, the fd limit, rlimits, umask.
///
/// # Safety
/// Only between fork and exec.
pub(super) unsafe fn child_limits(spec: &super::types::SpawnSpec) {
    if let Some((code, reason)) = &spec.fail_with {
        let r = reason.as_bytes();
        libc::write(2, b"archon: ".as_ptr().cast(), 8);
        libc::write(2, r.as_ptr().cast(), r.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::_exit(*code);
    }
    // archon raised its soft limit to the hard one; when they were equal it
    // changed nothing and there is nothing to give back.
    if spec.nofile.cur != spec.nofile.max {
        libc::setrlimit(libc::RLIMIT_NOFILE, &to_libc(spec.nofile));
    }
    for (res, lim) in &spec.rlimits {
        if libc::setrlimit(*res as _, &to_libc(*lim)) != 0 {
            child_fail(b"cannot set a resource limit");
        }
    }
    if let Some(m) = spec.umask {
        libc::umask(m as libc::mode_t);
    }
}

/// The last step of the child side: chdir, execve, and the words for a
/// late failure (the parent resolved the program already: a bad binary
/// format, a vanished file).
///
/// # Safety
/// Only between fork and exec.
pub(super) unsafe fn child_exec_program(
    spec: &super::types::SpawnSpec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    if let Some(dir) = &spec.cwd {
        if libc::chdir(dir.as_ptr()) != 0 {
            child_fail(b"cannot change to the service's directory");
        }
    }
    libc::execve(spec.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
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
///
/// # Safety
/// Only between fork and exec.
pub(super) unsafe fn child_fail(why: &[u8]) -> ! {
    libc::write(2, b"archon: ".as_ptr().cast(), 8);
    libc::write(2, why.as_ptr().cast(), why.len());
    libc::write(2, b"\n".as_ptr().cast(), 1);
    libc::_exit(126)
}

/// The argv and envp pointer arrays of a spec, NULL-terminated; made in
/// the parent (the child allocates nothing).
/// The child's argv and envp as C arrays; with `listen_pid`, envp also
/// points at `slot`, which holds `LISTEN_PID=` for the child to complete
/// (`child_listen_pid`). Refuses more than `MAX_EXTRA_FDS` extra fds.
pub(super) fn c_arrays(
    spec: &super::types::SpawnSpec,
    slot: &mut [u8; super::types::PID_SLOT],
) -> io::Result<(Vec<*const libc::c_char>, Vec<*const libc::c_char>)> {
    if spec.extra_fds.len() > super::types::MAX_EXTRA_FDS || spec.extra_fds.iter().any(|e| e.1 < 3)
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.envp.iter().map(|a| a.as_ptr()).collect();
    if spec.listen_pid {
        slot[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        slot[LISTEN_PID.len()] = 0;
        envp.push(slot.as_ptr().cast());
    }
    envp.push(std::ptr::null());
    Ok((argv, envp))
}
