//! Resource monitoring against the real binary: profiles from the config
//! and `--monitor`, `Stats` rows and their bounds, the history ring across
//! restarts, reloads, bad settings, `archonctl stats` and `top`. Every wait
//! is on a condition with a deadline; no figure is asserted against time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(target_os = "linux")]

mod util;

use util::lua_helper as helper;
use util::*;

/// The rows of one kind of a `Stats` reply, as fields.
fn rows(d: &Daemon, req: &str, kind: &str) -> Vec<Vec<String>> {
    let r = d.ask(req);
    assert_eq!(last(&r), "Ok", "{req}: {r:?}");
    r.iter()
        .filter(|l| l.starts_with(&format!("{kind},")))
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

fn samples(d: &Daemon, req: &str) -> Vec<Vec<String>> {
    rows(d, req, "Sample")
}

fn status_pid(d: &Daemon, name: &str) -> String {
    d.ask(&format!("Status,{name}"))
        .iter()
        .find(|l| l.starts_with("Service,"))
        .map(|l| l.split(',').nth(4).unwrap_or("").to_string())
        .unwrap_or_default()
}

const BUSY: &str = r#"{ "sh", "-c", "while :; do :; done" }"#;

#[test]
fn a_profiled_service_is_sampled_and_its_figures_are_its_own() {
    let lua = format!(
        r#"service "busy" {{ cmd = {BUSY}, monitor = {{ profile = "intensive", interval = 0.2, history = 50 }} }}
           service "quiet" {{ cmd = {} }}"#,
        helper("hang")
    );
    let d = with_config("mon-basic", &lua, &[]);
    // Two samples whose CPU time grew: the busy loop is measured.
    wait_for("two samples of busy", || {
        samples(&d, "Stats,busy,history").len() >= 2
    });
    wait_for("busy's CPU time grows between samples", || {
        let s = samples(&d, "Stats,busy,history");
        let cpu: Vec<f64> = s.iter().map(|r| r[6].parse().unwrap()).collect();
        cpu.windows(2).any(|w| w[1] > w[0])
    });
    let s = samples(&d, "Stats,busy");
    assert_eq!(s.len(), 1, "{s:?}");
    let r = &s[0];
    assert_eq!(r.len(), 20, "{r:?}");
    assert_eq!((r[2].as_str(), r[3].as_str()), ("busy", "0"));
    assert_eq!(
        r[4],
        status_pid(&d, "busy"),
        "the sample is of the service's process"
    );
    let rss: u64 = r[8].parse().unwrap();
    assert!(rss > 0, "{r:?}");
    let peak: u64 = r[10].parse().unwrap();
    assert!(
        peak >= rss,
        "the high-water mark is at least the current {r:?}"
    );
    assert_eq!(r[13], "1", "one thread: {r:?}");
    assert!(r[14].parse::<u32>().unwrap() >= 3, "stdio at least: {r:?}");
    // In archon's own network namespace: no network figure is made up.
    assert_eq!((r[18].as_str(), r[19].as_str()), ("", ""), "{r:?}");
    // quiet has no profile and there is no --monitor: never sampled.
    assert!(samples(&d, "Stats,quiet").is_empty());
    assert!(rows(&d, "Stats,quiet", "Aggregate").is_empty());
    let agg = rows(&d, "Stats,busy", "Aggregate");
    assert_eq!(agg.len(), 1);
    assert!(agg[0][4].parse::<usize>().unwrap() >= 2, "{agg:?}");
    assert_eq!(agg[0][13], "0.200");
}

#[test]
fn the_history_ring_is_bounded_and_spans_restarts() {
    let lua = format!(
        r#"service "w" {{ cmd = {}, backoff = {{ initial = 0.05 }},
                         monitor = {{ profile = "intensive", interval = 0.1, history = 3 }} }}"#,
        helper("hang")
    );
    let d = with_config("mon-ring", &lua, &[]);
    wait_for("a full ring", || {
        rows(&d, "Stats,w", "Aggregate")
            .first()
            .is_some_and(|a| a[4] == "3")
    });
    // More samples keep coming; the ring keeps three.
    let before = samples(&d, "Stats,w,history");
    assert_eq!(before.len(), 3);
    wait_for("a newer sample", || {
        samples(&d, "Stats,w,history")
            .last()
            .is_some_and(|s| s[5] != before[2][5])
    });
    assert_eq!(samples(&d, "Stats,w,history").len(), 3);
    // A restart: the instance keeps its ring; the new process's samples
    // come into it, with the new pid.
    let old_pid: i32 = status_pid(&d, "w").parse().unwrap();
    unsafe { libc::kill(old_pid, libc::SIGKILL) };
    wait_for("a sample of the new process", || {
        let new = status_pid(&d, "w");
        !new.is_empty()
            && new != old_pid.to_string()
            && samples(&d, "Stats,w").first().is_some_and(|s| s[4] == new)
    });
    let h = samples(&d, "Stats,w,history");
    assert!(h.len() <= 3, "{h:?}");
}

