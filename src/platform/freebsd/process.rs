//! Process descriptors on FreeBSD: pdkill(2) signals through one, poll(2)
//! says it exited (POLLHUP), `EVFILT_PROCDESC` with `NOTE_EXIT` brings the
//! exit and its status; the process tree from sysctl `kern.proc` (no
//! /proc needed) and the reaper's view of its descendants.

use super::super::freebsd_pure::{self as pure, KqEvent};
use super::super::types::ProcHandle;
use super::super::types::{HandleExit, ProcNode, RawExit};
use super::kq::Kqueue;
use mio::{Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

impl ProcHandle {
    /// FreeBSD has no call that opens a process descriptor for a process
    /// that already exists (pdfork gives one at birth only).
    pub fn open(_pid: i32) -> io::Result<ProcHandle> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "FreeBSD cannot open a process descriptor for an existing process",
        ))
    }

    /// A process descriptor a client sent (from its pdfork): pdgetpid
    /// checks it is one and gives the pid.
    pub fn from_received(fd: OwnedFd) -> Result<ProcHandle, String> {
        let mut pid: libc::pid_t = 0;
        // SAFETY: pid is a valid out-pointer.
        if unsafe { libc::pdgetpid(fd.as_raw_fd(), &mut pid) } != 0 {
            return Err("fd is not a process descriptor".into());
        }
        Ok(ProcHandle::new(fd, pid))
    }

    /// pdkill(2): never a later process that got the same pid. Signal 0
    /// (a liveness check elsewhere) is answered by poll instead.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        if sig == 0 {
            return if self.has_exited() {
                Err(io::Error::from_raw_os_error(libc::ESRCH))
            } else {
                Ok(())
            };
        }
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::pdkill(self.fd.as_raw_fd(), sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor polls POLLHUP once the process has exited.
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout: never blocks.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLHUP != 0
    }

    /// The status, from a one-off kqueue: `EVFILT_PROCDESC` fires at once
    /// for a process that has exited, with its status (the process
    /// descriptor keeps it, reaped or not).
    pub fn exit_info(&self) -> HandleExit {
        let Ok(kq) = Kqueue::new() else {
            return HandleExit::Unsupported;
        };
        let fd = self.fd.as_raw_fd() as usize;
        if kq
            .change(fd, pure::EVFILT_PROCDESC, libc::EV_ADD, pure::NOTE_EXIT, 0)
            .is_err()
        {
            return HandleExit::Unsupported;
        }
        let mut got = HandleExit::NotYet;
        kq.drain(1, |ev| {
            if let KqEvent::Exit { status, .. } = ev {
                got = status.map_or(HandleExit::Unsupported, HandleExit::Exited);
            }
        });
        got
    }
}

/// The exits of process descriptors, from a kqueue of its own registered
/// in mio's poll under one token.
#[derive(Debug)]
pub struct ExitWatch {
    kq: Kqueue,
}

impl ExitWatch {
    pub fn new() -> io::Result<ExitWatch> {
        Ok(ExitWatch { kq: Kqueue::new()? })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.kq.register(registry, token)
    }

    /// `EVFILT_PROCDESC`/`NOTE_EXIT` for the handle, carrying `token`. A
    /// closed descriptor's knote goes with it.
    pub fn add(&mut self, _registry: &Registry, h: &ProcHandle, token: Token) -> io::Result<()> {
        self.kq.change(
            h.fd.as_raw_fd() as usize,
            pure::EVFILT_PROCDESC,
            libc::EV_ADD | libc::EV_ONESHOT,
            pure::NOTE_EXIT,
            token.0,
        )
    }

    pub fn remove(&mut self, _registry: &Registry, h: &ProcHandle) {
        let _ = self.kq.change(
            h.fd.as_raw_fd() as usize,
            pure::EVFILT_PROCDESC,
            libc::EV_DELETE,
            0,
            0,
        );
    }

    /// The exits waiting, at most `max`; true when more may be left.
    pub fn drain(&mut self, out: &mut Vec<(Token, Option<RawExit>)>, max: usize) -> bool {
        let n = self.kq.drain(max, |ev| {
            if let KqEvent::Exit { token, status } = ev {
                out.push((Token(token), status));
            }
        });
        n >= max
    }
}

