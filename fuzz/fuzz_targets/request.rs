//! The request parser: any line gives a request or an error, never a
//! panic; a request's canonical form parses back to itself.
#![no_main]

use archon::protocol::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        let wire = req.encode();
        let again = parse_request(wire.trim_end_matches('\n').as_bytes())
            .unwrap_or_else(|e| panic!("{wire:?} does not parse back: {e:?}"));
        assert_eq!(again.encode(), wire);
    }
});
