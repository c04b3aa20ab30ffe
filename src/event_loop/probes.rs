//! Probes in the loop: each instance's startup, readiness and liveness
//! probes, run when due (at most `PROBES_PER_PASS` started a pass, the
//! periodic ones with a +-10 % jitter so instances started together do
//! not probe together), without blocking: an exec probe is a tracked
//! process killed at its timeout, a TCP or HTTP probe a non-blocking
//! connection in the poll set with a deadline. Results go through the
//! thresholds (`services::probe::Tally`) to the state machine: startup
//! gates the others, readiness gates `running`, a failing startup or
//! liveness probe restarts the instance.

use super::*;
use crate::services::probe::{http_request, http_verdict, PortRef, Probe, ProbeKind, Tally, Which};
use crate::services::spec::ServiceSpec;
use std::collections::BTreeSet;

mod net;

/// Probes started in one pass at most.
const PROBES_PER_PASS: usize = 64;

/// One instance's process under probes.
pub(super) struct Probing {
    service: String,
    index: u32,
    /// Its startup probe passed (or it has none).
    started: bool,
    /// Its own readiness (`ready = ...`) came (or it is `exec`).
    mech_ready: bool,
    /// `Ready` went to the state machine.
    ready_sent: bool,
    tally: [Tally; 3],
    /// Probes run, for the jitter.
    seq: u64,
    /// Its ports by name (fixed for the process's life), and each HTTP
    /// probe's request, made once.
    ports: Vec<(String, u16)>,
    requests: [Option<std::rc::Rc<[u8]>>; 3],
    /// Each kind's probe queued, (latest, earliest), and in flight (its
    /// id), at most one of each: the process's end finds them without a
    /// walk of every instance's. Stale values are harmless (ids are not
    /// reused; a key no longer queued is not there to remove).
    queued: [Option<(u64, u64)>; 3],
    running: [Option<u64>; 3],
    /// Its probes as spawned (a changed probe restarts the instance on a
    /// reload, so these stay true for the process's life): shared, so a
    /// probe costs no copy of its settings.
    probes: [Option<std::rc::Rc<Probe>>; 3],
}

enum Running {
    /// A command: the tracked process.
    Exec(u64),
    /// A connection; with `Http`, the request and the reply so far.
    Net {
        stream: mio::net::TcpStream,
        http: Option<Http>,
        connected: bool,
    },
}

struct Http {
    request: std::rc::Rc<[u8]>,
    sent: usize,
    reply: Vec<u8>,
    status: (u16, u16),
    body: Option<String>,
}

struct InFlight {
    entry: u64,
    which: Which,
    deadline: u64,
    run: Running,
}

#[derive(Default)]
pub(super) struct Probes {
    by_entry: HashMap<u64, Probing>,
    /// Probes due: (mono ms at the latest, entry, which, mono ms at the
    /// earliest). A periodic probe may start up to its slack early, so
    /// that probes due within a few ms share one wake-up.
    due: BTreeSet<(u64, u64, Which, u64)>,
    inflight: HashMap<u64, InFlight>,
    /// (deadline, probe id) of what is in flight.
    deadlines: BTreeSet<(u64, u64)>,
    /// Exec probes' tracked process -> probe id.
    exec_of: HashMap<u64, u64>,
    next_id: u64,
    /// Results so far: (passed, failed), for metrics.
    pub(super) results: (u64, u64),
    /// Each instance's circuit breaker state last announced.
    breakers: HashMap<(String, u32), &'static str>,
}

impl Probes {
    /// Probe `id`'s connection, its HTTP exchange and whether it is
    /// connected, when it is a TCP or HTTP probe in flight.
    fn net(&mut self, id: u64) -> Option<(&mut mio::net::TcpStream, &mut Option<Http>, &mut bool)> {
        match &mut self.inflight.get_mut(&id)?.run {
            Running::Net {
                stream,
                http,
                connected,
            } => Some((stream, http, connected)),
            Running::Exec(_) => None,
        }
    }

