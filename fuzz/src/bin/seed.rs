//! Writes the fuzz corpora's seeds from the spec's vectors (protocol/*.tsv)
//! and a few worker frames: `seed DIR` makes DIR/<target>/<n>.
use archon::protocol::vectors::{rows, unescape};
use archon::protocol::worker::{FromWorker, HookAction, HookEvent, ToWorker};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let put = |target: &str, n: usize, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        std::fs::write(d.join(format!("seed-{n}")), bytes).unwrap_or_else(|e| panic!("{e}"));
    };
    let requests = include_str!("../../../protocol/requests.tsv");
    let records = include_str!("../../../protocol/records.tsv");
    for (i, cols) in rows(requests).enumerate() {
        if let Some(b) = unescape(cols[0]) {
            put("request", i, &b);
            let mut framed = vec![7u8];
            framed.extend_from_slice(&b);
            framed.push(b'\n');
            put("framing", i, &framed);
        }
    }
    for (i, cols) in rows(records).enumerate() {
        if let Some(b) = unescape(cols[0]) {
            put("record", i, &b);
        }
    }
    let ev = HookEvent {
        kind: "exited",
        service: "web".into(),
        pid: Some(3),
        status: Some(1),
        ..Default::default()
    };
    let frames = [
        ToWorker::Event(ev).encode(),
        ToWorker::Load {
            name: "a.lua".into(),
            text: b"service \"a\" { cmd = { \"x\" } }".to_vec(),
            rehook: false,
        }
        .encode(),
        FromWorker::Actions {
            wants: vec!["exited".into()],
            actions: vec![HookAction::Run {
                argv: vec!["true".into()],
                callback: Some(1),
                by: "a.lua:2".into(),
            }],
        }
        .encode(),
    ];
    for (i, f) in frames.iter().enumerate() {
        put("worker", i, f);
    }
}
