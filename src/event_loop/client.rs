//! One client connection: reading with fds (SCM_RIGHTS), line framing,
//! in-order reply slots and a bounded output queue.
//!
//! The bound is structural: a client whose queued output reaches
//! `OUT_HIGH` is not read from (its further requests wait in the kernel's
//! socket buffer) until it drains, and big tables are streamed row by row
//! (`Body::Stream`) as the socket takes them, so a client that reads
//! slowly gets every reply whole while archon holds at most about
//! `OUT_HIGH` plus one row for it. Only a client that reads nothing at all
//! for the stall timeout is disconnected.

use crate::protocol::{Framed, LineBuffer, MAX_LINE};
use mio::net::UnixStream;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};

/// Queued output at which archon stops reading a client's requests.
pub const OUT_HIGH: usize = 256 << 10;
/// A streamed table is generated only while less than this is queued.
pub const STREAM_LOW: usize = 64 << 10;
/// Queued events a subscriber may leave unread: events cannot wait for
/// the reader like replies can, so past this the subscriber is dropped.
pub const MAX_EVENT_BACKLOG: usize = 256 << 10;
/// Request lines taken from one client in one pass of the loop; the rest
/// wait for the next pass, after every other ready source was served.
pub const LINES_PER_PASS: usize = 32;
/// Requests a client may have in flight before archon stops reading from it.
pub const MAX_PENDING: usize = 64;
/// Room for SCM_MAX_FD (253), the most the kernel passes in one message, so
/// no fd is ever truncated away uncounted (nix cannot see fds in a truncated
/// control message, and they would leak).
const MAX_FDS: usize = 253;
/// Fds received and not yet handed to a request, at most, per client.
const MAX_QUEUED_FDS: usize = 64;
/// Bytes swallowed from a connection being closed before giving up on it.
const MAX_DISCARD: usize = 16 << 20;
/// Bytes read per recvmsg (requests are small; a long line takes several).
const READ_CHUNK: usize = 4096;

pub struct Client {
    pub stream: UnixStream,
    /// The peer's credentials (at accept), for the access rules.
    pub peer: crate::access::Peer,
    input: LineBuffer,
    /// Fds received and not yet given to a request, in arrival order, each
    /// batch with the stream offset just past the data it came with.
    fds: VecDeque<FdBatch>,
    /// Bytes received so far: the stream offset of the next byte.
    received: u64,
    out: Vec<u8>,
    slots: VecDeque<(u64, Option<Body>)>,
    next_seq: u64,
    pub subscribed: bool,
    /// Follows a service's output (`Logs,...,follow`): kept open as a
    /// subscriber is.
    pub following: bool,
    /// The peer will send nothing more (EOF or the line cap was hit).
    pub read_done: bool,
    /// Close once the output is flushed.
    pub closing: bool,
    shut: bool,
    discarded: usize,
    /// Registered for WRITABLE too (only while output is waiting).
    pub want_write: bool,
    /// In the poll: a new client is registered after its first reply has
    /// gone out (`flush_client`), which takes a system call off the time
    /// a one-shot query waits.
    pub registered: bool,
    /// This service pass may trust a short read as "the socket is drained".
    short_read_ok: bool,
    /// A short read without fds happened in this pass.
    drained: bool,
    /// Lines taken in this pass (`LINES_PER_PASS`).
    taken: usize,
    /// Reading stopped with lines possibly left in the socket (budget or
    /// output bound): the loop must come back without a new edge.
    pub unread: bool,
    /// While output waits: milliseconds (the loop's clock) of the last
    /// write progress, or of the first flush that left output waiting.
    /// The stall timer counts from it.
    pub waiting_since: Option<u64>,
    /// When the loop started closing it (`closing`): the stall timer also
    /// bounds how long a peer may keep a closing connection open.
    pub closing_since: Option<u64>,
    /// The key of this client in the loop's stall index, if any.
    pub stall_key: Option<u64>,
    /// The peer hung up: replies are discarded, the requests it sent
    /// before are still handled.
    pub peer_gone: bool,
}

/// What fills a reply slot.
pub enum Body {
    /// An encoded reply, whole.
    Text(String),
    /// A table generated row by row as the client reads it.
    Stream(super::stream::Cursor),
}

