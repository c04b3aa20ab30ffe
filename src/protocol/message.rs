//! Typed requests and replies, and their mapping to and from records.

use super::codec::{decode_record, encode_record};
use super::MAX_FIELDS;
use std::fmt;

pub const PROTOCOL_VERSION: &str = "1";

/// The stable leading token of an `Error` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    UnknownVerb,
    TooLong,
    NoSuchId,
    NoSuchProcess,
    NotRunning,
    Spawn,
    BadFd,
    Permission,
    Limit,
    ShuttingDown,
    Internal,
    NoSuchService,
    BadConfig,
    Unsupported,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::BadRequest,
        ErrorKind::UnknownVerb,
        ErrorKind::TooLong,
        ErrorKind::NoSuchId,
        ErrorKind::NoSuchProcess,
        ErrorKind::NotRunning,
        ErrorKind::Spawn,
        ErrorKind::BadFd,
        ErrorKind::Permission,
        ErrorKind::Limit,
        ErrorKind::ShuttingDown,
        ErrorKind::Internal,
        ErrorKind::NoSuchService,
        ErrorKind::BadConfig,
        ErrorKind::Unsupported,
    ];

    pub fn token(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::UnknownVerb => "unknown-verb",
            ErrorKind::TooLong => "too-long",
            ErrorKind::NoSuchId => "no-such-id",
            ErrorKind::NoSuchProcess => "no-such-process",
            ErrorKind::NotRunning => "not-running",
            ErrorKind::Spawn => "spawn",
            ErrorKind::BadFd => "bad-fd",
            ErrorKind::Permission => "permission",
            ErrorKind::Limit => "limit",
            ErrorKind::ShuttingDown => "shutting-down",
            ErrorKind::Internal => "internal",
            ErrorKind::NoSuchService => "no-such-service",
            ErrorKind::BadConfig => "bad-config",
            ErrorKind::Unsupported => "unsupported",
        }
    }

    pub fn from_token(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.token() == s)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// A command to execute: argv (no shell) and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalSpec {
    Name(String),
    Number(i32),
}

impl std::fmt::Display for SignalSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignalSpec::Name(n) => f.write_str(n),
            SignalSpec::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Run(Command),
    StartDaemon(Command),
    MonitorFd,
    MonitorPid(i32),
    Status(Option<u64>),
    /// `Status,<name>`: one service's instances.
    StatusService(String),
    /// `Tree`: archon's process tree from /proc.
    Tree,
    /// `Lookup,<hostname>`: the instances serving it now.
    Lookup(String),
    /// `Stats[,<target>[,history]]`: what monitored processes cost; the
    /// target is a service, `name.n`, or a process id.
    Stats {
        target: Option<String>,
        history: bool,
    },
    /// `Stop,<name>`: stop every instance of a service.
    StopService(String),
    Start(String),
    Restart(String),
    Scale {
        name: String,
        replicas: u32,
    },
    Reload,
    DumpConfig,
    Depend {
        name: String,
        dep: String,
    },
    Undepend {
        name: String,
        dep: String,
    },
    Stop {
        id: u64,
        grace_ms: Option<u64>,
    },
    Signal {
        id: u64,
        signal: SignalSpec,
    },
    /// `Signal,<name>,<signal>`: every running instance of a service.
    SignalService {
        name: String,
        signal: SignalSpec,
    },
    Subscribe,
    /// `Logs,<target>[,<lines>[,follow]]`: the newest lines of a service's
    /// (or an instance's) output archon keeps, then, with `follow`, new
    /// ones as they come.
    Logs {
        target: String,
        lines: u32,
        follow: bool,
    },
    Version,
    /// `Poweroff`, `Reboot`, `Halt`: an orderly shutdown, then reboot(2)
    /// when archon is init. Root only.
    Power(PowerAction),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Poweroff,
    Reboot,
    Halt,
}

impl PowerAction {
    pub fn verb(self) -> &'static str {
        match self {
            PowerAction::Poweroff => "Poweroff",
            PowerAction::Reboot => "Reboot",
            PowerAction::Halt => "Halt",
        }
    }
}

/// Every verb of v1, as spelled on the wire.
pub const VERBS: [&str; 23] = [
    "Run",
    "StartDaemon",
    "MonitorFD",
    "MonitorPid",
    "Status",
    "Tree",
    "Lookup",
    "Stats",
    "Stop",
    "Signal",
    "Subscribe",
    "Logs",
    "Version",
    "Poweroff",
    "Reboot",
    "Halt",
    "Start",
    "Restart",
    "Scale",
    "Reload",
    "DumpConfig",
    "Depend",
    "Undepend",
];

