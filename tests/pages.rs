//! archon gives back the code pages start-up touched (`event_loop/pages.rs`):
//! it must keep working afterwards on every path, and what it keeps mapped
//! must shrink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;
use util::*;

const RELEASED: &str = "released start-up pages bytes=";

/// archon's resident set (KiB).
fn rss(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn releases(d: &Daemon) -> Vec<u64> {
    d.log()
        .lines()
        .filter_map(|l| l.split(RELEASED).nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The test helper with these actions, as a request's fields.
fn h(actions: &str) -> String {
    let mut s = String::from(HELPER);
    for a in actions.split(' ').filter(|a| !a.is_empty()) {
        s.push(',');
        s.push_str(a);
    }
    s
}

#[test]
fn archon_works_on_every_path_after_giving_back_its_pages() {
    if !cfg!(target_os = "linux") {
        eprintln!("!!! SKIPPING: archon releases its pages on Linux only");
        return;
    }
    let lua = format!(
        r#"service "web" {{ cmd = {hang}, ready = {{ command = {{ "true" }}, interval = 0.1 }} }}
        on("exited", "*", function(ev) archon.log("info", "HOOK exited " .. ev.service) end)"#,
        hang = lua_helper("hang"),
    );
    let mut d = with_config("pages", &lua, &["--monitor", "standard"]);
    let up = |d: &Daemon| {
        d.ask("Status,web")
            .iter()
            .any(|l| l.contains(",running,") || l.contains(",ready,"))
    };
    // Start-up done (the config applied, its service spawned), then the
    // resident set, then whether the release came first after all.
    wait_for("web up", || up(&d));
    let before = rss(d.pid());
    let early = releases(&d).is_empty();
    wait_for("the first release", || !releases(&d).is_empty());
    let first = releases(&d)[0];
    // The executable's text and constants at least.
    assert!(first > 256 * 1024, "released only {first} bytes");
    if early {
        wait_for("archon's resident set to shrink", || rss(d.pid()) < before);
    } else {
        eprintln!("!!! the release came before the first look at archon's memory (a slow start): not compared");
    }
    // Every kind of work afterwards: the code and constants come back from
    // the file; a release that had dropped a relocated page (vtables,
    // string tables) would crash archon here.
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
    assert_eq!(
        last(&d.ask(&format!("Run,{}", h("exit 42")))),
        "ExitStatus,42"
    );
    assert_eq!(last(&d.ask("Run,/no/such/program")), "ExitStatus,127");
    let id = ok_id(&d.ask(&format!("StartDaemon,{}", h("hang"))));
    assert!(last(&d.ask(&format!("Stop,{id}"))).starts_with("Ok"));
    assert!(d.ask("DumpConfig").len() > 1);
    assert!(last(&d.ask("Stats")).starts_with("Ok"));
    assert_eq!(last(&d.ask("Restart,web")), "Ok");
    wait_for("the hook saw web exit", || {
        d.log().contains("HOOK exited web")
    });
    assert_eq!(last(&d.ask("Nonsense")).split(',').next(), Some("Error"));
    // A reload runs the config's decode again, and is followed by a
    // release of its own.
    assert!(d.ask("Reload")[0].starts_with("Ok"));
    wait_for("the release after the reload", || releases(&d).len() >= 2);
    assert!(d.ask("Version")[0].starts_with("Ok,archon"));
    assert_eq!(
        last(&d.ask(&format!("Run,{}", h("exit 7")))),
        "ExitStatus,7"
    );
    assert!(d.terminate().success());
}
