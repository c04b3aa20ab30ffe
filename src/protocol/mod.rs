//! The wire protocol (v1): typed requests and replies, the CSV record codec
//! and line framing. Pure: no I/O, nothing from mio, nix or libc.
//! `protocol/SPEC.md` at the repository root is normative; this module follows it.

mod codec;
mod framing;
mod message;
pub mod worker;

pub use codec::{decode_record, encode_record, CodecError};
pub use framing::{Framed, LineBuffer};
pub use message::{
    is_declarable_service_name, is_service_name, parse_request, split_target, Command, ErrorKind,
    EventRow, PowerAction, ProcessRow, Reply, ReplyLine, Request, SignalSpec, LOGS_DEFAULT_LINES,
    LOGS_MAX_LINES, PROTOCOL_VERSION, VERBS,
};

/// Longest accepted request line, LF included.
pub const MAX_LINE: usize = 64 * 1024;
/// Most fields in one request record.
pub const MAX_FIELDS: usize = 1024;

pub mod vectors;
