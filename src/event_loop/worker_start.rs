//! Starting the Lua worker: its process (rlimits, fd 3), the blocking
//! first exchange at start-up (before the loop runs, with a deadline), and
//! `archon --check`. The running worker is `worker.rs`'s.

use super::worker::{Lua, Worker};
use super::*;
use crate::protocol::worker::{FrameReader, FromWorker, ToWorker};
use std::io::{Read, Write};

/// The worker's address-space limit (Lua's own limits are far below it).
const WORKER_AS: u64 = 1 << 30;
/// The worker's CPU time limit, in seconds, over its whole life.
const WORKER_CPU_SECS: u64 = 3600;
/// Reads a config file, bounded (the worker evaluates it).
pub(super) fn read_config(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let f = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut text = Vec::new();
    f.take(crate::protocol::worker::MAX_CONFIG + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    if text.len() as u64 > crate::protocol::worker::MAX_CONFIG {
        return Err(format!(
            "{shown}: larger than {} bytes",
            crate::protocol::worker::MAX_CONFIG
        ));
    }
    Ok(text)
}

/// What starting a worker takes from the loop.
pub(super) struct Spawner<'a> {
    pub env: &'a Env,
    pub nofile: platform::Rlimit,
    pub ignored: &'a [i32],
    /// /dev/null, the worker's stdin and stdout.
    pub stdin: RawFd,
}

/// Starts a worker process; returns it and archon's end of the socket
/// (blocking, close-on-exec).
pub(super) fn spawn_worker(
    sp: &Spawner,
) -> Result<(std::os::unix::net::UnixStream, ProcHandle), String> {
    let Spawner {
        env,
        nofile,
        ignored,
        stdin,
    } = *sp;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let (envp, _) = env
        .envp(false, std::iter::empty())
        .map_err(|_| "environment".to_string())?;
    let level = log::max_level().to_string().to_lowercase();
    let argv =
        platform::to_cstrings(["archon-lua", "--lua-worker", level.as_str()]).ok_or("argv")?;
    let program = platform::self_exe().map_err(|e| format!("archon's own executable: {e}"))?;
    let mut spec = platform::SpawnSpec::new(
        program,
        argv,
        envp,
        [stdin, stdin, 2],
        nofile,
        ignored.to_vec(),
    );
    spec.extra_fds = vec![(theirs.as_raw_fd(), crate::protocol::worker::WORKER_FD)];
    let lim = platform::Rlimit::both;
    let res = |name| platform::rlimit_resource(name).ok_or(format!("no RLIMIT for {name}"));
    spec.rlimits = vec![
        (res("as")?, lim(WORKER_AS)),
        // Cumulative CPU: a worker that has burnt an hour of CPU on hooks
        // is ended (SIGKILL at the hard limit) and a fresh one takes over;
        // per call, the wall-clock deadline is the bound.
        (res("cpu")?, lim(WORKER_CPU_SECS)),
        (res("core")?, lim(0)),
        (res("nofile")?, lim(64)),
    ];
    let spawned =
        platform::spawn(&spec).map_err(|e| format!("cannot start the Lua worker: {e}"))?;
    drop(theirs);
    Ok((ours, spawned))
}

/// Writes one frame and reads one reply, blocking, within `deadline_ms`:
/// for start-up only, before the loop runs.
fn exchange(
    sock: &mut std::os::unix::net::UnixStream,
    msg: &ToWorker,
    deadline_ms: u64,
) -> Result<FromWorker, String> {
    let start = Instant::now();
    sock.write_all(&msg.encode())
        .map_err(|e| format!("lua worker: {e}"))?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(recs) = reader.next_frame()? {
            return FromWorker::decode_owned(recs);
        }
        let left = Duration::from_millis(deadline_ms).saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "the config's evaluation did not finish within {} s",
                deadline_ms / 1000
            ));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match sock.read(&mut buf) {
            Ok(0) => return Err("the Lua worker died evaluating the config".into()),
            Ok(n) => reader.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("lua worker: {e}")),
        }
    }
}

/// Start-up: evaluates the config in a worker and returns its services, and
/// the worker when the config registers hooks (None: no worker stays).
pub(super) fn boot(
    poll: &Poll,
    exits: &mut platform::ExitWatch,
    path: &std::path::Path,
    deadline_ms: u64,
    spawner: &Spawner,
) -> Result<(crate::services::spec::Config, Lua), String> {
    let text = read_config(path)?;
    let name = path.display().to_string();
    let (mut sock, spawned) = spawn_worker(spawner)?;
    let load = ToWorker::Load {
        name: name.clone(),
        text: text.clone(),
        rehook: false,
    };
    let kill = |sp: &ProcHandle| {
        let _ = sp.signal(sig::KILL);
    };
    let reply = exchange(&mut sock, &load, deadline_ms).inspect_err(|_| kill(&spawned))?;
    let (wants, records) = match reply {
        FromWorker::Loaded { wants, services } => (wants, services),
        FromWorker::Failed(errors) => {
            kill(&spawned);
            return Err(errors.join("\n"));
        }
        FromWorker::Actions { .. } => {
            kill(&spawned);
            return Err("lua worker: unexpected reply".into());
        }
    };
    let config = decoded_config(&records).inspect_err(|_| kill(&spawned))?;
    let mut lua = Lua::default();
    lua.good = Some((name, text));
    lua.has_hooks = !wants.is_empty();
    if lua.has_hooks {
        let mut w = Worker::register(poll, exits, sock, spawned, 0)?;
        w.wants = wants.into_iter().collect();
        lua.worker = Some(w);
    } else {
        // The config registers no hook: nothing stays resident. (Closing
        // the socket ends it; the SIGCHLD reaper collects it.)
        kill(&spawned);
    }
    Ok((config, lua))
}

/// `archon --check --config FILE`: the file evaluated as at start-up (in
/// a worker, with the deadline); a line saying what it declares, or every
/// error. The exit status: 0 or 1.
pub fn check(path: &std::path::Path, deadline_ms: u64, nofile: platform::Rlimit) -> i32 {
    let run = || -> Result<String, String> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let env = Env::from_process();
        let ignored = platform::ignored_signals();
        let dev_null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        let spawner = Spawner {
            env: &env,
            nofile,
            ignored: &ignored,
            stdin: dev_null.as_raw_fd(),
        };
        let mut exits = platform::ExitWatch::new().map_err(|e| format!("exit watch: {e}"))?;
        let (config, mut lua) = boot(&poll, &mut exits, path, deadline_ms, &spawner)?;
        let wants: Vec<String> = lua
            .worker
            .take()
            .map(|w| {
                let _ = w.proc.signal(sig::KILL);
                let _ = platform::reap_pid(w.proc.pid());
                w.wants.into_iter().collect()
            })
            .unwrap_or_default();
        let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        Ok(format!(
            "{}: ok: {} services ({}); hooks on: {}",
            path.display(),
            names.len(),
            names.join(" "),
            if wants.is_empty() {
                "none".to_string()
            } else {
                wants.join(" ")
            }
        ))
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Services from a `Loaded` reply, checked on this side too.
pub(super) fn decoded_config(
    records: &[crate::protocol::worker::Record],
) -> Result<crate::services::spec::Config, String> {
    let services = crate::services::wire::decode(records)
        .map_err(|e| format!("lua worker: bad services: {e}"))?;
    let config = crate::services::spec::Config { services };
    let errs = config.validate();
    if errs.is_empty() {
        Ok(config)
    } else {
        Err(errs.join("\n"))
    }
}
