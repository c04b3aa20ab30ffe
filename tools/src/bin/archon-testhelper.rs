//! A test helper that misbehaves on command. Actions run left to right:
//!
//!   exit N | kill-self SIG | hang | sleep SECS | ignore SIG | block SIG
//!   wait-file PATH | touch PATH | pidfile PATH | orphan N | echo TEXT
//!   print pid|ppid|pgid|sigmask|sigign|argv|env|fds|cwd|tty-fg | cat | readline
//!   await SIG[,SIG...] [COUNT]   (the signals must be blocked already; each
//!                                 must arrive COUNT times, default 1)
//!   orphans N    (N grandchildren, re-parented to archon at once, all exit
//!                 together once this process lets them go)
//!   wait-clean   (until no other child of this process's parent is left,
//!                 zombies included; exit 1 after 60 s)
//!   ready-fd N   (s6 readiness: write a newline on fd N, then close it)
//!   notify TEXT  (systemd readiness: TEXT as a datagram to $NOTIFY_SOCKET)
//!   notify-many N TEXT (N datagrams "TEXTi", i from 0, as fast as possible)
//!   feed-watchdog SECS PATH (forever: WATCHDOG=1 every SECS, then a line
//!                 appended to PATH)
//!   lines N TEXT (N numbered lines "TEXT i", as fast as possible)
//!   connect PATH N (N connections to the Unix socket PATH, each sending
//!                 "Status", kept open and never read; prints how many
//!                 connect()s succeeded)
//!   http-serve   (forever: answer each connection on fd 3, the socket
//!                 archon passed with LISTEN_FDS, "HTTP/1.0 200 OK" and the
//!                 instance and pid, one request per connection)
//!   -- (stop; the rest is data)
//!
//! Without `exit`, it exits 0 after the last action.
//!
//! `reaper PIDFILE -- CMD...` (alone): runs CMD as a child subreaper, writes
//! CMD's pid to PIDFILE, and once CMD has exited (or the test that started
//! the reaper has died) SIGKILLs every process left below it, reaps them,
//! and exits as CMD did. The test harness runs archon under it, so a failed
//! test leaves no service, daemon or helper behind, whatever archon did.
//!
//! Linux only (the proc connector, PID namespaces, sched_setaffinity,
//! prctl): elsewhere it says so and exits 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(target_os = "linux")]
#[path = "../testhelper.rs"]
mod testhelper;

#[cfg(target_os = "linux")]
fn main() {
    testhelper::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("archon-testhelper: Linux only");
    std::process::exit(2);
}
