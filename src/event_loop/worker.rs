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

pub(super) use super::worker_start::{boot, Spawner};
use super::worker_start::{decoded_config, read_config, spawn_worker};
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
/// Hook actions waiting to be applied, at most.
const MAX_QUEUED_ACTIONS: usize = 10_000;
/// Replies handled per pass of the loop.
const FRAMES_PER_PASS: usize = 64;
/// Bytes of the worker's replies read ahead of their handling at most
/// (besides the rest of a frame begun).
const READ_AHEAD: usize = 1 << 20;
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
    pub(super) proc: ProcHandle,
    reader: FrameReader,
    /// What a read takes in: on the heap, and touched only as far as a
    /// read fills it (a 64 KiB array on the stack would be probed, so
    /// resident, in every archon, worker or not).
    rbuf: Vec<u8>,
    out: Vec<u8>,
    calls: VecDeque<Call>,
    /// When the head call started to count (mono ms).
    head_since: u64,
    pub(super) wants: BTreeSet<String>,
}

/// The loop's hook state.
#[derive(Default)]
pub(super) struct Lua {
    pub(super) worker: Option<Worker>,
    /// The last good config: a restarted worker gets its hooks back.
    pub(super) good: Option<(String, Vec<u8>)>,
    /// The last good config registers hooks (the worker stays up).
    pub(super) has_hooks: bool,
    deaths: VecDeque<u64>,
    /// Events whose hooks did not run (deadline, queue full, dead worker).
    pub(super) dropped: u64,
    /// Replies left in the reader for the next pass.
    pub(super) unread: bool,
    /// The socket was left with bytes unread (its read-ahead was full).
    pub(super) read_again: bool,
}

impl Worker {
    pub(super) fn register(
        poll: &Poll,
        exits: &mut platform::ExitWatch,
        sock: std::os::unix::net::UnixStream,
        spawned: ProcHandle,
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
        exits
            .add(poll.registry(), &spawned, Source::WorkerExit.token())
            .map_err(|e| format!("register the worker: {e}"))?;
        Ok(Worker {
            sock,
            proc: spawned,
            reader: FrameReader::default(),
            rbuf: vec![0u8; 64 * 1024],
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
        let w = Worker::register(&self.poll, &mut self.exits, sock, spawned, now)?;
        log::debug!("lua worker started pid={}", w.proc.pid());
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
        self.lua.read_again = false;
        loop {
            let Some(w) = self.lua.worker.as_mut() else {
                return;
            };
            if !w.reader.wants_more(READ_AHEAD) {
                // Bounded: the rest waits in the socket (the worker's
                // writes block) until the replies read are handled.
                self.lua.read_again = true;
                break;
            }
            match w.sock.read(&mut w.rbuf) {
                Ok(0) => {
                    self.worker_died("it closed its socket");
                    return;
                }
                Ok(n) => w.reader.push(&w.rbuf[..n]),
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
            (call @ (Call::Event(_) | Call::RunDone), FromWorker::Actions { actions, .. }) => {
                // A limit's stop waited for its hooks: they have run.
                if let Call::Event(ev) = &call {
                    if ev.kind == "limit_exceeded" {
                        self.limit_hooks_done(ev.pid);
                    }
                }
                // Bounded where they are queued: a worker answering faster
                // than 1 000 actions an iteration are applied cannot grow
                // the queue without end.
                let room = MAX_QUEUED_ACTIONS.saturating_sub(self.hook_actions.len());
                if actions.len() > room {
                    log::warn!(
                        "hook actions dropped: {} waiting already, limit {MAX_QUEUED_ACTIONS}",
                        self.hook_actions.len()
                    );
                }
                self.hook_actions.extend(actions.into_iter().take(room));
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
                            self.release_later();
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

    /// Ends the worker (SIGKILL through its handle; the reaper collects it).
    fn stop_worker(&mut self) -> Option<Worker> {
        let mut w = self.lua.worker.take()?;
        let _ = self.poll.registry().deregister(&mut w.sock);
        self.exits.remove(self.poll.registry(), &w.proc);
        let _ = w.proc.signal(sig::KILL);
        // Nothing the killed worker still owed is delivered; its callbacks
        // died with its state.
        self.hook_runs.clear();
        Some(w)
    }

    /// The worker's handle says it exited.
    pub(super) fn worker_exited(&mut self) {
        let gone = self
            .lua
            .worker
            .as_ref()
            .is_some_and(|w| w.proc.has_exited());
        if gone {
            if let Some(pid) = self.lua.worker.as_ref().map(|w| w.proc.pid()) {
                let _ = platform::reap_pid(pid);
            }
            self.worker_died("it exited");
        }
    }

    /// The head call missed its deadline.
    pub(super) fn worker_check_deadline(&mut self) {
        let Some(deadline) = self.worker_deadline() else {
            return;
        };
        if deadline <= self.now().mono {
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
        let reasons = self.services.restart_reasons();
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
                        by_reason: reasons
                            .get(&(name.to_string(), i.index))
                            .copied()
                            .unwrap_or_default(),
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
