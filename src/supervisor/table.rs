//! Entries, effects and the transitions between states.

use super::{SIGKILL, SIGTERM};
use crate::protocol::{ErrorKind, EventRow, ProcessRow, Reply};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How many exited daemon/monitor records are kept.
pub const MAX_EXITED: usize = 1024;

/// Time as the caller sees it: `mono` for deadlines, `wall` for display (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub mono: u64,
    pub wall: u64,
}

/// Where a reply goes: a client connection and the request's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyTo {
    pub client: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Run,
    Daemon,
    Monitor,
    /// The entrypoint's command: archon exits when it does.
    Main,
    /// An instance of a configured service (see `services`).
    Service,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Daemon => "daemon",
            Kind::Monitor => "monitor",
            Kind::Main => "main",
            Kind::Service => "service",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Stopping,
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopping => "stopping",
            State::Exited => "exited",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Signal number and name.
    Signal(i32, String),
    /// The process is gone but the kernel could not say how.
    Unknown,
}

impl Exit {
    /// The code a shell would report: the status, or 128+N.
    pub fn shell_code(&self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(*c),
            Exit::Signal(n, _) => Some(128 + n),
            Exit::Unknown => None,
        }
    }

    pub fn describe(&self) -> String {
        match self.shell_code() {
            Some(c) => c.to_string(),
            None => "unknown".into(),
        }
    }

    pub fn reply(&self) -> Reply {
        match self {
            Exit::Code(c) => Reply::ExitStatus(*c, None),
            Exit::Signal(n, name) => Reply::ExitStatus(128 + n, Some(name.clone())),
            Exit::Unknown => Reply::error(ErrorKind::Internal, "exit status unknown"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub kind: Kind,
    pub pid: i32,
    pub state: State,
    pub argv: Vec<String>,
    pub started_wall: u64,
    pub exited_wall: Option<u64>,
    pub exit: Option<Exit>,
    /// The `Run` request waiting for this process's exit.
    pub owner: Option<ReplyTo>,
    /// `Stop` requests waiting for this process to be gone.
    pub stop_waiters: Vec<ReplyTo>,
    /// When SIGKILL follows the SIGTERM already sent.
    pub kill_at: Option<u64>,
    /// Signals also go to its process group (`Run` commands; the main
    /// command with `--forward-to-group`).
    pub group: bool,
    /// That process group: its own pid, but for a service's main process
    /// named by `MAINPID=`, which stays in the service's group.
    pub pgid: i32,
    /// The uid of the peer that started or watches it, when that peer is
    /// not an admin: such a peer may stop and signal only its own.
    pub peer_uid: Option<u32>,
}

/// What the event loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Signal the process through its pidfd; `group` also signals its
    /// process group (for `Run` commands, which lead their own group).
    Signal {
        id: u64,
        pid: i32,
        signo: i32,
        group: bool,
        /// SIGCONT follows (a stop signal: a stopped process must not sit
        /// out its grace period without seeing it).
        cont: bool,
        /// The group `group` signals (`Entry::pgid`).
        pgid: i32,
    },
    Reply {
        to: ReplyTo,
        reply: Reply,
    },
    Event(EventRow),
    /// Stop watching the process: close its pidfd.
    Forget {
        id: u64,
    },
}

#[derive(Debug, Default)]
pub struct Supervisor {
    /// Boxed: with a thousand entries, the map's nodes stay small.
    entries: BTreeMap<u64, Box<Entry>>,
    /// pid -> id of the live (not exited) entries: the reaper's routing table.
    live_pids: HashMap<i32, u64>,
    /// (kill_at, id) of every entry with a pending SIGKILL, so timers cost
    /// O(log n) instead of a scan of the table on every loop iteration.
    deadlines: BTreeSet<(u64, u64)>,
    next_id: u64,
    exited_order: std::collections::VecDeque<u64>,
    /// The main command's entry (entrypoint mode).
    main: Option<u64>,
    /// Set once an orderly shutdown has begun: the grace period it uses.
    shutdown_grace: Option<u64>,
    /// The shutdown has sent every daemon its stop signal.
    daemons_stopped: bool,
    /// Live entries that archon started (all but monitors), counted as
    /// they come and go: checked on every loop iteration of a shutdown.
    alive_started: usize,
}

fn fmt_time(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor {
            next_id: 1,
            ..Default::default()
        }
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id).map(|b| &**b)
    }

    /// Signals to this entry go to its whole process group as well.
    pub fn set_group(&mut self, id: u64, group: bool) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.group = group;
        }
    }

    /// The process group those signals go to (`Entry::pgid`).
    pub fn set_pgid(&mut self, id: u64, pgid: i32) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.pgid = pgid;
        }
    }

    /// Records the non-admin peer an entry belongs to (`Entry::peer_uid`).
    pub fn set_peer_uid(&mut self, id: u64, uid: u32) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.peer_uid = Some(uid);
        }
    }

    /// The live entry (not exited) for a pid, if any.
    pub fn find_live_pid(&self, pid: i32) -> Option<u64> {
        self.live_pids.get(&pid).copied()
    }

    /// Every entry whose process has not been seen to exit, by pid.
    pub fn live_entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.live_pids.values().filter_map(|id| self.get(*id))
    }

    fn event(&self, e: &Entry, now: Clock, state: &str) -> Effect {
        Effect::Event(EventRow {
            time: fmt_time(now.wall),
            id: e.id,
            kind: e.kind.as_str().into(),
            pid: e.pid,
            state: state.into(),
            status: e.exit.as_ref().map(Exit::describe).unwrap_or_default(),
        })
    }

    /// A process now exists and is watched. Returns its id and the effects.
    pub fn started(
        &mut self,
        kind: Kind,
        pid: i32,
        argv: Vec<String>,
        owner: Option<ReplyTo>,
        now: Clock,
    ) -> (u64, Vec<Effect>) {
        let id = self.next_id;
        self.next_id += 1;
        let entry = Entry {
            id,
            kind,
            pid,
            state: State::Running,
            argv,
            started_wall: now.wall,
            exited_wall: None,
            exit: None,
            owner,
            stop_waiters: Vec::new(),
            kill_at: None,
            group: kind == Kind::Run,
            pgid: pid,
            peer_uid: None,
        };
        let fx = vec![self.event(&entry, now, "started")];
        if kind != Kind::Monitor {
            self.alive_started += 1;
        }
        self.live_pids.insert(pid, id);
        self.entries.insert(id, Box::new(entry));
        (id, fx)
    }

    /// The entrypoint's main command now exists. `group`: signals for it go
    /// to its whole process group.
    pub fn started_main(
        &mut self,
        pid: i32,
        argv: Vec<String>,
        group: bool,
        now: Clock,
    ) -> (u64, Vec<Effect>) {
        let (id, fx) = self.started(Kind::Main, pid, argv, None, now);
        if let Some(e) = self.entries.get_mut(&id) {
            e.group = group;
        }
        self.main = Some(id);
        (id, fx)
    }

    /// The main command's exit, once it has exited.
    pub fn main_exit(&self) -> Option<&Exit> {
        self.entries.get(&self.main?)?.exit.as_ref()
    }

    fn main_alive(&self) -> bool {
        self.main
            .and_then(|id| self.entries.get(&id))
            .is_some_and(|e| e.state != State::Exited)
    }

    /// A signal archon received, passed on to the main command if it runs.
    pub fn forward(&self, signo: i32) -> Vec<Effect> {
        match self.main.and_then(|id| self.entries.get(&id)) {
            Some(e) if e.state != State::Exited => vec![Effect::Signal {
                id: e.id,
                pid: e.pid,
                signo,
                group: e.group,
                cont: false,
                pgid: e.pgid,
            }],
            _ => Vec::new(),
        }
    }

    /// The process is gone.
    pub fn exited(&mut self, id: u64, exit: Exit, now: Clock) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(e) = self.entries.get_mut(&id) else {
            return fx;
        };
        match e.state {
            State::Exited => return fx,
            State::Running | State::Stopping => {}
        }
        e.state = State::Exited;
        if e.kind != Kind::Monitor {
            self.alive_started = self.alive_started.saturating_sub(1);
        }
        let pid = e.pid;
        e.exit = Some(exit.clone());
        e.exited_wall = Some(now.wall);
        if let Some(k) = e.kill_at.take() {
            self.deadlines.remove(&(k, id));
        }
        if let Some(to) = e.owner.take() {
            fx.push(Effect::Reply {
                to,
                reply: exit.reply(),
            });
        }
        for to in e.stop_waiters.drain(..) {
            fx.push(Effect::Reply {
                to,
                reply: Reply::Ok(vec![id.to_string(), exit.describe()]),
            });
        }
        let kind = e.kind;
        let snapshot = e.clone();
        fx.push(self.event(&snapshot, now, "exited"));
        fx.push(Effect::Forget { id });
        if self.live_pids.get(&pid) == Some(&id) {
            self.live_pids.remove(&pid);
        }
        match kind {
            Kind::Run => {
                self.entries.remove(&id);
            }
            Kind::Daemon | Kind::Monitor | Kind::Main | Kind::Service => {
                self.exited_order.push_back(id);
                while self.exited_order.len() > MAX_EXITED {
                    if let Some(old) = self.exited_order.pop_front() {
                        if Some(old) != self.main {
                            self.entries.remove(&old);
                        }
                    }
                }
            }
        }
        // Only the main command's or a daemon's exit can let the
        // shutdown move on (scanning on every service's exit was O(n^2)).
        if matches!(kind, Kind::Main | Kind::Daemon) {
            fx.extend(self.advance(now));
        }
        fx
    }

    /// A better exit status arrived for an exited monitor entry.
    pub fn exit_learned(&mut self, id: u64, exit: Exit, now: Clock) -> Vec<Effect> {
        match self.entries.get_mut(&id) {
            Some(e) if e.state == State::Exited && e.exit == Some(Exit::Unknown) => {
                e.exit = Some(exit);
                let snapshot = e.clone();
                vec![self.event(&snapshot, now, "status")]
            }
            _ => Vec::new(),
        }
    }

    /// `Stop,<id>[,<grace>]`: SIGTERM now, SIGKILL after the grace period;
    /// the requester is answered once the process is gone.
    pub fn stop(
        &mut self,
        id: u64,
        grace_ms: u64,
        requester: Option<ReplyTo>,
        now: Clock,
    ) -> Result<Vec<Effect>, Reply> {
        self.stop_with(id, SIGTERM, grace_ms, requester, now)
    }

    /// `stop` with another first signal (the main command gets the signal
    /// that began the shutdown, e.g. SIGINT; a service its stop signal).
    pub fn stop_with(
        &mut self,
        id: u64,
        signo: i32,
        grace_ms: u64,
        requester: Option<ReplyTo>,
        now: Clock,
    ) -> Result<Vec<Effect>, Reply> {
        let e = self
            .entries
            .get_mut(&id)
            .ok_or_else(|| Reply::error(ErrorKind::NoSuchId, format!("no process {id}")))?;
        match e.state {
            State::Exited => {
                let status = e.exit.as_ref().map(Exit::describe).unwrap_or_default();
                Ok(match requester {
                    Some(to) => vec![Effect::Reply {
                        to,
                        reply: Reply::Ok(vec![id.to_string(), status]),
                    }],
                    None => Vec::new(),
                })
            }
            State::Stopping => {
                e.stop_waiters.extend(requester);
                let deadline = now.mono + grace_ms;
                if let Some(k) = e.kill_at {
                    self.deadlines.remove(&(k, id));
                }
                let k = e.kill_at.map_or(deadline, |k| k.min(deadline));
                e.kill_at = Some(k);
                self.deadlines.insert((k, id));
                Ok(Vec::new())
            }
            State::Running => {
                e.state = State::Stopping;
                e.stop_waiters.extend(requester);
                e.kill_at = Some(now.mono + grace_ms);
                self.deadlines.insert((now.mono + grace_ms, id));
                let signal = Effect::Signal {
                    id,
                    pid: e.pid,
                    signo,
                    group: e.group,
                    // The main command gets exactly the signal forwarded
                    // to it, as from tini; everything else archon stops
                    // gets SIGCONT after it.
                    cont: signo != SIGKILL && e.kind != Kind::Main,
                    pgid: e.pgid,
                };
                let snapshot = e.clone();
                Ok(vec![signal, self.event(&snapshot, now, "stopping")])
            }
        }
    }

    /// A client went away: its `Run` commands are terminated and it is no
    /// longer waiting for anything.
    pub fn client_gone(&mut self, client: u64, grace_ms: u64, now: Clock) -> Vec<Effect> {
        let mut orphaned = Vec::new();
        for e in self.entries.values_mut() {
            e.stop_waiters.retain(|w| w.client != client);
            if e.owner.is_some_and(|o| o.client == client) {
                e.owner = None;
                orphaned.push(e.id);
            }
        }
        let mut fx = Vec::new();
        for id in orphaned {
            fx.extend(self.stop(id, grace_ms, None, now).unwrap_or_default());
        }
        fx
    }

    /// Begins an orderly shutdown. `Run` commands are stopped at once and
    /// their callers answered `Error,shutting-down`; the main command gets
    /// `main_signal` (the signal that began the shutdown); once it is gone,
    /// every daemon is stopped at once, with SIGTERM and SIGKILL after
    /// `grace_ms`. Monitored processes are not archon's to stop.
    pub fn shutdown(&mut self, grace_ms: u64, main_signal: i32, now: Clock) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.shutdown_grace.is_some() {
            return fx;
        }
        self.shutdown_grace = Some(grace_ms);
        let runs: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.kind == Kind::Run && e.state != State::Exited)
            .map(|e| e.id)
            .collect();
        for id in runs {
            if let Some(to) = self.entries.get_mut(&id).and_then(|e| e.owner.take()) {
                fx.push(Effect::Reply {
                    to,
                    reply: Reply::error(ErrorKind::ShuttingDown, "archon is shutting down"),
                });
            }
            fx.extend(self.stop(id, grace_ms, None, now).unwrap_or_default());
        }
        if let Some(main) = self.main.filter(|_| self.main_alive()) {
            fx.extend(
                self.stop_with(main, main_signal, grace_ms, None, now)
                    .unwrap_or_default(),
            );
        }
        fx.extend(self.advance(now));
        fx
    }

    /// The next step of the shutdown: once the main command is gone, every
    /// running daemon is stopped at once, under one grace period (as
    /// configured services are): one by one, five stubborn daemons took
    /// five grace periods, past `docker stop`'s patience.
    fn advance(&mut self, now: Clock) -> Vec<Effect> {
        let Some(grace) = self.shutdown_grace else {
            return Vec::new();
        };
        if self.daemons_stopped || self.main_alive() {
            return Vec::new();
        }
        self.daemons_stopped = true;
        let running: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.kind == Kind::Daemon && e.state == State::Running)
            .map(|e| e.id)
            .collect();
        let mut fx = Vec::new();
        for id in running {
            fx.extend(self.stop(id, grace, None, now).unwrap_or_default());
        }
        fx
    }

    /// A second shutdown request: SIGKILL for everything archon started,
    /// now, instead of one by one.
    pub fn hurry(&mut self, now: Clock) -> Vec<Effect> {
        self.shutdown_grace = Some(0);
        let live: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.kind != Kind::Monitor && e.state != State::Exited)
            .map(|e| e.id)
            .collect();
        let mut fx = Vec::new();
        for id in live {
            fx.extend(self.stop(id, 0, None, now).unwrap_or_default());
        }
        fx.extend(self.tick(now));
        fx
    }

    /// Time passed: sends the SIGKILLs that are due.
    pub fn tick(&mut self, now: Clock) -> Vec<Effect> {
        let mut fx = Vec::new();
        while let Some(&(k, id)) = self.deadlines.first() {
            if k > now.mono {
                break;
            }
            self.deadlines.pop_first();
            if let Some(e) = self.entries.get_mut(&id) {
                e.kill_at = None;
                fx.push(Effect::Signal {
                    id,
                    pid: e.pid,
                    signo: SIGKILL,
                    group: e.group,
                    cont: false,
                    pgid: e.pgid,
                });
            }
        }
        fx
    }

    /// The earliest pending deadline (monotonic ms).
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|&(k, _)| k)
    }

    /// Processes archon started that are still alive.
    pub fn started_alive(&self) -> usize {
        self.alive_started
    }

    /// Every row, one at a time (a big table is not built in memory).
    pub fn each_row(&self, mut f: impl FnMut(ProcessRow)) {
        for e in self.entries.values() {
            f(Self::row(e));
        }
    }

    /// Up to `max` rows from id `from` on; returns the id to go on from,
    /// or None when the table is done (a cursor for a streamed `Status`).
    pub fn rows_from(&self, from: u64, max: usize, mut f: impl FnMut(ProcessRow)) -> Option<u64> {
        let mut it = self.entries.range(from..);
        for _ in 0..max {
            let (_, e) = it.next()?;
            f(Self::row(e));
        }
        it.next().map(|(id, _)| *id)
    }

    fn row(e: &Entry) -> ProcessRow {
        ProcessRow {
            id: e.id,
            kind: e.kind.as_str().into(),
            pid: e.pid,
            state: e.state.as_str().into(),
            started: fmt_time(e.started_wall),
            exited: e.exited_wall.map(fmt_time).unwrap_or_default(),
            status: e.exit.as_ref().map(Exit::describe).unwrap_or_default(),
            argv: e.argv.clone(),
        }
    }

    pub fn rows(&self, only: Option<u64>) -> Result<Vec<ProcessRow>, Reply> {
        let row = Self::row;
        match only {
            Some(id) => match self.entries.get(&id) {
                Some(e) => Ok(vec![row(e)]),
                None => Err(Reply::error(
                    ErrorKind::NoSuchId,
                    format!("no process {id}"),
                )),
            },
            None => Ok(self.entries.values().map(|e| row(e)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Clock {
        Clock {
            mono: ms,
            wall: 1_000_000 + ms,
        }
    }

    const C: ReplyTo = ReplyTo { client: 7, seq: 1 };

    #[test]
    fn run_exit_replies_to_owner_and_leaves_table() {
        let mut s = Supervisor::new();
        let (id, _) = s.started(Kind::Run, 100, vec!["true".into()], Some(C), at(0));
        let fx = s.exited(id, Exit::Code(3), at(5));
        assert!(fx.contains(&Effect::Reply {
            to: C,
            reply: Reply::ExitStatus(3, None)
        }));
        assert!(fx.contains(&Effect::Forget { id }));
        assert!(s.get(id).is_none());
    }

    #[test]
    fn stop_escalates_after_grace_and_answers_waiter() {
        let mut s = Supervisor::new();
        let (id, _) = s.started(Kind::Daemon, 100, vec!["d".into()], None, at(0));
        let fx = s.stop(id, 1000, Some(C), at(10)).unwrap();
        assert!(matches!(
            fx[0],
            Effect::Signal {
                signo: SIGTERM,
                group: false,
                cont: true,
                ..
            }
        ));
        assert_eq!(s.next_deadline(), Some(1010));
        assert!(s.tick(at(1009)).is_empty());
        let fx = s.tick(at(1010));
        assert!(matches!(fx[0], Effect::Signal { signo: SIGKILL, .. }));
        assert_eq!(s.next_deadline(), None);
        let fx = s.exited(id, Exit::Signal(9, "KILL".into()), at(1020));
        assert!(fx.contains(&Effect::Reply {
            to: C,
            reply: Reply::Ok(vec![id.to_string(), "137".into()])
        }));
        assert_eq!(s.get(id).map(|e| e.state), Some(State::Exited));
    }

    #[test]
    fn stop_of_exited_answers_at_once_and_unknown_id_errors() {
        let mut s = Supervisor::new();
        let (id, _) = s.started(Kind::Daemon, 100, vec![], None, at(0));
        s.exited(id, Exit::Code(0), at(1));
        let fx = s.stop(id, 10, Some(C), at(2)).unwrap();
        assert_eq!(fx.len(), 1);
        let err = s.stop(99, 10, Some(C), at(2)).unwrap_err();
        assert!(matches!(err, Reply::Error(ErrorKind::NoSuchId, _)));
    }

    #[test]
    fn client_gone_terminates_its_run_commands_group_wide() {
        let mut s = Supervisor::new();
        let (id, _) = s.started(Kind::Run, 100, vec![], Some(C), at(0));
        let (other, _) = s.started(
            Kind::Run,
            101,
            vec![],
            Some(ReplyTo { client: 8, seq: 1 }),
            at(0),
        );
        let fx = s.client_gone(7, 500, at(1));
        assert!(fx.contains(&Effect::Signal {
            id,
            pid: 100,
            signo: SIGTERM,
            group: true,
            pgid: 100,
            cont: true,
        }));
        assert!(!fx
            .iter()
            .any(|f| matches!(f, Effect::Signal { id, .. } if *id == other)));
        let fx = s.exited(id, Exit::Signal(15, "TERM".into()), at(2));
        assert!(!fx.iter().any(|f| matches!(f, Effect::Reply { .. })));
    }

    #[test]
    fn shutdown_spares_monitors_and_answers_run_callers() {
        let mut s = Supervisor::new();
        let (r, _) = s.started(Kind::Run, 1, vec![], Some(C), at(0));
        let (m, _) = s.started(Kind::Monitor, 2, vec![], None, at(0));
        let fx = s.shutdown(100, SIGTERM, at(1));
        assert!(fx.iter().any(|f| matches!(
            f,
            Effect::Reply {
                reply: Reply::Error(ErrorKind::ShuttingDown, _),
                ..
            }
        )));
        assert!(fx
            .iter()
            .any(|f| matches!(f, Effect::Signal { id, .. } if *id == r)));
        assert!(!fx
            .iter()
            .any(|f| matches!(f, Effect::Signal { id, .. } if *id == m)));
        assert_eq!(s.started_alive(), 1);
    }

    #[test]
    fn deadlines_follow_stops_exits_and_hurry() {
        let mut s = Supervisor::new();
        let (a, _) = s.started(Kind::Daemon, 10, vec![], None, at(0));
        let (b, _) = s.started(Kind::Daemon, 11, vec![], None, at(0));
        s.stop(a, 500, None, at(0)).unwrap();
        s.stop(b, 300, None, at(0)).unwrap();
        assert_eq!(s.next_deadline(), Some(300));
        // A second Stop with a shorter grace moves the deadline earlier.
        s.stop(a, 100, None, at(100)).unwrap();
        assert_eq!(s.next_deadline(), Some(200));
        s.exited(a, Exit::Code(0), at(150));
        assert_eq!(s.next_deadline(), Some(300));
        let fx = s.hurry(at(160));
        assert!(fx.contains(&Effect::Signal {
            id: b,
            pid: 11,
            signo: SIGKILL,
            group: false,
            pgid: 11,
            cont: false,
        }));
        assert_eq!(s.next_deadline(), None);
    }

    fn signalled(fx: &[Effect]) -> Vec<(u64, i32)> {
        fx.iter()
            .filter_map(|f| match f {
                Effect::Signal { id, signo, .. } => Some((*id, *signo)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn shutdown_stops_main_first_then_every_daemon_at_once() {
        let mut s = Supervisor::new();
        let (d1, _) = s.started(Kind::Daemon, 10, vec![], None, at(0));
        let (d2, _) = s.started(Kind::Daemon, 11, vec![], None, at(0));
        let (main, _) = s.started_main(12, vec!["app".into()], true, at(0));
        let (d3, _) = s.started(Kind::Daemon, 13, vec![], None, at(0));
        assert_eq!(signalled(&s.forward(10)), [(main, 10)]);
        // SIGINT began it: the main command gets SIGINT, its group too.
        let fx = s.shutdown(1000, 2, at(1));
        assert_eq!(signalled(&fx), [(main, 2)]);
        assert!(fx.contains(&Effect::Signal {
            id: main,
            pid: 12,
            signo: 2,
            group: true,
            pgid: 12,
            cont: false,
        }));
        // Ignored: SIGKILL after the grace period.
        assert_eq!(signalled(&s.tick(at(1001))), [(main, SIGKILL)]);
        // Then every daemon at once, under one grace period.
        let fx = s.exited(main, Exit::Signal(9, "KILL".into()), at(1002));
        assert_eq!(
            signalled(&fx),
            [(d1, SIGTERM), (d2, SIGTERM), (d3, SIGTERM)]
        );
        assert_eq!(s.main_exit(), Some(&Exit::Signal(9, "KILL".into())));
        assert!(signalled(&s.exited(d3, Exit::Code(0), at(1003))).is_empty());
        assert_eq!(signalled(&s.tick(at(2002))), [(d1, SIGKILL), (d2, SIGKILL)]);
        assert!(signalled(&s.exited(d2, Exit::Code(0), at(2004))).is_empty());
        assert!(signalled(&s.exited(d1, Exit::Code(0), at(2005))).is_empty());
        assert_eq!(s.started_alive(), 0);
        // Nothing left to forward to.
        assert!(s.forward(1).is_empty());
    }

    #[test]
    fn shutdown_without_main_stops_every_daemon_and_hurry_kills_all() {
        let mut s = Supervisor::new();
        let (d1, _) = s.started(Kind::Daemon, 10, vec![], None, at(0));
        let (d2, _) = s.started(Kind::Daemon, 11, vec![], None, at(0));
        assert_eq!(
            signalled(&s.shutdown(1000, SIGTERM, at(1))),
            [(d1, SIGTERM), (d2, SIGTERM)]
        );
        // A second shutdown is not a second start.
        assert!(s.shutdown(1000, SIGTERM, at(2)).is_empty());
        // Both are stopping already: hurry kills them now.
        let fx = signalled(&s.hurry(at(3)));
        assert!(fx.contains(&(d1, SIGKILL)) && fx.contains(&(d2, SIGKILL)));
    }

    #[test]
    fn main_record_survives_eviction() {
        let mut s = Supervisor::new();
        let (main, _) = s.started_main(2, vec![], false, at(0));
        s.exited(main, Exit::Code(42), at(1));
        for i in 0..(MAX_EXITED as i32 + 10) {
            let (id, _) = s.started(Kind::Daemon, i + 3, vec![], None, at(0));
            s.exited(id, Exit::Code(0), at(1));
        }
        assert_eq!(s.main_exit(), Some(&Exit::Code(42)));
    }

    #[test]
    fn exited_records_are_bounded() {
        let mut s = Supervisor::new();
        for i in 0..(MAX_EXITED as i32 + 10) {
            let (id, _) = s.started(Kind::Daemon, i + 2, vec![], None, at(0));
            s.exited(id, Exit::Code(0), at(1));
        }
        assert_eq!(s.rows(None).unwrap().len(), MAX_EXITED);
    }

    #[test]
    fn monitor_status_can_be_learned_later() {
        let mut s = Supervisor::new();
        let (id, _) = s.started(Kind::Monitor, 5, vec![], None, at(0));
        s.exited(id, Exit::Unknown, at(1));
        let fx = s.exit_learned(id, Exit::Code(4), at(2));
        assert_eq!(fx.len(), 1);
        assert_eq!(s.rows(Some(id)).unwrap()[0].status, "4");
    }
}
