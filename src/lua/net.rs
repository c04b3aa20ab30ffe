//! The config's network settings: `ports` (named ports per instance) and
//! `sockets` (sockets archon binds for the service), read from their Lua
//! values. Each list comes out sorted by name, which is the order of the
//! fds passed from 3 on.

use super::config::{int, text};
use crate::services::net::{valid_name, PortBind, PortSpec, SocketKind, SocketSpec};
use mlua::Value;

/// Each `(name, value)` of a table with string keys, sorted by name.
fn named_entries(v: &Value, what: &str) -> Result<Vec<(String, Value)>, String> {
    let Value::Table(t) = v else {
        return Err(format!("expected a table of named {what}"));
    };
    let mut out = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let Some(k) = text(&k).filter(|k| valid_name(k)) else {
            return Err(format!(
                "{what} are named (letters, digits and _, at most 32), as {{ http = ... }}"
            ));
        };
        out.push((k, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn check_keys(t: &mlua::Table, keys: &[&str], at: &str) -> Result<(), String> {
    super::config::known_keys(t, keys).map_err(|e| format!("{at}: {e}"))
}

fn port_number(v: &Value, at: &str) -> Result<Option<u16>, String> {
    match v {
        Value::String(s) if s.to_str().is_ok_and(|s| s == "auto") => Ok(None),
        v => int(v)
            .filter(|p| (1..=65535).contains(p))
            .map(|p| Some(p as u16))
            .ok_or_else(|| format!("{at}: expected \"auto\" or a port from 1 to 65535")),
    }
}

fn ip_address(v: &Value, at: &str) -> Result<String, String> {
    text(v)
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .ok_or_else(|| format!("{at}: expected an IP address such as \"127.0.0.1\" or \"::\""))
}

/// `ports = { http = "auto", admin = 9100, api = { port = "auto",
/// address = "127.0.0.1", bind = "archon" | "service" } }`.
pub(super) fn parse_ports(v: &Value) -> Result<Vec<PortSpec>, String> {
    let mut out = Vec::new();
    for (name, v) in named_entries(v, "ports")? {
        let mut p = PortSpec {
            name: name.clone(),
            port: None,
            address: "0.0.0.0".into(),
            bind: PortBind::Archon,
        };
        match &v {
            Value::Table(t) => {
                check_keys(t, &["port", "address", "bind"], &name)?;
                let get = |k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
                p.port = match get("port") {
                    Value::Nil => None,
                    v => port_number(&v, &name)?,
                };
                if let v @ Value::String(_) = get("address") {
                    p.address = ip_address(&v, &name)?;
                }
                p.bind = match text(&get("bind")).as_deref() {
                    None | Some("archon") => PortBind::Archon,
                    Some("service") => PortBind::Service,
                    Some(o) => {
                        return Err(format!(
                            "{name}: bind is \"archon\" or \"service\", not {o:?}"
                        ))
                    }
                };
            }
            v => p.port = port_number(v, &name)?,
        }
        out.push(p);
    }
    let mut fixed: Vec<(u16, &str)> = out
        .iter()
        .filter_map(|p| Some((p.port?, p.address.as_str())))
        .collect();
    fixed.sort();
    if fixed.windows(2).any(|w| w[0] == w[1]) {
        return Err("two ports with the same number and address".into());
    }
    Ok(out)
}

/// `sockets = { web = { tcp = "0.0.0.0:8080", backlog = 128 },
/// dns = { udp = "127.0.0.1:5353" }, ctl = { unix = "/run/x.sock",
/// mode = "0660", user = "www-data", group = "www-data" } }`.
pub(super) fn parse_sockets(v: &Value) -> Result<Vec<SocketSpec>, String> {
    let mut out = Vec::new();
    for (name, v) in named_entries(v, "sockets")? {
        let Value::Table(t) = &v else {
            return Err(format!(
                "{name}: expected {{ tcp = ADDR }}, {{ udp = ADDR }} or {{ unix = PATH }}"
            ));
        };
        check_keys(
            t,
            &["tcp", "udp", "unix", "backlog", "mode", "user", "group"],
            &name,
        )?;
        let get = |k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
        let addr = |k: &str| -> Result<Option<String>, String> {
            match text(&get(k)) {
                None => Ok(None),
                Some(a) if a.parse::<std::net::SocketAddr>().is_ok() => Ok(Some(a)),
                Some(a) => Err(format!(
                    "{name}: {k} = {a:?} is not an address such as \"127.0.0.1:8080\" or \"[::]:53\""
                )),
            }
        };
        let kinds = [addr("tcp")?, addr("udp")?, text(&get("unix"))];
        let kind = match kinds {
            [Some(a), None, None] => SocketKind::Tcp(a),
            [None, Some(a), None] => SocketKind::Udp(a),
            [None, None, Some(path)] => {
                if !path.starts_with('/') || path.len() > 100 {
                    return Err(format!(
                        "{name}: unix = {path:?}: an absolute path of at most 100 bytes"
                    ));
                }
                let mode = match text(&get("mode")) {
                    None => None,
                    Some(m) => Some(
                        u32::from_str_radix(m.trim_start_matches("0o"), 8)
                            .ok()
                            .filter(|m| *m <= 0o777)
                            .ok_or_else(|| format!("{name}: mode {m:?}: octal, as \"0660\""))?,
                    ),
                };
                let uid = match text(&get("user")) {
                    None => None,
                    Some(u) => Some(crate::platform::lookup_user(&u)?.0),
                };
                let gid = match text(&get("group")) {
                    None => None,
                    Some(g) => Some(crate::platform::lookup_group(&g)?),
                };
                SocketKind::Unix {
                    path,
                    mode,
                    uid,
                    gid,
                }
            }
            _ => {
                return Err(format!(
                    "{name}: exactly one of tcp = ADDR, udp = ADDR or unix = PATH"
                ))
            }
        };
        if !matches!(kind, SocketKind::Unix { .. })
            && [get("mode"), get("user"), get("group")]
                .iter()
                .any(|v| !v.is_nil())
        {
            return Err(format!("{name}: mode, user and group are for unix sockets"));
        }
        let backlog = match get("backlog") {
            Value::Nil => 128,
            v => int(&v)
                .filter(|b| (1..=65535).contains(b))
                .ok_or_else(|| format!("{name}: backlog from 1 to 65535"))? as u32,
        };
        out.push(SocketSpec {
            name,
            kind,
            backlog,
        });
    }
    Ok(out)
}
