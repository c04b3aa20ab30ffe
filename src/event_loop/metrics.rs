//! `--metrics ADDR`: `GET /metrics` served from the loop, in Prometheus
//! text 0.0.4 or OpenMetrics 1.0 (`Accept`), by a non-blocking HTTP/1.1
//! responder (httparse for the request; one request per connection, then
//! close). Bounded like the control socket: 64 connections, 8 KiB of
//! request, 10 s per connection, 16 accepts a pass. The figures are what
//! archon already holds: service states, restart and limit counters, the
//! latest sample of each monitored instance (a scrape reads no /proc but
//! archon's own), so a scrape costs no burst of reads.

use super::*;
use crate::metrics::{Format, Kind as MKind, Writer};
use std::io::{Read, Write};

const MAX_CONNS: usize = 64;
const MAX_REQUEST: usize = 8192;
const CONN_TIMEOUT_MS: u64 = 10_000;
const ACCEPTS_PER_PASS: usize = 16;

pub(super) enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn shutdown_write(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

struct Conn {
    stream: Stream,
    input: Vec<u8>,
    /// The response, once the request is complete, and how much is sent.
    out: Option<Vec<u8>>,
    sent: usize,
    deadline: u64,
    /// The response is sent and the write side shut: what the client
    /// still sends is read and dropped until it closes (closing with
    /// unread input would reset the connection and lose the response).
    draining: bool,
}

pub(super) struct Server {
    listener: Listener,
    conns: HashMap<u64, Conn>,
    next: u64,
    /// archon's start, for `process_start_time_seconds` (wall ms).
    started_wall: u64,
    pub(super) scrapes: u64,
    /// The last rendering of each format and when (mono ms): scrapes
    /// within `REUSE_MS` of it get the same text, so 64 connections
    /// asking at once cost one rendering, not 64 (a loop that renders
    /// for every request could be kept busy by scrapers).
    cache: [Option<(u64, std::rc::Rc<str>)>; 2],
}

/// How long a rendering is served again.
const REUSE_MS: u64 = 1000;

/// Binds `--metrics`: `host:port` (`:9100` is every address; `localhost`
/// is 127.0.0.1), or a Unix socket path (anything with a `/`).
pub(super) fn bind(addr: &str, started_wall: u64) -> Result<Server, String> {
    let listener = if addr.contains('/') {
        let l = platform::bind_listener(std::path::Path::new(addr), 0o666)?;
        Listener::Unix(mio::net::UnixListener::from_std(l))
    } else {
        let spelled = if let Some(port) = addr.strip_prefix(':') {
            format!("0.0.0.0:{port}")
        } else if let Some(port) = addr.strip_prefix("localhost:") {
            format!("127.0.0.1:{port}")
        } else {
            addr.to_string()
        };
        let sa: std::net::SocketAddr = spelled
            .parse()
            .map_err(|_| format!("--metrics: not host:port or a socket path: {addr}"))?;
        let l = mio::net::TcpListener::bind(sa).map_err(|e| format!("--metrics {addr}: {e}"))?;
        Listener::Tcp(l)
    };
    Ok(Server {
        listener,
        conns: HashMap::new(),
        next: 0,
        started_wall,
        scrapes: 0,
        cache: [None, None],
    })
}

impl Server {
    pub(super) fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        let token = Source::MetricsListener.token();
        match &mut self.listener {
            Listener::Tcp(l) => registry.register(l, token, Interest::READABLE),
            Listener::Unix(l) => registry.register(l, token, Interest::READABLE),
        }
    }

    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// The bound address, for the log (and tests that ask for port 0).
    pub(super) fn local_addr(&self) -> String {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default(),
        }
    }
}

/// A whole HTTP/1.1 response that closes the connection.
fn response(status: &str, ctype: &str, extra: &str, body: &[u8], head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    out
}

fn plain(status: &str, extra: &str, text: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        extra,
        text.as_bytes(),
        false,
    )
}

