//! The test helper: the Linux program behind `src/bin/archon-testhelper.rs`.
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

/// (pid, state) of every process whose parent is `parent`, zombies included.
fn children_of(parent: i32) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let st = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = st.rsplit_once(") ")?.1.to_string();
            let f: Vec<&str> = rest.split(' ').collect();
            (f.get(1)?.parse::<i32>().ok()? == parent).then(|| (p, f[0].to_string()))
        })
        .collect()
}

/// See the module doc: `reaper PIDFILE -- CMD...`.
fn reaper(pidfile: &str, cmd: &[String]) -> ! {
    use std::os::unix::process::ExitStatusExt;
    let parent = unsafe { libc::getppid() };
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut child = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let tmp = format!("{pidfile}.tmp");
    std::fs::write(&tmp, pid.to_string()).unwrap();
    std::fs::rename(&tmp, pidfile).unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        // The test is gone (crashed, killed): take everything down.
        if unsafe { libc::getppid() } != parent {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Orphans re-parented here meanwhile are reaped as they exit.
        unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} };
        std::thread::sleep(Duration::from_millis(20));
    };
    // Everything below: archon's leftovers, re-parented to this subreaper.
    // Never a blocking wait: a killed child's own children come here alive,
    // and waiting for them before they are killed would hang the sweep
    // (until the test kills this reaper and they go to init).
    let me = std::process::id() as i32;
    loop {
        let left = children_of(me);
        if left.is_empty() {
            break;
        }
        for (p, _) in &left {
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} };
        std::thread::sleep(Duration::from_millis(5));
    }
    match status.signal() {
        Some(sig) => unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
            std::process::exit(128 + sig)
        },
        None => std::process::exit(status.code().unwrap_or(1)),
    }
}

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("reaper")
        && args.get(2).map(String::as_str) == Some("--")
    {
        reaper(&args[1], &args[3..]);
    }
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
            "connect" => {
                let path = next(&mut i);
                let n: usize = next(&mut i).parse().unwrap();
                let mut held = Vec::new();
                for _ in 0..n {
                    if let Ok(mut c) = std::os::unix::net::UnixStream::connect(&path) {
                        let _ = c.write_all(b"Status\n");
                        held.push(c);
                    }
                }
                println!("connected {}", held.len());
                std::io::stdout().flush().unwrap();
                std::mem::forget(held);
            }
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            // `alloc MIB MIB_PER_S`: grows its resident memory by MIB at that
            // rate (pages written, so resident), prints `allocated`, and
            // goes on to the next action (the memory stays).
            "alloc" | "alloc-marked" => {
                // alloc-marked also prints, after each MiB, the wall clock
                // (ns since the epoch) and its VmRSS (kB): the benchmark
                // finds when a limit was crossed.
                let marked = args[i] == "alloc-marked";
                let total: usize = next(&mut i).parse().unwrap();
                let rate: f64 = next(&mut i).parse().unwrap();
                let start = std::time::Instant::now();
                let mut held: Vec<Vec<u8>> = Vec::new();
                for mib in 0..total {
                    let due = Duration::from_secs_f64(mib as f64 / rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    held.push(vec![1u8; 1 << 20]);
                    if marked {
                        let ns = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_nanos();
                        let rss = status_field("VmRSS:");
                        let kb = rss.split_whitespace().next().unwrap_or("0");
                        println!("mark {ns} {kb}");
                    }
                }
                println!("allocated {total}");
                std::io::stdout().flush().unwrap();
                std::mem::forget(held);
            }
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
            "await" => {
                let sigs: Vec<i32> = next(&mut i).split(',').map(sig).collect();
                let count: usize = match args.get(i + 1).and_then(|c| c.parse().ok()) {
                    Some(c) => {
                        i += 1;
                        c
                    }
                    None => 1,
                };
                let mut seen = vec![0usize; sigs.len()];
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    for &s in &sigs {
                        libc::sigaddset(&mut set, s);
                    }
                    while seen.iter().any(|&n| n < count) {
                        let got = libc::sigwaitinfo(&set, std::ptr::null_mut());
                        if let Some(k) = sigs.iter().position(|&s| s == got) {
                            seen[k] += 1;
                        }
                    }
                }
                writeln!(out, "got {seen:?}").unwrap();
            }
            "orphans" => {
                let n: usize = next(&mut i).parse().unwrap();
                let mut fds = [0i32; 2];
                // SAFETY: fork/pipe/read/_exit only; the children touch no
                // Rust state.
                unsafe {
                    assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
                    let mid = libc::fork();
                    if mid == 0 {
                        libc::close(fds[1]);
                        for _ in 0..n {
                            if libc::fork() == 0 {
                                let mut b = 0u8;
                                // Blocks until the write end is closed.
                                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                                libc::_exit(0);
                            }
                        }
                        libc::_exit(0);
                    }
                    libc::close(fds[0]);
                    let mut status = 0;
                    libc::waitpid(mid, &mut status, 0);
                    // All N exist and are orphans now, re-parented to our
                    // parent (archon: PID 1 or a subreaper), or the test
                    // proves nothing.
                    let me = std::process::id() as i32;
                    let adopted = children_of(libc::getppid())
                        .iter()
                        .filter(|(p, _)| *p != me)
                        .count();
                    if adopted < n {
                        eprintln!("only {adopted} of {n} orphans went to our parent");
                        std::process::exit(2);
                    }
                    // Let them go at once.
                    libc::close(fds[1]);
                }
            }
            "wait-clean" => {
                let me = std::process::id() as i32;
                let parent = unsafe { libc::getppid() };
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let left: Vec<String> = children_of(parent)
                        .into_iter()
                        .filter(|(p, _)| *p != me)
                        .map(|(p, state)| format!("{p}:{state}"))
                        .collect();
                    if left.is_empty() {
                        writeln!(out, "clean").unwrap();
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        eprintln!("still there: {left:?}");
                        std::process::exit(1);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            "ready-fd" => {
                let fd: i32 = next(&mut i).parse().unwrap();
                unsafe {
                    assert_eq!(libc::write(fd, b"\n".as_ptr().cast(), 1), 1);
                    libc::close(fd);
                }
            }
            "feed-watchdog" => {
                let every: f64 = next(&mut i).parse().unwrap();
                let path = next(&mut i);
                loop {
                    notify("WATCHDOG=1");
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .unwrap();
                    writeln!(f, "fed").unwrap();
                    std::thread::sleep(Duration::from_secs_f64(every));
                }
            }
            "notify-many" => {
                let n: usize = next(&mut i).parse().unwrap();
                let text = next(&mut i);
                for k in 0..n {
                    notify(&format!("{text}{k}"));
                }
            }
            "notify" => notify(&next(&mut i).replace("\\n", "\n")),
            "lines" => {
                let n: usize = next(&mut i).parse().unwrap();
                let text = next(&mut i);
                let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                for k in 0..n {
                    writeln!(w, "{text} {k}").unwrap();
                }
                w.flush().unwrap();
            }
            "http-serve" => {
                use std::os::fd::FromRawFd;
                assert_eq!(
                    std::env::var("LISTEN_PID").ok(),
                    Some(std::process::id().to_string())
                );
                // SAFETY: fd 3 is the listening socket archon passed.
                let l = unsafe { std::net::TcpListener::from_raw_fd(3) };
                let inst = std::env::var("ARCHON_INSTANCE").unwrap_or_default();
                let body = format!("instance={inst} pid={}\n", std::process::id());
                let reply = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                // A graceful server: SIGTERM ends it between connections,
                // never in the middle of one (blocked, except inside the
                // ppoll that waits for the next), so a restart's stop
                // loses no request it has accepted.
                // SAFETY: plain signal-mask calls on local sets.
                let waiting = unsafe {
                    let mut term: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut term);
                    libc::sigaddset(&mut term, libc::SIGTERM);
                    let mut old: libc::sigset_t = std::mem::zeroed();
                    libc::sigprocmask(libc::SIG_BLOCK, &term, &mut old);
                    libc::sigdelset(&mut old, libc::SIGTERM);
                    old
                };
                loop {
                    let mut pfd = libc::pollfd {
                        fd: 3,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; SIGTERM's default action
                    // ends the process inside the call if it is pending.
                    if unsafe { libc::ppoll(&mut pfd, 1, std::ptr::null(), &waiting) } < 1 {
                        continue;
                    }
                    let Ok((mut c, _)) = l.accept() else { continue };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = c.write_all(reply.as_bytes());
                }
            }
            "readline" => {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).unwrap();
                writeln!(out, "line:{}", line.trim_end()).unwrap();
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
                    "cwd" => std::env::current_dir().unwrap().display().to_string(),
                    "tty-fg" => unsafe {
                        if libc::tcgetpgrp(0) == libc::getpgrp() {
                            "fg".to_string()
                        } else {
                            "bg".to_string()
                        }
                    },
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

/// TEXT as one datagram to `$NOTIFY_SOCKET` (abstract when it starts with @).
fn notify(text: &str) {
    use std::os::linux::net::SocketAddrExt;
    let target = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    match target.strip_prefix('@') {
        Some(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
            sock.send_to_addr(text.as_bytes(), &addr).unwrap();
        }
        None => {
            sock.send_to(text.as_bytes(), &target).unwrap();
        }
    }
}
