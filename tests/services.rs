//! Configured services against the real binary: a Lua config per test, the
//! helper binary as the service, events and `Status` as the observations.
//! Times are only ever lower bounds (a delay is at least what was asked).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use util::*;

use util::lua_helper as helper;
use util::lua_str as q;

/// The config file `with_config` wrote for this daemon.
fn config_path(d: &Daemon) -> std::path::PathBuf {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let i = args.iter().position(|a| *a == b"--config").unwrap();
    std::path::PathBuf::from(String::from_utf8_lossy(args[i + 1]).to_string())
}

/// Service rows by (name, instance): the row's fields.
fn services(d: &Daemon) -> BTreeMap<(String, u32), Vec<String>> {
    d.ask("Status")
        .into_iter()
        .filter(|l| l.starts_with("Service,"))
        .map(|l| {
            let f: Vec<String> = l.split(',').map(String::from).collect();
            ((f[1].clone(), f[2].parse().unwrap()), f)
        })
        .collect()
}

fn state(d: &Daemon, name: &str, i: u32) -> String {
    services(d)
        .get(&(name.to_string(), i))
        .map(|f| f[3].clone())
        .unwrap_or_default()
}

fn pid_of(d: &Daemon, name: &str, i: u32) -> String {
    services(d)[&(name.to_string(), i)][4].clone()
}

/// ServiceEvent rows seen on a subscription until `until` matches one:
/// (time, name, instance, state, pid).
fn events_until(c: &mut Conn, until: impl Fn(&[&str]) -> bool) -> Vec<Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let line = c.line().expect("archon closed the subscription");
        let f: Vec<&str> = line.split(',').collect();
        if f[0] != "ServiceEvent" {
            continue;
        }
        seen.push(f.iter().map(|s| s.to_string()).collect());
        if until(&f) {
            return seen;
        }
    }
}

#[test]
fn crash_loop_backs_off_exponentially_then_the_budget_fails_it() {
    let lua = format!(
        r#"service "crashy" {{
            cmd = {},
            autostart = false,
            backoff = {{ initial = 0.1, multiplier = 2, max = 0.4, reset_after = 60 }},
            budget = {{ restarts = 4, window = 60 }},
        }}"#,
        helper("exit 3")
    );
    let d = with_config("crash", &lua, &[]);
    let mut sub = d.conn();
    sub.request("Subscribe");
    assert_eq!(last(&d.ask("Start,crashy")), "Ok");
    let ev = events_until(&mut sub, |f| f[4] == "failed");
    // Times at which a new process ran.
    let runs: Vec<f64> = ev
        .iter()
        .filter(|f| f[4] == "running")
        .map(|f| f[1].parse().unwrap())
        .collect();
    assert_eq!(runs.len(), 5, "one start and 4 restarts: {ev:?}");
    let gaps: Vec<f64> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, want) in gaps.iter().zip([0.1, 0.2, 0.4, 0.4]) {
        assert!(
            *gap >= want - 0.002,
            "gap {gap} shorter than the delay {want}: {gaps:?}"
        );
    }
    let row = &services(&d)[&("crashy".to_string(), 0)];
    assert_eq!(
        (row[3].as_str(), row[6].as_str(), row[9].as_str()),
        ("failed", "4", "3")
    );
    // Start gives it a new budget.
    assert_eq!(last(&d.ask("Start,crashy")), "Ok");
    events_until(&mut sub, |f| f[2] == "crashy" && f[4] == "backoff");
}

#[test]
fn dependencies_order_start_and_stop_with_s6_readiness() {
    let lua = format!(
        r#"
        service "db" {{ cmd = {db}, ready = {{ fd = 3 }}, autostart = false }}
        service "web" {{ cmd = {web}, depends_on = {{ "db" }}, autostart = false }}
        "#,
        db = helper("sleep 0.3 ready-fd 3 hang"),
        web = helper("hang"),
    );
    let mut d = with_config("deps", &lua, &[]);
    let mut sub = d.conn();
    sub.request("Subscribe");
    assert_eq!(last(&d.ask("Start,web")), "Ok");
    // web waits: nothing of it runs while db is not even started.
    assert_eq!(state(&d, "web", 0), "starting");
    assert_eq!(pid_of(&d, "web", 0), "");
    assert_eq!(last(&d.ask("Start,db")), "Ok");
    let ev = events_until(&mut sub, |f| f[2] == "web" && f[4] == "running");
    let order: Vec<(String, String)> = ev
        .iter()
        .filter(|f| !f[5].is_empty() || f[4] == "running")
        .map(|f| (f[2].clone(), f[4].clone()))
        .collect();
    let db_ready = order
        .iter()
        .position(|o| o == &("db".into(), "running".into()));
    let web_up = order
        .iter()
        .position(|o| o == &("web".into(), "running".into()));
    assert!(db_ready < web_up, "{order:?}");
    // Shutdown stops web before db.
    let st = d.terminate();
    assert!(st.success());
    let log = d.log();
    let web_stop = log.find("service web.0 stopping").unwrap();
    let db_stop = log.find("service db.0 stopping").unwrap();
    assert!(web_stop < db_stop, "{log}");
}

#[test]
fn never_ready_is_killed_after_the_start_timeout() {
    let lua = format!(
        r#"service "mute" {{ cmd = {}, ready = {{ fd = 4 }}, start_timeout = 0.2,
             backoff = {{ initial = 5 }}, grace = 1 }}"#,
        helper("hang")
    );
    let d = with_config("mute", &lua, &[]);
    wait_for("start timeout to fail the start", || {
        state(&d, "mute", 0) == "backoff"
    });
    assert_eq!(services(&d)[&("mute".to_string(), 0)][9], "143");
}

#[test]
fn oneshot_must_succeed_before_its_dependents_start() {
    let lua = format!(
        r#"
        service "migrate" {{ cmd = {ok}, oneshot = true }}
        service "app" {{ cmd = {hang}, depends_on = {{ "migrate" }} }}
        service "badinit" {{ cmd = {bad}, oneshot = true, restart = "never" }}
        service "blocked" {{ cmd = {hang}, depends_on = {{ "badinit" }} }}
        "#,
        ok = helper("exit 0"),
        bad = helper("exit 2"),
        hang = helper("hang"),
    );
    let d = with_config("oneshot", &lua, &[]);
    wait_for("app running", || state(&d, "app", 0) == "running");
    assert_eq!(state(&d, "migrate", 0), "exited");
    wait_for("badinit failed", || state(&d, "badinit", 0) == "failed");
    assert_eq!(state(&d, "blocked", 0), "starting");
    assert_eq!(pid_of(&d, "blocked", 0), "");
}