    /// Queues instance `entry`'s probe `which`, due by `latest` and not
    /// before `earliest`, remembered by the instance (`probes_gone`).
    fn queue(&mut self, latest: u64, entry: u64, which: Which, earliest: u64) {
        self.due.insert((latest, entry, which, earliest));
        if let Some(p) = self.by_entry.get_mut(&entry) {
            p.queued[idx(which)] = Some((latest, earliest));
        }
    }

    pub(super) fn next_due(&self) -> Option<u64> {
        [
            self.due.first().map(|d| d.0),
            self.deadlines.first().map(|d| d.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn idx(w: Which) -> usize {
    match w {
        Which::Startup => 0,
        Which::Readiness => 1,
        Which::Liveness => 2,
    }
}

/// The number a probe's port names, among an instance's ports.
fn resolve(ports: &[(String, u16)], r: &PortRef) -> Option<u16> {
    match r {
        PortRef::Number(n) => Some(*n),
        PortRef::Named(want) => ports.iter().find(|(n, _)| n == want).map(|p| p.1),
    }
}

/// How early a periodic probe may start to share a wake-up with others:
/// a tenth of its interval, at most 10 ms (1 000 probes a second become
/// about 100 wake-ups of ten, warm caches, instead of 1 000 of one).
const SLACK_MAX_MS: u64 = 10;

fn slack(interval: u64) -> u64 {
    (interval / 10).min(SLACK_MAX_MS)
}

/// When the next probe is due, at the latest, by a hash of the entry and
/// the probe's count: within `interval - 10 % + slack` and `interval +
/// 10 %`; with the slack it starts within +-10 % of its interval.
fn jittered(interval: u64, entry: u64, seq: u64) -> u64 {
    let lo = interval - interval / 10 + slack(interval);
    let hi = interval + interval / 10;
    let h = (entry ^ seq.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    lo + h % (hi - lo + 1)
}

impl EventLoop {
    /// A service process was spawned: its probes start (the first startup
    /// probe, else readiness and liveness, after their initial delay).
    pub(super) fn probes_spawned(&mut self, entry: u64, spec: &ServiceSpec, index: u32) {
        if spec.startup.is_none() && spec.readiness.is_none() && spec.liveness.is_none() {
            return;
        }
        let now = self.now().mono;
        let ports: Vec<(String, u16)> = self
            .endpoints
            .ports_of(&spec.name, index)
            .iter()
            .map(|(n, _, p)| (n.to_string(), *p))
            .collect();
        let mut requests: [Option<std::rc::Rc<[u8]>>; 3] = Default::default();
        for w in Which::ALL {
            if let Some(ProbeKind::Http {
                path, port, host, ..
            }) = spec.probe(w).map(|p| &p.kind)
            {
                requests[idx(w)] =
                    resolve(&ports, port).map(|n| http_request(path, host, n).into());
            }
        }
        self.probes.by_entry.insert(
            entry,
            Probing {
                service: spec.name.clone(),
                index,
                started: spec.startup.is_none(),
                mech_ready: spec.ready == crate::services::spec::Readiness::Exec,
                ready_sent: false,
                tally: Default::default(),
                seq: 0,
                ports,
                requests,
                queued: [None; 3],
                running: [None; 3],
                probes: Which::ALL.map(|w| spec.probe(w).cloned().map(std::rc::Rc::new)),
            },
        );
        match &spec.startup {
            Some(p) => {
                let first = now + p.initial_delay_ms;
                self.probes.queue(first, entry, Which::Startup, first);
            }
            None => self.schedule_after_startup(entry, spec, now),
        }
    }

    fn schedule_after_startup(&mut self, entry: u64, spec: &ServiceSpec, now: u64) {
        if let Some(p) = &spec.readiness {
            let first = now + p.initial_delay_ms;
            self.probes.queue(first, entry, Which::Readiness, first);
        }
        if let Some(p) = &spec.liveness {
            // Spread over the first interval: liveness gates nothing.
            let delay = now + p.initial_delay_ms;
            let first = delay + jittered(p.interval_ms, entry, 0) / 2;
            let early = first.saturating_sub(slack(p.interval_ms)).max(delay);
            self.probes.queue(first, entry, Which::Liveness, early);
        }
    }

    /// The instance's own readiness came (notify, fd, command): ready now,
    /// or, when probes decide, once they pass.
    pub(super) fn own_readiness(&mut self, entry: u64) {
        if !self.probes_hold_ready(entry) {
            let now = self.now();
            let cmds = self.services.ready(entry, now.mono, now.wall);
            self.apply_svc(cmds);
        }
    }

    /// True when probes decide the readiness (it is remembered for them).
    fn probes_hold_ready(&mut self, entry: u64) -> bool {
        let gated = self
            .services
            .owner(entry)
            .and_then(|(n, _)| self.services.spec(&n))
            .is_some_and(|s| s.probes_gate_ready());
        let Some(p) = self.probes.by_entry.get_mut(&entry).filter(|_| gated) else {
            return false;
        };
        p.mech_ready = true;
        self.probe_gates(entry);
        true
    }

    /// The process is gone: its probes end, what is in flight is dropped
    /// (a probe command is killed).
    pub(super) fn probes_gone(&mut self, entry: u64) {
        let Some(p) = self.probes.by_entry.remove(&entry) else {
            return;
        };
        for w in Which::ALL {
            if let Some((latest, earliest)) = p.queued[idx(w)] {
                self.probes.due.remove(&(latest, entry, w, earliest));
            }
        }
        for id in p.running.into_iter().flatten() {
            self.probe_drop(id);
        }
    }

    /// Ends probe `id` without a result: its connection closed, its
    /// command killed.
    fn probe_drop(&mut self, id: u64) -> Option<InFlight> {
        let mut f = self.probes.inflight.remove(&id)?;
        self.probes.deadlines.remove(&(f.deadline, id));
        match &mut f.run {
            Running::Exec(proc_id) => {
                self.probes.exec_of.remove(proc_id);
                let now = self.now();
                if let Ok(fx) = self.sup.stop_with(*proc_id, sig::KILL, 0, None, now) {
                    self.apply(fx);
                }
            }
            // Closing the socket (with `f`) takes it out of the poll set.
            Running::Net { .. } => {}
        }
        Some(f)
    }

    /// Starts the probes that are due, and fails those past their timeout.
    pub(super) fn run_due_probes(&mut self) {
        if self.probes.deadlines.is_empty() && self.probes.due.is_empty() {
            return;
        }
        let now = self.now().mono;
        while let Some(&(deadline, id)) = self.probes.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(f) = self.probe_drop(id) {
                self.probe_result(f.entry, f.which, false);
            }
        }
        if self.probes.due.first().is_none_or(|d| d.3 > now) {
            return;
        }
        // What may start now: due by now, or within its slack.
        let start: Vec<_> = self
            .probes
            .due
            .iter()
            .take_while(|d| d.0 <= now + SLACK_MAX_MS)
            .filter(|d| d.3 <= now)
            .take(PROBES_PER_PASS)
            .copied()
            .collect();
        for d in start {
            self.probes.due.remove(&d);
            self.probe_start(d.1, d.2, now);
        }
    }

    /// The probe `which` of the instance process `entry`, as spawned.
    fn entry_probe(&self, entry: u64, which: Which) -> Option<std::rc::Rc<Probe>> {
        self.probes.by_entry.get(&entry)?.probes[idx(which)].clone()
    }

    fn probe_start(&mut self, entry: u64, which: Which, now: u64) {
        let Some(probe) = self.entry_probe(entry, which) else {
            return;
        };
        let Some(p) = self.probes.by_entry.get(&entry) else {
            return;
        };
        if self.services.state_of(entry) == Some(crate::services::SvcState::Stopping) {
            return;
        }
        let port_of = |r: &PortRef| resolve(&p.ports, r);
        let id = self.probes.next_id;
        self.probes.next_id += 1;
        let run = match &probe.kind {
            ProbeKind::Exec(argv) => {
                let (name, index) = (p.service.clone(), p.index);
                let spawned = match self.services.spec(&name).cloned() {
                    Some(spec) => self.spawn_check(&spec, index, argv),
                    None => Err(()),
                };
                match spawned {
                    Ok(proc_id) => {
                        // Its own process group: the kill at the timeout
                        // reaches what it started.
                        self.sup.set_group(proc_id, true);
                        self.probes.exec_of.insert(proc_id, id);
                        Some(Running::Exec(proc_id))
                    }
                    Err(()) => None,
                }
            }
            ProbeKind::Tcp { port, host } => {
                let port = port_of(port);
                port.and_then(|n| Self::probe_connect(host, n))
                    .map(|stream| Running::Net {
                        stream,
                        http: None,
                        connected: false,
                    })
            }
            ProbeKind::Http {
                port,
                host,
                status,
                body,
                ..
            } => {
                let request = p.requests[idx(which)].clone();
                let port = port_of(port);
                match (request, port) {
                    (Some(request), Some(n)) => {
                        Self::probe_connect(host, n).map(|stream| Running::Net {
                            stream,
                            http: Some(Http {
                                request,
                                sent: 0,
                                reply: Vec::new(),
                                status: *status,
                                body: body.clone(),
                            }),
                            connected: false,
                        })
                    }
                    _ => None,
                }
            }
        };
        let Some(run) = run else {
            log::debug!("id={entry}: its {} probe could not start", which.as_str());
            self.probe_result(entry, which, false);
            return;
        };
        let net = matches!(run, Running::Net { .. });
        let deadline = now + probe.timeout_ms;
        if let Some(p) = self.probes.by_entry.get_mut(&entry) {
            p.running[idx(which)] = Some(id);
        }
        self.probes.deadlines.insert((deadline, id));
        self.probes.inflight.insert(
            id,
            InFlight {
                entry,
                which,
                deadline,
                run,
            },
        );
        if net {
            self.probe_first_step(id);
        }
    }

    /// A tracked process ended: if it was a probe command, its result.
    pub(super) fn probe_exec_exited(&mut self, proc_id: u64, ok: bool) {
        let Some(id) = self.probes.exec_of.remove(&proc_id) else {
            return;
        };
        if let Some(f) = self.probes.inflight.remove(&id) {
            self.probes.deadlines.remove(&(f.deadline, id));
            self.probe_result(f.entry, f.which, ok);
        }
    }

    fn probe_done(&mut self, id: u64, ok: bool) {
        if let Some(f) = self.probe_drop(id) {
            self.probe_result(f.entry, f.which, ok);
        }
    }

    /// One result: the tally, the next probe, and what a changed verdict
    /// does.
    fn probe_result(&mut self, entry: u64, which: Which, ok: bool) {
        let now = self.now();
        let Some(probe) = self.entry_probe(entry, which) else {
            return;
        };
        let probe = &probe;
        let Some(p) = self.probes.by_entry.get_mut(&entry) else {
            return;
        };
        let verdict = p.tally[idx(which)].record(ok, probe);
        if ok {
            self.probes.results.0 += 1;
        } else {
            self.probes.results.1 += 1;
        }
        p.seq += 1;
        let interval = if ok {
            probe.interval_ms
        } else {
            probe.failing_interval_ms
        };
        let next = now.mono + jittered(interval, entry, p.seq);
        let early = next - slack(interval);
        let (name, index) = (p.service.clone(), p.index);
        if verdict.is_some() {
            log::info!(
                "service {name}.{index}: {} probe {}",
                which.as_str(),
                if ok { "passes" } else { "fails" }
            );
        }
        // Startup stops once passed; the others go on.
        if !(which == Which::Startup && verdict == Some(true)) {
            self.probes.queue(next, entry, which, early);
        }
        match (which, verdict) {
            (Which::Startup, Some(true)) => {
                if let Some(p) = self.probes.by_entry.get_mut(&entry) {
                    p.started = true;
                }
                if let Some(spec) = self.services.spec(&name).cloned() {
                    self.schedule_after_startup(entry, &spec, now.mono);
                }
                self.probe_gates(entry);
            }
            (Which::Startup | Which::Liveness, Some(false)) => {
                log::warn!(
                    "service {name}.{index}: {} probe failed {} times in a row; restarting it",
                    which.as_str(),
                    probe.failure_threshold
                );
                self.probes_gone(entry);
                let cmds = self.services.liveness_failed(entry, now.mono, now.wall);
                self.apply_svc(cmds);
            }
            (Which::Liveness, Some(true)) => {
                let cmds = self.services.alive(entry, now.mono, now.wall);
                self.apply_svc(cmds);
                // A pass closes a half-open breaker without a state change.
                self.breaker_check(&name, index);
            }
            (Which::Readiness, Some(true)) => self.probe_gates(entry),
            (Which::Readiness, Some(false)) => {
                if self
                    .probes
                    .by_entry
                    .get(&entry)
                    .is_some_and(|p| p.ready_sent)
                {
                    let cmds = self.services.health(entry, false, now.mono, now.wall);
                    self.apply_svc(cmds);
                }
            }
            (_, None) => {}
        }
    }

    /// Ready once its startup probe passed, its own readiness came and
    /// its readiness probe passes; back to running after being unhealthy.
    fn probe_gates(&mut self, entry: u64) {
        let now = self.now();
        let Some(p) = self.probes.by_entry.get_mut(&entry) else {
            return;
        };
        let has_readiness = self
            .services
            .spec(&p.service)
            .is_some_and(|s| s.readiness.is_some());
        let passing = !has_readiness || p.tally[idx(Which::Readiness)].verdict == Some(true);
        if !(p.started && p.mech_ready && passing) {
            return;
        }
        let cmds = if std::mem::replace(&mut p.ready_sent, true) {
            self.services.health(entry, true, now.mono, now.wall)
        } else {
            self.services.ready(entry, now.mono, now.wall)
        };
        self.apply_svc(cmds);
    }
}

impl EventLoop {
    /// After a state change of an instance: when its circuit breaker's
    /// state changed, a `BreakerEvent` row for subscribers and a
    /// `breaker` hook event (its first `closed` is not announced).
    pub(super) fn breaker_check(&mut self, name: &str, index: u32) {
        let state = self.services.instances(Some(name)).ok().and_then(|v| {
            let (_, i) = v.into_iter().find(|(_, i)| i.index == index)?;
            i.breaker(self.services.spec(name)?)
        });
        let key = (name.to_string(), index);
        let prev = match state {
            Some(s) => self.probes.breakers.insert(key, s),
            None => self.probes.breakers.remove(&key),
        };
        let Some(s) = state.filter(|s| prev != Some(s) && !(prev.is_none() && *s == "closed"))
        else {
            return;
        };
        let now = self.now();
        log::warn!("service {name}.{index}: circuit breaker {s}");
        if !self.subscribers.is_empty() {
            let row = [
                "BreakerEvent".to_string(),
                super::stream::fmt_millis(now.wall),
                name.to_string(),
                index.to_string(),
                s.to_string(),
            ];
            self.announce(&crate::protocol::encode_record(&row));
        }
        self.fire(crate::protocol::worker::HookEvent {
            kind: "breaker",
            service: name.to_string(),
            instance: index,
            state: s.to_string(),
            time: super::hook::wall_secs(now.wall),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::jittered;

    #[test]
    fn the_jitter_stays_within_a_tenth() {
        for e in 0..200 {
            for s in 0..5 {
                let j = jittered(1000, e, s);
                assert!((910..=1100).contains(&j), "{j}");
                assert!(j - super::slack(1000) >= 900, "{j}");
            }
        }
        assert_eq!(jittered(3, 1, 1), 3);
    }
}
