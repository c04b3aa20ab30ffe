//! `archonctl`: argv -> Request -> socket (+fds) -> reply lines -> exit code.
//! Depends on `protocol` only (plus the socket path default).
//!
//! `no_main`: archonctl is started once per shell command, so its start-up
//! is most of its cost. Rust's runtime set-up (reading `/proc/self/maps` for
//! the stack guard, a signal stack, polling fds 0-2, ignoring SIGPIPE) costs
//! more than the request itself and buys nothing here: SIGPIPE keeps its
//! default (so `archonctl status | head` ends quietly, as C tools do) and
//! writes to the socket use MSG_NOSIGNAL. The arguments are read from
//! `main`'s own `argv`: `std::env::args` is empty without std's `main` on
//! musl (only glibc hands argv to std's `.init_array` hook).
#![no_main]

#[path = "archonctl/top.rs"]
mod top;

use archon::protocol::{is_service_name, Command, PowerAction, ReplyLine, Request, SignalSpec};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

const USAGE: &str = "usage: archonctl [--socket PATH] [--csv] [--timeout SECONDS] COMMAND [ARGS...]
       archonctl --help | --version

commands (protocol verb in brackets):
  run [-e NAME=VALUE]... [--] CMD [ARGS...]    run a command with this terminal's stdin/stdout/stderr [Run]
  start [-e NAME=VALUE]... [--] CMD [ARGS...]  start a supervised daemon, print its id [StartDaemon]
  daemon [-e NAME=VALUE]... [--] CMD [ARGS...] the same, never taken for a service name
  start NAME                                   start a configured service [Start]
  stop NAME                                    stop a configured service
  restart NAME                                 restart it (a pool one instance at a time) [Restart]
  scale NAME N                                 resize a pool live [Scale]
  reload                                       read the config again and reconcile [Reload]
  config                                       the effective configuration [DumpConfig]
  depend NAME DEP | undepend NAME DEP          add or remove a run-time dependency [Depend] [Undepend]
  monitor PID                                  watch a process through a pidfd passed to archon [MonitorFD]
  monitor-pid PID                              watch a process, archon opens the pidfd [MonitorPid]
  status [ID | NAME]                           the process and service tables [Status]
  status --tree                                archon's process tree: each process's parent and
                                               owner, services' descendants, adopted orphans [Tree]
  lookup HOSTNAME                              the instances serving a hostname now, for a
                                               reverse proxy: service, instance, host:port [Lookup]
  stats [ID | NAME[.N]] [--history]            what monitored processes cost: the last sample (or
                                               every kept one) and averages, maxima, totals [Stats]
  top [-d SECONDS] [-n COUNT] [NAME[.N]]       a live table of monitored processes, busiest first,
                                               refreshed in place; piped: COUNT snapshots (1) [Stats]
  stop ID [GRACE_SECONDS]                      SIGTERM, then SIGKILL after the grace period [Stop]
  signal ID|NAME SIGNAL                        send a signal by name or number to a process,
                                               or to every running instance of a service [Signal]
  subscribe                                    print state changes as they happen [Subscribe]
  logs [-f] [-n N] NAME[.N]                    the last N (10) lines a service wrote, kept by
                                               archon; -f: then new ones as they come [Logs]
  version                                      show archon's version [Version]
  poweroff | reboot | halt                     orderly shutdown, then (as init) power off,
                                               reboot or halt; root only [Poweroff] [Reboot] [Halt]

exit status: 0 Ok, 1 Error reply, archon unreachable or output failed, 2 usage error;
run exits with the command's status, or 125 when archon could not run it.";

/// `writeln!` into a `String`, which cannot fail.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Exit status of `run` when archon itself refused or failed the request.
const RUN_FAILED: i32 = 125;

#[unsafe(no_mangle)]
extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    let code = real_main(c_args(argc, argv));
    // Flush what println! buffered; exit() would not run Rust destructors.
    let _ = std::io::stdout().flush();
    code
}

struct Ctl {
    socket: PathBuf,
    csv: bool,
    /// How long a reply that should come at once may take.
    timeout: std::time::Duration,
}

/// A usage error: what is wrong and where to look, not the whole help.
fn usage(msg: &str) -> i32 {
    eprintln!("archonctl: {msg}\n(archonctl --help lists the commands)");
    2
}

