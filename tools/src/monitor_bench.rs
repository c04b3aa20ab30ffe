//! Issue 14's rows: what sampling costs archon per process per sample
//! against the bench reading the same /proc files itself, the CPU of
//! sampling 1 000 services every second, a scrape of /metrics with 1 000
//! services against the bench serving the same bytes, and how soon a
//! memory limit fires after the crossing.

use super::{bin_dir, median, Conn, Row};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPU time of a process (or `thread-self`), ns, from schedstat.
pub(super) fn cpu_ns(who: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{who}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIGTERM and a wait: archon stops its services (a SIGKILL would leave
/// them running).
pub(super) fn stop(child: &mut Child) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// The sum of the `Aggregate` rows' sample counts of `Stats`.
fn samples_taken(sock: &Path) -> u64 {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(b"Stats\n").unwrap();
    let mut total = 0;
    for line in BufReader::new(s).lines() {
        let l = line.unwrap();
        if l == "Ok" || l.starts_with("Error") {
            break;
        }
        if let Some(rest) = l.strip_prefix("Aggregate,") {
            total += rest
                .split(',')
                .nth(3)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// CPU per process of reading `stat` (with `all`: `status`, `io`, and
/// the fd directory) with the files opened once and `pread` at 0 after.
fn kept_floor_us(pids: &[u32], all: bool, rounds: usize) -> f64 {
    use std::os::unix::fs::FileExt;
    let names: &[&str] = if all {
        &["stat", "status", "io"]
    } else {
        &["stat"]
    };
    let files: Vec<Vec<std::fs::File>> = pids
        .iter()
        .map(|p| {
            names
                .iter()
                .filter_map(|f| std::fs::File::open(format!("/proc/{p}/{f}")).ok())
                .collect()
        })
        .collect();
    let mut buf = vec![0u8; 4096];
    let t0 = cpu_ns("thread-self");
    for _ in 0..rounds {
        for (fs, p) in files.iter().zip(pids) {
            for f in fs {
                let _ = f.read_at(&mut buf, 0);
            }
            if all {
                let _ = std::fs::read_dir(format!("/proc/{p}/fd")).map(|d| d.count());
            }
        }
    }
    (cpu_ns("thread-self") - t0) as f64 / (rounds * pids.len()) as f64 / 1000.0
}

/// What a naive monitor reads per process, as archon's `all` profile does.
fn read_like_archon(pid: u32) {
    for f in ["stat", "status", "io"] {
        let _ = std::fs::read(format!("/proc/{pid}/{f}"));
    }
    let _ = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());
}

fn scrape(addr: &str) -> (f64, usize) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    (t.elapsed().as_secs_f64() * 1000.0, out.len())
}

pub fn monitor_rows(rows: &mut Vec<Row>, quick: bool) {
    sampling_rows(rows, quick, "all");
    sampling_rows(rows, quick, "cpu,memory");
    let dir = std::env::temp_dir().join(format!("archon-bench-lim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    limit_latency_row(rows, &dir, quick);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sampling 1 000 services every second with `collect`, then (for `all`)
/// a scrape of /metrics.
fn sampling_rows(rows: &mut Vec<Row>, quick: bool, collect: &str) {
    let all = collect == "all";
    let n = 1000;
    let window = if quick { 3 } else { 10 };
    let dir =
        std::env::temp_dir().join(format!("archon-bench-mon-{}-{collect}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mon.lua");
    std::fs::write(
        &cfg,
        format!(
            r#"for i = 1, {n} do
                 service("s" .. i) {{ cmd = {{ "sleep", "100000" }}, stdout = "null", stderr = "null",
                                      monitor = {{ interval = 1, history = 100, collect = "{collect}" }} }}
               end"#
        ),
    )
    .unwrap();
    let sock = dir.join("s");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child: Child = Command::new(bin_dir().join("archon"))
        .arg("--socket")
        .arg(&sock)
        .args([
            "--log-level",
            "warn",
            "--grace",
            "1",
            "--metrics",
            &addr,
            "--config",
        ])
        .arg(&cfg)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        std::thread::yield_now();
    }
    let apid = child.id();
    let mut c = Conn::new(&sock);
    // Every process has been sampled once (a first interval passed).
    let pids = loop {
        let pids = super::service_pids(&mut c);
        if pids.len() == n && samples_taken(&sock) >= n as u64 {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (s0, c0, t0) = (
        samples_taken(&sock),
        cpu_ns(&apid.to_string()),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(window));
    let (c1, t1) = (cpu_ns(&apid.to_string()), t0.elapsed());
    let s1 = samples_taken(&sock);
    let taken = (s1 - s0).max(1);
    let per_sample_us = (c1 - c0) as f64 / taken as f64 / 1000.0;
    // The bench reads the same files for the same processes.
    let b0 = cpu_ns("thread-self");
    let rounds = 10;
    for _ in 0..rounds {
        for &p in &pids {
            if all {
                read_like_archon(p);
            } else {
                let _ = std::fs::read(format!("/proc/{p}/stat"));
            }
        }
    }
    let bench_us = (cpu_ns("thread-self") - b0) as f64 / (rounds * pids.len()) as f64 / 1000.0;
    // The floor of archon's own method: the same files kept open and read
    // again in place (the fd directory is opened each time here).
    let kept_us = kept_floor_us(&pids, all, rounds);
    rows.push(Row {
        name: if all {
            "sampling (all): archon's CPU per process sample"
        } else {
            "sampling (cpu,memory): CPU per process sample"
        },
        archon: per_sample_us,
        baseline: bench_us,
        unit: "us",
        ratio: per_sample_us / bench_us,
        target: "<= 1.3, <= 10 us",
        pass: per_sample_us / bench_us <= 1.3 && per_sample_us <= 10.0,
    });
    rows.push(Row {
        name: "  (info) vs the bench pread-ing the files kept open",
        archon: per_sample_us,
        baseline: kept_us,
        unit: "us",
        ratio: per_sample_us / kept_us,
        target: "info",
        pass: true,
    });
    let pct = (c1 - c0) as f64 / t1.as_nanos() as f64 * 100.0;
    let bench_pct = bench_us * n as f64 / 1e6 * 100.0;
    rows.push(Row {
        name: if all {
            "  1000 services, all, every second: CPU"
        } else {
            "  1000 services, cpu,memory, every second: CPU"
        },
        archon: pct,
        baseline: bench_pct,
        unit: "%",
        ratio: pct / bench_pct,
        target: "<= 1 % of a CPU",
        pass: pct <= 1.0,
    });
    if !all {
        stop(&mut child);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // /metrics with 1 000 services, against the bench serving the bytes.
    let (_, size) = scrape(&addr);
    let mut via: Vec<f64> = Vec::new();
    let mut direct: Vec<f64> = Vec::new();
    let body = vec![b'x'; size];
    let srv = TcpListener::bind("127.0.0.1:0").unwrap();
    let saddr = srv.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for s in srv.incoming().take(if quick { 3 } else { 8 }) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            s.write_all(&body).unwrap();
        }
    });
    // archon reuses a rendering for a second: scrapes are spaced past it,
    // so each one renders the 1 000 services afresh.
    for _ in 0..if quick { 3 } else { 8 } {
        std::thread::sleep(Duration::from_millis(1050));
        via.push(scrape(&addr).0);
        direct.push(scrape(&saddr).0);
    }
    server.join().unwrap();
    let (v, d) = (median(&mut via), median(&mut direct));
    rows.push(Row {
        name: "/metrics with 1000 services, round trip, rendered",
        archon: v,
        baseline: d,
        unit: "ms",
        ratio: v / d,
        target: "<= 20 ms",
        pass: v <= 20.0,
    });
    rows.push(Row {
        name: "  (info) its size",
        archon: size as f64 / 1024.0,
        baseline: size as f64 / 1024.0,
        unit: "KiB",
        ratio: 1.0,
        target: "info",
        pass: true,
    });
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 32 MiB RSS limit (sustain 0, sampled every 100 ms) on the helper
/// allocating 1 MiB a millisecond: from the crossing (the helper's own
/// mark) to the `LimitEvent`, against the interval.
fn limit_latency_row(rows: &mut Vec<Row>, dir: &Path, quick: bool) {
    let helper = format!("{}-testhelper", bin_dir().join("archon").display());
    let limit: u64 = 32 << 20;
    let interval_ms = 100.0;
    let cfg = dir.join("limit.lua");
    std::fs::write(
        &cfg,
        format!(
            r#"service "leak" {{ cmd = {{ "{helper}", "alloc-marked", "48", "1000", "hang" }},
                 autostart = false, stderr = "null", restart = "never",
                 limits = {{ memory = {limit}, action = "stop" }}, monitor = {{ interval = 0.1 }} }}"#
        ),
    )
    .unwrap();
    let sock = dir.join("l");
    let mut child = Command::new(bin_dir().join("archon"))
        .arg("--socket")
        .arg(&sock)
        .args(["--log-level", "warn", "--grace", "1", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        std::thread::yield_now();
    }
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut late = Vec::new();
    for _ in 0..if quick { 5 } else { 15 } {
        let mut sub = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        sub.write_all(b"Subscribe\n").unwrap();
        let mut sub = BufReader::new(sub);
        let mut l = String::new();
        sub.read_line(&mut l).unwrap();
        let mut c = Conn::new(&sock);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(c.ask("Start,leak\n").starts_with("Ok"));
        // The crossing: this run's first mark whose RSS is over the limit
        // (marks of the previous run may still be in the pipe).
        let crossed = loop {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [_, "mark", ns, kb] = f[..] {
                let ns = ns.parse::<u64>().unwrap();
                if ns > started && kb.parse::<u64>().unwrap() * 1024 > limit {
                    break ns as f64 / 1e6;
                }
            }
        };
        let fired = loop {
            let mut line = String::new();
            sub.read_line(&mut line).unwrap();
            if let Some(rest) = line.strip_prefix("LimitEvent,") {
                break rest.split(',').next().unwrap().parse::<f64>().unwrap() * 1000.0;
            }
        };
        late.push(fired - crossed);
        // Let it stop (failed), drain its remaining marks, go again.
        loop {
            let mut line = String::new();
            sub.read_line(&mut line).unwrap();
            if line.starts_with("ServiceEvent,") && line.contains(",leak,0,failed,") {
                break;
            }
        }
    }
    let mut worst = late.clone();
    let med = median(&mut late);
    worst.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let max = *worst.last().unwrap();
    rows.push(Row {
        name: "memory limit: crossing to LimitEvent, worst",
        archon: max,
        baseline: interval_ms,
        unit: "ms",
        ratio: max / interval_ms,
        target: "<= interval + 10 ms",
        pass: max <= interval_ms + 10.0,
    });
    rows.push(Row {
        name: "  (info) median",
        archon: med,
        baseline: interval_ms,
        unit: "ms",
        ratio: med / interval_ms,
        target: "info",
        pass: true,
    });
    stop(&mut child);
}
