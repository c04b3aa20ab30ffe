//! Signal names <-> numbers (Linux numbering), including SIGRTMIN+N.

const NAMES: [(&str, i32); 31] = [
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
    ("STKFLT", libc::SIGSTKFLT),
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
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// `TERM`, `SIGTERM`, `15`, `RTMIN+3` -> number; None when unknown.
pub fn signal_number(spec: &str) -> Option<i32> {
    let s = spec.trim().to_ascii_uppercase();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let s = s.strip_prefix("SIG").unwrap_or(&s);
    if let Some(&(_, n)) = NAMES.iter().find(|(name, _)| *name == s) {
        return Some(n);
    }
    let (base, off) = if let Some(rest) = s.strip_prefix("RTMIN") {
        (libc::SIGRTMIN(), rest)
    } else if let Some(rest) = s.strip_prefix("RTMAX") {
        (libc::SIGRTMAX(), rest)
    } else {
        return None;
    };
    let n = if off.is_empty() {
        base
    } else {
        base + off.parse::<i32>().ok()?
    };
    (libc::SIGRTMIN()..=libc::SIGRTMAX())
        .contains(&n)
        .then_some(n)
}

/// 15 -> `TERM`; real-time signals as `RTMIN+N`.
pub fn signal_name(n: i32) -> String {
    if let Some((name, _)) = NAMES.iter().find(|(_, num)| *num == n) {
        return (*name).to_string();
    }
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
        return format!("RTMIN+{}", n - libc::SIGRTMIN());
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
        assert_eq!(signal_number("RTMIN+1"), Some(libc::SIGRTMIN() + 1));
        assert_eq!(signal_number("NOPE"), None);
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_name(15), "TERM");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "RTMIN+2");
    }
}
