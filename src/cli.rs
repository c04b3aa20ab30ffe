//! Command-line options of `archon`, and the default socket path shared with
//! `archonctl`. Pure parsing; no I/O besides reading the environment.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage: archon [OPTIONS] [--config FILE] [--] [CMD [ARGS...]]
       archon --help | --version

With CMD, archon runs it as the main child (entrypoint mode), forwards
signals to it, and exits with its status once it has exited and everything
else is stopped. Without CMD, archon supervises what the socket asks for.

options:
  -s, --socket PATH        control socket (default: $ARCHON_SOCKET, else
                           /run/archon/archon.sock for root)
      --socket-mode OCTAL  mode of the socket file (default 600)
      --no-socket          no control socket
  -l, --log-level LEVEL    error, warn, info, debug, trace or off ($ARCHON_LOG;
                           default info, warn in entrypoint mode: as quiet
                           as tini unless something is wrong)
  -e, --remap-exit CODE    exit 0 when the main command exits CODE
                           (repeatable; tini's -e)
  -p, --parent-death-signal SIGNAL
                           get SIGNAL when archon's parent dies (tini's -p)
      --grace SECONDS      SIGTERM-to-SIGKILL grace period (default 10)
      --allow WHO=GRANTS   let more peers use the socket (repeatable); WHO is
                           user:NAME or group:NAME (names or numbers), GRANTS
                           a comma-separated list of read, control:SERVICE,
                           control:*, run (commands run as the peer) and
                           run-as-root; by default only root and archon's
                           own uid may connect (see archon(8))
      --hook-timeout SECONDS
                           wall-clock limit for one event's hooks; past it
                           the Lua worker is killed and restarted (default 2)
      --config-timeout SECONDS
                           wall-clock limit for evaluating the config
                           (default 10)
      --client-timeout SECONDS
                           a client whose replies wait unread this long is
                           disconnected (default 30)
  -g, --forward-to-group   forward signals to the main child's process group
      --no-subreaper       when not PID 1, do not become a child subreaper
      --nice N             archon's own nice value, -20 to 0 (default -10);
                           children always start at the nice archon was
                           started with
      --metrics ADDR       serve Prometheus/OpenMetrics at http://ADDR/metrics
                           (host:port, :port, or a Unix socket path)
      --ports LO-HI        where a service's auto ports come from
                           (default 30000-31000)
      --monitor PROFILE    sample what every tracked process costs (off,
                           minimal, standard, intensive, daemon); a service's
                           own `monitor` wins; default off (`archonctl top`)
  -c, --config FILE        services to supervise (Lua, see archon-config(5));
                           reloaded on SIGHUP and by `archonctl reload`
      --check              with --config: evaluate the file, report what it
                           declares or every error, and exit (0 or 1)";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub log_level: String,
    /// Main-command exit codes reported as 0 (tini's `-e`).
    pub remap_exit: Vec<i32>,
    /// Signal to get when the parent dies (tini's `-p`).
    pub parent_death_signal: Option<String>,
    pub grace_ms: u64,
    /// Evaluate the config, report, exit (`--check`).
    pub check: bool,
    /// Access rules for peers that are not admins (`access.rs`).
    pub allow: Vec<crate::access::RuleText>,
    /// Wall-clock limits of the Lua worker: one event's hooks, one config
    /// evaluation (`event_loop/worker.rs`).
    pub hook_timeout_ms: u64,
    pub config_timeout_ms: u64,
    /// A client whose queued output makes no progress this long is dropped.
    pub client_timeout_ms: u64,
    /// Serve the control socket (off with `--no-socket`).
    pub use_socket: bool,
    /// The main child's argv (entrypoint mode), empty without one. Kept as
    /// bytes: it is passed to exec exactly as given.
    pub command: Vec<OsString>,
    /// Forward signals to the main child's whole process group.
    pub forward_group: bool,
    /// Become a child subreaper when not PID 1.
    pub subreaper: bool,
    /// The services config (Lua).
    pub config: Option<PathBuf>,
    /// archon's own nice value (-20..=0); children are reset to the one
    /// archon was started with. See `platform::prioritise`.
    pub nice: i32,
    /// The monitoring profile of every tracked process without one of its
    /// own (`--monitor NAME`); none by default: archon samples nothing.
    pub monitor: Option<crate::monitor::Profile>,
    /// Serve `GET /metrics` here (`--metrics host:port` or a socket path).
    pub metrics: Option<String>,
    /// Where `"auto"` ports come from (`--ports LO-HI`).
    pub ports: crate::services::net::PortRange,
}

