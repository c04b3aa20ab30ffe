//! The loop's event sources as a closed, typed set: every fd registered
//! with mio gets the token of one `Source`, and the loop dispatches on the
//! decoded `Source` with an exhaustive `match` (a new kind of source does
//! not compile until it is handled). A token is a tag in the top byte and
//! a value (an id, a pid, a pipe number) below it.

use mio::Token;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Listener,
    Signals,
    /// archon's own stdout and stderr, written to by services' output.
    SinkOut,
    SinkErr,
    /// The systemd notification socket.
    Notify,
    /// The Lua worker's socket, and its pidfd.
    WorkerSock,
    WorkerExit,
    /// A tracked process's handle, by entry id.
    Process(u64),
    Client(u64),
    /// A process handle of PID 1's final sweep, by pid.
    Sweep(i32),
    /// The platform's exit queue, where process handles cannot be in the
    /// poll set themselves (FreeBSD's kqueue of process descriptors).
    Exits,
    /// `--metrics`: its listener, and each scrape's connection.
    MetricsListener,
    MetricsConn(u64),
    /// A service's output or readiness pipe.
    Pipe(u64),
    /// A TCP or HTTP probe's connection, by probe id.
    Probe(u64),
    /// A socket-activated service's sockets, by arming.
    Activate(u64),
}

const SHIFT: u32 = 56;
const VALUE: u64 = (1 << SHIFT) - 1;

impl Source {
    pub(super) fn token(self) -> Token {
        let (tag, value): (u64, u64) = match self {
            Source::Listener => (1, 0),
            Source::Signals => (2, 0),
            Source::SinkOut => (3, 0),
            Source::SinkErr => (4, 0),
            Source::Notify => (5, 0),
            Source::WorkerSock => (6, 0),
            Source::WorkerExit => (7, 0),
            Source::Process(id) => (8, id),
            Source::Client(id) => (9, id),
            Source::Sweep(pid) => (10, pid as u32 as u64),
            Source::Pipe(n) => (11, n),
            Source::Exits => (12, 0),
            Source::MetricsListener => (13, 0),
            Source::MetricsConn(id) => (14, id),
            Source::Probe(id) => (15, id),
            Source::Activate(id) => (16, id),
        };
        Token(((tag << SHIFT) | (value & VALUE)) as usize)
    }

    pub(super) fn of(token: Token) -> Option<Source> {
        let t = token.0 as u64;
        let value = t & VALUE;
        Some(match t >> SHIFT {
            1 => Source::Listener,
            2 => Source::Signals,
            3 => Source::SinkOut,
            4 => Source::SinkErr,
            5 => Source::Notify,
            6 => Source::WorkerSock,
            7 => Source::WorkerExit,
            8 => Source::Process(value),
            9 => Source::Client(value),
            10 => Source::Sweep(value as u32 as i32),
            11 => Source::Pipe(value),
            12 => Source::Exits,
            13 => Source::MetricsListener,
            14 => Source::MetricsConn(value),
            15 => Source::Probe(value),
            16 => Source::Activate(value),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips_through_its_token() {
        for s in [
            Source::Listener,
            Source::Signals,
            Source::SinkOut,
            Source::SinkErr,
            Source::Notify,
            Source::WorkerSock,
            Source::WorkerExit,
            Source::Process(0),
            Source::Process(VALUE),
            Source::Client(7),
            Source::Sweep(1),
            Source::Sweep(i32::MAX),
            Source::Pipe(3),
            Source::Exits,
            Source::MetricsListener,
            Source::MetricsConn(9),
            Source::Probe(11),
            Source::Activate(12),
        ] {
            assert_eq!(Source::of(s.token()), Some(s), "{s:?}");
        }
        assert_eq!(Source::of(Token(0)), None);
        assert_ne!(Source::Client(1).token(), Source::Process(1).token());
    }
}
