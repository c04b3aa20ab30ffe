//! Limiters against the real binary: memory (with the test helper's
//! `alloc`), CPU, runtime; the restart, stop and event actions; the
//! budget; `LimitEvent` rows; a `limit_exceeded` hook that runs before the
//! stop signal; bad settings. Conditions are waited on with deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_os = "linux")]

mod util;

use util::lua_helper as helper;
use util::*;

/// The fields of the `LimitEvent` and `ServiceEvent` rows a subscription
/// sees until `until` matches one.
fn rows_until(c: &mut Conn, until: impl Fn(&[&str]) -> bool) -> Vec<Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let line = c.line().expect("archon closed the subscription");
        let f: Vec<&str> = line.split(',').collect();
        if f[0] != "LimitEvent" && f[0] != "ServiceEvent" {
            continue;
        }
        seen.push(f.iter().map(|s| s.to_string()).collect());
        if until(&f) {
            return seen;
        }
    }
}

fn subscribed(d: &Daemon) -> Conn {
    let mut c = d.conn();
    assert_eq!(c.request("Subscribe"), vec!["Ok".to_string()]);
    c
}

fn state(d: &Daemon, name: &str) -> Vec<String> {
    d.ask(&format!("Status,{name}"))
        .iter()
        .find(|l| l.starts_with("Service,"))
        .map(|l| l.split(',').map(String::from).collect())
        .unwrap_or_default()
}

#[test]
fn a_memory_limit_restarts_through_the_budget_and_then_fails_it() {
    let lua = format!(
        r#"service "leak" {{ cmd = {}, autostart = false,
              backoff = {{ initial = 0.05 }}, budget = {{ restarts = 2, window = 60 }},
              limits = {{ memory = "24M" }}, monitor = {{ interval = 0.1 }} }}"#,
        helper("alloc 48 400 hang")
    );
    let d = with_config("lim-mem", &lua, &[]);
    let mut c = subscribed(&d);
    assert_eq!(last(&d.ask("Start,leak")), "Ok");
    let seen = rows_until(&mut c, |f| f[0] == "ServiceEvent" && f[4] == "failed");
    let limits: Vec<&Vec<String>> = seen.iter().filter(|r| r[0] == "LimitEvent").collect();
    // The first process and two restarts (the budget) each exceeded it.
    assert_eq!(limits.len(), 3, "{seen:?}");
    for l in &limits {
        assert_eq!((l[2].as_str(), l[3].as_str()), ("leak", "0"));
        assert_eq!(
            (l[5].as_str(), l[8].as_str()),
            ("memory", "restart"),
            "{l:?}"
        );
        let value: f64 = l[6].parse().unwrap();
        assert_eq!(l[7], (24u64 << 20).to_string());
        assert!(value > (24u64 << 20) as f64, "{l:?}");
    }
    // Each process got its stop signal after its event: stopping follows.
    let pids: Vec<&String> = limits.iter().map(|l| &l[4]).collect();
    assert_eq!(pids.len(), 3);
    assert!(
        pids[0] != pids[1] && pids[1] != pids[2],
        "new processes: {pids:?}"
    );
    for (i, r) in seen.iter().enumerate() {
        if r[0] == "LimitEvent" {
            let next = &seen[i + 1];
            assert_eq!(
                (next[0].as_str(), next[4].as_str()),
                ("ServiceEvent", "stopping"),
                "{seen:?}"
            );
        }
    }
    let st = state(&d, "leak");
    assert_eq!((st[3].as_str(), st[6].as_str()), ("failed", "2"), "{st:?}");
}

#[test]
fn a_sustained_cpu_limit_stops_and_an_event_only_limit_only_tells() {
    let lua = r#"
        service "spin" { cmd = { "sh", "-c", "while :; do :; done" }, autostart = false,
                         limits = { cpu = 5, sustain = 0.3, action = "stop" },
                         monitor = { interval = 0.1 } }
        service "watch" { cmd = { "sh", "-c", "while :; do :; done" }, autostart = false,
                          limits = { cpu = 5, action = "event" }, monitor = { interval = 0.1 } }"#;
    let d = with_config("lim-cpu", lua, &[]);
    let mut c = subscribed(&d);
    assert_eq!(last(&d.ask("Start,spin")), "Ok");
    let seen = rows_until(&mut c, |f| {
        f[0] == "ServiceEvent" && f[2] == "spin" && f[4] == "failed"
    });
    let l: Vec<&Vec<String>> = seen.iter().filter(|r| r[0] == "LimitEvent").collect();
    assert_eq!(l.len(), 1, "{seen:?}");
    assert_eq!(
        (l[0][5].as_str(), l[0][7].as_str(), l[0][8].as_str()),
        ("cpu", "5", "stop")
    );
    // Not restarted: failed, no new process.
    assert_eq!(state(&d, "spin")[3], "failed");
    assert_eq!(last(&d.ask("Start,watch")), "Ok");
    let seen = rows_until(&mut c, |f| f[0] == "LimitEvent" && f[2] == "watch");
    assert!(
        seen.iter()
            .all(|r| r[0] != "ServiceEvent" || r[4] != "stopping"),
        "{seen:?}"
    );
    assert_eq!(state(&d, "watch")[3], "running");
    assert_eq!(last(&d.ask("Stop,watch")), "Ok");
}

