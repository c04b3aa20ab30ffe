//! TCP and HTTP probes' connections: made without blocking, the request
//! written straight after connect() (on loopback the handshake is done by
//! then), registered for what is still to come, the reply judged after
//! each read. Six system calls a probe (BENCHMARKS.md, issue 15).

use super::*;

impl EventLoop {
    /// A probe's connection, not yet in the poll set (the first step
    /// decides what to wait for).
    pub(super) fn probe_connect(host: &str, port: u16) -> Option<mio::net::TcpStream> {
        let ip: std::net::IpAddr = host.parse().ok()?;
        mio::net::TcpStream::connect((ip, port).into()).ok()
    }

    /// Right after connect(): on loopback the handshake is done by then,
    /// so a TCP probe passes and an HTTP probe's request is written at
    /// once, without a wake-up for the first edge. A connection still
    /// being made (or a request not all written) waits for writability as
    /// well; otherwise only the reply is waited for. Nothing is read yet:
    /// the reply cannot have come before the request, and registering a
    /// readable socket (edge-triggered) reports it at once.
    pub(super) fn probe_first_step(&mut self, id: u64) {
        let Some((stream, http, connected)) = self.probes.net(id) else {
            return;
        };
        let mut interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        match http {
            // getpeername: connected, or not yet (an error shows on the
            // edge, through SO_ERROR).
            None => match stream.peer_addr() {
                Ok(_) => return self.probe_done(id, true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(_) => return self.probe_done(id, false),
            },
            // write(2) on a connection still being made says EAGAIN (or
            // ENOTCONN), on a refused one its error.
            Some(h) => match write_request(stream, h) {
                Wrote::All => {
                    *connected = true;
                    interest = mio::Interest::READABLE;
                }
                Wrote::Part => *connected = h.sent > 0,
                Wrote::Failed => return self.probe_done(id, false),
            },
        }
        if self
            .poll
            .registry()
            .register(stream, Source::Probe(id).token(), interest)
            .is_err()
        {
            self.probe_done(id, false);
        }
    }

    /// A probe's connection is ready: connected (a TCP probe passes), the
    /// request written, the reply read and judged.
    pub(in crate::event_loop) fn probe_event(&mut self, id: u64) {
        let Some((stream, http, connected)) = self.probes.net(id) else {
            return;
        };
        if !*connected {
            // An edge on a connecting socket: connected, or failed (its
            // error). The write below tells a spurious one (NotConnected).
            match stream.take_error() {
                Ok(None) => {}
                _ => return self.probe_done(id, false),
            }
            if http.is_none() {
                return match stream.peer_addr() {
                    Ok(_) => self.probe_done(id, true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(_) => self.probe_done(id, false),
                };
            }
        }
        let Some(h) = http else {
            return self.probe_done(id, true);
        };
        match write_request(stream, h) {
            Wrote::All => *connected = true,
            Wrote::Part => return,
            Wrote::Failed => return self.probe_done(id, false),
        }
        let mut buf = [0u8; 4096];
        // Bounded: the reply is read up to MAX_REPLY, in at most 16 reads a
        // pass (the rest on the next readiness); judged after each read, so
        // a complete answer needs no read for the close.
        for _ in 0..16 {
            let room = crate::services::probe::MAX_REPLY - h.reply.len();
            let ended = match io::Read::read(stream, &mut buf[..room.min(4096)]) {
                Ok(0) => true,
                Ok(n) => {
                    h.reply.extend_from_slice(&buf[..n]);
                    n == room
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => true,
            };
            if let Some(ok) = http_verdict(&h.reply, ended, h.status, h.body.as_deref()) {
                return self.probe_done(id, ok);
            }
            if ended {
                return self.probe_done(id, false);
            }
        }
    }
}

/// How far a request's write got.
enum Wrote {
    All,
    /// Not connected yet, or the socket's buffer full.
    Part,
    Failed,
}

fn write_request(stream: &mut mio::net::TcpStream, h: &mut Http) -> Wrote {
    while h.sent < h.request.len() {
        match io::Write::write(stream, &h.request[h.sent..]) {
            Ok(0) => return Wrote::Failed,
            Ok(n) => h.sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                ) =>
            {
                return Wrote::Part
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Wrote::Failed,
        }
    }
    Wrote::All
}
