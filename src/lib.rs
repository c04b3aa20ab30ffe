//! archon: an init-style process supervisor.
//!
//! `protocol` and `supervisor` are pure (no I/O, no fds, no clock); `event_loop`
//! owns every file descriptor and executes what the pure core decides;
//! `platform` is the OS seam (pidfd, clone3, signals).

pub mod access;
pub mod cli;
pub mod event_loop;
pub mod lua;
pub mod metrics;
pub mod monitor;
pub mod platform;
pub mod protocol;
pub mod services;
pub mod supervisor;