#[test]
fn a_runtime_limit_recycles_a_worker() {
    let lua = format!(
        r#"service "w" {{ cmd = {}, backoff = {{ initial = 0.05 }}, limits = {{ runtime = 0.3 }} }}"#,
        helper("hang")
    );
    let d = with_config("lim-run", &lua, &[]);
    let mut c = subscribed(&d);
    let seen = rows_until(&mut c, |f| f[0] == "LimitEvent");
    assert_eq!(seen.last().unwrap()[5], "runtime");
    let value: f64 = seen.last().unwrap()[6].parse().unwrap();
    assert!(value >= 0.3, "{seen:?}");
    let seen = rows_until(&mut c, |f| f[0] == "ServiceEvent" && f[4] == "running");
    assert!(!seen.last().unwrap()[5].is_empty());
}

#[test]
fn a_limit_exceeded_hook_runs_before_the_stop_signal() {
    let dir = temp_dir("lim-hook-out");
    let evidence = dir.join("evidence");
    // The service blocks SIGTERM, so the stop signal shows as pending
    // (ShdPnd) from the moment it is sent; the hook's command records the
    // pending set, sleeps a little (the stop waits for it), and writes the
    // limit's figures.
    let lua = format!(
        r#"service "fat" {{ cmd = {}, autostart = false, grace = 5, restart = "never",
              limits = {{ memory = "16M", action = "stop" }}, monitor = {{ interval = 0.1 }} }}
           on("limit_exceeded", "fat", function(ev)
             archon.run({{ "sh", "-c", "grep -e VmRSS -e ShdPnd /proc/" .. ev.pid .. "/status > {e}.tmp && sleep 0.3 && echo " .. ev.limit .. " " .. ev.value .. " " .. ev.threshold .. " >> {e}.tmp && mv {e}.tmp {e}" }})
           end)"#,
        helper("block TERM alloc 32 400 hang"),
        e = evidence.display()
    );
    let d = with_config("lim-hook", &lua, &[]);
    let mut c = subscribed(&d);
    assert_eq!(last(&d.ask("Start,fat")), "Ok");
    rows_until(&mut c, |f| f[0] == "ServiceEvent" && f[4] == "stopping");
    // By the time archon stopped it, the hook's command had finished.
    assert!(
        evidence.exists(),
        "the stop did not wait for the hook's command"
    );
    let text = std::fs::read_to_string(&evidence).unwrap();
    assert!(text.contains("VmRSS:"), "{text}");
    let pending = text
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    assert_eq!(
        u64::from_str_radix(&pending, 16),
        Ok(0),
        "no stop signal yet: {text}"
    );
    assert!(
        text.contains("memory ") && text.contains(&(16u64 << 20).to_string()),
        "{text}"
    );
    wait_for("failed once stopped", || {
        state(&d, "fat").get(3).is_some_and(|s| s == "failed")
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_limits_are_refused_with_their_line() {
    for (bad, says) in [
        (r#"{ memory = "lots" }"#, "memory"),
        (r#"{ memory = 10 }"#, "at least 4K"),
        (r#"{ cpu = -1 }"#, "cpu"),
        (r#"{ runtime = 0 }"#, "runtime"),
        (r#"{ sustain = 1 }"#, "at least one"),
        (r#"{ memory = "1G", action = "reboot" }"#, "action"),
        (r#"{ memory = "1G", measure = "vsz" }"#, "measure"),
        (r#"{ memory = "1G", every = 1 }"#, "unknown key"),
        (r#""1G""#, "expected a table"),
    ] {
        assert_refused("limits", bad, says);
    }
}

/// Limit restarts count in the pool's budget too: past it the whole pool
/// is stopped and failed.
#[test]
fn limit_restarts_spend_the_pool_budget() {
    let lua = format!(
        r#"service "pool" {{ cmd = {}, replicas = 2, autostart = false,
              backoff = {{ initial = 0.05 }}, budget = {{ restarts = 100, window = 60 }},
              pool_budget = {{ restarts = 2, window = 60 }},
              limits = {{ memory = "24M" }}, monitor = {{ interval = 0.1 }} }}"#,
        helper("alloc 48 400 hang")
    );
    let d = with_config("lim-pool", &lua, &[]);
    assert_eq!(last(&d.ask("Start,pool")), "Ok");
    wait_for("the whole pool failed", || {
        let r = d.ask("Status,pool");
        let rows: Vec<&String> = r.iter().filter(|l| l.starts_with("Service,")).collect();
        rows.len() == 2 && rows.iter().all(|l| l.split(',').nth(3) == Some("failed"))
    });
}
