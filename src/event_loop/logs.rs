//! The recent output of every service instance, kept in memory for `Logs`
//! (`archonctl logs`), and the clients that follow it live.
//!
//! Bounded where a line is kept: each instance keeps its newest
//! `RING_LINES` lines and at most `RING_BYTES` of text (whichever is
//! reached first drops the oldest), and all rings together at most
//! `ALL_RINGS_BYTES` (past it the largest ring gives up its oldest line:
//! 10 000 chatty instances keep 16 MiB, not 320); a ring goes when its
//! instance does. A
//! `Logs` reply takes at most `REPLY_BYTES`, the newest lines first; a
//! follower gets lines as subscribers get events, and is disconnected when
//! it leaves 256 KiB of them unread.

use super::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

const RING_LINES: usize = 200;
const RING_BYTES: usize = 32 * 1024;
const ALL_RINGS_BYTES: usize = 16 * 1024 * 1024;
const REPLY_BYTES: usize = 192 * 1024;

struct Line {
    /// Arrival order across every ring (times are equal within a ms).
    seq: u64,
    wall: u64,
    err: bool,
    text: Box<str>,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<Line>,
    bytes: usize,
}

/// Every instance's ring, by service, then instance. Keyed by the `Rc<str>`
/// the service's pipes hold, so keeping a line allocates only the line.
#[derive(Default)]
pub(super) struct Rings {
    rings: BTreeMap<Rc<str>, BTreeMap<u32, Ring>>,
    seq: u64,
    /// Bytes in every ring together, and the rings by size: past
    /// `ALL_RINGS_BYTES`, the largest ring gives up its oldest line.
    total: usize,
    by_size: BTreeSet<(usize, Rc<str>, u32)>,
}

impl Rings {
    fn push(&mut self, name: &Rc<str>, index: u32, wall: u64, err: bool, text: &str) {
        let ring = match self.rings.get_mut(&**name) {
            Some(m) => m.entry(index).or_default(),
            None => self
                .rings
                .entry(name.clone())
                .or_default()
                .entry(index)
                .or_default(),
        };
        self.by_size.remove(&(ring.bytes, name.clone(), index));
        // A line alone over the byte bound keeps its newest part.
        let mut start = text.len().saturating_sub(RING_BYTES);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let text = &text[start..];
        while ring.lines.len() >= RING_LINES || ring.bytes + text.len() > RING_BYTES {
            match ring.lines.pop_front() {
                Some(old) => {
                    ring.bytes -= old.text.len();
                    self.total -= old.text.len();
                }
                None => break,
            }
        }
        ring.bytes += text.len();
        self.total += text.len();
        self.seq += 1;
        ring.lines.push_back(Line {
            seq: self.seq,
            wall,
            err,
            text: text.into(),
        });
        self.by_size.insert((ring.bytes, name.clone(), index));
        while self.total > ALL_RINGS_BYTES {
            let Some((_, big, i)) = self.by_size.pop_last() else {
                break;
            };
            let Some(r) = self.rings.get_mut(&*big).and_then(|m| m.get_mut(&i)) else {
                continue;
            };
            if let Some(old) = r.lines.pop_front() {
                r.bytes -= old.text.len();
                self.total -= old.text.len();
            }
            self.by_size.insert((r.bytes, big, i));
        }
    }

    /// How many rings there are.
    fn len(&self) -> usize {
        self.rings.values().map(BTreeMap::len).sum()
    }

    /// Drops the rings of instances `exists` says are gone.
    pub(super) fn prune(&mut self, exists: impl Fn(&str, u32) -> bool) {
        let (total, by_size) = (&mut self.total, &mut self.by_size);
        self.rings.retain(|name, m| {
            m.retain(|i, r| {
                let keep = exists(name, *i);
                if !keep {
                    *total -= r.bytes;
                    by_size.remove(&(r.bytes, name.clone(), *i));
                }
                keep
            });
            !m.is_empty()
        });
    }

    /// The newest `max` lines of `name` (of instance `index` only, when
    /// given), oldest first, as `Log` rows, within `REPLY_BYTES`.
    fn tail(&self, name: &str, index: Option<u32>, max: usize) -> Vec<String> {
        let mut picked: Vec<String> = Vec::new();
        let mut bytes = 0;
        // Newest first across the instances: walk each ring backwards, a
        // merge by arrival.
        let mut cursors: Vec<(u32, &Ring, usize)> = self
            .rings
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(i, _)| index.is_none_or(|x| x == **i))
            .map(|(i, r)| (*i, r, r.lines.len()))
            .collect();
        while picked.len() < max {
            let next = cursors
                .iter_mut()
                .filter(|(_, _, left)| *left > 0)
                .max_by_key(|(_, r, left)| r.lines[*left - 1].seq);
            let Some((i, r, left)) = next else { break };
            *left -= 1;
            let l = &r.lines[*left];
            let row = log_row(l.wall, name, *i, l.err, &l.text);
            bytes += row.len();
            if bytes > REPLY_BYTES {
                break;
            }
            picked.push(row);
        }
        picked.reverse();
        picked
    }
}

