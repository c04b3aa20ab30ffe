//! Startup, readiness and liveness probes (exec, TCP, HTTP) and the
//! circuit breaker, against the real binary and a real HTTP server
//! (`fixtures/sd_server.py`, healthy while a file exists). Conditions are
//! waited on with deadlines; no test sleeps to synchronise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_os = "linux")]

mod util;

use std::path::{Path, PathBuf};
use util::*;

fn server() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_server.py");
    p.to_str().unwrap().to_string()
}

/// The `Service` row of instance 0 of `name`, as fields.
fn row(d: &Daemon, name: &str) -> Vec<String> {
    d.ask(&format!("Status,{name}"))
        .iter()
        .find(|l| l.starts_with("Service,"))
        .map(|l| l.split(',').map(String::from).collect())
        .unwrap_or_default()
}

fn state(d: &Daemon, name: &str) -> String {
    row(d, name).get(3).cloned().unwrap_or_default()
}

fn wait_state(d: &Daemon, name: &str, want: &str) -> Vec<String> {
    let mut r = Vec::new();
    wait_for(&format!("{name} to be {want}"), || {
        r = row(d, name);
        r.get(3).is_some_and(|s| s == want)
    });
    r
}

fn out_dir(name: &str) -> PathBuf {
    temp_dir(&format!("{name}-out"))
}

fn touch(p: &Path) {
    std::fs::write(p, b"").unwrap();
}

#[test]
fn an_http_readiness_probe_gates_running_and_failing_makes_unhealthy_without_restart() {
    let out = out_dir("probe-ready");
    let lua = format!(
        r#"service "api" {{ cmd = {{ "python3", {}, {} }}, ports = {{ http = "auto" }},
              readiness = {{ http = "/healthz", interval = 0.1, timeout = 2,
                             failure_threshold = 2, success_threshold = 2, body = "ok" }} }}"#,
        lua_str(&server()),
        lua_str(out.to_str().unwrap())
    );
    let d = with_config("probe-ready", &lua, &["--ports", "29600-29699"]);
    // Serving, but 503: it stays `starting`.
    wait_for("the server to start", || out.join("env.0").exists());
    let mut c = d.conn();
    assert_eq!(c.request("Subscribe"), vec!["Ok".to_string()]);
    assert_eq!(state(&d, "api"), "starting");
    touch(&out.join("healthy.0"));
    let r = wait_state(&d, "api", "running");
    let pid = r[4].clone();
    // Failing: unhealthy, the same process (readiness never restarts).
    std::fs::remove_file(out.join("healthy.0")).unwrap();
    let r = wait_state(&d, "api", "unhealthy");
    assert_eq!(r[4], pid);
    touch(&out.join("healthy.0"));
    let r = wait_state(&d, "api", "running");
    assert_eq!((r[4].as_str(), r[6].as_str()), (pid.as_str(), "0"));
    // The subscriber saw each change.
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("running") || states.len() < 3 {
        let l = c.line().expect("the subscription closed");
        let f: Vec<&str> = l.split(',').collect();
        if f[0] == "ServiceEvent" && f[2] == "api" {
            states.push(f[4].to_string());
        }
    }
    assert_eq!(states, ["running", "unhealthy", "running"]);
    assert_eq!(r.get(11).map(String::as_str), Some(""), "no breaker: {r:?}");
}

#[test]
fn a_failing_liveness_probe_restarts_through_the_backoff_as_health() {
    let out = out_dir("probe-live");
    let alive = out.join("alive");
    touch(&alive);
    let lua = format!(
        r#"service "w" {{ cmd = {{ "sleep", "1000" }}, backoff = {{ initial = 0.05 }},
              breaker = false,
              liveness = {{ exec = {{ "test", "-e", {} }}, interval = 0.1, failure_threshold = 2 }} }}"#,
        lua_str(alive.to_str().unwrap())
    );
    let d = with_config("probe-live", &lua, &[]);
    let r = wait_state(&d, "w", "running");
    let pid = r[4].clone();
    std::fs::remove_file(&alive).unwrap();
    wait_for("a restart after the liveness failures", || {
        let r = row(&d, "w");
        r.get(6).is_some_and(|n| n != "0") && r.get(4).is_some_and(|p| !p.is_empty() && *p != pid)
    });
    touch(&alive);
    let r = wait_state(&d, "w", "running");
    assert_ne!(r[4], pid);
    assert!(
        d.log().contains("liveness probe failed 2 times in a row"),
        "{}",
        d.log()
    );
}

