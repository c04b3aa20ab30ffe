//! Issue 16's rows that need a whole archon: the memory of archon's own
//! processes with one service, and a cold start of many services against a
//! `posix_spawn` loop timed by the same kernel exec events.

use super::entrypoint_bench::{archons, drop_from_page_cache};
use super::{
    cprogs, exec_committed, median, mono_ns, ppid, proc_field, sleeps_config, ExecEvents, Row,
};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("archon-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn archon_cmd(archon: &Path, sock: &Path, cfg: &Path) -> Command {
    let mut c = Command::new(archon);
    c.arg("--socket")
        .arg(sock)
        .args(["--log-level", "warn", "--grace", "2", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn stop(mut child: Child) {
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// The children of `pid` (from /proc/PID/task/*/children).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// PSS (KiB) of archon and every process under it that is not the
/// service, once the service runs and archon has no other child left (the
/// Lua worker of a config without hooks exits after the load): right
/// then, at rest (2 s later: archon gives back its start-up pages after
/// 1 s), and after one `Status` query.
fn tree_pss_once(archon: &Path, dir: &Path) -> Option<[f64; 3]> {
    let sock = dir.join("s");
    let cfg = dir.join("one.lua");
    std::fs::write(
        &cfg,
        r#"service "one" { cmd = { "sleep", "100000" }, stdout = "null", stderr = "null" }"#,
    )
    .ok()?;
    drop_from_page_cache(archon);
    let child = archon_cmd(archon, &sock, &cfg).spawn().ok()?;
    let apid = child.id();
    let t = Instant::now();
    let mut settled = None;
    while t.elapsed() < Duration::from_secs(20) {
        let kids = children(apid);
        if kids.len() == 1 && exec_committed(kids[0]) {
            settled = Some(kids[0]);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let tree = |svc: u32| {
        // Whatever else is archon's (none expected) counts too.
        let mut total = proc_field(apid, "smaps_rollup", "Pss:") as f64;
        let mut todo: Vec<u32> = children(apid).into_iter().filter(|p| *p != svc).collect();
        while let Some(p) = todo.pop() {
            total += proc_field(p, "smaps_rollup", "Pss:") as f64;
            todo.extend(children(p));
        }
        total
    };
    let pss = settled.and_then(|svc| {
        let start = tree(svc);
        std::thread::sleep(Duration::from_secs(2));
        let rest = tree(svc);
        let mut c = super::Conn::try_new(&sock)?;
        c.ask("Status,one\n");
        Some([start, rest, tree(svc)])
    });
    stop(child);
    pss
}

pub fn tree_pss_bench(rows: &mut Vec<Row>, bin_dir: &Path) {
    let dir = temp_dir("tree");
    for (label, archon) in archons(bin_dir) {
        let runs: Vec<[f64; 3]> = (0..3)
            .filter_map(|_| tree_pss_once(&archon, &dir))
            .collect();
        if runs.is_empty() {
            println!("PSS with one service ({label}): archon did not settle; row SKIPPED");
            continue;
        }
        let at = |k: usize| {
            let mut v: Vec<f64> = runs.iter().map(|r| r[k]).collect();
            median(&mut v)
        };
        let pss = at(1);
        rows.push(Row {
            name: if label == "static" {
                "PSS of archon's processes, 1 service, static"
            } else {
                "PSS of archon's processes, 1 service, glibc"
            },
            archon: pss,
            baseline: 1024.0,
            unit: "KiB",
            ratio: pss / 1024.0,
            target: "<= 1.00 (1 MiB)",
            pass: pss <= 1024.0,
        });
        for (name, v) in [
            ("  (info) the same right after the start", at(0)),
            ("  (info) the same after a Status query", at(2)),
        ] {
            rows.push(Row {
                name,
                archon: v,
                baseline: 1024.0,
                unit: "KiB",
                ratio: v / 1024.0,
                target: "info",
                pass: true,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

impl ExecEvents {
    /// Kernel times (ns) of the first `n` execs into `sleep` by children
    /// of `parent`, read until they are all seen or 30 s have passed.
    fn exec_times(&self, parent: u32, n: usize) -> Vec<u64> {
        let mut buf = vec![0u8; 256 << 10];
        let mut seen = std::collections::BTreeMap::new();
        let t = Instant::now();
        while seen.len() < n && t.elapsed() < Duration::from_secs(30) {
            // SAFETY: buf is writable for its length.
            let got = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if got <= 0 {
                continue;
            }
            for (pid, ts) in Self::execs_in(&buf[..got as usize]) {
                if ppid(pid) == Some(parent) && exec_committed(pid) {
                    seen.entry(pid).or_insert(ts);
                }
            }
        }
        seen.into_values().collect()
    }
}

/// ms from launch to the last of `n` execs, or None; `stop` ends what was
/// launched either way.
fn cold_once(ev: &ExecEvents, mut cmd: Command, n: usize, stop: fn(Child)) -> Option<f64> {
    let t0 = mono_ns();
    let child = cmd.spawn().ok()?;
    let times = ev.exec_times(child.id(), n);
    stop(child);
    if times.len() < n {
        println!("cold start: {} of {n} execs seen", times.len());
        return None;
    }
    let last = times.iter().max().copied()?;
    Some(last.saturating_sub(t0) as f64 / 1e6)
}

/// The spawn loop leaves its children to the bench: they go first, or
/// they would outlive it, orphaned.
fn stop_loop(child: Child) {
    for k in children(child.id()) {
        // SAFETY: plain kill of the loop's children.
        unsafe { libc::kill(k as i32, libc::SIGKILL) };
    }
    stop(child);
}

pub fn cold_start_bench(rows: &mut Vec<Row>, bin_dir: &Path, n: usize, rounds: usize) {
    let Some(spawnloop) = cprogs::build(&cprogs::dir(), "spawnloop") else {
        return;
    };
    let Some(ev) = ExecEvents::open() else {
        println!("cold start row SKIPPED: no proc connector (needs root)");
        return;
    };
    let dir = temp_dir("cold");
    let cfg = dir.join("cold.lua");
    std::fs::write(&cfg, sleeps_config(n)).unwrap();
    let archon = bin_dir.join("archon");
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        va.extend(cold_once(
            &ev,
            archon_cmd(&archon, &dir.join("s"), &cfg),
            n,
            stop,
        ));
        let mut c = Command::new(&spawnloop);
        c.arg(n.to_string()).args(["sleep", "100000"]);
        vb.extend(cold_once(&ev, c, n, stop_loop));
    }
    if va.is_empty() || vb.is_empty() {
        println!("cold start row SKIPPED: a round did not complete");
        return;
    }
    let (a, b) = (median(&mut va), median(&mut vb));
    rows.push(Row {
        name: "cold start, 1000 services vs posix_spawn loop",
        archon: a,
        baseline: b,
        unit: "ms",
        ratio: a / b,
        target: "<= 1.10",
        pass: a / b <= 1.10,
    });
    let _ = std::fs::remove_dir_all(&dir);
}