#[test]
fn pools_scale_live_without_touching_the_others() {
    let dir = temp_dir("pool-files");
    let lua = format!(
        r#"service "worker" {{
            cmd = {{ "sh", "-c", "touch {dir}/w$ARCHON_INSTANCE; exec {h} hang" }},
            replicas = 3,
        }}"#,
        dir = dir.display(),
        h = HELPER,
    );
    let d = with_config("pool", &lua, &[]);
    wait_for("3 workers", || {
        (0..3).all(|i| dir.join(format!("w{i}")).exists())
    });
    wait_for("3 running", || {
        (0..3).all(|i| state(&d, "worker", i) == "running")
    });
    let before: Vec<String> = (0..3).map(|i| pid_of(&d, "worker", i)).collect();
    assert_eq!(last(&d.ask("Scale,worker,5")), "Ok");
    wait_for("5 running", || {
        (0..5).all(|i| state(&d, "worker", i) == "running")
    });
    let after: Vec<String> = (0..3).map(|i| pid_of(&d, "worker", i)).collect();
    assert_eq!(before, after, "scaling up does not touch running instances");
    wait_for("worker 4's file", || dir.join("w4").exists());
    assert_eq!(last(&d.ask("Scale,worker,1")), "Ok");
    wait_for("1 left", || services(&d).len() == 1);
    assert_eq!(pid_of(&d, "worker", 0), before[0]);
    let o = d.ctl(&["status", "worker"]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("worker") && table.contains("running"),
        "{table}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_essential_service_failing_ends_the_container_with_its_status() {
    let dir = temp_dir("essential");
    let cfg = dir.join("archon.lua");
    std::fs::write(
        &cfg,
        format!(
            r#"service "core" {{ cmd = {}, essential = true, restart = "never" }}"#,
            helper("sleep 0.2 exit 7")
        ),
    )
    .unwrap();
    let o = Command::new(ARCHON)
        .args(["--no-socket", "--grace", "1", "--config"])
        .arg(&cfg)
        .arg("--")
        .args([HELPER, "hang"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("essential service core failed"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reload_keeps_unchanged_pids_and_reconciles_the_rest() {
    let hang = helper("hang");
    let lua = format!(
        r#"
        service "keep" {{ cmd = {hang} }}
        service "change" {{ cmd = {hang} }}
        service "drop" {{ cmd = {hang} }}
        "#
    );
    let d = with_config("reload", &lua, &[]);
    let cfg = config_path(&d);
    wait_for("all running", || {
        ["keep", "change", "drop"]
            .iter()
            .all(|n| state(&d, n, 0) == "running")
    });
    let keep = pid_of(&d, "keep", 0);
    let change = pid_of(&d, "change", 0);
    // An invalid file changes nothing.
    std::fs::write(&cfg, "service \"keep\" { cmd = 1 }").unwrap();
    let r = d.ask("Reload");
    assert!(
        r[0].starts_with("Error,bad-config,") && r[0].contains("archon.lua:1"),
        "{r:?}"
    );
    assert_eq!(pid_of(&d, "keep", 0), keep);
    // Neither is a file whose only service has an empty name, nor a bare
    // declaration: rejected, not read as "no services" (which would stop
    // everything).
    for bad in [
        format!("service \"\" {{ cmd = {hang} }}"),
        "service \"keep\"".to_string(),
    ] {
        std::fs::write(&cfg, &bad).unwrap();
        let r = d.ask("Reload");
        assert!(r[0].starts_with("Error,bad-config,"), "{bad}: {r:?}");
        assert_eq!(pid_of(&d, "keep", 0), keep);
        assert_eq!(state(&d, "drop", 0), "running");
    }
    std::fs::write(
        &cfg,
        format!(
            r#"
            service "keep" {{ cmd = {hang} }}
            service "change" {{ cmd = {hang}, env = {{ NEW = "1" }} }}
            service "new" {{ cmd = {hang} }}
            "#
        ),
    )
    .unwrap();
    let r = d.ask("Reload");
    assert_eq!(
        r,
        ["Ok,added=new,removed=drop,changed=change,rescaled=,unchanged=keep"]
    );
    wait_for("reconciled", || {
        let s = services(&d);
        s.len() == 3
            && s.values().all(|f| f[3] == "running")
            && s[&("change".to_string(), 0)][4] != change
    });
    assert_eq!(
        pid_of(&d, "keep", 0),
        keep,
        "unchanged service keeps its pid"
    );
    // SIGHUP reloads too (nothing changed now).
    unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    wait_for("SIGHUP reload", || d.log().matches("reloaded").count() == 2);
    let dump = d.ask("DumpConfig");
    assert!(
        dump.contains(&"Setting,change,env,NEW=1".to_string()),
        "{dump:?}"
    );
}

#[test]
fn output_lines_are_captured_whole_in_order_and_none_is_lost_at_exit() {
    let lua = format!(
        r#"service "talker" {{ cmd = {}, restart = "never" }}"#,
        helper("lines 5000 hello echo no-newline-at-the-end")
    );
    let d = with_config("logs", &lua, &[]);
    wait_for("talker done", || state(&d, "talker", 0) == "stopped");
    let out_path = d.dir.join("archon.out");
    wait_for("all lines", || {
        std::fs::read_to_string(&out_path)
            .is_ok_and(|s| s.contains("talker| no-newline-at-the-end"))
    });
    let out = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("hello")).collect();
    assert_eq!(lines.len(), 5000);
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("talker| hello {k}"));
    }
}

#[test]
fn dynamic_dependencies_refuse_cycles() {
    let lua = format!(
        r#"service "a" {{ cmd = {h} }}
           service "b" {{ cmd = {h}, depends_on = {{ "a" }} }}"#,
        h = helper("hang")
    );
    let d = with_config("depend", &lua, &[]);
    let r = d.ask("Depend,a,b");
    assert!(
        r[0].starts_with("Error,bad-request,dependency cycle"),
        "{r:?}"
    );
    assert_eq!(
        last(&d.ask("Undepend,a,b")).split(',').nth(1),
        Some("bad-request")
    );
    assert!(d.ask("Start,nope")[0].starts_with("Error,no-such-service"));
    assert!(d.ask("Status,nope")[0].starts_with("Error,no-such-service"));
    // Rolling restart of a: a gets a new pid.
    wait_for("a running", || state(&d, "a", 0) == "running");
    let pid = pid_of(&d, "a", 0);
    assert_eq!(last(&d.ask("Restart,a")), "Ok");
    wait_for("a restarted", || {
        // One snapshot: two queries could straddle the restart.
        let row = &services(&d)[&("a".to_string(), 0)];
        row[3] == "running" && row[4] != pid
    });
}

#[test]
fn bad_configs_are_refused_with_file_and_line_never_a_hang() {
    for (lua, want) in [
        ("service \"a\" { cmd = {\"x\"} \nservice \"b\" {", ":2:"),
        ("service \"a\" { cmd = {\"x\"}, colour = \"red\" }", ":1: service \"a\": colour: unknown setting"),
        ("service \"a\" { cmd = {\"x\"}, replicas = \"two\" }", ":1: service \"a\": replicas"),
        (
            "service \"a\" { cmd = {\"x\"}, depends_on = {\"b\"} }\nservice \"b\" { cmd = {\"x\"}, depends_on = {\"a\"} }",
            "dependency cycle: a -> b -> a",
        ),
        ("service \"a\" { cmd = {\"x\"} }\nservice \"a\" { cmd = {\"y\"} }", ":2: service \"a\" is declared twice"),
        ("while true do end", ":1: instruction budget spent"),
        ("service \"\" { cmd = {\"x\"} }", ":1: bad service name \"\""),
        ("service \"a\"", ":1: service \"a\" has no settings"),
        ("local s = 'x' for i = 1, 40 do s = s .. s end", "memory"),
    ] {
        let dir = temp_dir("badcfg");
        let cfg = dir.join("bad.lua");
        std::fs::write(&cfg, lua).unwrap();
        let o = Command::new(ARCHON)
            .args(["--no-socket", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{lua}: {err}");
        assert!(err.contains(want), "{lua}: wanted {want:?} in {err}");
        assert!(err.contains("bad.lua"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// user, group, umask and rlimits reach the service (root only: archon
/// must be allowed to switch users).
#[test]
fn user_group_umask_and_rlimits_apply() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("!!! SKIPPING user_group_umask_and_rlimits_apply: needs root (CI runs as root)");
        return;
    }
    let dir = temp_dir("ids");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = dir.join("ids.txt");
    let lua = format!(
        r#"service "who" {{
            cmd = {{ "sh", "-c", "echo $(id -u) $(id -g) $(umask) $(ulimit -n) > {out}; pwd >> {out}" }},
            user = 65534, group = "65533", umask = "027", cwd = "/tmp",
            rlimits = {{ nofile = {{ soft = 123, hard = 456 }}, core = 0 }},
            restart = "never",
        }}
        service "ghost" {{ cmd = {{ "true" }}, user = "no-such-user-here", autostart = false }}"#,
        out = out.display()
    );
    let cfg_dir = temp_dir("ids-cfg");
    let cfg = cfg_dir.join("a.lua");
    std::fs::write(&cfg, &lua).unwrap();
    // An unknown user is a config error, with file and line.
    let o = Command::new(ARCHON)
        .args(["--no-socket", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a.lua:7: service \"ghost\": unknown user"),
        "{err}"
    );
    std::fs::write(&cfg, lua.lines().take(6).collect::<Vec<_>>().join("\n")).unwrap();
    let cfg_arg = cfg.to_str().unwrap().to_string();
    let d = Daemon::start_with("ids", &["--config", &cfg_arg], |_| {});
    wait_for("who ran", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() == 2)
    });
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, "65534 65533 0027 123\n/tmp\n");
    let dump = d.ask("DumpConfig");
    assert!(
        dump.contains(&"Setting,who,rlimits.nofile,123 456".to_string()),
        "{dump:?}"
    );
    assert!(
        dump.contains(&"Setting,who,umask,027".to_string()),
        "{dump:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(cfg_dir).unwrap();
}

/// A log file rotated by size: whole lines only, the newest kept, at most
/// `keep` old files.
#[test]
fn log_files_rotate_by_size_keeping_whole_lines() {
    let dir = temp_dir("rotate");
    let log = dir.join("talk.log");
    let lua = format!(
        r#"service "talk" {{ cmd = {}, restart = "never",
             stdout = {{ file = {}, max_size = "16K", keep = 2 }} }}"#,
        helper("lines 10000 line"),
        q(log.to_str().unwrap())
    );
    let d = with_config("rotate", &lua, &[]);
    wait_for("talk done", || state(&d, "talk", 0) == "stopped");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let rotated = |i: u32| dir.join(format!("talk.log.{i}"));
    wait_for("the last line", || read(&log).ends_with("line 9999\n"));
    assert!(rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists(), "keep = 2");
    let all = format!("{}{}{}", read(&rotated(2)), read(&rotated(1)), read(&log));
    let nums: Vec<u32> = all
        .lines()
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous, whole lines"
    );
    assert_eq!(nums.last(), Some(&9999));
    for f in [log.clone(), rotated(1), rotated(2)] {
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len <= 16 * 1024, "{} is {len} bytes", f.display());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// systemd readiness: NOTIFY_SOCKET, READY=1 and STATUS= from the service's
/// own process; a dependent waits for it.
#[test]
fn notify_socket_readiness_and_status() {
    let lua = format!(
        r#"
        service "sd" {{ cmd = {sd}, ready = "notify" }}
        service "after" {{ cmd = {hang}, depends_on = {{ "sd" }} }}
        "#,
        sd = helper("sleep 0.2 notify STATUS=warming\\nREADY=1 hang"),
        hang = helper("hang"),
    );
    let d = with_config("notify", &lua, &[]);
    wait_for("after running", || state(&d, "after", 0) == "running");
    let row = &services(&d)[&("sd".to_string(), 0)];
    assert_eq!(row[3], "running");
    assert_eq!(row[10], "warming");
}

