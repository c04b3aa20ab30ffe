//! Giving back the code pages start-up touched.
//!
//! Start-up (the arguments, the config's decode and validation, the first
//! spawns) and a reload run code that the loop does not run again, yet its
//! pages stay mapped: with the kernel's fault-around every fault maps 64
//! KiB of the file, so an init that sleeps in `epoll_wait` keeps most of
//! its text resident. A second after start-up or a reload, just before the
//! loop blocks, archon unmaps its read-only pages (`platform::
//! release_read_only`); what the next events run is mapped again from the
//! page cache, so what stays resident is what archon has run since. The
//! kernel frees its own `__init` code after boot for the same reason.
//!
//! The delay keeps it off short lives (`archon -- cmd` that exits at
//! once pays nothing) and off a start-up still under way.

use std::time::Duration;

use super::EventLoop;

/// How long after start-up or a reload the pages are given back.
const RELEASE_AFTER_MS: u64 = 1000;

impl EventLoop {
    /// Start-up or a reload has just run: give back its pages later.
    pub(super) fn release_later(&mut self) {
        self.release_at = Some(self.now().mono + RELEASE_AFTER_MS);
    }

    /// Called just before the loop blocks until `deadline` (None: until an
    /// event): releases the pages if that is due, and returns how long to
    /// wait, no longer than until the release. Reads the clock only when
    /// there is a deadline of either kind.
    pub(super) fn release_due(&mut self, deadline: Option<u64>) -> Option<Duration> {
        if deadline.is_none() && self.release_at.is_none() {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let wait = deadline.map(|d| d.saturating_sub(now));
        let wait = match self.release_at {
            Some(at) if at <= now && wait != Some(0) => {
                self.release_at = None;
                // And the heap pages the first second freed.
                crate::platform::trim_heap();
                let n = crate::platform::release_read_only();
                log::debug!("released start-up pages bytes={n}");
                wait
            }
            Some(at) => {
                let left = at.saturating_sub(now);
                Some(wait.map_or(left, |w| w.min(left)))
            }
            None => wait,
        };
        wait.map(Duration::from_millis)
    }
}
