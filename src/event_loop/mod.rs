//! The event loop: one thread, one mio `Poll`. It owns every file descriptor
//! (listener, clients, the signal source, one process handle per watched
//! process), turns what
//! the kernel reports into inputs for the pure `Supervisor`, and executes the
//! effects it returns. Timers are the poll timeout; nothing is polled.
//! Every fd is non-blocking; reads drain until WouldBlock; no call here waits
//! on a client or a child.

mod activation;
mod checks;
mod client;
mod clients;
mod hook;
mod lifecycle;
mod limiter;
mod listener;
mod logs;
mod metrics;
mod monitor;
mod notify;
mod output;
mod pages;
mod ports;
mod probes;
mod registry;
mod requests;
mod sources;
mod stream;
mod svc;
mod tree;
mod worker;
mod worker_start;

pub use worker_start::check as check_config;

use crate::cli::Options;
use crate::platform::{self, sig, ProcHandle, RawExit};
use crate::protocol::{
    parse_request, Command, ErrorKind, PowerAction, Reply, Request, SignalSpec, PROTOCOL_VERSION,
};
use crate::supervisor::{Clock, Effect, Exit, Kind, ReplyTo, Supervisor};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use sources::Source;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Connections served at once; more are told `Error,limit` and closed.
pub const MAX_CLIENTS: usize = 8192;

struct Watched {
    proc: ProcHandle,
    kind: Kind,
}

/// The last step of a shutdown as PID 1: every process still in the
/// namespace gets SIGTERM, then SIGKILL after the grace period.
struct Sweep {
    killed: bool,
    deadline: u64,
    /// Handles of the processes found, so their exit wakes the loop even
    /// when they are not archon's children.
    watched: HashMap<i32, ProcHandle>,
}