/// Readiness by a command (tried until it exits 0) and a health check
/// (failing makes the service unhealthy, passing running again).
#[test]
fn command_readiness_and_health_checks() {
    let dir = temp_dir("checks");
    let ok = dir.join("ok");
    let healthy = dir.join("healthy");
    let lua = format!(
        r#"
        service "slow" {{
            cmd = {hang},
            ready = {{ command = {{ "test", "-e", {ok} }}, interval = 0.05, timeout = 30 }},
            health = {{ command = {{ "test", "-e", {healthy} }}, interval = 0.05 }},
        }}
        service "after" {{ cmd = {hang}, depends_on = {{ "slow" }} }}
        "#,
        hang = helper("hang"),
        ok = q(ok.to_str().unwrap()),
        healthy = q(healthy.to_str().unwrap()),
    );
    let d = with_config("checks", &lua, &[]);
    wait_for("slow started", || !pid_of(&d, "slow", 0).is_empty());
    assert_eq!(state(&d, "slow", 0), "starting");
    assert_eq!(
        pid_of(&d, "after", 0),
        "",
        "after waits for slow's readiness"
    );
    std::fs::write(&healthy, "").unwrap();
    std::fs::write(&ok, "").unwrap();
    wait_for("after running", || state(&d, "after", 0) == "running");
    assert_eq!(state(&d, "slow", 0), "running");
    std::fs::remove_file(&healthy).unwrap();
    wait_for("unhealthy", || state(&d, "slow", 0) == "unhealthy");
    std::fs::write(&healthy, "").unwrap();
    wait_for("healthy again", || state(&d, "slow", 0) == "running");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A check command that hangs is killed with what it started once it has
/// run for its interval (at least a second) and counts as failed: a hung
/// health check makes the service unhealthy, a hung readiness command is
/// tried again rather than waited on for ever.
#[test]
fn a_hung_check_is_killed_at_its_time_and_counts_as_failed() {
    let dir = temp_dir("hungcheck");
    let log = |n: &str| dir.join(n);
    let hang_sh = |file: &std::path::Path| {
        format!(
            r#"{{ "sh", "-c", "sleep 1000 & echo $$ $! >> {}; wait" }}"#,
            file.display()
        )
    };
    let lua = format!(
        r#"
        service "sick" {{ cmd = {hang}, health = {{ command = {h}, interval = 0.2 }} }}
        service "stuck" {{ cmd = {hang}, ready = {{ command = {r}, interval = 0.1, timeout = 600 }} }}
        "#,
        hang = helper("hang"),
        h = hang_sh(&log("health")),
        r = hang_sh(&log("ready")),
    );
    let d = with_config("hungcheck", &lua, &[]);
    wait_for("sick to be unhealthy", || {
        state(&d, "sick", 0) == "unhealthy"
    });
    let pids = |n: &str| -> Vec<Vec<i32>> {
        std::fs::read_to_string(log(n))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').filter_map(|p| p.parse().ok()).collect())
            .collect()
    };
    for n in ["health", "ready"] {
        wait_for("a second run of the check", || pids(n).len() >= 2);
        // The first run, shell and its child, was killed.
        for p in &pids(n)[0] {
            wait_for("the first run's processes to go", || pid_gone(*p));
        }
    }
    assert_eq!(state(&d, "stuck", 0), "starting");
    assert!(d.log().contains("check ran past its time"), "{}", d.log());
    std::fs::remove_dir_all(dir).unwrap();
}

/// A service that writes faster than archon's stdout drains is throttled
/// by its own pipe: archon stays responsive, its memory stays bounded, and
/// once the reader catches up every line arrives, in order.
#[test]
fn a_slow_stdout_throttles_the_service_not_archon() {
    slow_stdout_throttles("slowsink", None);
}

/// The same with archon's stdout a socket (journald's stream, a
/// socketpair): its description cannot be made non-blocking privately, so
/// each write is a MSG_DONTWAIT send, and a reader that stops never stalls
/// the loop.
#[test]
fn a_slow_socket_stdout_throttles_the_service_not_archon() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    slow_stdout_throttles("slowsock", Some((ours, theirs)));
}

