//! The hostname registry end to end with a real reverse proxy: HAProxy
//! (Debian's `haproxy`) in front of a pool of two, each server's state
//! taken from archon by HAProxy's own agent check. A client sends a steady
//! stream of requests with a `Host` header through it: while one instance
//! fails its readiness probe, requests reach only the other; during a
//! rolling restart (with `drain`) no request fails. Where HAProxy is not
//! installed the test says so loudly and does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use util::*;

/// One request through the proxy: the instance that answered, or None.
fn request(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: api.example.test\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    if !reply.starts_with("HTTP/1.0 200") && !reply.starts_with("HTTP/1.1 200") {
        return None;
    }
    let inst = reply.split("instance=").nth(1)?.split(' ').next()?;
    Some(inst.to_string())
}

/// HAProxy's view of a server (`show stat`'s status column); empty while
/// its stats socket cannot be read (HAProxy still starting).
fn haproxy_status(sock: &Path, server: &str) -> String {
    let Ok(out) = Command::new("socat")
        .args(["-t", "5", "-", &format!("UNIX-CONNECT:{}", sock.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(b"show stat\n");
            }
            c.wait_with_output()
        })
    else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with(&format!("api,{server},")))
        .and_then(|l| l.split(',').nth(17))
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_real_proxy_sends_requests_only_to_healthy_instances_and_none_fail_in_a_rolling_restart() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!("SKIPPED: haproxy is not installed (Debian package haproxy): the reverse-proxy test did not run");
        return;
    }
    let out = temp_dir("proxy-out");
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_server.py");
    std::fs::write(out.join("healthy.0"), b"").unwrap();
    std::fs::write(out.join("healthy.1"), b"").unwrap();
    let metrics = free_port();
    let lua = format!(
        r#"service "api" {{ cmd = {{ "python3", {}, {} }}, replicas = 2,
              ports = {{ http = "auto" }}, hostnames = {{ "api.example.test" }}, drain = 1,
              readiness = {{ http = "/healthz", interval = 0.1, failure_threshold = 1 }} }}"#,
        lua_str(server.to_str().unwrap()),
        lua_str(out.to_str().unwrap())
    );
    let d = with_config(
        "proxy",
        &lua,
        &[
            "--ports",
            "29900-29999",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
        ],
    );
    let mut ups = Vec::new();
    wait_for("both instances in the registry", || {
        ups = d.ask("Lookup,api.example.test");
        ups.len() == 3
    });
    // Upstream,<host>,<service>,<instance>,<addr>
    let servers: Vec<(String, String)> = ups
        .iter()
        .filter(|l| l.starts_with("Upstream,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[3].to_string(), f[4].to_string())
        })
        .collect();
    let front = free_port();
    let stats = out.join("haproxy.sock");
    let mut cfg = format!(
        "global\n  stats socket {} level admin\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend fe\n  bind 127.0.0.1:{front}\n  acl api hdr(host) -i api.example.test\n  use_backend api if api\n\
         backend api\n  balance roundrobin\n",
        stats.display()
    );
    for (inst, addr) in &servers {
        let port = addr.rsplit(':').next().unwrap();
        cfg += &format!(
            "  server a{inst} {addr} check inter 200ms agent-check agent-addr 127.0.0.1 agent-port {metrics} agent-inter 100ms agent-send \"agent api.example.test {port}\\n\"\n"
        );
    }
    std::fs::write(out.join("haproxy.cfg"), &cfg).unwrap();
    let _proxy = KillOnDrop(
        Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(out.join("haproxy.cfg"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("HAProxy to see both servers up", || {
        haproxy_status(&stats, "a0") == "UP" && haproxy_status(&stats, "a1") == "UP"
    });

    // A steady client: every answer recorded, every failure counted.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let answers: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = {
        let (stop, failed, answers) = (stop.clone(), failed.clone(), answers.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match request(front) {
                    Some(i) => answers.lock().unwrap().push(i),
                    None => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let answered = |answers: &Arc<Mutex<Vec<String>>>| answers.lock().unwrap().len();

    // Instance 0 fails its readiness probe: out of the registry, HAProxy
    // marks it down, and every later request reaches instance 1.
    std::fs::remove_file(out.join("healthy.0")).unwrap();
    wait_for("instance 0 unhealthy", || {
        d.ask("Status,api.0")[0].contains(",unhealthy,")
    });
    wait_for("HAProxy to take a0 out", || {
        haproxy_status(&stats, "a0").starts_with("DOWN")
    });
    let from = answered(&answers);
    wait_for("50 more answers", || answered(&answers) >= from + 50);
    let later: Vec<String> = answers.lock().unwrap()[from..].to_vec();
    assert!(
        later.iter().all(|i| i == "1"),
        "an unhealthy instance got requests: {later:?}"
    );

    // Back, then a rolling restart: each instance drains before its stop.
    // Answers now take 50 ms, so a stop without the drain would cut
    // requests in flight.
    std::fs::write(out.join("slow"), b"").unwrap();
    std::fs::write(out.join("healthy.0"), b"").unwrap();
    wait_for("HAProxy to see a0 up again", || {
        haproxy_status(&stats, "a0") == "UP"
    });
    for i in ["0", "1"] {
        let before = answered(&answers);
        assert_eq!(last(&d.ask(&format!("Restart,api.{i}"))), "Ok");
        wait_for(&format!("instance {i} to run again"), || {
            d.ask(&format!("Status,api.{i}"))[0].contains(",running,")
        });
        wait_for(&format!("HAProxy to see a{i} up again"), || {
            haproxy_status(&stats, &format!("a{i}")) == "UP"
        });
        wait_for("answers after the restart", || {
            answered(&answers) > before + 20
        });
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let total = answered(&answers);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed through the proxy ({total} answered)"
    );
    assert!(total > 100, "{total}");
    eprintln!("proxy: {total} requests answered, 0 failed");
}
