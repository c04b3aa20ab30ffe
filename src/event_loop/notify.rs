//! The systemd notification socket (`NOTIFY_SOCKET`): one datagram socket
//! for every service, read under a per-pass budget. `READY=1`, `STATUS=`,
//! `STOPPING=1`, `WATCHDOG=1`/`trigger` and `MAINPID=` from a service's
//! main process or any process of its process group (systemd's
//! NotifyAccess=all, within the service).

use super::*;

impl EventLoop {
    /// The systemd notification socket, made on first need: one datagram
    /// socket in the abstract namespace for every service, with
    /// SO_PASSCRED so the kernel tells who sent each message.
    pub(super) fn ensure_notify_socket(&mut self) {
        if self.notify.is_some() {
            return;
        }
        let name = format!("archon/notify/{}", platform::getpid());
        match platform::notify_socket(&name) {
            Ok(fd) => {
                if let Err(e) = self.poll.registry().register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    Source::Notify.token(),
                    Interest::READABLE,
                ) {
                    log::warn!("cannot watch the notify socket error={e}");
                    return;
                }
                self.notify = Some(fd);
                self.notify_name = Some(format!("@{name}"));
            }
            Err(e) => log::warn!("cannot create the notify socket error={e}"),
        }
    }

    /// Reads the notify socket, at most `NOTIFY_PER_PASS` datagrams; the
    /// rest wait for the next pass (a service cannot flood the loop).
    pub(super) fn notify_event(&mut self) {
        self.reading_notify = true;
        self.read_notify();
        self.reading_notify = false;
    }

    fn read_notify(&mut self) {
        const NOTIFY_PER_PASS: usize = 64;
        for n in 0.. {
            if n == NOTIFY_PER_PASS {
                self.notify_again = true;
                return;
            }
            let Some(fd) = self.notify.as_ref() else {
                return;
            };
            let Some((pid, text)) = platform::recv_notify(fd) else {
                return;
            };
            // From the service's main process, or (systemd's
            // NotifyAccess=all, within the service) any process of its
            // process group: `sh -c` without exec, systemd-notify, a child
            // of a forking server. A sender already reaped cannot be
            // placed: said at warn, not dropped in silence.
            let entry = self.sup.find_live_pid(pid).or_else(|| {
                platform::process_group(pid)
                    .and_then(|pgid| self.sup.find_live_pid(pgid))
                    .filter(|e| self.sup.get(*e).is_some_and(|e| e.group))
            });
            let Some(mut entry) = entry else {
                log::warn!(
                    "notify message from pid={pid}, which is no service's process nor in a service's process group: ignored"
                );
                continue;
            };
            let Some((name, index)) = self.services.owner(entry) else {
                continue;
            };
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("READY", "1")) => self.own_readiness(entry),
                    Some(("STATUS", s)) => {
                        log::info!("service {name}.{index} status: {s}");
                        self.services.set_status_text(entry, s);
                    }
                    Some(("STOPPING", "1")) => {
                        log::info!("service {name}.{index} says it is stopping")
                    }
                    Some(("WATCHDOG", w @ ("1" | "trigger"))) => {
                        let now = self.now();
                        let cmds =
                            self.services
                                .keepalive(entry, w == "trigger", now.mono, now.wall);
                        self.apply_svc(cmds);
                    }
                    Some(("MAINPID", p)) => {
                        // The rest of the message is the new main's.
                        if let Some(new) = self.main_pid(entry, &name, index, p) {
                            entry = new;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// `MAINPID=N` (systemd's): the service's main process is now N, a
    /// process of the service: in its process group, a descendant of its
    /// current main process, or an orphan archon adopted (a forking
    /// server's daemon after its parent exited). archon watches N through
    /// a pidfd from then on: signals, the stop and the restart policy go
    /// by N, and the old main process may exit freely. Anything else is
    /// refused at warn.
    fn main_pid(&mut self, entry: u64, name: &str, index: u32, text: &str) -> Option<u64> {
        let refuse = |why: &str| {
            log::warn!("service {name}.{index} sent MAINPID={text}: {why}; ignored");
        };
        let Some(pid) = text.parse::<i32>().ok().filter(|p| *p > 1) else {
            refuse("not a pid");
            return None;
        };
        let old = self.sup.get(entry).map(|e| (e.pid, e.pgid, e.group))?;
        if pid == old.0 {
            return None; // already its main process
        }
        if pid == platform::getpid() || self.sup.find_live_pid(pid).is_some() {
            refuse("archon itself, or a process archon already tracks");
            return None;
        }
        let me = platform::getpid();
        let in_group = platform::process_group(pid) == Some(old.1);
        let mut descends = false;
        let mut at = pid;
        for _ in 0..64 {
            match platform::proc_node(at) {
                Some(n) if n.ppid == old.0 || (n.ppid == me && at == pid) => {
                    descends = true;
                    break;
                }
                Some(n) if n.ppid > 1 => at = n.ppid,
                _ => break,
            }
        }
        if !in_group && !descends {
            refuse("not a process of the service (its group or descendants)");
            return None;
        }
        let fd = match ProcHandle::open(pid) {
            Ok(h) => h,
            Err(e) => {
                refuse(&format!("cannot watch it: {e}"));
                return None;
            }
        };
        let now = self.now();
        let argv = platform::proc_cmdline(pid);
        let (id, fx) = self.sup.started(Kind::Service, pid, argv, None, now);
        self.apply(fx);
        // Stops go to the service's group when it has one: N's own, or
        // the group it shares with the old main.
        self.sup.set_group(id, old.2);
        self.sup.set_pgid(
            id,
            if in_group {
                old.1
            } else {
                platform::process_group(pid).unwrap_or(pid)
            },
        );
        // The old main's exit no longer ends the service, nor kills the
        // group it shares with the new one.
        if in_group {
            self.sup.set_group(entry, false);
        }
        self.watch(id, Kind::Service, fd);
        let profile = self.profile_of(Some(name));
        self.monitor_start(
            id,
            super::monitor::RingKey::Instance(name.into(), index),
            profile,
        );
        if self.services.rebind(entry, id, pid) {
            log::info!("service {name}.{index} main process is now pid={pid} (MAINPID=)");
        }
        // Gone already (exited between its message and now): the pidfd
        // is readable at once and the exit goes through as usual.
        self.process_event(id, None);
        Some(id)
    }
}