fn slow_stdout_throttles(
    name: &str,
    socket: Option<(
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    )>,
) {
    use std::io::{BufRead, BufReader, Read};
    const FILL: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    let dir = temp_dir(name);
    let cfg = dir.join("a.lua");
    std::fs::write(
        &cfg,
        format!(
            r#"service "flood" {{ cmd = {}, restart = "never" }}"#,
            helper(&format!("lines 300000 {FILL}"))
        ),
    )
    .unwrap();
    let sock = dir.join("s.sock");
    /// Kills archon (and so its service) even when an assertion fails,
    /// and even when archon is stuck (a regression that blocks it on its
    /// stdout would not act on SIGTERM: SIGKILL after a deadline).
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (stdout, reader): (Stdio, Option<Box<dyn Read>>) = match socket {
        Some((ours, theirs)) => (
            Stdio::from(std::os::fd::OwnedFd::from(theirs)),
            Some(Box::new(ours)),
        ),
        None => (Stdio::piped(), None),
    };
    let mut child = Reap(
        Command::new(ARCHON)
            .arg("--socket")
            .arg(&sock)
            .args(["--grace", "1", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("socket", || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let ask = |line: &str| {
        Conn::new(std::os::unix::net::UnixStream::connect(&sock).unwrap()).request(line)
    };
    // Nobody reads archon's stdout: the service fills its pipe and waits.
    wait_for("flood blocked on its pipe", || {
        let r = ask("Status,flood");
        let pid: i32 = r[0]
            .split(',')
            .nth(4)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pid > 0
            && std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                .is_ok_and(|w| w.contains("pipe"))
    });
    // archon answers, and holds no more than its bounded queue.
    assert!(ask("Version")[0].starts_with("Ok,archon"));
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap();
    assert!(rss_kib < 16 * 1024, "archon holds {rss_kib} KiB");
    // Now read everything: 300 000 lines, whole and in order.
    let reader: Box<dyn Read> = match reader {
        Some(r) => r,
        None => Box::new(child.0.stdout.take().unwrap()),
    };
    let out = BufReader::new(reader);
    let mut n = 0;
    for line in out.lines() {
        let line = line.unwrap();
        assert_eq!(line, format!("flood| {FILL} {n}"));
        n += 1;
        if n == 300_000 {
            break;
        }
    }
    assert_eq!(n, 300_000);
    drop(child);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A log file on a full filesystem (a small tmpfs: root only) keeps whole
/// lines only; the lines lost are counted and reported when writing works
/// again.
#[test]
fn a_full_filesystem_loses_whole_lines_and_counts_them() {
    let dir = temp_dir("fullfs");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("!!! SKIPPING the full-filesystem test: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    // Leave about 8 KiB free; once the filler goes, all 2000 lines (160 KB)
    // would fit.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![b'f'; 248 * 1024]).unwrap();
    let log = mnt.join("talk.log");
    let go = dir.join("go");
    let lua = format!(
        r#"service "talk" {{ cmd = {}, stdout = {{ file = {}, max_size = "1M" }} }}"#,
        helper(&format!(
            "lines 2000 a-line-that-is-long-enough-to-fill-a-small-filesystem-quickly wait-file {} echo after hang",
            go.display()
        )),
        q(log.to_str().unwrap())
    );
    let d = with_config("fullfs", &lua, &[]);
    wait_for("lines lost", || d.log().contains("cannot write log file"));
    std::fs::remove_file(&filler).unwrap();
    std::fs::write(&go, "").unwrap();
    wait_for("writable again", || {
        d.log().contains("log file writable again")
    });
    wait_for("the last line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with("after\n"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    // The file may take a line or two between losses (tmpfs frees a
    // partial page when a line is cut off): every recovery reports its own.
    let lost: usize = d
        .log()
        .lines()
        .filter(|l| l.contains("log file writable again"))
        .filter_map(|l| l.rsplit("lines_lost=").next()?.trim().parse::<usize>().ok())
        .sum();
    let mut written = 0;
    for l in text.lines() {
        if l == "after" {
            continue;
        }
        let (_, n) = l
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("partial line {l:?}"));
        assert!(l.starts_with("a-line-that"), "partial line {l:?}");
        n.parse::<u32>()
            .unwrap_or_else(|_| panic!("partial line {l:?}"));
        written += 1;
    }
    assert!(text.ends_with("after\n"), "{text}");
    assert_eq!(written + lost, 2000, "written {written}, lost {lost}");
}

/// `stdout = "null"` is a /dev/null the service can write to (a
/// read-only one failed every write with EBADF).
#[test]
fn null_output_is_writable() {
    let dir = temp_dir("nullout");
    let ok = dir.join("ok");
    let lua = format!(
        r#"service "quiet" {{ cmd = {{ "sh", "-c", "echo out && echo err >&2 && touch " .. {} }},
             stdout = "null", stderr = "null", restart = "never" }}"#,
        q(ok.to_str().unwrap())
    );
    let d = with_config("nullout", &lua, &[]);
    wait_for("the service wrote and went on", || ok.exists());
    assert!(!d.log().contains("I/O error"));
}

/// `DumpConfig` gives a command back argument by argument: one with
/// spaces, commas and quotes reads back as it was written.
#[test]
fn dump_config_keeps_argv() {
    let lua = r#"service "odd" { cmd = { "sh", "-c", "echo 'a, b' \"c\"", "x y" },
                   ready = { command = { "test", "-e", "/ a" }, interval = 0.5 },
                   health = { command = { "true", "1 2" }, interval = 2 },
                   autostart = false }"#;
    let d = with_config("dumpargv", lua, &[]);
    let rows = d.ask("DumpConfig");
    let parsed: Vec<Vec<String>> = rows
        .iter()
        .map(|r| archon::protocol::decode_record(r.as_bytes(), 1024).unwrap())
        .collect();
    let get = |k: &str| -> Vec<String> {
        parsed
            .iter()
            .find(|r| r.get(2).map(String::as_str) == Some(k))
            .map(|r| r[3..].to_vec())
            .unwrap_or_else(|| panic!("no {k} in {rows:?}"))
    };
    assert_eq!(get("cmd"), ["sh", "-c", "echo 'a, b' \"c\"", "x y"]);
    assert_eq!(get("ready"), ["command", "0.500", "test", "-e", "/ a"]);
    assert_eq!(get("health"), ["command", "2.000", "true", "1 2"]);
    let o = d.ctl(&["config"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("odd cmd sh -c 'echo '\\''a, b'\\'' \"c\"' 'x y'"),
        "{text}"
    );
}

/// Starting a service starts the stopped services it depends on (as
/// systemd's Requires does), instead of leaving it waiting forever.
#[test]
fn start_brings_up_stopped_dependencies() {
    let hang = helper("hang");
    let lua = format!(
        r#"
        service "db" {{ cmd = {hang}, autostart = false }}
        service "cache" {{ cmd = {hang}, autostart = false, depends_on = {{ "db" }} }}
        service "app" {{ cmd = {hang}, autostart = false, depends_on = {{ "cache" }} }}
        "#
    );
    let d = with_config("startdeps", &lua, &[]);
    let o = d.ctl(&["start", "app"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for("app and what it needs running", || {
        ["db", "cache", "app"]
            .iter()
            .all(|n| state(&d, n, 0) == "running")
    });
    // Stopping a dependency later does not make start run it twice.
    assert_eq!(last(&d.ask("Stop,app")), "Ok");
    wait_for("app stopped", || state(&d, "app", 0) == "stopped");
    let db = pid_of(&d, "db", 0);
    assert_eq!(last(&d.ask("Start,app")), "Ok");
    wait_for("app running again", || state(&d, "app", 0) == "running");
    assert_eq!(pid_of(&d, "db", 0), db);
}

/// Stopping a service stops its whole process group (its children too),
/// with SIGCONT after the stop signal so a stopped service does not sit
/// out its grace; `kill_mode = "process"` signals the main process only.
#[test]
fn stop_reaches_the_whole_process_group() {
    let dir = temp_dir("stopgroup");
    let kids = |tag: &str| {
        format!(
            "sleep 1234 & echo $! > {0}/{tag}1; sleep 1235 & echo $! > {0}/{tag}2; wait",
            dir.display()
        )
    };
    let lua = format!(
        r#"
        service "tree" {{ cmd = {{ "sh", "-c", {} }}, grace = 60 }}
        service "solo" {{ cmd = {{ "sh", "-c", {} }}, grace = 60, kill_mode = "process" }}
        "#,
        q(&kids("tree")),
        q(&kids("solo"))
    );
    let d = with_config("stopgroup", &lua, &[]);
    let pid = |f: &str| -> i32 {
        let p = dir.join(f);
        wait_for(f, || {
            std::fs::read_to_string(&p).is_ok_and(|s| s.ends_with('\n'))
        });
        std::fs::read_to_string(&p).unwrap().trim().parse().unwrap()
    };
    let (t1, t2, s1, s2) = (pid("tree1"), pid("tree2"), pid("solo1"), pid("solo2"));
    // A stopped service still goes at once: SIGCONT follows the SIGTERM.
    let main: i32 = pid_of(&d, "tree", 0).parse().unwrap();
    unsafe { libc::kill(main, libc::SIGSTOP) };
    assert_eq!(last(&d.ask("Stop,tree")), "Ok");
    wait_for("the group stopped", || {
        state(&d, "tree", 0) == "stopped" && !pid_alive(t1) && !pid_alive(t2)
    });
    assert_eq!(last(&d.ask("Stop,solo")), "Ok");
    wait_for("solo stopped", || state(&d, "solo", 0) == "stopped");
    // Only its main process was signalled... and, once it was gone, the
    // rest of its group was left alone (kill_mode = "process").
    assert!(pid_alive(s1) && pid_alive(s2));
    unsafe {
        libc::kill(s1, libc::SIGKILL);
        libc::kill(s2, libc::SIGKILL);
    }
}

/// sd_notify from a process of the service's group counts (systemd's
/// NotifyAccess=all, within the service): `sh -c` that does not exec, a
/// notifier child. A service that never gets ready is stopped with the
/// reason at warn.
#[test]
fn notify_from_the_services_group_and_start_timeout_reasons() {
    let lua = format!(
        r#"
        service "shell" {{ cmd = {{ "sh", "-c", {notify} .. "; sleep 100000" }}, ready = "notify" }}
        service "silent" {{ cmd = {hang}, ready = "notify", start_timeout = 0.3, restart = "never" }}
        "#,
        // The notifier stays: one that is already reaped when archon reads
        // its message cannot be placed (as with systemd-notify).
        notify = q(&format!("{HELPER} notify READY=1 hang")),
        hang = helper("hang"),
    );
    let d = with_config("notifygroup", &lua, &[]);
    wait_for("shell ready through its child", || {
        state(&d, "shell", 0) == "running"
    });
    wait_for("the silent one stopped with a reason", || {
        d.log()
            .contains("service silent.0 not ready within start_timeout=0.3s")
    });
    assert!(d.log().contains("READY=1 on NOTIFY_SOCKET"));
}

/// A long service name does not push the table's columns apart.
#[test]
fn long_names_keep_the_table_aligned() {
    let long = "a-service-with-a-rather-long-name-for-a-table-column";
    let lua = format!("service {} {{ cmd = {} }}", q(long), helper("hang"));
    let d = with_config("longname", &lua, &[]);
    wait_for("running", || state(&d, long, 0) == "running");
    let o = d.ctl(&["status"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let header = out.lines().find(|l| l.starts_with("SERVICE")).unwrap();
    let row = out.lines().find(|l| l.starts_with(long)).unwrap();
    assert_eq!(header.find("STATE"), row.find("running"), "{out}");
}

/// `${ARCHON_INSTANCE}` in a pool's cmd is the instance number, without a
/// shell (supervisord's %(process_num)d).
#[test]
fn the_instance_number_in_cmd() {
    let dir = temp_dir("instarg");
    let lua = format!(
        r#"service "pool" {{ cmd = {{ {h}, "touch", {d} .. "/i${{ARCHON_INSTANCE}}", "hang" }}, replicas = 3 }}"#,
        h = q(HELPER),
        d = q(dir.to_str().unwrap()),
    );
    let d = with_config("instarg", &lua, &[]);
    wait_for("every instance's file", || {
        (0..3).all(|i| dir.join(format!("i{i}")).exists())
    });
    assert!(!dir.join("i${ARCHON_INSTANCE}").exists());
    drop(d);
}

/// `env_file`, as systemd's EnvironmentFile: NAME=value lines, comments,
/// `export`, quotes; its values win over `env`; a missing file is an
/// error unless written `-/path`.
#[test]
fn env_files_as_systemd_reads_them() {
    let dir = temp_dir("envfile");
    let file = dir.join("app.env");
    std::fs::write(
        &file,
        "# comment\n; another\n\nA=1\nexport B=\"two words\"\nC='x=y'\nD = spaced\n",
    )
    .unwrap();
    let out = dir.join("out");
    let lua = format!(
        r#"service "app" {{ cmd = {}, env = {{ A = "from-env", E = "5" }},
             env_file = {{ {}, "-/no/such/file" }}, restart = "never",
             stdout = {{ file = {} }} }}"#,
        helper("print env"),
        q(file.to_str().unwrap()),
        q(out.to_str().unwrap()),
    );
    let d = with_config("envfile", &lua, &[]);
    wait_for("the service's environment", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("E=5"))
    });
    let env = std::fs::read_to_string(&out).unwrap();
    // The helper prints the environment separated by US (0x1f).
    for want in ["A=1", "B=two words", "C=x=y", "D=spaced", "E=5"] {
        assert!(
            env.split(['\u{1f}', '\n']).any(|l| l == want),
            "{want} in {env}"
        );
    }
    drop(d);
    let bad = dir.join("bad.lua");
    std::fs::write(
        &bad,
        "service \"a\" { cmd = { \"true\" }, env_file = \"/no/such/env\" }",
    )
    .unwrap();
    let o = Command::new(ARCHON)
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("env_file: /no/such/env"));
}

/// `Signal,<service>,<signal>` reaches every running instance.
#[test]
fn signal_a_service_by_name() {
    let lua = format!(
        // Ready (so "running") only once USR1 is blocked: a signal sent
        // before would kill it instead.
        r#"service "pool" {{ cmd = {}, replicas = 2, ready = "notify" }}
           service "off" {{ cmd = {}, autostart = false }}"#,
        helper("block USR1 notify READY=1 await USR1 exit 7"),
        helper("hang")
    );
    let d = with_config("signalname", &lua, &[]);
    wait_for("both running", || {
        state(&d, "pool", 0) == "running" && state(&d, "pool", 1) == "running"
    });
    let o = d.ctl(&["signal", "pool", "USR1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for("both got it and exited 7", || {
        let s = services(&d);
        (0..2).all(|i| s[&("pool".to_string(), i)][9].contains('7'))
    });
    assert!(d.ask("Signal,off,TERM")[0].starts_with("Error,not-running,"));
    assert!(d.ask("Signal,nosuch,TERM")[0].starts_with("Error,no-such-service,"));
}

/// A pool's own budget: restarts of all its instances together; once it
/// is spent the whole pool is stopped and failed, subscribers and hooks
/// told, though each instance alone is within its own budget.
#[test]
fn a_pool_budget_fails_the_whole_pool() {
    let lua = format!(
        r#"service "pool" {{ cmd = {}, replicas = 3,
             backoff = {{ initial = 0.01, max = 0.01 }},
             budget = {{ restarts = 100, window = 60 }},
             pool_budget = {{ restarts = 4, window = 60 }} }}
           service "steady" {{ cmd = {} }}
           on("failed", "pool", function(ev) archon.log("info", "POOL FAILED " .. ev.instance) end)"#,
        helper("exit 1"),
        helper("hang")
    );
    let d = with_config("poolbudget", &lua, &[]);
    wait_for("the whole pool failed", || {
        let s = services(&d);
        (0..3).all(|i| s[&("pool".to_string(), i)][3] == "failed")
    });
    let restarts: u32 = (0..3)
        .map(|i| {
            services(&d)[&("pool".to_string(), i)][6]
                .parse::<u32>()
                .unwrap()
        })
        .sum();
    assert!(restarts <= 5, "the pool restarted {restarts} times");
    wait_for("the hooks heard of it", || {
        d.log().matches("POOL FAILED").count() == 3
    });
    assert_eq!(state(&d, "steady", 0), "running");
    // Start clears it, as for an instance's own budget.
    assert_eq!(last(&d.ask("Start,pool")), "Ok");
    wait_for("the pool starting again", || {
        services(&d)[&("pool".to_string(), 0)][3] != "failed"
    });
}

/// supervisord's startsecs: a process that exits before it is a failed
/// start, whatever its code (so `on-failure` restarts it, and the budget
/// ends it, with the reason at warn); one that lives past it is running,
/// and until then it is `starting`.
#[test]
fn startsecs_makes_a_quick_exit_a_failed_start() {
    let lua = format!(
        r#"
        service "quick" {{ cmd = {quick}, restart = "on-failure", startsecs = 30,
                           budget = {{ restarts = 2, window = 60 }},
                           backoff = {{ initial = 0.01 }} }}
        service "plain" {{ cmd = {quick}, restart = "on-failure" }}
        service "slow" {{ cmd = {hang}, startsecs = 0.3 }}
        service "after" {{ cmd = {hang}, depends_on = {{ "slow" }} }}
        "#,
        quick = helper("exit 0"),
        hang = helper("hang"),
    );
    let d = with_config("startsecs", &lua, &[]);
    wait_for("quick failed after its budget", || {
        state(&d, "quick", 0) == "failed"
    });
    assert!(d
        .log()
        .contains("service quick.0 exited before startsecs=30s"));
    assert_eq!(services(&d)[&("quick".to_string(), 0)][6], "2");
    // Without startsecs, exit 0 under on-failure is a clean stop.
    wait_for("plain stopped", || state(&d, "plain", 0) == "stopped");
    wait_for("slow running", || state(&d, "slow", 0) == "running");
    wait_for("after running", || state(&d, "after", 0) == "running");
    drop(d);

    // Seen on a subscription: slow is running no sooner than startsecs
    // after it started (a lower bound), and its dependent is spawned only
    // then.
    let lua = format!(
        r#"
        service "slow" {{ cmd = {hang}, startsecs = 0.3, autostart = false }}
        service "after" {{ cmd = {hang}, depends_on = {{ "slow" }}, autostart = false }}
        "#,
        hang = helper("hang"),
    );
    let d = with_config("startsecs-order", &lua, &[]);
    let mut c = d.conn();
    assert_eq!(c.request("Subscribe"), ["Ok"]);
    // The test's own clock before the request: the spawn comes after it.
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(d.ask("Start,after"), ["Ok"]);
    let ev = events_until(&mut c, |f| f[2] == "after" && f[4] == "running");
    let at = |name: &str, st: &str| {
        ev.iter()
            .position(|e| e[2] == name && e[4] == st)
            .unwrap_or_else(|| panic!("no {name} {st}: {ev:?}"))
    };
    let secs = |i: usize| ev[i][1].parse::<f64>().unwrap();
    // (Not against the `starting` event: that is announced after the
    // spawn, which may take a while on a busy machine.)
    assert!(
        secs(at("slow", "running")) - asked >= 0.299,
        "{asked} {ev:?}"
    );
    assert!(at("slow", "running") < at("after", "running"), "{ev:?}");
    assert!(
        ev[..at("slow", "running")]
            .iter()
            .all(|e| e[2] != "after" || e[5].is_empty()),
        "after spawned before slow ran: {ev:?}"
    );
}

/// systemd's WatchdogSec: WATCHDOG_USEC in the environment; a service that
/// sends WATCHDOG=1 often enough keeps running; one that stops sending is
/// killed with SIGABRT (watchdog_signal) and restarted, the reason at warn;
/// WATCHDOG=trigger fires at once.
#[test]
fn an_unfed_watchdog_restarts_the_service() {
    let dir = temp_dir("watchdog-files");
    let fed = dir.join("fed");
    let usec = dir.join("usec");
    let lua = format!(
        r#"
        service "fed" {{ cmd = {{ "sh", "-c", "echo $WATCHDOG_USEC > " .. {usec} .. "; exec " .. {feed} }},
                         watchdog = 1 }}
        service "unfed" {{ cmd = {hang}, watchdog = 0.3, backoff = {{ initial = 0.01 }} }}
        service "trigger" {{ cmd = {trigger}, watchdog = 3600, watchdog_signal = "USR1",
                             restart = "never" }}
        "#,
        usec = q(usec.to_str().unwrap()),
        feed = q(&format!("{HELPER} feed-watchdog 0.05 {}", fed.display())),
        hang = helper("hang"),
        trigger = helper("notify WATCHDOG=trigger hang"),
    );
    let d = with_config("watchdog", &lua, &[]);
    wait_for("unfed restarted by the watchdog", || {
        services(&d)[&("unfed".to_string(), 0)][6] != "0"
    });
    assert!(d
        .log()
        .contains("service unfed.0 sent no WATCHDOG=1 within watchdog=0.3s"));
    assert!(d.log().contains("sending it ABRT"), "{}", d.log());
    wait_for("WATCHDOG_USEC written", || {
        std::fs::read_to_string(&usec).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&usec).unwrap().trim(), "1000000");
    wait_for("trigger killed by USR1 and failed", || {
        state(&d, "trigger", 0) == "failed"
    });
    let row = &services(&d)[&("trigger".to_string(), 0)];
    assert!(row[9].contains("USR1") || row[9] == "138", "{row:?}");
    // Fed for over two intervals (the helper counts its keepalives): the
    // same process, never restarted.
    let pid = pid_of(&d, "fed", 0);
    wait_for("40 keepalives", || {
        std::fs::read_to_string(&fed).is_ok_and(|s| s.lines().count() >= 40)
    });
    assert_eq!(pid_of(&d, "fed", 0), pid);
    assert_eq!(services(&d)[&("fed".to_string(), 0)][6], "0");
    assert_eq!(state(&d, "fed", 0), "running");
}

/// A service that sends thousands of notify messages as fast as it can
/// has every one read, in order (its last STATUS= is the one shown, its
/// READY=1 counts), and archon answers meanwhile. (The kernel queues at
/// most net.unix.max_dgram_qlen datagrams, 10 by default, and the sender
/// waits; archon's budget of 64 per pass is a backstop for larger queues,
/// which this test cannot make.)
#[test]
fn a_notify_flood_is_read_in_passes_and_loses_nothing() {
    let lua = format!(
        r#"service "loud" {{ cmd = {cmd}, ready = "notify" }}"#,
        cmd = helper("notify-many 5000 STATUS=n notify READY=1 hang"),
    );
    let d = with_config("notifyflood", &lua, &[]);
    wait_for("loud ready after its flood", || {
        assert_eq!(d.ask("Version").len(), 1);
        state(&d, "loud", 0) == "running"
    });
    assert_eq!(services(&d)[&("loud".to_string(), 0)][10], "n4999");
}

/// `web.1` names one instance in every service verb (supervisord's
/// `group:name`, pm2's ids): Stop, Start, Restart, Signal and Status act on
/// it alone; an instance that does not exist is an error that says how
/// many there are; Scale takes the service; and a service may not be named
/// as an instance would be.
#[test]
fn one_instance_is_addressed_as_name_dot_index() {
    let lua = format!(
        r#"service "web" {{ cmd = {hang}, replicas = 3, backoff = {{ initial = 0.01 }} }}"#,
        hang = helper("hang"),
    );
    let d = with_config("instance-target", &lua, &[]);
    let all_running = |d: &Daemon| (0..3).all(|i| state(d, "web", i) == "running");
    wait_for("three running", || all_running(&d));
    let pids: Vec<String> = (0..3).map(|i| pid_of(&d, "web", i)).collect();

    assert_eq!(d.ask("Stop,web.1"), ["Ok"]);
    wait_for("web.1 stopped", || state(&d, "web", 1) == "stopped");
    assert_eq!(
        (state(&d, "web", 0), state(&d, "web", 2)),
        ("running".into(), "running".into())
    );
    let rows = d.ask("Status,web.1");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].starts_with("Service,web,1,stopped,"), "{rows:?}");
    assert_eq!(d.ask("Start,web.1"), ["Ok"]);
    wait_for("web.1 running again", || state(&d, "web", 1) == "running");

    // State and pid from one snapshot (two queries could straddle a death).
    let running_anew = |d: &Daemon, i: u32| {
        let row = &services(d)[&("web".to_string(), i)];
        row[3] == "running" && row[4] != pids[i as usize]
    };
    assert_eq!(d.ask("Restart,web.2"), ["Ok"]);
    wait_for("web.2 restarted", || running_anew(&d, 2));
    assert_eq!(d.ask("Signal,web.0,KILL"), ["Ok"]);
    wait_for("web.0 respawned", || running_anew(&d, 0));
    assert_eq!(services(&d)[&("web".to_string(), 0)][6], "1");
    assert_eq!(
        services(&d)[&("web".to_string(), 2)][6],
        "0",
        "Restart is not a crash"
    );

    let r = d.ask("Stop,web.7");
    assert!(
        r[0].starts_with("Error,no-such-service,no service web.7: web has 3 instances"),
        "{r:?}"
    );
    let r = d.ask("Status,web.7");
    assert!(r[0].starts_with("Error,no-such-service,"), "{r:?}");
    let r = d.ask("Scale,web.1,2");
    assert!(
        r[0].starts_with("Error,bad-request,Scale takes a service"),
        "{r:?}"
    );
    // archonctl passes it through.
    let o = d.ctl(&["stop", "web.2"]);
    assert!(o.status.success(), "{o:?}");
    wait_for("web.2 stopped", || state(&d, "web", 2) == "stopped");
    assert_eq!(state(&d, "web", 0), "running");
    drop(d);

    // A service named like an instance is a config error.
    let dir = temp_dir("instance-name");
    let path = dir.join("bad.lua");
    std::fs::write(
        &path,
        format!(r#"service "api.2" {{ cmd = {} }}"#, helper("hang")),
    )
    .unwrap();
    let o = Command::new(ARCHON)
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("names an instance"),
        "{o:?}"
    );
}

