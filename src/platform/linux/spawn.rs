//! Spawning on Linux: clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) so a
//! pidfd exists from the moment the child does (a fork-style clone3 as the
//! fallback). Between clone and execve the child calls only
//! async-signal-safe syscalls and never allocates: everything it needs is
//! prepared in `SpawnSpec`.

use super::super::posix::{self, cvt};
use super::super::types::ProcHandle;
use super::super::types::{SpawnSpec, PID_SLOT};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

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
    /// `LISTEN_PID=`, completed by the child (see `posix::c_arrays`).
    slot: *mut u8,
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg points at the ChildCtx on the parent's stack, which stays
    // valid because the parent is suspended (CLONE_VFORK) until exec or exit.
    unsafe {
        let ctx = &*(arg as *const ChildCtx);
        child_exec(ctx.spec, ctx.argv, ctx.envp, ctx.slot)
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
pub fn spawn(spec: &SpawnSpec) -> io::Result<ProcHandle> {
    let mut slot = [0u8; PID_SLOT];
    let (argv, envp) = posix::c_arrays(spec, &mut slot)?;
    let ctx = ChildCtx {
        spec,
        argv: &argv,
        envp: &envp,
        slot: slot.as_mut_ptr(),
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
            return spawn_forking(spec, &argv, &envp, slot.as_mut_ptr());
        }
        return Err(err);
    }
    // SAFETY: the kernel wrote a fresh pidfd (CLONE_PIDFD implies O_CLOEXEC).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(ProcHandle::new(pidfd, pid))
}

pub(super) fn spawn_forking(
    spec: &SpawnSpec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    slot: *mut u8,
) -> io::Result<ProcHandle> {
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
        unsafe { child_exec(spec, argv, envp, slot) }
    }
    // SAFETY: the kernel wrote a fresh pidfd (CLONE_PIDFD implies O_CLOEXEC).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(ProcHandle::new(pidfd, pid as i32))
}

unsafe fn close_range(lo: u32, hi: u32) {
    libc::syscall(libc::SYS_close_range, lo, hi, 0u32);
}

unsafe fn child_exec(
    spec: &SpawnSpec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    slot: *mut u8,
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
        let top = spec.top_fd() as u32 + 1;
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
    posix::child_place_fds(spec, close_range);
    posix::child_listen_pid(spec, slot);
    posix::child_limits(spec);
    // Raw system calls: glibc's wrappers may try to synchronise threads,
    // and this child shares archon's memory.
    if let Some(groups) = &spec.groups {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            posix::child_fail(b"cannot set the supplementary groups");
        }
    }
    if let Some(g) = spec.gid {
        if libc::syscall(libc::SYS_setresgid, g, g, g) != 0 {
            posix::child_fail(b"cannot change group");
        }
    }
    if let Some(u) = spec.uid {
        if libc::syscall(libc::SYS_setresuid, u, u, u) != 0 {
            posix::child_fail(b"cannot change user");
        }
    }
    posix::child_exec_program(spec, argv, envp)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{to_cstrings, Rlimit};
    use std::ffi::CString;
    use std::os::fd::AsRawFd;

    fn spec(code: &str) -> SpawnSpec {
        SpawnSpec::new(
            CString::new("/bin/sh").unwrap(),
            to_cstrings(["sh", "-c", code]).unwrap(),
            Vec::new(),
            [0, 1, 2],
            Rlimit::both(1024),
            ignored_signals(),
        )
    }

    fn wait_exit(s: &ProcHandle) -> i32 {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                s.as_raw_fd() as libc::id_t,
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
        let mut slot = [0u8; PID_SLOT];
        let (argv, envp) = posix::c_arrays(&s, &mut slot).unwrap();
        let b = spawn_forking(&s, &argv, &envp, slot.as_mut_ptr()).unwrap();
        assert_eq!(wait_exit(&b), 6);
    }

    /// Two extra fds whose sources are each other's targets land swapped
    /// (neither overwritten first), nothing else crosses exec, and the
    /// child sees LISTEN_PID as its own pid: on both spawn paths.
    #[test]
    fn extra_fds_cross_over_and_listen_pid_is_the_childs() {
        for forking in [false, true] {
            let (r1, w1) = crate::platform::pipe().unwrap();
            let (r2, w2) = crate::platform::pipe().unwrap();
            // Fresh fds (F_DUPFD takes the lowest free one at or above its
            // argument: no other test's fd is overwritten).
            // SAFETY: test-only fd juggling on fds this test owns.
            let (a, b, c) = unsafe {
                let a = libc::fcntl(w1.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 600);
                let b = libc::fcntl(w2.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 600);
                // Not close-on-exec: it would cross exec if the child kept it.
                let c = libc::fcntl(w2.as_raw_fd(), libc::F_DUPFD, 600);
                assert!(a >= 600 && b >= 600 && c >= 600);
                (a, b, c)
            };
            drop((w1, w2));
            // bash: dash takes only one-digit fds. `a` goes to `b`'s
            // number and `b` to `a`'s.
            let mut s = spec(&format!(
                "echo \"a $LISTEN_PID $$\" >&{b}; echo b >&{a}; \
                 if [ -e /proc/self/fd/{c} ]; then echo leaked >&{b}; fi"
            ));
            s.program = CString::new("/bin/bash").unwrap();
            s.argv[0] = CString::new("bash").unwrap();
            s.extra_fds = vec![(a, b), (b, a)];
            s.listen_pid = true;
            let child = if forking {
                let mut slot = [0u8; PID_SLOT];
                let (argv, envp) = posix::c_arrays(&s, &mut slot).unwrap();
                spawn_forking(&s, &argv, &envp, slot.as_mut_ptr()).unwrap()
            } else {
                spawn(&s).unwrap()
            };
            let pid = child.pid();
            // SAFETY: closing the test's own copies.
            unsafe {
                libc::close(a);
                libc::close(b);
                libc::close(c);
            }
            assert_eq!(wait_exit(&child), 0);
            let read = |r: OwnedFd| {
                let mut out = String::new();
                std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
                out
            };
            assert_eq!(read(r1), format!("a {pid} {pid}\n"), "forking={forking}");
            assert_eq!(read(r2), "b\n", "forking={forking}");
        }
    }

    #[test]
    fn too_many_or_low_extra_fds_are_refused() {
        let mut s = spec("exit 0");
        s.extra_fds = vec![(1, 2)];
        assert!(spawn(&s).is_err());
        s.extra_fds = (0..=crate::platform::MAX_EXTRA_FDS as i32)
            .map(|i| (1, i + 3))
            .collect();
        assert!(spawn(&s).is_err());
    }
}
