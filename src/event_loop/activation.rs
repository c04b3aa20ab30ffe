//! Socket activation proper (`autostart = "socket"`): while a service has
//! no live instance, its sockets (bound by archon, `ports.rs`) are in the
//! poll set; the first connection or datagram starts it (the connection
//! waits in the backlog for the service to accept it), and the sockets are
//! watched again once it is stopped. A failed service is not started by a
//! connection: it waits for `Start`, as any failed service.

use super::*;
use crate::services::SvcState;
use mio::unix::SourceFd;

#[derive(Default)]
pub(super) struct Activation {
    /// Armed services: token value -> (service, its sockets).
    armed: HashMap<u64, (String, Vec<RawFd>)>,
    next: u64,
}

impl EventLoop {
    /// Arms every socket-activated service that has no live instance.
    pub(super) fn activation_refresh(&mut self) {
        // (service, every instance stopped so far), in name order.
        let mut seen: Vec<(String, bool)> = Vec::new();
        for (name, inst) in self.services.instances(None).unwrap_or_default() {
            if !self.services.spec(name).is_some_and(|s| s.socket_activated) {
                continue;
            }
            let stopped = inst.state == SvcState::Stopped;
            match seen.last_mut() {
                Some((n, all)) if n == name => *all &= stopped,
                _ => seen.push((name.to_string(), stopped)),
            }
        }
        let idle: Vec<String> = seen.into_iter().filter(|s| s.1).map(|s| s.0).collect();
        for name in idle {
            if self.activation.armed.values().any(|(n, _)| *n == name) {
                continue;
            }
            let Some(spec) = self.services.spec(&name).cloned() else {
                continue;
            };
            let fds = match self.endpoints.sockets_of(&spec) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("service {name}: cannot bind its sockets for activation: {e}");
                    continue;
                }
            };
            let id = self.activation.next;
            self.activation.next += 1;
            let token = Source::Activate(id).token();
            for fd in &fds {
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut SourceFd(fd), token, mio::Interest::READABLE)
                {
                    log::warn!("service {name}: cannot watch its sockets: {e}");
                }
            }
            log::debug!("service {name}: waiting for a connection on its sockets");
            self.activation.armed.insert(id, (name, fds));
        }
    }

    /// Takes every armed service's sockets out of the poll set (before
    /// sockets may be closed: an fd number can be reused).
    pub(super) fn activation_disarm_all(&mut self) {
        for (_, (_, fds)) in self.activation.armed.drain() {
            for fd in &fds {
                let _ = self.poll.registry().deregister(&mut SourceFd(fd));
            }
        }
    }

    /// A connection (or datagram) on an armed service's socket: start it.
    pub(super) fn activation_event(&mut self, id: u64) {
        let Some((name, fds)) = self.activation.armed.remove(&id) else {
            return;
        };
        for fd in &fds {
            let _ = self.poll.registry().deregister(&mut SourceFd(fd));
        }
        if self.shutting_down {
            return;
        }
        log::info!("service {name}: a connection on its sockets starts it");
        let now = self.now();
        match self.services.start(&name, now.mono, now.wall) {
            Ok(cmds) => self.apply_svc(cmds),
            Err(e) => log::warn!("service {name}: cannot start on a connection: {e}"),
        }
    }
}
