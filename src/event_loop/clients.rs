//! Serving clients: accepting, reading requests under a per-pass budget,
//! streaming and flushing replies, the stall timer, dropping.
//!
//! Fairness is structural: a client gives at most `LINES_PER_PASS` lines
//! per pass and is then served again on the next pass (after every other
//! ready source), and it is not read at all while its output is over
//! `OUT_HIGH` or it has `MAX_PENDING` requests in flight. A client whose
//! output has made no progress for the client timeout is disconnected.

use super::client::{Body, Client, ReadOutcome};
use super::*;

/// Connections kept for admins (root, archon's uid) when others fill up.
const ADMIN_RESERVE: usize = 256;
/// Connections one uid that is not an admin may hold at once.
const PER_UID: usize = 256;
/// Connections accepted in one pass at most: a flood of connects waits in
/// the listen backlog instead of holding the loop.
const ACCEPTS_PER_PASS: usize = 64;

impl EventLoop {
    pub(super) fn accept_all(&mut self) {
        let accept = |me: &Self| me.listener.as_ref().map(|l| l.accept());
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(res) = accept(self) else {
                return;
            };
            match res {
                Ok((stream, _)) => self.add_client(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if platform::is_fd_exhaustion(&e) => {
                    // Free the reserve fd, take the connection and refuse it,
                    // so the pending queue drains instead of waking us forever.
                    // (Linux reports EMFILE before looking at the queue, so
                    // an empty queue shows up only once the reserve is free.)
                    self.reserve_fd = None;
                    match accept(self) {
                        Some(Ok((mut s, _))) => {
                            use std::io::Write;
                            let reply = Reply::error(ErrorKind::Limit, "out of file descriptors");
                            let _ = s.write(reply.encode().as_bytes());
                            log::warn!("out of file descriptors; refused a connection");
                        }
                        _ => {
                            self.reserve_fd = reserve();
                            return;
                        }
                    }
                    self.reserve_fd = reserve();
                    if self.reserve_fd.is_none() {
                        // drop_client retries once a descriptor is free.
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("accept failed error={e}");
                    return;
                }
            }
        }
        // The budget is spent and the listener (edge-triggered) may hold
        // more: the next pass goes on without waiting for a new edge.
        self.accept_again = true;
    }

    fn add_client(&mut self, mut stream: mio::net::UnixStream) {
        let mut peer = platform::peer_credentials(&stream).unwrap_or(crate::access::Peer {
            uid: u32::MAX,
            gid: u32::MAX,
            groups: Vec::new(),
        });
        // Admins always find room: other uids share all but the last
        // `ADMIN_RESERVE` connections, at most `PER_UID` each.
        let admin = self.policy.is_admin(&peer);
        if !admin {
            // For group grants and commands run as the peer.
            peer.groups = platform::peer_groups(&stream);
        }
        let full = if admin {
            self.clients.len() >= MAX_CLIENTS
        } else {
            self.clients.len() >= MAX_CLIENTS - ADMIN_RESERVE
                || self.conns_by_uid.get(&peer.uid).copied().unwrap_or(0) >= PER_UID
        };
        if full {
            use std::io::Write;
            let _ = stream.write(
                Reply::error(ErrorKind::Limit, "too many connections")
                    .encode()
                    .as_bytes(),
            );
            return;
        }
        let cid = self.next_client;
        self.next_client += 1;
        let refused = !self.policy.may_connect(&peer);
        log::debug!("client connected client={cid} uid={}", peer.uid);
        if !admin {
            *self.conns_by_uid.entry(peer.uid).or_insert(0) += 1;
        }
        let mut c = Client::new(stream, peer);
        if refused {
            // Answered once and closed like a client after `too-long`: what
            // it sent is swallowed (bounded) so it reads the reason rather
            // than a reset.
            log::warn!("refused a connection uid={} gid={}", c.peer.uid, c.peer.gid);
            let msg = format!(
                "uid {} may not use this socket (see --allow in archon(8))",
                c.peer.uid
            );
            let seq = c.open_slot();
            c.closing = true;
            c.fill_slot(
                seq,
                Body::Text(Reply::error(ErrorKind::Permission, msg).encode()),
            );
            self.clients.insert(cid, c);
            self.flush_client(cid);
            return;
        }
        self.clients.insert(cid, c);
        // Registered (edge-triggered) after this first read and reply
        // (`flush_client`), so a short read means drained: what comes
        // later is seen by the registration.
        self.service_client(cid, true);
    }

    pub(super) fn drop_client(&mut self, cid: u64, why: &str) {
        if let Some(c) = self.clients.remove(&cid) {
            if let Some(n) = self.conns_by_uid.get_mut(&c.peer.uid) {
                *n -= 1;
                if *n == 0 {
                    self.conns_by_uid.remove(&c.peer.uid);
                }
            }
            self.subscribers.remove(&cid);
            self.followers.remove(&cid);
            self.again.remove(&cid);
            if let Some(k) = c.stall_key {
                self.stalls.remove(&(k, cid));
            }
            log::debug!("client gone client={cid} reason={why}");
            // Not deregistered: closing the socket (dropping `c`) removes it
            // from epoll and kqueue alike, since no other descriptor refers
            // to it (archon's fds are close-on-exec and a client's socket
            // is never passed on), and saves a system call per connection.
            drop(c);
            let now = self.now();
            let fx = self.sup.client_gone(cid, self.opts.grace_ms, now);
            self.apply(fx);
            if self.reserve_fd.is_none() && !self.shutting_down {
                self.reserve_fd = reserve();
                // Connections may have queued while no reserve was held.
                self.accept_all();
            }
        }
    }

    /// A readiness event of a client's socket.
    pub(super) fn client_event(&mut self, cid: u64, hung_up: bool, read_closed: bool) {
        if hung_up {
            // Requests sent before the hang-up are still handled (over as
            // many passes as their number takes); the replies have nowhere
            // to go.
            if let Some(c) = self.clients.get_mut(&cid) {
                c.peer_gone = true;
            }
            self.service_client(cid, false);
        } else {
            self.service_client(cid, !read_closed);
        }
    }

    /// Reads and handles requests while the client may send more, within
    /// this pass's budget, then flushes. `edge` is true when a readable
    /// event without a hang-up brought us here: then a short read may
    /// stand for "drained" (see `Client::next_request`).
    pub(super) fn service_client(&mut self, cid: u64, edge: bool) {
        if let Some(c) = self.clients.get_mut(&cid) {
            c.begin_service(edge);
        }
        loop {
            let Some(c) = self.clients.get_mut(&cid) else {
                return;
            };
            if !c.can_take_request() {
                // Picked up again when a slot or output room frees up
                // (`flush_client`).
                c.unread = true;
                break;
            }
            if !c.take_budget() {
                c.unread = true;
                self.again.insert(cid);
                break;
            }
            match c.next_request(&mut self.cmsg_buf) {
                Ok(ReadOutcome::Line(req)) => {
                    log::trace!(
                        "request client={cid} line={:?}",
                        String::from_utf8_lossy(&req.line)
                    );
                    self.handle_line(cid, req);
                }
                Ok(ReadOutcome::TooLong) => {
                    let seq = c.open_slot();
                    c.closing = true;
                    c.fill_slot(
                        seq,
                        Body::Text(
                            Reply::error(
                                ErrorKind::TooLong,
                                format!("request line over {} bytes", crate::protocol::MAX_LINE),
                            )
                            .encode(),
                        ),
                    );
                    log::warn!("client sent an over-long line client={cid}");
                    break;
                }
                Ok(ReadOutcome::Nothing) => {
                    c.unread = false;
                    break;
                }
                Err(e) => {
                    self.drop_client(cid, &format!("read error: {e}"));
                    return;
                }
            }
        }
        self.flush_client(cid);
    }

    /// Generates streamed rows while there is room, writes what the socket
    /// takes, keeps the write interest and the stall timer in step, and
    /// closes the client when it is done or misbehaving.
    pub(super) fn flush_client(&mut self, cid: u64) {
        let now = self.now();
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        let flushed = loop {
            while let Some((cursor, out)) = c.head_stream() {
                if cursor.fill(out, &self.sup, &self.services, now) {
                    out.extend_from_slice(b"Ok\n");
                    c.stream_done();
                }
            }
            if let Err(e) = c.flush(now.mono) {
                break Err(e);
            }
            if c.output_waiting() || !c.streaming() {
                break Ok(());
            }
        };
        if let Err(e) = flushed {
            self.drop_client(cid, &format!("write error: {e}"));
            return;
        }
        // WRITABLE interest only while output waits: no wake-up per reply.
        let want = c.output_waiting();
        if want != c.want_write || !c.registered {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Source::Client(cid).token();
            let registry = self.poll.registry();
            // Edge-triggered, and registering looks at the socket as it is
            // now: whatever came after the reads so far raises an event.
            let res = if c.registered {
                registry.reregister(&mut c.stream, token, interest)
            } else {
                registry.register(&mut c.stream, token, interest)
            };
            match res {
                Ok(()) => {
                    c.registered = true;
                    c.want_write = want;
                }
                Err(e) if !c.registered => {
                    log::warn!("cannot register client={cid} error={e}");
                    self.drop_client(cid, "not registered");
                    return;
                }
                Err(e) => log::warn!("cannot reregister client={cid} error={e}"),
            }
        }
        let since = if c.closing {
            Some(*c.closing_since.get_or_insert(now.mono))
        } else {
            c.waiting_since
        };
        let key = since.map(|t| t.saturating_add(self.opts.client_timeout_ms));
        if key != c.stall_key {
            if let Some(k) = c.stall_key {
                self.stalls.remove(&(k, cid));
            }
            if let Some(k) = key {
                self.stalls.insert((k, cid));
            }
            c.stall_key = key;
        }
        if c.unread && c.can_take_request() {
            self.again.insert(cid);
        }
        if c.closing {
            if c.drain_for_close() {
                self.drop_client(cid, "closed after an error");
            }
        } else if c.peer_gone && c.read_done && !c.unread {
            self.drop_client(cid, "hung up");
        } else if c.finished() {
            self.drop_client(cid, "done");
        }
    }

    pub(super) fn reply_to(&mut self, to: ReplyTo, reply: &Reply) {
        if let Some(c) = self.clients.get_mut(&to.client) {
            c.fill_slot(to.seq, Body::Text(reply.encode()));
        }
        // A slot freed may let a back-pressured client go on; that happens
        // on the next pass, not here (no recursion, whatever the client
        // pipelined).
        self.flush_client(to.client);
    }

    /// Sends a pre-encoded line to every subscriber; one that has left
    /// `MAX_EVENT_BACKLOG` unread is dropped (events cannot wait).
    pub(super) fn announce(&mut self, text: &str) {
        let subs: Vec<u64> = self.subscribers.iter().copied().collect();
        for cid in subs {
            let kept = self.clients.get_mut(&cid).map(|c| c.push_event(text));
            if kept == Some(false) {
                log::warn!("subscriber does not read its events; disconnecting client={cid}");
                self.drop_client(cid, "event backlog over limit");
                continue;
            }
            self.flush_client(cid);
        }
    }

    /// Disconnects the clients whose output made no progress for the
    /// client timeout.
    pub(super) fn expire_stalled(&mut self) {
        if self.stalls.is_empty() {
            return;
        }
        let now = self.now().mono;
        while let Some(&(deadline, cid)) = self.stalls.first() {
            if deadline > now {
                break;
            }
            self.stalls.remove(&(deadline, cid));
            if let Some(c) = self.clients.get_mut(&cid) {
                c.stall_key = None;
            }
            log::warn!(
                "client does not read its replies; disconnecting client={cid} timeout_ms={}",
                self.opts.client_timeout_ms
            );
            self.drop_client(cid, "stalled");
        }
    }

    /// Serves once more the clients that had requests left unread.
    pub(super) fn serve_again(&mut self) {
        for cid in std::mem::take(&mut self.again) {
            if self.clients.get(&cid).is_some_and(|c| c.can_take_request()) {
                self.service_client(cid, false);
            }
        }
    }
}