/// `Logs` without a count: as `tail`.
pub const LOGS_DEFAULT_LINES: u32 = 10;
/// The most lines one `Logs` may ask for (each instance keeps fewer).
pub const LOGS_MAX_LINES: u32 = 10_000;

/// A service name: letters, digits, '-', '_', '.', not all digits (a
/// number is a process id), at most 64 bytes.
pub fn is_service_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.bytes().all(|b| b.is_ascii_digit())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A service verb's target: `web` (the service) or `web.1` (instance 1
/// of it). A service's own name never ends in `.<digits>` (the config
/// refuses it), so the split is syntax alone, the same for every config.
pub fn split_target(t: &str) -> (&str, Option<u32>) {
    if let Some((name, idx)) = t.rsplit_once('.') {
        if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) && is_service_name(name) {
            if let Ok(i) = idx.parse() {
                return (name, Some(i));
            }
        }
    }
    (t, None)
}

/// A name a service may have: a valid name that does not read as an
/// instance target (`web.1`).
pub fn is_declarable_service_name(n: &str) -> bool {
    is_service_name(n) && split_target(n).1.is_none()
}

fn service_name(s: &str) -> ParseResult<String> {
    if is_service_name(s) {
        Ok(s.to_string())
    } else {
        Err((ErrorKind::BadRequest, format!("not a service name: {s}")))
    }
}

type ParseResult<T> = Result<T, (ErrorKind, String)>;

fn bad<T>(msg: impl Into<String>) -> ParseResult<T> {
    Err((ErrorKind::BadRequest, msg.into()))
}

fn is_env_assignment(field: &str) -> bool {
    match field.split_once('=') {
        Some((name, _)) => {
            let mut chars = name.chars();
            matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// Splits `<args>,<env>`: when an empty field is present, the last one
/// separates argv from env; otherwise the trailing run of `NAME=value`
/// fields (never the first field) is the environment.
fn parse_command(verb: &str, fields: &[String]) -> ParseResult<Command> {
    let (argv, env): (&[String], &[String]) = match fields.iter().rposition(|f| f.is_empty()) {
        Some(sep) => (&fields[..sep], &fields[sep + 1..]),
        None => {
            let mut split = fields.len();
            while split > 1 && is_env_assignment(&fields[split - 1]) {
                split -= 1;
            }
            (&fields[..split], &fields[split..])
        }
    };
    if argv.is_empty() || argv[0].is_empty() {
        return bad(format!("{verb} needs a program"));
    }
    // The canonical form always writes the separator: it must fit too, so
    // that every request archon accepts can be sent again as it encodes.
    if argv.len() + env.len() + 2 > MAX_FIELDS {
        return bad(format!(
            "more than {} fields with the separator",
            MAX_FIELDS
        ));
    }
    let mut vars = Vec::with_capacity(env.len());
    for field in env {
        if !is_env_assignment(field) {
            return bad(format!("environment field is not NAME=value: {field}"));
        }
        if let Some((k, v)) = field.split_once('=') {
            vars.push((k.to_string(), v.to_string()));
        }
    }
    Ok(Command {
        argv: argv.to_vec(),
        env: vars,
    })
}

fn parse_id(field: &str) -> ParseResult<u64> {
    match field.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => bad(format!("not a process id: {field}")),
    }
}

fn parse_grace(field: &str) -> ParseResult<u64> {
    match field.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86400.0).contains(&s) => Ok((s * 1000.0).round() as u64),
        _ => bad(format!("not a grace period in seconds: {field}")),
    }
}

fn arity(verb: &str, args: &[String], min: usize, max: usize) -> ParseResult<()> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return bad(format!("{verb} takes {want} fields, got {}", args.len()));
    }
    Ok(())
}

