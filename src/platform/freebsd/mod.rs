//! The FreeBSD backend: process descriptors from pdfork(2), signalled with
//! pdkill(2), their exits from a kqueue of its own (`EVFILT_PROCDESC`,
//! which mio's kqueue cannot register), signals from `EVFILT_SIGNAL`,
//! reaper control with procctl(2), peer credentials with
//! `LOCAL_PEERCRED`. The contract it keeps is `platform/mod.rs`'s.
//!
//! Type-checked only (`cargo check --target x86_64-unknown-freebsd`): no
//! FreeBSD machine has run it. `FREEBSD.md` is the test plan for one.

mod kq;
mod process;
mod spawn;
mod stats;
mod system;

pub use process::{
    other_live_pids, proc_children, proc_cmdline, proc_node, process_uid, ExitWatch,
};
pub use spawn::{ignored_signals, rlimit_resource, spawn};
pub use stats::{own_usage, ProcStats};
pub use system::{
    ctrl_alt_del_to_sigint, die_with_parent, handled_signals, is_forwarded, is_system_init,
    notify_socket, parent_death_signal, peer_credentials, peer_groups, prioritise, reboot,
    recv_notify, release_read_only, reopen_nonblocking, self_exe, set_child_subreaper,
    set_process_name, trim_heap, SignalSource,
};
