//! Spawning on FreeBSD: pdfork(2) gives the process descriptor at birth
//! (PD_CLOEXEC, and PD_DAEMON so that closing archon's descriptor never
//! kills a process: the same as closing a pidfd on Linux). The child side
//! makes only async-signal-safe calls on memory prepared by the parent.

use super::super::freebsd_pure as pure;
use super::super::posix;
use super::super::types::ProcHandle;
use super::super::types::{SpawnSpec, PID_SLOT};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub fn spawn(spec: &SpawnSpec) -> io::Result<ProcHandle> {
    let mut slot = [0u8; PID_SLOT];
    let (argv, envp) = posix::c_arrays(spec, &mut slot)?;
    let mut pd: libc::c_int = -1;
    // SAFETY: fork-like; the child branch only makes async-signal-safe
    // calls on memory prepared above and never returns.
    let pid = unsafe { libc::pdfork(&mut pd, libc::PD_CLOEXEC | libc::PD_DAEMON) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child.
        unsafe { child_exec(spec, &argv, &envp, slot.as_mut_ptr()) }
    }
    // SAFETY: the kernel gave us this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(pd) };
    Ok(ProcHandle::new(fd, pid))
}

unsafe fn close_range(lo: u32, hi: u32) {
    libc::close_range(lo, hi, 0);
}

unsafe fn child_exec(
    spec: &SpawnSpec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    slot: *mut u8,
) -> ! {
    libc::setpgid(0, 0);
    if let Some(tty) = spec.foreground_tty {
        let pgrp: libc::pid_t = libc::getpid();
        libc::tcsetpgrp(tty, pgrp);
    }
    for &sig in &spec.ignored_signals {
        libc::signal(sig, libc::SIG_DFL);
    }
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    // A forked child has its own fd table already: no unsharing.
    posix::child_place_fds(spec, close_range);
    posix::child_listen_pid(spec, slot);
    posix::child_limits(spec);
    if let Some(groups) = &spec.groups {
        if libc::setgroups(groups.len() as libc::c_int, groups.as_ptr()) != 0 {
            posix::child_fail(b"cannot set the supplementary groups");
        }
    }
    if let Some(g) = spec.gid {
        if libc::setresgid(g, g, g) != 0 {
            posix::child_fail(b"cannot change group");
        }
    }
    if let Some(u) = spec.uid {
        if libc::setresuid(u, u, u) != 0 {
            posix::child_fail(b"cannot change user");
        }
    }
    posix::child_exec_program(spec, argv, envp)
}

/// The signals whose disposition is SIG_IGN now (the only ones a child
/// keeps across exec).
pub fn ignored_signals() -> Vec<i32> {
    (1..=pure::SIGRTMAX)
        .filter(|&s| s != pure::SIGKILL && s != pure::SIGSTOP)
        .filter(|&s| {
            // SAFETY: a NULL new action only queries into `old`.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(s, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            }
        })
        .collect()
}

pub fn rlimit_resource(name: &str) -> Option<i32> {
    pure::rlimit_resource(name)
}
