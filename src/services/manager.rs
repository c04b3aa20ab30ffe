//! The set of services: instances per service (replicas), dependencies,
//! start and stop order, live resizing and reload. Pure: the event loop
//! feeds it what happened and executes the `Cmd`s it returns.

use super::machine::{Action, Event, Instance, SvcState};
use super::spec::{find_cycle_in, Config, ServiceSpec};
use crate::supervisor::Exit;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the event loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// Start a process for this instance, then call `spawned` or
    /// `spawn_failed`.
    Spawn { name: String, index: u32 },
    /// Stop a process: `signal`, SIGKILL after `grace_ms`.
    Kill {
        entry: u64,
        signal: i32,
        grace_ms: u64,
    },
    /// An instance changed state (for subscribers and the log).
    Changed {
        name: String,
        index: u32,
        old: SvcState,
        state: SvcState,
        pid: Option<i32>,
        restarts: u32,
        delay_ms: u64,
    },
    /// An essential service failed for good: archon must shut down and exit
    /// with this status.
    Essential { name: String, exit: Exit },
}

/// Why an instance restarted: its process exited (a code), was killed by
/// a signal, failed its liveness (watchdog, start timeout), held a limit,
/// or was restarted on request (`Restart`, a hook).
pub const RESTART_REASONS: [&str; 5] = ["exit", "signal", "health", "limit", "manual"];

#[derive(Debug, Default)]
pub struct Services {
    /// Boxed: a spec is large and maps move their values around.
    specs: BTreeMap<String, Box<ServiceSpec>>,
    instances: BTreeMap<String, Vec<Instance>>,
    /// Recent restarts of each pool (monotonic ms), for `pool_budget`.
    pool_recent: BTreeMap<String, std::collections::VecDeque<u64>>,
    /// Restarts since archon started, by instance and reason (indexes of
    /// `RESTART_REASONS`), for metrics.
    restart_reasons: BTreeMap<(String, u32), [u64; 5]>,
    /// Dependencies added at run time (`Depend`), on top of the config's.
    extra_deps: BTreeMap<String, BTreeSet<String>>,
    by_entry: HashMap<u64, (String, u32)>,
    /// Instances to remove once stopped (scaled down, or removed by reload).
    retiring: BTreeSet<(String, u32)>,
    /// Specs to switch to once the old instances have stopped (reload).
    pending: BTreeMap<String, ServiceSpec>,
    /// Rolling restarts: instances still to restart, one at a time.
    rolling: BTreeMap<String, Vec<u32>>,
    /// Services a reload removed: their spec stays until the last instance
    /// has stopped.
    removing: BTreeSet<String>,
    /// Instances waiting to be spawned, and pending instance deadlines
    /// (mono ms): indexes kept by `step`, so no event costs a scan of
    /// every instance.
    waiting: BTreeSet<(String, u32)>,
    /// Waiting instances a `Spawn` was already returned for (so each is
    /// asked for once, not once per event until it is spawned).
    announced: BTreeSet<(String, u32)>,
    /// `waiting` less `announced`: what `spawn_ready` looks at, so that
    /// each spawn of a cold start does not walk every instance still
    /// waiting (1 000 services made that quadratic: half of archon's CPU).
    unannounced: BTreeSet<(String, u32)>,
    deadlines: BTreeSet<(u64, String, u32)>,
    shutting_down: bool,
    /// Every instance has been asked to stop (see `advance_shutdown`).
    shutdown_settled: bool,
}

