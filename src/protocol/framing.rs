//! Line framing with a byte cap: bytes in, complete lines out. A line longer
//! than the cap is reported once and never buffered whole.

/// What the buffer holds after new bytes arrive.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A complete line, LF stripped.
    Line(Vec<u8>),
    /// The current line exceeded the cap; the connection should be closed.
    TooLong,
    /// No complete line yet.
    Incomplete,
}

#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    cap: usize,
    scanned: usize,
    overflowed: bool,
    /// Bytes handed out as lines so far, LFs included: the stream offset
    /// just past the last line returned.
    consumed: u64,
}

impl LineBuffer {
    pub fn new(cap: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            cap,
            scanned: 0,
            overflowed: false,
            consumed: 0,
        }
    }

    /// How many more bytes may be read before the cap is reached.
    pub fn room(&self) -> usize {
        if self.overflowed {
            0
        } else {
            self.cap.saturating_sub(self.buf.len())
        }
    }

    /// Appends bytes (at most `room()`; any excess marks overflow).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete line, if any.
    pub fn next_line(&mut self) -> Framed {
        if self.overflowed {
            return Framed::TooLong;
        }
        if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + pos;
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            self.consumed += line.len() as u64;
            line.pop();
            self.scanned = 0;
            if line.len() >= self.cap {
                self.overflowed = true;
                return Framed::TooLong;
            }
            return Framed::Line(line);
        }
        self.scanned = self.buf.len();
        if self.buf.len() >= self.cap {
            self.overflowed = true;
            self.buf = Vec::new();
            return Framed::TooLong;
        }
        Framed::Incomplete
    }

    /// Stream offset just past the last line returned (its LF included).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_keeps_partial() {
        let mut b = LineBuffer::new(16);
        b.extend(b"Version\nSta");
        assert_eq!(b.next_line(), Framed::Line(b"Version".to_vec()));
        assert_eq!(b.next_line(), Framed::Incomplete);
        b.extend(b"tus\n");
        assert_eq!(b.next_line(), Framed::Line(b"Status".to_vec()));
    }

    #[test]
    fn consumed_counts_stream_offsets() {
        let mut b = LineBuffer::new(16);
        b.extend(b"ab\ncd");
        assert_eq!(b.consumed(), 0);
        assert_eq!(b.next_line(), Framed::Line(b"ab".to_vec()));
        assert_eq!(b.consumed(), 3);
        b.extend(b"e\n");
        assert_eq!(b.next_line(), Framed::Line(b"cde".to_vec()));
        assert_eq!(b.consumed(), 7);
    }

    #[test]
    fn cap_is_enforced_without_lf() {
        let mut b = LineBuffer::new(8);
        b.extend(&b"x".repeat(b.room()));
        assert_eq!(b.next_line(), Framed::TooLong);
        assert_eq!(b.room(), 0);
        assert_eq!(b.next_line(), Framed::TooLong);
    }

    #[test]
    fn line_of_exactly_cap_with_lf_is_too_long() {
        let mut b = LineBuffer::new(4);
        b.extend(b"abc\n");
        assert_eq!(b.next_line(), Framed::Line(b"abc".to_vec()));
        let mut b = LineBuffer::new(4);
        b.extend(b"abcd");
        assert_eq!(b.next_line(), Framed::TooLong);
    }
}
