//! The rest of the Linux backend: the signalfd source, scheduling, init
//! operations (reboot(2), Ctrl-Alt-Del, the subreaper), the systemd
//! notification socket, peer credentials, descriptors.

use super::super::posix::cvt;
use super::super::types::RebootCmd;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// The signal source: `signals` blocked (SIGPIPE ignored) and read one at
/// a time from a non-blocking signalfd.
#[derive(Debug)]
pub struct SignalSource {
    fd: OwnedFd,
}

impl SignalSource {
    pub fn new(signals: &[i32]) -> io::Result<SignalSource> {
        let set = super::super::posix::block_signals(signals)?;
        // SAFETY: a valid set; the fd returned is ours.
        unsafe {
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalSource {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.fd.as_raw_fd()),
            token,
            Interest::READABLE,
        )
    }

    /// One pending signal; None when drained.
    pub fn next_signal(&mut self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data; read writes at most its size.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = libc::read(
                self.fd.as_raw_fd(),
                &mut info as *mut _ as *mut libc::c_void,
                size,
            );
            (n == size as isize).then_some(info.ssi_signo as i32)
        }
    }
}

/// PID 1 of the system itself (not of a container): the initial PID
/// namespace has a fixed inode number (PROC_PID_INIT_INO). Without /proc,
/// archon cannot tell and assumes a container.
pub fn is_system_init() -> bool {
    use std::os::unix::fs::MetadataExt;
    super::super::posix::getpid() == 1
        && std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == 0xEFFF_FFFC)
}

/// Asks the kernel to send SIGINT to init on Ctrl-Alt-Del instead of
/// rebooting at once.
pub fn ctrl_alt_del_to_sigint() -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) } as libc::c_long).map(|_| ())
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

/// Makes archon a child subreaper so orphans of its children come back to it.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } as libc::c_long)
        .map(|_| ())
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

/// archon's own executable, for starting the Lua worker: /proc/self/exe
/// (the same file even if the path was replaced since).
pub fn self_exe() -> io::Result<CString> {
    Ok(c"/proc/self/exe".to_owned())
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

/// A private, non-blocking open file description of archon's fd 1 or 2
/// (reopening /proc/self/fd/N works for pipes, ttys and files), so
/// O_NONBLOCK does not leak to other holders of the same description.
/// None where the kernel gives none (sockets; no /proc).
pub fn reopen_nonblocking(fd: RawFd) -> Option<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(OwnedFd::from)
}