/// argv after argv[0]; an argument that is not UTF-8 is refused (the
/// protocol carries text), never changed.
fn c_args(argc: libc::c_int, argv: *const *const libc::c_char) -> Result<Vec<String>, String> {
    let n = usize::try_from(argc).unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    for i in 1..n {
        // SAFETY: the C runtime gives argc valid, NUL-terminated strings.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: p is one of those strings.
        let c = unsafe { std::ffi::CStr::from_ptr(p) };
        match c.to_str() {
            Ok(s) => out.push(s.to_owned()),
            Err(_) => return Err(format!("argument {i} is not UTF-8 text")),
        }
    }
    Ok(out)
}

fn real_main(args: Result<Vec<String>, String>) -> i32 {
    let mut args = match args {
        Ok(a) => a,
        Err(msg) => return usage(&msg),
    };
    let uid = archon::platform::uid();
    let mut ctl = Ctl {
        socket: archon::cli::default_socket(uid),
        csv: false,
        timeout: std::time::Duration::from_secs(30),
    };
    while let Some(first) = args.first().cloned() {
        match first.as_str() {
            "-s" | "--socket" => {
                if args.len() < 2 {
                    return usage("--socket needs a path");
                }
                ctl.socket = PathBuf::from(args.remove(1));
                args.remove(0);
            }
            s if s.starts_with("--socket=") => {
                ctl.socket = PathBuf::from(&s["--socket=".len()..]);
                args.remove(0);
            }
            "--csv" => {
                ctl.csv = true;
                args.remove(0);
            }
            "--timeout" => {
                let secs = args.get(1).and_then(|v| archon::cli::parse_seconds(v));
                match secs.filter(|ms| *ms > 0) {
                    Some(ms) => ctl.timeout = std::time::Duration::from_millis(ms),
                    None => return usage("--timeout needs seconds"),
                }
                args.drain(..2);
            }
            "-V" | "--version" => {
                if say(&format!("archonctl {}", env!("CARGO_PKG_VERSION"))) {
                    return 0;
                }
                eprintln!("archonctl: cannot write to standard output");
                return 1;
            }
            "-h" | "--help" | "help" => {
                if say(USAGE) {
                    return 0;
                }
                eprintln!("archonctl: cannot write to standard output");
                return 1;
            }
            _ => break,
        }
    }
    if args.is_empty() {
        return usage("no command given");
    }
    let cmd = args.remove(0);
    if cmd == "top" {
        return match top::run(&ctl.socket, ctl.timeout, &args) {
            Ok(code) => code,
            Err(e) if e.starts_with("top:") || e.starts_with('-') => usage(&e),
            Err(e) => {
                eprintln!("archonctl: {e}");
                1
            }
        };
    }
    let req = match build_request(&cmd, &args) {
        Ok(r) => r,
        Err(msg) => return usage(&msg),
    };
    let monitor_pid = if cmd == "monitor" {
        args.first().and_then(|s| s.parse::<i32>().ok())
    } else {
        None
    };
    match ctl.execute(&cmd, &req, monitor_pid) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("archonctl: {e}");
            if cmd == "run" {
                RUN_FAILED
            } else {
                1
            }
        }
    }
}

/// Writes a line to stdout; false when it cannot (`--help > /dev/full`):
/// never a panic, which in a release build is an abort.
fn say(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|_| out.flush()).is_ok()
}

/// An event line of `subscribe`: when stdout is gone (`| head -1`), the
/// subscription ends with status 1 rather than an abort.
fn event_line(text: &str) {
    if !say(text) {
        eprintln!("archonctl: cannot write to standard output");
        archon::platform::exit_now(1);
    }
}