/// `kern.proc.pid.<pid>`: one process's kinfo_proc.
pub(super) fn kinfo(pid: i32) -> Option<libc::kinfo_proc> {
    let mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid];
    // SAFETY: kinfo_proc is plain data; sysctl writes at most `len` bytes.
    let mut kp: libc::kinfo_proc = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::kinfo_proc>();
    // SAFETY: valid mib, buffer and length.
    let r = unsafe {
        libc::sysctl(
            mib.as_ptr(),
            mib.len() as libc::c_uint,
            &mut kp as *mut libc::kinfo_proc as *mut libc::c_void,
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    (r == 0 && len >= std::mem::size_of::<libc::kinfo_proc>()).then_some(kp)
}

/// `kern.proc.args.<pid>`: the command line.
pub fn proc_cmdline(pid: i32) -> Vec<String> {
    let mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_ARGS, pid];
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = buf.len();
    // SAFETY: valid mib, buffer and length.
    let r = unsafe {
        libc::sysctl(
            mib.as_ptr(),
            mib.len() as libc::c_uint,
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    if r != 0 {
        return Vec::new();
    }
    buf[..len.min(buf.len())]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn state_letter(stat: libc::c_char) -> char {
    match stat {
        libc::SRUN => 'R',
        libc::SSLEEP => 'S',
        libc::SSTOP => 'T',
        libc::SZOMB => 'Z',
        libc::SWAIT | libc::SLOCK => 'D',
        libc::SIDL => 'I',
        _ => '?',
    }
}

pub fn proc_node(pid: i32) -> Option<ProcNode> {
    let kp = kinfo(pid)?;
    let mut argv = proc_cmdline(pid);
    argv.truncate(64);
    if argv.is_empty() {
        let comm: Vec<u8> = kp
            .ki_comm
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        argv.push(format!("({})", String::from_utf8_lossy(&comm)));
    }
    Some(ProcNode {
        pid,
        ppid: kp.ki_ppid,
        state: state_letter(kp.ki_stat),
        argv,
    })
}

/// Every process's kinfo_proc (`kern.proc.proc`), for the children of one.
fn all_procs() -> Option<Vec<libc::kinfo_proc>> {
    let mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PROC, 0];
    let size = std::mem::size_of::<libc::kinfo_proc>();
    for _ in 0..4 {
        let mut len = 0usize;
        // SAFETY: a size query (NULL buffer).
        let r = unsafe {
            libc::sysctl(
                mib.as_ptr(),
                3,
                std::ptr::null_mut(),
                &mut len,
                std::ptr::null(),
                0,
            )
        };
        if r != 0 {
            return None;
        }
        let n = len / size + 16;
        // SAFETY: kinfo_proc is plain data.
        let mut v: Vec<libc::kinfo_proc> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut len = n * size;
        // SAFETY: the buffer holds `len` bytes.
        let r = unsafe {
            libc::sysctl(
                mib.as_ptr(),
                3,
                v.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null(),
                0,
            )
        };
        if r == 0 {
            v.truncate(len / size);
            return Some(v);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ENOMEM) {
            return None;
        }
    }
    None
}

pub fn proc_children(pid: i32) -> Option<Vec<i32>> {
    Some(
        all_procs()?
            .iter()
            .filter(|k| k.ki_ppid == pid && k.ki_pid != pid)
            .map(|k| k.ki_pid)
            .collect(),
    )
}

pub fn process_uid(pid: i32) -> Option<u32> {
    kinfo(pid).map(|k| k.ki_ruid)
}

/// procctl(2)'s reaper structures (`<sys/procctl.h>`); the libc crate
/// does not have them.
#[repr(C)]
struct ReaperStatus {
    rs_flags: u32,
    rs_children: u32,
    rs_descendants: u32,
    rs_reaper: libc::pid_t,
    rs_pid: libc::pid_t,
    rs_pad0: [u32; 15],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ReaperPidinfo {
    pi_pid: libc::pid_t,
    pi_subtree: libc::pid_t,
    pi_flags: u32,
    pi_pad0: [u32; 15],
}

#[repr(C)]
struct ReaperPids {
    rp_count: u32,
    rp_pad0: [u32; 15],
    rp_pids: *mut ReaperPidinfo,
}

const REAPER_PIDINFO_VALID: u32 = 0x1;
const REAPER_PIDINFO_ZOMBIE: u32 = 0x8;

/// The live descendants archon reaps for (PROC_REAP_GETPIDS): what the
/// final sweep of a reaper (PID 1, a jail's archon) waits for. None when
/// archon is not a reaper.
pub fn other_live_pids() -> Option<Vec<i32>> {
    let me = super::super::posix::getpid();
    // SAFETY: ReaperStatus is plain data the kernel fills in.
    let mut st: ReaperStatus = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer for PROC_REAP_STATUS.
    let r = unsafe {
        libc::procctl(
            libc::P_PID,
            me as libc::id_t,
            libc::PROC_REAP_STATUS,
            &mut st as *mut ReaperStatus as *mut libc::c_void,
        )
    };
    if r != 0 || st.rs_reaper != me {
        return None;
    }
    let n = st.rs_descendants as usize + 16;
    let blank = ReaperPidinfo {
        pi_pid: 0,
        pi_subtree: 0,
        pi_flags: 0,
        pi_pad0: [0; 15],
    };
    let mut infos = vec![blank; n];
    let mut req = ReaperPids {
        rp_count: n as u32,
        rp_pad0: [0; 15],
        rp_pids: infos.as_mut_ptr(),
    };
    // SAFETY: rp_pids has room for rp_count entries.
    let r = unsafe {
        libc::procctl(
            libc::P_PID,
            me as libc::id_t,
            libc::PROC_REAP_GETPIDS,
            &mut req as *mut ReaperPids as *mut libc::c_void,
        )
    };
    if r != 0 {
        return None;
    }
    Some(
        infos
            .iter()
            .filter(|i| i.pi_flags & REAPER_PIDINFO_VALID != 0)
            .filter(|i| i.pi_flags & REAPER_PIDINFO_ZOMBIE == 0 && i.pi_pid != me)
            .map(|i| i.pi_pid)
            .collect(),
    )
}
