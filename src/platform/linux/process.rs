//! Process handles on Linux: pidfds (signalled with pidfd_send_signal,
//! polled for their exit in epoll, PIDFD_GET_INFO for the status of a
//! process archon is not the parent of), and what /proc says of processes.

use super::super::posix::{cvt, decode_wait_status};
use super::super::types::ProcHandle;
use super::super::types::{HandleExit, ProcNode, RawExit};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

impl ProcHandle {
    /// `pidfd_open(pid)`: a process archon did not start.
    pub fn open(pid: i32) -> io::Result<ProcHandle> {
        // SAFETY: plain syscall; the fd returned is owned by us.
        let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
        // SAFETY: fresh fd from the kernel (pidfds are always close-on-exec).
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(ProcHandle::new(fd, pid))
    }

    /// A pidfd a client sent: checked to be one, and its pid found.
    pub fn from_received(fd: OwnedFd) -> Result<ProcHandle, String> {
        let raw = fd.as_raw_fd();
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
            .map_err(|e| format!("cannot inspect fd: {e}"))?;
        let pid = text
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
            .ok_or_else(|| "fd is not a pidfd".to_string())?;
        let h = ProcHandle::new(fd, pid);
        // Signal 0 through it: EBADF would mean it is not a pidfd after all.
        match h.signal(0) {
            Ok(()) => Ok(h),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(h),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(h),
            Err(_) => Err("fd is not a pidfd".into()),
        }
    }

    /// Signals the process through its pidfd: never a later process that
    /// got the same pid.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: plain syscall with no info pointer.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        })
        .map(|_| ())
    }

    /// True when the process has exited (the pidfd polls readable).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout: never blocks.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
    }

    /// PIDFD_GET_INFO (Linux 6.15+): the exit status of a process archon
    /// is not the parent of, once its parent has reaped it.
    pub fn exit_info(&self) -> HandleExit {
        // SAFETY: pidfd_info is plain data; zero is a valid request.
        let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
        info.mask = libc::PIDFD_INFO_EXIT as u64;
        // SAFETY: the ioctl writes at most size_of::<pidfd_info>() bytes into info.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::PIDFD_GET_INFO, &mut info) };
        if ret < 0 {
            return match io::Error::last_os_error().raw_os_error() {
                Some(libc::ESRCH) => HandleExit::NotYet,
                _ => HandleExit::Unsupported,
            };
        }
        if info.mask & libc::PIDFD_INFO_EXIT as u64 == 0 {
            return HandleExit::NotYet;
        }
        match decode_wait_status(info.exit_code) {
            Some(e) => HandleExit::Exited(e),
            None => HandleExit::Unsupported,
        }
    }
}

/// Linux: every pidfd is in epoll itself; the watch holds nothing.
#[derive(Debug, Default)]
pub struct ExitWatch;

impl ExitWatch {
    pub fn new() -> io::Result<ExitWatch> {
        Ok(ExitWatch)
    }

    /// Nothing of its own to register on Linux.
    pub fn register(&mut self, _registry: &Registry, _token: Token) -> io::Result<()> {
        Ok(())
    }

    /// The process's exit wakes the loop with `token`. Closing the handle
    /// (archon holds the only reference) takes it out of epoll.
    pub fn add(&mut self, registry: &Registry, h: &ProcHandle, token: Token) -> io::Result<()> {
        registry.register(&mut SourceFd(&h.fd.as_raw_fd()), token, Interest::READABLE)
    }

    /// Stops watching a handle that stays open.
    pub fn remove(&mut self, registry: &Registry, h: &ProcHandle) {
        let _ = registry.deregister(&mut SourceFd(&h.fd.as_raw_fd()));
    }

    /// Never has events of its own on Linux (nothing is registered under
    /// the watch's token): nothing is left.
    pub fn drain(&mut self, _out: &mut Vec<(Token, Option<RawExit>)>, _max: usize) -> bool {
        false
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

/// The processes in archon's view of /proc that still run, other than
/// archon itself and kernel threads (zombies are dead already). `None` when
/// /proc cannot be read, or is not of archon's PID namespace (`unshare
/// --pid` without `--mount-proc`: it lists the parent namespace's
/// processes, which archon can neither see die nor signal).
pub fn other_live_pids() -> Option<Vec<i32>> {
    let me = super::super::posix::getpid();
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
