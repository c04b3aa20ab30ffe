//! `archonctl stats` and `archonctl top`: `Sample` and `Aggregate` rows
//! as tables a person reads, and a live table refreshed in place on a
//! terminal (plain snapshots when piped).

use archon::protocol::{ReplyLine, Request};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Bytes as a person reads them: 512, 1.5K, 20.3M, 1.2G.
pub fn human(bytes: &str) -> String {
    let Ok(b) = bytes.parse::<f64>() else {
        return "-".into();
    };
    let units = ["", "K", "M", "G", "T"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}")
    } else {
        format!("{v:.1}{}", units[u])
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// A duration in seconds as `3d04h`, `2h05m`, `4m10s`, `12s`.
fn uptime(secs: &str) -> String {
    let s = secs.parse::<f64>().unwrap_or(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Epoch seconds as the UTC time of day, `18:41:21`.
fn clock(secs: &str) -> String {
    let s = secs.parse::<f64>().unwrap_or(0.0) as u64 % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

fn label(r: &[String]) -> String {
    if r[2].is_empty() {
        format!("id {}", r[1])
    } else {
        format!("{}.{}", r[2], r[3])
    }
}

/// `Sample` rows (current or history) then `Aggregate` rows.
pub fn print_stats(out: &mut String, rows: &[Vec<String>]) {
    let samples: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[0] == "Sample" && r.len() >= 20)
        .collect();
    let aggs: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[0] == "Aggregate" && r.len() >= 15)
        .collect();
    if samples.is_empty() && aggs.is_empty() {
        return;
    }
    let width = rows
        .iter()
        .filter(|r| r.len() > 3)
        .map(|r| label(r).len())
        .max()
        .unwrap_or(4)
        .max(4);
    if !samples.is_empty() {
        outln!(
            out,
            "{:<width$} {:>7} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>4} {:>5} {:>8}",
            "NAME",
            "PID",
            "UTC",
            "CPU%",
            "RSS",
            "PEAK",
            "READ",
            "WRITE",
            "THR",
            "FDS",
            "UPTIME"
        );
        for r in &samples {
            outln!(
                out,
                "{:<width$} {:>7} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>4} {:>5} {:>8}",
                label(r),
                r[4],
                clock(&r[5]),
                r[7],
                human(&r[8]),
                human(&r[10]),
                human(&r[11]),
                human(&r[12]),
                or_dash(&r[13]),
                or_dash(&r[14]),
                uptime(&r[17])
            );
        }
    }
    if !aggs.is_empty() {
        if !samples.is_empty() {
            outln!(out, "");
        }
        outln!(
            out,
            "{:<width$} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9}",
            "NAME",
            "SAMPLES",
            "CPU%AVG",
            "CPU%MAX",
            "RSSAVG",
            "RSSMAX",
            "READ",
            "WRITE",
            "INTERVAL"
        );
        for r in &aggs {
            outln!(
                out,
                "{:<width$} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}s",
                label(r),
                r[4],
                r[5],
                r[6],
                human(&r[7]),
                human(&r[8]),
                human(&r[9]),
                human(&r[10]),
                r[13]
            );
        }
    }
}

/// The live table: one row per monitored process, busiest first.
fn top_table(rows: &[Vec<String>]) -> String {
    let mut samples: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[0] == "Sample" && r.len() >= 20)
        .collect();
    samples.sort_by(|a, b| {
        let cpu = |r: &Vec<String>| r[7].parse::<f64>().unwrap_or(0.0);
        cpu(b).total_cmp(&cpu(a)).then_with(|| a[1].cmp(&b[1]))
    });
    let mut out = String::new();
    let total_cpu: f64 = samples
        .iter()
        .map(|r| r[7].parse::<f64>().unwrap_or(0.0))
        .sum();
    let total_rss: u64 = samples
        .iter()
        .map(|r| r[8].parse::<u64>().unwrap_or(0))
        .sum();
    let waiting = rows
        .iter()
        .filter(|r| r[0] == "Aggregate" && r.get(4).is_some_and(|n| n == "0"))
        .count();
    outln!(
        out,
        "archon top: {} processes sampled, CPU {:.1}%, RSS {}{}",
        samples.len(),
        total_cpu,
        human(&total_rss.to_string()),
        if waiting > 0 {
            format!(", {waiting} waiting for their first sample")
        } else {
            String::new()
        }
    );
    let kept: Vec<Vec<String>> = samples.into_iter().cloned().collect();
    print_stats(&mut out, &kept);
    out
}

/// One request on a fresh connection: its rows, or the error.
fn fetch(socket: &Path, timeout: Duration, req: &Request) -> Result<Vec<Vec<String>>, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let _ = s.set_read_timeout(Some(timeout));
    s.write_all(req.encode().as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut rows = Vec::new();
    for line in BufReader::new(s).split(b'\n') {
        let line = line.map_err(|e| format!("no reply: {e}"))?;
        match ReplyLine::decode(&line)? {
            ReplyLine::Row(f) => rows.push(f),
            ReplyLine::Ok(_) => return Ok(rows),
            ReplyLine::Error(kind, msg) => return Err(format!("{kind}: {msg}")),
            _ => {}
        }
    }
    Err("the connection closed before the reply ended".into())
}

/// `archonctl top [-d SECONDS] [-n COUNT] [TARGET]`.
pub fn run(socket: &Path, timeout: Duration, args: &[String]) -> Result<i32, String> {
    let mut interval = Duration::from_secs(2);
    let mut count: Option<u64> = None;
    let mut target = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-d" | "--delay" => {
                let v = args.get(i + 1).ok_or("-d needs seconds")?;
                let ms = archon::cli::parse_seconds(v)
                    .filter(|ms| *ms >= 100)
                    .ok_or("-d needs seconds (at least 0.1)")?;
                interval = Duration::from_millis(ms);
                i += 2;
            }
            "-n" => {
                let v = args.get(i + 1).ok_or("-n needs a count")?;
                count = Some(v.parse().map_err(|_| "-n needs a count")?);
                i += 2;
            }
            t if target.is_none() && !t.starts_with('-') => {
                target = Some(t.to_string());
                i += 1;
            }
            other => return Err(format!("top: unexpected {other:?}")),
        }
    }
    let tty = std::io::stdout().is_terminal();
    // Piped: one snapshot unless -n says more; on a terminal, until ^C.
    let count = count.unwrap_or(if tty { u64::MAX } else { 1 });
    let req = Request::Stats {
        target,
        history: false,
    };
    for n in 0..count {
        let rows = fetch(socket, timeout, &req)?;
        let mut text = top_table(&rows);
        if tty {
            // Home, draw, clear what is left of the previous frame.
            text = format!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"));
        } else if n > 0 {
            text = format!("\n{text}");
        }
        let mut out = std::io::stdout().lock();
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(0); // the reader went away (`| head`)
        }
        drop(out);
        if n + 1 < count {
            std::thread::sleep(interval);
        }
    }
    Ok(0)
}
