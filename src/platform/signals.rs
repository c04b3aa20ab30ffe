//! Signal names <-> numbers in the platform's numbering, including
//! SIGRTMIN+N, and the numbers archon itself acts on (`sig`).

/// The signals archon's own code names.
pub mod sig {
    pub const HUP: i32 = libc::SIGHUP;
    pub const INT: i32 = libc::SIGINT;
    pub const KILL: i32 = libc::SIGKILL;
    pub const TERM: i32 = libc::SIGTERM;
    pub const CHLD: i32 = libc::SIGCHLD;
    pub const CONT: i32 = libc::SIGCONT;
    pub const USR1: i32 = libc::SIGUSR1;
    pub const USR2: i32 = libc::SIGUSR2;
    /// Power failure (`lxc-stop`'s signal); FreeBSD has none.
    #[cfg(target_os = "linux")]
    pub const PWR: Option<i32> = Some(libc::SIGPWR);
    #[cfg(not(target_os = "linux"))]
    pub const PWR: Option<i32> = None;

    /// The real-time signals' range.
    #[cfg(target_os = "linux")]
    pub fn rt_range() -> (i32, i32) {
        (libc::SIGRTMIN(), libc::SIGRTMAX())
    }
    /// FreeBSD's `<signal.h>`: SIGRTMIN 65, SIGRTMAX 126.
    #[cfg(not(target_os = "linux"))]
    pub fn rt_range() -> (i32, i32) {
        (65, 126)
    }
}

const COMMON: [(&str, i32); 28] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("SYS", libc::SIGSYS),
];

#[cfg(target_os = "linux")]
const OWN: [(&str, i32); 3] = [
    ("STKFLT", libc::SIGSTKFLT),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
];

#[cfg(target_os = "freebsd")]
const OWN: [(&str, i32); 5] = [
    ("EMT", libc::SIGEMT),
    ("IO", libc::SIGIO),
    ("INFO", libc::SIGINFO),
    ("THR", libc::SIGTHR),
    ("LIBRT", libc::SIGLIBRT),
];

fn names() -> impl Iterator<Item = &'static (&'static str, i32)> {
    COMMON.iter().chain(OWN.iter())
}

/// `TERM`, `SIGTERM`, `15`, `RTMIN+3` -> number; None when unknown.
pub fn signal_number(spec: &str) -> Option<i32> {
    let s = spec.trim().to_ascii_uppercase();
    let (rtmin, rtmax) = sig::rt_range();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=rtmax).contains(&n).then_some(n);
    }
    let s = s.strip_prefix("SIG").unwrap_or(&s);
    if let Some(&(_, n)) = names().find(|(name, _)| *name == s) {
        return Some(n);
    }
    let (base, off) = if let Some(rest) = s.strip_prefix("RTMIN") {
        (rtmin, rest)
    } else if let Some(rest) = s.strip_prefix("RTMAX") {
        (rtmax, rest)
    } else {
        return None;
    };
    let n = if off.is_empty() {
        base
    } else {
        base + off.parse::<i32>().ok()?
    };
    (rtmin..=rtmax).contains(&n).then_some(n)
}

/// 15 -> `TERM`; real-time signals as `RTMIN+N`.
pub fn signal_name(n: i32) -> String {
    if let Some((name, _)) = names().find(|(_, num)| *num == n) {
        return (*name).to_string();
    }
    let (rtmin, rtmax) = sig::rt_range();
    if (rtmin..=rtmax).contains(&n) {
        return format!("RTMIN+{}", n - rtmin);
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("RTMIN+1"), Some(sig::rt_range().0 + 1));
        assert_eq!(signal_number("NOPE"), None);
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_name(15), "TERM");
        assert_eq!(signal_name(sig::rt_range().0 + 2), "RTMIN+2");
    }
}
