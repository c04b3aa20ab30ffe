//! Ports and sockets of services: each instance's named ports (fixed, or
//! from `--ports` round-robin), verified by binding them and kept bound
//! for the instance's life (stable across its restarts), and each
//! service's `sockets`, bound once and shared by its instances. Both are
//! passed with systemd's protocol: the fds from 3 on, `LISTEN_FDS`,
//! `LISTEN_FDNAMES` and `LISTEN_PID` (set by the child itself), plus
//! `PORT` (the first port by name) and `PORT_<NAME>`.

use crate::platform::{self, BindSpec};
use crate::services::net::{port_var, PortBind, PortRange, PortSpec, SocketKind, SocketSpec};
use crate::services::spec::ServiceSpec;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// One instance's port: its number, and the listening socket archon holds
/// (none for a `bind = "service"` port while its process runs).
struct Held {
    spec: PortSpec,
    port: u16,
    fd: Option<OwnedFd>,
}

#[derive(Default)]
pub(super) struct Endpoints {
    range: PortRange,
    /// The last port given out: the next "auto" one is sought after it.
    cursor: Option<u16>,
    /// (service, instance, port name) -> the port. Ordered, so that one
    /// instance's ports are a range (`exited` runs on every exit).
    ports: BTreeMap<(String, u32, String), Held>,
    /// (service, socket name) -> the socket.
    sockets: HashMap<(String, String), Bound>,
}

/// A service's socket as bound. A Unix socket's file goes with it (when
/// the service is removed, its socket declared otherwise, or archon
/// exits), if it is still the node archon made: a file some other
/// process put there since is left alone.
struct Bound {
    spec: SocketSpec,
    fd: OwnedFd,
    /// The Unix socket's path, device and inode.
    node: Option<(std::path::PathBuf, u64, u64)>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some((path, dev, ino)) = &self.node else {
            return;
        };
        let ours =
            std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino);
        if ours {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("cannot remove socket path={} error={e}", path.display());
            }
        }
    }
}

/// What a spawn passes: environment variables and the fds, in order (the
/// first becomes 3).
#[derive(Debug, Default)]
pub(super) struct Passed {
    pub env: Vec<(String, String)>,
    pub fds: Vec<RawFd>,
}

fn bind_port(address: &str, port: u16) -> Result<OwnedFd, String> {
    let ip: std::net::IpAddr = address
        .parse()
        .map_err(|_| format!("bad address {address:?}"))?;
    platform::bind_service_socket(&BindSpec::Tcp((ip, port).into()), 4096)
}

impl Endpoints {
    pub(super) fn new(range: PortRange) -> Self {
        Endpoints {
            range,
            ..Default::default()
        }
    }

    fn taken(&self, address: &str, port: u16) -> bool {
        self.ports
            .values()
            .any(|h| h.port == port && (h.spec.address == address || is_any(&h.spec.address)))
    }

    /// A port for `p`: its fixed number, else the next free one of the
    /// range after the last given out, checked by binding it.
    fn allocate(&mut self, p: &PortSpec) -> Result<(u16, OwnedFd), String> {
        if let Some(n) = p.port {
            return bind_port(&p.address, n).map(|fd| (n, fd));
        }
        let (first, last) = (self.range.first, self.range.last);
        let len = u32::from(last - first) + 1;
        let start = self.cursor.map_or(0, |c| u32::from(c - first) + 1);
        for i in 0..len {
            let port = first + ((start + i) % len) as u16;
            if self.taken(&p.address, port) {
                continue;
            }
            if let Ok(fd) = bind_port(&p.address, port) {
                self.cursor = Some(port);
                return Ok((port, fd));
            }
        }
        Err(format!("no free port in {first}-{last}"))
    }

    /// The ports and sockets instance `index` of `spec` gets, bound now if
    /// they are not yet; a `bind = "service"` port is let go of here, just
    /// before the spawn.
    pub(super) fn prepare(&mut self, spec: &ServiceSpec, index: u32) -> Result<Passed, String> {
        let mut out = Passed::default();
        for p in &spec.ports {
            let key = (spec.name.clone(), index, p.name.clone());
            if self.ports.get(&key).is_some_and(|h| h.spec != *p) {
                self.ports.remove(&key);
            }
            if !self.ports.contains_key(&key) {
                let (port, fd) = self
                    .allocate(p)
                    .map_err(|e| format!("port {}: {e}", p.name))?;
                self.ports.insert(
                    key.clone(),
                    Held {
                        spec: p.clone(),
                        port,
                        fd: Some(fd),
                    },
                );
            }
            let Some(h) = self.ports.get_mut(&key) else {
                continue;
            };
            match p.bind {
                PortBind::Archon => {
                    if h.fd.is_none() {
                        h.fd = Some(
                            bind_port(&p.address, h.port)
                                .map_err(|e| format!("port {}: {e}", p.name))?,
                        );
                    }
                    out.fds.extend(h.fd.as_ref().map(|f| f.as_raw_fd()));
                }
                PortBind::Service => h.fd = None,
            }
            if out.env.is_empty() {
                out.env.push(("PORT".into(), h.port.to_string()));
            }
            out.env.push((port_var(&p.name), h.port.to_string()));
        }
        let socks = self.sockets_of(spec)?;
        out.fds.extend(socks);
        if !out.fds.is_empty() {
            out.env
                .push(("LISTEN_FDS".into(), out.fds.len().to_string()));
            out.env
                .push(("LISTEN_FDNAMES".into(), spec.passed_fd_names().join(":")));
        }
        Ok(out)
    }

