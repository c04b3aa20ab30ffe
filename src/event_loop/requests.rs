//! Requests: one line from a client, parsed, answered now or later.

use super::client::Body;
use super::*;
use crate::access::{Access, Peer};

impl EventLoop {
    pub(super) fn handle_line(&mut self, cid: u64, raw: client::Request) {
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        let seq = c.open_slot();
        let peer = c.peer.clone();
        let fds = raw.fds;
        let to = ReplyTo { client: cid, seq };
        let text = |r: Reply| Body::Text(r.encode());
        let answer = match parse_request(&raw.line) {
            Err((kind, msg)) => Some(text(Reply::error(kind, msg))),
            Ok(_) if raw.fds_truncated => Some(text(Reply::error(
                ErrorKind::BadFd,
                "too many fds sent with the request",
            ))),
            Ok(req) => match self.policy.check(&peer, &req) {
                Err(msg) => {
                    log::info!("refused client={cid} uid={} verb={}", peer.uid, req.verb());
                    Some(text(Reply::error(ErrorKind::Permission, msg)))
                }
                Ok(access) => match self.streamed(&req, &fds) {
                    Some(cursor) => Some(Body::Stream(cursor)),
                    None => {
                        let who = Caller { peer, access };
                        self.handle_request(to, req, fds, &who).map(text)
                    }
                },
            },
        };
        if let Some(body) = answer {
            if let Some(c) = self.clients.get_mut(&cid) {
                c.fill_slot(seq, body);
            }
        }
    }

    /// The tables that are streamed rather than built (`stream.rs`).
    fn streamed(&self, req: &Request, fds: &[OwnedFd]) -> Option<stream::Cursor> {
        if !fds.is_empty() {
            return None;
        }
        match req {
            Request::Status(None) => Some(stream::Cursor::status_all()),
            Request::StatusService(name) if self.services.has_target(name) => {
                Some(stream::Cursor::Services {
                    only: Some(name.clone()),
                    from: None,
                })
            }
            Request::DumpConfig => Some(stream::Cursor::Settings {
                from: String::new(),
            }),
            _ => None,
        }
    }

