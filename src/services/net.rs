//! What a service declares about the network: named ports each instance
//! gets (`ports`) and sockets archon binds for the service (`sockets`),
//! both handed over with systemd's socket-passing protocol. Plain data;
//! the binding is `event_loop/ports.rs`.

/// `ports = { http = "auto" | N | { port = ..., address = ..., bind = ... } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `[A-Za-z0-9_]`, at most 32: it names `PORT_<NAME>` and an fd in
    /// `LISTEN_FDNAMES`.
    pub name: String,
    /// A fixed port, or `None`: one from archon's range (`--ports`).
    pub port: Option<u16>,
    /// Where it is bound (an IP address; `0.0.0.0` by default).
    pub address: String,
    pub bind: PortBind,
}

/// Who binds an instance's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortBind {
    /// archon, which keeps the listening socket for the instance's life
    /// and passes it (`LISTEN_FDS`): connections wait in its backlog while
    /// the instance restarts.
    Archon,
    /// The service itself: archon holds the port while the instance is not
    /// running and lets it go just before each spawn (another process can
    /// take it in that window; documented).
    Service,
}

/// `sockets = { name = { tcp = ADDR } | { udp = ADDR } | { unix = PATH, ... } }`:
/// bound once for the service and passed to every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub name: String,
    pub kind: SocketKind,
    /// listen(2)'s backlog for a stream socket.
    pub backlog: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketKind {
    Tcp(String),
    Udp(String),
    Unix {
        path: String,
        /// File mode of the socket (e.g. 0o660).
        mode: Option<u32>,
        /// Owner and group, resolved when the config is loaded.
        uid: Option<u32>,
        gid: Option<u32>,
    },
}

impl SocketKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SocketKind::Tcp(_) => "tcp",
            SocketKind::Udp(_) => "udp",
            SocketKind::Unix { .. } => "unix",
        }
    }

    /// The address or path.
    pub fn target(&self) -> &str {
        match self {
            SocketKind::Tcp(a) | SocketKind::Udp(a) => a,
            SocketKind::Unix { path, .. } => path,
        }
    }
}

/// A port or socket name: it becomes part of an environment variable's
/// name and an entry of `LISTEN_FDNAMES` (which `:` separates), and does
/// not start with a digit (a probe's `port` is a name or a number).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A DNS host name (letters, digits, `-`, dots between labels; a leading
/// `*.` for a wildcard is not taken).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `PORT_<NAME>`: the name upper-cased.
pub fn port_var(name: &str) -> String {
    format!("PORT_{}", name.to_ascii_uppercase())
}

/// `host:port` for an address that may be IPv6 (`[::1]:80`).
pub fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// The first and last port of archon's range for `"auto"` ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 30000,
            last: 31000,
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    /// `LO-HI` (1 to 65535, LO <= HI).
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("expected LO-HI, not {s:?}"))?;
        let p = |x: &str| {
            x.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{x:?} is not a port (1-65535)"))
        };
        let (first, last) = (p(a)?, p(b)?);
        if first > last {
            return Err(format!("{first} is above {last}"));
        }
        Ok(PortRange { first, last })
    }
}

/// The `port` and `socket` records of a spec (`services::wire`).
pub(super) fn encode(s: &super::spec::ServiceSpec, out: &mut Vec<crate::protocol::worker::Record>) {
    use super::wire::{b, rec};
    for p in &s.ports {
        out.push(rec(
            "port",
            [
                b(&p.name),
                b(p.port.map_or("auto".to_string(), |n| n.to_string())),
                b(&p.address),
                b(match p.bind {
                    PortBind::Archon => "archon",
                    PortBind::Service => "service",
                }),
            ],
        ));
    }
    if !s.hostnames.is_empty() {
        out.push(rec("hostnames", s.hostnames.iter().map(b)));
    }
    if s.drain_ms > 0 {
        out.push(rec("drain", [b(s.drain_ms.to_string())]));
    }
    if s.socket_activated {
        out.push(rec("socket_activated", [b("1")]));
    }
    for k in &s.sockets {
        let mut r = rec(
            "socket",
            [
                b(&k.name),
                b(k.kind.as_str()),
                b(k.kind.target()),
                b(k.backlog.to_string()),
            ],
        );
        if let SocketKind::Unix { mode, uid, gid, .. } = &k.kind {
            let o = |v: Option<u32>| b(v.map(|v| v.to_string()).unwrap_or_default());
            r.extend([o(*mode), o(*uid), o(*gid)]);
        }
        out.push(r);
    }
}

pub(super) fn decode_port(args: &[Vec<u8>]) -> Result<PortSpec, String> {
    use super::wire::{num, text};
    let [name, port, address, bind] = args else {
        return Err("bad port".into());
    };
    let name = text(name)?;
    if !valid_name(&name) {
        return Err(format!("bad port name {name:?}"));
    }
    Ok(PortSpec {
        name,
        port: match port.as_slice() {
            b"auto" => None,
            n => Some(num::<u16>(n)?).filter(|p| *p > 0),
        },
        address: text(address)?,
        bind: match bind.as_slice() {
            b"archon" => PortBind::Archon,
            b"service" => PortBind::Service,
            _ => return Err("bad port bind".into()),
        },
    })
}

pub(super) fn decode_socket(args: &[Vec<u8>]) -> Result<SocketSpec, String> {
    use super::wire::{num, text};
    let opt = |f: &[u8]| -> Result<Option<u32>, String> {
        if f.is_empty() {
            Ok(None)
        } else {
            num(f).map(Some)
        }
    };
    let (name, kind) = match args {
        [name, kind, addr, backlog] if kind.as_slice() != b"unix" => (
            (name, backlog),
            match kind.as_slice() {
                b"tcp" => SocketKind::Tcp(text(addr)?),
                b"udp" => SocketKind::Udp(text(addr)?),
                _ => return Err("bad socket kind".into()),
            },
        ),
        [name, kind, path, backlog, mode, uid, gid] if kind.as_slice() == b"unix" => (
            (name, backlog),
            SocketKind::Unix {
                path: text(path)?,
                mode: opt(mode)?,
                uid: opt(uid)?,
                gid: opt(gid)?,
            },
        ),
        _ => return Err("bad socket".into()),
    };
    let name_s = text(name.0)?;
    if !valid_name(&name_s) {
        return Err(format!("bad socket name {name_s:?}"));
    }
    Ok(SocketSpec {
        name: name_s,
        kind,
        backlog: num(name.1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ranges_and_addresses() {
        assert!(valid_name("http") && valid_name("a_1"));
        assert!(!valid_name("") && !valid_name("a:b") && !valid_name("a-b"));
        assert!(!valid_name("8080"));
        assert!(valid_hostname("api.example.test") && valid_hostname("localhost"));
        assert!(!valid_hostname("a..b") && !valid_hostname("-a.b") && !valid_hostname("a b"));
        assert!(!valid_name(&"x".repeat(33)));
        assert_eq!(port_var("admin_api"), "PORT_ADMIN_API");
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("127.0.0.1", 80), "127.0.0.1:80");
        assert_eq!(
            "100-200".parse::<PortRange>(),
            Ok(PortRange {
                first: 100,
                last: 200
            })
        );
        assert!("200-100".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("10".parse::<PortRange>().is_err());
        assert!("1-70000".parse::<PortRange>().is_err());
    }
}
