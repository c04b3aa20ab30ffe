//! The protocol between archon and its Lua worker (`src/lua/`), over a
//! socketpair. Pure: bytes in, typed messages out, and back.
//!
//! A frame is a big-endian u32 length, then that many bytes of payload, at
//! most `MAX_FRAME`. A payload is a u32 count of records; a record is a u32
//! count of fields; a field is a u32 length and its bytes (binary-safe: an
//! LF, a comma or a NUL in a value is carried as it is). The first field of
//! a message's first record names the message. Text fields must be UTF-8.
//! Everything is checked on decode: a count or length past what is left is
//! an error, never an allocation of that size.
//!
//! archon -> worker (each of `Load`, `Event`, `RunDone` gets exactly one
//! reply, in order; `Service` gets none):
//!
//! | message | records |
//! | --- | --- |
//! | `Load` | `[Load, name, text, rehook(0/1)]`: evaluate a config; with rehook only its hooks are kept (the services are archon's already) |
//! | `Event` | `[Event, kind, service, instance, pid, old_state, state, status, signal, restarts, delay, time]` (empty = none) |
//! | `RunDone` | `[RunDone, callback, by, status]`: a command a hook ran has exited |
//! | `Service` | `[Service, name, instance, state, pid, restarts]`: what `archon.status()` reads |
//!
//! worker -> archon:
//!
//! | message | records |
//! | --- | --- |
//! | `Loaded` | `[Loaded, wants...]`, then the services' records (`services::wire`) |
//! | `Failed` | `[Failed]`, then `[error, text]` for each problem |
//! | `Actions` | `[Actions, wants...]`, then one record per action: `[Start, name]`, `[Stop, name]`, `[Restart, name]`, `[Scale, name, n]`, `[Signal, name, signo]`, `[SetStatus, name, text]`, `[Run, callback, by, argv...]` (callback empty: none) |
//!
//! `wants` lists the event kinds that some live hook listens for, so that
//! archon sends no event nobody would see.

/// Largest frame either side accepts (a 1 MiB config's services fit).
pub const MAX_FRAME: usize = 16 << 20;
/// Largest config file archon reads and sends.
pub const MAX_CONFIG: u64 = 1 << 20;
/// The fd the worker finds its socket on.
pub const WORKER_FD: i32 = 3;

/// The events a hook can name.
pub const EVENTS: &[&str] = &[
    "spawned",
    "ready",
    "exited",
    "restarting",
    "failed",
    "unhealthy",
    "stopping",
    "stopped",
    "scaled",
    "reloaded",
    "monitor_exited",
    "run_exited",
    "daemon_exited",
    "main_exited",
    "started",
    "shutdown",
    "limit_exceeded",
    "breaker",
];

/// One event, as hooks see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookEvent {
    /// One of `EVENTS`.
    pub kind: &'static str,
    pub service: String,
    pub instance: u32,
    pub pid: Option<i32>,
    pub old_state: String,
    pub state: String,
    /// Exit status as a shell reports it.
    pub status: Option<i32>,
    pub signal: Option<String>,
    pub restarts: u32,
    pub delay: Option<f64>,
    /// Wall time, seconds.
    pub time: f64,
    /// `limit_exceeded`: which limit (`memory`, `cpu`, `runtime`), what was
    /// measured and the threshold (bytes, percent of one CPU, seconds).
    pub limit: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
}

/// What a hook asked for, applied by archon after the event.
#[derive(Debug, Clone, PartialEq)]
pub enum HookAction {
    Start(String),
    Stop(String),
    Restart(String),
    Scale(String, u32),
    Signal(String, i32),
    SetStatus(String, String),
    /// Run a command; when it exits, archon sends `RunDone` with this
    /// callback (an id the worker gave it) and the status.
    Run {
        argv: Vec<String>,
        callback: Option<u64>,
        by: String,
    },
}

pub type Record = Vec<Vec<u8>>;