/// `Logs` (`archonctl logs`): the newest lines of each instance, bounded
/// per instance; one instance alone; `follow` delivers new lines live; an
/// instance's lines go with it.
#[test]
fn logs_keep_the_newest_lines_and_follow_new_ones() {
    let lua = format!(
        r#"
        service "chatty" {{ cmd = {chatty} }}
        service "beat" {{ cmd = {beat}, replicas = 2 }}
        "#,
        chatty = helper("lines 300 out hang"),
        beat = helper("echo hello hang"),
    );
    let d = with_config("logs", &lua, &[]);
    let text = |row: &str| row.rsplit(',').next().unwrap_or("").to_string();
    wait_for("chatty's last line kept", || {
        d.ask("Logs,chatty,1")
            .first()
            .is_some_and(|r| text(r) == "out 299")
    });
    let rows = d.ask("Logs,chatty");
    assert_eq!(rows.len(), 11, "ten lines by default: {rows:?}");
    let rows = d.ask("Logs,chatty,1000");
    assert_eq!(rows.len(), 201, "200 lines kept per instance");
    assert_eq!(text(&rows[0]), "out 100");
    assert!(rows[199].starts_with("Log,") && rows[199].contains(",chatty,0,stdout,out 299"));
    assert_eq!(rows[200], "Ok");

    wait_for("both beats said hello", || d.ask("Logs,beat").len() == 3);
    assert_eq!(d.ask("Logs,beat.1").len(), 2);
    assert!(d.ask("Logs,beat.9")[0].starts_with("Error,no-such-service,"));
    assert!(d.ask("Logs,nosuch")[0].starts_with("Error,no-such-service,"));
    let o = d.ctl(&["logs", "-n", "2", "chatty"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "chatty.0| out 298\nchatty.0| out 299\n"
    );

    // Follow beat.1: its restart's hello arrives live; beat.0's does not.
    let mut c = d.conn();
    assert_eq!(c.request("Logs,beat.1,0,follow"), ["Ok"]);
    assert_eq!(d.ask("Restart,beat"), ["Ok"]);
    let line = c.line().unwrap();
    assert!(
        line.starts_with("Log,") && line.ends_with(",beat,1,stdout,hello"),
        "{line}"
    );
    // The follower can still ask.
    assert_eq!(c.request("Version").len(), 1);

    // Scaled down, beat.1 and its lines are gone.
    assert_eq!(d.ask("Scale,beat,1"), ["Ok"]);
    wait_for("beat.1 gone", || {
        d.ask("Logs,beat.1")[0].starts_with("Error,")
    });
    assert_eq!(d.ask("Logs,beat").len(), 3, "beat.0 keeps its two hellos");
}

/// A follower that never reads is cut off at its backlog bound, not kept
/// growing: after a flood it receives a bounded amount, then EOF.
#[test]
fn a_log_follower_that_does_not_read_is_disconnected() {
    let dir = temp_dir("logflood");
    let out = dir.join("out");
    let lua = format!(
        r#"service "loud" {{ cmd = {{ "sh", "-c", {script} }}, stdout = {{ file = {file}, max_size = "1G" }} }}"#,
        script = q(&format!(
            "read x < {0}/go; {HELPER} lines 100000 flood hang",
            dir.display()
        )),
        file = q(out.to_str().unwrap()),
    );
    let fifo = dir.join("go");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let d = with_config("logflood", &lua, &[]);
    let mut c = d.conn();
    assert_eq!(c.request("Logs,loud,0,follow"), ["Ok"]);
    std::fs::write(&fifo, "go\n").unwrap();
    wait_for("the flood written", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("flood 99999"))
    });
    assert_eq!(d.ask("Version").len(), 1, "archon still answers");
    use std::io::Read;
    c.stream()
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let mut s = c.stream();
    let r = s.read_to_end(&mut got);
    assert!(r.is_ok(), "the follower was not disconnected: {r:?}");
    assert!(
        got.len() < 4 << 20,
        "{} bytes reached a follower that never read",
        got.len()
    );
    assert!(d.log().contains("log follower does not read"));
}

