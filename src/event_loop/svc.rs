//! The event loop's side of configured services: executing the manager's
//! commands (spawn, stop, announce), the pipes of services (output captured
//! line by line, s6 readiness), and the non-blocking sinks their lines go
//! to. Every fd here is non-blocking and owned by the loop.

use super::checks::CheckKind;
use super::output::{FileLog, PipeKind};
use super::*;
use crate::services::manager::Cmd;
use crate::services::spec::{Output, Readiness, ServiceSpec};
use crate::services::SvcState;

impl EventLoop {
    /// Executes the manager's commands, and those they lead to.
    pub(super) fn apply_svc(&mut self, cmds: Vec<Cmd>) {
        let mut queue: std::collections::VecDeque<Cmd> = cmds.into();
        while let Some(cmd) = queue.pop_front() {
            match cmd {
                Cmd::Spawn { name, index } => {
                    if self.services.spawn_due(&name, index) {
                        queue.extend(self.spawn_service(&name, index));
                    }
                }
                Cmd::Kill {
                    entry,
                    signal,
                    grace_ms,
                } => {
                    if !self.drain_first(entry, signal, grace_ms) {
                        let now = self.now();
                        let fx = self
                            .sup
                            .stop_with(entry, signal, grace_ms, None, now)
                            .unwrap_or_default();
                        self.apply(fx);
                    }
                }
                Cmd::Changed {
                    name,
                    index,
                    old,
                    state,
                    pid,
                    restarts,
                    delay_ms,
                } => {
                    self.service_changed(&name, index, old, state, pid, restarts, delay_ms);
                    self.breaker_check(&name, index);
                    if old == SvcState::Starting && state == SvcState::Stopping {
                        self.warn_start_timeout(&name, index);
                    }
                    self.warn_failed_start_or_watchdog(&name, index, old, state);
                    if state == SvcState::Stopped {
                        self.prune_rings();
                        // Only this service's ports, and only once the
                        // instance is retired (a scale-down, a removal): a
                        // mass stop of 1 000 instances walks nothing.
                        let retired = !self
                            .services
                            .instances(Some(&name))
                            .is_ok_and(|v| v.iter().any(|(_, x)| x.index == index));
                        if retired {
                            self.endpoints_prune(Some(&name));
                        } else if self
                            .services
                            .spec(&name)
                            .is_some_and(|s| s.socket_activated)
                        {
                            self.activation_refresh();
                        }
                    }
                    log::info!(
                        "service {name}.{index} {} pid={}",
                        state.as_str(),
                        pid.map_or("-".into(), |p| p.to_string())
                    );
                    if self.subscribers.is_empty() {
                        continue;
                    }
                    let now = self.now();
                    let row = vec![
                        "ServiceEvent".to_string(),
                        super::stream::fmt_millis(now.wall),
                        name,
                        index.to_string(),
                        state.as_str().to_string(),
                        pid.map(|p| p.to_string()).unwrap_or_default(),
                    ];
                    self.announce(&crate::protocol::encode_record(&row));
                }
                Cmd::Essential { name, exit } => {
                    log::error!(
                        "essential service {name} failed for good status={}; shutting down",
                        exit.describe()
                    );
                    if self.exit_code.is_none() {
                        self.exit_code = Some(exit.shell_code().unwrap_or(1));
                    }
                    self.begin_shutdown(&format!("essential service {name} failed"), sig::TERM);
                }
            }
        }
    }

