//! The config's probe settings: `startup`, `readiness`, `liveness`
//! (`{ exec = {...} | tcp = PORT | http = PATH, ... }`) and `breaker`, read
//! from their Lua values with Kubernetes' defaults.

use super::config::{int, seconds, text};
use crate::services::net::PortSpec;
use crate::services::probe::{Breaker, PortRef, Probe, ProbeKind, Which};
use mlua::Value;

const KEYS: [&str; 14] = [
    "exec",
    "tcp",
    "http",
    "port",
    "host",
    "status",
    "body",
    "interval",
    "failing_interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "initial_delay",
    "period",
];

fn port_ref(v: &Value, ports: &[PortSpec]) -> Result<PortRef, String> {
    if let Some(n) = int(v) {
        return u16::try_from(n)
            .ok()
            .filter(|p| *p > 0)
            .map(PortRef::Number)
            .ok_or_else(|| "a port from 1 to 65535".to_string());
    }
    let name = text(v).ok_or("a port: one of `ports` by name, or a number")?;
    if !ports.iter().any(|p| p.name == name) {
        return Err(format!("no port named {name:?} in this service's ports"));
    }
    Ok(PortRef::Named(name))
}

/// The service's first port by name, for an `http` probe without `port`.
fn default_port(ports: &[PortSpec]) -> Result<PortRef, String> {
    ports
        .first()
        .map(|p| PortRef::Named(p.name.clone()))
        .ok_or_else(|| "port: needed when the service has no ports".to_string())
}

/// One probe setting; `ports` are the service's (read before).
pub(super) fn parse_probe(v: &Value, which: Which, ports: &[PortSpec]) -> Result<Probe, String> {
    let Value::Table(t) = v else {
        return Err("expected { exec = {...} } or { tcp = PORT } or { http = PATH, ... }".into());
    };
    super::config::known_keys(t, &KEYS)?;
    let get = |k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
    let host = match get("host") {
        Value::Nil => "127.0.0.1".to_string(),
        v => text(&v)
            .filter(|h| h.parse::<std::net::IpAddr>().is_ok())
            .ok_or("host: an IP address such as \"127.0.0.1\"")?,
    };
    let kind = match (get("exec"), get("tcp"), get("http")) {
        (Value::Table(argv), Value::Nil, Value::Nil) => {
            let mut a = Vec::new();
            for x in argv.sequence_values::<Value>() {
                a.push(text(&x.map_err(|e| e.to_string())?).ok_or("exec: a list of strings")?);
            }
            if a.is_empty() {
                return Err("exec: an empty command".into());
            }
            ProbeKind::Exec(a)
        }
        (
            Value::Nil,
            port @ (Value::String(_) | Value::Integer(_) | Value::Number(_)),
            Value::Nil,
        ) => ProbeKind::Tcp {
            port: port_ref(&port, ports).map_err(|e| format!("tcp: {e}"))?,
            host,
        },
        (Value::Nil, Value::Nil, Value::String(p)) => {
            let path = p.to_str().map_err(|e| e.to_string())?.to_string();
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(format!("http: {path:?}: a path from /, without spaces"));
            }
            let port = match get("port") {
                Value::Nil => default_port(ports)?,
                v => port_ref(&v, ports).map_err(|e| format!("port: {e}"))?,
            };
            let status = match get("status") {
                Value::Nil => (200, 399),
                Value::Table(r) => {
                    let lo = r.raw_get::<Value>(1).ok().and_then(|v| int(&v));
                    let hi = r.raw_get::<Value>(2).ok().and_then(|v| int(&v));
                    match (lo, hi) {
                        (Some(lo), Some(hi))
                            if (100..=599).contains(&lo) && (lo..=599).contains(&hi) =>
                        {
                            (lo as u16, hi as u16)
                        }
                        _ => return Err("status: a code or { LO, HI } from 100 to 599".into()),
                    }
                }
                v => match int(&v) {
                    Some(c) if (100..=599).contains(&c) => (c as u16, c as u16),
                    _ => return Err("status: a code or { LO, HI } from 100 to 599".into()),
                },
            };
            let body = match get("body") {
                Value::Nil => None,
                v => Some(
                    text(&v)
                        .filter(|b| !b.is_empty() && b.len() <= 1024)
                        .ok_or("body: text to find, 1 to 1024 bytes")?,
                ),
            };
            ProbeKind::Http {
                path,
                port,
                host,
                status,
                body,
            }
        }
        _ => return Err("exactly one of exec = {...}, tcp = PORT or http = PATH".into()),
    };
    if !matches!(kind, ProbeKind::Http { .. })
        && ["port", "status", "body"].iter().any(|k| !get(k).is_nil())
    {
        return Err("port, status and body are for http probes".into());
    }
    let mut p = Probe::new(kind);
    let secs = |k: &str, min: u64| -> Result<Option<u64>, String> {
        match get(k) {
            Value::Nil => Ok(None),
            v => seconds(&v)
                .filter(|ms| *ms >= min)
                .map(Some)
                .ok_or_else(|| format!("{k}: seconds (at least {}.{:03})", min / 1000, min % 1000)),
        }
    };
    // `period` is Kubernetes' periodSeconds, taken as `interval`.
    if let Some(i) = secs("interval", 50)?.or(secs("period", 50)?) {
        p.interval_ms = i;
    }
    p.failing_interval_ms = secs("failing_interval", 50)?.unwrap_or(p.interval_ms);
    if let Some(t) = secs("timeout", 10)? {
        p.timeout_ms = t;
    }
    if let Some(d) = secs("initial_delay", 0)? {
        p.initial_delay_ms = d;
    }
    let count = |k: &str| -> Result<Option<u32>, String> {
        match get(k) {
            Value::Nil => Ok(None),
            v => int(&v)
                .filter(|n| (1..=10_000).contains(n))
                .map(|n| Some(n as u32))
                .ok_or_else(|| format!("{k}: from 1 to 10000")),
        }
    };
    if let Some(f) = count("failure_threshold")? {
        p.failure_threshold = f;
    }
    if let Some(s) = count("success_threshold")? {
        if s != 1 && which != Which::Readiness {
            return Err(
                "success_threshold: 1 for startup and liveness probes (as Kubernetes)".into(),
            );
        }
        p.success_threshold = s;
    }
    Ok(p)
}

/// `breaker = { failures = N, cooldown = S }` or `false`.
pub(super) fn parse_breaker(v: &Value) -> Result<Option<Breaker>, String> {
    match v {
        Value::Boolean(false) => Ok(None),
        Value::Boolean(true) => Ok(Some(Breaker::default())),
        Value::Table(t) => {
            let mut b = Breaker::default();
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| e.to_string())?;
                match text(&k).as_deref() {
                    Some("failures") => {
                        b.failures = int(&v)
                            .filter(|n| (1..=1000).contains(n))
                            .ok_or("failures: from 1 to 1000")?
                            as u32
                    }
                    Some("cooldown") => {
                        b.cooldown_ms = seconds(&v)
                            .filter(|ms| *ms >= 100)
                            .ok_or("cooldown: seconds (at least 0.1)")?
                    }
                    _ => {
                        return Err("expected { failures = N, cooldown = SECONDS } or false".into())
                    }
                }
            }
            Ok(Some(b))
        }
        _ => Err("expected { failures = N, cooldown = SECONDS } or false".into()),
    }
}