fn parse_command(args: &[String]) -> Result<Command, String> {
    let mut env = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--" => {
                i += 1;
                break;
            }
            "-e" | "--env" => {
                let kv = args.get(i + 1).ok_or("-e needs NAME=VALUE")?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("not NAME=VALUE: {kv}"))?;
                env.push((k.to_string(), v.to_string()));
                i += 2;
            }
            _ => break,
        }
    }
    let argv = args[i..].to_vec();
    if argv.is_empty() {
        return Err("no command to run".into());
    }
    // Protocol v1 cannot carry LF or CR in a field (the codec would turn it
    // into a space, and a different command would run): refuse instead.
    let fields = argv.iter().map(|a| ("argument", a.as_str()));
    let vars = env.iter().map(|(_, v)| ("variable", v.as_str()));
    if let Some((what, bad)) = fields.chain(vars).find(|(_, f)| f.contains(['\n', '\r'])) {
        return Err(format!(
            "{what} {bad:?} contains a line break, which archon's protocol cannot carry; \
             put the script in a file, or use printf's escapes"
        ));
    }
    Ok(Command { argv, env })
}

fn one_name(args: &[String], what: &str) -> Result<String, String> {
    args.first()
        .filter(|n| is_service_name(n))
        .cloned()
        .ok_or_else(|| format!("{what} needs a service name"))
}

fn one_id(args: &[String], what: &str) -> Result<u64, String> {
    args.first()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("{what} needs a process id"))
}

fn build_request(cmd: &str, args: &[String]) -> Result<Request, String> {
    let max = |n: usize| {
        if args.len() > n {
            Err(format!("too many arguments for {cmd}"))
        } else {
            Ok(())
        }
    };
    Ok(match cmd {
        "run" => Request::Run(parse_command(args)?),
        // One bare word that names a service starts the service; anything
        // else (`--`, `-e`, arguments) starts a daemon. `daemon` always does.
        "start" if args.len() == 1 && is_service_name(&args[0]) => Request::Start(args[0].clone()),
        "start" | "daemon" => Request::StartDaemon(parse_command(args)?),
        "restart" => {
            max(1)?;
            Request::Restart(one_name(args, "restart")?)
        }
        "scale" => {
            max(2)?;
            let name = one_name(args, "scale")?;
            let replicas = args
                .get(1)
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or("scale needs a number of instances")?;
            Request::Scale { name, replicas }
        }
        "reload" => {
            max(0)?;
            Request::Reload
        }
        "config" => {
            max(0)?;
            Request::DumpConfig
        }
        "depend" | "undepend" => {
            max(2)?;
            let name = one_name(args, cmd)?;
            let dep = one_name(&args[1..], cmd)?;
            if cmd == "depend" {
                Request::Depend { name, dep }
            } else {
                Request::Undepend { name, dep }
            }
        }
        "monitor" | "monitor-pid" => {
            max(1)?;
            let pid = args
                .first()
                .and_then(|s| s.parse::<i32>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{cmd} needs a pid"))?;
            if cmd == "monitor" {
                Request::MonitorFd
            } else {
                Request::MonitorPid(pid)
            }
        }
        "lookup" => {
            max(1)?;
            match args.first() {
                Some(h) => Request::Lookup(h.to_ascii_lowercase()),
                None => return Err("lookup needs a HOSTNAME".into()),
            }
        }
        "stats" => {
            max(2)?;
            let history = args.iter().any(|a| a == "--history");
            let target = args.iter().find(|a| *a != "--history").cloned();
            if history && target.is_none() {
                return Err("stats --history needs an ID or NAME".into());
            }
            Request::Stats { target, history }
        }
        "status" if args.first().is_some_and(|a| a == "--tree") => {
            max(1)?;
            Request::Tree
        }
        "status" => {
            max(1)?;
            match args.first() {
                Some(n) if is_service_name(n) => Request::StatusService(n.clone()),
                Some(_) => Request::Status(Some(one_id(args, "status")?)),
                None => Request::Status(None),
            }
        }
        "stop" if args.len() == 1 && is_service_name(&args[0]) => {
            Request::StopService(args[0].clone())
        }
        "stop" => {
            max(2)?;
            let id = one_id(args, "stop")?;
            let grace_ms = match args.get(1) {
                Some(g) => Some(
                    archon::cli::parse_seconds(g)
                        .ok_or_else(|| format!("bad grace period: {g}"))?,
                ),
                None => None,
            };
            Request::Stop { id, grace_ms }
        }
        "signal" => {
            max(2)?;
            let sig = args.get(1).ok_or("signal needs a signal name or number")?;
            let signal = match sig.parse::<i32>() {
                Ok(n) => SignalSpec::Number(n),
                Err(_) => SignalSpec::Name(sig.to_ascii_uppercase()),
            };
            match args.first() {
                Some(n) if n.parse::<u64>().is_err() && is_service_name(n) => {
                    Request::SignalService {
                        name: n.clone(),
                        signal,
                    }
                }
                _ => Request::Signal {
                    id: one_id(args, "signal")?,
                    signal,
                },
            }
        }
        "subscribe" => {
            max(0)?;
            Request::Subscribe
        }
        "logs" => {
            let (mut follow, mut lines, mut target) = (false, None, None);
            let mut it = args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-f" | "--follow" => follow = true,
                    "-n" | "--lines" => {
                        let n = it.next().ok_or("-n needs a number of lines")?;
                        lines = Some(
                            n.parse::<u32>()
                                .map_err(|_| format!("not a number of lines: {n}"))?,
                        );
                    }
                    n if target.is_none() && is_service_name(n) => target = Some(n.to_string()),
                    other => {
                        return Err(format!(
                            "logs: unexpected {other:?} (logs [-f] [-n N] NAME[.N])"
                        ))
                    }
                }
            }
            Request::Logs {
                target: target
                    .ok_or_else(|| "logs needs a service (NAME or NAME.N)".to_string())?,
                lines: lines.unwrap_or(archon::protocol::LOGS_DEFAULT_LINES),
                follow,
            }
        }
        "version" => {
            max(0)?;
            Request::Version
        }
        "poweroff" => {
            max(0)?;
            Request::Power(PowerAction::Poweroff)
        }
        "reboot" => {
            max(0)?;
            Request::Power(PowerAction::Reboot)
        }
        "halt" => {
            max(0)?;
            Request::Power(PowerAction::Halt)
        }
        other => return Err(format!("unknown command: {other}")),
    })
}

