//! Entrypoint rows: `archon -- /bin/true` against `tini -s -- /bin/true`
//! (and dumb-init, when installed), as a plain child and as PID 1 of a new
//! PID namespace, and archon's memory as a container's init against tini's.
//! Each archon binary found is measured: the release build next to the
//! bench (glibc, dynamic) and the static musl one of `make static`.

use super::{cprogs, median, Row};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn installed(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
}

/// The archon binaries to measure: (label, path).
pub fn archons(bin_dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut out = vec![("glibc", bin_dir.join("archon"))];
    let target = bin_dir.parent().unwrap_or(bin_dir);
    // `make static` builds into the second; the tests into the first. The
    // newer one is measured.
    let newest = [
        target.join("static/x86_64-unknown-linux-musl/release/archon"),
        target.join("x86_64-unknown-linux-musl/release/archon"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max();
    if let Some((_, p)) = newest {
        out.push(("static", p));
    }
    out
}

fn run_once(argv: &[&Path], prefix: &[&str]) -> f64 {
    let mut c = if prefix.is_empty() {
        Command::new(argv[0])
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg(argv[0]);
        c
    };
    c.args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let s = c.status().unwrap();
    let us = t.elapsed().as_secs_f64() * 1e6;
    assert!(s.success(), "{c:?} failed: {s}");
    us
}

/// Medians of each command run `n` times, interleaved so drift hits all.
fn interleaved(cmds: &[(Vec<&Path>, &[&str])], n: usize) -> Vec<f64> {
    let mut times = vec![Vec::with_capacity(n); cmds.len()];
    for _ in 0..n {
        for (i, (argv, prefix)) in cmds.iter().enumerate() {
            times[i].push(run_once(argv, prefix));
        }
    }
    times.iter_mut().map(|v| median(v)).collect()
}

pub fn entrypoint_bench(rows: &mut Vec<Row>, bin_dir: &Path, n: usize) {
    let Some(tini) = installed("tini") else {
        println!("entrypoint rows SKIPPED: tini is not installed (apt-get install tini)");
        return;
    };
    let truth = Path::new("/bin/true");
    let dash = Path::new("--");
    let dumb = installed("dumb-init");
    // The floor: a 20-line C init (tools/c/init.c), always there.
    let cinit = cprogs::build(&cprogs::dir(), "init");
    let ns: &[&str] = &["unshare", "--pid", "--fork", "--"];
    for (label, archon) in archons(bin_dir) {
        let mut cmds: Vec<(Vec<&Path>, &[&str])> = vec![
            (vec![archon.as_path(), dash, truth], &[]),
            (vec![tini.as_path(), Path::new("-s"), dash, truth], &[]),
            (vec![truth], &[]),
        ];
        if let Some(c) = &cinit {
            cmds.push((vec![c.as_path(), truth], &[]));
        }
        if let Some(d) = &dumb {
            cmds.push((vec![d.as_path(), truth], &[]));
        }
        let m = interleaved(&cmds, n);
        let (name, info): (&'static str, &'static str) = match label {
            "static" => ("entrypoint start, static archon vs tini -s", "<= 1.05"),
            _ => ("entrypoint start, glibc archon vs tini -s", "info"),
        };
        let ratio = m[0] / m[1];
        rows.push(Row {
            name,
            archon: m[0],
            baseline: m[1],
            unit: "us",
            ratio,
            target: info,
            pass: info == "info" || ratio <= 1.05,
        });
        let mut extra = 3;
        for (present, row) in [
            (cinit.is_some(), "  (info) the same vs a 20-line C init"),
            (dumb.is_some(), "  (info) the same vs dumb-init"),
        ] {
            if present {
                rows.push(Row {
                    name: row,
                    archon: m[0],
                    baseline: m[extra],
                    unit: "us",
                    ratio: m[0] / m[extra],
                    target: "info",
                    pass: true,
                });
                extra += 1;
            }
        }
        println!(
            "  ({label}) /bin/true alone {:.0} us; archon adds {:.0} us, tini {:.0} us",
            m[2],
            m[0] - m[2],
            m[1] - m[2],
        );
        // As PID 1 of a new PID namespace (the unshare costs both the same).
        let mut cmds: Vec<(Vec<&Path>, &[&str])> = vec![
            (vec![archon.as_path(), dash, truth], ns),
            (vec![tini.as_path(), dash, truth], ns),
        ];
        if let Some(c) = &cinit {
            cmds.push((vec![c.as_path(), truth], ns));
        }
        let m = interleaved(&cmds, n / 2);
        rows.push(Row {
            name: if label == "static" {
                "  PID 1 of a PID namespace, static vs tini"
            } else {
                "  PID 1 of a PID namespace, glibc vs tini"
            },
            archon: m[0],
            baseline: m[1],
            unit: "us",
            ratio: m[0] / m[1],
            target: "info",
            pass: true,
        });
        if let Some(c) = m.get(2) {
            rows.push(Row {
                name: "  PID 1 of a PID namespace, vs the C init",
                archon: m[0],
                baseline: *c,
                unit: "us",
                ratio: m[0] / c,
                target: "info",
                pass: true,
            });
        }
        // Memory as a container's init, its child asleep: at rest (after
        // archon has given back its start-up pages), the target; right
        // after the start and after reaping an orphan, for information.
        let a = init_memory(&archon, &["--"]);
        let t = init_memory(&tini, &["--"]);
        let (a_pss, a_priv) = a.rest;
        let (t_pss, t_priv) = t.rest;
        rows.push(Row {
            name: if label == "static" {
                "PSS as PID 1 at rest, static (tini as baseline)"
            } else {
                "PSS as PID 1 at rest, glibc (tini as baseline)"
            },
            archon: a_pss,
            baseline: t_pss,
            unit: "KiB",
            ratio: a_pss / 1024.0,
            target: "<= 1.00 (1 MiB)",
            pass: a_pss <= 1024.0,
        });
        rows.push(Row {
            name: "  private memory as PID 1 (tini as baseline)",
            archon: a_priv,
            baseline: t_priv,
            unit: "KiB",
            ratio: a_priv / 512.0,
            target: "<= 1.00 (512 KiB)",
            pass: a_priv <= 512.0,
        });
        for (name, (_, private)) in [
            ("  (info) private right after the start", a.start),
            ("  (info) private after reaping an orphan", a.after),
        ] {
            rows.push(Row {
                name,
                archon: private,
                baseline: t_priv,
                unit: "KiB",
                ratio: private / 512.0,
                target: "info",
                pass: true,
            });
        }
    }
}

/// (PSS, private) in KiB of PID 1 of a new PID namespace, read by its
/// child from /proc/1/smaps_rollup: right after the start, at rest (2 s
/// later: archon gives back its start-up pages after 1 s), and after it
/// has reaped an orphan. The median of 5 starts, each with `init` first
/// dropped from the page cache. How much of a binary a fault maps depends
/// on the page cache's folios, which differ between a file just written
/// (a fresh build) and one read from disk; the second is what a container
/// start sees, and it is stable.
struct InitMemory {
    start: (f64, f64),
    rest: (f64, f64),
    after: (f64, f64),
}

fn init_memory(init: &Path, args: &[&str]) -> InitMemory {
    let mut runs = Vec::new();
    for _ in 0..5 {
        drop_from_page_cache(init);
        runs.push(init_memory_once(init, args));
    }
    let at = |k: usize, f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = runs.iter().filter_map(|r| r.get(k)).map(f).collect();
        median(&mut v)
    };
    InitMemory {
        start: (at(0, |r| r.0), at(0, |r| r.1)),
        rest: (at(1, |r| r.0), at(1, |r| r.1)),
        after: (at(2, |r| r.0), at(2, |r| r.1)),
    }
}

pub fn drop_from_page_cache(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd; advice only.
        unsafe {
            libc::fdatasync(f.as_raw_fd());
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

fn init_memory_once(init: &Path, args: &[&str]) -> Vec<(f64, f64)> {
    let script = "cat /proc/1/smaps_rollup; echo ===; sleep 2; cat /proc/1/smaps_rollup; \
                  echo ===; sh -c 'true &'; sleep 0.3; cat /proc/1/smaps_rollup";
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(init)
        .args(args)
        .args(["sh", "-c", script])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("===")
        .map(|part| {
            let field = |k: &str| -> f64 {
                part.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            (
                field("Pss:"),
                field("Private_Clean:") + field("Private_Dirty:"),
            )
        })
        .collect()
}
