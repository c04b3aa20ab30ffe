//! A test helper that misbehaves on command. Actions run left to right:
//!
//!   exit N | kill-self SIG | hang | sleep SECS | ignore SIG | block SIG
//!   wait-file PATH | touch PATH | pidfile PATH | orphan N | echo TEXT
//!   print pid|ppid|pgid|sigmask|sigign|argv|env|fds | cat | -- (stop; the rest is data)
//!
//! Without `exit`, it exits 0 after the last action.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::time::Duration;

fn sig(name: &str) -> i32 {
    archon::platform::signal_number(name).unwrap_or_else(|| panic!("unknown signal {name}"))
}

fn status_field(name: &str) -> String {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let next = |i: &mut usize| -> String {
        *i += 1;
        args.get(*i).cloned().expect("missing argument")
    };
    let mut out = std::io::stdout();
    while i < args.len() {
        match args[i].as_str() {
            "--" => break,
            "exit" => std::process::exit(next(&mut i).parse().unwrap()),
            "kill-self" => {
                let s = sig(&next(&mut i));
                unsafe {
                    libc::signal(s, libc::SIG_DFL);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, s);
                    libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                    libc::raise(s);
                }
                std::thread::sleep(Duration::from_secs(5));
                std::process::exit(99);
            }
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "sleep" => std::thread::sleep(Duration::from_secs_f64(next(&mut i).parse().unwrap())),
            "ignore" => unsafe {
                libc::signal(sig(&next(&mut i)), libc::SIG_IGN);
            },
            "block" => unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig(&next(&mut i)));
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            },
            "wait-file" => {
                let p = next(&mut i);
                while !std::path::Path::new(&p).exists() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            "touch" => {
                std::fs::write(next(&mut i), b"").unwrap();
            }
            "pidfile" => {
                let p = next(&mut i);
                let tmp = format!("{p}.tmp");
                std::fs::write(&tmp, std::process::id().to_string()).unwrap();
                std::fs::rename(tmp, p).unwrap();
            }
            "orphan" => {
                let n: usize = next(&mut i).parse().unwrap();
                for _ in 0..n {
                    // SAFETY: the child only sleeps and exits.
                    unsafe {
                        if libc::fork() == 0 {
                            libc::sleep(1);
                            libc::_exit(0);
                        }
                    }
                }
            }
            "echo" => writeln!(out, "{}", next(&mut i)).unwrap(),
            "cat" => {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).unwrap();
                out.write_all(&buf).unwrap();
            }
            "print" => {
                let what = next(&mut i);
                let text = match what.as_str() {
                    "pid" => std::process::id().to_string(),
                    "ppid" => unsafe { libc::getppid() }.to_string(),
                    "pgid" => unsafe { libc::getpgid(0) }.to_string(),
                    "sigmask" => status_field("SigBlk:"),
                    "sigign" => status_field("SigIgn:"),
                    "argv" => std::env::args().collect::<Vec<_>>().join("\u{1f}"),
                    "env" => std::env::vars()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("\u{1f}"),
                    "fds" => {
                        let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                            .unwrap()
                            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                            .collect();
                        fds.sort();
                        fds.iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                    other => panic!("cannot print {other}"),
                };
                writeln!(out, "{text}").unwrap();
            }
            other => panic!("unknown action {other}"),
        }
        out.flush().unwrap();
        i += 1;
    }
}
