//! The process table and its state machine. Pure: no fds, no clock, no
//! syscalls. The event loop feeds it inputs (a process was started, exited,
//! a client asked to stop one, a client went away, time passed) and executes
//! the `Effect`s it returns (signal, reply, announce, forget).
//!
//! States of one entry:
//!
//! ```text
//!   Running --Stop/ClientGone/Shutdown--> Stopping --exit--> Exited
//!      |                                    | grace elapsed: SIGKILL
//!      +---------------exit------------------------------> Exited
//! ```
//!
//! `Run` entries leave the table once their exit is delivered; daemon and
//! monitor entries stay as a record (the oldest exited ones are evicted past
//! `MAX_EXITED`).

mod table;

pub use table::{Clock, Effect, Entry, Exit, Kind, ReplyTo, State, Supervisor, MAX_EXITED};

/// POSIX signal numbers the state machine itself sends (identical on Linux
/// and FreeBSD).
pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;
