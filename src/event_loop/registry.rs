//! The hostname registry for reverse proxies: which instances serve each
//! declared hostname now (running: ready, and healthy by its readiness
//! probe; not draining), as `Lookup` rows, as JSON and Traefik's HTTP
//! provider document on the `--metrics` listener, and as answers to
//! HAProxy's agent checks there. And draining: an instance to be stopped
//! leaves the registry its service's `drain` before its stop signal.

use super::*;
use crate::services::SvcState;
use std::collections::BTreeMap;

/// One instance a hostname reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Upstream {
    pub service: String,
    pub index: u32,
    /// `host:port` of the port it serves on (`served_port`; 127.0.0.1 for
    /// a wildcard address).
    pub addr: String,
    pub port: u16,
}

/// Stops held back while their instance drains: entry -> (due, signal,
/// grace).
#[derive(Default)]
pub(super) struct Drains {
    /// entry -> (when its stop is due, the signal, the grace).
    held: HashMap<u64, (u64, i32, u64)>,
    /// (when, entry) of `held`, so a pass looks only at what is due.
    due: std::collections::BTreeSet<(u64, u64)>,
}

impl Drains {
    pub(super) fn next_due(&self) -> Option<u64> {
        self.due.first().map(|d| d.0)
    }

    pub(super) fn is_draining(&self, entry: u64) -> bool {
        self.held.contains_key(&entry)
    }

    fn hold(&mut self, entry: u64, due: u64, signal: i32, grace_ms: u64) {
        if let Some(old) = self.held.insert(entry, (due, signal, grace_ms)) {
            self.due.remove(&(old.0, entry));
        }
        self.due.insert((due, entry));
    }