pub struct EventLoop {
    poll: Poll,
    opts: Options,
    listener: Option<mio::net::UnixListener>,
    signals: platform::SignalSource,
    /// Where process handles' exits come from (`ExitWatch`).
    exits: platform::ExitWatch,
    clients: HashMap<u64, client::Client>,
    next_client: u64,
    watched: HashMap<u64, Watched>,
    sup: Supervisor,
    epoch: Instant,
    /// Held open so that EMFILE on accept can still be answered and drained.
    reserve_fd: Option<File>,
    dev_null: File,
    /// archon's environment, as children get it.
    env: Env,
    nofile: platform::Rlimit,
    shutting_down: bool,
    /// Clients with requests left unread (their per-pass budget was spent,
    /// or a reply slot or output room freed up): served again next pass,
    /// which then does not wait.
    again: std::collections::BTreeSet<u64>,
    /// Clients whose output waits, by when they stall out: (deadline, id).
    stalls: std::collections::BTreeSet<(u64, u64)>,
    /// Clients that sent `Subscribe`: events go to these without a scan of
    /// every connection.
    subscribers: std::collections::BTreeSet<u64>,
    /// Recent output of every service instance (`Logs`).
    rings: logs::Rings,
    /// Clients following a service's output: (service, instance).
    followers: std::collections::BTreeMap<u64, (String, Option<u32>)>,
    ignored_signals: Vec<i32>,
    /// archon is PID 1 (of the system or of a container).
    pid1: bool,
    /// archon is PID 1 of the system itself: it must never exit.
    system_init: bool,
    /// Poweroff, Reboot or Halt was asked for (verb or signal).
    power: Option<PowerAction>,
    sweep: Option<Sweep>,
    /// archon's exit status when not the main command's (exec failure,
    /// an essential service's failure).
    exit_code: Option<i32>,
    services: crate::services::Services,
    /// Service pipes (output, readiness) by token.
    pipes: HashMap<u64, output::Pipe>,
    next_pipe: u64,
    sink_out: output::Sink,
    sink_err: output::Sink,
    /// Output pipes left unread while their sink is full.
    paused: std::collections::BTreeSet<u64>,
    /// Service pipes that had more than a pass's budget: read next pass.
    pipes_again: std::collections::BTreeSet<u64>,
    /// Services' log files, by path.
    file_logs: HashMap<String, output::FileLog>,
    /// Readiness and health checks running: check entry -> (service entry,
    /// kind); and those due: (when, service entry, kind).
    checks: HashMap<u64, (u64, checks::CheckKind)>,
    check_due: std::collections::BTreeSet<(u64, u64, checks::CheckKind)>,
    /// Running checks' timeouts: (when, check entry).
    check_deadlines: std::collections::BTreeSet<(u64, u64)>,
    /// The Lua worker (config evaluation and hooks) and its state.
    lua: worker::Lua,
    /// Commands hooks run: their exits fire no hook.
    internal_runs: std::collections::HashSet<u64>,
    /// Monitored processes that exited and that their parent has not
    /// reaped yet (pid -> entry): a second `MonitorPid` of one gets the same
    /// id, not a new entry and pidfd.
    zombies: HashMap<i32, u64>,
    /// Who may do what on the socket.
    policy: crate::access::Policy,
    /// The supervisor's effects not yet executed, and whether `apply` is
    /// draining them (see `apply`).
    effects: std::collections::VecDeque<Effect>,
    applying: bool,
    /// Open connections of each uid that is not an admin.
    conns_by_uid: HashMap<u32, usize>,
    /// Scratch buffer for the fds a request carries (`Client::next_request`).
    cmsg_buf: Vec<u8>,
    /// What hooks asked for and is not done yet.
    hook_actions: std::collections::VecDeque<crate::protocol::worker::HookAction>,
    /// Events for hooks waiting for the end of the iteration (`flush_hooks`).
    hook_pending: std::collections::VecDeque<crate::protocol::worker::HookEvent>,
    /// Commands hooks ran with a callback: entry -> (callback, hook location).
    hook_runs: HashMap<u64, (u64, String)>,
    /// A SIGCHLD arrived: reap (waitpid(-1)) once this iteration's events
    /// are handled.
    chld_pending: bool,
    /// PATH searches of services' programs.
    programs: ProgramCache,
    /// The systemd notification socket and its NOTIFY_SOCKET value.
    notify: Option<OwnedFd>,
    notify_name: Option<String>,
    /// The notify socket had more than a pass's budget: read on next pass.
    notify_again: bool,
    /// The exit watch had more than a pass's budget: read on next pass.
    exits_again: bool,
    /// Inside `notify_event` (which may end a process): not re-entered.
    reading_notify: bool,
    /// Resource monitoring: sampled processes, due samples, histories.
    monitoring: monitor::Monitoring,
    /// Services' ports and sockets, bound and held.
    endpoints: ports::Endpoints,
    /// Startup, readiness and liveness probes.
    probes: probes::Probes,
    /// Stops held back while their instances drain.
    drains: registry::Drains,
    /// Socket-activated services waiting for a connection.
    activation: activation::Activation,
    /// `--metrics`: the scrape endpoint, and whether its listener had more
    /// than a pass's budget.
    metrics: Option<metrics::Server>,
    metrics_again: bool,
    /// The control listener's accept budget ran out with more waiting.
    accept_again: bool,
    /// Passes of the loop so far, and the `Tree` rows of the pass that
    /// made them: however many ask in one pass, /proc is walked once.
    pass: u64,
    /// When to give back the pages start-up (or a reload) touched
    /// (`pages.rs`).
    release_at: Option<u64>,
    tree_cache: Option<(u64, std::rc::Rc<str>)>,
}

/// The access policy: `--allow` rules with their names resolved (at
/// start-up, before the loop runs: an unknown name is a start-up error).
fn policy(rules: &[crate::access::RuleText]) -> Result<crate::access::Policy, String> {
    use crate::access::{Rule, Who};
    let mut out = crate::access::Policy {
        own_uid: platform::uid(),
        rules: Vec::new(),
    };
    for r in rules {
        let who = if r.group {
            Who::Gid(platform::lookup_group(&r.name).map_err(|e| format!("--allow: {e}"))?)
        } else {
            Who::Uid(
                platform::lookup_user(&r.name)
                    .map_err(|e| format!("--allow: {e}"))?
                    .0,
            )
        };
        out.rules.push(Rule {
            who,
            grants: r.grants.clone(),
        });
    }
    Ok(out)
}

fn reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