    fn spawn_service(&mut self, name: &str, index: u32) -> Vec<Cmd> {
        let now = self.now();
        let Some(spec) = self.services.spec(name).cloned() else {
            return Vec::new();
        };
        if spec.ready == Readiness::Notify || spec.watchdog_ms > 0 {
            self.ensure_notify_socket();
        }
        for out in [&spec.stdout, &spec.stderr] {
            if let Output::File {
                path,
                max_size,
                keep,
            } = out
            {
                if !self.file_logs.contains_key(path) {
                    match FileLog::open(path, *max_size, *keep) {
                        Ok(l) => {
                            self.file_logs.insert(path.clone(), l);
                        }
                        Err(e) => {
                            log::warn!("service {name}.{index} cannot open its log {path}: {e}");
                            return self
                                .services
                                .spawn_failed(name, index, 126, now.mono, now.wall);
                        }
                    }
                }
            }
        }
        let passed = match self.endpoints.prepare(&spec, index) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("service {name}.{index} cannot start: {e}");
                return self
                    .services
                    .spawn_failed(name, index, 126, now.mono, now.wall);
            }
        };
        match self.try_spawn_service(&spec, index, &passed) {
            Ok((spawned, pipes)) => {
                let pid = spawned.pid();
                let argv = instance_argv(&spec.cmd, index).into_owned();
                let id = self.track(Kind::Service, spawned, argv, None, now);
                // It leads its own process group: stops reach its children.
                if spec.kill_mode == crate::services::spec::KillMode::Group {
                    self.sup.set_group(id, true);
                }
                let profile = self.profile_of(Some(name));
                let key = super::monitor::RingKey::Instance(name.to_string(), index);
                self.monitor_start(id, key, profile);
                for (kind, fd) in pipes {
                    let kind = match kind {
                        PipeKind::Ready { .. } => PipeKind::Ready { entry: id },
                        other => other,
                    };
                    self.add_pipe(fd, kind);
                }
                let now_wall = now.wall;
                self.fire(crate::protocol::worker::HookEvent {
                    kind: "spawned",
                    service: name.to_string(),
                    instance: index,
                    pid: Some(pid),
                    state: "starting".into(),
                    time: super::hook::wall_secs(now_wall),
                    ..Default::default()
                });
                if matches!(spec.ready, Readiness::Command { .. }) {
                    self.check_due.insert((now.mono, id, CheckKind::Ready));
                }
                self.probes_spawned(id, &spec, index);
                if let Some(h) = &spec.health {
                    self.check_due
                        .insert((now.mono + h.interval_ms, id, CheckKind::Health));
                }
                self.services
                    .spawned(name, index, id, pid, now.mono, now.wall)
            }
            Err(fail) => {
                let (code, why) = match fail {
                    SpawnFail::Exec(e) => (e.code, e.reason),
                    SpawnFail::Os(e) => (126, e.to_string()),
                };
                log::warn!("service {name}.{index} cannot start: {why}");
                self.services
                    .spawn_failed(name, index, code, now.mono, now.wall)
            }
        }
    }

    /// A service's envp: archon's environment (unless `env_clear`), its own
    /// variables, ARCHON_SERVICE and ARCHON_INSTANCE, NOTIFY_SOCKET when
    /// it tells readiness that way or has a watchdog, and WATCHDOG_USEC
    /// (systemd's; no WATCHDOG_PID, the pid is not known before the spawn,
    /// and sd_watchdog_enabled accepts any process without it); and the
    /// PATH in it.
    pub(super) fn service_envp(
        &self,
        spec: &ServiceSpec,
        index: u32,
        notify: bool,
        net: &[(String, String)],
    ) -> Result<(Vec<std::rc::Rc<CString>>, Option<String>), SpawnFail> {
        let instance = index.to_string();
        let notify = match &self.notify_name {
            Some(name) if notify && (spec.ready == Readiness::Notify || spec.watchdog_ms > 0) => {
                Some(name.as_str())
            }
            _ => None,
        };
        let usec = (spec.watchdog_ms * 1000).to_string();
        let watchdog =
            (notify.is_some() && spec.watchdog_ms > 0).then_some(("WATCHDOG_USEC", usec.as_str()));
        let own = spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let archon = [
            ("ARCHON_SERVICE", spec.name.as_str()),
            ("ARCHON_INSTANCE", instance.as_str()),
        ];
        let socket = notify.map(|n| ("NOTIFY_SOCKET", n));
        let net = net.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        self.env.envp(
            spec.env_clear,
            own.chain(archon).chain(socket).chain(watchdog).chain(net),
        )
    }

    /// Builds the child's environment, stdio and readiness pipe, and spawns.
    #[allow(clippy::type_complexity)]
    fn try_spawn_service(
        &self,
        spec: &ServiceSpec,
        index: u32,
        passed: &ports::Passed,
    ) -> Result<(ProcHandle, Vec<(PipeKind, OwnedFd)>), SpawnFail> {
        let (envp, path) = self.service_envp(spec, index, true, &passed.env)?;
        let cmd = instance_argv(&spec.cmd, index);
        let (program, argv) = exec_parts(&cmd, path.as_deref(), Some(&self.programs))?;
        let cwd = match &spec.cwd {
            Some(d) => Some(CString::new(d.as_bytes()).map_err(|_| {
                SpawnFail::Exec(platform::ExecError {
                    code: 126,
                    reason: "cwd contains NUL".into(),
                })
            })?),
            None => None,
        };
        let label = if spec.replicas > 1 {
            format!("{}.{index}", spec.name)
        } else {
            spec.name.clone()
        };
        let owner: std::rc::Rc<str> = std::rc::Rc::from(spec.name.as_str());
        let mut pipes: Vec<(PipeKind, OwnedFd)> = Vec::new();
        let mut keep_w: Vec<OwnedFd> = Vec::new();
        let mut stdio = [self.dev_null.as_raw_fd(), 1, 2];
        for (slot, out, err) in [(1usize, &spec.stdout, false), (2, &spec.stderr, true)] {
            match out {
                Output::File { path, .. } => {
                    let (r, w) = platform::pipe().map_err(SpawnFail::Os)?;
                    stdio[slot] = w.as_raw_fd();
                    keep_w.push(w);
                    let prefix = if spec.replicas > 1 {
                        format!("{index}| ")
                    } else {
                        String::new()
                    };
                    pipes.push((
                        PipeKind::Log {
                            prefix,
                            buf: Vec::new(),
                            err,
                            file: Some(path.clone()),
                            owner: (owner.clone(), index),
                        },
                        r,
                    ));
                }
                Output::Inherit => {}
                Output::Null => stdio[slot] = self.dev_null.as_raw_fd(),
                Output::Prefix => {
                    let (r, w) = platform::pipe().map_err(SpawnFail::Os)?;
                    stdio[slot] = w.as_raw_fd();
                    keep_w.push(w);
                    pipes.push((
                        PipeKind::Log {
                            prefix: format!("{label}| "),
                            buf: Vec::new(),
                            err,
                            file: None,
                            owner: (owner.clone(), index),
                        },
                        r,
                    ));
                }
            }
        }
        // Ports and sockets from 3 on (systemd's SD_LISTEN_FDS_START).
        let mut extra_fds: Vec<(RawFd, RawFd)> = (3..)
            .zip(passed.fds.iter().copied())
            .map(|(t, s)| (s, t))
            .collect();
        if let Readiness::Fd(n) = spec.ready {
            let (r, w) = platform::pipe().map_err(SpawnFail::Os)?;
            extra_fds.push((w.as_raw_fd(), n));
            keep_w.push(w);
            pipes.push((PipeKind::Ready { entry: 0 }, r));
        }
        let mut spawn_spec = platform::SpawnSpec::new(
            program,
            argv,
            envp,
            stdio,
            self.nofile,
            self.ignored_signals.clone(),
        );
        spawn_spec.cwd = cwd;
        spawn_spec.listen_pid = !passed.fds.is_empty();
        spawn_spec.extra_fds = extra_fds;
        spawn_spec.rlimits = spec
            .rlimits
            .iter()
            .filter_map(|(name, soft, hard)| {
                Some((
                    platform::rlimit_resource(name)?,
                    platform::Rlimit {
                        cur: *soft,
                        max: *hard,
                    },
                ))
            })
            .collect();
        spawn_spec.umask = spec.umask;
        spawn_spec.uid = spec.identity.as_ref().and_then(|i| i.uid);
        spawn_spec.gid = spec.identity.as_ref().and_then(|i| i.gid);
        spawn_spec.groups = spec
            .identity
            .as_ref()
            .filter(|i| i.uid.is_some())
            .map(|i| i.groups.clone());
        let spawned = platform::spawn(&spawn_spec).map_err(SpawnFail::Os)?;
        // The write ends now belong to the child alone.
        drop(keep_w);
        Ok((spawned, pipes))
    }

    /// Sends a signal to every running instance's main process (through
    /// its handle); returns how many got it.
    pub(super) fn signal_service(&self, name: &str, signo: i32) -> Result<usize, String> {
        let entries: Vec<u64> = self
            .services
            .instances(Some(name))?
            .iter()
            .filter_map(|(_, i)| i.entry)
            .collect();
        Ok(entries
            .iter()
            .filter_map(|e| self.watched.get(e))
            .filter(|w| w.proc.signal(signo).is_ok())
            .count())
    }

    /// Why a service is killed at its start timeout, at warn: killed in a
    /// loop with no reason given, it is a mystery to its owner.
    fn warn_start_timeout(&self, name: &str, index: u32) {
        let timed_out = self
            .services
            .instances(Some(name))
            .ok()
            .and_then(|v| v.into_iter().find(|(_, i)| i.index == index))
            .is_some_and(|(_, i)| i.timed_out);
        let Some(spec) = self.services.spec(name).filter(|_| timed_out) else {
            return;
        };
        let waited_for = match &spec.ready {
            Readiness::Exec => "its exec".to_string(),
            Readiness::Fd(n) => format!("a newline on fd {n}"),
            Readiness::Notify => {
                "READY=1 on NOTIFY_SOCKET from a process of its process group".to_string()
            }
            Readiness::Command { argv, .. } => format!("{:?} to exit 0", argv.join(" ")),
        };
        log::warn!(
            "service {name}.{index} not ready within start_timeout={}s (waited for {waited_for}); stopping it, which counts as a failure",
            spec.start_timeout_ms as f64 / 1000.0
        );
    }

    /// An exit before `startsecs`, and a watchdog that went unfed, at warn
    /// with the reason (as the start timeout).
    fn warn_failed_start_or_watchdog(
        &self,
        name: &str,
        index: u32,
        old: SvcState,
        state: SvcState,
    ) {
        let Some(spec) = self.services.spec(name) else {
            return;
        };
        let Some(inst) = self.services.instances(Some(name)).ok().and_then(|v| {
            v.into_iter()
                .find(|(_, i)| i.index == index)
                .map(|(_, i)| i.clone())
        }) else {
            return;
        };
        if old == SvcState::Starting && inst.early_exit && state != SvcState::Starting {
            log::warn!(
                "service {name}.{index} exited before startsecs={}s: a failed start, whatever its status",
                spec.start_secs_ms as f64 / 1000.0
            );
        }
        if state == SvcState::Stopping && inst.watchdog_fired && old != SvcState::Stopping {
            log::warn!(
                "service {name}.{index} sent no WATCHDOG=1 within watchdog={}s (or sent WATCHDOG=trigger); sending it {}, which counts as a failure",
                spec.watchdog_ms as f64 / 1000.0,
                platform::signal_name(spec.watchdog_signal)
            );
        }
    }
}

