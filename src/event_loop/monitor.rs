//! Resource monitoring in the loop: which tracked processes are sampled
//! (a service's `monitor`, else `--monitor`), when (a timer set of due
//! samples, a bounded number taken per pass, the first sample of each
//! process placed by its id inside its interval so processes started
//! together are sampled apart), the history rings, and `Stats`. Nothing is
//! allocated, read or woken for without a profile.

use super::stream::fmt_millis;
use super::*;
use crate::monitor::{cpu_percent, Collect, Profile, Ring, Sample};
use std::collections::BTreeSet;

/// Whose history a ring is: a service instance's (across its restarts)
/// or one process's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum RingKey {
    Instance(String, u32),
    Entry(u64),
}

pub(super) struct Watch {
    pub(super) key: RingKey,
    /// Its history while it is sampled (an instance's goes back to
    /// `Monitoring::rings` when its process ends, for the next one).
    pub(super) ring: Ring,
    pub(super) profile: Profile,
    pub(super) stats: platform::ProcStats,
    /// The previous sample's (mono ms, CPU ns), for the CPU percent.
    pub(super) last: Option<(u64, u64)>,
    pub(super) due: u64,
    /// No sample of this process yet.
    pub(super) fresh: bool,
    pub(super) started_wall: u64,
    /// Since when memory and CPU have been over their limits (mono ms).
    pub(super) over_memory: Option<u64>,
    pub(super) over_cpu: Option<u64>,
    /// A limit fired (with a stop or restart): no more until the process
    /// is gone; an event-only limit fires again after it came back under.
    pub(super) fired: [bool; 3],
    /// When its `runtime` limit is due (mono ms).
    pub(super) runtime_due: Option<u64>,
    /// Its service has `limits` (checked after each sample).
    pub(super) limited: bool,
}