/// The fds of one `recvmsg`. The kernel ends a stream read right after a
/// segment that carries fds, so they came with the last byte of that read:
/// they belong to the request line that contains that byte.
struct FdBatch {
    end: u64,
    fds: Vec<OwnedFd>,
    /// The control message was cut short (more fds than archon accepts).
    truncated: bool,
}

/// A request line and the fds sent with it.
pub struct Request {
    pub line: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    /// More fds were sent with it than fit: the request must be refused.
    pub fds_truncated: bool,
}

pub enum ReadOutcome {
    Line(Request),
    TooLong,
    Nothing,
}

impl Client {
    pub fn new(stream: UnixStream, peer: crate::access::Peer) -> Self {
        Client {
            stream,
            peer,
            input: LineBuffer::new(MAX_LINE),
            fds: VecDeque::new(),
            received: 0,
            out: Vec::new(),
            slots: VecDeque::new(),
            next_seq: 0,
            subscribed: false,
            following: false,
            read_done: false,
            closing: false,
            shut: false,
            discarded: 0,
            want_write: false,
            registered: false,
            short_read_ok: false,
            drained: false,
            taken: 0,
            unread: false,
            waiting_since: None,
            stall_key: None,
            closing_since: None,
            peer_gone: false,
        }
    }

    /// Starts a service pass. With `edge`, a `recvmsg` that returns less
    /// than asked, with no fds, ends the pass without a second `recvmsg`
    /// to reach EAGAIN: a Unix stream socket fills the buffer from every
    /// queued segment unless one carries fds (then the read stops after
    /// it), so a short fd-less read saw an empty queue, and anything that
    /// arrives later raises a new edge. A hang-up already reported with the
    /// event (`edge` false) or any other pass reads until EAGAIN, so no EOF
    /// is missed.
    pub fn begin_service(&mut self, edge: bool) {
        self.short_read_ok = edge;
        self.drained = false;
        self.taken = 0;
    }

    /// The control-message buffer `next_request` reads into: room for
    /// MAX_FDS fds. The loop keeps one, shared by all clients (a fresh one
    /// per read was a 1 KiB calloc per request).
    pub fn cmsg_buffer() -> Vec<u8> {
        crate::platform::cmsg_buffer(MAX_FDS)
    }

    /// Room for one more request: few enough in flight, output under its
    /// bound. (The per-pass budget is `take_budget`.)
    pub fn can_take_request(&self) -> bool {
        self.slots.len() < MAX_PENDING && !self.closing && self.out.len() < OUT_HIGH
    }

    /// Counts a line against this pass's budget; false once it is spent.
    pub fn take_budget(&mut self) -> bool {
        if self.taken >= LINES_PER_PASS {
            return false;
        }
        self.taken += 1;
        true
    }

    /// Reads what the socket has (bounded by the line cap) and returns the
    /// next complete line. Call repeatedly until `Nothing`.
    #[allow(clippy::ptr_arg)] // recvmsg takes the Vec (it uses its length)
    pub fn next_request(&mut self, cmsg: &mut Vec<u8>) -> io::Result<ReadOutcome> {
        loop {
            match self.input.next_line() {
                Framed::Line(line) => {
                    let end = self.input.consumed();
                    let mut req = Request {
                        line,
                        fds: Vec::new(),
                        fds_truncated: false,
                    };
                    while self.fds.front().is_some_and(|b| b.end <= end) {
                        if let Some(b) = self.fds.pop_front() {
                            req.fds.extend(b.fds);
                            req.fds_truncated |= b.truncated;
                        }
                    }
                    return Ok(ReadOutcome::Line(req));
                }
                Framed::TooLong => return Ok(ReadOutcome::TooLong),
                Framed::Incomplete => {}
            }
            if self.read_done || self.drained {
                return Ok(ReadOutcome::Nothing);
            }
            let room = self.input.room().clamp(1, READ_CHUNK);
            let mut chunk = [0u8; READ_CHUNK];
            let buf = &mut chunk[..room];
            let mut got = Vec::new();
            let res = crate::platform::recv_with_fds(self.stream.as_fd(), buf, cmsg, &mut got);
            let n = match res {
                Ok(msg) => {
                    let mut truncated = msg.truncated;
                    let got_fds = !got.is_empty();
                    // Fds waiting for their line are bounded too: past the
                    // bound they are closed at once and their request is
                    // refused (no request takes more than 3).
                    let queued: usize = self.fds.iter().map(|b| b.fds.len()).sum();
                    if queued + got.len() > MAX_QUEUED_FDS {
                        got.clear();
                        truncated = true;
                    }
                    if got_fds || truncated {
                        self.fds.push_back(FdBatch {
                            end: self.received + msg.bytes as u64,
                            fds: got,
                            truncated,
                        });
                    }
                    self.drained = self.short_read_ok
                        && msg.bytes > 0
                        && msg.bytes < room
                        && !got_fds
                        && !truncated;
                    msg.bytes
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Nothing),
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.read_done = true;
                if !self.input.is_empty() {
                    // A last line without LF still counts as a request.
                    self.input.extend(b"\n");
                }
                continue;
            }
            self.input.extend(&chunk[..n]);
            self.received += n as u64;
        }
    }

