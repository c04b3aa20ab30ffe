//! Lua hooks against the real binary: every event kind, every API call, and
//! hostile hooks that must be stopped while archon stays responsive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use util::*;

use util::lua_helper as helper;
use util::lua_str as q;

fn with_config(name: &str, lua: &str) -> Daemon {
    let dir = temp_dir(&format!("{name}-cfg"));
    let path = dir.join("hooks.lua");
    std::fs::write(&path, lua).unwrap();
    Daemon::start_with(name, &["--config", path.to_str().unwrap()], |_| {})
}

fn wait_log(d: &Daemon, what: &str) {
    wait_for(&format!("{what:?} in archon's log"), || {
        d.log().contains(what)
    });
}

/// A hook that logs `EV <event> <service> <fields>` for every event kind.
const LOG_ALL: &str = r#"
for _, e in ipairs({ "spawned", "ready", "exited", "restarting", "failed", "unhealthy",
                     "stopping", "stopped", "scaled", "reloaded", "monitor_exited",
                     "run_exited", "started", "shutdown" }) do
  on(e, "*", function(ev)
    archon.log("info", "EV " .. ev.event .. " " .. ev.service .. " status=" .. tostring(ev.status)
      .. " signal=" .. tostring(ev.signal) .. " old=" .. ev.old_state .. " pid=" .. tostring(ev.pid))
  end)
end
"#;

