//! The history of one instance: a bounded ring of samples, and what is
//! computed over it.

use super::Sample;
use std::collections::VecDeque;

/// The last samples of an instance (at most `cap`, and always the current
/// one), across its restarts.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    cap: usize,
    samples: VecDeque<Sample>,
    /// Disk bytes of earlier processes of the instance (a restart starts
    /// the counters again): kept so totals span restarts.
    carried_read: u64,
    carried_write: u64,
}

/// Aggregates over a ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub samples: usize,
    pub cpu_avg: f64,
    pub cpu_max: f64,
    pub rss_avg: u64,
    pub rss_max: u64,
    /// Disk bytes read and written over the ring's span (None when the
    /// platform gave none).
    pub read_total: Option<u64>,
    pub write_total: Option<u64>,
    pub net_rx_total: Option<u64>,
    pub net_tx_total: Option<u64>,
}

impl Ring {
    pub fn new(history: usize) -> Ring {
        Ring {
            cap: history.max(1),
            samples: VecDeque::new(),
            carried_read: 0,
            carried_write: 0,
        }
    }

    /// How many samples it keeps at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// A new profile's size: the oldest samples go if it is smaller.
    pub fn resize(&mut self, history: usize) {
        self.cap = history.max(1);
        while self.samples.len() > self.cap {
            self.samples.pop_front();
        }
    }

    /// Adds a sample; `restarted`: it is of a new process of the instance.
    pub fn push(&mut self, s: Sample, restarted: bool) {
        if restarted {
            if let Some(last) = self.samples.back() {
                self.carried_read += last.raw.read_bytes.unwrap_or(0);
                self.carried_write += last.raw.write_bytes.unwrap_or(0);
            }
        }
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn current(&self) -> Option<&Sample> {
        self.samples.back()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    pub fn aggregate(&self) -> Aggregate {
        let n = self.samples.len();
        let cpu_sum: f64 = self.samples.iter().map(|s| s.cpu_pct).sum();
        let cpu_max = self.samples.iter().map(|s| s.cpu_pct).fold(0.0, f64::max);
        let rss_sum: u128 = self.samples.iter().map(|s| s.raw.rss_bytes as u128).sum();
        let rss_max = self
            .samples
            .iter()
            .map(|s| s.raw.peak_rss_bytes.unwrap_or(0).max(s.raw.rss_bytes))
            .max()
            .unwrap_or(0);
        // Cumulative counters: the span is last - first (plus what earlier
        // processes of the instance did since the first sample).
        let span = |f: fn(&Sample) -> Option<u64>, carried: u64| {
            let first = f(self.samples.front()?)?;
            let last = f(self.samples.back()?)?;
            Some((last + carried).saturating_sub(first))
        };
        Aggregate {
            samples: n,
            cpu_avg: if n == 0 { 0.0 } else { cpu_sum / n as f64 },
            cpu_max,
            rss_avg: if n == 0 {
                0
            } else {
                (rss_sum / n as u128) as u64
            },
            rss_max,
            read_total: span(|s| s.raw.read_bytes, self.carried_read),
            write_total: span(|s| s.raw.write_bytes, self.carried_write),
            net_rx_total: span(|s| s.raw.net_rx_bytes, 0),
            net_tx_total: span(|s| s.raw.net_tx_bytes, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu: f64, rss: u64, read: u64) -> Sample {
        Sample {
            at_ms: 0,
            cpu_pct: cpu,
            uptime_ms: 0,
            raw: crate::platform::RawSample {
                rss_bytes: rss,
                peak_rss_bytes: Some(rss),
                read_bytes: Some(read),
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_ring_keeps_its_bound_and_aggregates_what_it_holds() {
        let mut r = Ring::new(3);
        for i in 0..10u64 {
            r.push(s(i as f64, 100 * i, 1000 * i), false);
        }
        assert_eq!(r.iter().count(), 3);
        let a = r.aggregate();
        assert_eq!(a.samples, 3);
        assert_eq!(a.cpu_avg, 8.0);
        assert_eq!(a.cpu_max, 9.0);
        assert_eq!((a.rss_avg, a.rss_max), (800, 900));
        assert_eq!(a.read_total, Some(2000));
        assert_eq!(a.write_total, None);
        assert_eq!(a.net_rx_total, None, "no made-up network bytes");
        r.resize(1);
        assert_eq!(r.iter().count(), 1);
        assert_eq!(r.current().map(|c| c.raw.rss_bytes), Some(900));
    }

    #[test]
    fn disk_totals_span_a_restart() {
        let mut r = Ring::new(10);
        r.push(s(0.0, 1, 100), false);
        r.push(s(0.0, 1, 500), false);
        // The new process's counter starts again from 0.
        r.push(s(0.0, 1, 50), true);
        assert_eq!(r.aggregate().read_total, Some(450));
        assert_eq!(Ring::new(0).aggregate().samples, 0);
    }
}
