//! Ports and pre-bound sockets against the real binary, with real clients
//! (curl, socat) and a server written for systemd's socket activation
//! (`fixtures/sd_server.py`), which is also run under systemd's own
//! `systemd-socket-activate` where that is installed, as the reference.
//!
//! Port ranges given to archon here are below Linux's ephemeral range
//! (32768 and up), where other tests' client sockets never land.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_os = "linux")]

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

fn server() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_server.py");
    p.to_str().unwrap().to_string()
}

/// The variables instance `i` of the server wrote (its latest process).
fn env_of(dir: &Path, i: u32) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join(format!("env.{i}")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until instance `i` has written its variables from a process
/// other than `not_pid`.
fn wait_env(dir: &Path, i: u32, not_pid: &str) -> HashMap<String, String> {
    let mut env = HashMap::new();
    wait_for(&format!("instance {i} to start serving"), || {
        env = env_of(dir, i);
        env.get("pid").is_some_and(|p| p != not_pid)
    });
    env
}

fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", url])
        .output()
        .expect("curl is needed for these tests");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn out_dir(name: &str) -> PathBuf {
    temp_dir(&format!("{name}-out"))
}

#[test]
fn auto_ports_are_bound_passed_as_systemd_does_and_stable_across_restarts() {
    let out = out_dir("net-auto");
    let lua = format!(
        r#"service "api" {{ cmd = {{ "python3", {}, {} }}, replicas = 2,
              backoff = {{ initial = 1 }}, ports = {{ http = "auto" }} }}"#,
        lua_str(&server()),
        lua_str(out.to_str().unwrap())
    );
    let d = with_config("net-auto", &lua, &["--ports", "29100-29199"]);
    let e0 = wait_env(&out, 0, "");
    let e1 = wait_env(&out, 1, "");
    // systemd's protocol: one fd from 3, named, for this very process.
    for e in [&e0, &e1] {
        assert_eq!(e["LISTEN_FDS"], "1", "{e:?}");
        assert_eq!(e["LISTEN_FDNAMES"], "http", "{e:?}");
        assert_eq!(e["LISTEN_PID"], e["pid"], "{e:?}");
        assert_eq!(e["kinds"], "http=inet/stream", "{e:?}");
        assert_eq!(e["PORT"], e["PORT_HTTP"], "{e:?}");
        let port: u16 = e["PORT"].parse().unwrap();
        assert!((29100..=29199).contains(&port), "{e:?}");
    }
    assert_ne!(e0["PORT"], e1["PORT"], "two instances, two ports");
    let url = format!("http://127.0.0.1:{}/", e0["PORT"]);
    assert_eq!(
        curl(&url),
        format!("name=http instance=0 pid={}\n", e0["pid"])
    );

    // Killed, and restarted a second later: a client that connects while
    // no process runs waits in archon's backlog, and is served by the new
    // process on the same port.
    let old: i32 = e0["pid"].parse().unwrap();
    unsafe_kill(old);
    wait_for("the old process to be gone", || pid_gone(old));
    let mut c = std::net::TcpStream::connect(("127.0.0.1", e0["PORT"].parse().unwrap()))
        .expect("the port refused a connection during the restart");
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let e0b = wait_env(&out, 0, &e0["pid"]);
    assert_eq!(e0b["PORT"], e0["PORT"], "the port is the instance's");
    assert!(
        reply.ends_with(&format!("name=http instance=0 pid={}\n", e0b["pid"])),
        "{reply}"
    );
    drop(d);
}

fn unsafe_kill(pid: i32) {
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_port_the_service_binds_itself_is_let_go_before_the_spawn() {
    let out = out_dir("net-self");
    let lua = format!(
        r#"service "own" {{ cmd = {{ "python3", {}, {}, "--bind" }},
              backoff = {{ initial = 0.1 }},
              ports = {{ http = {{ port = "auto", address = "127.0.0.1", bind = "service" }} }} }}"#,
        lua_str(&server()),
        lua_str(out.to_str().unwrap())
    );
    let d = with_config("net-self", &lua, &["--ports", "29200-29299"]);
    let e = wait_env(&out, 0, "");
    // Nothing passed: the program bound the port itself.
    assert_eq!(e["LISTEN_FDS"], "", "{e:?}");
    assert_eq!(e["kinds"], "self=inet/stream", "{e:?}");
    assert_eq!(
        curl(&format!("http://127.0.0.1:{}/", e["PORT"])),
        format!("name=self instance=0 pid={}\n", e["pid"])
    );
    // Restarted, it gets the same port (archon held it in between).
    unsafe_kill(e["pid"].parse().unwrap());
    let e2 = wait_env(&out, 0, &e["pid"]);
    assert_eq!(e2["PORT"], e["PORT"]);
    drop(d);
}

