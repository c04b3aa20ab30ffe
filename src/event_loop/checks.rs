//! Readiness and health check commands (`ready = { command }`,
//! `health`): run when due, one at a time per instance, killed with their
//! process group once they have run for their interval (at least a
//! second), their results to the state machine.

use super::*;
use crate::services::spec::{Readiness, ServiceSpec};
use crate::services::SvcState;

/// What a check command decides: readiness, or health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum CheckKind {
    Ready,
    Health,
}

/// The least time a readiness or health check command gets before it is
/// killed (Kubernetes' smallest probe timeout): an interval of 0.1 s must
/// not kill a shell that a busy machine starts slowly.
const CHECK_TIME_MIN_MS: u64 = 1000;

impl EventLoop {
    /// Runs the readiness and health checks that are due. A check is
    /// skipped while the previous one of the same service still runs.
    pub(super) fn run_due_checks(&mut self) {
        // Every pass comes here: no clock read when nothing is queued.
        if self.check_deadlines.is_empty() && self.check_due.is_empty() {
            return;
        }
        let now = self.now();
        // A check past its time is killed with its group and has failed.
        while let Some(&(deadline, id)) = self.check_deadlines.first() {
            if deadline > now.mono {
                break;
            }
            self.check_deadlines.pop_first();
            let Some((entry, kind)) = self.checks.remove(&id) else {
                continue;
            };
            log::warn!("id={entry}: its {kind:?} check ran past its time; killing it");
            if let Ok(fx) = self.sup.stop_with(id, sig::KILL, 0, None, now) {
                self.apply(fx);
            }
            self.check_ended(entry, kind, false);
        }
        while let Some(&(due, entry, kind)) = self.check_due.first() {
            if due > now.mono {
                break;
            }
            self.check_due.pop_first();
            let Some((name, _)) = self.services.owner(entry) else {
                continue; // the service's process is gone
            };
            let Some(spec) = self.services.spec(&name).cloned() else {
                continue;
            };
            let state = self.services.state_of(entry);
            let (argv, interval) = match (kind, &spec.ready, &spec.health) {
                (CheckKind::Ready, Readiness::Command { argv, interval_ms }, _)
                    if state == Some(SvcState::Starting) =>
                {
                    (argv.clone(), *interval_ms)
                }
                (CheckKind::Health, _, Some(h)) => {
                    if !matches!(state, Some(SvcState::Running | SvcState::Unhealthy)) {
                        // Not ready yet: look again later.
                        self.check_due
                            .insert((now.mono + h.interval_ms, entry, kind));
                        continue;
                    }
                    (h.argv.clone(), h.interval_ms)
                }
                _ => continue,
            };
            if self.checks.values().any(|&(e, k)| e == entry && k == kind) {
                self.check_due.insert((now.mono + interval, entry, kind));
                continue;
            }
            let index = self.services.owner(entry).map_or(0, |o| o.1);
            match self.spawn_check(&spec, index, &argv) {
                Ok(id) => {
                    // Its own group: the kill at its time reaches what it
                    // started. Its time: its interval, at least a second.
                    self.sup.set_group(id, true);
                    self.checks.insert(id, (entry, kind));
                    self.check_deadlines
                        .insert((now.mono + interval.max(CHECK_TIME_MIN_MS), id));
                }
                Err(()) => {
                    log::warn!("service {name}: cannot run its {kind:?} check");
                    self.check_ended(entry, kind, false);
                }
            }
        }
    }

    /// An instance's `PORT` and `PORT_<NAME>` variables, for its checks
    /// and probe commands (its fds are its own).
    pub(super) fn port_env(&self, name: &str, index: u32) -> Vec<(String, String)> {
        self.endpoints
            .ports_of(name, index)
            .iter()
            .enumerate()
            .flat_map(|(i, (n, _, p))| {
                let first = (i == 0).then(|| ("PORT".to_string(), p.to_string()));
                first
                    .into_iter()
                    .chain([(crate::services::net::port_var(n), p.to_string())])
            })
            .collect()
    }

    /// Starts a check or probe command of instance `index` of `spec`
    /// (its environment and ports, stdio on /dev/null), tracked as a
    /// `Run`: its entry id.
    pub(super) fn spawn_check(
        &mut self,
        spec: &ServiceSpec,
        index: u32,
        argv: &[String],
    ) -> Result<u64, ()> {
        let net = self.port_env(&spec.name, index);
        let parts = self
            .service_envp(spec, index, false, &net)
            .and_then(|(envp, path)| {
                let (program, argv_c) = exec_parts(argv, path.as_deref(), None)?;
                Ok((program, argv_c, envp))
            });
        let spawned = parts.and_then(|(program, argv_c, envp)| {
            let dn = self.dev_null.as_raw_fd();
            let spawn_spec = platform::SpawnSpec::new(
                program,
                argv_c,
                envp,
                [dn, dn, dn],
                self.nofile,
                self.ignored_signals.clone(),
            );
            platform::spawn(&spawn_spec).map_err(SpawnFail::Os)
        });
        let sp = spawned.map_err(|_| ())?;
        let now = self.now();
        Ok(self.track(Kind::Run, sp, argv.to_vec(), None, now))
    }

    /// A check finished (or could not start).
    pub(super) fn check_ended(&mut self, entry: u64, kind: CheckKind, ok: bool) {
        let now = self.now();
        let Some((name, _)) = self.services.owner(entry) else {
            return;
        };
        let Some(spec) = self.services.spec(&name).cloned() else {
            return;
        };
        match kind {
            CheckKind::Ready if ok => self.own_readiness(entry),
            CheckKind::Ready => {
                if let Readiness::Command { interval_ms, .. } = spec.ready {
                    self.check_due.insert((now.mono + interval_ms, entry, kind));
                }
            }
            CheckKind::Health => {
                let cmds = self.services.health(entry, ok, now.mono, now.wall);
                self.apply_svc(cmds);
                if let Some(h) = &spec.health {
                    self.check_due
                        .insert((now.mono + h.interval_ms, entry, kind));
                }
            }
        }
    }
}
