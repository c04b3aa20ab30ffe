//! The platform contract: everything archon asks of the kernel goes
//! through this module, and nothing outside it uses `libc`, `nix` or
//! `unsafe` (`tests/seam.rs` checks it). In the manner of mio's
//! `sys/mod.rs`, this file says what every backend provides and promises;
//! `linux/` and `freebsd/` keep the promises, each with its own kernel's
//! means, and `posix.rs` holds what both do the same way.
//!
//! # Processes
//!
//! - [`ProcHandle`]: a process named by a kernel handle (Linux: a pidfd;
//!   FreeBSD: a process descriptor), never by a bare pid that may be
//!   reused. `pid()`, `signal(sig)` (through the handle: it cannot reach a
//!   later process with the same pid), `has_exited()` without blocking,
//!   `exit_info()` for a process archon is not the parent of (where the
//!   kernel tells; [`HandleExit::Unsupported`] otherwise), `open(pid)` for
//!   a process archon did not start (`MonitorPid`: FreeBSD answers
//!   `ErrorKind::Unsupported`, it cannot open a descriptor for an existing
//!   process), `from_received(fd)` for a handle a client sent with
//!   SCM_RIGHTS (`MonitorFD`: checked to be a handle, not any fd), and
//!   `AsFd` to pass one on.
//! - [`spawn`]`(&SpawnSpec) -> ProcHandle`: the child exists with its
//!   handle from the first instant (Linux `clone(CLONE_PIDFD)`, FreeBSD
//!   `pdfork`), in its own process group, with default signal handling,
//!   an empty mask, only the fds the spec names, and the spec's limits,
//!   umask, identity and directory. A program that cannot be run is known
//!   before anything is forked ([`resolve_program`], with the exit code a
//!   shell would give).
//! - [`ExitWatch`]: turns handles into loop events. `add(registry, handle,
//!   token)` makes the handle's exit wake the loop with `token` (Linux:
//!   the pidfd itself is in epoll); where handles cannot be put in mio's
//!   poll (FreeBSD: `procdesc_kqfilter` takes only `EVFILT_PROCDESC`) the
//!   watch owns a queue of its own, registered once with `register`, and
//!   `drain` turns its events into the handles' tokens, with the exit
//!   status when the kernel gives it with the event. A closed handle
//!   leaves the watch by itself.
//! - The one reaper: [`reap_one`] collects any exited child (tracked or an
//!   adopted orphan), [`reap_pid`] a known one. Nothing else waits.
//! - [`kill_group`], [`process_group`], and what the process tree and
//!   `Status` show: [`proc_node`], [`proc_children`], [`proc_cmdline`],
//!   [`process_uid`].
//!
//! - [`ProcStats`]: what a process costs (`open(&handle, keep_open)`, then
//!   `sample(full, pss) -> RawSample`), bound to the handle's process: a
//!   sample after it is gone is an error, never another process's figures.
//!   Linux: /proc/PID relative to a directory fd opened while the pidfd
//!   said it lived, and with `keep_open` the files a sample reads held
//!   open (up to four more fds, the caller's budget: [`nofile_soft`]);
//!   FreeBSD: sysctl `kern.proc.pid`, checked against the descriptor
//!   after each read (`keep_open` changes nothing).
//!
//! # Signals
//!
//! [`SignalSource`]: blocks [`handled_signals`] and makes them readable
//! one at a time from a pollable source (Linux: signalfd; FreeBSD:
//! `EVFILT_SIGNAL` on a kqueue, the signals taken with `sigtimedwait`).
//! [`sig`] names the numbers archon itself acts on; [`signal_number`] and
//! [`signal_name`] translate the platform's names.
//!
//! # Sockets and descriptors
//!
//! [`peer_credentials`] (uid and gid as of connect) and [`peer_groups`];
//! [`recv_with_fds`] / [`send_with_fds`] for SCM_RIGHTS; [`bind_listener`]
//! (never reachable with a wider mode than asked); [`pipe`];
//! [`reopen_nonblocking`] (a private, non-blocking open file description
//! of archon's stdout or stderr, where the kernel can give one, so
//! O_NONBLOCK does not leak to the other holders); [`read_fd`] /
//! [`write_fd`]; [`take_inherited_fd`].
//!
//! # Readiness
//!
//! [`notify_socket`] / [`recv_notify`]: systemd's notification socket,
//! with the sender's pid from the kernel. FreeBSD has no such
//! credentials on datagrams and no sd_notify: `notify_socket` fails there
//! with `Unsupported`. The s6 readiness fd is a pipe and works everywhere.
//!
//! # Init
//!
//! [`is_system_init`], [`reboot`] (poweroff, reboot, halt, after `sync`),
//! [`ctrl_alt_del_to_sigint`], [`kill_all`] (every process archon may
//! signal), [`other_live_pids`] (what the final sweep waits for),
//! [`set_child_subreaper`] (Linux `PR_SET_CHILD_SUBREAPER`, FreeBSD
//! `procctl(PROC_REAP_ACQUIRE)`: a jail's reaper), [`has_children`],
//! [`reap_blocking`].
//!
//! # Memory
//!
//! [`trim_heap`] gives free heap pages back where the allocator can.
//! [`release_read_only`] unmaps this process's pages of every loaded
//! object's read-only segments (text, constants), never a writable one,
//! so nothing is lost: a page used again is mapped again from the page
//! cache. Returns the bytes released. Linux: `dl_iterate_phdr` and
//! `MADV_DONTNEED`. FreeBSD has no call that unmaps a file's pages while
//! keeping the mapping (its `MADV_DONTNEED` only lowers their priority):
//! nothing is done there, and 0 returned.
//!
//! # Writing a backend
//!
//! A new backend is a directory `platform/<os>/` whose `mod.rs` provides
//! every item of the `pub use sys::{...}` list below with the promises
//! above (the list does not compile until it does), and a `cfg` line here.
//! Shared POSIX code is in `posix.rs`; the neutral types below are used as
//! they are. The child side of `spawn` must be async-signal-safe: it runs
//! between fork (or a vfork-style clone) and exec.

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod sys;

