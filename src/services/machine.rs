//! The state machine of one service instance. Pure: `step` takes an event
//! and the time and returns the new state plus what must be done.
//!
//! ```text
//! state      event                         -> state      action
//! ---------  ----------------------------  ----------  -------------------------------
//! stopped    Start                         -> starting   (spawn once dependencies are ready)
//! failed     Start                         -> starting   budget and delay reset
//! exited     Start                         -> starting   (a oneshot, run again)
//! backoff    Start                         -> starting   at once
//! starting   Spawned (ready = exec)        -> running    (oneshot: stays starting; with
//!                                                        startsecs, once it has passed)
//! starting   Spawned (ready = fd)          -> starting   wait for the newline
//! starting   Ready                         -> running
//! starting   SpawnFailed                   -> as Exited with status 127/126
//! starting   StartTimeout                  -> stopping   kill; counts as a failure
//! running    Unhealthy / Healthy           -> unhealthy / running
//! running    Keepalive (WATCHDOG=1)        -> running    watchdog due again
//! running    Tick past the watchdog, or
//!            WatchdogTrigger               -> stopping   watchdog_signal; counts as a failure
//! starting   Exited before startsecs       -> as a failure, whatever the code
//! starting,
//! running,
//! unhealthy  Exited, oneshot, success      -> exited
//!            Exited, no restart wanted     -> stopped (success) / failed (failure)
//!            Exited, budget spent          -> failed
//!            Exited, up > reset_after      -> starting   restart at once, delay reset
//!            Exited, otherwise             -> backoff    delay = initial, then x multiplier, capped
//! backoff    Tick past the delay           -> starting
//! any live   Stop                          -> stopping   stop signal, SIGKILL after grace
//! any        PoolFailed (pool budget spent) -> failed     a live one stops first
//! starting
//! (no pid),
//! backoff    Stop                          -> stopped
//! stopping   Exited                        -> stopped    (or starting, when a restart was asked)
//! starting,
//! running,
//! unhealthy  LimitExceeded (restart)       -> stopping   stop signal; the exit is a failure that
//!                                                        restarts (backoff, budget), whatever the policy
//!            LimitExceeded (stop)          -> stopping   stop signal; then failed
//! ```
//!
//! "No restart wanted": `restart = "never"`; or `"on-failure"` and the exit
//! code is a success code. A restart counts against the budget (at most N
//! restarts within the window); past it the instance is `failed` until a
//! `Start`.

use super::spec::{Readiness, Restart, ServiceSpec};
use crate::supervisor::Exit;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcState {
    Stopped,
    Starting,
    Running,
    Unhealthy,
    Stopping,
    Backoff,
    Failed,
    Exited,
}

