//! The Linux backend: pidfds from clone(CLONE_PIDFD), epoll on them,
//! signalfd, /proc, prctl, reboot(2). The contract it keeps is
//! `platform/mod.rs`'s.

mod process;
mod release;
mod spawn;
mod stats;
mod system;

pub use process::{
    other_live_pids, proc_children, proc_cmdline, proc_node, process_uid, ExitWatch,
};
pub use release::release_read_only;
pub use spawn::{ignored_signals, rlimit_resource, spawn};
pub use stats::{own_usage, ProcStats};
pub use system::{
    ctrl_alt_del_to_sigint, die_with_parent, handled_signals, is_forwarded, is_system_init,
    notify_socket, parent_death_signal, peer_credentials, peer_groups, prioritise, reboot,
    recv_notify, reopen_nonblocking, sched_getattr, self_exe, set_child_subreaper,
    set_process_name, trim_heap, SchedAttr, SignalSource, SCHED_FLAG_RESET_ON_FORK, SHORT_SLICE_NS,
};