#[test]
fn sockets_tcp_udp_and_unix_with_mode_are_passed_by_name() {
    let out = out_dir("net-socks");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = probe.local_addr().unwrap().port();
    drop(probe);
    let udp_probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = udp_probe.local_addr().unwrap().port();
    drop(udp_probe);
    let path = out.join("ctl.sock");
    let lua = format!(
        r#"service "multi" {{ cmd = {{ "python3", {}, {} }},
              ports = {{ admin = "auto" }},
              sockets = {{ web = {{ tcp = "127.0.0.1:{tcp}", backlog = 64 }},
                          dns = {{ udp = "127.0.0.1:{udp}" }},
                          ctl = {{ unix = {}, mode = "0600" }} }} }}"#,
        lua_str(&server()),
        lua_str(out.to_str().unwrap()),
        lua_str(path.to_str().unwrap())
    );
    let d = with_config("net-socks", &lua, &["--ports", "29300-29399"]);
    let e = wait_env(&out, 0, "");
    // Ports first, then sockets, each by name.
    assert_eq!(e["LISTEN_FDS"], "4", "{e:?}");
    assert_eq!(e["LISTEN_FDNAMES"], "admin:ctl:dns:web", "{e:?}");
    assert_eq!(
        e["kinds"], "admin=inet/stream,ctl=unix/stream,dns=inet/dgram,web=inet/stream",
        "{e:?}"
    );
    assert_eq!(e["PORT_ADMIN"], e["PORT"]);
    let dump = d.ask("DumpConfig");
    for row in [
        "Setting,multi,port,admin,auto,0.0.0.0,archon".to_string(),
        format!(
            "Setting,multi,socket,ctl,unix,{},128,0600,,",
            path.display()
        ),
        format!("Setting,multi,socket,dns,udp,127.0.0.1:{udp},128"),
        format!("Setting,multi,socket,web,tcp,127.0.0.1:{tcp},64"),
    ] {
        assert!(dump.contains(&row), "{row} not in {dump:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pid = &e["pid"];
    assert_eq!(
        curl(&format!("http://127.0.0.1:{tcp}/")),
        format!("name=web instance=0 pid={pid}\n")
    );
    // socat over the Unix socket and UDP.
    let via_unix = Command::new("socat")
        .args(["-t", "10", "-", &format!("UNIX-CONNECT:{}", path.display())])
        .stdin_bytes(b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        via_unix.ends_with(&format!("name=ctl instance=0 pid={pid}\n")),
        "{via_unix}"
    );
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    u.send_to(b"hello\n", ("127.0.0.1", udp)).unwrap();
    let mut buf = [0u8; 256];
    let n = u.recv(&mut buf).expect("no reply over UDP");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("dns {pid}: hello\n")
    );
    drop(d);
}

trait StdinBytes {
    fn stdin_bytes(&mut self, input: &[u8]) -> String;
}

