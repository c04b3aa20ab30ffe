//! The event loop: one thread, one mio `Poll`. It owns every file descriptor
//! (listener, clients, signalfd, one pidfd per watched process), turns what
//! the kernel reports into inputs for the pure `Supervisor`, and executes the
//! effects it returns. Timers are the poll timeout; nothing is polled.
//! Every fd is non-blocking; reads drain until WouldBlock; no call here waits
//! on a client or a child.

mod client;
mod listener;

use crate::cli::Options;
use crate::platform::{self, RawExit};
use crate::protocol::{
    parse_request, Command, ErrorKind, Reply, Request, SignalSpec, PROTOCOL_VERSION,
};
use crate::supervisor::{Clock, Effect, Exit, Kind, ReplyTo, Supervisor};
use client::{Client, ReadOutcome};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Client tokens live above this; process tokens (their ids) below.
const CLIENT_BASE: usize = 1 << 40;
/// Connections served at once; more are told `Error,limit` and closed.
pub const MAX_CLIENTS: usize = 8192;

struct Watched {
    pidfd: OwnedFd,
    kind: Kind,
}

pub struct EventLoop {
    poll: Poll,
    opts: Options,
    listener: mio::net::UnixListener,
    signals: OwnedFd,
    clients: HashMap<u64, Client>,
    next_client: u64,
    watched: HashMap<u64, Watched>,
    sup: Supervisor,
    epoch: Instant,
    /// Held open so that EMFILE on accept can still be answered and drained.
    reserve_fd: Option<File>,
    dev_null: File,
    base_env: Vec<(String, String)>,
    nofile: libc::rlimit,
    shutting_down: bool,
    /// Clients whose reply slots freed up during this iteration.
    resume: Vec<u64>,
    /// Clients that sent `Subscribe`: events go to these without a scan of
    /// every connection.
    subscribers: std::collections::BTreeSet<u64>,
    ignored_signals: Vec<i32>,
}

fn reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

