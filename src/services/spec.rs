//! What the config declares for one service, after loading: plain data,
//! compared field by field on reload. Validation across services
//! (duplicates, unknown dependencies, cycles) is here too; no I/O.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Restart {
    Always,
    /// Restart unless the exit code is one of these.
    OnFailure,
    Never,
}

/// What a stop signals: the service's whole process group (its children
/// too, as systemd's control group and supervisord's stopasgroup), or only
/// its main process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KillMode {
    Group,
    Process,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub multiplier: f64,
    pub max_ms: u64,
    /// Up this long: the next crash restarts at once and the delay resets.
    pub reset_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 100,
            multiplier: 2.0,
            max_ms: 30_000,
            reset_after_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub restarts: u32,
    pub window_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Ready once exec'd.
    Exec,
    /// s6: ready when the service writes a newline on this fd.
    Fd(i32),
    /// systemd: `READY=1` on the datagram socket named by `NOTIFY_SOCKET`.
    Notify,
    /// Ready once this command exits 0; tried every `interval_ms`.
    Command { argv: Vec<String>, interval_ms: u64 },
}

/// A health check: run every `interval_ms` while the service runs; a
/// failure makes it `unhealthy`, a success `running` again.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub argv: Vec<String>,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// archon's own output, each line prefixed `name.index| ` (or `name| `).
    Prefix,
    Inherit,
    Null,
    /// Appended to a file, rotated by size: `path` -> `path.1` ... `path.keep`.
    File {
        path: String,
        max_size: u64,
        keep: u32,
    },
}

/// Who the service runs as, resolved when the config is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups (the user's, when a user is given).
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// Where it was declared, for messages.
    /// Shared by every service of one file (1 000 services, one string).
    pub file: std::rc::Rc<str>,
    pub line: usize,
    pub cmd: Vec<String>,
    /// Added to archon's environment (or replacing it, with `env_clear`).
    pub env: Vec<(String, String)>,
    pub env_clear: bool,
    pub cwd: Option<String>,
    /// `user` / `group` as written, and what they resolved to.
    pub user: Option<String>,
    pub group: Option<String>,
    pub identity: Option<Identity>,
    pub umask: Option<u32>,
    /// (resource name, soft, hard); u64::MAX is unlimited.
    pub rlimits: Vec<(String, u64, u64)>,
    pub stdout: Output,
    pub stderr: Output,
    pub stop_signal: i32,
    pub kill_mode: KillMode,
    pub grace_ms: u64,
    pub restart: Restart,
    pub success_codes: Vec<i32>,
    pub backoff: Backoff,
    pub budget: Option<Budget>,
    /// Restarts of all the pool's instances together (supervisord has
    /// none; systemd's StartLimitBurst is per unit): past it the whole
    /// pool is stopped and failed.
    pub pool_budget: Option<Budget>,
    pub replicas: u32,
    pub depends_on: Vec<String>,
    pub oneshot: bool,
    pub ready: Readiness,
    pub health: Option<Health>,
    pub start_timeout_ms: u64,
    /// supervisord's startsecs: how long a process must have run before
    /// its start counts as a success (`starting` until then; an exit
    /// sooner is a failed start, whatever its code). 0: at readiness.
    pub start_secs_ms: u64,
    /// systemd's WatchdogSec: once running, `WATCHDOG=1` must come on
    /// NOTIFY_SOCKET at least this often, or the process gets
    /// `watchdog_signal` and its exit is a failure. 0: off.
    pub watchdog_ms: u64,
    pub watchdog_signal: i32,
    pub essential: bool,
    pub autostart: bool,
    /// Resource monitoring (`monitor = ...`): archon's `--monitor` when
    /// not set.
    pub monitor: Monitor,
    /// Limits that stop or restart the instance (`limits = {...}`).
    pub limits: Option<Limits>,
    /// Named ports of each instance (`ports`), sorted by name.
    pub ports: Vec<super::net::PortSpec>,
    /// Sockets archon binds for the service (`sockets`), sorted by name.
    pub sockets: Vec<super::net::SocketSpec>,
    /// Kubernetes-style probes (`startup`, `readiness`, `liveness`).
    pub startup: Option<super::probe::Probe>,
    pub readiness: Option<super::probe::Probe>,
    pub liveness: Option<super::probe::Probe>,
    /// The circuit breaker over liveness restarts (on by default with a
    /// liveness probe; `breaker = false` turns it off).
    pub breaker: Option<super::probe::Breaker>,
    /// Hostnames its instances serve, for reverse proxies (`Lookup`, the
    /// registry): lower-case, sorted.
    pub hostnames: Vec<String>,
    /// How long an instance is out of the registry before its stop
    /// signal (`drain`, ms).
    pub drain_ms: u64,
    /// `autostart = "socket"`: started by the first connection (or
    /// datagram) on its sockets, and watched again once stopped.
    pub socket_activated: bool,
}