#[cfg(target_os = "freebsd")]
#[path = "freebsd/mod.rs"]
mod sys;

/// The FreeBSD backend's pure parts (status decoding, kevent mapping,
/// reboot flags), built on Linux too so their unit tests run here.
#[cfg(any(test, target_os = "freebsd"))]
#[path = "freebsd/pure.rs"]
#[allow(dead_code)]
mod freebsd_pure;

mod posix;
mod signals;
mod types;

pub use posix::{
    bind_listener, bind_service_socket, cmsg_buffer, ensure_stdio_open, euid, exit_now,
    foreground_tty, getpid, has_children, is_executable, is_fd_exhaustion, is_pipe_or_tty,
    is_socket, kill_all, kill_group, lookup_group, lookup_user, nofile_soft, pipe, process_group,
    raise_nofile, read_fd, reap_blocking, reap_one, reap_pid, recv_with_fds, resolve_program,
    send_nonblocking, send_with_fds, take_inherited_fd, to_cstrings, uid, unix_path_answers,
    user_groups, write_fd,
};
pub use signals::{sig, signal_name, signal_number};
pub use sys::{
    ctrl_alt_del_to_sigint, die_with_parent, handled_signals, ignored_signals, is_forwarded,
    is_system_init, notify_socket, other_live_pids, own_usage, parent_death_signal,
    peer_credentials, peer_groups, prioritise, proc_children, proc_cmdline, proc_node, process_uid,
    reboot, recv_notify, release_read_only, reopen_nonblocking, rlimit_resource, self_exe,
    set_child_subreaper, set_process_name, spawn, trim_heap, ExitWatch, ProcStats, SignalSource,
};
pub use types::{
    BindSpec, ExecError, HandleExit, OwnUsage, ProcHandle, ProcNode, RawExit, RawSample, RebootCmd,
    Received, Rlimit, SpawnSpec, MAX_EXTRA_FDS,
};

/// Linux only: the scheduling attributes `prioritise` sets, for tests.
#[cfg(target_os = "linux")]
pub use sys::{sched_getattr, SchedAttr, SCHED_FLAG_RESET_ON_FORK, SHORT_SLICE_NS};