    /// The service's sockets, bound now if they are not yet (or were
    /// declared otherwise), in order.
    pub(super) fn sockets_of(&mut self, spec: &ServiceSpec) -> Result<Vec<RawFd>, String> {
        let mut fds = Vec::new();
        for k in &spec.sockets {
            let key = (spec.name.clone(), k.name.clone());
            if self.sockets.get(&key).is_some_and(|b| b.spec != *k) {
                self.sockets.remove(&key);
            }
            if !self.sockets.contains_key(&key) {
                let fd = bind_socket(k).map_err(|e| format!("socket {}: {e}", k.name))?;
                let node = match &k.kind {
                    SocketKind::Unix { path, .. } => {
                        use std::os::unix::fs::MetadataExt;
                        std::fs::symlink_metadata(path)
                            .ok()
                            .map(|m| (path.into(), m.dev(), m.ino()))
                    }
                    _ => None,
                };
                self.sockets.insert(
                    key.clone(),
                    Bound {
                        spec: k.clone(),
                        fd,
                        node,
                    },
                );
            }
            fds.extend(self.sockets.get(&key).map(|b| b.fd.as_raw_fd()));
        }
        Ok(fds)
    }

    /// The instance's process is gone: its `bind = "service"` ports are
    /// held again until its next spawn (best effort: a port another
    /// process took meanwhile is tried again at that spawn).
    pub(super) fn exited(&mut self, service: &str, index: u32) {
        let from = (service.to_string(), index, String::new());
        for ((s, i, _), h) in self.ports.range_mut(from..) {
            if s != service || *i != index {
                break;
            }
            if h.fd.is_none() {
                h.fd = bind_port(&h.spec.address, h.port).ok();
            }
        }
    }

    /// Lets go of the ports of instances that no longer exist, and of the
    /// sockets of services no longer declared (or declared otherwise).
    /// `only`: look at that service's alone (the others are kept).
    pub(super) fn prune<'a>(
        &mut self,
        only: Option<&str>,
        exists: impl Fn(&str, u32) -> bool,
        spec: impl Fn(&str) -> Option<&'a ServiceSpec>,
    ) {
        let skip = |s: &str| only.is_some_and(|o| o != s);
        self.ports.retain(|(s, i, name), h| {
            skip(s)
                || exists(s, *i)
                    && spec(s)
                        .is_some_and(|sp| sp.ports.iter().any(|p| p.name == *name && *p == h.spec))
        });
        self.sockets.retain(|(s, name), b| {
            skip(s)
                || spec(s)
                    .is_some_and(|sp| sp.sockets.iter().any(|x| x.name == *name && *x == b.spec))
        });
    }

    /// Lets go of every port and socket (archon is exiting).
    pub(super) fn release_all(&mut self) {
        self.ports.clear();
        self.sockets.clear();
    }

    /// An instance's ports: (name, address, port), by name.
    pub(super) fn ports_of(&self, service: &str, index: u32) -> Vec<(&str, &str, u16)> {
        let mut v: Vec<(&str, &str, u16)> = self
            .ports
            .iter()
            .filter(|((s, i, _), _)| s == service && *i == index)
            .map(|((_, _, n), h)| (n.as_str(), h.spec.address.as_str(), h.port))
            .collect();
        v.sort_unstable();
        v
    }
}

fn is_any(address: &str) -> bool {
    address == "0.0.0.0" || address == "::"
}

fn bind_socket(k: &SocketSpec) -> Result<OwnedFd, String> {
    let addr = |a: &str| {
        a.parse::<std::net::SocketAddr>()
            .map_err(|_| format!("bad address {a:?}"))
    };
    let b = match &k.kind {
        SocketKind::Tcp(a) => BindSpec::Tcp(addr(a)?),
        SocketKind::Udp(a) => BindSpec::Udp(addr(a)?),
        SocketKind::Unix {
            path,
            mode,
            uid,
            gid,
        } => BindSpec::Unix {
            path: std::path::Path::new(path),
            mode: mode.unwrap_or(0o666),
            uid: *uid,
            gid: *gid,
        },
    };
    platform::bind_service_socket(&b, k.backlog)
}
