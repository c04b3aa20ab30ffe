//! The rest of the FreeBSD backend: signals through `EVFILT_SIGNAL`,
//! init and reaper operations, peer credentials, descriptors.

use super::super::freebsd_pure::{self as pure, KqEvent};
use super::super::types::RebootCmd;
use super::kq::Kqueue;
use mio::{Registry, Token};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub fn handled_signals() -> Vec<i32> {
    pure::handled_signals()
}

pub fn is_forwarded(sig: i32) -> bool {
    pure::is_forwarded(sig)
}

/// The signal source: the signals blocked (so they stay pending), a
/// kqueue's `EVFILT_SIGNAL` to wake the loop, and `sigtimedwait` with a
/// zero timeout to take each pending one.
#[derive(Debug)]
pub struct SignalSource {
    kq: Kqueue,
    set: libc::sigset_t,
}

impl SignalSource {
    pub fn new(signals: &[i32]) -> io::Result<SignalSource> {
        let kq = Kqueue::new()?;
        let set = super::super::posix::block_signals(signals)?;
        for &s in signals {
            kq.change(
                s as usize,
                pure::EVFILT_SIGNAL,
                libc::EV_ADD | libc::EV_CLEAR,
                0,
                0,
            )?;
        }
        Ok(SignalSource { kq, set })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.kq.register(registry, token)
    }

    fn take_pending(&self) -> Option<i32> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid set, no info wanted, zero timeout: never blocks.
        let s = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) };
        (s > 0).then_some(s)
    }

    /// One pending signal; None when none is left. The kqueue is emptied
    /// before the last look, so the next signal wakes the loop again.
    pub fn next_signal(&mut self) -> Option<i32> {
        if let Some(s) = self.take_pending() {
            return Some(s);
        }
        while self.kq.drain(64, |_: KqEvent| {}) == 64 {}
        self.take_pending()
    }
}

/// archon as the system's own init (a jail has no PID 1 of its own: there
/// archon is the jail's reaper, not init).
pub fn is_system_init() -> bool {
    super::super::posix::getpid() == 1
}

/// FreeBSD sends init SIGINT on Ctrl-Alt-Del already (shutdown_nice).
pub fn ctrl_alt_del_to_sigint() -> io::Result<()> {
    Ok(())
}

/// `sync`, then reboot(2) with FreeBSD's flags. Returns only on failure.
pub fn reboot(cmd: RebootCmd) -> io::Error {
    // SAFETY: plain syscalls.
    unsafe {
        libc::sync();
        libc::reboot(pure::reboot_flags(cmd));
    }
    io::Error::last_os_error()
}

/// procctl(PROC_REAP_ACQUIRE): orphans of archon's descendants come back
/// to it (a jail's archon, started by exec.start).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PROC_REAP_ACQUIRE takes no data.
    let r = unsafe {
        libc::procctl(
            libc::P_PID,
            libc::getpid() as libc::id_t,
            libc::PROC_REAP_ACQUIRE,
            std::ptr::null_mut(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// No sd_notify on FreeBSD: datagrams carry no sender credentials to match
/// a service by. The s6 readiness fd works.
pub fn notify_socket(_name: &str) -> io::Result<OwnedFd> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sd_notify does not exist on FreeBSD (use ready = \"fd\")",
    ))
}

pub fn recv_notify(_fd: &OwnedFd) -> Option<(i32, String)> {
    None
}

/// jemalloc returns memory by itself.
pub fn trim_heap() {}

/// Nothing on FreeBSD (see the contract in `platform/mod.rs`).
pub fn release_read_only() -> usize {
    0
}

pub fn die_with_parent() {
    parent_death_signal(libc::SIGKILL);
}

/// procctl(PROC_PDEATHSIG_CTL).
pub fn parent_death_signal(sig: i32) {
    let mut s: libc::c_int = sig;
    // SAFETY: PROC_PDEATHSIG_CTL reads an int.
    unsafe {
        libc::procctl(
            libc::P_PID,
            0,
            libc::PROC_PDEATHSIG_CTL,
            &mut s as *mut libc::c_int as *mut libc::c_void,
        );
    }
}

/// setproctitle(3): what ps shows.
pub fn set_process_name(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: a "%s" format with one valid C string.
        unsafe { libc::setproctitle(c"-%s".as_ptr(), c.as_ptr()) };
    }
}

/// archon's own executable (kern.proc.pathname, through std).
pub fn self_exe() -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::env::current_exe()?;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// archon keeps the priority it was started with on FreeBSD: without a
/// reset-on-fork flag, a lower nice would pass to every child.
pub fn prioritise(_nice: i32) -> io::Result<(i32, u64)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "not on FreeBSD (children would inherit it)",
    ))
}

fn xucred(fd: RawFd) -> Option<crate::access::Peer> {
    // SAFETY: xucred is plain data.
    let mut cr: libc::xucred = unsafe { std::mem::zeroed() };
    cr.cr_version = libc::XUCRED_VERSION;
    let mut len = std::mem::size_of::<libc::xucred>() as libc::socklen_t;
    // SAFETY: cr and len describe a valid, writable xucred.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_LOCAL,
            libc::LOCAL_PEERCRED,
            &mut cr as *mut libc::xucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 || cr.cr_version != libc::XUCRED_VERSION {
        return None;
    }
    pure::peer_from_xucred(cr.cr_uid, cr.cr_ngroups, &cr.cr_groups)
}

/// LOCAL_PEERCRED: uid, gid and up to 15 supplementary groups, as of
/// connect().
pub fn peer_credentials(fd: &impl AsRawFd) -> Option<crate::access::Peer> {
    xucred(fd.as_raw_fd())
}

pub fn peer_groups(fd: &impl AsRawFd) -> Vec<u32> {
    xucred(fd.as_raw_fd()).map(|p| p.groups).unwrap_or_default()
}

/// A private non-blocking description of fd 1 or 2 from `/dev/fd/N`
/// where fdescfs gives a new one (mounted with `nodup`); otherwise None
/// (devfs's /dev/fd/N is a dup, and O_NONBLOCK on it would reach every
/// holder of the description).
pub fn reopen_nonblocking(fd: RawFd) -> Option<OwnedFd> {
    let path = CString::new(format!("/dev/fd/{fd}")).ok()?;
    // SAFETY: plain queries and an open of a valid path.
    unsafe {
        let before = libc::fcntl(fd, libc::F_GETFL);
        let n = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        );
        if n < 0 {
            return None;
        }
        let owned = OwnedFd::from_raw_fd(n);
        let mine = libc::fcntl(n, libc::F_GETFL);
        let theirs = libc::fcntl(fd, libc::F_GETFL);
        if mine & libc::O_NONBLOCK == 0 || theirs != before {
            if theirs != before {
                libc::fcntl(fd, libc::F_SETFL, before);
            }
            return None;
        }
        Some(owned)
    }
}