#[test]
fn a_probe_command_past_its_timeout_is_killed_and_counts_as_a_failure() {
    let out = out_dir("probe-hang");
    let marker = out.join("probe.pids");
    // The probe writes its pid, then hangs far past its timeout.
    let lua = format!(
        r#"service "h" {{ cmd = {{ "sleep", "1000" }}, backoff = {{ initial = 0.05 }}, breaker = false,
              liveness = {{ exec = {{ "sh", "-c", "echo $$ >> {} && exec sleep 1000" }},
                            interval = 0.1, timeout = 0.2, failure_threshold = 2 }} }}"#,
        marker.display()
    );
    let d = with_config("probe-hang", &lua, &[]);
    wait_for("the liveness failures to restart it", || {
        row(&d, "h").get(6).is_some_and(|n| n != "0")
    });
    let pids: Vec<i32> = std::fs::read_to_string(&marker)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(pids.len() >= 2, "{pids:?}");
    // Every probe process that had its time is gone (killed, not left).
    for p in &pids[..2] {
        wait_for(&format!("probe process {p} to be killed"), || pid_gone(*p));
    }
    drop(d);
}

/// A probe command still running when its instance stops is killed with
/// it, long before its own timeout, and no probe of it runs after.
#[test]
fn a_probe_in_flight_ends_with_its_instance() {
    let out = out_dir("probe-inflight");
    let marker = out.join("probe.pids");
    let lua = format!(
        r#"service "h" {{ cmd = {{ "sleep", "1000" }}, grace = 1,
              liveness = {{ exec = {{ "sh", "-c", "echo $$ >> {} && exec sleep 1000" }},
                            interval = 0.1, timeout = 120 }} }}"#,
        marker.display()
    );
    let d = with_config("probe-inflight", &lua, &[]);
    let mut probe = 0;
    wait_for("the probe to run", || {
        probe = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .unwrap_or(0);
        probe > 0
    });
    assert!(last(&d.ask("Stop,h")).starts_with("Ok"));
    wait_state(&d, "h", "stopped");
    // Its 120 s timeout is far past the test's deadline.
    wait_for(&format!("probe process {probe} to be killed"), || {
        pid_gone(probe)
    });
    let runs = std::fs::read_to_string(&marker).unwrap().lines().count();
    // One more pass of the loop at least, then no new probe of it.
    assert!(d.ask("Version")[0].starts_with("Ok"));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().count(),
        runs
    );
    assert_eq!(runs, 1, "only the first probe ran: it was in flight");
    drop(d);
}

#[test]
fn a_startup_probe_gates_readiness_and_liveness() {
    let out = out_dir("probe-start");
    let started = out.join("started");
    let start_log = out.join("start.log");
    let live_log = out.join("live.log");
    let lua = format!(
        r#"service "s" {{ cmd = {{ "sleep", "1000" }},
              startup = {{ exec = {{ "sh", "-c", "echo s >> {} && test -e {}" }},
                          interval = 0.1, failure_threshold = 1000 }},
              liveness = {{ exec = {{ "sh", "-c", "echo x >> {}" }}, interval = 0.1 }} }}"#,
        start_log.display(),
        started.display(),
        live_log.display()
    );
    let d = with_config("probe-start", &lua, &[]);
    wait_state(&d, "s", "starting");
    // The startup probe has failed five times; liveness has not run.
    wait_for("five startup probes", || {
        std::fs::read_to_string(&start_log).is_ok_and(|s| s.lines().count() >= 5)
    });
    assert!(!live_log.exists(), "liveness ran before startup passed");
    assert_eq!(state(&d, "s"), "starting");
    touch(&started);
    wait_state(&d, "s", "running");
    wait_for("liveness to run", || live_log.exists());
    let r = row(&d, "s");
    assert_eq!(
        r[11], "closed",
        "a liveness probe brings the breaker: {r:?}"
    );
}