/// What a request asks for, read without holding on to its bytes.
enum Asked {
    Partial,
    TooLarge,
    Bad,
    NotFound,
    NotAllowed,
    Metrics {
        head: bool,
        accept: Option<String>,
    },
    /// `GET /registry` (JSON) or `/registry/traefik`.
    Registry {
        head: bool,
        traefik: bool,
    },
    /// A line of HAProxy's agent check (`agent-send "agent <host> <port>\n"`).
    Agent(String),
}

fn parse_request(input: &[u8]) -> Asked {
    if let Some(rest) = input.strip_prefix(b"agent ") {
        return match rest.iter().position(|&b| b == b'\n') {
            Some(n) => Asked::Agent(String::from_utf8_lossy(&rest[..n]).into_owned()),
            None if input.len() >= MAX_REQUEST => Asked::TooLarge,
            None => Asked::Partial,
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(input) {
        Ok(httparse::Status::Partial) if input.len() >= MAX_REQUEST => Asked::TooLarge,
        Ok(httparse::Status::Partial) => Asked::Partial,
        // Too many headers is as good as too large.
        Err(httparse::Error::TooManyHeaders) => Asked::TooLarge,
        Err(_) => Asked::Bad,
        Ok(httparse::Status::Complete(_)) => {
            let method = req.method.unwrap_or("");
            let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
            let accept = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("accept"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string);
            match (method, path) {
                ("GET" | "HEAD", "/metrics") => Asked::Metrics {
                    head: method == "HEAD",
                    accept,
                },
                ("GET" | "HEAD", "/registry" | "/registry/traefik") => Asked::Registry {
                    head: method == "HEAD",
                    traefik: path.ends_with("/traefik"),
                },
                ("GET" | "HEAD", _) => Asked::NotFound,
                _ => Asked::NotAllowed,
            }
        }
    }
}

impl EventLoop {
    pub(super) fn metrics_accept(&mut self) {
        let now = self.now().mono;
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(m) = self.metrics.as_mut() else {
                return;
            };
            let got = match &m.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            };
            let mut stream = match got {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("metrics: accept failed error={e}");
                    return;
                }
            };
            if m.conns.len() >= MAX_CONNS {
                let _ = stream.write(&plain(
                    "503 Service Unavailable",
                    "",
                    "too many connections\n",
                ));
                continue;
            }
            let id = m.next;
            m.next += 1;
            let token = Source::MetricsConn(id).token();
            if self
                .poll
                .registry()
                .register(
                    stream.source(),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            m.conns.insert(
                id,
                Conn {
                    stream,
                    input: Vec::new(),
                    out: None,
                    sent: 0,
                    deadline: now + CONN_TIMEOUT_MS,
                    draining: false,
                },
            );
        }
        // More may wait: the next pass takes them (the edge is spent).
        self.metrics_again = true;
    }

    /// A scrape connection is readable or writable.
    pub(super) fn metrics_conn(&mut self, id: u64) {
        let Some(c) = self.metrics.as_mut().and_then(|m| m.conns.get_mut(&id)) else {
            return;
        };
        if c.draining {
            let mut buf = [0u8; 4096];
            for _ in 0..16 {
                match c.stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            // The client closed, or sends without end: done with it.
            self.metrics_close(id);
            return;
        }
        if c.out.is_none() {
            let mut buf = [0u8; 2048];
            // A client that half-closes after its request (`nc -N`, an
            // agent check) still gets its answer.
            let mut eof = false;
            loop {
                let room = MAX_REQUEST - c.input.len();
                if room == 0 {
                    break;
                }
                let n = buf.len().min(room);
                match c.stream.read(&mut buf[..n]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => c.input.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.metrics_close(id);
                        return;
                    }
                }
            }
            let asked = parse_request(&c.input);
            if eof && matches!(asked, Asked::Partial) {
                self.metrics_close(id);
                return;
            }
            let answer = match asked {
                Asked::Partial => None,
                Asked::TooLarge => Some(plain(
                    "431 Request Header Fields Too Large",
                    "",
                    "request too large\n",
                )),
                Asked::Bad => Some(plain("400 Bad Request", "", "bad request\n")),
                Asked::NotFound => Some(plain(
                    "404 Not Found",
                    "",
                    "not found: try /metrics or /registry\n",
                )),
                Asked::Agent(line) => Some(self.agent_reply(&line).into_bytes()),
                Asked::Registry { head, traefik } => {
                    let body = if traefik {
                        self.registry_traefik()
                    } else {
                        self.registry_json()
                    };
                    Some(response(
                        "200 OK",
                        "application/json",
                        "",
                        body.as_bytes(),
                        head,
                    ))
                }
                Asked::NotAllowed => Some(plain(
                    "405 Method Not Allowed",
                    "Allow: GET, HEAD\r\n",
                    "GET only\n",
                )),
                Asked::Metrics { head, accept } => {
                    let fmt = Format::negotiate(accept.as_deref());
                    let body = self.rendered(fmt);
                    Some(response(
                        "200 OK",
                        fmt.content_type(),
                        "",
                        body.as_bytes(),
                        head,
                    ))
                }
            };
            let Some(answer) = answer else {
                return;
            };
            let Some(c) = self.metrics.as_mut().and_then(|m| m.conns.get_mut(&id)) else {
                return;
            };
            c.out = Some(answer);
        }
        let Some(c) = self.metrics.as_mut().and_then(|m| m.conns.get_mut(&id)) else {
            return;
        };
        let Some(out) = &c.out else {
            return;
        };
        while c.sent < out.len() {
            match c.stream.write(&out[c.sent..]) {
                Ok(0) => break,
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.metrics_close(id);
                    return;
                }
            }
        }
        c.stream.shutdown_write();
        c.draining = true;
        // What is already waiting is read now (no new edge may come).
        self.metrics_conn(id);
    }

    fn metrics_close(&mut self, id: u64) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        if let Some(mut c) = m.conns.remove(&id) {
            let _ = self.poll.registry().deregister(c.stream.source());
        }
    }

    /// Connections past their deadline (a slow or silent client) go.
    pub(super) fn metrics_expire(&mut self) {
        let now = self.now().mono;
        let late: Vec<u64> = self
            .metrics
            .as_ref()
            .map(|m| {
                m.conns
                    .iter()
                    .filter(|(_, c)| c.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        for id in late {
            self.metrics_close(id);
        }
    }

    /// The text for `fmt`: the last rendering if it is recent, else a new one.
    fn rendered(&mut self, fmt: Format) -> std::rc::Rc<str> {
        let now = self.now().mono;
        let slot = match fmt {
            Format::Prometheus => 0,
            Format::OpenMetrics => 1,
        };
        if let Some((at, text)) = self.metrics.as_ref().and_then(|m| m.cache[slot].clone()) {
            if now.saturating_sub(at) < REUSE_MS {
                return text;
            }
        }
        let text: std::rc::Rc<str> = std::rc::Rc::from(self.render_metrics(fmt));
        if let Some(m) = self.metrics.as_mut() {
            m.cache[slot] = Some((now, text.clone()));
        }
        text
    }

    /// Every figure, in `fmt`.
    fn render_metrics(&mut self, fmt: Format) -> String {
        use crate::services::manager::RESTART_REASONS;
        let now = self.now();
        let mut w = Writer::new(fmt);
        let started = self.metrics.as_ref().map_or(0, |m| m.started_wall);
        if let Some(m) = self.metrics.as_mut() {
            m.scrapes += 1;
        }
        w.family("archon_build", MKind::Info, "archon's version.");
        w.sample(
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("protocol", crate::protocol::PROTOCOL_VERSION),
            ],
            1.0,
        );
        let own = platform::own_usage();
        if let Some(u) = &own {
            w.family(
                "process_cpu_seconds",
                MKind::Counter,
                "archon's CPU time, user and system.",
            );
            w.sample(&[], u.cpu_ns as f64 / 1e9);
            w.family(
                "process_resident_memory_bytes",
                MKind::Gauge,
                "archon's resident memory.",
            );
            w.sample(&[], u.rss_bytes as f64);
            if let Some(v) = u.vsize_bytes {
                w.family(
                    "process_virtual_memory_bytes",
                    MKind::Gauge,
                    "archon's virtual memory.",
                );
                w.sample(&[], v as f64);
            }
            if let Some(f) = u.fds {
                w.family(
                    "process_open_fds",
                    MKind::Gauge,
                    "archon's open descriptors.",
                );
                w.sample(&[], f as f64);
            }
            if let Some(f) = u.max_fds {
                w.family(
                    "process_max_fds",
                    MKind::Gauge,
                    "archon's descriptor limit.",
                );
                w.sample(&[], f as f64);
            }
        }
        w.family(
            "process_start_time_seconds",
            MKind::Gauge,
            "When archon started, Unix time.",
        );
        w.sample(&[], started as f64 / 1000.0);
        w.family(
            "archon_metrics_scrapes",
            MKind::Counter,
            "Scrapes answered.",
        );
        w.sample(&[], self.metrics.as_ref().map_or(0, |m| m.scrapes) as f64);

        // (service, instance, state, entry) of every instance, and the
        // circuit breakers' states.
        let mut inst: Vec<(String, String, SvcState, Option<u64>)> = Vec::new();
        let mut breakers: Vec<(String, String, &'static str)> = Vec::new();
        if let Ok(v) = self.services.instances(None) {
            for (n, i) in v {
                inst.push((n.to_string(), i.index.to_string(), i.state, i.entry));
                if let Some(b) = self.services.spec(n).and_then(|s| i.breaker(s)) {
                    breakers.push((n.to_string(), i.index.to_string(), b));
                }
            }
        }
        if !breakers.is_empty() {
            w.family(
                "archon_service_breaker",
                MKind::Gauge,
                "1 for the state of the instance's circuit breaker (closed, open, half-open).",
            );
            for (n, i, b) in &breakers {
                for s in ["closed", "open", "half-open"] {
                    let v = if *b == s { 1.0 } else { 0.0 };
                    w.sample(&[("service", n), ("replica", i), ("state", s)], v);
                }
            }
        }
        use crate::services::SvcState;
        const STATES: [SvcState; 8] = [
            SvcState::Stopped,
            SvcState::Starting,
            SvcState::Running,
            SvcState::Unhealthy,
            SvcState::Stopping,
            SvcState::Backoff,
            SvcState::Failed,
            SvcState::Exited,
        ];
        w.family(
            "archon_service_state",
            MKind::Gauge,
            "1 for the instance's current state, 0 for the others.",
        );
        for (n, i, st, _) in &inst {
            for s in STATES {
                let v = if *st == s { 1.0 } else { 0.0 };
                w.sample(&[("service", n), ("replica", i), ("state", s.as_str())], v);
            }
        }
        let flag = |w: &mut Writer, name: &str, help: &str, f: &dyn Fn(SvcState, bool) -> bool| {
            w.family(name, MKind::Gauge, help);
            for (n, i, st, e) in &inst {
                let v = if f(*st, e.is_some()) { 1.0 } else { 0.0 };
                w.sample(&[("service", n), ("replica", i)], v);
            }
        };
        flag(
            &mut w,
            "archon_service_up",
            "1 while the instance has a process.",
            &|_, live| live,
        );
        flag(
            &mut w,
            "archon_service_ready",
            "1 once the instance is ready (running or unhealthy).",
            &|s, _| matches!(s, SvcState::Running | SvcState::Unhealthy),
        );
        flag(
            &mut w,
            "archon_service_healthy",
            "1 while the instance is running and healthy.",
            &|s, _| s == SvcState::Running,
        );
        w.family(
            "archon_service_restarts",
            MKind::Counter,
            "Restarts since archon started, by reason (exit, signal, health, limit, manual).",
        );
        let reasons = self.services.restart_reasons();
        for (n, i, _, _) in &inst {
            let counts = i
                .parse::<u32>()
                .ok()
                .and_then(|x| reasons.get(&(n.clone(), x)))
                .copied()
                .unwrap_or_default();
            for (k, r) in RESTART_REASONS.iter().enumerate() {
                w.sample(
                    &[("service", n), ("replica", i), ("reason", r)],
                    counts[k] as f64,
                );
            }
        }
        w.family(
            "archon_probes",
            MKind::Counter,
            "Probe results (startup, readiness, liveness) since start.",
        );
        let (passed, failed) = self.probes.results;
        w.sample(&[("result", "pass")], passed as f64);
        w.sample(&[("result", "fail")], failed as f64);
        w.family(
            "archon_service_limit_events",
            MKind::Counter,
            "Firings of a service's limits, by limit.",
        );
        let mut limited: Vec<&str> = inst
            .iter()
            .map(|x| x.0.as_str())
            .filter(|n| self.services.spec(n).is_some_and(|s| s.limits.is_some()))
            .collect();
        limited.dedup();
        for n in limited {
            for l in ["memory", "cpu", "runtime"] {
                let c = self
                    .monitoring
                    .limit_events
                    .get(&(n.to_string(), l))
                    .copied()
                    .unwrap_or(0);
                w.sample(&[("service", n), ("limit", l)], c as f64);
            }
        }
        w.family(
            "archon_service_last_start_time_seconds",
            MKind::Gauge,
            "When the instance's current process started, Unix time.",
        );
        for (n, i, _, e) in &inst {
            if let Some(entry) = e.and_then(|e| self.sup.get(e)) {
                w.sample(
                    &[("service", n), ("replica", i)],
                    entry.started_wall as f64 / 1000.0,
                );
            }
        }
        self.render_samples(&mut w, &inst, now);
        w.finish()
    }

    /// The latest sample of each monitored instance.
    fn render_samples(
        &self,
        w: &mut Writer,
        inst: &[(String, String, crate::services::SvcState, Option<u64>)],
        _now: Clock,
    ) {
        // Live instances only: a stopped one's last sample is history.
        let samples: Vec<(&str, &str, &crate::monitor::Sample)> = inst
            .iter()
            .filter_map(|(n, i, _, e)| {
                let s = self.current_sample(e.as_ref()?)?;
                Some((n.as_str(), i.as_str(), s))
            })
            .collect();
        type Get = fn(&crate::monitor::Sample) -> Option<f64>;
        let families: [(&str, MKind, &str, Get); 7] = [
            (
                "archon_process_cpu_seconds",
                MKind::Counter,
                "CPU time of the instance's process.",
                |s| Some(s.raw.cpu_ns as f64 / 1e9),
            ),
            (
                "archon_process_resident_memory_bytes",
                MKind::Gauge,
                "Resident memory.",
                |s| Some(s.raw.rss_bytes as f64),
            ),
            (
                "archon_process_peak_resident_memory_bytes",
                MKind::Gauge,
                "The kernel's high-water mark of the resident memory.",
                |s| s.raw.peak_rss_bytes.map(|v| v as f64),
            ),
            (
                "archon_process_open_fds",
                MKind::Gauge,
                "Open descriptors.",
                |s| s.raw.fds.map(|v| v as f64),
            ),
            ("archon_process_threads", MKind::Gauge, "Threads.", |s| {
                s.raw.threads.map(|v| v as f64)
            }),
            (
                "archon_process_disk_read_bytes",
                MKind::Counter,
                "Bytes read from storage.",
                |s| s.raw.read_bytes.map(|v| v as f64),
            ),
            (
                "archon_process_disk_written_bytes",
                MKind::Counter,
                "Bytes written to storage.",
                |s| s.raw.write_bytes.map(|v| v as f64),
            ),
        ];
        for (name, kind, help, get) in families {
            w.family(name, kind, help);
            for (n, i, s) in &samples {
                if let Some(v) = get(s) {
                    w.sample(&[("service", n), ("replica", i)], v);
                }
            }
        }
    }
}
