//! `archon`: thin. Arguments -> options -> the event loop -> exit code.

use archon::cli::{self, Parsed};
use archon::{event_loop::EventLoop, platform};

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    platform::ensure_stdio_open();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // The Lua worker archon starts for itself (event_loop/worker.rs): not
    // an option for users, so not in --help.
    if args.first().is_some_and(|a| a == "--lua-worker") {
        let level = args.get(1).and_then(|l| l.to_str()).unwrap_or("info");
        init_logging(level, "archon-lua");
        return archon::lua::worker_main();
    }
    let opts = match cli::parse(&args, platform::uid()) {
        Ok(Parsed::Run(o)) => *o,
        Ok(Parsed::Help) => {
            return say(cli::USAGE);
        }
        Ok(Parsed::Version) => {
            return say(&format!("archon {}", env!("CARGO_PKG_VERSION")));
        }
        Err(e) => {
            eprintln!("archon: {e}\n{}", cli::USAGE);
            return 2;
        }
    };
    init_logging(&opts.log_level, "archon");
    if let Some(sig) = &opts.parent_death_signal {
        match platform::signal_number(sig) {
            Some(n) => platform::parent_death_signal(n),
            None => {
                eprintln!("archon: unknown signal for --parent-death-signal: {sig}");
                return 2;
            }
        }
    }
    let nofile = platform::raise_nofile();
    if let (true, Some(path)) = (opts.check, opts.config.as_ref()) {
        return archon::event_loop::check_config(path, opts.config_timeout_ms, nofile);
    }
    match EventLoop::new(opts, nofile) {
        Ok(lp) => lp.run(),
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// Prints a line; exit status 1 (and a message) when stdout cannot take
/// it, never a panic (an abort in a release build).
fn say(text: &str) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("archon: cannot write to standard output: {e}");
            1
        }
    }
}

fn init_logging(level: &str, name: &'static str) {
    use std::io::{IsTerminal, Write};
    let filter = level.parse().unwrap_or(log::LevelFilter::Info);
    // A terminal shows lines as they come; a file, a pipe or a log
    // collector gets each line dated (UTC), as systemd users expect.
    let dated = !std::io::stderr().is_terminal();
    env_logger::Builder::new()
        .filter_level(filter)
        .format(move |buf, rec| {
            let level = rec.level().as_str().to_lowercase();
            if dated {
                writeln!(buf, "{} {name}: {level} {}", utc_now(), rec.args())
            } else {
                writeln!(buf, "{name}: {level} {}", rec.args())
            }
        })
        .init();
}

/// The time as `2026-12-01T12:04:05.123Z` (UTC; no time library needed).
fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}
