//! The config's resource settings: `monitor` (a sampling profile) and
//! `limits` (what an instance may use before archon acts), read from their
//! Lua values. Split from `config.rs`, which reads the rest of a service.

use super::config::{int, number, seconds, size, text};
use mlua::Value;

/// `limits = { memory = "512M", measure = "rss" | "pss", cpu = 90,
/// runtime = 3600, sustain = 5, action = "restart" | "stop" | "event" }`:
/// each limit optional, at least one; restart by default.
pub(super) fn parse_limits(v: &Value) -> Result<crate::services::spec::Limits, String> {
    use crate::services::spec::{LimitAction, Limits, Measure};
    let Value::Table(t) = v else {
        return Err("expected a table { memory = ..., cpu = ..., runtime = ... }".into());
    };
    const KEYS: [&str; 6] = ["memory", "measure", "cpu", "runtime", "sustain", "action"];
    super::config::known_keys(t, &KEYS)?;
    let get = |k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
    let memory = match get("memory") {
        Value::Nil => None,
        v => Some(
            size(&v)
                .filter(|m| *m >= 4096)
                .ok_or("memory: expected bytes (a number, or \"512M\"; at least 4K)")?,
        ),
    };
    let measure = match text(&get("measure")).as_deref() {
        None | Some("rss") => Measure::Rss,
        Some("pss") => Measure::Pss,
        Some(o) => return Err(format!("measure: \"rss\" or \"pss\", not {o:?}")),
    };
    let cpu = match get("cpu") {
        Value::Nil => None,
        v => Some(
            number(&v)
                .filter(|c| *c > 0.0 && *c <= 100_000.0)
                .ok_or("cpu: expected a percent of one CPU (above 0)")?,
        ),
    };
    let runtime_ms = match get("runtime") {
        Value::Nil => None,
        v => Some(
            seconds(&v)
                .filter(|ms| *ms >= 100)
                .ok_or("runtime: expected seconds (0.1 to 604800)")?,
        ),
    };
    let sustain_ms = match get("sustain") {
        Value::Nil => 0,
        v => seconds(&v).ok_or("sustain: expected seconds (0 to 604800)")?,
    };
    let action = match text(&get("action")).as_deref() {
        None | Some("restart") => LimitAction::Restart,
        Some("stop") => LimitAction::Stop,
        Some("event") => LimitAction::Event,
        Some(o) => {
            return Err(format!(
                "action: \"restart\", \"stop\" or \"event\", not {o:?}"
            ))
        }
    };
    if memory.is_none() && cpu.is_none() && runtime_ms.is_none() {
        return Err("expected at least one of memory, cpu, runtime".into());
    }
    Ok(Limits {
        memory,
        measure,
        cpu,
        runtime_ms,
        sustain_ms,
        action,
    })
}

/// `monitor = "standard"` (a profile's name, or "off"), or `{ profile =
/// NAME, interval = s, collect = "all" | "cpu,memory", history = n, pss =
/// bool }` (each optional; the base is `standard`).
pub(super) fn parse_monitor(v: &Value) -> Result<crate::services::spec::Monitor, String> {
    use crate::monitor::Profile;
    use crate::services::spec::Monitor;
    let to = |p: Option<Profile>| p.map_or(Monitor::Off, Monitor::Profile);
    match v {
        Value::String(_) => {
            let name = text(v).ok_or("expected a profile name")?;
            Profile::named(&name).map(to)
        }
        Value::Table(t) => {
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, _) = pair.map_err(|e| e.to_string())?;
                let k = text(&k).unwrap_or_default();
                if !["profile", "interval", "collect", "history", "pss"].contains(&k.as_str()) {
                    return Err(format!(
                        "unknown key {k:?} (profile, interval, collect, history, pss)"
                    ));
                }
            }
            let get = |k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
            let opt_text = |k: &str| match get(k) {
                Value::Nil => Ok(None),
                v => text(&v).map(Some).ok_or(format!("{k}: expected a string")),
            };
            let interval = match get("interval") {
                Value::Nil => None,
                v => Some(seconds(&v).ok_or("interval: expected seconds")?),
            };
            let history = match get("history") {
                Value::Nil => None,
                v => Some(
                    int(&v)
                        .filter(|n| *n >= 0)
                        .ok_or("history: expected a whole number")? as u64,
                ),
            };
            let pss = match get("pss") {
                Value::Nil => None,
                Value::Boolean(b) => Some(b),
                _ => return Err("pss: expected true or false".into()),
            };
            let base = opt_text("profile")?;
            let collect = opt_text("collect")?;
            Profile::custom(base.as_deref(), interval, collect.as_deref(), history, pss).map(to)
        }
        _ => Err("expected a profile name or a table".into()),
    }
}