/// Parses one request line (LF already stripped).
pub fn parse_request(line: &[u8]) -> ParseResult<Request> {
    if line.is_empty() {
        return bad("empty request");
    }
    let fields =
        decode_record(line, MAX_FIELDS).map_err(|e| (ErrorKind::BadRequest, e.to_string()))?;
    let (verb, args) = match fields.split_first() {
        Some(x) => x,
        None => return bad("empty request"),
    };
    match verb.as_str() {
        "Run" => Ok(Request::Run(parse_command(verb, args)?)),
        "StartDaemon" => Ok(Request::StartDaemon(parse_command(verb, args)?)),
        "MonitorFD" => arity(verb, args, 0, 0).map(|_| Request::MonitorFd),
        "MonitorPid" => {
            arity(verb, args, 1, 1)?;
            match args[0].parse::<i32>() {
                Ok(pid) if pid > 0 => Ok(Request::MonitorPid(pid)),
                _ => bad(format!("not a pid: {}", args[0])),
            }
        }
        "Status" => {
            arity(verb, args, 0, 1)?;
            match args.first() {
                Some(n) if is_service_name(n) => Ok(Request::StatusService(n.clone())),
                Some(id) => Ok(Request::Status(Some(parse_id(id)?))),
                None => Ok(Request::Status(None)),
            }
        }
        "Stop" if args.len() == 1 && is_service_name(&args[0]) => {
            Ok(Request::StopService(args[0].clone()))
        }
        "Start" => {
            arity(verb, args, 1, 1)?;
            Ok(Request::Start(service_name(&args[0])?))
        }
        "Restart" => {
            arity(verb, args, 1, 1)?;
            Ok(Request::Restart(service_name(&args[0])?))
        }
        "Scale" => {
            arity(verb, args, 2, 2)?;
            let name = service_name(&args[0])?;
            match args[1].parse::<u32>() {
                Ok(n) if n <= 10_000 => Ok(Request::Scale { name, replicas: n }),
                _ => bad(format!("not a replica count (0-10000): {}", args[1])),
            }
        }
        "Reload" => arity(verb, args, 0, 0).map(|_| Request::Reload),
        "DumpConfig" => arity(verb, args, 0, 0).map(|_| Request::DumpConfig),
        "Depend" | "Undepend" => {
            arity(verb, args, 2, 2)?;
            let (name, dep) = (service_name(&args[0])?, service_name(&args[1])?);
            Ok(if verb == "Depend" {
                Request::Depend { name, dep }
            } else {
                Request::Undepend { name, dep }
            })
        }
        "Stop" => {
            arity(verb, args, 1, 2)?;
            if args.len() == 2 && args[0].parse::<u64>().is_err() && is_service_name(&args[0]) {
                return bad(format!(
                    "stopping service {} takes no grace period: its own `grace` applies",
                    args[0]
                ));
            }
            let id = parse_id(&args[0])?;
            let grace_ms = match args.get(1) {
                Some(g) => Some(parse_grace(g)?),
                None => None,
            };
            Ok(Request::Stop { id, grace_ms })
        }
        "Signal" => {
            arity(verb, args, 2, 2)?;
            let service = args[0].parse::<u64>().is_err() && is_service_name(&args[0]);
            let id = if service { 0 } else { parse_id(&args[0])? };
            let s = &args[1];
            let signal = match s.parse::<i32>() {
                Ok(n) if n > 0 => SignalSpec::Number(n),
                Ok(_) => return bad(format!("not a signal: {s}")),
                Err(_)
                    if !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-') =>
                {
                    SignalSpec::Name(s.to_ascii_uppercase())
                }
                Err(_) => return bad(format!("not a signal: {s}")),
            };
            if service {
                return Ok(Request::SignalService {
                    name: args[0].clone(),
                    signal,
                });
            }
            Ok(Request::Signal { id, signal })
        }
        "Subscribe" => arity(verb, args, 0, 0).map(|_| Request::Subscribe),
        "Tree" => arity(verb, args, 0, 0).map(|_| Request::Tree),
        "Lookup" => {
            arity(verb, args, 1, 1)?;
            if !crate::services::net::valid_hostname(&args[0]) {
                return bad(format!("Lookup: {:?} is not a host name", args[0]));
            }
            Ok(Request::Lookup(args[0].to_ascii_lowercase()))
        }
        "Stats" => {
            arity(verb, args, 0, 2)?;
            let target = match args.first() {
                None => None,
                Some(t) if t.parse::<u64>().is_ok() => Some(parse_id(t)?.to_string()),
                Some(t) => Some(service_name(t)?),
            };
            let history = match args.get(1).map(String::as_str) {
                None => false,
                Some("history") => true,
                Some(other) => return bad(format!("expected history, not {other:?}")),
            };
            Ok(Request::Stats { target, history })
        }
        "Logs" => {
            arity(verb, args, 1, 3)?;
            let target = service_name(&args[0])?;
            let lines = match args.get(1) {
                None => LOGS_DEFAULT_LINES,
                Some(n) => match n.parse::<u32>() {
                    Ok(n) if n <= LOGS_MAX_LINES => n,
                    _ => return bad(format!("not a line count (0 to {LOGS_MAX_LINES}): {n}")),
                },
            };
            let follow = match args.get(2).map(String::as_str) {
                None => false,
                Some("follow") => true,
                Some(o) => return bad(format!("expected \"follow\": {o}")),
            };
            Ok(Request::Logs {
                target,
                lines,
                follow,
            })
        }
        "Version" => arity(verb, args, 0, 0).map(|_| Request::Version),
        "Poweroff" => arity(verb, args, 0, 0).map(|_| Request::Power(PowerAction::Poweroff)),
        "Reboot" => arity(verb, args, 0, 0).map(|_| Request::Power(PowerAction::Reboot)),
        "Halt" => arity(verb, args, 0, 0).map(|_| Request::Power(PowerAction::Halt)),
        other => Err((ErrorKind::UnknownVerb, format!("unknown verb: {other}"))),
    }
}