/// What a service may use before archon acts (pm2's max_memory_restart,
/// a worker's lifetime), each optional. Read from the instance's samples
/// (`event_loop/monitor.rs`); a cgroup backend could enforce the same
/// settings in the kernel later.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Bytes of resident memory (`measure`: RSS, or PSS).
    pub memory: Option<u64>,
    pub measure: Measure,
    /// Percent of one CPU, over the sampling interval.
    pub cpu: Option<f64>,
    /// The process's lifetime, ms: recycled after it.
    pub runtime_ms: Option<u64>,
    /// How long memory or CPU must stay over before the limit fires (0: the
    /// first sample over, and for memory the kernel's high-water mark, so a
    /// spike between samples counts).
    pub sustain_ms: u64,
    pub action: LimitAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Rss,
    Pss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAction {
    /// A graceful stop, then a start through the backoff and the budget.
    Restart,
    /// A graceful stop; the instance is `failed` until a `Start`.
    Stop,
    /// Only the event (subscribers, hooks).
    Event,
}

impl LimitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitAction::Restart => "restart",
            LimitAction::Stop => "stop",
            LimitAction::Event => "event",
        }
    }
}

/// A service's `monitor` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// archon's `--monitor` profile (none by default).
    Inherit,
    Off,
    Profile(crate::monitor::Profile),
}

impl ServiceSpec {
    /// The probe of that kind, if configured.
    pub fn probe(&self, which: super::probe::Which) -> Option<&super::probe::Probe> {
        use super::probe::Which;
        match which {
            Which::Startup => self.startup.as_ref(),
            Which::Readiness => self.readiness.as_ref(),
            Which::Liveness => self.liveness.as_ref(),
        }
    }

    /// Whether probes decide when it is ready (a startup or readiness
    /// probe): then `ready = "exec"` does not make it running at once.
    pub fn probes_gate_ready(&self) -> bool {
        self.startup.is_some() || self.readiness.is_some()
    }

    /// The names of the fds passed from 3 on (`LISTEN_FDNAMES`): the ports
    /// archon binds, then the sockets, each sorted by name.
    pub fn passed_fd_names(&self) -> Vec<&str> {
        self.ports
            .iter()
            .filter(|p| p.bind == super::net::PortBind::Archon)
            .map(|p| p.name.as_str())
            .chain(self.sockets.iter().map(|s| s.name.as_str()))
            .collect()
    }

    pub fn new(name: &str, file: &str, line: usize) -> Self {
        Self::new_in(name, std::rc::Rc::from(file), line)
    }

    pub fn new_in(name: &str, file: std::rc::Rc<str>, line: usize) -> Self {
        ServiceSpec {
            name: name.into(),
            file,
            line,
            cmd: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            user: None,
            group: None,
            identity: None,
            umask: None,
            rlimits: Vec::new(),
            stdout: Output::Prefix,
            stderr: Output::Prefix,
            stop_signal: libc_sigterm(),
            kill_mode: KillMode::Group,
            grace_ms: 10_000,
            restart: Restart::Always,
            success_codes: vec![0],
            backoff: Backoff::default(),
            budget: Some(Budget {
                restarts: 10,
                window_ms: 60_000,
            }),
            pool_budget: None,
            replicas: 1,
            depends_on: Vec::new(),
            oneshot: false,
            ready: Readiness::Exec,
            health: None,
            start_timeout_ms: 60_000,
            start_secs_ms: 0,
            watchdog_ms: 0,
            watchdog_signal: 6,
            essential: false,
            autostart: true,
            monitor: Monitor::Inherit,
            limits: None,
            ports: Vec::new(),
            sockets: Vec::new(),
            startup: None,
            readiness: None,
            liveness: None,
            breaker: None,
            hostnames: Vec::new(),
            drain_ms: 0,
            socket_activated: false,
        }
    }

    /// Everything but where it was written: a reload restarts a service
    /// only when this changes. (Replicas are resized live instead.)
    pub fn same_process(&self, other: &ServiceSpec) -> bool {
        let strip = |s: &ServiceSpec| {
            let mut s = s.clone();
            s.file = std::rc::Rc::from("");
            s.line = 0;
            s.replicas = 0;
            // Monitoring is archon's business, not the process's.
            s.monitor = Monitor::Inherit;
            s.limits = None;
            s
        };
        strip(self) == strip(other)
    }

    pub fn is_success(&self, code: Option<i32>) -> bool {
        code.is_some_and(|c| self.success_codes.contains(&c))
    }
}

fn libc_sigterm() -> i32 {
    15
}

/// A whole configuration: services in declaration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub services: Vec<ServiceSpec>,
}

