//! The strict RFC 4180 record codec: what decodes re-encodes to something
//! that decodes to the same fields.
#![no_main]

use archon::protocol::{decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = decode_record(data, 1024) {
        let wire = encode_record(&fields);
        let again = decode_record(wire.trim_end_matches('\n').as_bytes(), 1024)
            .unwrap_or_else(|e| panic!("re-encoding {fields:?} gave {wire:?}: {e:?}"));
        assert_eq!(again, fields);
    }
});