impl Request {
    /// The verb as written on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Run(_) => "Run",
            Request::StartDaemon(_) => "StartDaemon",
            Request::MonitorFd => "MonitorFD",
            Request::MonitorPid(_) => "MonitorPid",
            Request::Status(_) | Request::StatusService(_) => "Status",
            Request::StopService(_) | Request::Stop { .. } => "Stop",
            Request::Start(_) => "Start",
            Request::Restart(_) => "Restart",
            Request::Scale { .. } => "Scale",
            Request::Reload => "Reload",
            Request::DumpConfig => "DumpConfig",
            Request::Depend { .. } => "Depend",
            Request::Undepend { .. } => "Undepend",
            Request::Signal { .. } | Request::SignalService { .. } => "Signal",
            Request::Subscribe => "Subscribe",
            Request::Tree => "Tree",
            Request::Lookup(_) => "Lookup",
            Request::Stats { .. } => "Stats",
            Request::Logs { .. } => "Logs",
            Request::Version => "Version",
            Request::Power(a) => a.verb(),
        }
    }

    /// The canonical wire form (commands always carry the explicit separator).
    pub fn encode(&self) -> String {
        let mut f: Vec<String> = Vec::new();
        let command = |f: &mut Vec<String>, verb: &str, c: &Command| {
            f.push(verb.into());
            f.extend(c.argv.iter().cloned());
            f.push(String::new());
            f.extend(c.env.iter().map(|(k, v)| format!("{k}={v}")));
        };
        match self {
            Request::Run(c) => command(&mut f, "Run", c),
            Request::StartDaemon(c) => command(&mut f, "StartDaemon", c),
            Request::MonitorFd => f.push("MonitorFD".into()),
            Request::MonitorPid(p) => f.extend(["MonitorPid".into(), p.to_string()]),
            Request::Status(id) => {
                f.push("Status".into());
                f.extend(id.map(|i| i.to_string()));
            }
            Request::StatusService(n) => f.extend(["Status".into(), n.clone()]),
            Request::StopService(n) => f.extend(["Stop".into(), n.clone()]),
            Request::Start(n) => f.extend(["Start".into(), n.clone()]),
            Request::Restart(n) => f.extend(["Restart".into(), n.clone()]),
            Request::Scale { name, replicas } => {
                f.extend(["Scale".into(), name.clone(), replicas.to_string()])
            }
            Request::Reload => f.push("Reload".into()),
            Request::DumpConfig => f.push("DumpConfig".into()),
            Request::Depend { name, dep } => f.extend(["Depend".into(), name.clone(), dep.clone()]),
            Request::Undepend { name, dep } => {
                f.extend(["Undepend".into(), name.clone(), dep.clone()])
            }
            Request::Stop { id, grace_ms } => {
                f.extend(["Stop".into(), id.to_string()]);
                if let Some(ms) = grace_ms {
                    f.push(format_seconds(*ms));
                }
            }
            Request::Signal { id, signal } => {
                f.extend(["Signal".into(), id.to_string()]);
                f.push(signal.to_string());
            }
            Request::SignalService { name, signal } => {
                f.extend(["Signal".into(), name.clone(), signal.to_string()]);
            }
            Request::Subscribe => f.push("Subscribe".into()),
            Request::Tree => f.push("Tree".into()),
            Request::Lookup(h) => f.extend(["Lookup".into(), h.clone()]),
            Request::Stats { target, history } => {
                f.push("Stats".into());
                if let Some(t) = target {
                    f.push(t.clone());
                    if *history {
                        f.push("history".into());
                    }
                }
            }
            Request::Logs {
                target,
                lines,
                follow,
            } => {
                f.extend(["Logs".into(), target.clone(), lines.to_string()]);
                if *follow {
                    f.push("follow".into());
                }
            }
            Request::Version => f.push("Version".into()),
            Request::Power(a) => f.push(a.verb().into()),
        }
        encode_record(&f)
    }
}