impl Config {
    /// Checks across services. Every problem is reported, each with the file
    /// and line of the service it concerns.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let mut seen: BTreeMap<&str, &ServiceSpec> = BTreeMap::new();
        for s in &self.services {
            if let Some(first) = seen.get(s.name.as_str()) {
                errs.push(format!(
                    "{}:{}: service {:?} is declared twice (first at line {})",
                    s.file, s.line, s.name, first.line
                ));
            } else {
                seen.insert(&s.name, s);
            }
        }
        for s in &self.services {
            // The rlimit names are the platform's (Linux's and FreeBSD's differ).
            for (name, _, _) in &s.rlimits {
                if crate::platform::rlimit_resource(name).is_none() {
                    errs.push(format!(
                        "{}:{}: service {:?}: resource limit {name:?} does not exist on this platform",
                        s.file, s.line, s.name
                    ));
                }
            }
            // Where there is no sd_notify (FreeBSD), say so at load time,
            // not by a start that times out.
            #[cfg(not(target_os = "linux"))]
            if s.ready == Readiness::Notify || s.watchdog_ms > 0 {
                errs.push(format!(
                    "{}:{}: service {:?}: ready = \"notify\" and watchdog need sd_notify, which this platform does not have (use ready = {{ fd = n }})",
                    s.file, s.line, s.name
                ));
            }
            for d in &s.depends_on {
                if !seen.contains_key(d.as_str()) {
                    errs.push(format!(
                        "{}:{}: service {:?} depends on unknown service {d:?}",
                        s.file, s.line, s.name
                    ));
                }
            }
        }
        if let Some(cycle) = find_cycle(&self.services) {
            let s = seen.get(cycle[0].as_str()).copied();
            let (file, line) = s.map_or(("?", 0), |s| (&*s.file, s.line));
            errs.push(format!(
                "{file}:{line}: dependency cycle: {}",
                cycle.join(" -> ")
            ));
        }
        errs
    }

    /// Services in an order where each comes after its dependencies
    /// (declaration order otherwise). Assumes `validate` found no cycle.
    pub fn start_order(&self) -> Vec<String> {
        let by_name: BTreeMap<&str, &ServiceSpec> =
            self.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::new();
        fn visit<'a>(
            n: &'a str,
            by_name: &BTreeMap<&'a str, &'a ServiceSpec>,
            done: &mut BTreeSet<&'a str>,
            out: &mut Vec<String>,
        ) {
            if !done.insert(n) {
                return;
            }
            if let Some(s) = by_name.get(n) {
                for d in &s.depends_on {
                    visit(d, by_name, done, out);
                }
            }
            out.push(n.to_string());
        }
        for s in &self.services {
            visit(&s.name, &by_name, &mut done, &mut out);
        }
        out
    }
}

/// A dependency cycle as a list of names (first repeated at the end).
pub fn find_cycle(services: &[ServiceSpec]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = services
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.depends_on.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    find_cycle_in(&deps)
}

/// The same over a plain name -> dependencies map (also used for the
/// dynamic `Depend` verb).
pub fn find_cycle_in(deps: &BTreeMap<&str, Vec<&str>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = BTreeMap::new();
    let mut stack: Vec<&str> = Vec::new();
    fn dfs<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Active) => {
                let start = stack.iter().position(|&s| s == n).unwrap_or(0);
                let mut cyc: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cyc.push(n.to_string());
                return Some(cyc);
            }
            None => {}
        }
        mark.insert(n, Mark::Active);
        stack.push(n);
        for &d in deps.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(c) = dfs(d, deps, mark, stack) {
                return Some(c);
            }
        }
        stack.pop();
        mark.insert(n, Mark::Done);
        None
    }
    for &n in deps.keys() {
        if let Some(c) = dfs(n, deps, &mut mark, &mut stack) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec::new(name, "f.lua", 1);
        s.cmd = vec!["true".into()];
        s.depends_on = deps.iter().map(|d| d.to_string()).collect();
        s
    }

    #[test]
    fn order_follows_dependencies() {
        let c = Config {
            services: vec![
                svc("web", &["db", "cache"]),
                svc("cache", &[]),
                svc("db", &[]),
            ],
        };
        assert!(c.validate().is_empty());
        assert_eq!(c.start_order(), ["db", "cache", "web"]);
    }

    #[test]
    fn duplicates_unknown_and_cycles_are_all_reported() {
        let c = Config {
            services: vec![
                svc("a", &["b"]),
                svc("b", &["c"]),
                svc("c", &["a"]),
                svc("d", &["nope"]),
                svc("d", &[]),
            ],
        };
        let errs = c.validate();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("declared twice"));
        assert!(errs[1].contains("unknown service \"nope\""));
        assert!(errs[2].contains("a -> b -> c -> a"), "{errs:?}");
    }

    #[test]
    fn same_process_ignores_position_and_replicas() {
        let a = svc("a", &[]);
        let mut b = a.clone();
        b.line = 9;
        b.replicas = 4;
        assert!(a.same_process(&b));
        b.cmd.push("x".into());
        assert!(!a.same_process(&b));
    }
}
