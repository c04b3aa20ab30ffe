//! `Tree`: archon's process tree as the kernel has it, each process with
//! its parent and what archon knows it as (a service instance, a `Run`, a
//! daemon, the main command, a check, the Lua worker), descendants under
//! the process archon started, and orphans re-parented to archon (as PID 1
//! or as a subreaper) as `adopted`.
//!
//! Walked down from archon through `/proc/PID/task/*/children`, so the
//! cost is archon's own descendants, at most `TREE_MAX` of them (a full
//! `/proc` scan, just as bounded, where the kernel lacks that file), once
//! per pass of the loop however many ask: about 30 us a process, so the
//! worst pass is ~120 ms. (Not streamed with a per-pass budget like
//! `Status`: the walk would have to be resumable across passes.)
//! Monitored processes are not archon's descendants: each is a root of its
//! own after archon's tree.

use super::*;
use std::collections::HashMap;

const TREE_MAX: usize = 4096;
/// A reply is queued whole: past this, rows are left out (and logged).
const TREE_BYTES: usize = 192 * 1024;

impl EventLoop {
    /// What archon calls each process it knows, by pid.
    fn tree_labels(&self) -> HashMap<i32, String> {
        let mut labels = HashMap::new();
        for e in self.sup.live_entries() {
            let label = match e.kind {
                Kind::Service => match self.services.owner(e.id) {
                    Some((n, i)) => format!("service:{n}.{i}"),
                    None => format!("service:{}", e.id),
                },
                Kind::Run => match self.checks.get(&e.id) {
                    Some((svc, _)) => match self.services.owner(*svc) {
                        Some((n, i)) => format!("check:{n}.{i}"),
                        None => "check".to_string(),
                    },
                    None => format!("run:{}", e.id),
                },
                Kind::Daemon => format!("daemon:{}", e.id),
                Kind::Main => "main".to_string(),
                Kind::Monitor => format!("monitor:{}", e.id),
            };
            labels.insert(e.pid, label);
        }
        if let Some(w) = &self.lua.worker {
            labels.insert(w.proc.pid(), "lua-worker".to_string());
        }
        labels
    }

    /// The `Tree` rows, depth first; walked at most once per pass of the
    /// loop (pipelined or concurrent `Tree`s in one pass share the walk),
    /// so `Tree` costs the loop one bounded walk per pass at most.
    pub(super) fn tree_rows(&mut self) -> String {
        if let Some((pass, rows)) = &self.tree_cache {
            if *pass == self.pass {
                return rows.to_string();
            }
        }
        let rows = self.walk_tree();
        self.tree_cache = Some((self.pass, std::rc::Rc::from(rows.as_str())));
        rows
    }

    fn walk_tree(&self) -> String {
        let me = platform::getpid();
        let labels = self.tree_labels();
        let mut out = String::new();
        let mut seen = std::collections::HashSet::new();
        let children = children_source();
        self.walk(me, "archon", 0, &labels, &children, &mut seen, &mut out);
        for e in self.sup.live_entries() {
            if e.kind == Kind::Monitor && !seen.contains(&e.pid) {
                let label = labels.get(&e.pid).map_or("monitor", String::as_str);
                self.walk(e.pid, label, 0, &labels, &children, &mut seen, &mut out);
            }
        }
        if seen.len() >= TREE_MAX || out.len() >= TREE_BYTES {
            log::warn!("Tree: cut at {} processes", seen.len());
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        root: i32,
        root_label: &str,
        root_depth: usize,
        labels: &HashMap<i32, String>,
        children: &Children,
        seen: &mut std::collections::HashSet<i32>,
        out: &mut String,
    ) {
        let me = platform::getpid();
        let mut stack = vec![(root, root_depth, root_label.to_string())];
        while let Some((pid, depth, label)) = stack.pop() {
            if seen.len() >= TREE_MAX || out.len() >= TREE_BYTES || !seen.insert(pid) {
                continue;
            }
            let Some(node) = platform::proc_node(pid) else {
                continue; // gone meanwhile
            };
            let mut row = vec![
                "Tree".to_string(),
                depth.to_string(),
                pid.to_string(),
                node.ppid.to_string(),
                label.clone(),
                node.state.to_string(),
            ];
            row.extend(node.argv);
            let line = crate::protocol::encode_record(&row);
            if out.len() + line.len() > TREE_BYTES {
                continue;
            }
            out.push_str(&line);
            let mut kids = children.of(pid);
            // Popped from the back: lowest pid first.
            kids.sort_unstable_by(|a, b| b.cmp(a));
            for k in kids {
                let child_label = match labels.get(&k) {
                    Some(l) => l.clone(),
                    // archon's own child it does not track: an orphan it
                    // inherited.
                    None if pid == me => "adopted".to_string(),
                    None => label.clone(),
                };
                stack.push((k, depth + 1, child_label));
            }
        }
    }
}

/// Where children come from: the kernel's per-task lists, or a parent map
/// built from one bounded scan of `/proc`.
enum Children {
    Kernel,
    Scanned(HashMap<i32, Vec<i32>>),
}

impl Children {
    fn of(&self, pid: i32) -> Vec<i32> {
        match self {
            Children::Kernel => platform::proc_children(pid).unwrap_or_default(),
            Children::Scanned(m) => m.get(&pid).cloned().unwrap_or_default(),
        }
    }
}

fn children_source() -> Children {
    if platform::proc_children(platform::getpid()).is_some() {
        return Children::Kernel;
    }
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for ent in dir.flatten().take(TREE_MAX * 4) {
            let Some(pid) = ent.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(n) = platform::proc_node(pid) {
                map.entry(n.ppid).or_default().push(pid);
            }
        }
    }
    Children::Scanned(map)
}
