//! The limiter: whether a monitored instance's latest sample breaks its
//! service's `limits` for long enough, the `LimitEvent` and the
//! `limit_exceeded` hook that come first, and the stop (through the
//! instance's state machine) once the hooks and the commands they started
//! have had their time. The samples come from `monitor.rs`.

use super::stream::fmt_millis;
use super::*;

/// A limit's stop, waiting for the hooks of its event and the commands
/// they started.
pub(super) struct PendingStop {
    /// Looked at again then (mono ms).
    pub(super) due: u64,
    /// No later than this, whatever is still running.
    pub(super) hard: u64,
    /// When the limit fired (wall ms): hook commands started since are
    /// waited for.
    pub(super) fired_wall: u64,
    pub(super) restart: bool,
    /// The hooks have replied.
    pub(super) hooked: bool,
}

impl EventLoop {
    /// Whether the latest sample of service instance `name.index` (entry
    /// `id`) breaks one of its limits, for long enough.
    pub(super) fn check_limits(
        &mut self,
        id: u64,
        name: &str,
        index: u32,
        now: Clock,
        first: bool,
    ) {
        use crate::services::spec::{LimitAction, Measure};
        let Some(l) = self.services.spec(name).and_then(|s| s.limits.clone()) else {
            return;
        };
        let Some(w) = self.monitoring.watches.get_mut(&id) else {
            return;
        };
        let Some(s) = w.ring.current().cloned() else {
            return;
        };
        let mut fire: Option<(usize, &'static str, f64, f64)> = None;
        let held = |over: &mut Option<u64>, is_over: bool, fired: &mut bool| -> bool {
            if !is_over {
                *over = None;
                // An event-only limit may fire again after a dip.
                if l.action == LimitAction::Event {
                    *fired = false;
                }
                return false;
            }
            let since = *over.get_or_insert(now.mono);
            !*fired && now.mono.saturating_sub(since) >= l.sustain_ms
        };
        if let Some(max) = l.memory {
            let value = match l.measure {
                Measure::Pss => s.raw.pss_bytes.unwrap_or(s.raw.rss_bytes),
                // With no sustain, a spike between samples counts: the
                // kernel's high-water mark.
                Measure::Rss if l.sustain_ms == 0 => {
                    s.raw.rss_bytes.max(s.raw.peak_rss_bytes.unwrap_or(0))
                }
                Measure::Rss => s.raw.rss_bytes,
            };
            if held(&mut w.over_memory, value > max, &mut w.fired[0]) {
                fire = Some((0, "memory", value as f64, max as f64));
            }
        }
        if let (Some(max), None) = (l.cpu, fire) {
            // The first sample's percent is since the start: not a window.
            if !first && held(&mut w.over_cpu, s.cpu_pct > max, &mut w.fired[1]) {
                fire = Some((1, "cpu", s.cpu_pct, max));
            }
        }
        if let (Some(max), None) = (l.runtime_ms, fire) {
            if s.uptime_ms >= max && !w.fired[2] {
                fire = Some((
                    2,
                    "runtime",
                    s.uptime_ms as f64 / 1000.0,
                    max as f64 / 1000.0,
                ));
            }
        }
        let Some((slot, limit, value, threshold)) = fire else {
            return;
        };
        w.fired[slot] = true;
        let pid = self.sup.get(id).map_or(0, |e| e.pid);
        log::warn!(
            "service {name}.{index} pid={pid} exceeded its {limit} limit: {value} over {threshold}; action {}",
            l.action.as_str()
        );
        *self
            .monitoring
            .limit_events
            .entry((name.to_string(), limit))
            .or_default() += 1;
        if !self.subscribers.is_empty() {
            let row = vec![
                "LimitEvent".to_string(),
                fmt_millis(now.wall),
                name.to_string(),
                index.to_string(),
                pid.to_string(),
                limit.to_string(),
                format!("{value}"),
                format!("{threshold}"),
                l.action.as_str().to_string(),
            ];
            self.announce(&crate::protocol::encode_record(&row));
        }
        let hooked = self.hooks_want("limit_exceeded");
        self.fire(crate::protocol::worker::HookEvent {
            kind: "limit_exceeded",
            service: name.to_string(),
            instance: index,
            pid: Some(pid),
            state: self
                .services
                .state_of(id)
                .map_or("running", |s| s.as_str())
                .into(),
            time: super::hook::wall_secs(now.wall),
            limit: Some(limit.into()),
            value: Some(value),
            threshold: Some(threshold),
            ..Default::default()
        });
        if l.action == LimitAction::Event {
            return;
        }
        let restart = l.action == LimitAction::Restart;
        // With hooks, the stop waits for their reply and for the commands
        // they start (evidence), at most the hook deadline.
        let hard = now.mono + if hooked { self.opts.hook_timeout_ms } else { 0 };
        self.monitoring.pending_stops.insert(
            id,
            PendingStop {
                due: hard,
                hard,
                fired_wall: now.wall,
                restart,
                hooked: !hooked,
            },
        );
        if !hooked {
            self.limit_stop_now(id);
        }
    }

    /// The `limit_exceeded` hooks of a process have replied: the stop is
    /// looked at in this pass, after their actions (so the commands they
    /// start are running, and are waited for).
    pub(super) fn limit_hooks_done(&mut self, pid: Option<i32>) {
        let Some(id) = pid.and_then(|p| self.sup.find_live_pid(p)) else {
            return;
        };
        let now = self.now().mono;
        if let Some(p) = self.monitoring.pending_stops.get_mut(&id) {
            p.hooked = true;
            p.due = now;
        }
    }

    /// A command a hook started has exited: the limit stops waiting for
    /// such commands look again in this pass.
    pub(super) fn limit_evidence_done(&mut self) {
        let now = self.now().mono;
        for p in self.monitoring.pending_stops.values_mut() {
            if p.hooked {
                p.due = p.due.min(now);
            }
        }
    }

    /// A due limit stop: done, unless commands its hooks started are still
    /// running (their exits wake the loop) and the hard deadline is ahead.
    pub(super) fn limit_stop_now(&mut self, id: u64) {
        let Some(p) = self.monitoring.pending_stops.get(&id) else {
            return;
        };
        let now = self.now();
        let evidence_running = p.hooked
            && self.internal_runs.iter().any(|r| {
                self.sup
                    .get(*r)
                    .is_some_and(|e| e.exited_wall.is_none() && e.started_wall >= p.fired_wall)
            });
        if evidence_running && now.mono < p.hard {
            let hard = p.hard;
            if let Some(p) = self.monitoring.pending_stops.get_mut(&id) {
                p.due = hard;
            }
            return;
        }
        let Some(p) = self.monitoring.pending_stops.remove(&id) else {
            return;
        };
        let restart = p.restart;
        let now = self.now();
        let cmds = self
            .services
            .limit_exceeded(id, restart, now.mono, now.wall);
        self.apply_svc(cmds);
    }
}
