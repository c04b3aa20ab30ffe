//! Resource monitoring, pure: profiles (what is sampled and how often),
//! samples, the bounded history ring of each instance and its aggregates.
//! The loop (`event_loop/monitor.rs`) schedules the sampling and reads the
//! kernel through `platform::ProcStats`; nothing here does I/O.

mod ring;

pub use ring::{Aggregate, Ring};

/// What a profile collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    /// CPU time and resident memory only (one /proc file on Linux).
    CpuMemory,
    /// Everything the platform gives: peak memory, disk bytes, threads,
    /// fds, context switches (and PSS where asked).
    All,
}

/// How often, what, and how many samples are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub interval_ms: u64,
    pub collect: Collect,
    /// Samples kept in the instance's ring (0: only the current one).
    pub history: usize,
    /// Read PSS too (smaps_rollup: walks the page tables, so costly).
    pub pss: bool,
}

/// The shortest interval and the largest history a profile may ask for.
pub const MIN_INTERVAL_MS: u64 = 100;
pub const MAX_INTERVAL_MS: u64 = 86_400_000;
pub const MAX_HISTORY: usize = 10_000;

impl Profile {
    /// The named profiles: `minimal`, `standard`, `intensive`, `daemon`;
    /// `off` is `Ok(None)`.
    pub fn named(name: &str) -> Result<Option<Profile>, String> {
        let p = |s: u64, collect, history| Profile {
            interval_ms: s * 1000,
            collect,
            history,
            pss: false,
        };
        Ok(Some(match name {
            "off" => return Ok(None),
            "minimal" => p(60, Collect::CpuMemory, 0),
            "standard" => p(10, Collect::All, 100),
            "intensive" => p(1, Collect::All, 1000),
            "daemon" => p(120, Collect::All, 500),
            other => {
                return Err(format!(
                    "unknown monitor profile {other:?} (off, minimal, standard, intensive, daemon)"
                ))
            }
        }))
    }

    /// A custom profile: a base (named, default `standard`) with its
    /// interval, collect set or history changed; checked against the bounds.
    pub fn custom(
        base: Option<&str>,
        interval_ms: Option<u64>,
        collect: Option<&str>,
        history: Option<u64>,
        pss: Option<bool>,
    ) -> Result<Option<Profile>, String> {
        let Some(mut p) = Profile::named(base.unwrap_or("standard"))? else {
            return Ok(None);
        };
        if let Some(ms) = interval_ms {
            if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) {
                return Err(format!(
                    "monitor interval must be between {} s and {} s",
                    MIN_INTERVAL_MS as f64 / 1000.0,
                    MAX_INTERVAL_MS / 1000
                ));
            }
            p.interval_ms = ms;
        }
        if let Some(c) = collect {
            p.collect = match c {
                "all" => Collect::All,
                "cpu,memory" | "memory,cpu" | "basic" => Collect::CpuMemory,
                other => {
                    return Err(format!(
                        "monitor collect must be \"all\" or \"cpu,memory\", not {other:?}"
                    ))
                }
            };
        }
        if let Some(h) = history {
            if h > MAX_HISTORY as u64 {
                return Err(format!("monitor history is at most {MAX_HISTORY} samples"));
            }
            p.history = h as usize;
        }
        if let Some(pss) = pss {
            p.pss = pss;
        }
        Ok(Some(p))
    }
}

/// One sample of one process: what the kernel said (`raw`: `None` where
/// the platform cannot say, never a made-up number) and what archon
/// computed from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Wall clock, ms since the epoch.
    pub at_ms: u64,
    /// CPU over the last interval, in percent of one CPU (since the start
    /// for the first sample).
    pub cpu_pct: f64,
    pub uptime_ms: u64,
    pub raw: crate::platform::RawSample,
}

/// CPU percent of one CPU between two readings of cumulative CPU time.
pub fn cpu_percent(cpu_ns_before: u64, cpu_ns_now: u64, wall_ms: u64) -> f64 {
    if wall_ms == 0 {
        return 0.0;
    }
    let used = cpu_ns_now.saturating_sub(cpu_ns_before) as f64;
    used / (wall_ms as f64 * 1e6) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles_are_the_issues() {
        let p = |n| Profile::named(n).ok().flatten();
        assert_eq!(p("off"), None);
        let m = p("minimal").map(|p| (p.interval_ms, p.collect, p.history));
        assert_eq!(m, Some((60_000, Collect::CpuMemory, 0)));
        let s = p("standard").map(|p| (p.interval_ms, p.collect, p.history));
        assert_eq!(s, Some((10_000, Collect::All, 100)));
        let i = p("intensive").map(|p| (p.interval_ms, p.history));
        assert_eq!(i, Some((1000, 1000)));
        let d = p("daemon").map(|p| (p.interval_ms, p.history));
        assert_eq!(d, Some((120_000, 500)));
        assert!(Profile::named("fast").is_err());
    }

    #[test]
    fn custom_profiles_are_bounded() {
        let Ok(Some(p)) = Profile::custom(None, Some(500), Some("cpu,memory"), Some(7), None)
        else {
            panic!("custom profile refused")
        };
        assert_eq!(
            (p.interval_ms, p.collect, p.history),
            (500, Collect::CpuMemory, 7)
        );
        assert!(Profile::custom(None, Some(10), None, None, None).is_err());
        assert!(Profile::custom(None, None, None, Some(10_001), None).is_err());
        assert!(Profile::custom(None, None, Some("disk"), None, None).is_err());
        assert_eq!(
            Profile::custom(Some("off"), Some(500), None, None, None),
            Ok(None)
        );
    }

    #[test]
    fn cpu_percent_is_of_one_cpu() {
        assert_eq!(cpu_percent(0, 500_000_000, 1000), 50.0);
        assert_eq!(cpu_percent(0, 2_000_000_000, 1000), 200.0);
        assert_eq!(cpu_percent(5, 1, 1000), 0.0);
        assert_eq!(cpu_percent(0, 1, 0), 0.0);
    }
}