#[test]
fn monitor_everything_applies_to_daemons_and_stops_with_the_process() {
    let d = Daemon::start_with("mon-daemon", &["--monitor", "intensive"], |_| {});
    let mut c = d.conn();
    let r = c.request(&format!("StartDaemon,{},hang", util::HELPER));
    let id = ok_id(&r);
    wait_for("a sample of the daemon", || {
        !samples(&d, &format!("Stats,{id}")).is_empty()
    });
    let all = samples(&d, "Stats");
    assert!(all
        .iter()
        .any(|s| s[1] == id.to_string() && s[2].is_empty()));
    // Gone: no stale figures of a process that no longer exists.
    let r = d.ask(&format!("Stop,{id},0"));
    assert!(last(&r).starts_with(&format!("Ok,{id},")), "{r:?}");
    wait_for("the daemon's stats to go", || {
        d.ask(&format!("Stats,{id}"))[0].starts_with("Error,no-such-id,")
    });
}

#[test]
fn a_reload_changes_the_profile_without_a_restart() {
    let dir = temp_dir("mon-reload-cfg");
    let path = dir.join("archon.lua");
    let cfg = |m: &str| {
        format!(
            r#"service "s" {{ cmd = {}, monitor = {m} }}"#,
            helper("hang")
        )
    };
    std::fs::write(&path, cfg(r#"{ interval = 0.2, history = 5 }"#)).unwrap();
    let d = Daemon::start_with("mon-reload", &["--config", path.to_str().unwrap()], |_| {});
    wait_for("sampled every 0.2 s", || {
        rows(&d, "Stats,s", "Aggregate")
            .first()
            .is_some_and(|a| a[13] == "0.200")
    });
    let pid = status_pid(&d, "s");
    std::fs::write(&path, cfg(r#"{ interval = 0.3, history = 2 }"#)).unwrap();
    assert!(last(&d.ask("Reload")).starts_with("Ok,"));
    let a = rows(&d, "Stats,s", "Aggregate");
    assert_eq!(
        (a[0][13].as_str(), a[0][14].as_str()),
        ("0.300", "2"),
        "{a:?}"
    );
    assert_eq!(
        status_pid(&d, "s"),
        pid,
        "not restarted for a monitor change"
    );
    std::fs::write(&path, cfg(r#""off""#)).unwrap();
    assert!(last(&d.ask("Reload")).starts_with("Ok,"));
    assert!(rows(&d, "Stats,s", "Aggregate").is_empty());
}

#[test]
fn bad_monitor_settings_are_refused_with_their_line() {
    for (bad, says) in [
        (r#""fast""#, "unknown monitor profile"),
        (r#"{ interval = 0.01 }"#, "interval"),
        (r#"{ history = 10001 }"#, "history"),
        (r#"{ collect = "disk" }"#, "collect"),
        (r#"{ every = 1 }"#, "unknown key"),
        (r#"3"#, "expected a profile name"),
    ] {
        assert_refused("monitor", bad, says);
    }
    let out = std::process::Command::new(ARCHON)
        .args(["--monitor", "fast", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn stats_requests_are_checked_and_the_connection_stays_usable() {
    let d = Daemon::start("mon-req");
    let mut c = d.conn();
    for (req, kind) in [
        ("Stats,nosuch", "no-such-service"),
        ("Stats,77", "no-such-id"),
        ("Stats,a b", "bad-request"),
        ("Stats,1,everything", "bad-request"),
        ("Stats,1,history,more", "bad-request"),
    ] {
        let r = c.request(req);
        assert!(r[0].starts_with(&format!("Error,{kind},")), "{req}: {r:?}");
    }
    assert_eq!(c.request("Stats"), vec!["Ok".to_string()]);
    assert!(c.request("Version")[0].starts_with("Ok,archon"));
}

#[test]
fn archonctl_stats_and_top_print_tables() {
    let lua = format!(
        r#"service "t" {{ cmd = {}, monitor = {{ profile = "intensive", interval = 0.1 }} }}"#,
        helper("hang")
    );
    let d = with_config("mon-ctl", &lua, &[]);
    wait_for("a sample", || !samples(&d, "Stats,t").is_empty());
    let out = d.ctl(&["stats", "t"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("NAME") && text.contains("t.0") && text.contains("CPU%AVG"),
        "{text}"
    );
    let out = d.ctl(&["top", "-n", "2", "-d", "0.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text.matches("archon top: 1 processes sampled").count(),
        2,
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no escapes when piped: {text:?}");
    let out = d.ctl(&["stats", "--history"]);
    assert_eq!(out.status.code(), Some(2));
}