#[test]
fn every_event_kind_reaches_hooks() {
    let dir = temp_dir("ev");
    let healthy = dir.join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let lua = format!(
        r#"{LOG_ALL}
        service "crash" {{ cmd = {crash}, backoff = {{ initial = 0.05 }}, budget = {{ restarts = 1, window = 60 }} }}
        service "up" {{ cmd = {hang}, health = {{ command = {{ "test", "-e", {healthy} }}, interval = 0.05 }} }}
        "#,
        crash = helper("exit 3"),
        hang = helper("hang"),
        healthy = q(healthy.to_str().unwrap()),
    );
    let mut d = with_config("events", &lua);
    wait_log(&d, "EV started archon");
    wait_log(&d, "EV spawned crash");
    wait_log(&d, "EV exited crash status=3");
    wait_log(&d, "EV restarting crash");
    wait_log(&d, "EV failed crash");
    wait_log(&d, "EV ready up");
    std::fs::remove_file(&healthy).unwrap();
    wait_log(&d, "EV unhealthy up");
    assert_eq!(last(&d.ask("Scale,up,2")), "Ok");
    wait_log(&d, "EV scaled up");
    assert!(last(&d.ask("Reload")).starts_with("Ok"));
    wait_log(&d, "EV reloaded archon");
    // A Run command and a monitored process.
    assert!(d.ask(&format!("Run,{HELPER},exit,5"))[0].starts_with("ExitStatus,5"));
    wait_log(&d, "EV run_exited archon-testhelper status=5");
    let mut child = spawn_helper(&["hang"]);
    let id = ok_id(&d.ask(&format!("MonitorPid,{}", child.id())));
    child.kill();
    child.wait();
    wait_for("monitor exited", || row(&d, id)[4] == "exited");
    wait_log(&d, "EV monitor_exited archon-testhelper");
    assert_eq!(last(&d.ask("Stop,up")), "Ok");
    wait_log(&d, "EV stopping up");
    wait_log(&d, "EV stopped up");
    assert!(d.terminate().success());
    wait_log(&d, "EV shutdown archon");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_api_acts_after_the_event() {
    let dir = temp_dir("api");
    let ran = dir.join("ran");
    let lua = format!(
        r#"
        service "db" {{ cmd = {hang} }}
        service "worker" {{ cmd = {hang}, autostart = false, replicas = 2 }}
        service "flaky" {{ cmd = {crash}, restart = "never" }}
        service "fallback" {{ cmd = {hang}, autostart = false }}
        service "victim" {{ cmd = {hang} }}
        -- restart worker* when db becomes ready again
        on("ready", "db", function(ev)
          archon.start("worker")
          archon.set_status("db", "seen ready")
        end)
        -- a failure: start a fallback, log, scale, run a command with a callback
        on("failed", "flaky", function(ev)
          archon.start("fallback")
          archon.log("warn", "flaky failed, fallback started")
          archon.scale("worker", 3)
          archon.signal("victim", "TERM")
          archon.run({{ "sh", "-c", "touch {ran}; exit 4" }}, function(status)
            archon.log("info", "run finished with " .. status)
            local n = 0
            for _, s in ipairs(archon.status()) do n = n + 1 end
            archon.log("info", "status has " .. n .. " rows")
          end)
        end)
        "#,
        hang = helper("hang"),
        crash = helper("exit 1"),
        ran = ran.display(),
    );
    let d = with_config("api", &lua);
    wait_for("workers started by the hook", || {
        d.ask("Status,worker")
            .iter()
            .filter(|l| l.contains(",running,"))
            .count()
            >= 2
    });
    wait_log(&d, "flaky failed, fallback started");
    wait_for("fallback running", || {
        d.ask("Status,fallback")[0].contains(",running,")
    });
    wait_for("3 workers", || {
        d.ask("Status,worker")
            .iter()
            .filter(|l| l.contains(",running,"))
            .count()
            == 3
    });
    wait_log(&d, "run finished with 4");
    assert!(ran.exists());
    wait_log(&d, "status has ");
    // victim got SIGTERM from the hook and was restarted (restart = always).
    wait_for("victim restarted", || {
        d.ask("Status,victim")[0].split(',').nth(9) == Some("143")
    });
    assert_eq!(d.ask("Status,db")[0].split(',').nth(10), Some("seen ready"));
    // The API outside a hook is an error at load time.
    let bad = temp_dir("api-bad");
    let cfg = bad.join("x.lua");
    std::fs::write(&cfg, "archon.start('x')").unwrap();
    let o = std::process::Command::new(ARCHON)
        .args(["--no-socket", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("x.lua:1: archon.start can only be called from a hook"));
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(bad).unwrap();
}

/// Every escape PLATFORM-NOTES.md lists, and a few more: each hook is
/// stopped, logged with its location, disabled after 3 failures, and
/// archon answers other clients meanwhile.
#[test]
fn hostile_hooks_are_stopped_and_disabled() {
    let cases = [
        ("loop", "while true do end"),
        ("pcall", "while true do pcall(function() while true do end end) end"),
        ("xpcall", "xpcall(function() error('x') end, function() while true do end end)"),
        ("errhandler", "xpcall(function() error('x') end, function() error('in handler') end) error('after')"),
        ("coroutine", "local co = coroutine.create(function() while true do end end) while true do coroutine.resume(co) end"),
        ("wrap", "coroutine.wrap(function() while true do end end)()"),
        ("sort", "local t = {} for i = 1, 100 do t[i] = i end table.sort(t, function(a, b) while true do end end)"),
        ("gsub", "string.gsub(string.rep('a', 100), 'a', function() while true do end end)"),
        ("pattern", "string.find(string.rep('a', 100000), '.-.-.-.-.-b')"),
        ("recursion", "local function f() return 1 + f() end f()"),
        ("stringbomb", "local s = 'x' while true do s = s .. s end"),
        ("bigtable", "local t = {} for i = 1, 1e9 do t[i] = {i} end"),
    ];
    let mut lua = format!(
        r#"service "tick" {{ cmd = {}, backoff = {{ initial = 0.01, max = 0.01 }}, budget = false }}
        "#,
        helper("exit 1")
    );
    for (name, body) in cases {
        lua.push_str(&format!(
            "on(\"spawned\", \"tick\", function(ev) -- {name}\n  {body}\nend)\n"
        ));
    }
    // The in-process sandbox is under test here: a generous deadline, so
    // that on a loaded machine a hook spending its whole instruction
    // budget is stopped by the budget (and counted), not by the worker's
    // deadline.
    let dir = temp_dir("hostile-cfg");
    let path = dir.join("hooks.lua");
    std::fs::write(&path, &lua).unwrap();
    let d = Daemon::start_with(
        "hostile",
        &["--hook-timeout", "30", "--config", path.to_str().unwrap()],
        |_| {},
    );
    for (i, (name, _)) in cases.iter().enumerate() {
        // Each hook is on its own line pair: line 2 + 3 * i + 1 is `on(`.
        let line = 2 + 3 * i;
        let at = format!("hooks.lua:{line}");
        wait_for(&format!("hook {name} ({at}) disabled"), || {
            d.log().contains(&format!("{at} disabled"))
        });
        // archon answers while hooks misbehave.
        assert!(d.ask("Version")[0].starts_with("Ok,archon"), "{name}");
    }
    let log = d.log();
    for (i, (name, _)) in cases.iter().enumerate() {
        let line = 2 + 3 * i;
        assert!(
            log.contains(&format!("hooks.lua:{line} disabled after 3 failures")),
            "{name} (line {line}) not disabled:\n{log}"
        );
    }
    assert!(log.contains("instruction budget spent"));
    assert!(
        log.contains("too slow for archon's Lua"),
        "the pattern guard"
    );
    assert!(log.contains("memory"), "the memory limit");
    // Still serving, and the service keeps cycling without hooks now.
    assert!(d.ask("Status,tick")[0].starts_with("Service,tick"));
}

/// A hook that spins close to its budget on every event (and so is never
/// disabled) does not stop other clients: their requests all complete.
#[test]
fn a_busy_hook_on_every_event_leaves_clients_served() {
    let lua = format!(
        r#"service "tick" {{ cmd = {}, backoff = {{ initial = 0.01, max = 0.01 }}, budget = false }}
        on("spawned", "tick", function(ev) local x = 0 for i = 1, 250000 do x = x + i end end)
        on("exited", "tick", function(ev) local x = 0 for i = 1, 250000 do x = x + i end end)
        "#,
        helper("exit 1")
    );
    let d = with_config("busy", &lua);
    let mut c = d.conn();
    let mut served = 0;
    // Keep asking while at least 20 more events have run their hooks.
    wait_for("20 restarts, each firing two busy hooks", || {
        let r = c.request("Status,tick");
        assert!(r[0].starts_with("Service,tick"), "{r:?}");
        served += 1;
        r[0].split(',').nth(6).and_then(|n| n.parse::<u32>().ok()) > Some(20)
    });
    assert!(served > 1);
    let log = d.log();
    assert!(
        !log.contains("disabled"),
        "the busy hooks stay within budget:\n{log}"
    );
}

/// Across calls too: a hook that spends most of its per-call budget on
/// every event is skipped once it has used its share for the minute; a
/// status filter passes only matching events.
#[test]
fn per_hook_budget_across_calls_and_filters() {
    let lua = format!(
        r#"service "tick" {{ cmd = {}, backoff = {{ initial = 0.001, max = 0.001 }}, budget = false }}
        on("spawned", "tick", function(ev) local x = 0 for i = 1, 300000 do x = x + i end end)
        on("exited", "tick", function(ev) archon.log("info", "FILTERED " .. ev.status) end, {{ status = 4 }})
        on("exited", "tick", function(ev) archon.log("info", "UNFILTERED " .. ev.status) end, {{ status = 3 }})
        "#,
        helper("exit 3")
    );
    let d = with_config("window", &lua);
    wait_for("the busy hook throttled", || {
        d.log().contains("skipped until the window ends")
    });
    let log = d.log();
    assert!(log.contains("UNFILTERED 3"));
    assert!(!log.contains("FILTERED 4"));
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
}

/// archon.stop and archon.restart from hooks.
#[test]
fn hooks_stop_and_restart_services() {
    let lua = format!(
        r#"
        service "a" {{ cmd = {hang} }}
        service "b" {{ cmd = {hang} }}
        service "trigger" {{ cmd = {once}, restart = "never" }}
        on("exited", "trigger", function(ev)
          archon.stop("a")
          archon.restart("b")
        end)
        "#,
        hang = helper("hang"),
        once = helper("sleep 0.3 exit 0"),
    );
    let d = with_config("stoprestart", &lua);
    wait_for("b running", || d.ask("Status,b")[0].contains(",running,"));
    let b_pid = d.ask("Status,b")[0].split(',').nth(4).unwrap().to_string();
    wait_for("a stopped by the hook", || {
        d.ask("Status,a")[0].contains(",stopped,")
    });
    wait_for("b restarted by the hook", || {
        let r = d.ask("Status,b");
        r[0].contains(",running,") && r[0].split(',').nth(4) != Some(b_pid.as_str())
    });
}

/// The event table is read-only, and `pairs` walks it.
#[test]
fn the_event_is_read_only() {
    let lua = format!(
        r#"
        service "x" {{ cmd = {}, restart = "never" }}
        on("exited", "x", function(ev)
          local n = 0
          for k, v in pairs(ev) do n = n + 1 end
          archon.log("info", "FIELDS " .. n .. " " .. ev.service)
          ev.service = "changed"
        end)
        "#,
        helper("exit 0")
    );
    let d = with_config("readonly", &lua);
    wait_for("hook ran", || d.log().contains("FIELDS "));
    wait_for("write refused", || {
        d.log().contains("the event is read-only")
    });
    let log = d.log();
    let line = log.lines().find(|l| l.contains("FIELDS ")).unwrap();
    let n: usize = line
        .split("FIELDS ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 8, "pairs walks the fields: {line}");
    assert!(line.ends_with(" x"), "{line}");
}

/// Hooks run at the end of the loop iteration, after what the event set off:
/// a killed service is already respawned when its `exited` hook runs (the
/// hook's cost is not added to the restart), and `archon.status()` there
/// shows the new process.
#[test]
fn a_crashed_service_is_respawned_before_its_exited_hook_runs() {
    let lua = format!(
        r#"
        service "h" {{ cmd = {hang}, backoff = {{ reset_after = 0 }}, budget = false }}
        on("exited", "h", function(ev)
          local now = "none"
          for _, s in ipairs(archon.status()) do
            if s.service == "h" then now = tostring(s.pid) .. ":" .. s.state end
          end
          archon.log("info", "EXITED old=" .. tostring(ev.pid) .. " now=" .. now .. " END")
        end)
        "#,
        hang = helper("hang"),
    );
    let d = with_config("respawn-first", &lua);
    let pid_of = || {
        d.ask("Status,h")
            .iter()
            .find(|l| l.starts_with("Service,h,"))
            .and_then(|l| l.split(',').nth(4).and_then(|p| p.parse::<i32>().ok()))
    };
    wait_for("h running", || pid_of().is_some());
    let old = pid_of().unwrap();
    unsafe { libc::kill(old, libc::SIGKILL) };
    let marker = format!("EXITED old={old} now=");
    wait_log(&d, &marker);
    let log = d.log();
    let line = log.lines().find(|l| l.contains(&marker)).unwrap();
    let now = line
        .split(&marker)
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let (pid, state) = now.split_once(':').unwrap_or_else(|| panic!("{line}"));
    let pid: i32 = pid.parse().unwrap_or_else(|_| panic!("no new pid: {line}"));
    assert_ne!(pid, old, "{line}");
    assert!(pid_alive(pid), "{line}");
    assert!(["starting", "running"].contains(&state), "{line}");
}

/// Hooks that the in-process sandbox cannot stop (its own helpers replaced,
/// a pattern match just under the guard, a `__gc` finalizer, a C function
/// grinding through megabytes) run in the worker: archon answers at once
/// meanwhile, kills the worker at the hook deadline, and the next event's
/// hooks run in a new worker with the same config.
#[test]
fn hooks_the_sandbox_cannot_stop_do_not_stall_archon() {
    let lua = r#"
        local evil = {
          [1] = function() return ("a"):rep(4096):find(".-.-.-.-b") end,
          [2] = function()
            for i = 1, 100 do setmetatable({}, { __gc = function() while true do end end }) end
            local t = {} for i = 1, 200000 do t[i] = { i } end
          end,
          [3] = function()
            string.find = function() end
            getmetatable("").__index.rep = function() end
            while true do pcall(function() while true do end end) end
          end,
          [4] = function() local s = ("x"):rep(8e6) for i = 1, 1e6 do s:find("y", 1, true) end end,
        }
        on("run_exited", "sh", function(ev)
          if evil[ev.status] then evil[ev.status]() end
          archon.log("info", "HOOK DONE " .. ev.status)
        end)
        "#;
    let d = Daemon::start_with("unstoppable", &["--hook-timeout", "0.5"], |c| {
        let dir = temp_dir("unstoppable-cfg");
        let path = dir.join("hooks.lua");
        std::fs::write(&path, lua).unwrap();
        c.arg("--config").arg(path);
    });
    for n in 1..=4 {
        assert_eq!(
            last(&d.ask(&format!("Run,/bin/sh,-c,exit {n}"))),
            format!("ExitStatus,{n}")
        );
        // While that hook grinds, another client is answered.
        assert!(d.ask("Status")[0].starts_with("Ok") || d.ask("Version")[0].starts_with("Ok,"));
        // Its outcome: killed at the deadline, or stopped by the sandbox.
        wait_for(&format!("evil hook {n} ended"), || {
            let log = d.log();
            log.matches("missed its deadline").count()
                + log.matches(" failed (").count()
                + log.matches("HOOK DONE").count()
                >= n
        });
    }
    // A new worker with the same hooks serves the next event.
    assert_eq!(last(&d.ask("Run,/bin/sh,-c,exit 9")), "ExitStatus,9");
    wait_log(&d, "HOOK DONE 9");
    let log = d.log();
    // The pattern, the sabotaged guards and the 8 MB scans cannot be
    // stopped in process: they were killed.
    assert!(log.matches("missed its deadline").count() >= 3, "{log}");
    assert!(!log.contains("HOOK DONE 1") && !log.contains("HOOK DONE 3"));
}

/// A config whose evaluation never ends: at start-up archon refuses it
/// within the config timeout; on Reload the old config stays and archon
/// keeps answering while the new one is tried.
#[test]
fn a_config_that_never_finishes_is_refused_not_hung() {
    let dir = temp_dir("hungcfg");
    let bad = dir.join("bad.lua");
    std::fs::write(&bad, "local x = ('a'):rep(4096):find('.-.-.-.-b')").unwrap();
    let o = std::process::Command::new(ARCHON)
        .args(["--no-socket", "--config-timeout", "0.5", "--config"])
        .arg(&bad)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("did not finish"), "{err}");
    let hang = helper("hang");
    let good = format!("service \"a\" {{ cmd = {hang} }}\non(\"exited\", \"*\", function() end)\n");
    let d = Daemon::start_with("hungreload", &["--config-timeout", "1"], |c| {
        std::fs::write(dir.join("ok.lua"), &good).unwrap();
        c.arg("--config").arg(dir.join("ok.lua"));
    });
    wait_for("a running", || {
        d.ask("Status,a")[0].split(',').nth(3) == Some("running")
    });
    let pid = d.ask("Status,a")[0].split(',').nth(4).unwrap().to_string();
    std::fs::write(
        dir.join("ok.lua"),
        "local x = ('a'):rep(4096):find('.-.-.-.-b')",
    )
    .unwrap();
    let mut slow = d.conn();
    slow.send(b"Reload\n");
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
    let r = slow.reply();
    assert!(
        r[0].starts_with("Error,bad-config,") && r[0].contains("did not finish"),
        "{r:?}"
    );
    assert_eq!(d.ask("Status,a")[0].split(',').nth(4), Some(pid.as_str()));
    // The old config's hooks are back in a new worker.
    std::fs::write(dir.join("ok.lua"), &good).unwrap();
    assert!(d.ask("Reload")[0].starts_with("Ok,"));
}

/// A Lua memory bomb in a hook costs the worker, never archon's memory.
#[test]
fn a_memory_bomb_in_a_hook_leaves_archon_small() {
    let lua = r#"
        on("run_exited", "*", function(ev)
          local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(1000) .. i end
        end)
        "#;
    let d = Daemon::start_with("bomb", &[], |c| {
        let dir = temp_dir("bomb-cfg");
        let path = dir.join("hooks.lua");
        std::fs::write(&path, lua).unwrap();
        c.arg("--config").arg(path);
    });
    assert_eq!(last(&d.ask("Run,/bin/true")), "ExitStatus,0");
    wait_log(&d, "memory");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let rss: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss < 32 * 1024, "archon's RSS {rss} KiB");
}

/// archon's own machinery (health checks, commands hooks run) fires no
/// `run_exited`: a hook that runs a command on every `run_exited` does
/// not loop. Daemons and the main command have exit events of their own.
#[test]
fn hooks_see_clients_commands_not_archons_machinery() {
    let dir = temp_dir("machinery");
    let counter = dir.join("checks");
    let lua = format!(
        r#"
        service "svc" {{ cmd = {hang}, health = {{ command = {{ "sh", "-c", "echo x >> " .. {counter} }}, interval = 0.02 }} }}
        on("run_exited", "*", function(ev)
          archon.log("info", "RUNEXIT " .. ev.service .. " " .. ev.status)
          archon.run({{ "true" }}, function(st) archon.log("info", "CALLBACK " .. st) end)
        end)
        on("daemon_exited", "*", function(ev) archon.log("info", "DAEMONEXIT " .. ev.service .. " " .. ev.status) end)
        on("main_exited", "*", function(ev) archon.log("info", "MAINEXIT " .. ev.service .. " " .. ev.status) end)
        "#,
        hang = helper("hang"),
        counter = q(counter.to_str().unwrap()),
    );
    let path = dir.join("hooks.lua");
    std::fs::write(&path, lua).unwrap();
    let mut d = Daemon::start_with(
        "machinery",
        &[
            "--config",
            path.to_str().unwrap(),
            "--",
            HELPER,
            "wait-file",
        ],
        |c| {
            c.arg(dir.join("main-go")).args(["exit", "4"]);
        },
    );
    wait_for("three health checks", || {
        std::fs::read_to_string(&counter).is_ok_and(|s| s.lines().count() >= 3)
    });
    assert_eq!(
        last(&d.ask(&format!("Run,{HELPER},exit,5"))),
        "ExitStatus,5"
    );
    wait_log(&d, "CALLBACK 0");
    let id = ok_id(&d.ask(&format!("StartDaemon,{HELPER},exit,3")));
    wait_for("the daemon's exit", || row(&d, id)[4] == "exited");
    wait_log(&d, "DAEMONEXIT archon-testhelper 3");
    let log = d.log();
    assert_eq!(log.matches("RUNEXIT").count(), 1, "{log}");
    assert!(log.contains("RUNEXIT archon-testhelper 5"));
    std::fs::write(dir.join("main-go"), "").unwrap();
    let st = d.terminate_after_main();
    assert_eq!(st.code(), Some(4));
    assert!(
        d.log().contains("MAINEXIT archon-testhelper 4"),
        "{}",
        d.log()
    );
}

/// Reloads of a file whose evaluation hangs, pipelined: each gets exactly
/// one reply (an error past the config timeout, or `limit` past four
/// waiting), with no hooks in the config and so no standing worker, and
/// archon keeps answering.
#[test]
fn pipelined_reloads_of_a_hanging_file_are_each_answered() {
    let dir = temp_dir("reloadstorm");
    let cfg = dir.join("c.lua");
    std::fs::write(
        &cfg,
        format!("service \"a\" {{ cmd = {} }}", helper("hang")),
    )
    .unwrap();
    let d = Daemon::start_with(
        "reloadstorm",
        &["--config-timeout", "0.3", "--config", cfg.to_str().unwrap()],
        |_| {},
    );
    std::fs::write(&cfg, "local x = ('a'):rep(4096):find('.-.-.-.-b')").unwrap();
    let mut c = d.conn();
    c.send("Reload\n".repeat(6).as_bytes());
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
    let replies: Vec<String> = (0..6).map(|_| c.reply().remove(0)).collect();
    let limited = replies
        .iter()
        .filter(|r| r.starts_with("Error,limit,"))
        .count();
    let timed_out = replies
        .iter()
        .filter(|r| r.starts_with("Error,bad-config,") && r.contains("did not finish"))
        .count();
    assert_eq!((limited, timed_out), (2, 4), "{replies:?}");
    assert_eq!(d.ask("Status,a")[0].split(',').nth(3), Some("running"));
}

/// Nothing stays resident that is not needed: no worker without --config,
/// none once a config without hooks is read; one with hooks keeps one.
#[test]
fn a_worker_runs_only_while_hooks_need_it() {
    let children = |d: &Daemon| -> Vec<String> {
        let pid = d.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
            .map(|c| c.trim().to_string())
            .collect()
    };
    let plain = Daemon::start("noworker");
    assert!(children(&plain).is_empty(), "{:?}", children(&plain));
    let hang = helper("hang");
    let quiet = with_config("nohooks", &format!("service \"a\" {{ cmd = {hang} }}"));
    wait_for("only the service", || {
        let c = children(&quiet);
        c.len() == 1 && c[0] == "archon-testhelp"
    });
    let busy = with_config(
        "withhooks",
        &format!("service \"a\" {{ cmd = {hang} }}\non(\"exited\", \"*\", function() end)"),
    );
    wait_for("the service and the worker", || {
        let mut c = children(&busy);
        c.sort();
        c == ["archon-lua", "archon-testhelp"]
    });
    // The worker runs under its memory and CPU limits.
    let pid = busy.pid();
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let worker = kids
        .split_whitespace()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "archon-lua")
        })
        .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().rev().nth(2).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(limit("Max address space"), "1073741824", "{limits}");
    assert_eq!(limit("Max cpu time"), "3600", "{limits}");
}

/// `archon.status()` gives each instance's restarts by reason, the same
/// counters as `archon_service_restarts_total{reason}`.
#[test]
fn hooks_see_restarts_by_reason() {
    let lua = format!(
        r#"service "k" {{ cmd = {}, backoff = {{ initial = 0.05 }} }}
        on("restarting", "k", function(ev)
          for _, r in ipairs(archon.status()) do
            if r.service == "k" then
              archon.log("info", "BY signal=" .. r.restarts_by.signal .. " exit=" .. r.restarts_by.exit
                .. " limit=" .. r.restarts_by.limit .. " manual=" .. r.restarts_by.manual)
            end
          end
        end)"#,
        helper("hang")
    );
    let d = with_config("restarts-by", &lua);
    let pid = || -> i32 {
        d.ask("Status,k")
            .iter()
            .find(|l| l.starts_with("Service,"))
            .and_then(|l| l.split(',').nth(4)?.parse().ok())
            .unwrap_or(0)
    };
    wait_for("k running", || pid() > 0);
    unsafe { libc::kill(pid(), libc::SIGKILL) };
    wait_log(&d, "BY signal=1 exit=0 limit=0 manual=0");
}