/// `$ARCHON_SOCKET`, else `/run/archon/archon.sock` for root, else
/// `$XDG_RUNTIME_DIR/archon.sock`, else `/tmp/archon-UID/archon.sock`.
pub fn default_socket(uid: u32) -> PathBuf {
    if let Some(p) = std::env::var_os("ARCHON_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if uid == 0 {
        return PathBuf::from("/run/archon/archon.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("archon.sock"),
        None => private_runtime_dir(uid).join("archon.sock"),
    }
}

/// A non-root archon's socket directory when there is no
/// `XDG_RUNTIME_DIR`: archon creates it with mode 0700 and refuses one that
/// someone else owns or that others may enter (`listener::bind`).
pub fn private_runtime_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/archon-{uid}"))
}

pub enum Parsed {
    Run(Box<Options>),
    Help,
    Version,
}

pub fn parse_seconds(s: &str) -> Option<u64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && (0.0..=86400.0).contains(&v)).then(|| (v * 1000.0).round() as u64)
}

pub fn parse(args: &[OsString], uid: u32) -> Result<Parsed, String> {
    let mut opts = Options {
        socket: default_socket(uid),
        socket_mode: 0o600,
        log_level: String::new(),
        remap_exit: Vec::new(),
        parent_death_signal: None,
        grace_ms: 10_000,
        client_timeout_ms: 30_000,
        hook_timeout_ms: 2_000,
        config_timeout_ms: 10_000,
        allow: Vec::new(),
        check: false,
        use_socket: true,
        command: Vec::new(),
        forward_group: false,
        subreaper: true,
        config: None,
        nice: -10,
        monitor: None,
        metrics: None,
        ports: Default::default(),
    };
    let mut it = args.iter();
    while let Some(raw) = it.next() {
        if raw == "--" {
            opts.command = it.cloned().collect();
            if opts.command.is_empty() {
                return Err("no command after --".into());
            }
            break;
        }
        let arg = match raw.to_str() {
            Some(a) if a.starts_with('-') && a != "-" => a,
            _ => {
                opts.command = std::iter::once(raw).chain(it).cloned().collect();
                break;
            }
        };
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().and_then(|v| v.to_str()).map(String::from))
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-s" | "--socket" => opts.socket = PathBuf::from(value("--socket")?),
            "--socket-mode" => {
                let v = value("--socket-mode")?;
                opts.socket_mode = u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| format!("bad socket mode: {v}"))?;
            }
            "-l" | "--log-level" => {
                let v = value("--log-level")?;
                if !["error", "warn", "info", "debug", "trace", "off"].contains(&v.as_str()) {
                    return Err(format!("bad log level: {v}"));
                }
                opts.log_level = v;
            }
            "--grace" => {
                let v = value("--grace")?;
                opts.grace_ms =
                    parse_seconds(&v).ok_or_else(|| format!("bad grace period: {v}"))?;
            }
            "--allow" => opts
                .allow
                .push(crate::access::parse_rule(&value("--allow")?)?),
            "--hook-timeout" => {
                let v = value("--hook-timeout")?;
                opts.hook_timeout_ms = parse_seconds(&v)
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| format!("bad hook timeout: {v}"))?;
            }
            "--config-timeout" => {
                let v = value("--config-timeout")?;
                opts.config_timeout_ms = parse_seconds(&v)
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| format!("bad config timeout: {v}"))?;
            }
            "--client-timeout" => {
                let v = value("--client-timeout")?;
                opts.client_timeout_ms = parse_seconds(&v)
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| format!("bad client timeout: {v}"))?;
            }
            "-e" | "--remap-exit" => {
                let v = value("--remap-exit")?;
                opts.remap_exit.push(
                    v.parse()
                        .ok()
                        .filter(|c| (0..=255).contains(c))
                        .ok_or_else(|| format!("bad exit code (0-255): {v}"))?,
                );
            }
            "-p" | "--parent-death-signal" => {
                opts.parent_death_signal = Some(value("--parent-death-signal")?)
            }
            "--no-socket" => opts.use_socket = false,
            "--check" => opts.check = true,
            "-c" | "--config" => opts.config = Some(PathBuf::from(value("--config")?)),
            "-g" | "--forward-to-group" => opts.forward_group = true,
            "--no-subreaper" => opts.subreaper = false,
            "--metrics" => opts.metrics = Some(value("--metrics")?),
            "--ports" => {
                opts.ports = value("--ports")?
                    .parse()
                    .map_err(|e| format!("--ports: {e}"))?
            }
            "--monitor" => {
                let v = value("--monitor")?;
                opts.monitor = crate::monitor::Profile::named(&v)?;
            }
            "--nice" => {
                let v = value("--nice")?;
                opts.nice = v
                    .parse()
                    .ok()
                    .filter(|n| (-20..=0).contains(n))
                    .ok_or_else(|| format!("bad nice value (-20 to 0): {v}"))?;
            }
            other => return Err(format!("unknown option: {other}")),
        }
    }
    // Entrypoint mode is quiet by default, as tini: only what is wrong.
    if opts.log_level.is_empty() {
        opts.log_level = std::env::var("ARCHON_LOG").unwrap_or_else(|_| {
            if opts.command.is_empty() {
                "info"
            } else {
                "warn"
            }
            .into()
        });
    }
    if opts.check && opts.config.is_none() {
        return Err("--check needs --config FILE".into());
    }
    if opts.command.is_empty() && !opts.use_socket && opts.config.is_none() {
        return Err("--no-socket needs a command: nothing would be left to do".into());
    }
    Ok(Parsed::Run(Box::new(opts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn options() {
        let Ok(Parsed::Run(o)) = parse(
            &a(&["--socket", "/x", "--socket-mode=660", "--grace", "1.5"]),
            0,
        ) else {
            panic!("parse failed")
        };
        assert_eq!(o.socket, PathBuf::from("/x"));
        assert_eq!(o.socket_mode, 0o660);
        assert_eq!(o.grace_ms, 1500);
        assert!(parse(&a(&["--bogus"]), 0).is_err());
        assert!(parse(&a(&["--socket"]), 0).is_err());
        assert!(parse(&a(&["--socket-mode", "999"]), 0).is_err());
        assert!(o.command.is_empty() && o.use_socket && o.subreaper);
        assert_eq!(o.nice, -10);
        let nice = |v: &[&str]| match parse(&a(v), 0) {
            Ok(Parsed::Run(o)) => Some(o.nice),
            _ => None,
        };
        assert_eq!(nice(&["--nice", "-5"]), Some(-5));
        assert_eq!(nice(&["--nice=0"]), Some(0));
        assert_eq!(nice(&["--nice", "5"]), None);
        assert_eq!(nice(&["--nice", "-21"]), None);
        assert_eq!(nice(&["--nice", "x"]), None);
    }

    #[test]
    fn entrypoint_command() {
        let cmd = |v: &[&str]| match parse(&a(v), 0) {
            Ok(Parsed::Run(o)) => (o.command, o.forward_group, o.subreaper),
            _ => panic!("parse failed: {v:?}"),
        };
        assert_eq!(cmd(&["--", "app", "-x"]).0, a(&["app", "-x"]));
        // Options after the command belong to it.
        assert_eq!(
            cmd(&["-g", "app", "--grace", "1"]),
            (a(&["app", "--grace", "1"]), true, true)
        );
        assert!(!cmd(&["--no-subreaper", "--", "--weird"]).2);
        assert_eq!(cmd(&["--", "--weird"]).0, a(&["--weird"]));
        assert!(parse(&a(&["--"]), 0).is_err());
        assert!(parse(&a(&["--no-socket"]), 0).is_err());
    }
}