impl SvcState {
    pub fn as_str(self) -> &'static str {
        match self {
            SvcState::Stopped => "stopped",
            SvcState::Starting => "starting",
            SvcState::Running => "running",
            SvcState::Unhealthy => "unhealthy",
            SvcState::Stopping => "stopping",
            SvcState::Backoff => "backoff",
            SvcState::Failed => "failed",
            SvcState::Exited => "exited",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start,
    Spawned {
        entry: u64,
        pid: i32,
    },
    SpawnFailed {
        code: i32,
    },
    Ready,
    Unhealthy,
    Healthy,
    StartTimeout,
    /// `WATCHDOG=1`: the service is alive.
    Keepalive,
    /// `WATCHDOG=trigger`: the service says it is not.
    WatchdogTrigger,
    /// The pool's own budget is spent: stop, and be failed.
    PoolFailed,
    /// One of the service's `limits` held: stop it, then restart it (through
    /// the backoff and the budget) or leave it failed.
    LimitExceeded {
        restart: bool,
    },
    /// Its startup or liveness probe failed: stop it, and restart it
    /// through the backoff, the budget and the circuit breaker.
    LivenessFailed,
    /// Its liveness probe passed: the breaker's count starts again.
    Alive,
    Exited(Exit),
    Stop,
    /// Stop, then start again once stopped (a restart or a changed spec).
    Restart,
    Tick,
}

/// What the manager must do for this instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a process for it (the manager checks dependencies first).
    Spawn,
    /// Stop its process: `signal`, SIGKILL after `grace_ms`.
    Kill {
        entry: u64,
        signal: i32,
        grace_ms: u64,
    },
    /// Failed for good (budget spent or no restart after a failure).
    FailedForGood(Exit),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub index: u32,
    pub state: SvcState,
    /// The supervisor entry and pid of its live process.
    pub entry: Option<u64>,
    pub pid: Option<i32>,
    /// Restarts since archon started it (or since the last `Start`).
    pub restarts: u32,
    /// When the recent restarts happened (monotonic ms), for the budget.
    recent: VecDeque<u64>,
    /// The current backoff delay; 0 before the first crash.
    pub delay_ms: u64,
    /// When the next attempt is due (in `backoff`).
    pub next_attempt: Option<u64>,
    /// When its current process started (monotonic ms).
    pub started_at: Option<u64>,
    /// When it entered its current state (wall ms, for display).
    pub since_wall: u64,
    pub last_exit: Option<Exit>,
    /// Readiness must come by then (monotonic ms).
    pub start_deadline: Option<u64>,
    /// Ready, but `startsecs` has not passed: running at this time.
    pub settle_at: Option<u64>,
    /// The next `WATCHDOG=1` must come by then (while running).
    pub watchdog_due: Option<u64>,
    /// The process exited before `startsecs`: a failed start.
    pub early_exit: bool,
    /// Stopped by the watchdog (the log says why).
    pub watchdog_fired: bool,
    /// A restart was asked while stopping: start again once stopped.
    restart_after_stop: bool,
    /// The start timeout fired: the exit that follows is a failure.
    pub timed_out: bool,
    /// The pool's budget is spent: once stopped, the instance is failed.
    fail_after_stop: bool,
    /// A limit stopped it: Some(true) restarts it as after a failure,
    /// Some(false) leaves it failed.
    limit_stop: Option<bool>,
    /// The exit that follows is a failure that restarts whatever the
    /// policy (a limiter's restart).
    force_restart: bool,
    /// What the service last said about itself (systemd's STATUS=).
    pub status_text: String,
    /// The stop under way is a failed probe's (restart reason `health`).
    liveness_stop: bool,
    /// Probe-caused restarts in a row without a liveness pass between
    /// them: the circuit breaker opens at its `failures`.
    pub strikes: u32,
}

impl Instance {
    pub fn new(index: u32) -> Self {
        Instance {
            index,
            state: SvcState::Stopped,
            entry: None,
            pid: None,
            restarts: 0,
            recent: VecDeque::new(),
            delay_ms: 0,
            next_attempt: None,
            started_at: None,
            since_wall: 0,
            last_exit: None,
            start_deadline: None,
            settle_at: None,
            watchdog_due: None,
            early_exit: false,
            watchdog_fired: false,
            restart_after_stop: false,
            timed_out: false,
            fail_after_stop: false,
            limit_stop: None,
            force_restart: false,
            status_text: String::new(),
            liveness_stop: false,
            strikes: 0,
        }
    }

    /// A limit is stopping it, to restart it.
    pub fn limit_restart_pending(&self) -> bool {
        self.limit_stop == Some(true) && !self.liveness_stop
    }

    /// A failed probe is stopping it, to restart it.
    pub fn probe_restart_pending(&self) -> bool {
        self.liveness_stop
    }

