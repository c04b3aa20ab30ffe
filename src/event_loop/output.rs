//! Services' output: their pipes (read line by line, never blocking the
//! loop), archon's stdout and stderr as bounded non-blocking sinks, and log
//! files rotated by size. s6 readiness pipes are read here too.

use super::*;
use std::os::fd::AsFd;

/// Output waiting for a slow sink before archon stops reading services'
/// pipes (they are then throttled by their own pipe, not by our memory).
const SINK_CAP: usize = 256 * 1024;

/// A line longer than this is cut and written in pieces.
const MAX_LOG_LINE: usize = 16 * 1024;

pub(super) enum PipeKind {
    /// Output, written line by line with a prefix to archon's stdout or
    /// stderr (`err`), or to a log file (`file`: its path).
    Log {
        prefix: String,
        buf: Vec<u8>,
        err: bool,
        file: Option<String>,
        /// The instance whose output it is, for its ring (`logs.rs`).
        owner: (std::rc::Rc<str>, u32),
    },
    /// s6 readiness: a newline means ready.
    Ready { entry: u64 },
}

pub(super) struct Pipe {
    pub fd: OwnedFd,
    pub kind: PipeKind,
}

/// A service's log file, rotated by size. Regular files do not block.
pub(super) struct FileLog {
    path: String,
    file: Option<std::fs::File>,
    size: u64,
    max_size: u64,
    keep: u32,
    /// Lines dropped since the file last took a write whole.
    lost: u64,
}

