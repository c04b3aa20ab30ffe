//! One CSV record (RFC 4180 quoting) <-> fields. Strict where the csv crate is
//! lenient: stray or unbalanced quotes, NUL bytes and CR are errors.
//! A record never contains LF: LF ends it (see framing).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    Nul,
    CarriageReturn,
    /// Only reachable by calling the decoder directly: framing ends a
    /// record at its LF.
    LineFeed,
    NotUtf8,
    UnbalancedQuote,
    StrayQuote,
    TextAfterQuote,
    TooManyFields(usize),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Nul => write!(f, "NUL byte in request"),
            CodecError::CarriageReturn => {
                write!(f, "carriage return in request (lines end with LF alone)")
            }
            CodecError::LineFeed => write!(f, "line feed inside a record"),
            CodecError::NotUtf8 => write!(f, "request is not UTF-8"),
            CodecError::UnbalancedQuote => write!(f, "unbalanced quote"),
            CodecError::StrayQuote => write!(f, "quote inside an unquoted field"),
            CodecError::TextAfterQuote => write!(f, "text after a closing quote"),
            CodecError::TooManyFields(max) => write!(f, "more than {max} fields"),
        }
    }
}

/// Decodes one record (without its LF) into fields.
pub fn decode_record(line: &[u8], max_fields: usize) -> Result<Vec<String>, CodecError> {
    if line.contains(&0) {
        return Err(CodecError::Nul);
    }
    if line.contains(&b'\r') {
        return Err(CodecError::CarriageReturn);
    }
    if line.contains(&b'\n') {
        return Err(CodecError::LineFeed);
    }
    let text = std::str::from_utf8(line).map_err(|_| CodecError::NotUtf8)?;
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        if fields.len() == max_fields {
            return Err(CodecError::TooManyFields(max_fields));
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(CodecError::UnbalancedQuote),
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err(CodecError::TextAfterQuote),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err(CodecError::StrayQuote),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

fn needs_quotes(field: &str) -> bool {
    field.contains([',', '"', '\n', '\r'])
        || field.starts_with([' ', '\t'])
        || field.ends_with([' ', '\t'])
}

/// Encodes fields as one record followed by LF. LF and CR inside a field
/// cannot travel in v1 and are replaced by a space.
pub fn encode_record<S: AsRef<str>>(fields: &[S]) -> String {
    // Room for every field, a separator each and the LF; quoting may grow it.
    let len: usize = fields.iter().map(|f| f.as_ref().len() + 1).sum();
    let mut out = String::with_capacity(len + 2);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = field.as_ref();
        let clean: String;
        let field = if field.contains(['\n', '\r', '\0']) {
            clean = field.replace(['\n', '\r', '\0'], " ");
            &clean
        } else {
            field
        };
        if needs_quotes(field) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    // A lone empty field would be an empty line, which is not a record.
    if fields.len() == 1 && fields[0].as_ref().is_empty() {
        out.push_str("\"\"");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields() {
        let f = decode_record(br#"Run,/bin/echo,"a,b","say ""hi""",FOO=bar"#, 16).unwrap();
        assert_eq!(f, ["Run", "/bin/echo", "a,b", "say \"hi\"", "FOO=bar"]);
    }

    #[test]
    fn strictness() {
        assert_eq!(decode_record(b"a\"b", 9), Err(CodecError::StrayQuote));
        assert_eq!(decode_record(b"\"ab", 9), Err(CodecError::UnbalancedQuote));
        assert_eq!(decode_record(b"\"a\"b", 9), Err(CodecError::TextAfterQuote));
        assert_eq!(decode_record(b"a\0", 9), Err(CodecError::Nul));
        assert_eq!(decode_record(b"a\r", 9), Err(CodecError::CarriageReturn));
        assert_eq!(
            decode_record(b"a,b,c", 2),
            Err(CodecError::TooManyFields(2))
        );
    }

    #[test]
    fn round_trip_agrees_with_csv_crate() {
        let cases: &[&[&str]] = &[
            &["Ok"],
            &["a,b", " lead", "trail ", "q\"uote", "", "plain", "ünï"],
            &[""],
            &["", ""],
        ];
        for fields in cases {
            let wire = encode_record(fields);
            let back = decode_record(wire.trim_end_matches('\n').as_bytes(), 64).unwrap();
            assert_eq!(&back, fields);
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(wire.as_bytes());
            let rec = rdr.records().next().unwrap().unwrap();
            let theirs: Vec<&str> = rec.iter().collect();
            assert_eq!(&theirs, fields, "csv crate disagrees on {wire:?}");
        }
    }
}