    fn release(&mut self, entry: u64) -> Option<(u64, i32, u64)> {
        let h = self.held.remove(&entry)?;
        self.due.remove(&(h.0, entry));
        Some(h)
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl EventLoop {
    /// Every declared hostname (or only `only`) and the instances it
    /// reaches now; None when `only` is not declared.
    pub(super) fn registry(&self, only: Option<&str>) -> Option<BTreeMap<String, Vec<Upstream>>> {
        let mut out: BTreeMap<String, Vec<Upstream>> = BTreeMap::new();
        let all = self.services.instances(None).unwrap_or_default();
        for (name, inst) in all {
            let Some(spec) = self.services.spec(name) else {
                continue;
            };
            for h in &spec.hostnames {
                if only.is_some_and(|o| o != h) {
                    continue;
                }
                let list = out.entry(h.clone()).or_default();
                let live = inst.state == SvcState::Running
                    && inst.entry.is_some_and(|e| !self.drains.is_draining(e));
                if !live {
                    continue;
                }
                let ports = self.endpoints.ports_of(name, inst.index);
                let Some(&(_, address, port)) = served_port(spec, &ports) else {
                    continue;
                };
                let host = match address {
                    "0.0.0.0" => "127.0.0.1",
                    "::" => "::1",
                    a => a,
                };
                list.push(Upstream {
                    service: name.to_string(),
                    index: inst.index,
                    addr: crate::services::net::host_port(host, port),
                    port,
                });
            }
        }
        if only.is_some() && out.is_empty() {
            return None;
        }
        Some(out)
    }

    /// `Lookup,<hostname>`: `Upstream,<hostname>,<service>,<instance>,<host:port>`
    /// rows, then `Ok`.
    pub(super) fn lookup_rows(&self, hostname: &str) -> Reply {
        let h = hostname.to_ascii_lowercase();
        let Some(reg) = self.registry(Some(&h)) else {
            return Reply::error(
                ErrorKind::NoSuchService,
                format!("no service declares hostname {h:?}"),
            );
        };
        let rows = reg
            .iter()
            .flat_map(|(h, ups)| {
                ups.iter().map(move |u| {
                    vec![
                        "Upstream".to_string(),
                        h.clone(),
                        u.service.clone(),
                        u.index.to_string(),
                        u.addr.clone(),
                    ]
                })
            })
            .collect();
        Reply::Rows(rows)
    }

    /// `GET /registry`: `{"hostname": ["host:port", ...], ...}`.
    pub(super) fn registry_json(&self) -> String {
        let reg = self.registry(None).unwrap_or_default();
        let body: Vec<String> = reg
            .iter()
            .map(|(h, ups)| {
                let addrs: Vec<String> = ups.iter().map(|u| json_str(&u.addr)).collect();
                format!("{}:[{}]", json_str(h), addrs.join(","))
            })
            .collect();
        format!("{{{}}}\n", body.join(","))
    }

    /// `GET /registry/traefik`: Traefik's HTTP provider document, a router
    /// (`Host(...)`) and a load-balanced service per hostname.
    pub(super) fn registry_traefik(&self) -> String {
        let reg = self.registry(None).unwrap_or_default();
        let mut routers = Vec::new();
        let mut services = Vec::new();
        for (i, (h, ups)) in reg.iter().enumerate() {
            let id = format!("archon-{i}");
            routers.push(format!(
                "{}:{{\"rule\":{},\"service\":{}}}",
                json_str(&id),
                json_str(&format!("Host(`{h}`)")),
                json_str(&id)
            ));
            let servers: Vec<String> = ups
                .iter()
                .map(|u| format!("{{\"url\":{}}}", json_str(&format!("http://{}", u.addr))))
                .collect();
            services.push(format!(
                "{}:{{\"loadBalancer\":{{\"servers\":[{}]}}}}",
                json_str(&id),
                servers.join(",")
            ));
        }
        format!(
            "{{\"http\":{{\"routers\":{{{}}},\"services\":{{{}}}}}}}\n",
            routers.join(","),
            services.join(",")
        )
    }

    /// HAProxy's agent check (`agent-send "<hostname> <port>\n"`): `up`
    /// while an instance serving that hostname on that port is in the
    /// registry, `drain` while it drains, else `down`.
    pub(super) fn agent_reply(&self, line: &str) -> String {
        let mut it = line.split_whitespace();
        let (Some(h), Some(port)) = (it.next(), it.next().and_then(|p| p.parse::<u16>().ok()))
        else {
            return "down\n".into();
        };
        let h = h.to_ascii_lowercase();
        let reg = self.registry(Some(&h)).unwrap_or_default();
        if reg.values().flatten().any(|u| u.port == port) {
            return "up ready 100%\n".into();
        }
        let draining = self
            .services
            .instances(None)
            .unwrap_or_default()
            .iter()
            .any(|(n, i)| {
                i.entry.is_some_and(|e| self.drains.is_draining(e))
                    && self.services.spec(n).is_some_and(|s| {
                        s.hostnames.contains(&h)
                            && served_port(s, &self.endpoints.ports_of(n, i.index))
                                .is_some_and(|p| p.2 == port)
                    })
            });
        if draining {
            "drain\n".into()
        } else {
            "down\n".into()
        }
    }

    /// A stop for `entry`: held back for its service's `drain` when it is
    /// in the registry now (it leaves it at once). True when held.
    /// Not while archon itself shuts down: everything stops then, and a
    /// container engine's stop timeout is not to be spent on draining.
    pub(super) fn drain_first(&mut self, entry: u64, signal: i32, grace_ms: u64) -> bool {
        if self.drains.is_draining(entry) {
            return true;
        }
        if self.shutting_down {
            return false;
        }
        let Some((name, _)) = self.services.owner(entry) else {
            return false;
        };
        let Some(spec) = self.services.spec(&name) else {
            return false;
        };
        if spec.drain_ms == 0 || spec.hostnames.is_empty() {
            return false;
        }
        let due = self.now().mono + spec.drain_ms;
        log::info!(
            "service {name}: id={entry} leaves the registry; its stop signal in {}s",
            spec.drain_ms as f64 / 1000.0
        );
        self.drains.hold(entry, due, signal, grace_ms);
        true
    }

    /// The stops whose drain is over (all of them once archon shuts down).
    pub(super) fn drains_due(&mut self) {
        if self.drains.due.is_empty() {
            return;
        }
        let now = self.now();
        let all = self.shutting_down;
        while let Some(&(when, entry)) = self.drains.due.first() {
            if !all && when > now.mono {
                break;
            }
            let Some((_, signal, grace)) = self.drains.release(entry) else {
                self.drains.due.pop_first();
                continue;
            };
            let fx = self
                .sup
                .stop_with(entry, signal, grace, None, now)
                .unwrap_or_default();
            self.apply(fx);
        }
    }

    /// A process ended: a drain of it is over.
    pub(super) fn drain_gone(&mut self, entry: u64) {
        self.drains.release(entry);
    }
}

/// The port of an instance's that proxies are sent to, among its ports
/// (sorted by name): the one its readiness probe checks, else the one
/// named `http`, else the first.
fn served_port<'a>(
    spec: &crate::services::spec::ServiceSpec,
    ports: &'a [(&str, &str, u16)],
) -> Option<&'a (&'a str, &'a str, u16)> {
    use crate::services::probe::{PortRef, ProbeKind};
    let probed = spec.readiness.as_ref().and_then(|p| match &p.kind {
        ProbeKind::Http { port, .. } | ProbeKind::Tcp { port, .. } => Some(port),
        ProbeKind::Exec(_) => None,
    });
    let by = |want: &str| ports.iter().find(|p| p.0 == want);
    match probed {
        Some(PortRef::Named(n)) => by(n),
        Some(PortRef::Number(n)) => ports.iter().find(|p| p.2 == *n),
        None => None,
    }
    .or_else(|| by("http"))
    .or_else(|| ports.first())
}