impl StdinBytes for Command {
    /// Runs with `input` on stdin; returns stdout.
    fn stdin_bytes(&mut self, input: &[u8]) -> String {
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("socat is needed for these tests");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn a_taken_port_fails_the_start_clearly_and_archon_keeps_answering() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let lua = format!(
        r#"service "fixed" {{ cmd = {{ "sleep", "100" }}, backoff = {{ initial = 0.05 }},
              budget = {{ restarts = 2, window = 60 }},
              ports = {{ http = {{ port = {taken}, address = "127.0.0.1" }} }} }}
           service "many" {{ cmd = {{ "sleep", "100" }}, replicas = 3, budget = false,
              backoff = {{ initial = 0.05 }}, ports = {{ http = {{ port = "auto", address = "127.0.0.1" }} }} }}"#
    );
    let d = with_config("net-taken", &lua, &["--ports", "29400-29401"]);
    wait_for("fixed to fail for good", || {
        d.ask("Status,fixed").iter().any(|l| l.contains(",failed,"))
    });
    assert!(
        d.log()
            .contains(&format!("port http: cannot bind tcp 127.0.0.1:{taken}")),
        "{}",
        d.log()
    );
    // Two ports in the range, three instances: two run, one cannot start.
    wait_for("the third replica to say why", || {
        d.log().contains("port http: no free port in 29400-29401")
    });
    let running = d
        .ask("Status,many")
        .iter()
        .filter(|l| l.contains(",running,"))
        .count();
    assert_eq!(running, 2, "{:?}", d.ask("Status,many"));
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
    drop(holder);
}

/// A Unix socket's file is archon's while it holds the socket: a live
/// socket of someone else's at the path is not taken over (the start
/// fails, saying so, and theirs keeps working), a stale one is replaced,
/// and the file goes when its service is removed or archon exits.
#[test]
fn unix_socket_files_go_with_their_service_and_live_ones_are_not_taken() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let out = out_dir("net-unixfile");
    let live = out.join("live.sock");
    let theirs = UnixListener::bind(&live).unwrap();
    let stale = out.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let cfg_dir = temp_dir("net-unixfile-cfg");
    let cfg = cfg_dir.join("archon.lua");
    let service = |name: &str, path: &std::path::Path| {
        format!(
            r#"service "{name}" {{ cmd = {{ "sleep", "100" }}, budget = {{ restarts = 0, window = 60 }},
                 sockets = {{ s = {{ unix = {} }} }} }}
"#,
            lua_str(path.to_str().unwrap())
        )
    };
    let both = service("taker", &live) + &service("own", &stale);
    std::fs::write(&cfg, &both).unwrap();
    let mut d = Daemon::start_with("net-unixfile", &["--config", cfg.to_str().unwrap()], |_| {});
    wait_for("taker to fail", || {
        d.ask("Status,taker").iter().any(|l| l.contains(",failed,"))
    });
    assert!(d.log().contains("is in use"), "{}", d.log());
    // Theirs still answers.
    let _c = UnixStream::connect(&live).unwrap();
    theirs.accept().unwrap();
    // The stale file was replaced by archon's socket, which answers.
    wait_for("own to run", || {
        d.ask("Status,own").iter().any(|l| l.contains(",running,"))
    });
    assert!(UnixStream::connect(&stale).is_ok());
    // Removed from the config: its file goes; theirs stays.
    std::fs::write(&cfg, service("taker", &live)).unwrap();
    assert!(d.ask("Reload")[0].starts_with("Ok"));
    wait_for("own's socket file to go", || !stale.exists());
    assert!(live.exists());
    // Back, then archon exits: the file goes with it.
    std::fs::write(&cfg, &both).unwrap();
    assert!(d.ask("Reload")[0].starts_with("Ok"));
    wait_for("own's socket file to be back", || stale.exists());
    d.terminate();
    assert!(!stale.exists(), "left behind at exit");
    assert!(live.exists());
}

