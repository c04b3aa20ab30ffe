//! The Lua worker, from the loop's side: starting it, talking to it over
//! its socketpair (`protocol::worker`), deadlines, restarts. The loop never
//! runs Lua or an NSS look-up itself: it encodes a request, writes it, and
//! goes on; the reply is one more readiness event.
//!
//! Calls are answered in order, one at a time. The call at the head has a
//! wall-clock deadline counted from when it reached the head; past it the
//! worker is SIGKILLed, that call is dropped (counted and logged), and a
//! new worker gets the last good config's hooks and the calls that were
//! still waiting. A worker that dies five times within a minute is given
//! up on until the next reload. Plain entrypoint mode starts no worker, and
//! one whose config registers no hook is stopped once the config is read.

use super::*;
use crate::protocol::worker::{FrameReader, FromWorker, HookEvent, ToWorker};
use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};

/// Calls waiting for the worker, at most; past it events are dropped.
const MAX_CALLS: usize = 10_000;
/// Bytes waiting to be written to the worker, at most.
const MAX_OUT: usize = 8 << 20;
/// Reloads waiting for the worker at once, at most (each holds the file).
const MAX_PENDING_LOADS: usize = 4;
/// Replies handled per pass of the loop.
const FRAMES_PER_PASS: usize = 64;
/// The worker's CPU time limit, in seconds, over its whole life.
const WORKER_CPU_SECS: u64 = 3600;
/// The worker's address-space limit (Lua's own limits are far below it).
const WORKER_AS: u64 = 1 << 30;
/// Deaths within `DEATH_WINDOW_MS` after which the worker is given up on.
const MAX_DEATHS: usize = 5;
const DEATH_WINDOW_MS: u64 = 60_000;

/// What a call sent to the worker waits for.
pub(super) enum Call {
    /// Evaluate a config: at a reload (`reply` is the `Reload` request, or
    /// None for SIGHUP), or to restore the hooks of a restarted worker
    /// (`rehook`: its services are ignored).
    Load {
        reply: Option<ReplyTo>,
        rehook: bool,
        name: String,
        text: Vec<u8>,
    },
    /// Hooks of an event (the message is kept: a restarted worker gets it
    /// again).
    Event(HookEvent),
    RunDone,
}

impl Call {
    /// Its wall-clock limit: `--config-timeout` or `--hook-timeout`.
    fn deadline_ms(&self, opts: &crate::cli::Options) -> u64 {
        match self {
            Call::Load { .. } => opts.config_timeout_ms,
            _ => opts.hook_timeout_ms,
        }
    }
}

pub(super) struct Worker {
    sock: mio::net::UnixStream,
    pidfd: OwnedFd,
    pid: i32,
    reader: FrameReader,
    out: Vec<u8>,
    calls: VecDeque<Call>,
    /// When the head call started to count (mono ms).
    head_since: u64,
    wants: BTreeSet<String>,
}

/// The loop's hook state.
#[derive(Default)]
pub(super) struct Lua {
    pub(super) worker: Option<Worker>,
    /// The last good config: a restarted worker gets its hooks back.
    good: Option<(String, Vec<u8>)>,
    /// The last good config registers hooks (the worker stays up).
    has_hooks: bool,
    deaths: VecDeque<u64>,
    /// Events whose hooks did not run (deadline, queue full, dead worker).
    pub(super) dropped: u64,
    /// Replies left in the reader for the next pass.
    pub(super) unread: bool,
}

/// Reads a config file, bounded (the worker evaluates it).
pub(super) fn read_config(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let f = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut text = Vec::new();
    f.take(crate::protocol::worker::MAX_CONFIG + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    if text.len() as u64 > crate::protocol::worker::MAX_CONFIG {
        return Err(format!(
            "{shown}: larger than {} bytes",
            crate::protocol::worker::MAX_CONFIG
        ));
    }
    Ok(text)
}

/// What starting a worker takes from the loop.
pub(super) struct Spawner<'a> {
    pub env: &'a Env,
    pub nofile: libc::rlimit,
    pub ignored: &'a [i32],
    /// /dev/null, the worker's stdin and stdout.
    pub stdin: RawFd,
}

