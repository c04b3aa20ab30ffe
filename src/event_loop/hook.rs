//! The event loop's side of Lua hooks: turning what happens into
//! `HookEvent`s for the worker (`worker.rs`), and applying what hooks ask
//! for once their reply is in (never from inside a hook).

use super::worker::Call;
use super::*;
use crate::protocol::worker::{HookAction, HookEvent, ToWorker};
use crate::services::SvcState;

/// Hook actions applied per loop iteration; more wait for the next one.
const ACTIONS_PER_ITERATION: usize = 1000;

pub(super) fn wall_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl EventLoop {
    /// Queues the event when a hook listens for it (none: nearly free).
    /// The queue goes to the worker at the end of the loop iteration
    /// (`flush_hooks`), after what the event set off has been done: a
    /// crashed service is respawned first.
    pub(super) fn fire(&mut self, ev: HookEvent) {
        if !self.hooks_want(ev.kind) {
            return;
        }
        self.hook_pending.push_back(ev);
    }

    /// Sends the queued events to the worker, in order.
    pub(super) fn flush_hooks(&mut self) {
        while let Some(ev) = self.hook_pending.pop_front() {
            self.worker_call(ToWorker::Event(ev.clone()), Call::Event(ev));
        }
        self.worker_flush();
    }

    /// A service instance changed state: keep the hooks' snapshot and fire
    /// the matching event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn service_changed(
        &mut self,
        name: &str,
        index: u32,
        old: SvcState,
        state: SvcState,
        pid: Option<i32>,
        restarts: u32,
        delay_ms: u64,
    ) {
        if self.lua.worker.is_none() {
            return;
        }
        let by_reason = self
            .services
            .restart_reasons()
            .get(&(name.to_string(), index))
            .copied()
            .unwrap_or_default();
        self.worker_send(ToWorker::Service {
            name: name.to_string(),
            instance: index,
            state: state.as_str().to_string(),
            pid,
            restarts,
            by_reason,
        });
        let kind = match state {
            SvcState::Running => "ready",
            SvcState::Backoff => "restarting",
            SvcState::Failed => "failed",
            SvcState::Unhealthy => "unhealthy",
            SvcState::Stopping => "stopping",
            SvcState::Stopped => "stopped",
            _ => return,
        };
        let now = self.now();
        self.fire(HookEvent {
            kind,
            service: name.to_string(),
            instance: index,
            pid,
            old_state: old.as_str().to_string(),
            state: state.as_str().to_string(),
            restarts,
            delay: (state == SvcState::Backoff).then(|| delay_ms as f64 / 1000.0),
            time: wall_secs(now.wall),
            ..Default::default()
        });
    }

    /// An event about a whole service or archon itself.
    pub(super) fn fire_simple(&mut self, kind: &'static str, service: &str, instance: u32) {
        let now = self.now();
        self.fire(HookEvent {
            kind,
            service: service.to_string(),
            instance,
            time: wall_secs(now.wall),
            ..Default::default()
        });
    }

    /// A process exited: `exited` (services), `run_exited`,
    /// `daemon_exited`, `monitor_exited` and `main_exited` (named by their
    /// program's base name). archon's own machinery (readiness and health
    /// checks, commands hooks run) fires nothing: a hook reacting to its
    /// own `archon.run` would loop.
    pub(super) fn fire_exit(&mut self, id: u64, kind: Kind, exit: &Exit) {
        if self.lua.worker.is_none()
            || self.checks.contains_key(&id)
            || self.internal_runs.contains(&id)
        {
            return;
        }
        let program = || {
            self.sup
                .get(id)
                .and_then(|e| e.argv.first())
                .map(|a| a.rsplit('/').next().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        let (hook_kind, service, instance) = match kind {
            Kind::Service => match self.services.owner(id) {
                Some((n, i)) => ("exited", n, i),
                None => return,
            },
            Kind::Run => ("run_exited", program(), 0),
            Kind::Monitor => ("monitor_exited", program(), 0),
            Kind::Daemon => ("daemon_exited", program(), 0),
            Kind::Main => ("main_exited", program(), 0),
        };
        if !self.hooks_want(hook_kind) {
            return;
        }
        let pid = self.sup.get(id).map(|e| e.pid);
        let now = self.now();
        let (status, signal) = match exit {
            Exit::Code(c) => (Some(*c), None),
            Exit::Signal(n, name) => (Some(128 + n), Some(name.clone())),
            Exit::Unknown => (None, None),
        };
        self.fire(HookEvent {
            kind: hook_kind,
            service,
            instance,
            pid,
            state: "exited".into(),
            status,
            signal,
            time: wall_secs(now.wall),
            ..Default::default()
        });
    }

    /// Applies what hooks asked for, in order. Actions may cause events
    /// whose hooks queue more; past `ACTIONS_PER_ITERATION` the rest waits
    /// for the next iteration.
    pub(super) fn apply_hook_actions(&mut self) {
        let mut n = 0;
        while let Some(action) = self.hook_actions.pop_front() {
            n += 1;
            if n > ACTIONS_PER_ITERATION {
                self.hook_actions.push_front(action);
                return;
            }
            if self.shutting_down {
                // Nothing new starts during a shutdown.
                continue;
            }
            let now = self.now();
            match action {
                HookAction::Start(name) => {
                    let _ = self.service_cmd(&name, |s, n, m, w| s.start(n, m, w));
                }
                HookAction::Stop(name) => {
                    let _ = self.service_cmd(&name, |s, n, m, w| s.stop(n, m, w));
                }
                HookAction::Restart(name) => {
                    let _ = self.service_cmd(&name, |s, n, m, w| s.restart(n, m, w));
                }
                HookAction::Scale(name, k) => {
                    if let Reply::Ok(_) = self.service_cmd(&name, |s, n, m, w| s.scale(n, k, m, w))
                    {
                        self.scaled(&name, k);
                    }
                }
                HookAction::Signal(name, sig) => {
                    let _ = self.signal_service(&name, sig);
                }
                HookAction::SetStatus(name, text) => self.services.set_status_by_name(&name, &text),
                HookAction::Run { argv, callback, by } => {
                    let cmd = Command {
                        argv: argv.clone(),
                        env: Vec::new(),
                    };
                    match self.spawn(&cmd, &[], None, false) {
                        Ok(sp) => {
                            let id = self.track(Kind::Run, sp, argv, None, now);
                            self.internal_runs.insert(id);
                            if let Some(k) = callback {
                                self.hook_runs.insert(id, (k, by));
                            }
                        }
                        Err(_) => {
                            log::warn!("hook {by}: cannot run {}", argv.join(" "));
                            if let Some(callback) = callback {
                                self.run_done(callback, by, 127);
                            }
                        }
                    }
                }
            }
        }
    }

    /// A command a hook ran has exited: its callback is queued.
    pub(super) fn hook_run_done(&mut self, id: u64, exit: &Exit) {
        if self.internal_runs.remove(&id) {
            // A limit's stop may have waited for it.
            self.limit_evidence_done();
        }
        if let Some((callback, by)) = self.hook_runs.remove(&id) {
            let code = exit.shell_code().unwrap_or(-1);
            self.run_done(callback, by, code);
        }
    }

    fn run_done(&mut self, callback: u64, by: String, status: i32) {
        self.worker_call(
            ToWorker::RunDone {
                callback,
                by,
                status,
            },
            Call::RunDone,
        );
    }
}