fn format_seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{}.{:03}", ms / 1000, ms % 1000)
    }
}

/// One row of `Status`: the process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    pub id: u64,
    pub kind: String,
    pub pid: i32,
    pub state: String,
    pub started: String,
    pub exited: String,
    pub status: String,
    pub argv: Vec<String>,
}

/// One `Event` row sent to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub time: String,
    pub id: u64,
    pub kind: String,
    pub pid: i32,
    pub state: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(Vec<String>),
    Error(ErrorKind, String),
    /// Shell-style code, and the signal's name when the process was killed.
    ExitStatus(i32, Option<String>),
    /// Rows, then a closing `Ok`.
    Table(Vec<ProcessRow>),
    /// Any rows (each a record), then a closing `Ok`.
    Rows(Vec<Vec<String>>),
    /// Rows already encoded (each ending in LF), then a closing `Ok`: big
    /// tables are encoded row by row instead of held as fields.
    Encoded(String),
}

impl Reply {
    pub fn error(kind: ErrorKind, msg: impl Into<String>) -> Reply {
        Reply::Error(kind, msg.into())
    }

    pub fn encode(&self) -> String {
        match self {
            Reply::Ok(extra) => {
                let mut f = vec!["Ok".to_string()];
                f.extend(extra.iter().cloned());
                encode_record(&f)
            }
            Reply::Error(kind, msg) => encode_record(&["Error", kind.token(), msg]),
            Reply::ExitStatus(code, sig) => {
                let mut f = vec!["ExitStatus".to_string(), code.to_string()];
                f.extend(sig.iter().cloned());
                encode_record(&f)
            }
            Reply::Table(rows) => {
                let mut out = String::new();
                for r in rows {
                    out.push_str(&r.encode());
                }
                out.push_str(&encode_record(&["Ok"]));
                out
            }
            Reply::Encoded(rows) => {
                let mut out = rows.clone();
                out.push_str(&encode_record(&["Ok"]));
                out
            }
            Reply::Rows(rows) => {
                let mut out = String::new();
                for r in rows {
                    out.push_str(&encode_record(r));
                }
                out.push_str(&encode_record(&["Ok"]));
                out
            }
        }
    }
}

impl ProcessRow {
    pub fn encode(&self) -> String {
        use std::borrow::Cow::{Borrowed, Owned};
        let mut f = Vec::with_capacity(8 + self.argv.len());
        f.extend([
            Borrowed("Process"),
            Owned(self.id.to_string()),
            Borrowed(self.kind.as_str()),
            Owned(self.pid.to_string()),
            Borrowed(self.state.as_str()),
            Borrowed(self.started.as_str()),
            Borrowed(self.exited.as_str()),
            Borrowed(self.status.as_str()),
        ]);
        f.extend(self.argv.iter().map(|a| Borrowed(a.as_str())));
        encode_record(&f)
    }
}

impl EventRow {
    pub fn encode(&self) -> String {
        encode_record(&[
            "Event".to_string(),
            self.time.clone(),
            self.id.to_string(),
            self.kind.clone(),
            self.pid.to_string(),
            self.state.clone(),
            self.status.clone(),
        ])
    }
}

/// A reply line as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyLine {
    Ok(Vec<String>),
    Error(String, String),
    ExitStatus(i32, Option<String>),
    Process(ProcessRow),
    Event(EventRow),
    /// `Service`, `ServiceEvent`, `Setting` and `Log` rows, as fields.
    Row(Vec<String>),
}