/// systemd's `MAINPID=`: a service whose started process hands over to a
/// daemon it forked (and exits) keeps running with the daemon as its main
/// process: Status shows its pid, Stop stops it, and its death restarts the
/// service. A MAINPID naming a process outside the service is refused.
#[test]
fn mainpid_hands_the_service_over_to_a_forked_daemon() {
    let dir = temp_dir("mainpid");
    let daemon = dir.join("daemon");
    let lua = format!(
        r#"
        service "forking" {{ cmd = {{ "sh", "-c", {script} }}, ready = "notify",
                             backoff = {{ initial = 0.01 }} }}
        service "liar" {{ cmd = {liar}, ready = "notify", start_timeout = 30 }}
        "#,
        // The started process forks the daemon, names it, and exits 0.
        script = q(&format!(
            "{HELPER} pidfile {} hang & exec {HELPER} notify \"MAINPID=$!\\nREADY=1\" exit 0",
            daemon.display()
        )),
        liar = helper("notify MAINPID=1 notify READY=1 hang"),
    );
    let d = with_config("mainpid", &lua, &[]);
    wait_for("the daemon's pidfile", || daemon.exists());
    let pid = std::fs::read_to_string(&daemon).unwrap();
    wait_for(
        "forking running with the daemon as its main process",
        || {
            let row = &services(&d)[&("forking".to_string(), 0)];
            row[3] == "running" && row[4] == pid
        },
    );
    assert!(d
        .log()
        .contains(&format!("service forking.0 main process is now pid={pid}")));
    // The started process has exited; the service did not restart.
    assert_eq!(services(&d)[&("forking".to_string(), 0)][6], "0");
    assert!(pid_alive(pid.parse().unwrap()));
    // Its death is the service's: restarted, a new daemon.
    std::fs::remove_file(&daemon).unwrap();
    unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
    wait_for("a new daemon after the restart", || daemon.exists());
    let pid2 = std::fs::read_to_string(&daemon).unwrap();
    assert_ne!(pid2, pid);
    wait_for("running again with the new daemon", || {
        let row = &services(&d)[&("forking".to_string(), 0)];
        row[3] == "running" && row[4] == pid2 && row[6] == "1"
    });
    // Stop goes to the daemon.
    assert_eq!(d.ask("Stop,forking"), ["Ok"]);
    wait_for("forking stopped", || state(&d, "forking", 0) == "stopped");
    wait_for("the daemon gone", || pid_gone(pid2.parse().unwrap()));
    // MAINPID=1 is refused; the liar keeps its own process.
    wait_for("liar running", || state(&d, "liar", 0) == "running");
    assert!(d
        .log()
        .contains("service liar.0 sent MAINPID=1: not a pid; ignored"));
    drop(d);

    // A main process that is not archon's child (its parent lives on and
    // has not reaped it): its death is seen through its pidfd all the same,
    // and the service restarts; what is left of its group goes.
    let lua = format!(
        r#"service "parent" {{ cmd = {{ "sh", "-c", {script} }}, ready = "notify",
                             backoff = {{ initial = 0.01 }} }}"#,
        script = q(&format!(
            "{HELPER} pidfile {} hang & {HELPER} notify \"MAINPID=$!\\nREADY=1\" hang",
            daemon.display()
        )),
    );
    let _ = std::fs::remove_file(&daemon);
    let d = with_config("mainpid-parent", &lua, &[]);
    wait_for("the daemon's pidfile", || daemon.exists());
    let pid = std::fs::read_to_string(&daemon).unwrap();
    wait_for("parent running with the daemon as its main process", || {
        let row = &services(&d)[&("parent".to_string(), 0)];
        row[3] == "running" && row[4] == pid
    });
    let sh = services(&d)
        .get(&("parent".to_string(), 0))
        .map(|_| ())
        .and(std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, r)| r.split(' ').nth(1).unwrap().to_string())
        })
        .unwrap();
    std::fs::remove_file(&daemon).unwrap();
    unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
    wait_for("restarted after the daemon died", || {
        services(&d)[&("parent".to_string(), 0)][6] == "1"
    });
    wait_for("the old shell killed with its group", || {
        pid_gone(sh.parse().unwrap())
    });
    drop(d);

    // A new main process in a session of its own (setsid), while the old
    // one lives on: at shutdown both are stopped and archon exits.
    let lua = format!(
        r#"service "split" {{ cmd = {{ "sh", "-c", {script} }}, ready = "notify" }}"#,
        script = q(&format!(
            "setsid {HELPER} pidfile {} hang & {HELPER} notify \"MAINPID=$!\\nREADY=1\" hang",
            daemon.display()
        )),
    );
    let _ = std::fs::remove_file(&daemon);
    let mut d = with_config("mainpid-split", &lua, &["--grace", "2"]);
    wait_for("the daemon's pidfile", || daemon.exists());
    let pid = std::fs::read_to_string(&daemon).unwrap();
    wait_for("split running with the daemon as its main process", || {
        let row = &services(&d)[&("split".to_string(), 0)];
        row[3] == "running" && row[4] == pid
    });
    let st = d.terminate();
    assert!(st.success(), "{st:?}: {}", d.log());
    assert!(pid_gone(pid.parse().unwrap()));
}
