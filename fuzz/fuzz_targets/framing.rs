//! Line framing: bytes in arbitrary splits must give the same lines as the
//! whole input, no line holds an LF or passes the cap, and an over-long
//! line is reported instead of buffered.
#![no_main]

use archon::protocol::{Framed, LineBuffer};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 64;

fn lines(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut b = LineBuffer::new(CAP);
    let mut out = Vec::new();
    // As a client is read: at most room() bytes at a time, the lines
    // taken out between reads.
    for c in chunks {
        let mut c: &[u8] = c;
        while !c.is_empty() {
            let n = c.len().min(b.room().max(1));
            b.extend(&c[..n]);
            c = &c[n..];
            loop {
                match b.next_line() {
                    Framed::Line(l) => {
                        assert!(!l.contains(&b'\n'));
                        assert!(l.len() < CAP);
                        out.push(l);
                    }
                    Framed::TooLong => return (out, true),
                    Framed::Incomplete => break,
                }
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let (a, b) = rest.split_at(at);
    let whole = lines(&[rest]);
    let parts = lines(&[a, b]);
    // Splitting can only matter once the cap is hit.
    if !whole.1 && !parts.1 {
        assert_eq!(whole.0, parts.0);
    }
});
