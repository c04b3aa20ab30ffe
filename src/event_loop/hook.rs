//! The event loop's side of Lua hooks: turning what happens into
//! `HookEvent`s, and applying what hooks ask for once the event that
//! called them is fully handled (never from inside a hook).

use super::*;
use crate::hooks::{HookAction, HookEvent};
use crate::services::SvcState;

/// Hook actions applied per loop iteration; more wait for the next one.
const ACTIONS_PER_ITERATION: usize = 1000;

pub(super) fn wall_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A hook call waiting for the end of the loop iteration.
pub(super) enum PendingHook {
    Event(HookEvent),
    /// A command a hook ran has exited: its callback, with the status.
    Done {
        key: mlua::RegistryKey,
        by: String,
        code: i32,
    },
}

impl EventLoop {
    /// Queues the hooks listening for this event (none: nearly free). They
    /// run at the end of the loop iteration (`flush_hooks`), after what the
    /// event set off has been done: a crashed service is respawned first,
    /// and its hook runs while the new process execs.
    pub(super) fn fire(&mut self, ev: HookEvent) {
        let Some(h) = self.hooks.as_mut() else {
            return;
        };
        if !h.wants(ev.kind) {
            return;
        }
        self.hook_pending.push_back(PendingHook::Event(ev));
    }

    /// Runs the queued hook calls, in the order they were queued.
    pub(super) fn flush_hooks(&mut self) {
        while let Some(p) = self.hook_pending.pop_front() {
            let Some(h) = self.hooks.as_mut() else {
                self.hook_pending.clear();
                return;
            };
            let actions = match p {
                PendingHook::Event(ev) => h.fire(&ev),
                PendingHook::Done { key, by, code } => h.run_done(key, &by, code),
            };
            self.hook_actions.extend(actions);
        }
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
        let Some(h) = self.hooks.as_ref() else {
            return;
        };
        h.snapshot.borrow_mut().services.insert(
            (name.to_string(), index),
            (state.as_str().to_string(), pid, restarts),
        );
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

    /// A process exited: `exited` (services), `run_exited` (commands,
    /// named by their program's base name), `monitor_exited`.
    pub(super) fn fire_exit(&mut self, id: u64, kind: Kind, exit: &Exit) {
        if self.hooks.is_none() {
            return;
        }
        let (hook_kind, service, instance) = match kind {
            Kind::Service => match self.services.owner(id) {
                Some((n, i)) => ("exited", n, i),
                None => return,
            },
            Kind::Run | Kind::Monitor => {
                let program = self
                    .sup
                    .get(id)
                    .and_then(|e| e.argv.first())
                    .map(|a| a.rsplit('/').next().unwrap_or("").to_string())
                    .unwrap_or_default();
                let kind = if kind == Kind::Run {
                    "run_exited"
                } else {
                    "monitor_exited"
                };
                (kind, program, 0)
            }
            _ => return,
        };
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
                if let HookAction::Run {
                    callback: Some(k), ..
                } = action
                {
                    if let Some(h) = self.hooks.as_ref() {
                        h.drop_key(k);
                    }
                }
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
                        self.fire_simple("scaled", &name, k);
                    }
                }
                HookAction::Signal(name, sig) => {
                    let entries: Vec<u64> = self
                        .services
                        .instances(Some(&name))
                        .map(|v| v.iter().filter_map(|(_, i)| i.entry).collect())
                        .unwrap_or_default();
                    for e in entries {
                        if let Some(w) = self.watched.get(&e) {
                            let _ = platform::pidfd_send_signal(&w.pidfd, sig);
                        }
                    }
                }
                HookAction::SetStatus(name, text) => self.services.set_status_by_name(&name, &text),
                HookAction::Run { argv, callback, by } => {
                    let cmd = Command {
                        argv: argv.clone(),
                        env: Vec::new(),
                    };
                    match self.spawn(&cmd, &[], None) {
                        Ok(sp) => {
                            let id = self.track(Kind::Run, sp, argv, None, now);
                            if let Some(k) = callback {
                                self.hook_runs.insert(id, (k, by));
                            }
                        }
                        Err(_) => {
                            log::warn!("hook {by}: cannot run {}", argv.join(" "));
                            if let Some(key) = callback {
                                self.hook_pending.push_back(PendingHook::Done {
                                    key,
                                    by,
                                    code: 127,
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    /// A command a hook ran has exited: its callback is queued.
    pub(super) fn hook_run_done(&mut self, id: u64, exit: &Exit) {
        if let Some((key, by)) = self.hook_runs.remove(&id) {
            let code = exit.shell_code().unwrap_or(-1);
            self.hook_pending
                .push_back(PendingHook::Done { key, by, code });
        }
    }
}
