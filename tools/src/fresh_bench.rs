//! One query on a fresh connection (connect, send a line, read the reply,
//! close), as a script with `nc -N -U` or a health check does it, against a
//! C server that accepts, reads, writes a reply of the same length and
//! closes: the floor for any server on a Unix socket. Interleaved, so that
//! drift hits both; unpinned (the target), then everything on one CPU.

use super::{cprogs, median, pin, Archon, Conn, Row};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn query(sock: &Path, line: &[u8]) -> f64 {
    let t = Instant::now();
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(line).unwrap();
    let mut buf = [0u8; 512];
    let mut got = 0;
    while !buf[..got].contains(&b'\n') {
        let n = s.read(&mut buf[got..]).unwrap();
        assert!(n > 0, "the server closed before its reply");
        got += n;
    }
    drop(s);
    t.elapsed().as_secs_f64() * 1e6
}

/// Every line of archon's reply to `line`, up to its final one.
fn whole_reply(sock: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

pub fn fresh_bench(rows: &mut Vec<Row>, n: usize) {
    let Some(echo_bin) = cprogs::build(&cprogs::dir(), "echo") else {
        return;
    };
    let a = Archon::start();
    let mut c = Conn::new(&a.sock);
    let ok = c.ask("StartDaemon,sleep,100000,\n");
    let id = ok.trim().strip_prefix("Ok,").expect("StartDaemon: Ok,<id>");
    let status_line = format!("Status,{id}\n");
    drop(c);
    // The C server answers with archon's whole reply, every line of it.
    let version = whole_reply(&a.sock, "Version\n");
    let status = whole_reply(&a.sock, &status_line);
    for (label, line, reply, target) in [
        ("Version", "Version\n", version, true),
        ("Status,<id>", status_line.as_str(), status, true),
    ] {
        let echo_sock = a.dir.join("echo");
        let _ = std::fs::remove_file(&echo_sock);
        let mut echo = Command::new(&echo_bin)
            .arg(&echo_sock)
            .arg(&reply)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while UnixStream::connect(&echo_sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "echo did not start"
            );
            std::thread::yield_now();
        }
        for (pinned, cpu, scpu) in [
            (false, None, None),
            (true, Some(0), Some(0)),
            (true, Some(0), Some(1)),
        ] {
            pin(0, cpu);
            pin(a.pid() as i32, scpu);
            pin(echo.id() as i32, scpu);
            for _ in 0..50 {
                query(&a.sock, line.as_bytes());
                query(&echo_sock, line.as_bytes());
            }
            let (mut va, mut ve) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                va.push(query(&a.sock, line.as_bytes()));
                ve.push(query(&echo_sock, line.as_bytes()));
            }
            let (ma, me) = (median(&mut va), median(&mut ve));
            let gate = target && !pinned;
            rows.push(Row {
                name: match (label, pinned, scpu) {
                    ("Version", false, _) => "fresh connection: Version vs C server",
                    (_, false, _) => "fresh connection: Status,<id> vs C",
                    (_, true, Some(0)) => "  (info) the same, on one CPU",
                    _ => "  (info) client on CPU 0, server on 1",
                },
                archon: ma,
                baseline: me,
                unit: "us",
                ratio: ma / me,
                target: if gate { "<= 1.20" } else { "info" },
                pass: !gate || ma / me <= 1.20,
            });
        }
        pin(0, None);
        pin(a.pid() as i32, None);
        let _ = echo.kill();
        let _ = echo.wait();
    }
}
