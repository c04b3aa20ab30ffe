//! The FreeBSD backend's pure parts: FreeBSD's numbers and the
//! translations between them and the contract's types (wait status,
//! kevents, reboot(2) flags, resource names, the signals archon blocks,
//! peer credentials). Built on Linux too, with the numbers written out
//! from FreeBSD's headers, so these unit tests run where CI runs; on
//! FreeBSD each number is checked against the libc crate's at compile time.

use super::types::{RawExit, RebootCmd};

/// `<sys/event.h>`.
pub const EVFILT_SIGNAL: i16 = -6;
pub const EVFILT_PROCDESC: i16 = -8;
pub const NOTE_EXIT: u32 = 0x8000_0000;
/// `<sys/reboot.h>`.
pub const RB_AUTOBOOT: i32 = 0;
pub const RB_HALT: i32 = 0x008;
pub const RB_POWEROFF: i32 = 0x4000;
/// `<sys/signal.h>`: FreeBSD's numbers differ from Linux's above 6.
pub const SIGKILL: i32 = 9;
pub const SIGSTOP: i32 = 17;
pub const SIGSEGV: i32 = 11;
pub const SIGBUS: i32 = 10;
pub const SIGFPE: i32 = 8;
pub const SIGILL: i32 = 4;
pub const SIGTRAP: i32 = 5;
pub const SIGABRT: i32 = 6;
pub const SIGSYS: i32 = 12;
pub const SIGPIPE: i32 = 13;
pub const SIGCHLD: i32 = 20;
pub const SIGTTIN: i32 = 21;
pub const SIGTTOU: i32 = 22;
/// The threading library's (libthr) and librt's: never archon's to block.
pub const SIGTHR: i32 = 32;
pub const SIGLIBRT: i32 = 33;
pub const SIGRTMIN: i32 = 65;
pub const SIGRTMAX: i32 = 126;

#[cfg(target_os = "freebsd")]
const _: () = {
    assert!(EVFILT_SIGNAL == libc::EVFILT_SIGNAL);
    assert!(EVFILT_PROCDESC == libc::EVFILT_PROCDESC);
    assert!(NOTE_EXIT == libc::NOTE_EXIT);
    assert!(RB_HALT == libc::RB_HALT);
    assert!(RB_POWEROFF == libc::RB_POWEROFF);
    assert!(SIGKILL == libc::SIGKILL && SIGSTOP == libc::SIGSTOP);
    assert!(SIGSEGV == libc::SIGSEGV && SIGBUS == libc::SIGBUS && SIGFPE == libc::SIGFPE);
    assert!(SIGILL == libc::SIGILL && SIGTRAP == libc::SIGTRAP && SIGABRT == libc::SIGABRT);
    assert!(SIGSYS == libc::SIGSYS && SIGPIPE == libc::SIGPIPE && SIGCHLD == libc::SIGCHLD);
    assert!(SIGTTIN == libc::SIGTTIN && SIGTTOU == libc::SIGTTOU);
    assert!(SIGTHR == libc::SIGTHR && SIGLIBRT == libc::SIGLIBRT);
    assert!(libc::RLIMIT_CPU == 0 && libc::RLIMIT_NOFILE == 8 && libc::RLIMIT_AS == 10);
    assert!(libc::RLIMIT_UMTXP == 14);
};

/// The traditional wait status (FreeBSD's `<sys/wait.h>` macros).
pub fn decode_status(status: i32) -> Option<RawExit> {
    let low = status & 0o177;
    if low == 0 {
        Some(RawExit::Code((status >> 8) & 0xff))
    } else if low != 0o177 {
        Some(RawExit::Signal(low))
    } else {
        None // stopped
    }
}

/// What one kevent from the backend's queues means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KqEvent {
    /// `EVFILT_SIGNAL`: this signal was sent to archon (`data` times).
    Signal(i32),
    /// `EVFILT_PROCDESC` with `NOTE_EXIT`: the process of the handle
    /// registered with this token exited, with this status.
    Exit {
        token: usize,
        status: Option<RawExit>,
    },
    /// Anything else (an error report, a filter archon did not ask for).
    Other,
}

/// One kevent's fields, as the contract's event.
pub fn kevent_to_event(filter: i16, ident: u64, fflags: u32, data: i64, udata: usize) -> KqEvent {
    match filter {
        EVFILT_SIGNAL if ident > 0 && ident <= SIGRTMAX as u64 => KqEvent::Signal(ident as i32),
        EVFILT_PROCDESC if fflags & NOTE_EXIT != 0 => KqEvent::Exit {
            token: udata,
            status: i32::try_from(data).ok().and_then(decode_status),
        },
        _ => KqEvent::Other,
    }
}

/// reboot(2)'s `howto` for each end of a shutdown.
pub fn reboot_flags(cmd: RebootCmd) -> i32 {
    match cmd {
        RebootCmd::Reboot => RB_AUTOBOOT,
        RebootCmd::Halt => RB_HALT,
        RebootCmd::Poweroff => RB_POWEROFF,
    }
}

/// FreeBSD's RLIMIT_* numbers (`<sys/resource.h>`) by the config's names;
/// Linux-only names (locks, msgqueue, nice, rtprio, sigpending) are None,
/// and the config says which are unknown on this platform.
pub fn rlimit_resource(name: &str) -> Option<i32> {
    Some(match name {
        "cpu" => 0,
        "fsize" => 1,
        "data" => 2,
        "stack" => 3,
        "core" => 4,
        "rss" => 5,
        "memlock" => 6,
        "nproc" => 7,
        "nofile" => 8,
        "sbsize" => 9,
        "as" | "vmem" => 10,
        "npts" => 11,
        "swap" => 12,
        "kqueues" => 13,
        "umtxp" => 14,
        _ => return None,
    })
}