    /// The circuit breaker's state: `closed`, `open` (waiting out the
    /// cool-down, no process) or `half-open` (the one try after it); None
    /// without a breaker.
    pub fn breaker(&self, spec: &ServiceSpec) -> Option<&'static str> {
        let b = spec.breaker?;
        Some(if self.strikes < b.failures {
            "closed"
        } else if self.state == SvcState::Backoff {
            "open"
        } else {
            "half-open"
        })
    }

    pub fn is_live(&self) -> bool {
        self.entry.is_some()
    }

    /// Waiting to be spawned (starting, no process yet).
    pub fn wants_spawn(&self) -> bool {
        self.state == SvcState::Starting && self.entry.is_none()
    }

    fn set(&mut self, state: SvcState, wall: u64) {
        if self.state != state {
            self.since_wall = wall;
        }
        self.state = state;
    }

    /// One transition. `mono`/`wall`: now, in ms.
    pub fn step(&mut self, ev: Event, spec: &ServiceSpec, mono: u64, wall: u64) -> Vec<Action> {
        use SvcState as S;
        let mut fx = Vec::new();
        match (self.state, ev) {
            (S::Stopped | S::Failed | S::Exited | S::Backoff, Event::Start) => {
                if self.state == S::Failed {
                    self.recent.clear();
                    self.delay_ms = 0;
                    self.restarts = 0;
                }
                self.next_attempt = None;
                self.set(S::Starting, wall);
                fx.push(Action::Spawn);
            }
            (S::Starting | S::Running | S::Unhealthy | S::Stopping, Event::Start) => {
                self.restart_after_stop = self.state == S::Stopping;
            }
            (S::Starting, Event::Spawned { entry, pid }) => {
                self.entry = Some(entry);
                self.pid = Some(pid);
                self.started_at = Some(mono);
                self.timed_out = false;
                self.watchdog_fired = false;
                self.early_exit = false;
                if spec.ready == Readiness::Exec && !spec.oneshot && !spec.probes_gate_ready() {
                    self.start_deadline = None;
                    self.ready_now(spec, mono, wall);
                } else {
                    self.start_deadline = Some(mono + spec.start_timeout_ms);
                }
            }
            (S::Starting, Event::Ready)
                if self.entry.is_some() && !spec.oneshot && self.settle_at.is_none() =>
            {
                self.start_deadline = None;
                self.ready_now(spec, mono, wall);
            }
            (S::Running | S::Unhealthy, Event::Keepalive) if spec.watchdog_ms > 0 => {
                self.watchdog_due = Some(mono + spec.watchdog_ms);
            }
            (S::Running | S::Unhealthy, Event::WatchdogTrigger) if spec.watchdog_ms > 0 => {
                fx.extend(self.watchdog_kill(spec, wall));
            }
            (S::Running | S::Unhealthy, Event::Tick) => {
                if self.watchdog_due.is_some_and(|t| t <= mono) {
                    fx.extend(self.watchdog_kill(spec, wall));
                }
            }
            (S::Running, Event::Unhealthy) => self.set(S::Unhealthy, wall),
            (S::Unhealthy, Event::Healthy) => self.set(S::Running, wall),
            (S::Starting, Event::StartTimeout) => {
                if let Some(entry) = self.entry {
                    self.timed_out = true;
                    self.start_deadline = None;
                    self.set(S::Stopping, wall);
                    fx.push(Action::Kill {
                        entry,
                        signal: spec.stop_signal,
                        grace_ms: spec.grace_ms,
                    });
                }
            }
            (S::Starting, Event::SpawnFailed { code }) => {
                fx.extend(self.after_exit(Exit::Code(code), spec, mono, wall));
            }
            (S::Starting | S::Running | S::Unhealthy, Event::Exited(exit)) => {
                fx.extend(self.after_exit(exit, spec, mono, wall));
            }
            (S::Starting | S::Running | S::Unhealthy, Event::LimitExceeded { restart }) => {
                if let Some(kill) = self.begin_stop(spec, wall) {
                    self.limit_stop = Some(restart);
                    self.restart_after_stop = false;
                    fx.push(kill);
                }
            }
            (S::Starting | S::Running | S::Unhealthy, Event::LivenessFailed) => {
                if let Some(kill) = self.begin_stop(spec, wall) {
                    self.limit_stop = Some(true);
                    self.liveness_stop = true;
                    self.restart_after_stop = false;
                    fx.push(kill);
                }
            }
            (S::Starting | S::Running | S::Unhealthy, Event::Alive) => self.strikes = 0,
            (S::Stopping, Event::Exited(exit)) => {
                if self.timed_out {
                    // The start timed out: a failure, with restart policy.
                    fx.extend(self.after_exit(exit, spec, mono, wall));
                } else if let Some(restart) = self.limit_stop.take() {
                    if restart {
                        self.force_restart = true;
                        fx.extend(self.after_exit(exit, spec, mono, wall));
                    } else {
                        self.gone(exit.clone());
                        self.set(S::Failed, wall);
                        fx.push(Action::FailedForGood(exit));
                    }
                } else {
                    self.gone(exit);
                    if std::mem::take(&mut self.fail_after_stop) {
                        self.set(S::Failed, wall);
                    } else if std::mem::take(&mut self.restart_after_stop) {
                        self.set(S::Starting, wall);
                        fx.push(Action::Spawn);
                    } else {
                        self.set(S::Stopped, wall);
                    }
                }
            }
            (S::Starting | S::Running | S::Unhealthy, ev @ (Event::Stop | Event::Restart)) => {
                let again = ev == Event::Restart;
                match self.begin_stop(spec, wall) {
                    Some(kill) => {
                        self.restart_after_stop = again;
                        fx.push(kill);
                    }
                    // Not spawned yet: a restart changes nothing.
                    None if again => {}
                    None => self.set(S::Stopped, wall),
                }
            }
            (S::Stopped | S::Backoff | S::Exited, Event::PoolFailed) => {
                self.next_attempt = None;
                self.set(S::Failed, wall);
            }
            (S::Starting | S::Running | S::Unhealthy, Event::PoolFailed) => {
                match self.begin_stop(spec, wall) {
                    Some(kill) => {
                        self.fail_after_stop = true;
                        self.restart_after_stop = false;
                        fx.push(kill);
                    }
                    None => self.set(S::Failed, wall),
                }
            }
            (S::Stopping, Event::PoolFailed) => {
                self.fail_after_stop = true;
                self.restart_after_stop = false;
            }
            (S::Backoff, Event::Stop) => {
                self.next_attempt = None;
                self.set(S::Stopped, wall);
            }
            (S::Stopped | S::Failed | S::Exited | S::Backoff, Event::Restart) => {
                self.next_attempt = None;
                self.set(S::Starting, wall);
                fx.push(Action::Spawn);
            }
            (S::Stopping, Event::Restart) => self.restart_after_stop = true,
            (S::Stopping, Event::Stop) => {
                self.restart_after_stop = false;
                // Asked to stop: it stops, whatever the limit wanted.
                self.limit_stop = None;
                self.liveness_stop = false;
            }
            (S::Backoff, Event::Tick) => {
                if self.next_attempt.is_some_and(|t| t <= mono) {
                    self.next_attempt = None;
                    self.set(S::Starting, wall);
                    fx.push(Action::Spawn);
                }
            }
            (S::Starting, Event::Tick) => {
                if self.settle_at.is_some_and(|t| t <= mono) {
                    self.settle_at = None;
                    self.run_now(spec, mono, wall);
                } else if self.start_deadline.is_some_and(|t| t <= mono) {
                    fx.extend(self.step(Event::StartTimeout, spec, mono, wall));
                }
            }
            // Everything else changes nothing: a late Ready, a Stop of a
            // stopped instance, an exit already handled, a tick with
            // nothing due.
            (_, _) => {}
        }
        fx
    }

    /// Readiness reached: running now, or once `startsecs` has passed
    /// since the spawn.
    fn ready_now(&mut self, spec: &ServiceSpec, mono: u64, wall: u64) {
        let settle = self.started_at.unwrap_or(mono) + spec.start_secs_ms;
        if settle > mono {
            self.settle_at = Some(settle);
        } else {
            self.run_now(spec, mono, wall);
        }
    }

    fn run_now(&mut self, spec: &ServiceSpec, mono: u64, wall: u64) {
        self.watchdog_due = (spec.watchdog_ms > 0).then(|| mono + spec.watchdog_ms);
        self.set(SvcState::Running, wall);
    }

    /// The watchdog went unfed (or was triggered): the watchdog signal,
    /// SIGKILL after the grace, and the exit is a failure.
    fn watchdog_kill(&mut self, spec: &ServiceSpec, wall: u64) -> Option<Action> {
        let entry = self.entry?;
        self.watchdog_due = None;
        self.timed_out = true;
        self.watchdog_fired = true;
        self.set(SvcState::Stopping, wall);
        Some(Action::Kill {
            entry,
            signal: spec.watchdog_signal,
            grace_ms: spec.grace_ms,
        })
    }

    /// Stopping a live process: the state and the kill to send. None
    /// when no process was spawned yet (nothing changes then).
    fn begin_stop(&mut self, spec: &ServiceSpec, wall: u64) -> Option<Action> {
        let entry = self.entry?;
        self.set(SvcState::Stopping, wall);
        self.start_deadline = None;
        self.settle_at = None;
        self.watchdog_due = None;
        Some(Action::Kill {
            entry,
            signal: spec.stop_signal,
            grace_ms: spec.grace_ms,
        })
    }

    fn gone(&mut self, exit: Exit) {
        self.entry = None;
        self.pid = None;
        self.start_deadline = None;
        self.settle_at = None;
        self.watchdog_due = None;
        self.last_exit = Some(exit);
    }

    /// The process is gone on its own (or its start failed or timed out):
    /// apply the restart policy, the budget and the backoff.
    fn after_exit(&mut self, exit: Exit, spec: &ServiceSpec, mono: u64, wall: u64) -> Vec<Action> {
        use SvcState as S;
        let up_ms = self.started_at.map_or(0, |t| mono.saturating_sub(t));
        let timed_out = std::mem::take(&mut self.timed_out);
        let forced = std::mem::take(&mut self.force_restart);
        let probe_failed = std::mem::take(&mut self.liveness_stop);
        if probe_failed {
            self.strikes = self.strikes.saturating_add(1);
        }
        // Gone before startsecs: a failed start, whatever it exited with.
        self.early_exit = self.state == S::Starting
            && !spec.oneshot
            && spec.start_secs_ms > 0
            && self.entry.is_some()
            && up_ms < spec.start_secs_ms;
        let success =
            !timed_out && !forced && !self.early_exit && spec.is_success(exit.shell_code());
        self.gone(exit.clone());
        if std::mem::take(&mut self.restart_after_stop) {
            self.set(S::Starting, wall);
            return vec![Action::Spawn];
        }
        if spec.oneshot && success {
            self.set(S::Exited, wall);
            return Vec::new();
        }
        let restart = forced
            || match spec.restart {
                Restart::Always => true,
                Restart::OnFailure => !success,
                Restart::Never => false,
            };
        if !restart {
            if success {
                self.set(S::Stopped, wall);
                return Vec::new();
            }
            self.set(S::Failed, wall);
            return vec![Action::FailedForGood(exit)];
        }
        if let Some(b) = &spec.budget {
            while self
                .recent
                .front()
                .is_some_and(|&t| mono.saturating_sub(t) >= b.window_ms)
            {
                self.recent.pop_front();
            }
            if self.recent.len() as u32 >= b.restarts {
                self.set(S::Failed, wall);
                return vec![Action::FailedForGood(exit)];
            }
        }
        self.recent.push_back(mono);
        self.restarts += 1;
        if let Some(b) = spec
            .breaker
            .filter(|b| probe_failed && self.strikes >= b.failures)
        {
            // The breaker opens: no process and no probing for the
            // cool-down, then one try (half-open).
            self.next_attempt = Some(mono + b.cooldown_ms);
            self.set(S::Backoff, wall);
            return Vec::new();
        }
        if up_ms >= spec.backoff.reset_after_ms {
            self.delay_ms = 0;
            self.set(S::Starting, wall);
            return vec![Action::Spawn];
        }
        self.delay_ms = if self.delay_ms == 0 {
            spec.backoff.initial_ms
        } else {
            ((self.delay_ms as f64) * spec.backoff.multiplier).min(spec.backoff.max_ms as f64)
                as u64
        };
        self.next_attempt = Some(mono + self.delay_ms);
        self.set(S::Backoff, wall);
        Vec::new()
    }

    /// The earliest time this instance needs a `Tick`.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            SvcState::Backoff => self.next_attempt,
            SvcState::Starting => match (self.settle_at, self.start_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            SvcState::Running | SvcState::Unhealthy => self.watchdog_due,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::spec::{Backoff, Budget};

    fn spec() -> ServiceSpec {
        let mut s = ServiceSpec::new("svc", "t.lua", 1);
        s.cmd = vec!["x".into()];
        s.backoff = Backoff {
            initial_ms: 100,
            multiplier: 2.0,
            max_ms: 1000,
            reset_after_ms: 5000,
        };
        s.budget = Some(Budget {
            restarts: 5,
            window_ms: 60_000,
        });
        s
    }

    fn running(i: &mut Instance, s: &ServiceSpec, at: u64) {
        assert_eq!(i.step(Event::Start, s, at, at), vec![Action::Spawn]);
        i.step(Event::Spawned { entry: 1, pid: 10 }, s, at, at);
        assert_eq!(i.state, SvcState::Running);
    }

    #[test]
    fn a_limit_stops_gracefully_then_restarts_through_the_budget() {
        let mut s = spec();
        s.restart = Restart::Never;
        s.budget = Some(Budget {
            restarts: 1,
            window_ms: 60_000,
        });
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        let fx = i.step(Event::LimitExceeded { restart: true }, &s, 10, 10);
        assert_eq!(
            fx,
            vec![Action::Kill {
                entry: 1,
                signal: s.stop_signal,
                grace_ms: s.grace_ms
            }]
        );
        assert_eq!(i.state, SvcState::Stopping);
        // A second firing while it stops changes nothing.
        assert!(i
            .step(Event::LimitExceeded { restart: true }, &s, 11, 11)
            .is_empty());
        // Exits 0 on its stop signal: still a failure that restarts, even
        // with restart = "never", after the backoff.
        assert!(i.step(Event::Exited(Exit::Code(0)), &s, 20, 20).is_empty());
        assert_eq!((i.state, i.restarts), (SvcState::Backoff, 1));
        i.step(Event::Tick, &s, 20 + 100, 120);
        assert_eq!(i.state, SvcState::Starting);
        i.step(Event::Spawned { entry: 2, pid: 11 }, &s, 130, 130);
        i.step(Event::LimitExceeded { restart: true }, &s, 140, 140);
        // The budget (one restart) is spent: failed.
        let fx = i.step(Event::Exited(Exit::Signal(15, "TERM".into())), &s, 150, 150);
        assert_eq!(i.state, SvcState::Failed);
        assert!(matches!(fx[..], [Action::FailedForGood(_)]), "{fx:?}");
    }

    #[test]
    fn a_stopping_limit_leaves_it_failed_and_a_stop_wins() {
        let s = spec();
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        i.step(Event::LimitExceeded { restart: false }, &s, 10, 10);
        let fx = i.step(Event::Exited(Exit::Code(0)), &s, 20, 20);
        assert_eq!(i.state, SvcState::Failed);
        assert!(matches!(fx[..], [Action::FailedForGood(_)]), "{fx:?}");
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        i.step(Event::LimitExceeded { restart: true }, &s, 10, 10);
        i.step(Event::Stop, &s, 11, 11);
        i.step(Event::Exited(Exit::Code(0)), &s, 20, 20);
        assert_eq!(i.state, SvcState::Stopped);
    }

    #[test]
    fn startsecs_keeps_it_starting_and_an_early_exit_is_a_failed_start() {
        let mut s = spec();
        s.start_secs_ms = 1000;
        s.restart = Restart::OnFailure;
        let mut i = Instance::new(0);
        i.step(Event::Start, &s, 0, 0);
        i.step(Event::Spawned { entry: 1, pid: 10 }, &s, 0, 0);
        assert_eq!(i.state, SvcState::Starting);
        assert_eq!(i.next_deadline(), Some(1000));
        i.step(Event::Tick, &s, 999, 999);
        assert_eq!(i.state, SvcState::Starting);
        i.step(Event::Tick, &s, 1000, 1000);
        assert_eq!(i.state, SvcState::Running);
        // Exit 0 after startsecs under on-failure: a clean stop.
        i.step(Event::Exited(Exit::Code(0)), &s, 2000, 2000);
        assert_eq!(i.state, SvcState::Stopped);
        // Exit 0 before startsecs: a failed start, so restarted.
        i.step(Event::Start, &s, 3000, 3000);
        i.step(Event::Spawned { entry: 2, pid: 11 }, &s, 3000, 3000);
        i.step(Event::Exited(Exit::Code(0)), &s, 3500, 3500);
        assert!(i.early_exit);
        assert_eq!(i.state, SvcState::Backoff);
        // With readiness by notify, running needs both READY=1 and startsecs.
        s.ready = Readiness::Notify;
        let mut n = Instance::new(1);
        n.step(Event::Start, &s, 0, 0);
        n.step(Event::Spawned { entry: 3, pid: 12 }, &s, 0, 0);
        n.step(Event::Ready, &s, 200, 200);
        assert_eq!(
            (n.state, n.next_deadline()),
            (SvcState::Starting, Some(1000))
        );
        n.step(Event::Tick, &s, 1000, 1000);
        assert_eq!(n.state, SvcState::Running);
    }

    #[test]
    fn an_unfed_watchdog_kills_with_its_signal_and_restarts() {
        let mut s = spec();
        s.watchdog_ms = 500;
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        assert_eq!(i.next_deadline(), Some(500));
        i.step(Event::Keepalive, &s, 400, 400);
        assert_eq!(i.next_deadline(), Some(900));
        assert!(i.step(Event::Tick, &s, 899, 899).is_empty());
        let fx = i.step(Event::Tick, &s, 900, 900);
        assert!(
            matches!(
                fx[..],
                [Action::Kill {
                    entry: 1,
                    signal: 6,
                    ..
                }]
            ),
            "{fx:?}"
        );
        assert_eq!(i.state, SvcState::Stopping);
        // The exit it causes is a failure: back off and start again.
        i.step(Event::Exited(Exit::Signal(6, "ABRT".into())), &s, 950, 950);
        assert_eq!(i.state, SvcState::Backoff);
        assert_eq!(i.restarts, 1);
        // WATCHDOG=trigger fires at once; without a watchdog it is ignored.
        let mut t = Instance::new(1);
        running(&mut t, &s, 0);
        assert_eq!(t.step(Event::WatchdogTrigger, &s, 1, 1).len(), 1);
        s.watchdog_ms = 0;
        let mut o = Instance::new(2);
        running(&mut o, &s, 0);
        assert!(o.step(Event::WatchdogTrigger, &s, 1, 1).is_empty());
        assert_eq!(o.next_deadline(), None);
    }

    #[test]
    fn a_spent_pool_budget_stops_a_live_instance_then_fails_it() {
        let s = spec();
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        let fx = i.step(Event::PoolFailed, &s, 10, 10);
        assert!(matches!(fx[..], [Action::Kill { entry: 1, .. }]));
        assert_eq!(i.state, SvcState::Stopping);
        i.step(Event::Exited(Exit::Signal(15, "TERM".into())), &s, 20, 20);
        assert_eq!(i.state, SvcState::Failed);
        // One waiting to restart fails at once, with nothing to kill.
        let mut b = Instance::new(1);
        running(&mut b, &s, 0);
        b.step(Event::Exited(Exit::Code(1)), &s, 10, 10);
        assert_eq!(b.state, SvcState::Backoff);
        assert!(b.step(Event::PoolFailed, &s, 11, 11).is_empty());
        assert_eq!((b.state, b.next_attempt), (SvcState::Failed, None));
    }

    #[test]
    fn crash_loop_backs_off_exponentially_up_to_the_cap_then_fails() {
        let s = spec();
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        let mut t = 0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            t += 10;
            assert!(i.step(Event::Exited(Exit::Code(1)), &s, t, t).is_empty());
            assert_eq!(i.state, SvcState::Backoff);
            delays.push(i.delay_ms);
            let due = i.next_deadline().unwrap();
            assert!(
                i.step(Event::Tick, &s, due - 1, due - 1).is_empty(),
                "not before"
            );
            assert_eq!(i.step(Event::Tick, &s, due, due), vec![Action::Spawn]);
            i.step(Event::Spawned { entry: 2, pid: 11 }, &s, due, due);
            t = due;
        }
        assert_eq!(delays, [100, 200, 400, 800, 1000]);
        assert_eq!(i.restarts, 5);
        // The sixth crash within the window spends the budget.
        let fx = i.step(Event::Exited(Exit::Code(1)), &s, t + 10, t + 10);
        assert_eq!(fx, vec![Action::FailedForGood(Exit::Code(1))]);
        assert_eq!(i.state, SvcState::Failed);
        // Start clears it.
        assert_eq!(
            i.step(Event::Start, &s, t + 20, t + 20),
            vec![Action::Spawn]
        );
        assert_eq!(i.restarts, 0);
    }

    #[test]
    fn a_stable_service_restarts_at_once_and_old_restarts_leave_the_window() {
        let s = spec();
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        i.step(Event::Exited(Exit::Code(1)), &s, 10, 10);
        assert_eq!(i.delay_ms, 100);
        i.step(Event::Tick, &s, 110, 110);
        i.step(Event::Spawned { entry: 2, pid: 11 }, &s, 110, 110);
        // Up for longer than reset_after: straight back to starting.
        let fx = i.step(
            Event::Exited(Exit::Signal(9, "KILL".into())),
            &s,
            6000,
            6000,
        );
        assert_eq!(fx, vec![Action::Spawn]);
        assert_eq!((i.state, i.delay_ms), (SvcState::Starting, 0));
    }

    #[test]
    fn restart_policies() {
        let mut s = spec();
        s.restart = Restart::OnFailure;
        s.success_codes = vec![0, 3];
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        assert!(i.step(Event::Exited(Exit::Code(3)), &s, 1, 1).is_empty());
        assert_eq!(i.state, SvcState::Stopped);
        running(&mut i, &s, 2);
        i.step(Event::Exited(Exit::Code(4)), &s, 3, 3);
        assert_eq!(i.state, SvcState::Backoff);
        s.restart = Restart::Never;
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        let fx = i.step(Event::Exited(Exit::Signal(15, "TERM".into())), &s, 1, 1);
        assert_eq!(
            fx,
            vec![Action::FailedForGood(Exit::Signal(15, "TERM".into()))]
        );
    }

    #[test]
    fn oneshot_and_readiness() {
        let mut s = spec();
        s.oneshot = true;
        let mut i = Instance::new(0);
        i.step(Event::Start, &s, 0, 0);
        i.step(Event::Spawned { entry: 1, pid: 9 }, &s, 0, 0);
        assert_eq!(i.state, SvcState::Starting, "a oneshot is ready when done");
        i.step(Event::Exited(Exit::Code(0)), &s, 5, 5);
        assert_eq!(i.state, SvcState::Exited);

        let mut s = spec();
        s.ready = Readiness::Fd(3);
        s.start_timeout_ms = 50;
        let mut i = Instance::new(0);
        i.step(Event::Start, &s, 0, 0);
        i.step(Event::Spawned { entry: 1, pid: 9 }, &s, 0, 0);
        assert_eq!(i.state, SvcState::Starting);
        i.step(Event::Ready, &s, 10, 10);
        assert_eq!(i.state, SvcState::Running);
        // Never ready: the start timeout kills it and counts as a failure.
        let mut i = Instance::new(0);
        i.step(Event::Start, &s, 0, 0);
        i.step(Event::Spawned { entry: 1, pid: 9 }, &s, 0, 0);
        assert_eq!(i.next_deadline(), Some(50));
        let fx = i.step(Event::Tick, &s, 50, 50);
        assert!(matches!(
            fx[0],
            Action::Kill {
                entry: 1,
                signal: 15,
                ..
            }
        ));
        i.step(Event::Exited(Exit::Signal(15, "TERM".into())), &s, 60, 60);
        assert_eq!(i.state, SvcState::Backoff);
    }

    #[test]
    fn stop_and_restart() {
        let s = spec();
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        let fx = i.step(Event::Stop, &s, 1, 1);
        assert!(matches!(fx[0], Action::Kill { entry: 1, .. }));
        assert_eq!(i.state, SvcState::Stopping);
        assert!(i.step(Event::Exited(Exit::Code(0)), &s, 2, 2).is_empty());
        assert_eq!(i.state, SvcState::Stopped);
        // A restart of a live instance: stop, then start once gone.
        running(&mut i, &s, 3);
        i.step(Event::Restart, &s, 4, 4);
        assert_eq!(i.state, SvcState::Stopping);
        assert_eq!(
            i.step(Event::Exited(Exit::Code(0)), &s, 5, 5),
            vec![Action::Spawn]
        );
        assert_eq!(i.state, SvcState::Starting);
        // Stop while in backoff: stopped, no attempt pending.
        let mut i = Instance::new(0);
        running(&mut i, &s, 0);
        i.step(Event::Exited(Exit::Code(1)), &s, 1, 1);
        i.step(Event::Stop, &s, 2, 2);
        assert_eq!((i.state, i.next_deadline()), (SvcState::Stopped, None));
    }
}