    /// Returns the reply now, or None when it comes later (Run, Stop).
    pub(super) fn handle_request(
        &mut self,
        to: ReplyTo,
        req: Request,
        fds: Vec<OwnedFd>,
        who: &Caller,
    ) -> Option<Reply> {
        let fd_free = matches!(req, Request::Run(_) | Request::MonitorFd);
        if !fd_free && !fds.is_empty() {
            return Some(Reply::error(ErrorKind::BadFd, "this request takes no fds"));
        }
        if self.shutting_down
            && !matches!(
                req,
                Request::Status(_)
                    | Request::Tree
                    | Request::Lookup(_)
                    | Request::Version
                    | Request::Subscribe
            )
        {
            return Some(Reply::error(
                ErrorKind::ShuttingDown,
                "archon is shutting down",
            ));
        }
        let now = self.now();
        match req {
            Request::Version => Some(Reply::Ok(vec![
                "archon".into(),
                env!("CARGO_PKG_VERSION").into(),
                format!("protocol={PROTOCOL_VERSION}"),
            ])),
            Request::Status(only) => Some(match self.sup.rows(only) {
                Ok(rows) => Reply::Table(rows),
                Err(e) => e,
            }),
            // Known services are streamed (`streamed`).
            Request::StatusService(name) => Some(Reply::error(
                ErrorKind::NoSuchService,
                self.services
                    .target(&name)
                    .err()
                    .unwrap_or_else(|| format!("no service {name}")),
            )),
            Request::Start(name) => Some(self.service_cmd(&name, |s, n, m, w| s.start(n, m, w))),
            Request::StopService(name) => {
                Some(self.service_cmd(&name, |s, n, m, w| s.stop(n, m, w)))
            }
            Request::Restart(name) => {
                Some(self.service_cmd(&name, |s, n, m, w| s.restart(n, m, w)))
            }
            Request::Scale { name, replicas } => {
                let r = self.service_cmd(&name, |s, n, m, w| s.scale(n, replicas, m, w));
                if matches!(r, Reply::Ok(_)) {
                    self.scaled(&name, replicas);
                }
                Some(r)
            }
            Request::Reload => self.reload(Some(to)),
            Request::DumpConfig => Some(Reply::Ok(Vec::new())),
            Request::Depend { name, dep } => Some(match self.services.depend(&name, &dep) {
                Ok(()) => Reply::Ok(Vec::new()),
                Err(e) if e.starts_with("no service") => Reply::error(ErrorKind::NoSuchService, e),
                Err(e) => Reply::error(ErrorKind::BadRequest, e),
            }),
            Request::Undepend { name, dep } => Some(match self.services.undepend(&name, &dep) {
                Ok(()) => Reply::Ok(Vec::new()),
                Err(e) => Reply::error(ErrorKind::BadRequest, e),
            }),
            // Root only: `access::Policy::check` has seen to that.
            Request::Power(action) => {
                log::info!("{} requested by a client", action.verb());
                self.power = Some(action);
                // Answer first: the shutdown may end the connection.
                if let Some(c) = self.clients.get_mut(&to.client) {
                    c.fill_slot(to.seq, Body::Text(Reply::Ok(Vec::new()).encode()));
                }
                self.flush_client(to.client);
                self.begin_shutdown(action.verb(), sig::TERM);
                None
            }
            Request::Tree => Some(Reply::Encoded(self.tree_rows())),
            Request::Lookup(h) => Some(self.lookup_rows(&h)),
            Request::Stats { target, history } => Some(self.stats_rows(target.as_deref(), history)),
            Request::Logs {
                target,
                lines,
                follow,
            } => Some(self.logs_request(to.client, &target, lines, follow)),
            Request::Subscribe => {
                if let Some(c) = self.clients.get_mut(&to.client) {
                    c.subscribed = true;
                    self.subscribers.insert(to.client);
                }
                Some(Reply::Ok(Vec::new()))
            }
            Request::Run(cmd) => {
                if fds.len() > 3 {
                    return Some(Reply::error(
                        ErrorKind::BadFd,
                        "Run takes at most 3 fds (stdin, stdout, stderr)",
                    ));
                }
                if let Err(e) = who.may_run() {
                    return Some(e);
                }
                match self.spawn(&cmd, &fds, who.run_as(), true) {
                    Ok(spawned) => {
                        let id = self.track(Kind::Run, spawned, cmd.argv, Some(to), now);
                        who.own(&mut self.sup, id);
                        None
                    }
                    Err(SpawnFail::Exec(e)) => {
                        log::warn!("run failed reason={:?}", e.reason);
                        Some(Reply::ExitStatus(e.code, None))
                    }
                    Err(SpawnFail::Os(e)) => {
                        log::error!("spawn failed error={e}");
                        Some(Reply::error(ErrorKind::Spawn, format!("cannot start: {e}")))
                    }
                }
            }
            Request::StartDaemon(_) if who.may_run().is_err() => who.may_run().err(),
            Request::StartDaemon(cmd) => match self.spawn(&cmd, &[], who.run_as(), false) {
                Ok(spawned) => {
                    let id = self.track(Kind::Daemon, spawned, cmd.argv, None, now);
                    who.own(&mut self.sup, id);
                    Some(Reply::Ok(vec![id.to_string()]))
                }
                Err(SpawnFail::Exec(e)) => Some(Reply::error(ErrorKind::Spawn, e.reason)),
                Err(SpawnFail::Os(e)) => {
                    Some(Reply::error(ErrorKind::Spawn, format!("cannot start: {e}")))
                }
            },
            Request::MonitorFd => {
                let mut fds = fds;
                if fds.len() != 1 {
                    return Some(Reply::error(
                        ErrorKind::BadFd,
                        format!("MonitorFD takes exactly one pidfd, got {}", fds.len()),
                    ));
                }
                let fd = fds.remove(0);
                match ProcHandle::from_received(fd) {
                    Ok(h) => Some(self.monitor_for(who, h, now)),
                    Err(msg) => Some(Reply::error(ErrorKind::BadFd, msg)),
                }
            }
            Request::MonitorPid(pid) => match ProcHandle::open(pid) {
                Ok(h) => Some(self.monitor_for(who, h, now)),
                Err(e) if e.kind() == io::ErrorKind::Unsupported => Some(Reply::error(
                    ErrorKind::Unsupported,
                    format!("MonitorPid: {e}; send the process's descriptor with MonitorFD"),
                )),
                Err(e) => Some(Reply::error(
                    ErrorKind::NoSuchProcess,
                    format!("pid {pid}: {e}"),
                )),
            },
            Request::Stop { id, .. } | Request::Signal { id, .. } if !who.owns(&self.sup, id) => {
                Some(Reply::error(
                    ErrorKind::Permission,
                    format!("process {id} is not yours (uid {})", who.peer.uid),
                ))
            }
            Request::Stop { id, grace_ms } => {
                let grace = grace_ms.unwrap_or(self.opts.grace_ms);
                match self.sup.stop(id, grace, Some(to), now) {
                    Ok(fx) => {
                        self.apply(fx);
                        None
                    }
                    Err(reply) => Some(reply),
                }
            }
            Request::SignalService { name, signal } => {
                let Some(signo) = platform::signal_number(&signal.to_string()) else {
                    return Some(Reply::error(
                        ErrorKind::BadRequest,
                        format!("unknown signal: {signal}"),
                    ));
                };
                Some(match self.signal_service(&name, signo) {
                    Ok(0) => Reply::error(
                        ErrorKind::NotRunning,
                        format!("service {name} has no running process"),
                    ),
                    Ok(_) => Reply::Ok(Vec::new()),
                    Err(e) => Reply::error(ErrorKind::NoSuchService, e),
                })
            }
            Request::Signal { id, signal } => {
                let signo = match &signal {
                    SignalSpec::Number(n) => platform::signal_number(&n.to_string()),
                    SignalSpec::Name(n) => platform::signal_number(n),
                };
                let Some(signo) = signo else {
                    return Some(Reply::error(
                        ErrorKind::BadRequest,
                        format!(
                            "unknown signal: {}",
                            match &signal {
                                SignalSpec::Number(n) => n.to_string(),
                                SignalSpec::Name(n) => n.clone(),
                            }
                        ),
                    ));
                };
                match (self.sup.get(id), self.watched.get(&id)) {
                    (None, _) => Some(Reply::error(
                        ErrorKind::NoSuchId,
                        format!("no process {id}"),
                    )),
                    (Some(_), None) => Some(Reply::error(
                        ErrorKind::NotRunning,
                        format!("process {id} has exited"),
                    )),
                    (Some(_), Some(w)) => Some(match w.proc.signal(signo) {
                        Ok(()) => Reply::Ok(Vec::new()),
                        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                            Reply::error(ErrorKind::Permission, format!("signal {id}: {e}"))
                        }
                        Err(e) => Reply::error(ErrorKind::NotRunning, format!("signal {id}: {e}")),
                    }),
                }
            }
        }
    }

    /// `monitor` for a caller: a peer that is not an admin may watch only
    /// its own processes, and owns the entry.
    fn monitor_for(&mut self, who: &Caller, h: ProcHandle, now: Clock) -> Reply {
        let pid = h.pid();
        if pid == platform::getpid() {
            return Reply::error(ErrorKind::BadRequest, format!("pid {pid} is archon itself"));
        }
        if pid == 1 {
            return Reply::error(
                ErrorKind::BadRequest,
                "pid 1 is the init of this namespace: it never exits",
            );
        }
        if who.access != Access::Full && platform::process_uid(pid) != Some(who.peer.uid) {
            return Reply::error(
                ErrorKind::Permission,
                format!("process {pid} is not yours (uid {})", who.peer.uid),
            );
        }
        let reply = self.monitor(h, now);
        if let Reply::Ok(f) = &reply {
            // An entry someone else already watches stays theirs.
            if let Some(id) = f.first().and_then(|i| i.parse().ok()) {
                if self.sup.get(id).is_some_and(|e| e.peer_uid.is_none()) {
                    who.own(&mut self.sup, id);
                }
            }
        }
        reply
    }

    pub(super) fn monitor(&mut self, h: ProcHandle, now: Clock) -> Reply {
        let pid = h.pid();
        if let Some(id) = self.sup.find_live_pid(pid) {
            return Reply::Ok(vec![id.to_string()]);
        }
        if let Some(&id) = self.zombies.get(&pid) {
            // Still a zombie (its pid cannot have been reused): the same
            // entry. Reaped meanwhile: take that edge now, then watch anew.
            self.process_event(id, None);
            if self.zombies.get(&pid) == Some(&id) {
                return Reply::Ok(vec![id.to_string()]);
            }
        }
        let argv = platform::proc_cmdline(pid);
        let id = self.track(Kind::Monitor, h, argv, None, now);
        // It may already be gone: the edge for that has fired before we registered.
        self.process_event(id, None);
        Reply::Ok(vec![id.to_string()])
    }

    /// Runs a manager call for one service and executes its commands.
    /// After a scale (a request or a hook's): what the instances that went
    /// leave behind (histories, ports; a stopped instance is retired
    /// without a state change, so nothing else would), then the event.
    pub(super) fn scaled(&mut self, name: &str, replicas: u32) {
        self.monitor_prune();
        self.endpoints_prune(Some(name));
        self.fire_simple("scaled", name, replicas);
    }

    pub(super) fn service_cmd(
        &mut self,
        name: &str,
        f: impl FnOnce(
            &mut crate::services::Services,
            &str,
            u64,
            u64,
        ) -> Result<Vec<crate::services::manager::Cmd>, String>,
    ) -> Reply {
        let now = self.now();
        match f(&mut self.services, name, now.mono, now.wall) {
            Ok(cmds) => {
                self.apply_svc(cmds);
                Reply::Ok(Vec::new())
            }
            Err(e) if e.starts_with("no service") => Reply::error(ErrorKind::NoSuchService, e),
            Err(e) => Reply::error(ErrorKind::BadRequest, e),
        }
    }
}

/// Who sent a request, and what the access rules let it do.
pub(super) struct Caller {
    pub peer: Peer,
    pub access: Access,
}

impl Caller {
    /// The identity its commands run as: None for archon's own.
    fn run_as(&self) -> Option<&Peer> {
        (self.access == Access::AsPeer).then_some(&self.peer)
    }

    /// Refuses a command archon cannot run as the peer (not root).
    fn may_run(&self) -> Result<(), Reply> {
        match self.run_as() {
            Some(p) if platform::euid() != 0 && platform::euid() != p.uid => Err(Reply::error(
                ErrorKind::Permission,
                format!(
                    "archon is not root: it cannot run commands as uid {}",
                    p.uid
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Marks an entry as the (non-admin) caller's.
    fn own(&self, sup: &mut crate::supervisor::Supervisor, id: u64) {
        if self.access != Access::Full {
            sup.set_peer_uid(id, self.peer.uid);
        }
    }

    /// Whether it may stop or signal entry `id` (an unknown id is left for
    /// the verb to refuse).
    fn owns(&self, sup: &crate::supervisor::Supervisor, id: u64) -> bool {
        self.access == Access::Full
            || sup
                .get(id)
                .is_none_or(|e| e.peer_uid == Some(self.peer.uid))
    }
}