/// Starts a worker process; returns it and archon's end of the socket
/// (blocking, close-on-exec).
fn spawn_worker(
    sp: &Spawner,
) -> Result<(std::os::unix::net::UnixStream, platform::Spawned), String> {
    let Spawner {
        env,
        nofile,
        ignored,
        stdin,
    } = *sp;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let (envp, _) = env
        .envp(false, std::iter::empty())
        .map_err(|_| "environment".to_string())?;
    let level = log::max_level().to_string().to_lowercase();
    let argv =
        platform::to_cstrings(["archon-lua", "--lua-worker", level.as_str()]).ok_or("argv")?;
    let program = CString::new("/proc/self/exe").map_err(|e| e.to_string())?;
    let mut spec = platform::SpawnSpec::new(
        program,
        argv,
        envp,
        [stdin, stdin, 2],
        nofile,
        ignored.to_vec(),
    );
    spec.extra_fd = Some((theirs.as_raw_fd(), crate::protocol::worker::WORKER_FD));
    let lim = |n: u64| libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    spec.rlimits = vec![
        (libc::RLIMIT_AS as i32, lim(WORKER_AS)),
        // Cumulative CPU: a worker that has burnt an hour of CPU on hooks
        // is ended (SIGKILL at the hard limit) and a fresh one takes over;
        // per call, the wall-clock deadline is the bound.
        (libc::RLIMIT_CPU as i32, lim(WORKER_CPU_SECS)),
        (libc::RLIMIT_CORE as i32, lim(0)),
        (libc::RLIMIT_NOFILE as i32, lim(64)),
    ];
    let spawned =
        platform::spawn(&spec).map_err(|e| format!("cannot start the Lua worker: {e}"))?;
    drop(theirs);
    Ok((ours, spawned))
}

/// Writes one frame and reads one reply, blocking, within `deadline_ms`:
/// for start-up only, before the loop runs.
fn exchange(
    sock: &mut std::os::unix::net::UnixStream,
    msg: &ToWorker,
    deadline_ms: u64,
) -> Result<FromWorker, String> {
    let start = Instant::now();
    sock.write_all(&msg.encode())
        .map_err(|e| format!("lua worker: {e}"))?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(recs) = reader.next_frame()? {
            return FromWorker::decode_owned(recs);
        }
        let left = Duration::from_millis(deadline_ms).saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "the config's evaluation did not finish within {} s",
                deadline_ms / 1000
            ));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match sock.read(&mut buf) {
            Ok(0) => return Err("the Lua worker died evaluating the config".into()),
            Ok(n) => reader.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("lua worker: {e}")),
        }
    }
}

/// Start-up: evaluates the config in a worker and returns its services, and
/// the worker when the config registers hooks (None: no worker stays).
pub(super) fn boot(
    poll: &Poll,
    path: &std::path::Path,
    deadline_ms: u64,
    spawner: &Spawner,
) -> Result<(crate::services::spec::Config, Lua), String> {
    let text = read_config(path)?;
    let name = path.display().to_string();
    let (mut sock, spawned) = spawn_worker(spawner)?;
    let load = ToWorker::Load {
        name: name.clone(),
        text: text.clone(),
        rehook: false,
    };
    let kill = |sp: &platform::Spawned| {
        let _ = platform::pidfd_send_signal(&sp.pidfd, libc::SIGKILL);
    };
    let reply = exchange(&mut sock, &load, deadline_ms).inspect_err(|_| kill(&spawned))?;
    let (wants, records) = match reply {
        FromWorker::Loaded { wants, services } => (wants, services),
        FromWorker::Failed(errors) => {
            kill(&spawned);
            return Err(errors.join("\n"));
        }
        FromWorker::Actions { .. } => {
            kill(&spawned);
            return Err("lua worker: unexpected reply".into());
        }
    };
    let config = decoded_config(&records).inspect_err(|_| kill(&spawned))?;
    let mut lua = Lua {
        good: Some((name, text)),
        has_hooks: !wants.is_empty(),
        ..Default::default()
    };
    if lua.has_hooks {
        let w = Worker::register(poll, sock, spawned, 0)?;
        lua.worker = Some(Worker {
            wants: wants.into_iter().collect(),
            ..w
        });
    } else {
        // The config registers no hook: nothing stays resident. (Closing
        // the socket ends it; the SIGCHLD reaper collects it.)
        kill(&spawned);
    }
    Ok((config, lua))
}