#[test]
fn the_circuit_breaker_opens_after_liveness_restarts_and_closes_on_a_pass() {
    let out = out_dir("probe-breaker");
    let alive = out.join("alive");
    let lua = format!(
        r#"service "b" {{ cmd = {{ "sleep", "1000" }}, backoff = {{ initial = 0.05 }},
              budget = false, breaker = {{ failures = 2, cooldown = 3 }},
              liveness = {{ exec = {{ "test", "-e", {} }}, interval = 0.1, failure_threshold = 1 }} }}
           on("breaker", "b", function(ev) archon.log("warn", "hook saw breaker " .. ev.state) end)"#,
        lua_str(alive.to_str().unwrap())
    );
    let metrics = free_port();
    let d = with_config(
        "probe-breaker",
        &lua,
        &["--metrics", &format!("127.0.0.1:{metrics}")],
    );
    let mut sub = d.conn();
    assert_eq!(sub.request("Subscribe"), vec!["Ok".to_string()]);
    // Two liveness restarts, then open: backoff, no process, long delay.
    let r = wait_state(&d, "b", "backoff");
    let open = {
        let mut r = r;
        wait_for("the breaker to open", || {
            r = row(&d, "b");
            r.get(11).is_some_and(|b| b == "open")
        });
        r
    };
    assert_eq!(open[4], "", "no process while open: {open:?}");
    assert_eq!(open[6], "2", "{open:?}");
    // The metrics say so too (a rendering is reused for a second: wait).
    wait_for("the breaker in /metrics", || {
        scrape(metrics)
            .contains("archon_service_breaker{service=\"b\",replica=\"0\",state=\"open\"} 1")
    });
    // The cool-down passes: one try (half-open), which passes now.
    touch(&alive);
    wait_for("the half-open try to pass and close the breaker", || {
        let r = row(&d, "b");
        r.get(3).is_some_and(|s| s == "running") && r.get(11).is_some_and(|b| b == "closed")
    });
    // Subscribers saw each change of the breaker, in order.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("closed") {
        let l = sub.line().expect("the subscription closed");
        let f: Vec<&str> = l.split(',').collect();
        if f[0] == "BreakerEvent" {
            assert_eq!((f[2], f[3]), ("b", "0"), "{l}");
            seen.push(f[4].to_string());
        }
    }
    assert_eq!(seen, ["open", "half-open", "closed"]);
    // And a hook, for each.
    for s in ["open", "half-open", "closed"] {
        wait_for(&format!("the hook to see {s}"), || {
            d.log().contains(&format!("hook saw breaker {s}"))
        });
    }
}

#[test]
fn a_tcp_liveness_probe_follows_the_port() {
    let out = out_dir("probe-tcp");
    // Nothing listens on `closed`: a TCP probe of it fails, and restarts.
    let closed = free_port();
    let lua = format!(
        r#"service "t" {{ cmd = {{ "python3", {}, {} }}, ports = {{ http = "auto" }},
              liveness = {{ tcp = "http", interval = 0.1, failure_threshold = 2 }},
              readiness = {{ http = "/", interval = 0.1 }} }}
           service "dead" {{ cmd = {{ "sleep", "1000" }}, breaker = false,
              backoff = {{ initial = 0.05 }},
              liveness = {{ tcp = {closed}, interval = 0.1, failure_threshold = 2 }} }}"#,
        lua_str(&server()),
        lua_str(out.to_str().unwrap())
    );
    let d = with_config("probe-tcp", &lua, &["--ports", "29700-29799"]);
    let r = wait_state(&d, "t", "running");
    assert_eq!(r[11], "closed");
    wait_for("dead to be restarted twice by its TCP probe", || {
        row(&d, "dead")
            .get(6)
            .is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 2)
    });
    // Meanwhile the probe of the live port passed every time.
    assert_eq!(row(&d, "t")[6], "0");
    let dump = d.ask("DumpConfig");
    assert!(
        dump.iter()
            .any(|l| l == "Setting,t,liveness,0.100,0.100,1.000,2,1,0.000,tcp,http,127.0.0.1"),
        "{dump:?}"
    );
    assert!(
        dump.iter().any(|l| l
            == "Setting,t,readiness,0.100,0.100,1.000,3,1,0.000,http,/,http,127.0.0.1,200-399,"),
        "{dump:?}"
    );
}

