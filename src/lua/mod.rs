//! The Lua worker: a process of its own (`archon --lua-worker`, started and
//! supervised by archon's loop, `event_loop/worker.rs`) that evaluates the
//! config and runs the hooks, so that no Lua, no pattern match and no NSS
//! look-up ever runs in PID 1's loop. It reads requests from fd 3 (a
//! socketpair) and answers each, in order (`protocol::worker`).
//!
//! The in-process sandbox (`config`: libraries, instruction budget, memory
//! limit, pcall guards) is kept as the first line; archon's wall-clock
//! deadline per call, which SIGKILLs this process, and its rlimits are the
//! second. This module is the only user of mlua.

pub mod config;
pub mod hooks;
mod net;
mod probes;
mod settings;

use crate::protocol::worker::{FrameReader, FromWorker, ToWorker, MAX_FRAME};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;

pub use crate::protocol::worker::WORKER_FD;

/// Runs the worker until archon closes its end. Returns the exit status.
pub fn worker_main() -> i32 {
    crate::platform::die_with_parent();
    crate::platform::set_process_name("archon-lua");
    // archon passes the socketpair's other end as fd 3.
    let Some(fd) = crate::platform::take_inherited_fd(WORKER_FD) else {
        log::error!("lua worker: fd {WORKER_FD} is not open (started by hand?)");
        return 2;
    };
    let mut sock = std::os::unix::net::UnixStream::from(fd);
    let snapshot: Rc<RefCell<hooks::Snapshot>> = Rc::default();
    let mut state: Option<hooks::Hooks> = None;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let records = match reader.next_frame() {
            Ok(Some(r)) => r,
            Ok(None) => match sock.read(&mut buf) {
                Ok(0) => return 0,
                Ok(n) => {
                    reader.push(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("lua worker: read failed: {e}");
                    return 1;
                }
            },
            Err(e) => {
                log::error!("lua worker: broken frame from archon: {e}");
                return 1;
            }
        };
        let msg = match ToWorker::decode(&records) {
            Ok(m) => m,
            Err(e) => {
                log::error!("lua worker: bad message from archon: {e}");
                return 1;
            }
        };
        let reply = handle(msg, &mut state, &snapshot);
        if let Some(r) = reply {
            let bytes = r.encode();
            if bytes.len() > MAX_FRAME + 4 {
                log::error!("lua worker: reply over {MAX_FRAME} bytes");
                return 1;
            }
            if sock.write_all(&bytes).is_err() {
                return 0;
            }
        }
    }
}

fn wants(state: &Option<hooks::Hooks>) -> Vec<String> {
    state.as_ref().map(|h| h.wanted()).unwrap_or_default()
}

fn handle(
    msg: ToWorker,
    state: &mut Option<hooks::Hooks>,
    snapshot: &Rc<RefCell<hooks::Snapshot>>,
) -> Option<FromWorker> {
    match msg {
        ToWorker::Load { name, text, rehook } => {
            match config::load_with_snapshot(&text, &name, snapshot.clone()) {
                Ok((cfg, hooks)) => {
                    // The new file's hooks replace the old ones: every event
                    // sent before this Load was handled by the old ones.
                    *state = hooks;
                    let mut services = Vec::new();
                    if !rehook {
                        for s in &cfg.services {
                            crate::services::wire::encode(s, &mut services);
                        }
                    }
                    Some(FromWorker::Loaded {
                        wants: wants(state),
                        services,
                    })
                }
                Err(errors) => Some(FromWorker::Failed(errors)),
            }
        }
        ToWorker::Event(ev) => {
            let actions = state.as_mut().map(|h| h.fire(&ev)).unwrap_or_default();
            Some(FromWorker::Actions {
                wants: wants(state),
                actions,
            })
        }
        ToWorker::RunDone {
            callback,
            by,
            status,
        } => {
            let actions = state
                .as_mut()
                .map(|h| h.run_done(callback, &by, status))
                .unwrap_or_default();
            Some(FromWorker::Actions {
                wants: wants(state),
                actions,
            })
        }
        ToWorker::Service {
            name,
            instance,
            state: st,
            pid,
            restarts,
            by_reason,
        } => {
            snapshot
                .borrow_mut()
                .services
                .insert((name, instance), (st, pid, restarts, by_reason));
            None
        }
    }
}
