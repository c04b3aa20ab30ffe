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

struct Watch {
    key: RingKey,
    profile: Profile,
    stats: platform::ProcStats,
    /// The previous sample's (mono ms, CPU ns), for the CPU percent.
    last: Option<(u64, u64)>,
    due: u64,
    /// No sample of this process yet.
    fresh: bool,
    started_wall: u64,
}

#[derive(Default)]
pub(super) struct Monitoring {
    /// Samples due: (mono ms, entry id).
    due: BTreeSet<(u64, u64)>,
    watches: HashMap<u64, Watch>,
    rings: HashMap<RingKey, Ring>,
}

/// Samples taken in one pass at most: 1 000 processes due at once are
/// spread over passes, never read in one.
const SAMPLES_PER_PASS: usize = 32;

impl Monitoring {
    pub(super) fn next_due(&self) -> Option<u64> {
        self.due.first().map(|d| d.0)
    }
}

/// A field that may be unavailable: empty on the wire.
fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl EventLoop {
    /// The profile of a tracked process: its service's, else `--monitor`.
    pub(super) fn profile_of(&self, service: Option<&str>) -> Option<Profile> {
        use crate::services::spec::Monitor;
        match service
            .and_then(|n| self.services.spec(n))
            .map(|s| s.monitor)
        {
            Some(Monitor::Off) => None,
            Some(Monitor::Profile(p)) => Some(p),
            Some(Monitor::Inherit) | None => self.opts.monitor,
        }
    }

    /// Starts sampling entry `id` (already watched) when it has a profile.
    pub(super) fn monitor_start(&mut self, id: u64, key: RingKey, profile: Option<Profile>) {
        let Some(profile) = profile else {
            return;
        };
        let Some(w) = self.watched.get(&id) else {
            return;
        };
        let stats = match platform::ProcStats::open(&w.proc) {
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
        self.monitoring
            .rings
            .entry(key.clone())
            .or_insert_with(|| Ring::new(profile.history))
            .resize(profile.history);
        let started_wall = self.sup.get(id).map_or(now.wall, |e| e.started_wall);
        self.monitoring.due.insert((due, id));
        self.monitoring.watches.insert(
            id,
            Watch {
                key,
                profile,
                stats,
                last: None,
                due,
                fresh: true,
                started_wall,
            },
        );
    }

    /// Stops sampling entry `id`; a process's own ring goes with it (an
    /// instance's stays for its next process).
    pub(super) fn monitor_stop(&mut self, id: u64) {
        if let Some(w) = self.monitoring.watches.remove(&id) {
            self.monitoring.due.remove(&(w.due, id));
            if matches!(w.key, RingKey::Entry(_)) {
                self.monitoring.rings.remove(&w.key);
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
            let old = self.monitoring.watches.get(&id).map(|w| w.profile);
            if new != old {
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

    /// The samples due now, at most `SAMPLES_PER_PASS`.
    pub(super) fn sample_due(&mut self) {
        let now = self.now();
        for _ in 0..SAMPLES_PER_PASS {
            let Some(&(due, id)) = self.monitoring.due.first() else {
                return;
            };
            if due > now.mono {
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
        self.monitoring.due.insert((w.due, id));
        let (key, history) = (w.key.clone(), w.profile.history);
        self.monitoring
            .rings
            .entry(key)
            .or_insert_with(|| Ring::new(history))
            .push(sample, restarted);
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
        let mut rows = Vec::new();
        for (id, inst) in which {
            let Some(w) = self.monitoring.watches.get(&id) else {
                continue;
            };
            let (svc, idx) = match (&w.key, inst) {
                (RingKey::Instance(n, i), _) => (n.clone(), i.to_string()),
                (_, Some((n, i))) => (n.to_string(), i.to_string()),
                _ => (String::new(), String::new()),
            };
            let pid = self.sup.get(id).map_or(0, |e| e.pid);
            let Some(ring) = self.monitoring.rings.get(&w.key) else {
                continue;
            };
            let shown: Vec<&Sample> = if history {
                ring.iter().collect()
            } else {
                ring.current().into_iter().collect()
            };
            for s in shown {
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
                w.profile.history.to_string(),
            ]);
        }
        Reply::Rows(rows)
    }
}