/// What a reload changed, for the reply.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub rescaled: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Services {
    pub fn new(config: Config) -> Self {
        let mut s = Services::default();
        for spec in config.services {
            let n = spec.replicas;
            s.instances
                .insert(spec.name.clone(), (0..n).map(Instance::new).collect());
            s.specs.insert(spec.name.clone(), Box::new(spec));
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn spec(&self, name: &str) -> Option<&ServiceSpec> {
        self.specs.get(name).map(|b| &**b)
    }

    /// A service's own status text (systemd's STATUS=).
    pub fn set_status_text(&mut self, entry: u64, text: &str) {
        if let Some((n, i)) = self.owner(entry) {
            if let Some(inst) = self
                .instances
                .get_mut(&n)
                .and_then(|v| v.iter_mut().find(|x| x.index == i))
            {
                inst.status_text = text.chars().take(256).collect();
            }
        }
    }

    /// `archon.set_status` from a hook: every instance of the service.
    pub fn set_status_by_name(&mut self, name: &str, text: &str) {
        if let Some(v) = self.instances.get_mut(name) {
            for inst in v {
                inst.status_text = text.chars().take(256).collect();
            }
        }
    }

    /// Whether a `Spawn` for this instance is still due (a batch of commands
    /// may name an instance that an earlier command already spawned).
    pub fn spawn_due(&self, name: &str, index: u32) -> bool {
        self.instances
            .get(name)
            .and_then(|v| v.iter().find(|i| i.index == index))
            .is_some_and(Instance::wants_spawn)
    }

    /// Which service instance a supervisor entry belongs to.
    pub fn owner(&self, entry: u64) -> Option<(String, u32)> {
        self.by_entry.get(&entry).cloned()
    }

    fn deps_of(&self, name: &str) -> BTreeSet<String> {
        let mut d: BTreeSet<String> = self
            .specs
            .get(name)
            .map(|s| s.depends_on.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(x) = self.extra_deps.get(name) {
            d.extend(x.iter().cloned());
        }
        d
    }

    /// A dependency is satisfied when every instance of it is ready (a
    /// oneshot: has exited successfully).
    fn satisfied(&self, dep: &str) -> bool {
        let Some(spec) = self.specs.get(dep) else {
            return true;
        };
        let want = if spec.oneshot {
            SvcState::Exited
        } else {
            SvcState::Running
        };
        self.instances.get(dep).is_none_or(|v| {
            v.iter()
                .all(|i| i.state == want || i.state == SvcState::Unhealthy && !spec.oneshot)
        })
    }

    fn deps_ready(&self, name: &str) -> bool {
        self.deps_of(name).iter().all(|d| self.satisfied(d))
    }

    /// Feeds one event to one instance and turns its actions into commands.
    fn step(&mut self, name: &str, index: u32, ev: Event, mono: u64, wall: u64) -> Vec<Cmd> {
        let Some(spec) = self.specs.get(name) else {
            return Vec::new();
        };
        let Some(inst) = self
            .instances
            .get_mut(name)
            .and_then(|v| v.iter_mut().find(|i| i.index == index))
        else {
            return Vec::new();
        };
        let before = inst.state;
        let entry_before = inst.entry;
        let deadline_before = inst.next_deadline();
        let actions = inst.step(ev, spec, mono, wall);
        if self.shutting_down && inst.entry.is_none() {
            // Nothing restarts during a shutdown.
            inst.state = SvcState::Stopped;
            inst.next_attempt = None;
        }
        let (state, pid, entry) = (inst.state, inst.pid, inst.entry);
        let (restarts, delay_ms) = (inst.restarts, inst.delay_ms);
        let deadline = inst.next_deadline();
        let key = (name.to_string(), index);
        if inst.wants_spawn() {
            if self.waiting.insert(key.clone()) && !self.announced.contains(&key) {
                self.unannounced.insert(key.clone());
            }
        } else {
            self.waiting.remove(&key);
            self.announced.remove(&key);
            self.unannounced.remove(&key);
        }
        if deadline_before != deadline {
            if let Some(d) = deadline_before {
                self.deadlines.remove(&(d, key.0.clone(), index));
            }
            if let Some(d) = deadline {
                self.deadlines.insert((d, key.0, index));
            }
        }
        let essential = spec.essential;
        let mut out = Vec::new();
        if entry_before != entry {
            if let Some(e) = entry_before {
                self.by_entry.remove(&e);
            }
        }
        for a in actions {
            match a {
                // Spawning waits for dependencies: see `spawn_ready`.
                Action::Spawn => {}
                Action::Kill {
                    entry,
                    signal,
                    grace_ms,
                } => out.push(Cmd::Kill {
                    entry,
                    signal,
                    grace_ms,
                }),
                Action::FailedForGood(exit) if essential && !self.shutting_down => {
                    out.push(Cmd::Essential {
                        name: name.to_string(),
                        exit,
                    })
                }
                Action::FailedForGood(_) => {}
            }
        }
        if before != state {
            out.push(Cmd::Changed {
                name: name.to_string(),
                index,
                old: before,
                state,
                pid,
                restarts,
                delay_ms,
            });
        }
        out
    }

    /// Spawns every instance that waits for it and whose dependencies are
    /// ready, in dependency order.
    fn spawn_ready(&mut self) -> Vec<Cmd> {
        if self.shutting_down {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut ready: BTreeMap<&str, bool> = BTreeMap::new();
        for key @ (name, index) in &self.unannounced {
            if self.pending.contains_key(name) || self.retiring.contains(key) {
                continue;
            }
            if *ready
                .entry(name.as_str())
                .or_insert_with(|| self.deps_ready(name))
            {
                out.push(Cmd::Spawn {
                    name: name.clone(),
                    index: *index,
                });
            }
        }
        for c in &out {
            if let Cmd::Spawn { name, index } = c {
                let key = (name.clone(), *index);
                self.unannounced.remove(&key);
                self.announced.insert(key);
            }
        }
        out
    }

    /// Everything after a change: retire stopped instances, switch pending
    /// specs, continue rolling restarts, spawn what can be spawned.
    fn settle(&mut self, mono: u64, wall: u64) -> Vec<Cmd> {
        let mut out = Vec::new();
        // Retired instances leave once stopped.
        let done: Vec<(String, u32)> = self
            .retiring
            .iter()
            .filter(|(n, i)| {
                self.instances
                    .get(n)
                    .and_then(|v| v.iter().find(|x| x.index == *i))
                    .is_none_or(|x| !x.is_live())
            })
            .cloned()
            .collect();
        for (n, i) in done {
            self.retiring.remove(&(n.clone(), i));
            self.waiting.remove(&(n.clone(), i));
            self.announced.remove(&(n.clone(), i));
            self.unannounced.remove(&(n.clone(), i));
            self.deadlines.retain(|(_, dn, di)| !(dn == &n && *di == i));
            if let Some(v) = self.instances.get_mut(&n) {
                v.retain(|x| x.index != i);
            }
            if self.instances.get(&n).is_some_and(|v| v.is_empty()) && self.removing.remove(&n) {
                self.instances.remove(&n);
                self.specs.remove(&n);
            }
        }
        // Reloaded specs take over once their old instances are gone.
        let ready: Vec<String> = self
            .pending
            .keys()
            .filter(|n| {
                self.instances
                    .get(*n)
                    .is_none_or(|v| v.iter().all(|i| !i.is_live()))
            })
            .cloned()
            .collect();
        for n in ready {
            if let Some(spec) = self.pending.remove(&n) {
                let start = spec.autostart;
                let count = spec.replicas;
                self.specs.insert(n.clone(), Box::new(spec));
                self.instances
                    .insert(n.clone(), (0..count).map(Instance::new).collect());
                if start {
                    for i in 0..count {
                        out.extend(self.step(&n, i, Event::Start, mono, wall));
                    }
                }
            }
        }
        // Rolling restarts: the next instance once the previous is ready.
        let names: Vec<String> = self.rolling.keys().cloned().collect();
        for n in names {
            let busy = self.instances.get(&n).is_some_and(|v| {
                v.iter()
                    .any(|i| matches!(i.state, SvcState::Stopping | SvcState::Starting))
            });
            if busy {
                continue;
            }
            let next = self.rolling.get_mut(&n).and_then(|q| q.pop());
            match next {
                Some(i) => out.extend(self.step(&n, i, Event::Restart, mono, wall)),
                None => {
                    self.rolling.remove(&n);
                }
            }
        }
        out.extend(self.spawn_ready());
        out
    }

    /// Start-up: every autostart service is started (in dependency order,
    /// as dependencies become ready).
    pub fn boot(&mut self, mono: u64, wall: u64) -> Vec<Cmd> {
        let mut out = Vec::new();
        let starts: Vec<(String, u32)> = self
            .instances
            .iter()
            .filter(|(n, _)| self.specs.get(*n).is_some_and(|s| s.autostart))
            .flat_map(|(n, v)| v.iter().map(move |i| (n.clone(), i.index)))
            .collect();
        for (n, i) in starts {
            out.extend(self.step(&n, i, Event::Start, mono, wall));
        }
        out.extend(self.settle(mono, wall));
        out
    }

    pub fn spawned(
        &mut self,
        name: &str,
        index: u32,
        entry: u64,
        pid: i32,
        mono: u64,
        wall: u64,
    ) -> Vec<Cmd> {
        self.by_entry.insert(entry, (name.to_string(), index));
        let mut out = self.step(name, index, Event::Spawned { entry, pid }, mono, wall);
        out.extend(self.settle(mono, wall));
        out
    }

    pub fn spawn_failed(
        &mut self,
        name: &str,
        index: u32,
        code: i32,
        mono: u64,
        wall: u64,
    ) -> Vec<Cmd> {
        let mut out = self.step(name, index, Event::SpawnFailed { code }, mono, wall);
        out.extend(self.settle(mono, wall));
        out
    }

    /// The readiness signal of an entry's process arrived.
    pub fn ready(&mut self, entry: u64, mono: u64, wall: u64) -> Vec<Cmd> {
        self.step_entry(entry, Event::Ready, mono, wall)
    }

    /// One event to the instance an entry belongs to, then `settle`.
    fn step_entry(&mut self, entry: u64, ev: Event, mono: u64, wall: u64) -> Vec<Cmd> {
        let Some((n, i)) = self.owner(entry) else {
            return Vec::new();
        };
        let mut out = self.step(&n, i, ev, mono, wall);
        out.extend(self.settle(mono, wall));
        out
    }

    /// `MAINPID=`: the instance's main process is now entry `new` (pid
    /// `pid`); the old entry is no longer the service's, and its exit
    /// changes nothing. No state changes.
    pub fn rebind(&mut self, old: u64, new: u64, pid: i32) -> bool {
        let Some((n, i)) = self.by_entry.remove(&old) else {
            return false;
        };
        if let Some(inst) = self
            .instances
            .get_mut(&n)
            .and_then(|v| v.iter_mut().find(|x| x.index == i))
        {
            inst.entry = Some(new);
            inst.pid = Some(pid);
        }
        self.by_entry.insert(new, (n, i));
        true
    }

    /// `WATCHDOG=1` (or `WATCHDOG=trigger`) from an entry's service.
    pub fn keepalive(&mut self, entry: u64, trigger: bool, mono: u64, wall: u64) -> Vec<Cmd> {
        let ev = if trigger {
            Event::WatchdogTrigger
        } else {
            Event::Keepalive
        };
        self.step_entry(entry, ev, mono, wall)
    }

    /// One of the service's `limits` held for an entry's process: a
    /// graceful stop, then a restart counted like a crash's (budget, pool
    /// budget, backoff) or, with `restart` false, failed.
    pub fn limit_exceeded(&mut self, entry: u64, restart: bool, mono: u64, wall: u64) -> Vec<Cmd> {
        self.step_entry(entry, Event::LimitExceeded { restart }, mono, wall)
    }

    /// A startup or liveness probe failed for an entry's process: a
    /// graceful stop, then a restart (backoff, budget, breaker).
    pub fn liveness_failed(&mut self, entry: u64, mono: u64, wall: u64) -> Vec<Cmd> {
        self.step_entry(entry, Event::LivenessFailed, mono, wall)
    }

    /// A liveness probe passed for an entry's process.
    pub fn alive(&mut self, entry: u64, mono: u64, wall: u64) -> Vec<Cmd> {
        self.step_entry(entry, Event::Alive, mono, wall)
    }

    /// A health check's verdict on an entry's process.
    pub fn health(&mut self, entry: u64, healthy: bool, mono: u64, wall: u64) -> Vec<Cmd> {
        let ev = if healthy {
            Event::Healthy
        } else {
            Event::Unhealthy
        };
        self.step_entry(entry, ev, mono, wall)
    }

    /// Restarts by instance and reason (`RESTART_REASONS`) since start.
    pub fn restart_reasons(&self) -> &BTreeMap<(String, u32), [u64; 5]> {
        &self.restart_reasons
    }

    /// The state of the instance an entry belongs to.
    pub fn state_of(&self, entry: u64) -> Option<SvcState> {
        let (n, i) = self.by_entry.get(&entry)?;
        self.instances
            .get(n)?
            .iter()
            .find(|x| x.index == *i)
            .map(|x| x.state)
    }

    /// A process exited; None when it was no service's.
    pub fn exited(&mut self, entry: u64, exit: Exit, mono: u64, wall: u64) -> Option<Vec<Cmd>> {
        let (n, i) = self.by_entry.remove(&entry)?;
        let restarts = |m: &Self| {
            m.instances
                .get(&n)
                .and_then(|v| v.iter().find(|x| x.index == i))
                .map_or(0, |x| x.restarts)
        };
        let before = restarts(self);
        let why = self
            .instances
            .get(&n)
            .and_then(|v| v.iter().find(|x| x.index == i))
            .map(|x| {
                if x.limit_restart_pending() {
                    3
                } else if x.probe_restart_pending() || x.watchdog_fired || x.timed_out {
                    2
                } else if matches!(exit, Exit::Signal(..)) {
                    1
                } else {
                    0
                }
            })
            .unwrap_or(0);
        let mut out = self.step(&n, i, Event::Exited(exit), mono, wall);
        if restarts(self) > before {
            self.restart_reasons.entry((n.clone(), i)).or_default()[why] += 1;
            out.extend(self.pool_restarted(&n, mono, wall));
        }
        out.extend(self.settle(mono, wall));
        Some(out)
    }

    /// One instance of `name` is restarting: counted against the pool's
    /// budget; once it is spent, every instance is stopped and failed.
    fn pool_restarted(&mut self, name: &str, mono: u64, wall: u64) -> Vec<Cmd> {
        let Some(b) = self.specs.get(name).and_then(|s| s.pool_budget.clone()) else {
            return Vec::new();
        };
        let recent = self.pool_recent.entry(name.to_string()).or_default();
        recent.push_back(mono);
        while recent
            .front()
            .is_some_and(|&t| mono.saturating_sub(t) >= b.window_ms)
        {
            recent.pop_front();
        }
        if recent.len() as u32 <= b.restarts {
            return Vec::new();
        }
        recent.clear();
        let mut out = Vec::new();
        for i in self.indexes(name) {
            out.extend(self.step(name, i, Event::PoolFailed, mono, wall));
        }
        out
    }

    /// Time passed: backoff delays and start timeouts that are due.
    pub fn tick(&mut self, mono: u64, wall: u64) -> Vec<Cmd> {
        let due: Vec<(String, u32)> = self
            .deadlines
            .iter()
            .take_while(|(d, _, _)| *d <= mono)
            .map(|(_, n, i)| (n.clone(), *i))
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (n, i) in due {
            out.extend(self.step(&n, i, Event::Tick, mono, wall));
        }
        out.extend(self.settle(mono, wall));
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(d, _, _)| *d)
    }

    fn known(&self, name: &str) -> bool {
        self.specs.contains_key(name) && !self.removing.contains(name)
    }

    /// A service of that name is declared.
    pub fn has(&self, name: &str) -> bool {
        self.instances.contains_key(name)
    }

    /// A service or one of its instances (`web`, `web.1`).
    pub fn has_target(&self, target: &str) -> bool {
        self.target(target).is_ok()
    }

    fn unknown(name: &str) -> String {
        format!("no service {name}")
    }

    /// `web` or `web.1` -> the service and the indexes meant; an unknown
    /// service or instance is an error that names it.
    pub fn target<'t>(&self, target: &'t str) -> Result<(&'t str, Vec<u32>), String> {
        let (name, index) = crate::protocol::split_target(target);
        if !self.known(name) {
            return Err(Self::unknown(name));
        }
        let all = self.indexes(name);
        match index {
            None => Ok((name, all)),
            Some(i) if all.contains(&i) => Ok((name, vec![i])),
            Some(i) => Err(format!(
                "no service {name}.{i}: {name} has {} instance{} (0 to {})",
                all.len(),
                if all.len() == 1 { "" } else { "s" },
                all.len().saturating_sub(1)
            )),
        }
    }

    fn indexes(&self, name: &str) -> Vec<u32> {
        self.instances
            .get(name)
            .map(|v| v.iter().map(|i| i.index).collect())
            .unwrap_or_default()
    }

    /// One event to every instance of a known service (or to the one a
    /// `name.N` target names), then `settle`.
    fn step_all(
        &mut self,
        target: &str,
        ev: Event,
        mono: u64,
        wall: u64,
    ) -> Result<Vec<Cmd>, String> {
        let (name, indexes) = self.target(target)?;
        let mut out = Vec::new();
        for i in indexes {
            out.extend(self.step(name, i, ev.clone(), mono, wall));
        }
        out.extend(self.settle(mono, wall));
        Ok(out)
    }

    /// Starts a service and, first, every dependency it needs that is
    /// stopped or failed (systemd's Requires: starting `a` that depends on
    /// a stopped `b` starts `b`; it used to leave `a` waiting forever). A
    /// oneshot that already ran to success is not run again.
    pub fn start(&mut self, target: &str, mono: u64, wall: u64) -> Result<Vec<Cmd>, String> {
        let (name, _) = self.target(target)?;
        self.pool_recent.remove(name);
        let mut out = Vec::new();
        for dep in self.dependency_closure(name) {
            let down = self.instances.get(&dep).is_some_and(|v| {
                v.iter()
                    .any(|i| matches!(i.state, SvcState::Stopped | SvcState::Failed))
            });
            if down {
                out.extend(self.step_all(&dep, Event::Start, mono, wall)?);
            }
        }
        out.extend(self.step_all(target, Event::Start, mono, wall)?);
        Ok(out)
    }

    /// Every service `name` depends on, directly or not (config and run-time
    /// dependencies), each once, dependencies before their dependents.
    fn dependency_closure(&self, name: &str) -> Vec<String> {
        fn visit(m: &Services, n: &str, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
            let mut deps: Vec<String> = m
                .specs
                .get(n)
                .map(|s| s.depends_on.clone())
                .unwrap_or_default();
            deps.extend(m.extra_deps(n));
            for d in deps {
                if seen.insert(d.clone()) {
                    visit(m, &d, seen, out);
                    out.push(d);
                }
            }
        }
        let mut seen = BTreeSet::from([name.to_string()]);
        let mut out = Vec::new();
        visit(self, name, &mut seen, &mut out);
        out
    }

    pub fn stop(&mut self, target: &str, mono: u64, wall: u64) -> Result<Vec<Cmd>, String> {
        let (name, index) = crate::protocol::split_target(target);
        if index.is_none() {
            self.rolling.remove(name);
        }
        self.step_all(target, Event::Stop, mono, wall)
    }

    /// Restarts every instance; a pool one at a time, each next one once
    /// the previous is ready again.
    pub fn restart(&mut self, target: &str, mono: u64, wall: u64) -> Result<Vec<Cmd>, String> {
        let (name, mut order) = self.target(target)?;
        let name = name.to_string();
        for &i in &order {
            self.restart_reasons.entry((name.clone(), i)).or_default()[4] += 1;
        }
        order.reverse(); // popped from the back: lowest index first
        self.rolling.insert(name, order);
        Ok(self.settle(mono, wall))
    }

    /// Resizes a pool: new instances start, surplus ones (highest index
    /// first) stop and go; the others are not touched.
    pub fn scale(&mut self, name: &str, n: u32, mono: u64, wall: u64) -> Result<Vec<Cmd>, String> {
        if let (svc, Some(_)) = crate::protocol::split_target(name) {
            if self.known(svc) {
                return Err(format!(
                    "Scale takes a service ({svc}) and not one instance ({name})"
                ));
            }
        }
        if !self.known(name) {
            return Err(Self::unknown(name));
        }
        let Some(spec) = self.specs.get_mut(name) else {
            return Err(Self::unknown(name));
        };
        if spec.oneshot && n > 1 {
            return Err(format!("{name} is a oneshot: one instance at most"));
        }
        spec.replicas = n;
        let wanted = self
            .instances
            .get(name)
            .is_some_and(|v| v.iter().any(|i| !matches!(i.state, SvcState::Stopped)))
            || spec.autostart;
        let mut out = Vec::new();
        let have: Vec<u32> = self.indexes(name);
        let keep: Vec<u32> = have
            .iter()
            .copied()
            .filter(|i| !self.retiring.contains(&(name.to_string(), *i)))
            .collect();
        if (keep.len() as u32) < n {
            let v = self.instances.entry(name.to_string()).or_default();
            let mut added = Vec::new();
            // The lowest free indexes.
            let mut idx = 0;
            while keep.len() + added.len() < n as usize {
                if !have.contains(&idx) {
                    v.push(Instance::new(idx));
                    added.push(idx);
                }
                idx += 1;
            }
            v.sort_by_key(|i| i.index);
            if wanted {
                for i in added {
                    out.extend(self.step(name, i, Event::Start, mono, wall));
                }
            }
        } else {
            let mut surplus: Vec<u32> = keep.clone();
            surplus.sort_unstable();
            for i in surplus.into_iter().skip(n as usize) {
                self.retiring.insert((name.to_string(), i));
                out.extend(self.step(name, i, Event::Stop, mono, wall));
            }
        }
        out.extend(self.settle(mono, wall));
        Ok(out)
    }

    /// Adds a run-time dependency; refused if it would make a cycle.
    pub fn depend(&mut self, name: &str, dep: &str) -> Result<(), String> {
        for n in [name, dep] {
            if !self.known(n) {
                return Err(Self::unknown(n));
            }
        }
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in self.specs.keys() {
            deps.insert(n.clone(), self.deps_of(n).into_iter().collect());
        }
        deps.entry(name.to_string())
            .or_default()
            .push(dep.to_string());
        let view: BTreeMap<&str, Vec<&str>> = deps
            .iter()
            .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
            .collect();
        if let Some(c) = find_cycle_in(&view) {
            return Err(format!("dependency cycle: {}", c.join(" -> ")));
        }
        self.extra_deps
            .entry(name.to_string())
            .or_default()
            .insert(dep.to_string());
        Ok(())
    }

    /// Removes a run-time dependency (the config's stay).
    pub fn undepend(&mut self, name: &str, dep: &str) -> Result<(), String> {
        if self
            .extra_deps
            .get_mut(name)
            .is_some_and(|set| set.remove(dep))
        {
            Ok(())
        } else {
            Err(format!("{name} has no run-time dependency on {dep}"))
        }
    }

    /// Reconciles with a new config: new services start, removed ones stop
    /// and go, changed ones are restarted with the new spec, resized pools
    /// are scaled, and unchanged ones are not touched.
    pub fn reload(&mut self, config: Config, mono: u64, wall: u64) -> (Vec<Cmd>, ReloadSummary) {
        let mut sum = ReloadSummary::default();
        let mut out = Vec::new();
        let new: BTreeMap<String, ServiceSpec> = config
            .services
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let old_names: Vec<String> = self
            .specs
            .keys()
            .filter(|n| !self.removing.contains(*n))
            .cloned()
            .collect();
        for n in &old_names {
            if !new.contains_key(n) {
                sum.removed.push(n.clone());
                out.extend(self.stop(n, mono, wall).unwrap_or_default());
                for i in self.indexes(n) {
                    self.retiring.insert((n.clone(), i));
                }
                self.removing.insert(n.clone());
                self.extra_deps.remove(n);
            }
        }
        for (n, spec) in new {
            if self.removing.remove(&n) {
                // Removed by an earlier reload, still stopping: back again.
                for i in self.indexes(&n) {
                    self.retiring.remove(&(n.clone(), i));
                }
                sum.changed.push(n.clone());
                self.pending.insert(n.clone(), spec);
                continue;
            }
            match self.specs.get(&n) {
                None => {
                    sum.added.push(n.clone());
                    self.instances.entry(n.clone()).or_default();
                    self.pending.insert(n.clone(), spec);
                }
                Some(old) if !old.same_process(&spec) => {
                    sum.changed.push(n.clone());
                    out.extend(self.stop(&n, mono, wall).unwrap_or_default());
                    self.pending.insert(n.clone(), spec);
                }
                Some(old) if old.replicas != spec.replicas => {
                    sum.rescaled.push(n.clone());
                    let r = spec.replicas;
                    out.extend(self.scale(&n, r, mono, wall).unwrap_or_default());
                }
                Some(_) => {
                    sum.unchanged.push(n.clone());
                    // Position in the file may have moved.
                    self.specs.insert(n.clone(), Box::new(spec));
                }
            }
        }
        out.extend(self.settle(mono, wall));
        (out, sum)
    }

    /// A shutdown: nothing restarts; services are stopped in reverse
    /// dependency order (a service once nothing live depends on it).
    pub fn shutdown(&mut self, mono: u64, wall: u64) -> Vec<Cmd> {
        self.shutting_down = true;
        self.rolling.clear();
        self.pending.clear();
        self.advance_shutdown(mono, wall)
    }

    /// Called after every exit during a shutdown.
    pub fn advance_shutdown(&mut self, mono: u64, wall: u64) -> Vec<Cmd> {
        if !self.shutting_down || self.shutdown_settled {
            return Vec::new();
        }
        // Services some live service depends on wait for it.
        let mut held: BTreeSet<String> = BTreeSet::new();
        for (n, v) in &self.instances {
            if v.iter().any(Instance::is_live) {
                held.extend(self.deps_of(n));
            }
        }
        let todo: Vec<(String, u32)> = self
            .instances
            .iter()
            .filter(|(n, _)| !held.contains(*n))
            .flat_map(|(n, v)| {
                v.iter()
                    .filter(|i| {
                        (i.is_live() && i.state != SvcState::Stopping)
                            || matches!(i.state, SvcState::Starting | SvcState::Backoff)
                    })
                    .map(move |i| (n.clone(), i.index))
            })
            .collect();
        // Nothing held back: every instance has been told, and later exits
        // cannot change that.
        self.shutdown_settled = held.is_empty();
        let mut out = Vec::new();
        for (n, i) in todo {
            out.extend(self.step(&n, i, Event::Stop, mono, wall));
        }
        out
    }

    /// Live service processes (for the shutdown's end).
    /// How many instances exist, in any state.
    pub fn instance_count(&self) -> usize {
        self.instances.values().map(Vec::len).sum()
    }

    pub fn live(&self) -> usize {
        self.instances
            .values()
            .flatten()
            .filter(|i| i.is_live())
            .count()
    }

    /// (name, instance) snapshots, in name order, for `Status`.
    /// Every instance, or those `only` names (`web` or `web.1`).
    pub fn instances(&self, only: Option<&str>) -> Result<Vec<(&str, &Instance)>, String> {
        if let Some(t) = only {
            let (n, indexes) = self.target(t)?;
            return match self.instances.get_key_value(n) {
                Some((k, v)) => Ok(v
                    .iter()
                    .filter(|i| indexes.contains(&i.index))
                    .map(|i| (k.as_str(), i))
                    .collect()),
                None => Err(Self::unknown(n)),
            };
        }
        Ok(self
            .instances
            .iter()
            .flat_map(|(n, v)| v.iter().map(move |i| (n.as_str(), i)))
            .collect())
    }

    /// Up to `max` instances from (name, position) on, of `only` (`web`
    /// or `web.1`) or of every service, in name order; returns where to go
    /// on from, or None when done (a cursor for a streamed `Status`).
    #[allow(clippy::type_complexity)]
    pub fn instances_from(
        &self,
        only: Option<&str>,
        from: Option<(&str, usize)>,
        max: usize,
        mut f: impl FnMut(&str, &Instance),
    ) -> Result<Option<(String, usize)>, String> {
        use std::ops::Bound;
        let mut index = None;
        let only = match only {
            Some(t) => {
                let (n, idx) = self.target(t)?;
                index = crate::protocol::split_target(t).1.and(idx.first().copied());
                Some(n)
            }
            None => None,
        };
        let (start, mut pos) = match from {
            Some((n, p)) => (Bound::Included(n), p),
            None => (only.map_or(Bound::Unbounded, Bound::Included), 0),
        };
        let mut left = max;
        for (name, list) in self.instances.range::<str, _>((start, Bound::Unbounded)) {
            if only.is_some_and(|o| o != name) {
                return Ok(None);
            }
            for (i, inst) in list.iter().enumerate().skip(pos) {
                if index.is_some_and(|x| x != inst.index) {
                    continue;
                }
                if left == 0 {
                    return Ok(Some((name.clone(), i)));
                }
                f(name, inst);
                left -= 1;
            }
            pos = 0;
        }
        Ok(None)
    }

    /// Specs from `from` on, in name order.
    pub fn specs_from<'a>(&'a self, from: &str) -> impl Iterator<Item = &'a ServiceSpec> + 'a {
        use std::ops::Bound;
        self.specs
            .range::<str, _>((Bound::Included(from), Bound::Unbounded))
            .map(|(_, b)| &**b)
    }

    pub fn specs(&self) -> impl Iterator<Item = &ServiceSpec> {
        self.specs.values().map(|b| &**b)
    }

    pub fn extra_deps(&self, name: &str) -> Vec<String> {
        self.extra_deps
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec::new(name, "t.lua", 1);
        s.cmd = vec![name.into()];
        s.depends_on = deps.iter().map(|d| d.to_string()).collect();
        s
    }

    fn spawns(cmds: &[Cmd]) -> Vec<(String, u32)> {
        cmds.iter()
            .filter_map(|c| match c {
                Cmd::Spawn { name, index } => Some((name.clone(), *index)),
                _ => None,
            })
            .collect()
    }

    fn kills(cmds: &[Cmd]) -> Vec<u64> {
        cmds.iter()
            .filter_map(|c| match c {
                Cmd::Kill { entry, .. } => Some(*entry),
                _ => None,
            })
            .collect()
    }

    /// Drives spawns: every Spawn gets the next entry id (pid = entry).
    struct World {
        s: Services,
        next: u64,
        entries: BTreeMap<(String, u32), u64>,
    }

    impl World {
        fn new(services: Vec<ServiceSpec>) -> World {
            World {
                s: Services::new(Config { services }),
                next: 1,
                entries: BTreeMap::new(),
            }
        }
        /// Executes the commands like the event loop: returns them, with
        /// only the Spawns that were due, plus what they led to.
        fn run(&mut self, cmds: Vec<Cmd>) -> Vec<Cmd> {
            let mut all = Vec::new();
            let mut queue = cmds;
            while !queue.is_empty() {
                let mut more = Vec::new();
                for c in queue {
                    if let Cmd::Spawn { name, index } = &c {
                        if !self.s.spawn_due(name, *index) {
                            continue;
                        }
                    }
                    all.push(c.clone());
                    if let Cmd::Spawn { name, index } = c {
                        let e = self.next;
                        self.next += 1;
                        self.entries.insert((name.clone(), index), e);
                        more.extend(self.s.spawned(&name, index, e, e as i32, 0, 0));
                    }
                }
                queue = more;
            }
            all
        }
        fn entry(&self, n: &str, i: u32) -> u64 {
            self.entries[&(n.to_string(), i)]
        }
        fn state(&self, n: &str, i: u32) -> SvcState {
            self.s.instances(Some(n)).unwrap()[i as usize].1.state
        }
    }

    #[test]
    fn boot_waits_for_dependencies_readiness() {
        let mut db = svc("db", &[]);
        db.ready = crate::services::spec::Readiness::Fd(3);
        let mut w = World::new(vec![svc("web", &["db"]), db]);
        let c = w.s.boot(0, 0);
        let all = w.run(c);
        assert_eq!(
            spawns(&all),
            [("db".into(), 0)],
            "web waits for db to be ready"
        );
        let e = w.entry("db", 0);
        let c = w.s.ready(e, 1, 1);
        assert_eq!(spawns(&w.run(c)), [("web".into(), 0)]);
    }

    #[test]
    fn oneshot_dependency_must_succeed() {
        let mut init = svc("migrate", &[]);
        init.oneshot = true;
        let mut w = World::new(vec![init, svc("app", &["migrate"])]);
        let c = w.s.boot(0, 0);
        let all = w.run(c);
        assert_eq!(spawns(&all), [("migrate".into(), 0)]);
        let c =
            w.s.exited(w.entry("migrate", 0), Exit::Code(0), 5, 5)
                .unwrap();
        assert_eq!(spawns(&w.run(c)), [("app".into(), 0)]);
        assert_eq!(w.state("migrate", 0), SvcState::Exited);
    }

    #[test]
    fn scale_up_and_down_leaves_the_others_alone() {
        let mut pool = svc("worker", &[]);
        pool.replicas = 2;
        let mut w = World::new(vec![pool]);
        let c = w.s.boot(0, 0);
        w.run(c);
        let (e0, e1) = (w.entry("worker", 0), w.entry("worker", 1));
        let c = w.s.scale("worker", 4, 1, 1).unwrap();
        let all = w.run(c);
        assert_eq!(spawns(&all), [("worker".into(), 2), ("worker".into(), 3)]);
        let c = w.s.scale("worker", 1, 2, 2).unwrap();
        let mut k = kills(&c);
        k.sort();
        assert_eq!(k, [e1, w.entry("worker", 2), w.entry("worker", 3)]);
        assert!(!k.contains(&e0));
        for e in k {
            w.s.exited(e, Exit::Signal(15, "TERM".into()), 3, 3);
        }
        assert_eq!(w.s.instances(Some("worker")).unwrap().len(), 1);
    }

    #[test]
    fn reload_keeps_unchanged_restarts_changed_adds_and_removes() {
        let mut w = World::new(vec![svc("a", &[]), svc("b", &[]), svc("c", &[])]);
        let c = w.s.boot(0, 0);
        w.run(c);
        let ea = w.entry("a", 0);
        let mut b2 = svc("b", &[]);
        b2.cmd.push("--new".into());
        let (c, sum) = w.s.reload(
            Config {
                services: vec![svc("a", &[]), b2, svc("d", &[])],
            },
            1,
            1,
        );
        assert_eq!(sum.unchanged, ["a"]);
        assert_eq!(sum.changed, ["b"]);
        assert_eq!(sum.removed, ["c"]);
        assert_eq!(sum.added, ["d"]);
        let all = w.run(c);
        assert_eq!(spawns(&all), [("d".into(), 0)]);
        let k = kills(&all);
        assert!(k.contains(&w.entry("b", 0)) && k.contains(&w.entry("c", 0)));
        assert!(!k.contains(&ea), "a is untouched");
        let c = w.s.exited(w.entry("b", 0), Exit::Code(0), 2, 2).unwrap();
        let all = w.run(c);
        assert_eq!(spawns(&all), [("b".into(), 0)]);
        assert_eq!(w.s.spec("b").unwrap().cmd, ["b", "--new"]);
        w.s.exited(w.entry("c", 0), Exit::Code(0), 2, 2);
        assert!(w.s.instances(Some("c")).is_err(), "c is gone");
    }

    #[test]
    fn rolling_restart_one_at_a_time() {
        let mut pool = svc("w", &[]);
        pool.replicas = 2;
        let mut w = World::new(vec![pool]);
        let c = w.s.boot(0, 0);
        w.run(c);
        let c = w.s.restart("w", 1, 1).unwrap();
        assert_eq!(kills(&c), [w.entry("w", 0)], "instance 0 first, alone");
        let c = w.s.exited(w.entry("w", 0), Exit::Code(0), 2, 2).unwrap();
        let all = w.run(c);
        // 0 came back (ready on exec): now 1.
        assert_eq!(spawns(&all), [("w".into(), 0)]);
        assert_eq!(kills(&all), [w.entry("w", 1)]);
    }

    #[test]
    fn shutdown_stops_dependents_first_and_nothing_restarts() {
        let mut w = World::new(vec![svc("db", &[]), svc("web", &["db"])]);
        let c = w.s.boot(0, 0);
        w.run(c);
        let c = w.s.shutdown(1, 1);
        assert_eq!(kills(&c), [w.entry("web", 0)]);
        let c = w.s.exited(w.entry("web", 0), Exit::Code(0), 2, 2).unwrap();
        assert!(spawns(&c).is_empty());
        let c = w.s.advance_shutdown(2, 2);
        assert_eq!(kills(&c), [w.entry("db", 0)]);
        let c = w.s.exited(w.entry("db", 0), Exit::Code(1), 3, 3).unwrap();
        assert!(spawns(&c).is_empty());
        assert_eq!(w.s.live(), 0);
    }

    #[test]
    fn essential_failure_and_depend_cycles() {
        let mut e = svc("core", &[]);
        e.essential = true;
        e.restart = crate::services::spec::Restart::Never;
        let mut w = World::new(vec![e, svc("x", &[])]);
        let c = w.s.boot(0, 0);
        w.run(c);
        let c = w.s.exited(w.entry("core", 0), Exit::Code(3), 1, 1).unwrap();
        assert!(c.contains(&Cmd::Essential {
            name: "core".into(),
            exit: Exit::Code(3)
        }));
        assert!(w.s.depend("x", "core").is_ok());
        assert!(w.s.depend("core", "x").unwrap_err().contains("cycle"));
        assert!(w.s.undepend("x", "core").is_ok());
        assert!(w.s.depend("core", "x").is_ok());
    }
}
