//! `--metrics` against the real binary: both exposition formats, promtool's
//! lint, HTTP errors and bounds, and a real Prometheus server (Debian's
//! `prometheus`) scraping archon and seeing a restart counter rise after a
//! service is killed. Without the package those tests say so loudly and
//! skip; CI installs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use util::lua_helper as helper;
use util::*;

/// The address archon logged for `--metrics 127.0.0.1:0`.
fn metrics_addr(d: &Daemon) -> String {
    let mut addr = String::new();
    wait_for("the metrics address in the log", || {
        addr = d
            .log()
            .lines()
            .find_map(|l| l.split("metrics address=").nth(1))
            .map(|a| a.trim().to_string())
            .unwrap_or_default();
        !addr.is_empty()
    });
    addr
}

/// One raw HTTP exchange: the whole response.
fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    // A refused connection may be reset after its answer: keep what came.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: &str, accept: Option<&str>) -> String {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: archon\r\n{accept}\r\n"),
    )
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn have(tool: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("!!! SKIPPED: {tool} is not installed (Debian's `prometheus` package); .ci/run installs it");
    }
    ok
}

fn config(name: &str) -> Daemon {
    let lua = format!(
        r#"service "w" {{ cmd = {}, replicas = 2, backoff = {{ initial = 0.05 }}, monitor = {{ interval = 0.2 }} }}
           service "quiet" {{ cmd = {}, autostart = false }}"#,
        helper("hang"),
        helper("hang")
    );
    with_config(name, &lua, &["--metrics", "127.0.0.1:0"])
}

#[test]
fn both_formats_are_served_and_promtool_finds_nothing_wrong() {
    let d = config("met-formats");
    let addr = metrics_addr(&d);
    wait_for("samples of both instances", || {
        body(&get(&addr, None))
            .contains("archon_process_resident_memory_bytes{service=\"w\",replica=\"1\"}")
    });
    let prom = get(&addr, None);
    assert!(prom.starts_with("HTTP/1.1 200 OK\r\n"), "{prom}");
    assert!(
        prom.contains("Content-Type: text/plain; version=0.0.4"),
        "{prom}"
    );
    let b = body(&prom);
    for needle in [
        "# TYPE archon_service_restarts_total counter",
        "archon_service_restarts_total{service=\"w\",replica=\"0\",reason=\"signal\"} 0",
        "archon_service_up{service=\"w\",replica=\"1\"} 1",
        "archon_service_state{service=\"w\",replica=\"0\",state=\"running\"} 1",
        "archon_service_state{service=\"quiet\",replica=\"0\",state=\"stopped\"} 1",
        "archon_build_info{version=",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
    ] {
        assert!(b.contains(needle), "{needle} missing:\n{b}");
    }
    let om = get(
        &addr,
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert!(
        om.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{om}"
    );
    let ob = body(&om);
    assert!(ob.ends_with("# EOF\n"), "{ob}");
    assert!(
        ob.contains("# TYPE archon_service_restarts counter\n"),
        "{ob}"
    );
    assert!(ob.contains("# TYPE archon_build info\n"), "{ob}");
    // Content-Length is the body's.
    let len: usize = prom
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(len, b.len());
    if !have("promtool") {
        return;
    }
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(b.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_requests_get_http_errors_and_idle_connections_block_nothing() {
    let d = config("met-bad");
    let addr = metrics_addr(&d);
    assert!(http(&addr, "GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(http(&addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(http(&addr, "\x01\x02 nonsense\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert!(http(&addr, &huge).starts_with("HTTP/1.1 431 "));
    // 64 connections that send nothing: the 65th is refused at once, the
    // control socket answers, and once they go a scrape works.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    wait_for("the 65th refused", || {
        http(&addr, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503 ")
    });
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
    drop(idle);
    wait_for("a scrape after the idle ones went", || {
        get(&addr, None).starts_with("HTTP/1.1 200 OK")
    });
}

/// Kills the Prometheus server even when the test fails.
use KillOnDrop as Prometheus;

/// The value of a Prometheus instant query, if it has one.
fn query(prom: &str, q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let resp = std::panic::catch_unwind(|| {
        http(
            prom,
            &format!(
                "GET /api/v1/query?query={enc} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
            ),
        )
    })
    .ok()?;
    // "value":[1733000000.123,"2"]
    let v = resp.split("\"value\":[").nth(1)?;
    let v = v.split(',').nth(1)?;
    v.trim_matches(|c| c == '"' || c == ']' || c == '}')
        .parse()
        .ok()
}

#[test]
fn a_real_prometheus_sees_a_restart_counter_rise() {
    if !have("prometheus") {
        return;
    }
    let d = config("met-prom");
    let addr = metrics_addr(&d);
    let dir = temp_dir("met-prom-server");
    let port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: archon\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let _server = Prometheus(
        std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("prometheus.log"))
                    .map(std::process::Stdio::from)
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
    );
    let prom = format!("127.0.0.1:{port}");
    let q = r#"archon_service_restarts_total{service="w",replica="0",reason="signal"}"#;
    // The first scrapes: archon is up and the counter is 0.
    wait_for("Prometheus to scrape archon", || {
        query(&prom, r#"up{job="archon"}"#) == Some(1.0) && query(&prom, q) == Some(0.0)
    });
    let pid: i32 = d
        .ask("Status,w.0")
        .iter()
        .find(|l| l.starts_with("Service,"))
        .and_then(|l| l.split(',').nth(4)?.parse().ok())
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("Prometheus to see the restart", || {
        query(&prom, q) == Some(1.0)
    });
    std::fs::remove_dir_all(dir).ok();
}

/// Scrapers cannot keep the loop busy rendering: 64 at once are answered
/// from one or two renderings (a second's), and the control socket answers.
#[test]
fn many_scrapes_at_once_share_a_rendering() {
    let d = config("met-many");
    let addr = metrics_addr(&d);
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let a = addr.clone();
            std::thread::spawn(move || get(&a, None))
        })
        .collect();
    let bodies: std::collections::BTreeSet<String> = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .map(|r| {
            assert!(
                r.starts_with("HTTP/1.1 200 OK") || r.starts_with("HTTP/1.1 503 "),
                "{r}"
            );
            body(&r).to_string()
        })
        .filter(|b| !b.is_empty() && b.contains("archon_build_info"))
        .collect();
    assert!(!bodies.is_empty());
    assert!(
        bodies.len() <= 2,
        "{} renderings for 64 scrapes",
        bodies.len()
    );
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
}