/// A handle of the process (a pidfd), to pass to archon.
fn open_handle(pid: i32) -> Result<archon::platform::ProcHandle, String> {
    archon::platform::ProcHandle::open(pid).map_err(|e| {
        if e.kind() == std::io::ErrorKind::Unsupported {
            format!("cannot open a handle for pid {pid}: {e}")
        } else {
            format!("pidfd_open {pid}: {e}")
        }
    })
}

impl Ctl {
    fn execute(&self, cmd: &str, req: &Request, monitor_pid: Option<i32>) -> Result<i32, String> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is archon running there? --socket PATH or ARCHON_SOCKET names another"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "archon's socket is not open to you: see --socket-mode and --allow in archon(8)"
                }
                _ => "see --socket and ARCHON_SOCKET",
            };
            format!("cannot connect to {}: {e} ({hint})", self.socket.display())
        })?;
        // A reply that should come at once but does not (not an archon on
        // the other end, or one that is stuck) ends in an error, not a
        // wait forever; run, stop ID, reload and subscribe wait as long as
        // they take.
        let waits = matches!(
            req,
            Request::Run(_)
                | Request::Stop { .. }
                | Request::Subscribe
                | Request::Reload
                | Request::Logs { follow: true, .. }
        );
        if !waits {
            let _ = stream.set_read_timeout(Some(self.timeout));
        }
        let wire = req.encode();
        let handle = match req {
            Request::MonitorFd => Some(open_handle(monitor_pid.ok_or("monitor needs a pid")?)?),
            _ => None,
        };
        let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        let fds: Vec<BorrowedFd> = match (req, &handle) {
            (Request::Run(_), _) => vec![stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
            (_, Some(h)) => vec![h.as_fd()],
            _ => Vec::new(),
        };
        let bytes = wire.as_bytes();
        let mut sent = archon::platform::send_with_fds(stream.as_fd(), bytes, &fds)
            .map_err(|e| format!("send: {e}"))?;
        while sent < bytes.len() {
            sent += archon::platform::send_with_fds(stream.as_fd(), &bytes[sent..], &[])
                .map_err(|e| format!("send: {e}"))?;
        }
        drop(handle);
        let mut reader = BufReader::new(&stream);
        let mut rows = Vec::new();
        let mut other: Vec<Vec<String>> = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).map_err(|e| {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    format!(
                        "no reply from {} within {:?} (is it an archon?)",
                        self.socket.display(),
                        self.timeout
                    )
                } else {
                    format!("read: {e}")
                }
            })?;
            if n == 0 {
                return Err("archon closed the connection without a reply".into());
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if self.csv {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&line);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }
            let reply = ReplyLine::decode(&line)?;
            match reply {
                ReplyLine::Process(row) => rows.push(row),
                // Printed as they come: a follower's lines have no end.
                ReplyLine::Row(f) if f[0] == "Log" && f.len() == 6 => {
                    if !self.csv {
                        event_line(&format!("{}.{}| {}", f[2], f[3], f[5]));
                    }
                }
                ReplyLine::Row(f) if f[0] == "ServiceEvent" => {
                    if !self.csv {
                        event_line(&format!(
                            "{} service={}.{} state={} pid={}",
                            f.get(1).map_or("", |s| s),
                            f.get(2).map_or("", |s| s),
                            f.get(3).map_or("", |s| s),
                            f.get(4).map_or("", |s| s),
                            f.get(5).filter(|p| !p.is_empty()).map_or("-", |s| s)
                        ));
                    }
                }
                ReplyLine::Row(f) => other.push(f),
                ReplyLine::Event(ev) => {
                    if !self.csv {
                        event_line(&format!(
                            "{} id={} kind={} pid={} state={} status={}",
                            ev.time, ev.id, ev.kind, ev.pid, ev.state, ev.status
                        ));
                    }
                }
                ReplyLine::Error(kind, msg) => {
                    if !self.csv {
                        eprintln!("archonctl: {kind}: {msg}");
                    }
                    return Ok(if cmd == "run" { RUN_FAILED } else { 1 });
                }
                ReplyLine::ExitStatus(code, _) => return Ok(code),
                ReplyLine::Ok(fields) => {
                    if !self.csv {
                        // One write for the whole table (stdout is line
                        // buffered: println! would cost a syscall a row).
                        let mut out = String::new();
                        let shown = if matches!(req, Request::Tree) {
                            "tree"
                        } else {
                            cmd
                        };
                        self.print_ok(&mut out, shown, &fields, &rows);
                        print_rows(&mut out, &other, &rows);
                        let mut stdout = std::io::stdout().lock();
                        stdout
                            .write_all(out.as_bytes())
                            .and_then(|()| stdout.flush())
                            .map_err(|e| format!("cannot write the reply: {e}"))?;
                    }
                    if cmd == "subscribe" || matches!(req, Request::Logs { follow: true, .. }) {
                        continue;
                    }
                    return Ok(0);
                }
            }
        }
    }

    fn print_ok(
        &self,
        out: &mut String,
        cmd: &str,
        fields: &[String],
        rows: &[archon::protocol::ProcessRow],
    ) {
        match cmd {
            // Service processes appear in the service table instead.
            // An empty table still shows its header.
            "status" if !rows.is_empty() && rows.iter().all(|r| r.kind == "service") => {}
            "status" => {
                outln!(
                    out,
                    "{:>5} {:<8} {:>8} {:<9} {:>7}  COMMAND",
                    "ID",
                    "KIND",
                    "PID",
                    "STATE",
                    "STATUS"
                );
                for r in rows.iter().filter(|r| r.kind != "service") {
                    outln!(
                        out,
                        "{:>5} {:<8} {:>8} {:<9} {:>7}  {}",
                        r.id,
                        r.kind,
                        r.pid,
                        r.state,
                        if r.status.is_empty() { "-" } else { &r.status },
                        r.argv.join(" ")
                    );
                }
            }
            "version" => outln!(out, "{}", fields.join(" ")),
            // `stop ID` waits and says how it ended; `stop SERVICE` is
            // asynchronous (Ok alone): nothing to say, as for start.
            "stop" if fields.is_empty() => {}
            "stop" => outln!(
                out,
                "stopped {} status {}",
                fields.first().map_or("", |s| s),
                fields.get(1).filter(|s| !s.is_empty()).map_or("-", |s| s)
            ),
            "subscribe" | "logs" | "signal" | "config" | "restart" | "scale" | "depend"
            | "undepend" => {}
            "reload" => {
                for f in fields {
                    if let Some((k, v)) = f.split_once('=') {
                        if !v.is_empty() && k != "unchanged" {
                            outln!(out, "{k}: {v}");
                        }
                    }
                }
            }
            _ => {
                if let Some(id) = fields.first() {
                    outln!(out, "{id}");
                }
            }
        }
    }
}