#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    Load {
        name: String,
        text: Vec<u8>,
        rehook: bool,
    },
    Event(HookEvent),
    RunDone {
        callback: u64,
        by: String,
        status: i32,
    },
    Service {
        name: String,
        instance: u32,
        state: String,
        pid: Option<i32>,
        restarts: u32,
        /// Restarts since archon started by reason, in the order of
        /// `services::manager::RESTART_REASONS` (the metrics' counters).
        by_reason: [u64; 5],
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// The services, still as records (`services::wire` decodes them).
    Loaded {
        wants: Vec<String>,
        services: Vec<Record>,
    },
    Failed(Vec<String>),
    Actions {
        wants: Vec<String>,
        actions: Vec<HookAction>,
    },
}

/// Encodes records as one frame, length prefix included.
pub fn encode_frame<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<u8> {
    // Length and record count are patched in at the end: one buffer, no
    // copy of the records.
    let mut out = vec![0u8; 8];
    let mut n = 0usize;
    for r in records {
        n += 1;
        put_u32(&mut out, r.len());
        for f in r {
            put_u32(&mut out, f.len());
            out.extend_from_slice(f);
        }
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    out
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

/// Reads a frame's payload into records.
pub fn decode_payload(mut p: &[u8]) -> Result<Vec<Record>, String> {
    fn take_u32(p: &mut &[u8]) -> Result<usize, String> {
        if p.len() < 4 {
            return Err("truncated count".into());
        }
        let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        *p = &p[4..];
        Ok(n)
    }
    let nrec = take_u32(&mut p)?;
    // Every record takes at least 4 bytes: a count past that is a lie.
    if nrec > p.len() / 4 {
        return Err("record count past the payload".into());
    }
    let mut records = Vec::with_capacity(nrec);
    for _ in 0..nrec {
        let nf = take_u32(&mut p)?;
        if nf > p.len() / 4 {
            return Err("field count past the payload".into());
        }
        let mut r = Vec::with_capacity(nf);
        for _ in 0..nf {
            let len = take_u32(&mut p)?;
            if len > p.len() {
                return Err("field length past the payload".into());
            }
            r.push(p[..len].to_vec());
            p = &p[len..];
        }
        records.push(r);
    }
    if !p.is_empty() {
        return Err("bytes after the last record".into());
    }
    Ok(records)
}

/// Bytes in, frames out; the length prefix is checked before anything is
/// buffered past it.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's records; None while incomplete; an error when
    /// the stream is broken (the peer must then be dropped).
    pub fn next_frame(&mut self) -> Result<Option<Vec<Record>>, String> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes, over {MAX_FRAME}"));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let records = decode_payload(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        records.map(Some)
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether reading on is worth it within a read-ahead of `ahead`
    /// bytes: less than that is buffered, or the first frame is not
    /// whole yet (it needs its bytes, and its length is bounded).
    pub fn wants_more(&self, ahead: usize) -> bool {
        if self.buf.len() < ahead.max(4) {
            return true;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        self.buf.len() < 4 + len.min(MAX_FRAME)
    }
}

fn text(f: &[u8]) -> Result<String, String> {
    String::from_utf8(f.to_vec()).map_err(|_| "a text field is not UTF-8".to_string())
}

fn field(r: &Record, i: usize) -> Result<&[u8], String> {
    r.get(i)
        .map(|f| f.as_slice())
        .ok_or_else(|| format!("record {:?} is short", r.first().map(|v| text(v))))
}

fn num<T: std::str::FromStr>(f: &[u8]) -> Result<T, String> {
    text(f)?
        .parse()
        .map_err(|_| format!("bad number {:?}", String::from_utf8_lossy(f)))
}

fn opt_num<T: std::str::FromStr>(f: &[u8]) -> Result<Option<T>, String> {
    if f.is_empty() {
        Ok(None)
    } else {
        num(f).map(Some)
    }
}

fn opt_str<T: ToString>(v: &Option<T>) -> Vec<u8> {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_default()
        .into_bytes()
}

fn b(s: impl AsRef<str>) -> Vec<u8> {
    s.as_ref().as_bytes().to_vec()
}

/// The `&'static str` of an event kind named on the wire.
pub fn event_kind(name: &str) -> Option<&'static str> {
    EVENTS.iter().copied().find(|e| *e == name)
}

impl ToWorker {
    pub fn encode(&self) -> Vec<u8> {
        let rec: Record = match self {
            ToWorker::Load { name, text, rehook } => vec![
                b("Load"),
                b(name),
                text.clone(),
                b(if *rehook { "1" } else { "0" }),
            ],
            ToWorker::Event(e) => vec![
                b("Event"),
                b(e.kind),
                b(&e.service),
                b(e.instance.to_string()),
                opt_str(&e.pid),
                b(&e.old_state),
                b(&e.state),
                opt_str(&e.status),
                opt_str(&e.signal),
                b(e.restarts.to_string()),
                opt_str(&e.delay),
                b(e.time.to_string()),
                opt_str(&e.limit),
                opt_str(&e.value),
                opt_str(&e.threshold),
            ],
            ToWorker::RunDone {
                callback,
                by,
                status,
            } => vec![
                b("RunDone"),
                b(callback.to_string()),
                b(by),
                b(status.to_string()),
            ],
            ToWorker::Service {
                name,
                instance,
                state,
                pid,
                restarts,
                by_reason,
            } => vec![
                b("Service"),
                b(name),
                b(instance.to_string()),
                b(state),
                opt_str(pid),
                b(restarts.to_string()),
                b(by_reason
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")),
            ],
        };
        encode_frame(&[rec])
    }

    pub fn decode(records: &[Record]) -> Result<ToWorker, String> {
        let r = records.first().ok_or("empty message")?;
        Ok(match field(r, 0)? {
            b"Load" => ToWorker::Load {
                name: text(field(r, 1)?)?,
                text: field(r, 2)?.to_vec(),
                rehook: field(r, 3)? == b"1",
            },
            b"Event" => ToWorker::Event(HookEvent {
                kind: event_kind(&text(field(r, 1)?)?).ok_or("unknown event kind")?,
                service: text(field(r, 2)?)?,
                instance: num(field(r, 3)?)?,
                pid: opt_num(field(r, 4)?)?,
                old_state: text(field(r, 5)?)?,
                state: text(field(r, 6)?)?,
                status: opt_num(field(r, 7)?)?,
                signal: Some(text(field(r, 8)?)?).filter(|s| !s.is_empty()),
                restarts: num(field(r, 9)?)?,
                delay: opt_num(field(r, 10)?)?,
                time: num(field(r, 11)?)?,
                limit: Some(text(field(r, 12)?)?).filter(|s| !s.is_empty()),
                value: opt_num(field(r, 13)?)?,
                threshold: opt_num(field(r, 14)?)?,
            }),
            b"RunDone" => ToWorker::RunDone {
                callback: num(field(r, 1)?)?,
                by: text(field(r, 2)?)?,
                status: num(field(r, 3)?)?,
            },
            b"Service" => ToWorker::Service {
                name: text(field(r, 1)?)?,
                instance: num(field(r, 2)?)?,
                state: text(field(r, 3)?)?,
                pid: opt_num(field(r, 4)?)?,
                restarts: num(field(r, 5)?)?,
                by_reason: {
                    let mut out = [0u64; 5];
                    let t = text(field(r, 6)?)?;
                    let mut it = t.split(' ');
                    for slot in out.iter_mut() {
                        *slot = it
                            .next()
                            .and_then(|n| n.parse().ok())
                            .ok_or("bad restart counts")?;
                    }
                    out
                },
            },
            other => {
                return Err(format!(
                    "unknown message {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        })
    }
}

fn wants_record(head: &str, wants: &[String]) -> Record {
    std::iter::once(b(head))
        .chain(wants.iter().map(b))
        .collect()
}

fn wants_of(r: &Record) -> Result<Vec<String>, String> {
    r[1..].iter().map(|f| text(f)).collect()
}

impl FromWorker {
    pub fn encode(&self) -> Vec<u8> {
        let mut recs: Vec<Record> = Vec::new();
        match self {
            FromWorker::Loaded { wants, services } => {
                // The services are the bulk: written without a copy.
                let head = [wants_record("Loaded", wants)];
                return encode_frame(head.iter().chain(services.iter()));
            }
            FromWorker::Failed(errors) => {
                recs.push(vec![b("Failed")]);
                recs.extend(errors.iter().map(|e| vec![b("error"), b(e)]));
            }
            FromWorker::Actions { wants, actions } => {
                recs.push(wants_record("Actions", wants));
                for a in actions {
                    recs.push(match a {
                        HookAction::Start(n) => vec![b("Start"), b(n)],
                        HookAction::Stop(n) => vec![b("Stop"), b(n)],
                        HookAction::Restart(n) => vec![b("Restart"), b(n)],
                        HookAction::Scale(n, k) => vec![b("Scale"), b(n), b(k.to_string())],
                        HookAction::Signal(n, s) => vec![b("Signal"), b(n), b(s.to_string())],
                        HookAction::SetStatus(n, t) => vec![b("SetStatus"), b(n), b(t)],
                        HookAction::Run { argv, callback, by } => {
                            let mut r = vec![b("Run"), opt_str(callback), b(by)];
                            r.extend(argv.iter().map(b));
                            r
                        }
                    });
                }
            }
        }
        encode_frame(&recs)
    }

    pub fn decode(records: &[Record]) -> Result<FromWorker, String> {
        Self::decode_owned(records.to_vec())
    }

    /// As `decode`, taking the records (a big `Loaded` is not copied).
    pub fn decode_owned(mut records: Vec<Record>) -> Result<FromWorker, String> {
        if records.is_empty() {
            return Err("empty message".into());
        }
        let rest_owned = records.split_off(1);
        let head = &records[0];
        let rest = &rest_owned[..];
        Ok(match field(head, 0)? {
            b"Loaded" => FromWorker::Loaded {
                wants: wants_of(head)?,
                services: rest_owned,
            },
            b"Failed" => FromWorker::Failed(
                rest.iter()
                    .map(|r| text(field(r, 1)?))
                    .collect::<Result<_, _>>()?,
            ),
            b"Actions" => {
                let mut actions = Vec::with_capacity(rest.len());
                for r in rest {
                    let s = |i| text(field(r, i)?);
                    actions.push(match field(r, 0)? {
                        b"Start" => HookAction::Start(s(1)?),
                        b"Stop" => HookAction::Stop(s(1)?),
                        b"Restart" => HookAction::Restart(s(1)?),
                        b"Scale" => HookAction::Scale(s(1)?, num(field(r, 2)?)?),
                        b"Signal" => HookAction::Signal(s(1)?, num(field(r, 2)?)?),
                        b"SetStatus" => HookAction::SetStatus(s(1)?, s(2)?),
                        b"Run" => {
                            let argv: Vec<String> = r
                                .iter()
                                .skip(3)
                                .map(|f| text(f))
                                .collect::<Result<_, _>>()?;
                            if argv.is_empty() {
                                return Err("Run without a command".into());
                            }
                            HookAction::Run {
                                callback: opt_num(field(r, 1)?)?,
                                by: s(2)?,
                                argv,
                            }
                        }
                        other => {
                            return Err(format!(
                                "unknown action {:?}",
                                String::from_utf8_lossy(other)
                            ))
                        }
                    });
                }
                FromWorker::Actions {
                    wants: wants_of(head)?,
                    actions,
                }
            }
            other => {
                return Err(format!(
                    "unknown message {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Vec<Record>> {
        let mut r = FrameReader::default();
        let mut out = Vec::new();
        // Byte by byte: framing must not depend on how reads split.
        for b in bytes {
            r.push(&[*b]);
            while let Ok(Some(f)) = r.next_frame() {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn every_message_round_trips_through_frames() {
        let to = [
            ToWorker::Load {
                name: "a.lua".into(),
                text: b"service \"x\" {\n cmd = {\"a,b\\n\"} }\0".to_vec(),
                rehook: true,
            },
            ToWorker::Event(HookEvent {
                kind: "exited",
                service: "web".into(),
                instance: 2,
                pid: Some(41),
                state: "exited".into(),
                status: Some(137),
                signal: Some("KILL".into()),
                delay: Some(0.25),
                time: 1234.5,
                ..Default::default()
            }),
            ToWorker::Event(HookEvent {
                kind: "started",
                ..Default::default()
            }),
            ToWorker::RunDone {
                callback: 7,
                by: "a.lua:3".into(),
                status: -1,
            },
            ToWorker::Service {
                name: "db".into(),
                instance: 0,
                state: "running".into(),
                pid: None,
                restarts: 3,
                by_reason: [1, 0, 0, 2, 0],
            },
        ];
        let bytes: Vec<u8> = to.iter().flat_map(|m| m.encode()).collect();
        let got: Vec<ToWorker> = frames(&bytes)
            .iter()
            .map(|f| ToWorker::decode(f).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(got, to);
        let from = [
            FromWorker::Loaded {
                wants: vec!["exited".into()],
                services: vec![vec![b"Service".to_vec(), b"x".to_vec()]],
            },
            FromWorker::Failed(vec!["a.lua:1: oops, with\na newline".into()]),
            FromWorker::Actions {
                wants: Vec::new(),
                actions: vec![
                    HookAction::Start("a".into()),
                    HookAction::Stop("a".into()),
                    HookAction::Restart("a".into()),
                    HookAction::Scale("a".into(), 3),
                    HookAction::Signal("a".into(), 10),
                    HookAction::SetStatus("a".into(), "x,y\n".into()),
                    HookAction::Run {
                        argv: vec!["curl".into(), "".into()],
                        callback: Some(9),
                        by: "h.lua:2".into(),
                    },
                    HookAction::Run {
                        argv: vec!["true".into()],
                        callback: None,
                        by: String::new(),
                    },
                ],
            },
        ];
        let bytes: Vec<u8> = from.iter().flat_map(|m| m.encode()).collect();
        let got: Vec<FromWorker> = frames(&bytes)
            .iter()
            .map(|f| FromWorker::decode(f).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(got, from);
    }

    #[test]
    fn the_reader_wants_more_only_within_its_read_ahead_or_for_a_whole_frame() {
        let mut r = FrameReader::default();
        assert!(r.wants_more(16));
        // A frame of 100 bytes, 20 of them here: its bytes are wanted,
        // whatever the read-ahead.
        r.push(&100u32.to_be_bytes());
        r.push(&[0; 20]);
        assert!(r.wants_more(8));
        r.push(&[0; 80]);
        // Whole: past the read-ahead, nothing more is wanted.
        assert!(!r.wants_more(8));
        assert!(r.wants_more(1000));
        // A length over the limit does not make it want without bound.
        let mut big = FrameReader::default();
        big.push(&u32::MAX.to_be_bytes());
        big.push(&vec![0; MAX_FRAME + 4]);
        assert!(!big.wants_more(8));
    }

    #[test]
    fn broken_input_is_an_error_not_a_panic_or_an_allocation() {
        let mut r = FrameReader::default();
        r.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(r.next_frame().is_err());
        // Counts and lengths past the payload.
        for payload in [
            &[0xff, 0xff, 0xff, 0xff][..],
            &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, b'x'],
            &[0, 0, 0, 0, 1],
            &[0, 0],
        ] {
            assert!(decode_payload(payload).is_err(), "{payload:?}");
        }
        let bad = |recs: Vec<Record>| {
            assert!(ToWorker::decode(&recs).is_err());
            assert!(FromWorker::decode(&recs).is_err());
        };
        bad(vec![]);
        bad(vec![vec![]]);
        bad(vec![vec![b"Nope".to_vec()]]);
        bad(vec![vec![b"Event".to_vec(), b"exited".to_vec()]]);
        assert!(ToWorker::decode(&[vec![
            b"Event".to_vec(),
            b"no-such-kind".to_vec(),
            vec![],
            b"0".to_vec(),
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            b"0".to_vec(),
            vec![],
            b"0".to_vec()
        ]])
        .is_err());
        assert!(FromWorker::decode(&[
            vec![b"Actions".to_vec()],
            vec![b"Run".to_vec(), vec![], vec![]]
        ])
        .is_err());
        assert!(FromWorker::decode(&[
            vec![b"Actions".to_vec()],
            vec![b"Scale".to_vec(), b"a".to_vec(), b"-1".to_vec()]
        ])
        .is_err());
        assert!(FromWorker::decode(&[vec![b"Loaded".to_vec(), vec![0xff]]]).is_err());
    }
}