/// `Log,<time>,<name>,<instance>,<stream>,<text>` with its newline.
fn log_row(wall: u64, name: &str, index: u32, err: bool, text: &str) -> String {
    crate::protocol::encode_record(&[
        "Log".to_string(),
        super::stream::fmt_millis(wall),
        name.to_string(),
        index.to_string(),
        if err { "stderr" } else { "stdout" }.to_string(),
        text.to_string(),
    ])
}

impl EventLoop {
    /// One line (without its newline) a service instance wrote: kept, and
    /// sent to whoever follows it.
    pub(super) fn keep_line(&mut self, name: &Rc<str>, index: u32, err: bool, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let wall = self.now().wall;
        self.rings.push(name, index, wall, err, &text);
        if self.followers.is_empty() {
            return;
        }
        let row = log_row(wall, name, index, err, &text);
        let who: Vec<u64> = self
            .followers
            .iter()
            .filter(|(_, (n, i))| **n == **name && i.is_none_or(|x| x == index))
            .map(|(c, _)| *c)
            .collect();
        for cid in who {
            let kept = self.clients.get_mut(&cid).map(|c| c.push_event(&row));
            if kept == Some(false) {
                log::warn!("log follower does not read; disconnecting client={cid}");
                self.drop_client(cid, "log backlog over limit");
                continue;
            }
            self.flush_client(cid);
        }
    }

    /// `Logs,<target>,<lines>[,follow]`.
    pub(super) fn logs_request(
        &mut self,
        client: u64,
        target: &str,
        lines: u32,
        follow: bool,
    ) -> Reply {
        let (name, index) = match self.services.target(target) {
            Ok((n, _)) => (n.to_string(), crate::protocol::split_target(target).1),
            Err(e) => return Reply::error(ErrorKind::NoSuchService, e),
        };
        let rows = self.rings.tail(&name, index, lines as usize);
        if follow {
            self.followers.insert(client, (name, index));
            if let Some(c) = self.clients.get_mut(&client) {
                c.following = true;
            }
        }
        Reply::Encoded(rows.concat())
    }

    /// Rings of instances that no longer exist go (after a scale down or a
    /// reload that removed a service). Called when a process's pipe
    /// closes; a walk only when there are more rings than instances.
    pub(super) fn prune_rings(&mut self) {
        if self.rings.len() <= self.services.instance_count() {
            return;
        }
        let svcs = &self.services;
        self.rings.prune(|n, i| {
            svcs.instances(Some(n))
                .is_ok_and(|v| v.iter().any(|(_, x)| x.index == i))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(s: &str) -> Rc<str> {
        Rc::from(s)
    }

    impl Rings {
        fn ring(&self, name: &str, i: u32) -> &Ring {
            &self.rings[name][&i]
        }

        fn all(&self) -> impl Iterator<Item = &Ring> {
            self.rings.values().flat_map(BTreeMap::values)
        }
    }

    #[test]
    fn a_ring_keeps_the_newest_within_both_bounds() {
        let mut r = Rings::default();
        let web = rc("web");
        for k in 0..500 {
            r.push(&web, 0, k, false, &format!("line {k}"));
        }
        let ring = r.ring("web", 0);
        assert_eq!(ring.lines.len(), RING_LINES);
        assert_eq!(&*ring.lines[0].text, "line 300");
        let big = "x".repeat(10_000);
        for k in 0..10 {
            r.push(&web, 0, 1000 + k, true, &big);
        }
        let ring = r.ring("web", 0);
        assert!(ring.bytes <= RING_BYTES && ring.lines.len() == 3);
        r.push(&web, 0, 2000, false, &"y".repeat(100_000));
        let ring = r.ring("web", 0);
        assert_eq!((ring.lines.len(), ring.bytes), (1, RING_BYTES));
    }

    #[test]
    fn many_rings_share_a_global_bound() {
        let mut r = Rings::default();
        let pool = rc("pool");
        let line = "z".repeat(1000);
        for i in 0..10_000 {
            for _ in 0..40 {
                r.push(&pool, i, 0, false, &line);
            }
        }
        let sum: usize = r.all().map(|x| x.bytes).sum();
        assert_eq!(sum, r.total);
        assert!(r.total <= ALL_RINGS_BYTES, "{}", r.total);
        // The largest gave way: no ring is far above the others.
        let max = r.all().map(|x| x.bytes).max().unwrap();
        let min = r.all().map(|x| x.bytes).min().unwrap();
        assert!(max - min <= 2 * line.len(), "{max} {min}");
        r.prune(|_, i| i < 10);
        assert_eq!(r.total, r.all().map(|x| x.bytes).sum::<usize>());
        assert_eq!(r.by_size.len(), 10);
    }

    #[test]
    fn tail_merges_instances_by_time_and_filters_one() {
        let mut r = Rings::default();
        let web = rc("web");
        r.push(&web, 0, 10, false, "a");
        r.push(&web, 1, 20, false, "b");
        r.push(&web, 0, 30, true, "c");
        r.push(&rc("webby"), 0, 25, false, "not web");
        let rows = r.tail("web", None, 10);
        let texts: Vec<&str> = rows
            .iter()
            .map(|l| l.trim_end().rsplit(',').next().unwrap())
            .collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert!(rows[2].contains(",web,0,stderr,c"));
        assert_eq!(r.tail("web", None, 2).len(), 2);
        assert_eq!(r.tail("web", Some(1), 10).len(), 1);
        assert!(r.tail("nope", None, 10).is_empty());
    }
}