impl FileLog {
    pub(super) fn open(path: &str, max_size: u64, keep: u32) -> io::Result<FileLog> {
        let mut f = FileLog {
            path: path.to_string(),
            file: None,
            size: 0,
            max_size,
            keep,
            lost: 0,
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(file);
        Ok(())
    }

    /// `path` -> `path.1` -> ... -> `path.keep` (the oldest goes).
    fn rotate(&mut self) {
        self.file = None;
        self.size = 0;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(
                    format!("{}.{i}", self.path),
                    format!("{}.{}", self.path, i + 1),
                );
            }
            let _ = std::fs::rename(&self.path, format!("{}.1", self.path));
        }
        if let Err(e) = self.reopen() {
            log::warn!("cannot reopen log file path={} error={e}", self.path);
        }
    }

    /// Whole lines only, so a rotation never splits one; a batch is cut
    /// at line ends so no file grows past `max_size` (unless one line
    /// alone is longer).
    fn write(&mut self, mut lines: &[u8]) {
        while !lines.is_empty() {
            let room = self.max_size.saturating_sub(self.size) as usize;
            // The longest run of whole lines that fits.
            let fit = match lines.get(..room.min(lines.len())) {
                Some(head) if head.len() == lines.len() => lines.len(),
                Some(head) => head.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1),
                None => 0,
            };
            if fit == 0 {
                if self.size > 0 {
                    self.rotate();
                    continue;
                }
                // One line longer than a whole file: it goes in alone.
                let end = lines
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(lines.len(), |p| p + 1);
                self.append(&lines[..end]);
                lines = &lines[end..];
                continue;
            }
            self.append(&lines[..fit]);
            lines = &lines[fit..];
        }
    }

    /// Appends whole lines. When the file cannot take them all (a full
    /// filesystem), what was written of a line is cut off again, so the
    /// file holds whole lines only, and the lines lost are counted: logged
    /// at the first loss, at every power of two, and when writing works
    /// again.
    fn append(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let mut done = 0;
        let mut error = None;
        match self.file.as_mut() {
            Some(f) => {
                while done < bytes.len() {
                    match f.write(&bytes[done..]) {
                        Ok(0) => {
                            error = Some(io::Error::from(io::ErrorKind::WriteZero));
                            break;
                        }
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                if done < bytes.len() {
                    let whole = bytes[..done]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                    if whole < done {
                        let _ = f.set_len(self.size + whole as u64);
                    }
                    done = whole;
                }
            }
            None => error = Some(io::Error::from(io::ErrorKind::NotFound)),
        }
        self.size += done as u64;
        if done == bytes.len() {
            if self.lost > 0 {
                log::warn!(
                    "log file writable again path={} lines_lost={}",
                    self.path,
                    self.lost
                );
                self.lost = 0;
            }
            return;
        }
        let rest = &bytes[done..];
        let lines =
            rest.iter().filter(|&&b| b == b'\n').count() as u64 + u64::from(!rest.ends_with(b"\n"));
        let before = self.lost;
        self.lost += lines;
        if before == 0 || (before + 1..=self.lost).any(u64::is_power_of_two) {
            let e = error.map(|e| e.to_string()).unwrap_or_default();
            log::warn!(
                "cannot write log file path={} error={e} lines_lost={}",
                self.path,
                self.lost
            );
        }
    }
}

/// archon's stdout or stderr as a non-blocking writer with a bounded queue.
pub(super) struct Sink {
    _fd: Option<OwnedFd>,
    raw: RawFd,
    /// A socket (journald's stream): written with MSG_DONTWAIT, as its
    /// description cannot be made non-blocking without reaching its other
    /// holders.
    socket: bool,
    queue: Vec<u8>,
    watching: bool,
}

impl Sink {
    /// A private, non-blocking open file description of fd 1 or 2 when the
    /// kernel gives one (/proc reopen works for pipes, ttys and files), so
    /// O_NONBLOCK does not leak to other holders of the same description.
    /// Sockets: the fd itself, each send with MSG_DONTWAIT.
    /// Regular files are written as they are: they do not block, and a
    /// second description would write at its own offset over the first's.
    pub(super) fn open(fd: RawFd) -> Sink {
        let reopened = platform::is_pipe_or_tty(fd)
            .then(|| platform::reopen_nonblocking(fd))
            .flatten();
        let raw = reopened.as_ref().map_or(fd, |f| f.as_raw_fd());
        Sink {
            _fd: reopened,
            raw,
            socket: platform::is_socket(fd),
            queue: Vec::new(),
            watching: false,
        }
    }

    pub(super) fn full(&self) -> bool {
        self.queue.len() >= SINK_CAP
    }

    /// Writes what it can; the rest waits for writability.
    fn flush(&mut self) {
        while !self.queue.is_empty() {
            let sent = if self.socket {
                platform::send_nonblocking(self.raw, &self.queue)
            } else {
                platform::write_fd(self.raw, &self.queue)
            };
            match sent {
                Ok(n) if n > 0 => {
                    self.queue.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A closed or broken log: drop what cannot be written.
                _ => {
                    self.queue.clear();
                    return;
                }
            }
        }
    }
}

impl EventLoop {
    pub(super) fn add_pipe(&mut self, fd: OwnedFd, kind: PipeKind) {
        let token = self.next_pipe;
        self.next_pipe += 1;
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            Source::Pipe(token).token(),
            Interest::READABLE,
        ) {
            log::warn!("cannot watch a service pipe error={e}");
            return;
        }
        self.pipes.insert(token, Pipe { fd, kind });
        // Anything written before registration is picked up by the edge
        // that registration raises.
    }

    /// A service pipe is readable (or was paused and may be read again).
    /// At most `READS_PER_PASS` reads; the rest waits for the next pass,
    /// after the other sources (a service writing without pause cannot
    /// hold the loop).
    pub(super) fn pipe_event(&mut self, token: u64) {
        const READS_PER_PASS: usize = 8;
        let mut buf = [0u8; 16 * 1024];
        for reads in 0.. {
            let Some(p) = self.pipes.get_mut(&token) else {
                return;
            };
            if reads == READS_PER_PASS {
                self.pipes_again.insert(token);
                return;
            }
            if let PipeKind::Log {
                err, file: None, ..
            } = p.kind
            {
                let sink = if err { &self.sink_err } else { &self.sink_out };
                if sink.full() {
                    // Leave it in the pipe: the service blocks on it.
                    self.paused.insert(token);
                    return;
                }
            }
            let n = match platform::read_fd(p.fd.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.close_pipe(token);
                    return;
                }
            };
            if n == 0 {
                self.close_pipe(token);
                return;
            }
            let data = &buf[..n];
            match &mut p.kind {
                PipeKind::Ready { entry } => {
                    if data.contains(&b'\n') {
                        let entry = *entry;
                        self.close_pipe(token);
                        self.own_readiness(entry);
                        return;
                    }
                }
                PipeKind::Log {
                    prefix,
                    buf: line,
                    err,
                    file,
                    owner,
                } => {
                    line.extend_from_slice(data);
                    let mut out = Vec::new();
                    // Where each line starts in `out`, past its prefix.
                    let mut kept = Vec::new();
                    let mut start = 0;
                    while let Some(pos) = line[start..].iter().position(|&b| b == b'\n') {
                        out.extend_from_slice(prefix.as_bytes());
                        kept.push(out.len()..out.len() + pos);
                        out.extend_from_slice(&line[start..start + pos + 1]);
                        start += pos + 1;
                    }
                    line.drain(..start);
                    if line.len() >= MAX_LOG_LINE {
                        out.extend_from_slice(prefix.as_bytes());
                        kept.push(out.len()..out.len() + line.len());
                        out.append(line);
                        out.push(b'\n');
                    }
                    let (err, file, owner) = (*err, file.clone(), owner.clone());
                    for r in kept {
                        self.keep_line(&owner.0, owner.1, err, &out[r]);
                    }
                    self.deliver(err, file.as_deref(), &out);
                }
            }
            self.prune_rings();
        }
    }

    pub(super) fn close_pipe(&mut self, token: u64) {
        self.paused.remove(&token);
        self.pipes_again.remove(&token);
        if let Some(mut p) = self.pipes.remove(&token) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&p.fd.as_raw_fd()));
            // The last line without its newline is still a line.
            if let PipeKind::Log {
                prefix,
                buf,
                err,
                file,
                owner,
            } = &mut p.kind
            {
                if !buf.is_empty() {
                    let (err, file, owner) = (*err, file.clone(), owner.clone());
                    self.keep_line(&owner.0, owner.1, err, buf);
                    let mut out = prefix.as_bytes().to_vec();
                    out.append(buf);
                    out.push(b'\n');
                    self.deliver(err, file.as_deref(), &out);
                }
            }
        }
    }

    /// Complete lines to their destination: a log file, or a sink.
    pub(super) fn deliver(&mut self, err: bool, file: Option<&str>, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        if let Some(path) = file {
            if let Some(log) = self.file_logs.get_mut(path) {
                log.write(lines);
                return;
            }
        }
        let sink = if err {
            &mut self.sink_err
        } else {
            &mut self.sink_out
        };
        sink.queue.extend_from_slice(lines);
        self.flush_sink(err);
    }

    /// Writes a sink; watches it for writability while output waits, and
    /// resumes paused pipes once it has room.
    pub(super) fn flush_sink(&mut self, err: bool) {
        let (sink, token) = if err {
            (&mut self.sink_err, Source::SinkErr.token())
        } else {
            (&mut self.sink_out, Source::SinkOut.token())
        };
        sink.flush();
        let want = !sink.queue.is_empty();
        if want != sink.watching {
            let raw = sink.raw;
            let res = if want {
                self.poll
                    .registry()
                    .register(&mut SourceFd(&raw), token, Interest::WRITABLE)
            } else {
                self.poll.registry().deregister(&mut SourceFd(&raw))
            };
            match res {
                Ok(()) => sink.watching = want,
                // A regular file cannot be polled; it does not block either.
                Err(_) if want => {
                    sink.flush();
                }
                Err(_) => sink.watching = false,
            }
        }
        if !sink.full() && !self.paused.is_empty() {
            let paused: Vec<u64> = std::mem::take(&mut self.paused).into_iter().collect();
            for t in paused {
                self.pipe_event(t);
            }
        }
    }
}