    pub fn open_slot(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back((seq, None));
        seq
    }

    /// Fills a reply slot; replies leave in request order.
    pub fn fill_slot(&mut self, seq: u64, body: Body) {
        if let Some(slot) = self.slots.iter_mut().find(|(s, _)| *s == seq) {
            slot.1 = Some(body);
        }
        self.advance();
    }

    /// Moves finished replies at the head of the slots to the output, up
    /// to a streamed one (which `head_stream` hands out).
    fn advance(&mut self) {
        while let Some((_, Some(Body::Text(_)))) = self.slots.front() {
            if let Some((_, Some(Body::Text(text)))) = self.slots.pop_front() {
                self.out.extend_from_slice(text.as_bytes());
            }
        }
    }

    /// The streamed reply at the head of the slots, while there is room to
    /// generate more of it, with the output to append its rows to.
    pub fn head_stream(&mut self) -> Option<(&mut super::stream::Cursor, &mut Vec<u8>)> {
        if self.out.len() >= STREAM_LOW {
            return None;
        }
        match self.slots.front_mut() {
            Some((_, Some(Body::Stream(cur)))) => Some((cur, &mut self.out)),
            _ => None,
        }
    }

    /// A streamed reply is at the head of the slots.
    pub fn streaming(&self) -> bool {
        matches!(self.slots.front(), Some((_, Some(Body::Stream(_)))))
    }

    /// The head stream has written its last row.
    pub fn stream_done(&mut self) {
        self.slots.pop_front();
        self.advance();
    }

    /// Queues an event row (outside the reply order). False when the
    /// subscriber has left more than `MAX_EVENT_BACKLOG` unread.
    pub fn push_event(&mut self, text: &str) -> bool {
        if self.out.len() + text.len() > MAX_EVENT_BACKLOG {
            return false;
        }
        self.out.extend_from_slice(text.as_bytes());
        true
    }

    pub fn output_waiting(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes as much queued output as the socket takes; `now_ms` dates
    /// any progress, for the stall timer.
    pub fn flush(&mut self, now_ms: u64) -> io::Result<()> {
        if self.peer_gone {
            self.out.clear();
        }
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                    self.waiting_since = Some(now_ms);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.waiting_since.get_or_insert(now_ms);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.waiting_since = None;
        // A big reply (a Status of thousands of rows) should not keep its
        // buffer for the life of the connection.
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Done: nothing more to read or answer, and the output is flushed.
    pub fn finished(&self) -> bool {
        !self.closing
            && self.read_done
            && self.slots.is_empty()
            && self.out.is_empty()
            && !self.subscribed
            && !self.following
    }

    /// For a connection being closed after `too-long`: once the reply is
    /// out, shut down our side and swallow what the peer still sends, so it
    /// reads the reply instead of a reset. True when it may be dropped.
    pub fn drain_for_close(&mut self) -> bool {
        if !self.out.is_empty() {
            return false;
        }
        if !self.shut {
            self.shut = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut self.stream, &mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.discarded += n;
                    if self.discarded > MAX_DISCARD {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}