impl EventLoop {
    /// Lets go of the ports and sockets nothing declares any more (of
    /// service `only`, or of all).
    pub(super) fn endpoints_prune(&mut self, only: Option<&str>) {
        // Armed sockets leave the poll set before any is closed, and are
        // armed again after.
        self.activation_disarm_all();
        let services = &self.services;
        self.endpoints.prune(
            only,
            |n, i| {
                services
                    .instances(Some(n))
                    .is_ok_and(|v| v.iter().any(|(_, x)| x.index == i))
            },
            |n| services.spec(n),
        );
        self.activation_refresh();
    }

    /// `Reload` (and SIGHUP): reads the config again; an invalid one
    /// changes nothing.
    /// A reload's new config, evaluated and checked: reconciles the
    /// services with it and returns the `Reload` reply.
    pub(super) fn apply_reload(&mut self, config: crate::services::spec::Config) -> Reply {
        let now = self.now();
        let (cmds, sum) = self.services.reload(config, now.mono, now.wall);
        let list = |k: &str, v: &[String]| format!("{k}={}", v.join(" "));
        log::info!(
            "reloaded {} {} {} {}",
            list("added", &sum.added),
            list("removed", &sum.removed),
            list("changed", &sum.changed),
            list("rescaled", &sum.rescaled)
        );
        self.apply_svc(cmds);
        self.monitor_refresh();
        self.endpoints_prune(None);
        self.fire_simple("reloaded", "archon", 0);
        Reply::Ok(vec![
            list("added", &sum.added),
            list("removed", &sum.removed),
            list("changed", &sum.changed),
            list("rescaled", &sum.rescaled),
            list("unchanged", &sum.unchanged),
        ])
    }
}

/// A service's argv for one instance: `${ARCHON_INSTANCE}` in an argument
/// becomes the instance number (as supervisord's `%(process_num)d`: a pool
/// of `--port 808${ARCHON_INSTANCE}`), without a shell. Borrowed when no
/// argument has it (a respawn allocates nothing for it).
fn instance_argv(cmd: &[String], index: u32) -> std::borrow::Cow<'_, [String]> {
    const TOKEN: &str = "${ARCHON_INSTANCE}";
    if !cmd.iter().any(|a| a.contains(TOKEN)) {
        return std::borrow::Cow::Borrowed(cmd);
    }
    let n = index.to_string();
    std::borrow::Cow::Owned(cmd.iter().map(|a| a.replace(TOKEN, &n)).collect())
}