#[test]
fn bad_probe_settings_are_refused_where_written() {
    assert_refused("readiness", r#"{ http = "/h" }"#, "no ports");
    assert_refused("readiness", r#"{ tcp = "web" }"#, "no port named");
    assert_refused(
        "liveness",
        r#"{ exec = { "true" }, http = "/" }"#,
        "exactly one",
    );
    assert_refused(
        "liveness",
        r#"{ exec = { "true" }, success_threshold = 2 }"#,
        "1 for startup and liveness",
    );
    assert_refused(
        "readiness",
        r#"{ exec = { "true" }, interval = 0 }"#,
        "interval",
    );
    assert_refused(
        "readiness",
        r#"{ exec = { "true" }, colour = 1 }"#,
        "unknown key",
    );
    assert_refused(
        "readiness",
        r#"{ http = "no slash", port = 80 }"#,
        "a path from /",
    );
    assert_refused(
        "readiness",
        r#"{ http = "/", port = 80, status = 700 }"#,
        "status",
    );
    assert_refused("breaker", r#"{ failures = 2 }"#, "give a liveness probe");
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn bad_http() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad_http.py");
    p.to_str().unwrap().to_string()
}

fn accepted(out: &Path, mode: &str) -> u64 {
    std::fs::read_to_string(out.join(format!("accepted.{mode}")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// HTTP probes against servers that answer nothing, garbage, half a
/// line, an endless header, or refuse: each probe fails, none ever makes
/// its instance ready, archon closes every connection it made (its fd
/// count stays flat over hundreds of probes) and keeps answering; a
/// good server beside them passes.
#[test]
fn http_probes_against_misbehaving_servers_fail_and_leak_nothing() {
    let out = out_dir("probe-bad");
    let modes = ["silent", "garbage", "endless", "half", "refuse", "good"];
    let mut lua = String::new();
    for m in modes {
        lua.push_str(&format!(
            r#"service "{m}" {{ cmd = {{ "python3", {}, "{m}", {} }}, ports = {{ http = "auto" }},
                 start_timeout = 600,
                 readiness = {{ http = "/", interval = 0.05, timeout = 0.3, failure_threshold = 1 }} }}
"#,
            lua_str(&bad_http()),
            lua_str(out.to_str().unwrap())
        ));
    }
    let metrics = free_port();
    let mport = metrics.to_string();
    let d = with_config(
        "probe-bad",
        &lua,
        &[
            "--ports",
            "29700-29799",
            "--metrics",
            &format!("127.0.0.1:{mport}"),
        ],
    );
    wait_state(&d, "good", "running");
    let failed = || {
        scrape(metrics)
            .lines()
            .find(|l| l.starts_with("archon_probes_total{result=\"fail\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let talkers = ["silent", "garbage", "endless", "half"];
    wait_for("each bad server to be probed", || {
        talkers.iter().all(|m| accepted(&out, m) >= 3)
    });
    let (fds, f0) = (d.fd_count(), failed());
    wait_for("many more probes to fail", || {
        talkers.iter().all(|m| accepted(&out, m) >= 20) && failed() >= f0 + 100
    });
    // What may be in flight: a connection per instance that accepts (a
    // leak would be one per probe: hundreds).
    let now = d.fd_count();
    assert!(now <= fds + talkers.len() + 3, "fds {fds} -> {now}");
    for m in modes {
        let want = if m == "good" { "running" } else { "starting" };
        assert_eq!(state(&d, m), want, "{m}");
    }
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
}