impl EventLoop {
    /// Start-up: everything here may fail, and failure is fatal.
    pub fn new(opts: Options, nofile: libc::rlimit) -> Result<Self, String> {
        let signals = platform::signalfd(&platform::handled_signals())
            .map_err(|e| format!("signalfd: {e}"))?;
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let mut listener = listener::bind(&opts.socket, opts.socket_mode)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("register listener: {e}"))?;
        poll.registry()
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(|e| format!("register signalfd: {e}"))?;
        let dev_null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        let base_env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Ok(EventLoop {
            poll,
            opts,
            listener,
            signals,
            clients: HashMap::new(),
            next_client: 0,
            watched: HashMap::new(),
            sup: Supervisor::new(),
            epoch: Instant::now(),
            reserve_fd: reserve(),
            dev_null,
            base_env,
            nofile,
            shutting_down: false,
            resume: Vec::new(),
            subscribers: std::collections::BTreeSet::new(),
            ignored_signals: platform::ignored_signals(),
        })
    }

    fn now(&self) -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            mono: self.epoch.elapsed().as_millis() as u64,
            wall,
        }
    }

    /// Runs until an orderly shutdown completes. Never returns an error
    /// after start-up: a failing poll is logged and retried.
    pub fn run(mut self) -> i32 {
        log::info!("listening socket={}", self.opts.socket.display());
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.sup.next_deadline().map(|d| {
                let now = self.now().mono;
                Duration::from_millis(d.saturating_sub(now))
            });
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("poll failed error={e}");
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => self.read_signals(),
                    Token(t) if t >= CLIENT_BASE => {
                        let cid = (t - CLIENT_BASE) as u64;
                        if ev.is_write_closed() || ev.is_error() {
                            // Requests sent before the hang-up are still handled.
                            self.service_client(cid, false);
                            self.drop_client(cid, "hung up");
                        } else {
                            self.service_client(cid, !ev.is_read_closed());
                        }
                    }
                    Token(id) => self.process_event(id as u64),
                }
            }
            let now = self.now();
            let fx = self.sup.tick(now);
            self.apply(fx);
            while let Some(cid) = self.resume.pop() {
                if self.clients.get(&cid).is_some_and(|c| c.can_take_request()) {
                    self.service_client(cid, false);
                }
            }
            if self.shutting_down && self.sup.started_alive() == 0 {
                return self.finish_shutdown();
            }
        }
    }

    fn finish_shutdown(mut self) -> i32 {
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for cid in ids {
            if let Some(c) = self.clients.get_mut(&cid) {
                let _ = c.flush();
            }
        }
        if let Err(e) = std::fs::remove_file(&self.opts.socket) {
            log::warn!(
                "cannot remove socket path={} error={e}",
                self.opts.socket.display()
            );
        }
        log::info!("stopped");
        0
    }

    fn begin_shutdown(&mut self, why: &str) {
        let now = self.now();
        if self.shutting_down {
            log::info!("second {why}: killing what is left now");
            let fx = self.sup.hurry(now);
            self.apply(fx);
            return;
        }
        log::info!("shutting down reason={why}");
        self.shutting_down = true;
        let _ = self.poll.registry().deregister(&mut self.listener);
        let fx = self.sup.shutdown(self.opts.grace_ms, now);
        self.apply(fx);
    }

    fn read_signals(&mut self) {
        while let Some(sig) = platform::read_signal(&self.signals) {
            log::debug!("signal received signal={}", platform::signal_name(sig));
            match sig {
                libc::SIGCHLD => self.reap(),
                libc::SIGTERM | libc::SIGINT => {
                    self.begin_shutdown(&format!("SIG{}", platform::signal_name(sig)))
                }
                _ => log::info!("ignoring signal={}", platform::signal_name(sig)),
            }
        }
    }

    // ----- accepting -------------------------------------------------------

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.add_client(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Free the reserve fd, take the connection and refuse it,
                    // so the pending queue drains instead of waking us forever.
                    // (Linux reports EMFILE before looking at the queue, so
                    // an empty queue shows up only once the reserve is free.)
                    self.reserve_fd = None;
                    match self.listener.accept() {
                        Ok((mut s, _)) => {
                            use std::io::Write;
                            let reply = Reply::error(ErrorKind::Limit, "out of file descriptors");
                            let _ = s.write(reply.encode().as_bytes());
                            log::warn!("out of file descriptors; refused a connection");
                        }
                        Err(_) => {
                            self.reserve_fd = reserve();
                            return;
                        }
                    }
                    self.reserve_fd = reserve();
                    if self.reserve_fd.is_none() {
                        // drop_client retries once a descriptor is free.
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("accept failed error={e}");
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, mut stream: mio::net::UnixStream) {
        if self.clients.len() >= MAX_CLIENTS {
            use std::io::Write;
            let _ = stream.write(
                Reply::error(ErrorKind::Limit, "too many connections")
                    .encode()
                    .as_bytes(),
            );
            return;
        }
        let cid = self.next_client;
        self.next_client += 1;
        let token = Token(CLIENT_BASE + cid as usize);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!("cannot register client error={e}");
            return;
        }
        let uid = listener::peer_uid(&stream);
        log::debug!("client connected client={cid} uid={uid}");
        self.clients.insert(cid, Client::new(stream));
        self.service_client(cid, false);
    }

    // ----- clients ---------------------------------------------------------

    fn drop_client(&mut self, cid: u64, why: &str) {
        if let Some(mut c) = self.clients.remove(&cid) {
            self.subscribers.remove(&cid);
            log::debug!("client gone client={cid} reason={why}");
            let _ = self.poll.registry().deregister(&mut c.stream);
            let now = self.now();
            let fx = self.sup.client_gone(cid, self.opts.grace_ms, now);
            self.apply(fx);
            if self.reserve_fd.is_none() && !self.shutting_down {
                self.reserve_fd = reserve();
                // Connections may have queued while no reserve was held.
                self.accept_all();
            }
        }
    }

    /// Reads and handles requests while the client may send more, flushes,
    /// and closes it when it is done or misbehaving. `edge` is true when a
    /// readable event without a hang-up brought us here: then a short read
    /// may stand for "drained" (see `Client::next_request`).
    fn service_client(&mut self, cid: u64, edge: bool) {
        if let Some(c) = self.clients.get_mut(&cid) {
            c.begin_service(edge);
        }
        loop {
            let Some(c) = self.clients.get_mut(&cid) else {
                return;
            };
            if !c.can_take_request() {
                break;
            }
            match c.next_request() {
                Ok(ReadOutcome::Line(req)) => {
                    log::trace!(
                        "request client={cid} line={:?}",
                        String::from_utf8_lossy(&req.line)
                    );
                    self.handle_line(cid, req);
                }
                Ok(ReadOutcome::TooLong) => {
                    let seq = c.open_slot();
                    c.closing = true;
                    c.fill_slot(
                        seq,
                        Reply::error(
                            ErrorKind::TooLong,
                            format!("request line over {} bytes", crate::protocol::MAX_LINE),
                        )
                        .encode(),
                    );
                    log::warn!("client sent an over-long line client={cid}");
                    break;
                }
                Ok(ReadOutcome::Nothing) => break,
                Err(e) => {
                    self.drop_client(cid, &format!("read error: {e}"));
                    return;
                }
            }
        }
        self.flush_client(cid);
    }

    fn flush_client(&mut self, cid: u64) {
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        if let Err(e) = c.flush() {
            self.drop_client(cid, &format!("write error: {e}"));
            return;
        }
        // WRITABLE interest only while output waits: no wake-up per reply.
        let want = c.output_waiting();
        if want != c.want_write {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(CLIENT_BASE + cid as usize);
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut c.stream, token, interest)
            {
                log::warn!("cannot reregister client={cid} error={e}");
            }
            c.want_write = want;
        }
        if c.closing {
            if c.drain_for_close() {
                self.drop_client(cid, "closed after an error");
            }
        } else if c.over_limit() {
            log::warn!("client does not read its replies; disconnecting client={cid}");
            self.drop_client(cid, "output over limit");
        } else if c.finished() {
            self.drop_client(cid, "done");
        }
    }

    fn reply_to(&mut self, to: ReplyTo, reply: &Reply) {
        if let Some(c) = self.clients.get_mut(&to.client) {
            c.fill_slot(to.seq, reply.encode());
        }
        self.flush_client(to.client);
        // A slot freed may let a back-pressured client go on; that happens
        // after the current event, not here (no recursion, whatever the
        // client pipelined).
        self.resume.push(to.client);
    }

    fn handle_line(&mut self, cid: u64, raw: client::Request) {
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        let seq = c.open_slot();
        let fds = raw.fds;
        let to = ReplyTo { client: cid, seq };
        let answer = match parse_request(&raw.line) {
            Err((kind, msg)) => Some(Reply::error(kind, msg)),
            Ok(_) if raw.fds_truncated => Some(Reply::error(
                ErrorKind::BadFd,
                "too many fds sent with the request",
            )),
            Ok(req) => self.handle_request(to, req, fds),
        };
        if let Some(reply) = answer {
            if let Some(c) = self.clients.get_mut(&cid) {
                c.fill_slot(seq, reply.encode());
            }
        }
    }

    /// Returns the reply now, or None when it comes later (Run, Stop).
    fn handle_request(&mut self, to: ReplyTo, req: Request, fds: Vec<OwnedFd>) -> Option<Reply> {
        let fd_free = matches!(req, Request::Run(_) | Request::MonitorFd);
        if !fd_free && !fds.is_empty() {
            return Some(Reply::error(ErrorKind::BadFd, "this request takes no fds"));
        }
        if self.shutting_down
            && !matches!(
                req,
                Request::Status(_) | Request::Version | Request::Subscribe
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
                match self.spawn(&cmd, &fds) {
                    Ok(spawned) => {
                        self.track(Kind::Run, spawned, cmd.argv, Some(to), now);
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
            Request::StartDaemon(cmd) => match self.spawn(&cmd, &[]) {
                Ok(spawned) => {
                    let id = self.track(Kind::Daemon, spawned, cmd.argv, None, now);
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
                match platform::pidfd_pid(&fd) {
                    Ok(pid) => Some(self.monitor(pid, fd, now)),
                    Err(msg) => Some(Reply::error(ErrorKind::BadFd, msg)),
                }
            }
            Request::MonitorPid(pid) => match platform::pidfd_open(pid) {
                Ok(fd) => Some(self.monitor(pid, fd, now)),
                Err(e) => Some(Reply::error(
                    ErrorKind::NoSuchProcess,
                    format!("pid {pid}: {e}"),
                )),
            },
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
            Request::Signal { id, signal } => {
                let signo = match &signal {
                    SignalSpec::Number(n) => platform::signal_number(&n.to_string()),
                    SignalSpec::Name(n) => platform::signal_number(n),
                };
                let Some(signo) = signo else {
                    return Some(Reply::error(
                        ErrorKind::BadRequest,
                        format!("unknown signal: {signal:?}"),
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
                    (Some(_), Some(w)) => {
                        Some(match platform::pidfd_send_signal(&w.pidfd, signo) {
                            Ok(()) => Reply::Ok(Vec::new()),
                            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                                Reply::error(ErrorKind::Permission, format!("signal {id}: {e}"))
                            }
                            Err(e) => {
                                Reply::error(ErrorKind::NotRunning, format!("signal {id}: {e}"))
                            }
                        })
                    }
                }
            }
        }
    }

    // ----- processes -------------------------------------------------------

    fn spawn(&self, cmd: &Command, fds: &[OwnedFd]) -> Result<platform::Spawned, SpawnFail> {
        let mut env: Vec<(String, String)> = self.base_env.clone();
        for (k, v) in &cmd.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let program = platform::resolve_program(&cmd.argv[0], path).map_err(SpawnFail::Exec)?;
        let nul = |_| {
            SpawnFail::Exec(platform::ExecError {
                code: 127,
                reason: "argument or environment contains NUL".into(),
            })
        };
        let argv = platform::to_cstrings(cmd.argv.iter().cloned())
            .ok_or(())
            .map_err(nul)?;
        let envp: Vec<CString> = platform::to_cstrings(env.iter().map(|(k, v)| format!("{k}={v}")))
            .ok_or(())
            .map_err(nul)?;
        let mut stdio = [self.dev_null.as_raw_fd(), 1, 2];
        for (i, fd) in fds.iter().enumerate() {
            stdio[i] = fd.as_raw_fd();
        }
        let spec = platform::SpawnSpec {
            program,
            argv,
            envp,
            stdio,
            nofile: self.nofile,
            ignored_signals: self.ignored_signals.clone(),
        };
        platform::spawn(&spec).map_err(SpawnFail::Os)
    }

    fn track(
        &mut self,
        kind: Kind,
        spawned: platform::Spawned,
        argv: Vec<String>,
        owner: Option<ReplyTo>,
        now: Clock,
    ) -> u64 {
        let (id, fx) = self.sup.started(kind, spawned.pid, argv, owner, now);
        log::debug!("started id={id} kind={} pid={}", kind.as_str(), spawned.pid);
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&spawned.pidfd.as_raw_fd()),
            Token(id as usize),
            Interest::READABLE,
        ) {
            // Still tracked: SIGCHLD and the reaper will find its exit.
            log::error!("cannot watch pidfd id={id} error={e}");
        }
        self.watched.insert(
            id,
            Watched {
                pidfd: spawned.pidfd,
                kind,
            },
        );
        self.apply(fx);
        id
    }

    fn monitor(&mut self, pid: i32, fd: OwnedFd, now: Clock) -> Reply {
        if let Some(id) = self.sup.find_live_pid(pid) {
            return Reply::Ok(vec![id.to_string()]);
        }
        let argv = platform::proc_cmdline(pid);
        let id = self.track(
            Kind::Monitor,
            platform::Spawned { pid, pidfd: fd },
            argv,
            None,
            now,
        );
        // It may already be gone: the edge for that has fired before we registered.
        self.process_event(id);
        Reply::Ok(vec![id.to_string()])
    }

    fn process_event(&mut self, id: u64) {
        let Some(w) = self.watched.get(&id) else {
            return;
        };
        match w.kind {
            Kind::Run | Kind::Daemon => self.reap(),
            Kind::Monitor => {
                // Readable means the process has exited; check rather than
                // trust the edge (monitor() calls this without one).
                if !platform::pidfd_exited(&w.pidfd) {
                    return;
                }
                let info = platform::pidfd_exit_info(&w.pidfd);
                let now = self.now();
                let already = self
                    .sup
                    .get(id)
                    .is_some_and(|e| e.state == crate::supervisor::State::Exited);
                match info {
                    platform::PidfdExit::Exited(raw) => {
                        let exit = to_exit(raw);
                        let fx = if already {
                            self.sup.exit_learned(id, exit, now)
                        } else {
                            self.sup.exited(id, exit, now)
                        };
                        self.apply(fx);
                        self.forget(id);
                    }
                    // Its parent has not reaped it yet: record the exit now and
                    // keep the pidfd, whose next edge (the reap) brings the status.
                    platform::PidfdExit::NotYet if !already => {
                        let fx = self.sup.exited(id, Exit::Unknown, now);
                        let fx = fx
                            .into_iter()
                            .filter(|f| !matches!(f, Effect::Forget { .. }))
                            .collect();
                        self.apply(fx);
                    }
                    platform::PidfdExit::Unsupported if !already => {
                        let fx = self.sup.exited(id, Exit::Unknown, now);
                        self.apply(fx);
                    }
                    platform::PidfdExit::NotYet | platform::PidfdExit::Unsupported => {}
                }
            }
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some(w) = self.watched.remove(&id) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&w.pidfd.as_raw_fd()));
        }
    }

    /// The one reaper: every exited child of archon is collected here and its
    /// status routed by pid to the entry that tracks it.
    fn reap(&mut self) {
        while let Some((pid, raw)) = platform::reap_one() {
            match self.sup.find_live_pid(pid) {
                Some(id)
                    if self
                        .watched
                        .get(&id)
                        .is_some_and(|w| w.kind != Kind::Monitor) =>
                {
                    let exit = to_exit(raw);
                    log::info!("child exited id={id} pid={pid} status={}", exit.describe());
                    let now = self.now();
                    let fx = self.sup.exited(id, exit, now);
                    self.apply(fx);
                }
                _ => log::debug!("reaped orphan pid={pid}"),
            }
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for fx in effects {
            match fx {
                Effect::Reply { to, reply } => self.reply_to(to, &reply),
                Effect::Event(row) => {
                    let text = row.encode();
                    let subs: Vec<u64> = self.subscribers.iter().copied().collect();
                    for cid in subs {
                        if let Some(c) = self.clients.get_mut(&cid) {
                            c.push_event(&text);
                        }
                        self.flush_client(cid);
                    }
                }
                Effect::Forget { id } => self.forget(id),
                Effect::Signal {
                    id,
                    pid,
                    signo,
                    group,
                } => {
                    if let Some(w) = self.watched.get(&id) {
                        if let Err(e) = platform::pidfd_send_signal(&w.pidfd, signo) {
                            log::debug!("signal failed id={id} error={e}");
                        }
                        if group {
                            let _ = platform::kill_group(pid, signo);
                        }
                        log::debug!(
                            "signalled id={id} pid={pid} signal={}",
                            platform::signal_name(signo)
                        );
                    }
                }
            }
        }
    }
}

enum SpawnFail {
    Exec(platform::ExecError),
    Os(io::Error),
}

fn to_exit(raw: RawExit) -> Exit {
    match raw {
        RawExit::Code(c) => Exit::Code(c),
        RawExit::Signal(n) => Exit::Signal(n, platform::signal_name(n)),
    }
}
