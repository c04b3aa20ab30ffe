//! The spec's machine-readable vectors (`protocol/requests.tsv`,
//! `protocol/records.tsv`): reading them (also for the fuzz corpus seeds,
//! `fuzz/`), and, in tests, replaying them against the codec.

/// Undoes the vector escapes: \n \r \t \0 \\ \xHH. None for a bad
/// `\x` escape.
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let (byte, used) = match b[i + 1] {
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                b'0' => (0, 2),
                b'\\' => (b'\\', 2),
                b'x' => (u8::from_str_radix(s.get(i + 2..i + 4)?, 16).ok()?, 4),
                _ => (b'\\', 1),
            };
            out.push(byte);
            i += used;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The vector rows of a TSV file (comments left out), as columns.
pub fn rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
}

#[cfg(test)]
mod tests {
    use super::{rows, unescape as unescape_opt};
    use crate::protocol::{decode_record, encode_record, parse_request};

    fn unescape(s: &str) -> Vec<u8> {
        unescape_opt(s).unwrap_or_else(|| panic!("bad escape in {s}"))
    }

    #[test]
    fn request_vectors() {
        let text = include_str!("../../protocol/requests.tsv");
        let mut n = 0;
        for cols in rows(text) {
            assert_eq!(cols.len(), 2, "malformed vector {cols:?}");
            let input = unescape(cols[0]);
            let got = match parse_request(&input) {
                Ok(req) => req.encode().trim_end_matches('\n').to_string(),
                Err((kind, _)) => format!("!{kind}"),
            };
            assert_eq!(got, cols[1], "request {:?}", cols[0]);
            // Canonical forms parse back to themselves.
            if !got.starts_with('!') {
                let again = parse_request(got.as_bytes()).unwrap().encode();
                assert_eq!(again.trim_end_matches('\n'), got);
            }
            n += 1;
        }
        assert!(n > 40, "only {n} request vectors");
    }

    #[test]
    fn record_vectors() {
        let text = include_str!("../../protocol/records.tsv");
        let mut n = 0;
        for cols in rows(text) {
            let wire = String::from_utf8(unescape(cols[0])).unwrap();
            let fields: Vec<String> = cols[1..]
                .iter()
                .map(|f| String::from_utf8(unescape(f)).unwrap())
                .collect();
            assert_eq!(
                encode_record(&fields),
                format!("{wire}\n"),
                "encoding {fields:?}"
            );
            assert_eq!(
                decode_record(wire.as_bytes(), usize::MAX).unwrap(),
                fields,
                "decoding {wire:?}"
            );
            n += 1;
        }
        assert!(n >= 10);
    }
}