/// `archon --check --config FILE`: the file evaluated as at start-up (in
/// a worker, with the deadline); a line saying what it declares, or every
/// error. The exit status: 0 or 1.
pub fn check(path: &std::path::Path, deadline_ms: u64, nofile: libc::rlimit) -> i32 {
    let run = || -> Result<String, String> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let env = Env::from_process();
        let ignored = platform::ignored_signals();
        let dev_null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        let spawner = Spawner {
            env: &env,
            nofile,
            ignored: &ignored,
            stdin: dev_null.as_raw_fd(),
        };
        let (config, mut lua) = boot(&poll, path, deadline_ms, &spawner)?;
        let wants: Vec<String> = lua
            .worker
            .take()
            .map(|w| {
                let _ = platform::pidfd_send_signal(&w.pidfd, libc::SIGKILL);
                let _ = platform::reap_pid(w.pid);
                w.wants.into_iter().collect()
            })
            .unwrap_or_default();
        let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        Ok(format!(
            "{}: ok: {} services ({}); hooks on: {}",
            path.display(),
            names.len(),
            names.join(" "),
            if wants.is_empty() {
                "none".to_string()
            } else {
                wants.join(" ")
            }
        ))
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Services from a `Loaded` reply, checked on this side too.
fn decoded_config(
    records: &[crate::protocol::worker::Record],
) -> Result<crate::services::spec::Config, String> {
    let services = crate::services::wire::decode(records)
        .map_err(|e| format!("lua worker: bad services: {e}"))?;
    let config = crate::services::spec::Config { services };
    let errs = config.validate();
    if errs.is_empty() {
        Ok(config)
    } else {
        Err(errs.join("\n"))
    }
}

impl Worker {
    fn register(
        poll: &Poll,
        sock: std::os::unix::net::UnixStream,
        spawned: platform::Spawned,
        now_ms: u64,
    ) -> Result<Worker, String> {
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        sock.set_read_timeout(None).map_err(|e| e.to_string())?;
        let mut sock = mio::net::UnixStream::from_std(sock);
        poll.registry()
            .register(
                &mut sock,
                Source::WorkerSock.token(),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register the worker: {e}"))?;
        poll.registry()
            .register(
                &mut SourceFd(&spawned.pidfd.as_raw_fd()),
                Source::WorkerExit.token(),
                Interest::READABLE,
            )
            .map_err(|e| format!("register the worker: {e}"))?;
        Ok(Worker {
            sock,
            pidfd: spawned.pidfd,
            pid: spawned.pid,
            reader: FrameReader::default(),
            out: Vec::new(),
            calls: VecDeque::new(),
            head_since: now_ms,
            wants: BTreeSet::new(),
        })
    }
}

impl EventLoop {
    /// Whether a live hook listens for this kind of event.
    pub(super) fn hooks_want(&self, kind: &str) -> bool {
        self.lua
            .worker
            .as_ref()
            .is_some_and(|w| w.wants.contains(kind))
    }

    /// The head call's deadline, for the poll timeout.
    pub(super) fn worker_deadline(&self) -> Option<u64> {
        let w = self.lua.worker.as_ref()?;
        let head = w.calls.front()?;
        Some(w.head_since + head.deadline_ms(&self.opts))
    }

    fn start_worker(&mut self) -> Result<(), String> {
        let (sock, spawned) = spawn_worker(&Spawner {
            env: &self.env,
            nofile: self.nofile,
            ignored: &self.ignored_signals,
            stdin: self.dev_null.as_raw_fd(),
        })?;
        let now = self.now().mono;
        let w = Worker::register(&self.poll, sock, spawned, now)?;
        log::debug!("lua worker started pid={}", w.pid);
        self.lua.worker = Some(w);
        Ok(())
    }

    /// Queues a call. Events past the bounds are dropped and counted; a
    /// Load always goes.
    pub(super) fn worker_call(&mut self, msg: ToWorker, call: Call) {
        let now = self.now().mono;
        let Some(w) = self.lua.worker.as_mut() else {
            return;
        };
        let is_load = matches!(call, Call::Load { .. });
        if !is_load && (w.calls.len() >= MAX_CALLS || w.out.len() >= MAX_OUT) {
            self.lua.dropped += 1;
            if self.lua.dropped.is_power_of_two() {
                log::warn!(
                    "lua worker is behind: hook event dropped dropped_total={}",
                    self.lua.dropped
                );
            }
            return;
        }
        if w.calls.is_empty() {
            w.head_since = now;
        }
        w.out.extend_from_slice(&msg.encode());
        w.calls.push_back(call);
    }

    /// One-way: what `archon.status()` reads.
    pub(super) fn worker_send(&mut self, msg: ToWorker) {
        if let Some(w) = self.lua.worker.as_mut() {
            if w.out.len() < MAX_OUT {
                w.out.extend_from_slice(&msg.encode());
            }
        }
    }

    /// Writes what the socket takes.
    pub(super) fn worker_flush(&mut self) {
        let Some(w) = self.lua.worker.as_mut() else {
            return;
        };
        while !w.out.is_empty() {
            match w.sock.write(&w.out) {
                Ok(0) => break,
                Ok(n) => {
                    w.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.worker_died(&format!("write failed: {e}"));
                    return;
                }
            }
        }
    }

    /// The worker's socket is ready: write, read, handle replies (a budget
    /// per pass).
    pub(super) fn worker_ready(&mut self) {
        self.worker_flush();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let Some(w) = self.lua.worker.as_mut() else {
                return;
            };
            match w.sock.read(&mut buf) {
                Ok(0) => {
                    self.worker_died("it closed its socket");
                    return;
                }
                Ok(n) => w.reader.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.worker_died(&format!("read failed: {e}"));
                    return;
                }
            }
        }
        self.worker_replies();
    }

    /// Handles up to `FRAMES_PER_PASS` replies already read.
    pub(super) fn worker_replies(&mut self) {
        self.lua.unread = false;
        for _ in 0..FRAMES_PER_PASS {
            let now = self.now().mono;
            let Some(w) = self.lua.worker.as_mut() else {
                return;
            };
            let recs = match w.reader.next_frame() {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    self.worker_died(&format!("broken reply: {e}"));
                    return;
                }
            };
            let reply = FromWorker::decode_owned(recs);
            let Some(call) = w.calls.pop_front() else {
                self.worker_died("a reply to nothing");
                return;
            };
            w.head_since = now;
            match reply {
                Ok(r) => self.worker_answered(call, r),
                Err(e) => {
                    self.worker_died(&format!("bad reply: {e}"));
                    return;
                }
            }
        }
        self.lua.unread = true;
    }

    fn worker_answered(&mut self, call: Call, reply: FromWorker) {
        let wants = match &reply {
            FromWorker::Loaded { wants, .. } | FromWorker::Actions { wants, .. } => {
                Some(wants.clone())
            }
            FromWorker::Failed(_) => None,
        };
        if let (Some(wants), Some(w)) = (wants, self.lua.worker.as_mut()) {
            w.wants = wants.into_iter().collect();
        }
        match (call, reply) {
            (Call::Event(_) | Call::RunDone, FromWorker::Actions { actions, .. }) => {
                self.hook_actions.extend(actions);
            }
            (
                Call::Load {
                    reply,
                    rehook: false,
                    name,
                    text,
                },
                r,
            ) => {
                let answer = match r {
                    FromWorker::Loaded { services, wants } => match decoded_config(&services) {
                        Ok(config) => {
                            self.lua.good = Some((name, text));
                            self.lua.has_hooks = !wants.is_empty();
                            self.apply_reload(config)
                        }
                        Err(e) => Reply::error(ErrorKind::BadConfig, e),
                    },
                    FromWorker::Failed(errs) => {
                        for e in &errs {
                            log::error!("reload refused: {e}");
                        }
                        Reply::error(ErrorKind::BadConfig, errs.join("; "))
                    }
                    FromWorker::Actions { .. } => {
                        Reply::error(ErrorKind::Internal, "lua worker: unexpected reply")
                    }
                };
                if let Some(to) = reply {
                    self.reply_to(to, &answer);
                }
            }
            (Call::Load { rehook: true, .. }, FromWorker::Failed(errs)) => {
                log::error!(
                    "the last good config no longer loads; hooks are off until a reload: {}",
                    errs.join("; ")
                );
                self.lua.has_hooks = false;
            }
            (Call::Load { rehook: true, .. }, _) => {}
            (_, _) => {
                self.worker_died("a reply of the wrong kind");
                return;
            }
        }
        self.retire_idle_worker();
    }

    /// A config without hooks leaves no worker behind once it is idle.
    fn retire_idle_worker(&mut self) {
        let idle = self
            .lua
            .worker
            .as_ref()
            .is_some_and(|w| w.calls.is_empty() && w.out.is_empty());
        if idle && !self.lua.has_hooks {
            self.stop_worker();
        }
    }

    /// Ends the worker (SIGKILL through its pidfd; the reaper collects it).
    fn stop_worker(&mut self) -> Option<Worker> {
        let mut w = self.lua.worker.take()?;
        let _ = self.poll.registry().deregister(&mut w.sock);
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&w.pidfd.as_raw_fd()));
        let _ = platform::pidfd_send_signal(&w.pidfd, libc::SIGKILL);
        // Nothing the killed worker still owed is delivered; its callbacks
        // died with its state.
        self.hook_runs.clear();
        Some(w)
    }

    /// The worker's pidfd is readable: it exited.
    pub(super) fn worker_exited(&mut self) {
        let gone = self
            .lua
            .worker
            .as_ref()
            .is_some_and(|w| platform::pidfd_exited(&w.pidfd));
        if gone {
            if let Some(pid) = self.lua.worker.as_ref().map(|w| w.pid) {
                let _ = platform::reap_pid(pid);
            }
            self.worker_died("it exited");
        }
    }

    /// The head call missed its deadline.
    pub(super) fn worker_check_deadline(&mut self) {
        let now = self.now().mono;
        if self.worker_deadline().is_some_and(|d| d <= now) {
            self.worker_died("a call missed its deadline");
        }
    }

    /// The worker is gone or must go: the head call is dropped (a Reload
    /// gets an error), the rest go to a new worker with the last good
    /// config's hooks.
    fn worker_died(&mut self, why: &str) {
        let Some(mut w) = self.stop_worker() else {
            return;
        };
        let mut calls = std::mem::take(&mut w.calls);
        let now = self.now().mono;
        match calls.pop_front() {
            Some(Call::Load {
                reply: Some(to),
                rehook: false,
                ..
            }) => {
                log::warn!("lua worker killed: {why} (evaluating the config)");
                self.reply_to(
                    to,
                    &Reply::error(
                        ErrorKind::BadConfig,
                        format!(
                            "the config's evaluation did not finish ({why}; limit {} s)",
                            self.opts.config_timeout_ms as f64 / 1000.0
                        ),
                    ),
                );
            }
            Some(Call::Event(ev)) => {
                self.lua.dropped += 1;
                log::warn!(
                    "lua worker killed: {why}; the hooks of event={} service={} did not run dropped_total={}",
                    ev.kind,
                    ev.service,
                    self.lua.dropped
                );
            }
            Some(_) => log::warn!("lua worker killed: {why}"),
            None => log::warn!("lua worker ended: {why}"),
        }
        // Reloads still waiting must be answered: by a new worker, or
        // here if there will be none.
        let reloads_waiting = calls
            .iter()
            .any(|c| matches!(c, Call::Load { rehook: false, .. }));
        if self.shutting_down || (!self.lua.has_hooks && !reloads_waiting) {
            self.fail_waiting(calls, "archon is shutting down");
            return;
        }
        self.lua.deaths.push_back(now);
        while self
            .lua
            .deaths
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > DEATH_WINDOW_MS)
        {
            self.lua.deaths.pop_front();
        }
        if self.lua.deaths.len() >= MAX_DEATHS {
            log::error!(
                "the Lua worker died {MAX_DEATHS} times within {} s: hooks are off until the next reload",
                DEATH_WINDOW_MS / 1000
            );
            self.lua.has_hooks = false;
            self.lua.deaths.clear();
            self.fail_waiting(calls, "the Lua worker keeps dying");
            return;
        }
        if let Err(e) = self.start_worker() {
            log::error!("{e}; hooks are off until the next reload");
            self.lua.has_hooks = false;
            self.fail_waiting(calls, &e);
            return;
        }
        // Until the new worker says what it wants, events are sent as the
        // old one wanted them (the same config).
        if let Some(nw) = self.lua.worker.as_mut() {
            nw.wants = w.wants.clone();
        }
        if let Some((name, text)) = self.lua.good.clone().filter(|_| self.lua.has_hooks) {
            self.send_load(None, true, name, text);
        }
        // The new worker's archon.status() starts from the current services.
        self.send_snapshot();
        for call in calls {
            match call {
                Call::Event(ev) => self.worker_call(ToWorker::Event(ev.clone()), Call::Event(ev)),
                Call::Load {
                    reply,
                    rehook: false,
                    name,
                    text,
                } => self.send_load(reply, false, name, text),
                _ => {}
            }
        }
        // The new worker knows nothing it may want yet: until its reply,
        // events are sent as the old one wanted them.
        self.worker_flush();
    }

    /// Answers the reloads among `calls` with an error (no worker will);
    /// the events among them are dropped and counted.
    fn fail_waiting(&mut self, calls: VecDeque<Call>, why: &str) {
        for c in calls {
            match c {
                Call::Load {
                    reply: Some(to),
                    rehook: false,
                    ..
                } => self.reply_to(
                    to,
                    &Reply::error(ErrorKind::BadConfig, format!("not evaluated: {why}")),
                ),
                Call::Event(_) => self.lua.dropped += 1,
                _ => {}
            }
        }
    }

    /// Every service instance, for a new worker's `archon.status()`.
    fn send_snapshot(&mut self) {
        let rows: Vec<ToWorker> = self
            .services
            .instances(None)
            .map(|all| {
                all.into_iter()
                    .map(|(name, i)| ToWorker::Service {
                        name: name.to_string(),
                        instance: i.index,
                        state: i.state.as_str().to_string(),
                        pid: i.pid,
                        restarts: i.restarts,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for r in rows {
            self.worker_send(r);
        }
    }

    /// `Reload` (or SIGHUP, `reply` None): the worker evaluates the file;
    /// the answer comes with its reply (`worker_answered`).
    pub(super) fn reload(&mut self, reply: Option<ReplyTo>) -> Option<Reply> {
        let Some(path) = self.opts.config.clone() else {
            return Some(Reply::error(
                ErrorKind::BadRequest,
                "archon was started without --config",
            ));
        };
        let pending = self.lua.worker.as_ref().map_or(0, |w| {
            w.calls
                .iter()
                .filter(|c| matches!(c, Call::Load { rehook: false, .. }))
                .count()
        });
        if pending >= MAX_PENDING_LOADS {
            return Some(Reply::error(
                ErrorKind::Limit,
                format!("{pending} reloads are already being evaluated"),
            ));
        }
        let text = match read_config(&path) {
            Ok(t) => t,
            Err(e) => {
                log::error!("reload refused: {e}");
                return Some(Reply::error(ErrorKind::BadConfig, e));
            }
        };
        if self.lua.worker.is_none() {
            if let Err(e) = self.start_worker() {
                log::error!("reload refused: {e}");
                return Some(Reply::error(ErrorKind::Internal, e));
            }
            // A reload turns a worker given up on back on.
            self.lua.deaths.clear();
        }
        self.send_load(reply, false, path.display().to_string(), text);
        self.worker_flush();
        None
    }

    /// Queues a config evaluation (see `Call::Load`).
    fn send_load(&mut self, reply: Option<ReplyTo>, rehook: bool, name: String, text: Vec<u8>) {
        let msg = ToWorker::Load {
            name: name.clone(),
            text: text.clone(),
            rehook,
        };
        let call = Call::Load {
            reply,
            rehook,
            name,
            text,
        };
        self.worker_call(msg, call);
    }

    /// At the end of a shutdown: true once the worker has answered what it
    /// was sent (or there is none); then it is stopped, before PID 1's
    /// sweep. A stuck one is ended by its deadline.
    pub(super) fn worker_settled(&mut self) -> bool {
        let busy = self
            .lua
            .worker
            .as_ref()
            .is_some_and(|w| !w.calls.is_empty());
        if busy {
            return false;
        }
        self.stop_worker();
        true
    }
}