impl EventLoop {
    /// Start-up: everything here may fail, and failure is fatal.
    pub fn new(opts: Options, nofile: platform::Rlimit) -> Result<Self, String> {
        let port_range = opts.ports;
        let mut signals = platform::SignalSource::new(&platform::handled_signals())
            .map_err(|e| format!("signal source: {e}"))?;
        let mut exits = platform::ExitWatch::new().map_err(|e| format!("exit watch: {e}"))?;
        // First: the priority is archon's from its first child on, and a
        // client that can connect finds it set.
        match platform::prioritise(opts.nice) {
            Ok((nice, slice)) => {
                log::debug!("archon runs at nice {nice}, slice {slice} ns; children get nice 0 and the default slice")
            }
            Err(e) => log::debug!("scheduling priority not changed: {e}"),
        }
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        // Read and write: it is the stdin of commands and the stdout or
        // stderr of services with `stdout = "null"` (a read-only one made
        // every write fail with EBADF).
        let dev_null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?;
        let ignored_signals = platform::ignored_signals();
        let policy = policy(&opts.allow)?;
        // The config is evaluated by a worker process, even at start-up:
        // archon itself runs no Lua and no NSS look-up. Before the socket
        // is bound: a config that fails leaves no socket file behind.
        let (services, lua) = match &opts.config {
            Some(path) => {
                let boot_env = Env::from_process();
                let spawner = worker::Spawner {
                    env: &boot_env,
                    nofile,
                    ignored: &ignored_signals,
                    stdin: dev_null.as_raw_fd(),
                };
                let (config, lua) =
                    worker::boot(&poll, &mut exits, path, opts.config_timeout_ms, &spawner)?;
                (crate::services::Services::new(config), lua)
            }
            None => (crate::services::Services::default(), worker::Lua::default()),
        };
        let entrypoint = !opts.command.is_empty();
        let listener = if opts.use_socket {
            match listener::bind(&opts.socket, opts.socket_mode) {
                Ok(mut l) => {
                    poll.registry()
                        .register(&mut l, Source::Listener.token(), Interest::READABLE)
                        .map_err(|e| format!("register listener: {e}"))?;
                    // Children (the main command, services, Run commands)
                    // reach this archon with a plain `archonctl`. Set while
                    // archon has no other thread.
                    let abs = std::env::current_dir()
                        .map(|d| d.join(&opts.socket))
                        .unwrap_or_else(|_| opts.socket.clone());
                    std::env::set_var("ARCHON_SOCKET", abs);
                    Some(l)
                }
                // The main command matters more than the socket.
                Err(e) if entrypoint => {
                    log::warn!("running without a control socket: {e}");
                    None
                }
                Err(e) => return Err(format!("{e}; refusing to start")),
            }
        } else {
            None
        };
        // After ARCHON_SOCKET is set: every child gets it.
        let env = Env::from_process();
        platform::trim_heap();
        let pid1 = platform::getpid() == 1;
        let system_init = platform::is_system_init();
        if system_init {
            if let Err(e) = platform::ctrl_alt_del_to_sigint() {
                log::warn!("cannot route Ctrl-Alt-Del to SIGINT error={e}");
            }
        }
        if !pid1 && opts.subreaper {
            match platform::set_child_subreaper() {
                Ok(()) => {
                    log::debug!("child subreaper: orphans of archon's children come back to it")
                }
                Err(e) => log::warn!("cannot become a child subreaper error={e}"),
            }
        }
        let metrics = match &opts.metrics {
            Some(addr) => {
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let mut m = metrics::bind(addr, wall)?;
                m.register(poll.registry())
                    .map_err(|e| format!("register --metrics: {e}"))?;
                log::info!("metrics address={}", m.local_addr());
                Some(m)
            }
            None => None,
        };
        signals
            .register(poll.registry(), Source::Signals.token())
            .map_err(|e| format!("register the signal source: {e}"))?;
        exits
            .register(poll.registry(), Source::Exits.token())
            .map_err(|e| format!("register the exit watch: {e}"))?;
        Ok(EventLoop {
            poll,
            opts,
            listener,
            signals,
            exits,
            clients: HashMap::new(),
            next_client: 0,
            watched: HashMap::new(),
            sup: Supervisor::new(),
            epoch: Instant::now(),
            reserve_fd: reserve(),
            dev_null,
            env,
            nofile,
            shutting_down: false,
            again: Default::default(),
            stalls: Default::default(),
            subscribers: std::collections::BTreeSet::new(),
            rings: Default::default(),
            followers: Default::default(),
            ignored_signals,
            pid1,
            system_init,
            power: None,
            sweep: None,
            exit_code: None,
            services,
            pipes: HashMap::new(),
            next_pipe: 0,
            sink_out: output::Sink::open(1),
            sink_err: output::Sink::open(2),
            paused: std::collections::BTreeSet::new(),
            pipes_again: Default::default(),
            file_logs: HashMap::new(),
            notify: None,
            notify_name: None,
            notify_again: false,
            exits_again: false,
            reading_notify: false,
            pass: 0,
            release_at: None,
            monitoring: Default::default(),
            endpoints: ports::Endpoints::new(port_range),
            probes: Default::default(),
            drains: Default::default(),
            activation: Default::default(),
            metrics,
            metrics_again: false,
            accept_again: false,
            tree_cache: None,
            programs: Default::default(),
            chld_pending: false,
            lua,
            internal_runs: Default::default(),
            cmsg_buf: client::Client::cmsg_buffer(),
            policy,
            effects: Default::default(),
            applying: false,
            conns_by_uid: HashMap::new(),
            zombies: HashMap::new(),
            hook_actions: std::collections::VecDeque::new(),
            hook_pending: std::collections::VecDeque::new(),
            hook_runs: HashMap::new(),
            checks: HashMap::new(),
            check_due: std::collections::BTreeSet::new(),
            check_deadlines: std::collections::BTreeSet::new(),
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
        if self.listener.is_some() {
            log::info!("listening socket={}", self.opts.socket.display());
        }
        let now = self.now();
        self.fire_simple("started", "archon", 0);
        let cmds = self.services.boot(now.mono, now.wall);
        self.apply_svc(cmds);
        self.activation_refresh();
        self.flush_hooks();
        self.apply_hook_actions();
        // Booting many services leaves the heap fragmented by short-lived
        // allocations: give the free pages back once.
        platform::trim_heap();
        if !self.opts.command.is_empty() && !self.shutting_down {
            self.start_main();
        }
        self.release_later();
        let mut events = Events::with_capacity(1024);
        let mut poll_failures = 0u32;
        loop {
            self.pass += 1;
            if !self.shutting_down && self.sup.main_exit().is_some() {
                self.begin_shutdown("main command exited", sig::TERM);
            }
            if self.shutting_down
                && self.sup.started_alive() == 0
                && self.worker_settled()
                && self.sweep_done()
            {
                return self.finish_shutdown();
            }
            let deadline = [
                self.sup.next_deadline(),
                self.sweep.as_ref().map(|sw| sw.deadline),
                self.services.next_deadline(),
                self.check_due.first().map(|c| c.0),
                self.check_deadlines.first().map(|c| c.0),
                self.monitoring.next_due(),
                self.probes.next_due(),
                self.drains.next_due(),
                self.metrics.as_ref().and_then(|m| m.next_deadline()),
                self.stalls.first().map(|s| s.0),
                self.worker_deadline(),
                // Hook calls or actions left, or clients with requests
                // unread: do not wait.
                (!self.hook_actions.is_empty()
                    || !self.hook_pending.is_empty()
                    || !self.again.is_empty()
                    || self.notify_again
                    || self.exits_again
                    || self.metrics_again
                    || self.accept_again
                    || !self.pipes_again.is_empty()
                    || self.lua.unread
                    || self.lua.read_again)
                    .then_some(0),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = self.release_due(deadline);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // Should not happen; if it keeps happening, keep reaping
                    // (PID 1 must not exit) without spinning a core.
                    poll_failures += 1;
                    log::error!("poll failed error={e} failures={poll_failures}");
                    self.reap();
                    if poll_failures > 3 {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                continue;
            }
            poll_failures = 0;
            for ev in events.iter() {
                let Some(source) = Source::of(ev.token()) else {
                    continue;
                };
                match source {
                    Source::Listener => self.accept_all(),
                    Source::Signals => self.read_signals(),
                    Source::SinkOut => self.flush_sink(false),
                    Source::SinkErr => self.flush_sink(true),
                    Source::Notify => self.notify_event(),
                    Source::WorkerSock => self.worker_ready(),
                    Source::WorkerExit => self.worker_exited(),
                    Source::Pipe(t) => self.pipe_event(t),
                    // Only wakes the loop: `sweep_done` looks again.
                    Source::Sweep(_) => {}
                    Source::Client(cid) => self.client_event(
                        cid,
                        ev.is_write_closed() || ev.is_error(),
                        ev.is_read_closed(),
                    ),
                    Source::Process(id) => self.process_event(id, None),
                    Source::Exits => self.exits_event(),
                    Source::MetricsListener => self.metrics_accept(),
                    Source::MetricsConn(c) => self.metrics_conn(c),
                    Source::Probe(p) => self.probe_event(p),
                    Source::Activate(a) => self.activation_event(a),
                }
            }
            if std::mem::take(&mut self.chld_pending) {
                self.reap();
            }
            let now = self.now();
            let fx = self.sup.tick(now);
            self.warn_grace_kills(&fx);
            self.apply(fx);
            let cmds = self.services.tick(now.mono, now.wall);
            self.apply_svc(cmds);
            if !self.shutting_down {
                self.run_due_checks();
                self.run_due_probes();
            }
            self.drains_due();
            self.flush_hooks();
            self.apply_hook_actions();
            // After the hooks' actions: a limit's stop waits for what its
            // hook started (evidence) to be spawned first.
            self.sample_due();
            if self.lua.read_again {
                self.worker_ready();
            }
            if self.lua.unread {
                self.worker_replies();
            }
            self.worker_check_deadline();
            self.expire_stalled();
            self.serve_again();
            if std::mem::take(&mut self.notify_again) {
                self.notify_event();
            }
            if self.exits_again {
                self.exits_event();
            }
            if std::mem::take(&mut self.metrics_again) {
                self.metrics_accept();
            }
            if std::mem::take(&mut self.accept_again) {
                self.accept_all();
            }
            if self.metrics.is_some() {
                self.metrics_expire();
            }
            for token in std::mem::take(&mut self.pipes_again) {
                self.pipe_event(token);
            }
        }
    }

    // ----- processes -------------------------------------------------------

    /// Starts a `Run` or `StartDaemon` command; with `as_peer`, as that
    /// peer's uid, gid and groups.
    fn spawn(
        &self,
        cmd: &Command,
        fds: &[OwnedFd],
        as_peer: Option<&crate::access::Peer>,
        report_exec_failure: bool,
    ) -> Result<ProcHandle, SpawnFail> {
        // A peer's command does not get archon's environment (it may hold
        // secrets of root's): only a standard PATH and what the request sets.
        let peer_path = as_peer.map(|_| ("PATH", "/usr/local/bin:/usr/bin:/bin"));
        let (envp, path) = self.env.envp(
            as_peer.is_some(),
            peer_path
                .into_iter()
                .chain(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )?;
        let (program, argv, fail_with) = match exec_parts(&cmd.argv, path.as_deref(), None) {
            Ok((program, argv)) => (program, argv, None),
            Err(SpawnFail::Exec(e)) if report_exec_failure => {
                log::info!("run failed reason={:?}", e.reason);
                let reason = CString::new(e.reason.replace('\0', "?")).unwrap_or_default();
                (CString::default(), Vec::new(), Some((e.code, reason)))
            }
            Err(e) => return Err(e),
        };
        let mut stdio = [self.dev_null.as_raw_fd(), 1, 2];
        for (i, fd) in fds.iter().enumerate() {
            stdio[i] = fd.as_raw_fd();
        }
        let mut spec = platform::SpawnSpec::new(
            program,
            argv,
            envp,
            stdio,
            self.nofile,
            self.ignored_signals.clone(),
        );
        if let Some(p) = as_peer {
            spec.uid = Some(p.uid);
            spec.gid = Some(p.gid);
            let mut groups = p.groups.clone();
            if !groups.contains(&p.gid) {
                groups.insert(0, p.gid);
            }
            spec.groups = Some(groups);
        }
        spec.fail_with = fail_with;
        platform::spawn(&spec).map_err(SpawnFail::Os)
    }

    fn track(
        &mut self,
        kind: Kind,
        spawned: ProcHandle,
        argv: Vec<String>,
        owner: Option<ReplyTo>,
        now: Clock,
    ) -> u64 {
        let (id, fx) = self.sup.started(kind, spawned.pid(), argv, owner, now);
        log::debug!(
            "started id={id} kind={} pid={}",
            kind.as_str(),
            spawned.pid()
        );
        self.watch(id, kind, spawned);
        // Services are sampled once they are bound to their instance
        // (`svc.rs`); `Run` commands are not.
        if matches!(kind, Kind::Daemon | Kind::Monitor) {
            let profile = self.profile_of(None);
            self.monitor_start(id, monitor::RingKey::Entry(id), profile);
        }
        self.apply(fx);
        id
    }

    /// Makes a tracked process's exit wake the loop.
    fn watch(&mut self, id: u64, kind: Kind, proc: ProcHandle) {
        if let Err(e) = self
            .exits
            .add(self.poll.registry(), &proc, Source::Process(id).token())
        {
            // Still tracked: SIGCHLD and the reaper will find its exit.
            log::error!("cannot watch the process id={id} error={e}");
        }
        self.watched.insert(id, Watched { proc, kind });
    }

    /// The exit watch's own queue is readable (FreeBSD): each event is a
    /// handle's, by its token, with the status the kernel gave. Bounded
    /// per pass; the rest is read on the next.
    fn exits_event(&mut self) {
        const PER_PASS: usize = 256;
        let mut fired = Vec::new();
        self.exits_again = self.exits.drain(&mut fired, PER_PASS);
        for (token, status) in fired {
            match Source::of(token) {
                Some(Source::Process(id)) => self.process_event(id, status),
                Some(Source::WorkerExit) => self.worker_exited(),
                _ => {}
            }
        }
    }

    /// A tracked process's handle says it exited (`status`: where the
    /// kernel gave it with the event).
    fn process_event(&mut self, id: u64, status: Option<RawExit>) {
        let Some(w) = self.watched.get(&id) else {
            return;
        };
        match w.kind {
            Kind::Run | Kind::Daemon | Kind::Main | Kind::Service => {
                let pid = self.sup.get(id).map_or(0, |e| e.pid);
                if let Some((pid, raw)) = platform::reap_pid(pid) {
                    self.child_reaped(pid, raw);
                } else if w.kind == Kind::Service
                    && self.sup.find_live_pid(pid) == Some(id)
                    && (status.is_some() || w.proc.has_exited())
                {
                    // Gone, and not archon's child: a main process named
                    // by MAINPID= whose parent reaps it. Its status is
                    // known only where the kernel tells (Linux 6.15+).
                    let exit = match status.map(platform::HandleExit::Exited) {
                        Some(platform::HandleExit::Exited(raw)) => to_exit(raw),
                        _ => match w.proc.exit_info() {
                            platform::HandleExit::Exited(raw) => to_exit(raw),
                            _ => Exit::Unknown,
                        },
                    };
                    self.process_gone(id, pid, exit);
                }
            }
            Kind::Monitor => {
                // Readable means the process has exited; check rather than
                // trust the edge (monitor() calls this without one).
                if status.is_none() && !w.proc.has_exited() {
                    return;
                }
                let info = match status {
                    Some(raw) => platform::HandleExit::Exited(raw),
                    None => w.proc.exit_info(),
                };
                let now = self.now();
                let already = self
                    .sup
                    .get(id)
                    .is_some_and(|e| e.state == crate::supervisor::State::Exited);
                if !already {
                    let exit = match &info {
                        platform::HandleExit::Exited(raw) => to_exit(*raw),
                        _ => Exit::Unknown,
                    };
                    self.fire_exit(id, Kind::Monitor, &exit);
                }
                match info {
                    platform::HandleExit::Exited(raw) => {
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
                    platform::HandleExit::NotYet if !already => {
                        if let Some(e) = self.sup.get(id) {
                            self.zombies.insert(e.pid, id);
                        }
                        let fx = self.sup.exited(id, Exit::Unknown, now);
                        let fx = fx
                            .into_iter()
                            .filter(|f| !matches!(f, Effect::Forget { .. }))
                            .collect();
                        self.apply(fx);
                    }
                    platform::HandleExit::Unsupported if !already => {
                        let fx = self.sup.exited(id, Exit::Unknown, now);
                        self.apply(fx);
                    }
                    platform::HandleExit::NotYet | platform::HandleExit::Unsupported => {}
                }
            }
        }
    }

    /// Stops watching a process. Closing its handle (archon holds the only
    /// reference) also takes it out of the poll set, without a system
    /// call per exit; an event of it still in this iteration's batch
    /// finds no entry and is ignored.
    fn forget(&mut self, id: u64) {
        self.monitor_stop(id);
        if let Some(w) = self.watched.remove(&id) {
            if w.kind == Kind::Monitor {
                self.zombies.retain(|_, v| *v != id);
            }
        }
    }

    /// The one reaper: every exited child of archon is collected here and its
    /// status routed by pid to the entry that tracks it.
    fn reap(&mut self) {
        while let Some((pid, raw)) = platform::reap_one() {
            self.child_reaped(pid, raw);
        }
    }

    /// Routes one reaped child's status to the entry that tracks it.
    fn child_reaped(&mut self, pid: i32, raw: RawExit) {
        match self.sup.find_live_pid(pid) {
            Some(id)
                if self
                    .watched
                    .get(&id)
                    .is_some_and(|w| w.kind != Kind::Monitor) =>
            {
                self.process_gone(id, pid, to_exit(raw));
            }
            _ => log::debug!("reaped orphan pid={pid}"),
        }
    }

    /// Why a process is SIGKILLed, at warn (seen in `docker logs` even in
    /// quiet entrypoint mode): its grace period ran out.
    fn warn_grace_kills(&self, fx: &[Effect]) {
        for f in fx {
            if let Effect::Signal { id, pid, .. } = f {
                let what = self.sup.get(*id).map_or("process", |e| e.kind.as_str());
                log::warn!(
                    "{what} id={id} pid={pid} did not exit within its grace period after its stop signal; sending SIGKILL"
                );
            }
        }
    }

    /// A tracked process (not a monitored one) is gone, with this status:
    /// hooks, the group's leftovers, the table, waiting checks, services.
    fn process_gone(&mut self, id: u64, pid: i32, exit: Exit) {
        // What a service's main process said before it exited counts
        // first: a `MAINPID=` sent just before exiting (a forking server
        // handing over) must be read before the exit ends the service.
        // Its entry is still in the table, so the sender is still known.
        if self.notify.is_some()
            && !self.notify_again
            && !self.reading_notify
            && self.services.owner(id).is_some()
        {
            self.notify_event();
        }
        log::info!("child exited id={id} pid={pid} status={}", exit.describe());
        let now = self.now();
        // Hooks see the entry before the table forgets it.
        let kind_of = self.sup.get(id).map(|e| e.kind);
        if let Some(k) = kind_of {
            self.fire_exit(id, k, &exit);
        }
        // A service's main process is gone: what is left of its
        // process group goes too (systemd's control group; a
        // respawn must not find the old children holding its
        // port). Right after the reap, in the same iteration,
        // the group id is still that group's.
        let service_group = self
            .sup
            .get(id)
            .filter(|e| e.kind == Kind::Service && e.group)
            .map(|e| e.pgid);
        if let Some(pgid) = service_group {
            if platform::kill_group(pgid, sig::KILL).is_ok() {
                log::info!("killed what was left of the process group of id={id} pgid={pgid}");
            }
        }
        let fx = self.sup.exited(id, exit.clone(), now);
        self.apply(fx);
        self.hook_run_done(id, &exit);
        if let Some((svc_entry, kind)) = self.checks.remove(&id) {
            self.check_deadlines.retain(|d| d.1 != id);
            self.check_ended(svc_entry, kind, exit == Exit::Code(0));
        }
        self.probe_exec_exited(id, exit == Exit::Code(0));
        self.probes_gone(id);
        self.drain_gone(id);
        if let Some((name, index)) = self.services.owner(id) {
            self.endpoints.exited(&name, index);
        }
        if let Some(cmds) = self.services.exited(id, exit, now.mono, now.wall) {
            self.apply_svc(cmds);
            let more = self.services.advance_shutdown(now.mono, now.wall);
            self.apply_svc(more);
        }
    }

    /// Executes the supervisor's effects through one queue, drained in a
    /// flat loop: an effect whose execution produces more (a reply that
    /// ends a client, whose going stops its `Run`s) appends them to the
    /// queue instead of recursing, so the order is the order they arose.
    fn apply(&mut self, effects: Vec<Effect>) {
        self.effects.extend(effects);
        if self.applying {
            return;
        }
        self.applying = true;
        while let Some(fx) = self.effects.pop_front() {
            self.apply_one(fx);
        }
        self.applying = false;
    }

    fn apply_one(&mut self, fx: Effect) {
        match fx {
            Effect::Reply { to, reply } => self.reply_to(to, &reply),
            Effect::Event(_) if self.subscribers.is_empty() => {}
            Effect::Event(row) => self.announce(&row.encode()),
            Effect::Forget { id } => self.forget(id),
            Effect::Signal {
                id,
                pid,
                signo,
                group,
                cont,
                pgid,
            } => {
                if let Some(w) = self.watched.get(&id) {
                    if let Err(e) = w.proc.signal(signo) {
                        log::debug!("signal failed id={id} error={e}");
                    }
                    if group {
                        let _ = platform::kill_group(pgid, signo);
                    }
                    // After a stop signal, SIGCONT: a stopped process (or
                    // group) acts on it instead of sitting out the grace.
                    if cont && signo != sig::CONT {
                        let _ = w.proc.signal(sig::CONT);
                        if group {
                            let _ = platform::kill_group(pgid, sig::CONT);
                        }
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

/// archon's environment at start-up (its UTF-8 variables), kept as the
/// "NAME=value" C strings every child gets: made once and shared, instead
/// of copied and converted on every spawn.
pub(super) struct Env {
    vars: Vec<(String, std::rc::Rc<CString>)>,
    path: Option<String>,
}

impl Env {
    fn from_process() -> Env {
        let mut path = None;
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter_map(|(k, v)| {
                let c = CString::new(format!("{k}={v}")).ok()?;
                if k == "PATH" {
                    path = Some(v);
                }
                Some((k, std::rc::Rc::new(c)))
            })
            .collect();
        Env { vars, path }
    }

    /// A child's envp: archon's variables (none with `clear`) with `over`
    /// set on top, a later value of a name replacing an earlier one; and the
    /// PATH in it, for the program search.
    fn envp<'a>(
        &self,
        clear: bool,
        over: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Vec<std::rc::Rc<CString>>, Option<String>), SpawnFail> {
        let mut set: Vec<(&str, &str)> = Vec::new();
        for (k, v) in over {
            set.retain(|(sk, _)| *sk != k);
            set.push((k, v));
        }
        let mut envp = Vec::with_capacity(self.vars.len() + set.len());
        if !clear {
            envp.extend(
                self.vars
                    .iter()
                    .filter(|(k, _)| !set.iter().any(|(sk, _)| sk == k))
                    .map(|(_, c)| c.clone()),
            );
        }
        for (k, v) in &set {
            let c = CString::new(format!("{k}={v}")).map_err(|_| {
                SpawnFail::Exec(platform::ExecError {
                    code: 127,
                    reason: "environment contains NUL".into(),
                })
            })?;
            envp.push(std::rc::Rc::new(c));
        }
        let path = match set.iter().rev().find(|(k, _)| *k == "PATH") {
            Some((_, v)) => Some(v.to_string()),
            None if !clear => self.path.clone(),
            None => None,
        };
        Ok((envp, path))
    }
}

/// A cache of PATH searches: (argv[0], PATH) -> program.
type ProgramCache = std::cell::RefCell<HashMap<(String, String), CString>>;

/// The program (searched in `path`) and argv of a command, as the child
/// needs them. With a cache, a program found before is used while it is
/// still executable (one `access` instead of a `stat` per PATH directory on
/// every respawn).
fn exec_parts(
    argv: &[String],
    path: Option<&str>,
    cache: Option<&ProgramCache>,
) -> Result<(CString, Vec<CString>), SpawnFail> {
    let key = (argv[0].clone(), path.unwrap_or("").to_string());
    let cached = cache
        .and_then(|c| c.borrow().get(&key).cloned())
        .filter(|p| platform::is_executable(p));
    let program = match cached {
        Some(p) => p,
        None => {
            let p = platform::resolve_program(
                std::ffi::OsStr::new(&argv[0]),
                path.map(std::ffi::OsStr::new),
            )
            .map_err(SpawnFail::Exec)?;
            if let Some(c) = cache {
                let mut c = c.borrow_mut();
                if c.len() > 4096 {
                    c.clear();
                }
                c.insert(key, p.clone());
            }
            p
        }
    };
    let argv = platform::to_cstrings(argv.iter().cloned()).ok_or_else(|| {
        SpawnFail::Exec(platform::ExecError {
            code: 127,
            reason: "argument contains NUL".into(),
        })
    })?;
    Ok((program, argv))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        let var = |k: &str, v: &str| {
            let c = CString::new(format!("{k}={v}")).unwrap_or_default();
            (k.to_string(), std::rc::Rc::new(c))
        };
        Env {
            vars: vec![var("A", "1"), var("PATH", "/x")],
            path: Some("/x".into()),
        }
    }

    fn strings(envp: &[std::rc::Rc<CString>]) -> Vec<String> {
        envp.iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn envp_overrides_archons_variables_last_value_winning() {
        let Ok((envp, path)) = env().envp(false, [("A", "2"), ("B", "3"), ("A", "4")]) else {
            panic!("envp failed")
        };
        assert_eq!(strings(&envp), ["PATH=/x", "B=3", "A=4"]);
        assert_eq!(path.as_deref(), Some("/x"));
        let Ok((envp, path)) = env().envp(true, [("B", "3")]) else {
            panic!("envp failed")
        };
        assert_eq!((strings(&envp), path), (vec!["B=3".to_string()], None));
        let Ok((_, path)) = env().envp(true, [("PATH", "/y")]) else {
            panic!("envp failed")
        };
        assert_eq!(path.as_deref(), Some("/y"));
        assert!(env().envp(false, [("C", "a\\0b")]).is_ok());
        assert!(env().envp(false, [("C", "a\0b")]).is_err());
    }
}
