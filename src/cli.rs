//! Command-line options of `archon`, and the default socket path shared with
//! `archonctl`. Pure parsing; no I/O besides reading the environment.

use std::path::PathBuf;

pub const USAGE: &str = "usage: archon [--socket PATH] [--socket-mode OCTAL] [--log-level LEVEL] [--grace SECONDS]\n       archon --help | --version";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub log_level: String,
    pub grace_ms: u64,
}

/// `$ARCHON_SOCKET`, else `/run/archon/archon.sock` for root, else
/// `$XDG_RUNTIME_DIR/archon.sock` (or `/tmp/archon-UID/archon.sock`).
pub fn default_socket(uid: u32) -> PathBuf {
    if let Some(p) = std::env::var_os("ARCHON_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if uid == 0 {
        return PathBuf::from("/run/archon/archon.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("archon.sock"),
        None => PathBuf::from(format!("/tmp/archon-{uid}/archon.sock")),
    }
}

pub enum Parsed {
    Run(Options),
    Help,
    Version,
}

pub fn parse_seconds(s: &str) -> Option<u64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && (0.0..=86400.0).contains(&v)).then(|| (v * 1000.0).round() as u64)
}

pub fn parse(args: &[String], uid: u32) -> Result<Parsed, String> {
    let mut opts = Options {
        socket: default_socket(uid),
        socket_mode: 0o600,
        log_level: std::env::var("ARCHON_LOG").unwrap_or_else(|_| "info".into()),
        grace_ms: 10_000,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
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
            other => return Err(format!("unknown option: {other}")),
        }
    }
    Ok(Parsed::Run(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
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
    }
}