#[test]
fn bad_port_and_socket_settings_are_refused_where_written() {
    assert_refused("ports", r#"{ ["a-b"] = "auto" }"#, "ports are named");
    assert_refused("ports", r#"{ http = 70000 }"#, "from 1 to 65535");
    assert_refused(
        "ports",
        r#"{ http = { port = "auto", bind = "x" } }"#,
        "bind is",
    );
    assert_refused(
        "ports",
        r#"{ http = { port = 1, address = "nope" } }"#,
        "IP address",
    );
    assert_refused(
        "ports",
        r#"{ a = { port = 9000 }, b = { port = 9000 } }"#,
        "same number",
    );
    assert_refused("sockets", r#"{ s = { tcp = "x" } }"#, "is not an address");
    assert_refused(
        "sockets",
        r#"{ s = { tcp = "127.0.0.1:1", udp = "127.0.0.1:1" } }"#,
        "exactly one",
    );
    assert_refused(
        "sockets",
        r#"{ s = { unix = "rel.sock" } }"#,
        "absolute path",
    );
    assert_refused(
        "sockets",
        r#"{ s = { tcp = "127.0.0.1:1", mode = "0600" } }"#,
        "for unix sockets",
    );
}

#[test]
fn the_server_behaves_the_same_under_systemd_socket_activate() {
    let Ok(path) = which("systemd-socket-activate") else {
        eprintln!("SKIPPED: systemd-socket-activate is not installed (package systemd): the reference run is left out");
        return;
    };
    let out = out_dir("net-ref");
    let port = free_port();
    // It execs the program in place on the first connection: killing it
    // (when dropped, also when the test fails) kills the server.
    let _child = KillOnDrop(
        Command::new(path)
            .args([
                "-l",
                &format!("127.0.0.1:{port}"),
                "--fdname=web",
                "python3",
            ])
            .arg(server())
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let reply = curl(&format!("http://127.0.0.1:{port}/"));
    let e = wait_env(&out, 0, "");
    assert_eq!(e["LISTEN_FDS"], "1", "{e:?}");
    assert_eq!(e["LISTEN_FDNAMES"], "web", "{e:?}");
    assert_eq!(e["LISTEN_PID"], e["pid"], "{e:?}");
    assert_eq!(reply, format!("name=web instance=0 pid={}\n", e["pid"]));
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

fn http_get(port: u16, path: &str) -> String {
    curl(&format!("http://127.0.0.1:{port}{path}"))
}

fn agent(port: u16, line: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_registry_lists_running_instances_and_an_instance_drains_before_its_stop() {
    let out = out_dir("net-reg");
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let lua = format!(
        r#"service "api" {{ cmd = {{ "python3", {}, {} }}, replicas = 2, drain = 30,
              ports = {{ http = {{ port = "auto", address = "127.0.0.1" }},
                        admin = {{ port = "auto", address = "127.0.0.1" }} }},
              hostnames = {{ "API.example.test", "www.example.test" }} }}
           service "other" {{ cmd = {{ "sleep", "1000" }} }}"#,
        lua_str(&server()),
        lua_str(out.to_str().unwrap())
    );
    let d = with_config(
        "net-reg",
        &lua,
        &[
            "--ports",
            "29500-29549",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
        ],
    );
    let mut rows = Vec::new();
    wait_for("both instances listed", || {
        rows = d.ask("Lookup,api.example.test");
        rows.len() == 3
    });
    let e0 = wait_env(&out, 0, "");
    let e1 = wait_env(&out, 1, "");
    // Proxies get the port named http, not the first by name (admin).
    assert_ne!(e0["PORT_HTTP"], e0["PORT_ADMIN"]);
    assert_eq!(
        rows,
        [
            format!(
                "Upstream,api.example.test,api,0,127.0.0.1:{}",
                e0["PORT_HTTP"]
            ),
            format!(
                "Upstream,api.example.test,api,1,127.0.0.1:{}",
                e1["PORT_HTTP"]
            ),
            "Ok".to_string()
        ]
    );
    // Case does not matter; an undeclared or malformed name is an error.
    assert_eq!(d.ask("Lookup,WWW.EXAMPLE.TEST").len(), 3);
    assert!(d.ask("Lookup,nope.test")[0].starts_with("Error,no-such-service,"));
    assert!(d.ask("Lookup,a b")[0].starts_with("Error,bad-request,"));
    let json = http_get(metrics, "/registry");
    assert_eq!(
        json,
        format!(
            "{{\"api.example.test\":[\"127.0.0.1:{0}\",\"127.0.0.1:{1}\"],\"www.example.test\":[\"127.0.0.1:{0}\",\"127.0.0.1:{1}\"]}}\n",
            e0["PORT_HTTP"], e1["PORT_HTTP"]
        )
    );
    let traefik = http_get(metrics, "/registry/traefik");
    assert!(
        traefik.contains("\"rule\":\"Host(`api.example.test`)\""),
        "{traefik}"
    );
    assert!(
        traefik.contains(&format!(
            "{{\"url\":\"http://127.0.0.1:{}\"}}",
            e0["PORT_HTTP"]
        )),
        "{traefik}"
    );
    assert_eq!(
        agent(
            metrics,
            &format!("agent api.example.test {}\n", e0["PORT_HTTP"])
        ),
        "up ready 100%\n"
    );
    assert_eq!(agent(metrics, "agent api.example.test 1\n"), "down\n");

    // Stopping instance 0: out of the registry at once, `drain` for the
    // agent, and no stop signal yet (its process still serves).
    assert_eq!(last(&d.ask("Stop,api.0")), "Ok");
    let rows = d.ask("Lookup,api.example.test");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].ends_with(&format!(":{}", e1["PORT_HTTP"])),
        "{rows:?}"
    );
    assert_eq!(
        agent(
            metrics,
            &format!("agent api.example.test {}\n", e0["PORT_HTTP"])
        ),
        "drain\n"
    );
    assert!(pid_alive(e0["pid"].parse().unwrap()));
    assert_eq!(
        curl(&format!("http://127.0.0.1:{}/", e0["PORT_HTTP"])),
        format!("name=http instance=0 pid={}\n", e0["pid"])
    );
    assert!(d.ask("Status,api.0")[0].contains(",stopping,"));
    assert!(
        d.log()
            .contains("leaves the registry; its stop signal in 30s"),
        "{}",
        d.log()
    );
}

#[test]
fn socket_activation_starts_the_service_on_its_first_connection_and_after_a_stop() {
    let out = out_dir("net-act");
    let port = free_port();
    let lua = format!(
        r#"service "lazy" {{ cmd = {{ "python3", {}, {} }}, autostart = "socket",
              sockets = {{ web = {{ tcp = "127.0.0.1:{port}" }} }} }}"#,
        lua_str(&server()),
        lua_str(out.to_str().unwrap())
    );
    let d = with_config("net-act", &lua, &[]);
    // Nothing runs until a client comes; archon already listens.
    let st = d.ask("Status,lazy");
    assert!(st[0].contains(",stopped,"), "{st:?}");
    assert!(!out.join("env.0").exists());
    let first = curl(&format!("http://127.0.0.1:{port}/"));
    let e = wait_env(&out, 0, "");
    assert_eq!(first, format!("name=web instance=0 pid={}\n", e["pid"]));
    assert_eq!(e["LISTEN_FDNAMES"], "web");
    assert!(d.log().contains("a connection on its sockets starts it"));
    // Stopped, it waits for the next connection again.
    assert_eq!(last(&d.ask("Stop,lazy")), "Ok");
    wait_for("lazy to stop", || {
        d.ask("Status,lazy")[0].contains(",stopped,")
    });
    let again = curl(&format!("http://127.0.0.1:{port}/"));
    let e2 = wait_env(&out, 0, &e["pid"]);
    assert_eq!(again, format!("name=web instance=0 pid={}\n", e2["pid"]));
    assert_refused("autostart", r#""socket""#, "give sockets");
}

#[test]
fn a_scale_down_lets_the_removed_instances_port_go() {
    let lua = r#"service "p" { cmd = { "sleep", "1000" }, replicas = 2,
          ports = { http = { port = "auto", address = "127.0.0.1", bind = "service" } } }"#;
    let d = with_config("net-scale", lua, &["--ports", "29800-29849"]);
    wait_for("two instances running", || {
        d.ask("Status,p")
            .iter()
            .filter(|l| l.contains(",running,"))
            .count()
            == 2
    });
    // A `bind = "service"` port is archon's while its instance does not
    // run (sleep binds nothing): stopping instance 1 makes archon hold
    // its port; scaling instance 1 away lets it go.
    let held: Vec<u16> = (29800..=29849)
        .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        .collect();
    assert_eq!(last(&d.ask("Stop,p.1")), "Ok");
    wait_for("p.1 stopped", || {
        d.ask("Status,p.1")[0].contains(",stopped,")
    });
    let after_stop: Vec<u16> = (29800..=29849)
        .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        .collect();
    assert_eq!(
        after_stop.len(),
        held.len() + 1,
        "p.1's port is held: {after_stop:?}"
    );
    assert_eq!(last(&d.ask("Scale,p,1")), "Ok");
    wait_for("instance 1's port to be let go", || {
        (29800..=29849)
            .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
            .count()
            == held.len()
    });
}
