//! The worker protocol's decoders, on both sides of the socketpair: frames
//! in arbitrary bytes, each message kind, and the services' records. A
//! decoded message re-encodes to one that decodes the same.
#![no_main]

use archon::protocol::worker::{FrameReader, FromWorker, ToWorker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = FrameReader::default();
    r.push(data);
    while let Ok(Some(records)) = r.next_frame() {
        if let Ok(m) = ToWorker::decode(&records) {
            let mut again = FrameReader::default();
            again.push(&m.encode());
            let recs = again.next_frame().ok().flatten().unwrap_or_default();
            assert_eq!(ToWorker::decode(&recs).ok(), Some(m));
        }
        if let Ok(m) = FromWorker::decode(&records) {
            if let FromWorker::Loaded { services, .. } = &m {
                let _ = archon::services::wire::decode(services);
            }
            let mut again = FrameReader::default();
            again.push(&m.encode());
            let recs = again.next_frame().ok().flatten().unwrap_or_default();
            assert_eq!(FromWorker::decode(&recs).ok(), Some(m));
        }
        let _ = archon::services::wire::decode(&records);
    }
});