impl ReplyLine {
    pub fn decode(line: &[u8]) -> Result<ReplyLine, String> {
        let f = decode_record(line, usize::MAX).map_err(|e| e.to_string())?;
        let num = |s: &str| s.parse::<i64>().map_err(|_| format!("bad number: {s}"));
        match f.first().map(String::as_str) {
            Some("Ok") => Ok(ReplyLine::Ok(f[1..].to_vec())),
            Some("Error") if f.len() >= 2 => Ok(ReplyLine::Error(
                f[1].clone(),
                f.get(2..).map(|r| r.join(",")).unwrap_or_default(),
            )),
            Some("ExitStatus") if f.len() >= 2 => {
                Ok(ReplyLine::ExitStatus(num(&f[1])? as i32, f.get(2).cloned()))
            }
            Some("Process") if f.len() >= 8 => Ok(ReplyLine::Process(ProcessRow {
                id: num(&f[1])? as u64,
                kind: f[2].clone(),
                pid: num(&f[3])? as i32,
                state: f[4].clone(),
                started: f[5].clone(),
                exited: f[6].clone(),
                status: f[7].clone(),
                argv: f[8..].to_vec(),
            })),
            Some("Event") if f.len() >= 7 => Ok(ReplyLine::Event(EventRow {
                time: f[1].clone(),
                id: num(&f[2])? as u64,
                kind: f[3].clone(),
                pid: num(&f[4])? as i32,
                state: f[5].clone(),
                status: f[6].clone(),
            })),
            Some(
                "Service" | "ServiceEvent" | "LimitEvent" | "Setting" | "Log" | "Tree" | "Sample"
                | "Aggregate" | "Upstream" | "BreakerEvent",
            ) => Ok(ReplyLine::Row(f)),
            _ => Err(format!(
                "unrecognised reply: {}",
                String::from_utf8_lossy(line)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ParseResult<Request> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn original_form_works() {
        let r = parse("Run,/bin/echo,hello,FOO=bar").unwrap();
        assert_eq!(r.encode(), "Run,/bin/echo,hello,,FOO=bar\n");
    }

    #[test]
    fn explicit_separator_keeps_assignments_in_argv() {
        let r = parse("Run,dd,if=/dev/zero,of=/dev/null,").unwrap();
        match r {
            Request::Run(c) => {
                assert_eq!(c.argv, ["dd", "if=/dev/zero", "of=/dev/null"]);
                assert!(c.env.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn last_empty_field_separates_so_empty_args_are_expressible() {
        match parse("Run,printf,%s,,,A=1").unwrap() {
            Request::Run(c) => {
                assert_eq!(c.argv, ["printf", "%s", ""]);
                assert_eq!(c.env, [("A".to_string(), "1".to_string())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_command_at_the_field_limit_still_encodes_within_it() {
        let fields = |n: usize| {
            let mut f = vec!["Run".to_string()];
            f.extend((1..n).map(|i| format!("a{i}")));
            f.join(",")
        };
        // 1023 fields + the separator the encoding adds: fits.
        let ok = parse_request(fields(1023).as_bytes());
        let Ok(req) = ok else { panic!("{ok:?}") };
        let wire = req.encode();
        assert!(parse_request(wire.trim_end().as_bytes()).is_ok());
        assert_eq!(
            parse_request(fields(1024).as_bytes()).map_err(|e| e.0),
            Err(ErrorKind::BadRequest)
        );
    }

    #[test]
    fn errors_have_kinds() {
        assert_eq!(parse("Frob").unwrap_err().0, ErrorKind::UnknownVerb);
        assert_eq!(parse("").unwrap_err().0, ErrorKind::BadRequest);
        assert_eq!(parse("Run").unwrap_err().0, ErrorKind::BadRequest);
        assert_eq!(parse("Stop").unwrap_err().0, ErrorKind::BadRequest);
        assert_eq!(parse("Run,a,,notenv").unwrap_err().0, ErrorKind::BadRequest);
    }

    #[test]
    fn reply_lines_round_trip() {
        let row = ProcessRow {
            id: 3,
            kind: "daemon".into(),
            pid: 42,
            state: "running".into(),
            started: "1.000".into(),
            exited: String::new(),
            status: String::new(),
            argv: vec!["sleep".into(), "a, b".into()],
        };
        let wire = row.encode();
        let back = ReplyLine::decode(wire.trim_end().as_bytes()).unwrap();
        assert_eq!(back, ReplyLine::Process(row));
        let e = Reply::error(ErrorKind::NoSuchId, "no process 9").encode();
        assert_eq!(e, "Error,no-such-id,no process 9\n");
    }
}