#[derive(Default)]
pub(super) struct Monitoring {
    /// Samples due: (mono ms, entry id).
    due: BTreeSet<(u64, u64)>,
    pub(super) watches: HashMap<u64, Watch>,
    /// The histories of instances that have no sampled process now.
    pub(super) rings: HashMap<RingKey, Ring>,
    /// Limit stops waiting for their `limit_exceeded` hooks (a hook may
    /// capture evidence first), by entry.
    pub(super) pending_stops: HashMap<u64, super::limiter::PendingStop>,
    /// Limit firings since start, by (service, limit), for metrics.
    pub(super) limit_events: HashMap<(String, &'static str), u64>,
    /// The fds sampled processes' kept files may take (a quarter of
    /// archon's fd limit, read at the first sample).
    fd_budget: Option<usize>,
}

/// Samples kept in all rings together (about 150 bytes each: 150 MB at
/// most). A ring that would pass it keeps fewer, and archon says so: the
/// histories of 10 000 `intensive` services must not exhaust memory.
const MAX_SAMPLES_KEPT: usize = 1_000_000;

/// Samples taken in one pass at most: 1 000 processes due at once are
/// spread over passes, never read in one.
const SAMPLES_PER_PASS: usize = 32;
/// A `Stats` reply holds at most about this many bytes of rows.
const MAX_STATS_BYTES: usize = 1 << 20;
/// A sample up to this early (and a tenth of its interval) rides along
/// with one that is due.
const COALESCE_MS: u64 = 40;

impl Monitoring {
    pub(super) fn next_due(&self) -> Option<u64> {
        let stops = self.pending_stops.values().map(|p| p.due).min();
        [self.due.first().map(|d| d.0), stops]
            .into_iter()
            .flatten()
            .min()
    }
}

/// A field that may be unavailable: empty on the wire.
fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl EventLoop {
    /// The profile of a tracked process: its service's, else `--monitor`.
    /// A service with `limits` is sampled whatever its `monitor` says: at
    /// its profile's interval, else every second (or only at its runtime
    /// for a runtime-only limit), with what its limits read.
    pub(super) fn profile_of(&self, service: Option<&str>) -> Option<Profile> {
        use crate::services::spec::{Measure, Monitor};
        let spec = service.and_then(|n| self.services.spec(n));
        let chosen = match spec.map(|s| s.monitor) {
            Some(Monitor::Off) => None,
            Some(Monitor::Profile(p)) => Some(p),
            Some(Monitor::Inherit) | None => self.opts.monitor,
        };
        let Some(l) = spec.and_then(|s| s.limits.as_ref()) else {
            return chosen;
        };
        let usage = l.memory.is_some() || l.cpu.is_some();
        let mut p = chosen.unwrap_or(Profile {
            interval_ms: if usage {
                1000
            } else {
                l.runtime_ms
                    .unwrap_or(1000)
                    .max(crate::monitor::MIN_INTERVAL_MS)
            },
            collect: Collect::CpuMemory,
            history: 1,
            pss: false,
        });
        if l.memory.is_some() {
            // The peak (status) is read for memory limits.
            p.collect = Collect::All;
            p.pss |= l.measure == Measure::Pss;
        }
        Some(p)
    }

    /// Starts sampling entry `id` (already watched) when it has a profile.
    pub(super) fn monitor_start(&mut self, id: u64, key: RingKey, profile: Option<Profile>) {
        let Some(profile) = profile else {
            return;
        };
        let Some(w) = self.watched.get(&id) else {
            return;
        };
        // A sampled process's files are kept open while a quarter of the
        // fd limit covers them all (four each), else opened per sample.
        let budget = *self
            .monitoring
            .fd_budget
            .get_or_insert_with(|| platform::nofile_soft().unwrap_or(1024) as usize / 4);
        let keep = (self.monitoring.watches.len() + 1) * 4 <= budget;
        let stats = match platform::ProcStats::open(&w.proc, keep) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("not sampling id={id}: {e}");
                return;
            }
        };
        let now = self.now();
        let interval = profile.interval_ms.max(1);
        // Knuth's multiplicative hash of the id: consecutive ids land far
        // apart inside the interval.
        let offset = id.wrapping_mul(2_654_435_761) % interval;
        let due = now.mono + offset;
        let others: usize = self
            .monitoring
            .rings
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, r)| r.capacity())
            .chain(self.monitoring.watches.values().map(|w| w.ring.capacity()))
            .sum();
        let history = profile
            .history
            .min(MAX_SAMPLES_KEPT.saturating_sub(others))
            .max(1);
        if history < profile.history {
            log::warn!(
                "monitor: keeping {history} samples of id={id}, not {}: all histories together are bounded at {MAX_SAMPLES_KEPT}",
                profile.history
            );
        }
        let mut ring = self
            .monitoring
            .rings
            .remove(&key)
            .unwrap_or_else(|| Ring::new(history));
        ring.resize(history);
        let started_wall = self.sup.get(id).map_or(now.wall, |e| e.started_wall);
        let runtime_due = match &key {
            RingKey::Instance(n, _) => self
                .services
                .spec(n)
                .and_then(|s| s.limits.as_ref()?.runtime_ms)
                .map(|r| now.mono + r.saturating_sub(now.wall.saturating_sub(started_wall))),
            RingKey::Entry(_) => None,
        };
        let due = runtime_due.map_or(due, |r| r.min(due));
        let limited = match &key {
            RingKey::Instance(n, _) => self.services.spec(n).is_some_and(|s| s.limits.is_some()),
            RingKey::Entry(_) => false,
        };
        self.monitoring.due.insert((due, id));
        self.monitoring.watches.insert(
            id,
            Watch {
                key,
                ring,
                profile,
                stats,
                last: None,
                due,
                fresh: true,
                started_wall,
                over_memory: None,
                over_cpu: None,
                fired: [false; 3],
                runtime_due,
                limited,
            },
        );
    }

    /// The latest sample of entry `id`'s ring, while it is sampled.
    pub(super) fn current_sample(&self, id: &u64) -> Option<&Sample> {
        self.monitoring.watches.get(id)?.ring.current()
    }

    /// Stops sampling entry `id`; a process's own ring goes with it (an
    /// instance's stays for its next process).
    pub(super) fn monitor_stop(&mut self, id: u64) {
        self.monitoring.pending_stops.remove(&id);
        if let Some(w) = self.monitoring.watches.remove(&id) {
            self.monitoring.due.remove(&(w.due, id));
            if matches!(w.key, RingKey::Instance(..)) {
                self.monitoring.rings.insert(w.key, w.ring);
            }
        }
    }

    /// After a reload: a service whose `monitor` changed is sampled with
    /// its new profile from now on (its process is not restarted for it),
    /// and the rings of instances that no longer exist go.
    pub(super) fn monitor_refresh(&mut self) {
        let entries: Vec<(u64, String, u32)> = self
            .watched
            .iter()
            .filter(|(_, w)| w.kind == Kind::Service)
            .filter_map(|(id, _)| {
                let (n, i) = self.services.owner(*id)?;
                Some((*id, n, i))
            })
            .collect();
        for (id, name, index) in entries {
            let new = self.profile_of(Some(&name));
            let old = self
                .monitoring
                .watches
                .get(&id)
                .map(|w| (w.profile, w.limited));
            let limited = self
                .services
                .spec(&name)
                .is_some_and(|s| s.limits.is_some());
            if new.map(|p| (p, limited)) != old {
                self.monitor_stop(id);
                self.monitor_start(id, RingKey::Instance(name, index), new);
            }
        }
        self.monitor_prune();
    }

    /// Drops the rings of instances that no longer exist (after a reload
    /// or a scale-down).
    pub(super) fn monitor_prune(&mut self) {
        let services = &self.services;
        self.monitoring.rings.retain(|k, _| match k {
            RingKey::Instance(name, index) => services
                .instances(Some(name))
                .is_ok_and(|v| v.iter().any(|(_, i)| i.index == *index)),
            RingKey::Entry(_) => true,
        });
    }

    /// The samples due now, at most `SAMPLES_PER_PASS`; and the limit
    /// stops whose hooks had their time.
    pub(super) fn sample_due(&mut self) {
        if self.monitoring.pending_stops.is_empty() && self.monitoring.due.is_empty() {
            return;
        }
        let now = self.now();
        if !self.monitoring.pending_stops.is_empty() {
            let due: Vec<u64> = self
                .monitoring
                .pending_stops
                .iter()
                .filter(|(_, p)| p.due <= now.mono)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.limit_stop_now(id);
            }
        }
        for _ in 0..SAMPLES_PER_PASS {
            let Some(&(due, id)) = self.monitoring.due.first() else {
                return;
            };
            // Samples due within the next few ms (at most a tenth of their
            // interval) are taken with this one: one wake-up, and warm
            // caches, for a batch instead of one each.
            let slack = self
                .monitoring
                .watches
                .get(&id)
                .map_or(0, |w| (w.profile.interval_ms / 10).min(COALESCE_MS));
            if due > now.mono + slack {
                return;
            }
            self.monitoring.due.remove(&(due, id));
            self.sample_one(id, now);
        }
    }

    fn sample_one(&mut self, id: u64, now: Clock) {
        let Some(proc) = self.watched.get(&id).map(|w| &w.proc) else {
            self.monitor_stop(id);
            return;
        };
        let Some(w) = self.monitoring.watches.get_mut(&id) else {
            return;
        };
        let full = w.profile.collect == Collect::All;
        let raw = match w.stats.sample(proc, full, full && w.profile.pss) {
            Ok(r) => r,
            // Gone: its exit comes through its handle.
            Err(_) => {
                self.monitor_stop(id);
                return;
            }
        };
        let cpu_pct = match w.last {
            Some((t, c)) => cpu_percent(c, raw.cpu_ns, now.mono.saturating_sub(t)),
            None => cpu_percent(0, raw.cpu_ns, now.wall.saturating_sub(w.started_wall)),
        };
        w.last = Some((now.mono, raw.cpu_ns));
        let sample = Sample {
            at_ms: now.wall,
            cpu_pct,
            uptime_ms: now.wall.saturating_sub(w.started_wall),
            raw,
        };
        let restarted = std::mem::take(&mut w.fresh);
        w.due = now.mono + w.profile.interval_ms;
        if let Some(r) = w.runtime_due.filter(|r| *r > now.mono) {
            w.due = w.due.min(r);
        }
        self.monitoring.due.insert((w.due, id));
        let limited = w.limited;
        w.ring.push(sample, restarted);
        if limited {
            if let Some(RingKey::Instance(name, index)) =
                self.monitoring.watches.get(&id).map(|w| w.key.clone())
            {
                self.check_limits(id, &name, index, now, restarted);
            }
        }
    }

    /// `Stats[,<target>[,history]]`: for each sampled process (of the
    /// target), its current sample (or every sample in its ring) and the
    /// aggregates, then `Ok`.
    pub(super) fn stats_rows(&self, target: Option<&str>, history: bool) -> Reply {
        // (entry id, service, instance) of what is asked for.
        let mut which: Vec<(u64, Option<(&str, u32)>)> = Vec::new();
        match target {
            Some(t) if t.parse::<u64>().is_ok() => {
                let id = t.parse::<u64>().unwrap_or(0);
                if !self.monitoring.watches.contains_key(&id) {
                    return Reply::error(
                        ErrorKind::NoSuchId,
                        format!("process {id} is not monitored (see --monitor, monitor =)"),
                    );
                }
                which.push((id, None));
            }
            Some(t) => match self.services.instances(Some(t)) {
                Ok(v) => which.extend(
                    v.iter()
                        .filter_map(|(n, i)| Some((i.entry?, Some((*n, i.index))))),
                ),
                Err(e) => return Reply::error(ErrorKind::NoSuchService, e),
            },
            None => {
                let mut ids: Vec<u64> = self.monitoring.watches.keys().copied().collect();
                ids.sort_unstable();
                which.extend(ids.into_iter().map(|id| (id, None)));
            }
        }
        let mut rows: Vec<Vec<String>> = Vec::new();
        // A reply is built whole: bounded, like `Tree`'s (the rest is left
        // out and logged), so no request can make archon hold megabytes.
        let mut bytes = 0usize;
        let mut left_out = 0usize;
        for (id, inst) in which {
            if bytes > MAX_STATS_BYTES {
                left_out += 1;
                continue;
            }
            let Some(w) = self.monitoring.watches.get(&id) else {
                continue;
            };
            let (svc, idx) = match (&w.key, inst) {
                (RingKey::Instance(n, i), _) => (n.clone(), i.to_string()),
                (_, Some((n, i))) => (n.to_string(), i.to_string()),
                _ => (String::new(), String::new()),
            };
            let pid = self.sup.get(id).map_or(0, |e| e.pid);
            let ring = &w.ring;
            let shown: Vec<&Sample> = if history {
                ring.iter().collect()
            } else {
                ring.current().into_iter().collect()
            };
            for s in shown {
                if bytes > MAX_STATS_BYTES {
                    break;
                }
                let k = &s.raw;
                rows.push(vec![
                    "Sample".into(),
                    id.to_string(),
                    svc.clone(),
                    idx.clone(),
                    pid.to_string(),
                    fmt_millis(s.at_ms),
                    format!("{:.3}", k.cpu_ns as f64 / 1e9),
                    format!("{:.1}", s.cpu_pct),
                    k.rss_bytes.to_string(),
                    opt(k.pss_bytes),
                    opt(k.peak_rss_bytes),
                    opt(k.read_bytes),
                    opt(k.write_bytes),
                    opt(k.threads),
                    opt(k.fds),
                    opt(k.vcsw),
                    opt(k.ivcsw),
                    fmt_millis(s.uptime_ms),
                    opt(k.net_rx_bytes),
                    opt(k.net_tx_bytes),
                ]);
                bytes += rows
                    .last()
                    .map_or(0, |r| r.iter().map(|f| f.len() + 1).sum());
            }
            let a = ring.aggregate();
            rows.push(vec![
                "Aggregate".into(),
                id.to_string(),
                svc,
                idx,
                a.samples.to_string(),
                format!("{:.1}", a.cpu_avg),
                format!("{:.1}", a.cpu_max),
                a.rss_avg.to_string(),
                a.rss_max.to_string(),
                opt(a.read_total),
                opt(a.write_total),
                opt(a.net_rx_total),
                opt(a.net_tx_total),
                fmt_millis(w.profile.interval_ms),
                ring.capacity().to_string(),
            ]);
        }
        if left_out > 0 {
            log::warn!(
                "Stats: {left_out} processes left out of a reply over {MAX_STATS_BYTES} bytes"
            );
        }
        Reply::Rows(rows)
    }
}