/// Service rows as a table a person reads at a glance; settings as
/// `service key value`. UPTIME is the process's (from its `Process` row
/// when the reply has one), not the time since the last state change; the
/// name column is as wide as the longest name.
/// `Tree` rows as an indented table: the command indented by depth.
fn print_tree(out: &mut String, rows: &[Vec<String>]) {
    let tree: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[0] == "Tree" && r.len() >= 6)
        .collect();
    if tree.is_empty() {
        return;
    }
    let width = tree.iter().map(|r| r[4].len()).max().unwrap_or(0).max(5);
    outln!(
        out,
        "{:<7} {:<7} S  {:<width$}  COMMAND",
        "PID",
        "PPID",
        "OWNER"
    );
    for r in tree {
        let depth: usize = r[1].parse().unwrap_or(0);
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}\u{2514} ", "  ".repeat(depth - 1))
        };
        outln!(
            out,
            "{:<7} {:<7} {}  {:<width$}  {indent}{}",
            r[2],
            r[3],
            r[5],
            r[4],
            r[6..].join(" ")
        );
    }
}

fn print_rows(out: &mut String, rows: &[Vec<String>], procs: &[archon::protocol::ProcessRow]) {
    print_tree(out, rows);
    top::print_stats(out, rows);
    let services: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "Service").collect();
    if !services.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let started: std::collections::HashMap<String, f64> = procs
            .iter()
            .filter(|p| p.kind == "service")
            .filter_map(|p| Some((p.pid.to_string(), p.started.parse().ok()?)))
            .collect();
        let width = services
            .iter()
            .map(|r| r.get(1).map_or(0, |n| n.len()) + 6)
            .max()
            .unwrap_or(0)
            .clamp(20, 80);
        outln!(
            out,
            "{:<width$} {:<10} {:>8} {:>9} {:>8}  LAST EXIT",
            "SERVICE",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS"
        );
        for r in services {
            let get = |i: usize| r.get(i).map_or("", |s| s.as_str());
            let name = if get(2) == "0" && !services_has_pool(rows, get(1)) {
                get(1).to_string()
            } else {
                format!("{}.{}", get(1), get(2))
            };
            let since = started
                .get(get(4))
                .copied()
                .unwrap_or_else(|| get(5).parse::<f64>().unwrap_or(now));
            let state = get(3);
            let uptime = if matches!(state, "running" | "starting" | "unhealthy") {
                human(now - since)
            } else {
                "-".into()
            };
            let mut last = get(9).to_string();
            if state == "backoff" {
                let next = get(8).parse::<f64>().unwrap_or(now);
                last = format!("{last} (retry in {})", human(next - now));
            }
            if matches!(get(11), "open" | "half-open") {
                last = format!("{last} (breaker {})", get(11));
            }
            outln!(
                out,
                "{:<width$} {:<10} {:>8} {:>9} {:>8}  {}",
                name,
                state,
                if get(4).is_empty() { "-" } else { get(4) },
                uptime,
                get(6),
                if last.is_empty() { "-" } else { &last }
            );
        }
    }
    for r in rows.iter().filter(|r| r[0] == "Upstream") {
        let get = |i: usize| r.get(i).map_or("", |s| s.as_str());
        outln!(out, "{} {}.{} {}", get(1), get(2), get(3), get(4));
    }
    for r in rows.iter().filter(|r| r[0] == "Setting") {
        let values: Vec<String> = r.iter().skip(3).map(|v| shell_word(v)).collect();
        outln!(out, "{} {} {}", r[1], r[2], values.join(" "));
    }
}

/// A value as a shell reads it back: as it is when plain, else in single
/// quotes (an argv element with a space stays one word on screen).
fn shell_word(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

fn services_has_pool(rows: &[Vec<String>], name: &str) -> bool {
    rows.iter()
        .filter(|r| r[0] == "Service" && r.get(1).is_some_and(|n| n == name))
        .count()
        > 1
}

fn human(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s < 86400.0 {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else {
        format!(
            "{}d{:02}h",
            (s / 86400.0) as u64,
            ((s % 86400.0) / 3600.0) as u64
        )
    }
}