/// Signals archon never blocks: unblockable, faults of its own code,
/// SIGPIPE (ignored), and the threading library's.
const NEVER_BLOCKED: [i32; 12] = [
    SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS, SIGPIPE, SIGTHR,
    SIGLIBRT,
];

/// The signals archon handles itself: 1..=31 and the real-time ones, less
/// the never-blocked.
pub fn handled_signals() -> Vec<i32> {
    (1..=SIGRTMAX)
        .filter(|s| !(32..SIGRTMIN).contains(s))
        .filter(|s| !NEVER_BLOCKED.contains(s))
        .collect()
}

/// Passed on to the main child: all handled ones but SIGCHLD and the
/// terminal's SIGTTIN/SIGTTOU.
pub fn is_forwarded(sig: i32) -> bool {
    !matches!(sig, SIGCHLD | SIGTTIN | SIGTTOU) && !NEVER_BLOCKED.contains(&sig)
}

/// A peer from `LOCAL_PEERCRED`'s `xucred`: `cr_groups[0]` is the
/// effective gid, the rest the supplementary groups (at most 16 in all:
/// XU_NGROUPS).
pub fn peer_from_xucred(uid: u32, ngroups: i16, groups: &[u32]) -> Option<crate::access::Peer> {
    let n = usize::try_from(ngroups).ok()?.min(groups.len());
    let (&gid, rest) = groups[..n].split_first()?;
    Some(crate::access::Peer {
        uid,
        gid,
        groups: rest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_decode_like_the_c_macros() {
        assert_eq!(decode_status(0), Some(RawExit::Code(0)));
        assert_eq!(decode_status(3 << 8), Some(RawExit::Code(3)));
        assert_eq!(decode_status(255 << 8), Some(RawExit::Code(255)));
        assert_eq!(decode_status(9), Some(RawExit::Signal(9)));
        // Signalled with a core dump (0o200).
        assert_eq!(decode_status(0o200 | 11), Some(RawExit::Signal(11)));
        // Stopped by SIGSTOP: not an end.
        assert_eq!(decode_status((17 << 8) | 0o177), None);
    }

    #[test]
    fn kevents_map_to_signals_and_exits() {
        assert_eq!(
            kevent_to_event(EVFILT_SIGNAL, 15, 0, 1, 0),
            KqEvent::Signal(15)
        );
        assert_eq!(
            kevent_to_event(EVFILT_PROCDESC, 7, NOTE_EXIT, 2 << 8, 42),
            KqEvent::Exit {
                token: 42,
                status: Some(RawExit::Code(2))
            }
        );
        assert_eq!(
            kevent_to_event(EVFILT_PROCDESC, 7, NOTE_EXIT, 9, usize::MAX),
            KqEvent::Exit {
                token: usize::MAX,
                status: Some(RawExit::Signal(9))
            }
        );
        // No NOTE_EXIT, a data that is no status, other filters.
        assert_eq!(kevent_to_event(EVFILT_PROCDESC, 7, 0, 0, 1), KqEvent::Other);
        assert_eq!(
            kevent_to_event(EVFILT_PROCDESC, 7, NOTE_EXIT, i64::MAX, 1),
            KqEvent::Exit {
                token: 1,
                status: None
            }
        );
        assert_eq!(kevent_to_event(-1, 3, 0, 0, 0), KqEvent::Other);
        assert_eq!(kevent_to_event(EVFILT_SIGNAL, 0, 0, 1, 0), KqEvent::Other);
        assert_eq!(kevent_to_event(EVFILT_SIGNAL, 500, 0, 1, 0), KqEvent::Other);
    }

    #[test]
    fn reboot_flags_and_resources_are_freebsds() {
        assert_eq!(reboot_flags(RebootCmd::Reboot), 0);
        assert_eq!(reboot_flags(RebootCmd::Halt), 0x8);
        assert_eq!(reboot_flags(RebootCmd::Poweroff), 0x4000);
        assert_eq!(rlimit_resource("nofile"), Some(8));
        assert_eq!(rlimit_resource("as"), Some(10));
        assert_eq!(rlimit_resource("sigpending"), None);
    }

    #[test]
    fn archon_blocks_neither_faults_nor_libthrs_signals() {
        let h = handled_signals();
        for s in [SIGKILL, SIGSTOP, SIGSEGV, SIGPIPE, SIGTHR, SIGLIBRT, 34, 64] {
            assert!(!h.contains(&s), "{s}");
        }
        for s in [1, 2, 15, SIGCHLD, 29, 30, 31, SIGRTMIN, SIGRTMAX] {
            assert!(h.contains(&s), "{s}");
        }
        assert!(!is_forwarded(SIGCHLD) && !is_forwarded(SIGTTOU) && !is_forwarded(SIGTHR));
        assert!(is_forwarded(15) && is_forwarded(30) && is_forwarded(SIGRTMIN));
    }

    #[test]
    fn xucred_gives_the_gid_and_the_groups() {
        let Some(p) = peer_from_xucred(1000, 3, &[100, 5, 6, 0, 0]) else {
            panic!("no peer")
        };
        assert_eq!((p.uid, p.gid, p.groups), (1000, 100, vec![5, 6]));
        assert!(peer_from_xucred(1, 0, &[1]).is_none());
        assert!(peer_from_xucred(1, -1, &[1]).is_none());
        let Some(p) = peer_from_xucred(1, 40, &[7; 16]) else {
            panic!("no peer")
        };
        assert_eq!(p.groups.len(), 15);
    }
}
