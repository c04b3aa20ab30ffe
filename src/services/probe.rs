//! Health probes as Kubernetes defines them (startup, readiness,
//! liveness; exec, TCP connect, HTTP GET), and the circuit breaker over
//! liveness restarts: the settings, the tally of consecutive results that
//! turns them into a verdict, and the reading of an HTTP reply. Pure; the
//! probes run in `event_loop/probes.rs`.

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Which {
    /// Gates the others, and readiness, until it passes once; failing, it
    /// restarts the instance.
    Startup,
    /// Gates `running` (dependents, the registry); failing makes the
    /// instance `unhealthy`, never restarts it.
    Readiness,
    /// Failing restarts the instance (backoff, budget, breaker).
    Liveness,
}

impl Which {
    pub const ALL: [Which; 3] = [Which::Startup, Which::Readiness, Which::Liveness];

    pub fn as_str(self) -> &'static str {
        match self {
            Which::Startup => "startup",
            Which::Readiness => "readiness",
            Which::Liveness => "liveness",
        }
    }
}

/// A port a probe connects to: one of the service's named ports, or a
/// number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Named(String),
    Number(u16),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeKind {
    /// Passes when the command exits 0 within the timeout (killed at it).
    Exec(Vec<String>),
    /// Passes when a TCP connection is made within the timeout.
    Tcp { port: PortRef, host: String },
    /// Passes when `GET path` answers a status in `status` (inclusive)
    /// and, with `body`, a body holding that text, within the timeout.
    Http {
        path: String,
        port: PortRef,
        host: String,
        status: (u16, u16),
        body: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub interval_ms: u64,
    /// The interval after a failed result (default: `interval_ms`).
    pub failing_interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failures that make it fail (Kubernetes: 3).
    pub failure_threshold: u32,
    /// Consecutive successes that make it pass (1 for startup and
    /// liveness, as Kubernetes requires).
    pub success_threshold: u32,
    /// From the spawn (or, for readiness and liveness, from the startup
    /// probe's pass) to the first probe.
    pub initial_delay_ms: u64,
}

impl Probe {
    pub fn new(kind: ProbeKind) -> Probe {
        Probe {
            kind,
            interval_ms: 10_000,
            failing_interval_ms: 10_000,
            timeout_ms: 1_000,
            failure_threshold: 3,
            success_threshold: 1,
            initial_delay_ms: 0,
        }
    }

    /// The port it connects to, if any.
    pub fn port(&self) -> Option<&PortRef> {
        match &self.kind {
            ProbeKind::Exec(_) => None,
            ProbeKind::Tcp { port, .. } | ProbeKind::Http { port, .. } => Some(port),
        }
    }
}

/// `breaker = { failures = N, cooldown = S }`: after N liveness-caused
/// restarts in a row with no liveness pass between them, the instance
/// waits `cooldown_ms` (no process, no probing: open), then gets one try
/// (half-open): a pass closes it, a failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub failures: u32,
    pub cooldown_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: 5,
            cooldown_ms: 60_000,
        }
    }
}

/// Consecutive results and the verdict they make. No verdict until a
/// threshold is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    successes: u32,
    failures: u32,
    pub verdict: Option<bool>,
    /// The latest result, for the next interval.
    pub last_ok: Option<bool>,
}

impl Tally {
    /// Records one result; returns the verdict when it changes.
    pub fn record(&mut self, ok: bool, p: &Probe) -> Option<bool> {
        self.last_ok = Some(ok);
        let (run, threshold) = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes, p.success_threshold)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures, p.failure_threshold)
        };
        if run >= threshold.max(1) && self.verdict != Some(ok) {
            self.verdict = Some(ok);
            return Some(ok);
        }
        None
    }
}

/// The most of an HTTP reply a probe reads: past it, the verdict is made
/// on what came.
pub const MAX_REPLY: usize = 64 * 1024;

/// The verdict on an HTTP reply read so far (`ended`: the peer closed,
/// or `MAX_REPLY` was reached): None while more is needed.
pub fn http_verdict(
    buf: &[u8],
    ended: bool,
    status: (u16, u16),
    body: Option<&str>,
) -> Option<bool> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return if ended { Some(false) } else { None },
        Err(_) => return Some(false),
    };
    let code = resp.code.unwrap_or(0);
    if code < status.0 || code > status.1 {
        return Some(false);
    }
    let Some(want) = body else {
        return Some(true);
    };
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let got = &buf[head..];
    let found = got.windows(want.len().max(1)).any(|w| w == want.as_bytes()) || want.is_empty();
    if found {
        return Some(true);
    }
    let complete = ended || length.is_some_and(|l| got.len() >= l);
    if complete {
        Some(false)
    } else {
        None
    }
}

/// The request an HTTP probe sends.
pub fn http_request(path: &str, host: &str, port: u16) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: archon-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        super::net::host_port(host, port)
    )
    .into_bytes()
}

fn port_text(p: &PortRef) -> String {
    match p {
        PortRef::Named(n) => n.clone(),
        PortRef::Number(n) => n.to_string(),
    }
}

fn port_of(f: &[u8]) -> Result<PortRef, String> {
    let t = super::wire::text(f)?;
    Ok(match t.parse::<u16>() {
        Ok(n) => PortRef::Number(n),
        Err(_) if super::net::valid_name(&t) => PortRef::Named(t),
        Err(_) => return Err(format!("bad probe port {t:?}")),
    })
}

/// The `probe` and `breaker` records of a spec (`services::wire`):
/// `[probe, which, interval, failing, timeout, failures, successes, delay,
/// exec, argv...]`, `[..., tcp, port, host]`, `[..., http, path, port,
/// host, lo, hi, body?]`, `[breaker, failures, cooldown]`.
pub(super) fn encode(s: &super::spec::ServiceSpec, out: &mut Vec<crate::protocol::worker::Record>) {
    use super::wire::{b, rec};
    for w in Which::ALL {
        let Some(p) = s.probe(w) else { continue };
        let mut r = rec(
            "probe",
            [
                b(w.as_str()),
                b(p.interval_ms.to_string()),
                b(p.failing_interval_ms.to_string()),
                b(p.timeout_ms.to_string()),
                b(p.failure_threshold.to_string()),
                b(p.success_threshold.to_string()),
                b(p.initial_delay_ms.to_string()),
            ],
        );
        match &p.kind {
            ProbeKind::Exec(argv) => {
                r.push(b("exec"));
                r.extend(argv.iter().map(b));
            }
            ProbeKind::Tcp { port, host } => r.extend([b("tcp"), b(port_text(port)), b(host)]),
            ProbeKind::Http {
                path,
                port,
                host,
                status,
                body,
            } => {
                r.extend([
                    b("http"),
                    b(path),
                    b(port_text(port)),
                    b(host),
                    b(status.0.to_string()),
                    b(status.1.to_string()),
                ]);
                r.extend(body.iter().map(b));
            }
        }
        out.push(r);
    }
    if let Some(k) = &s.breaker {
        out.push(rec(
            "breaker",
            [b(k.failures.to_string()), b(k.cooldown_ms.to_string())],
        ));
    }
}

/// Decodes a `probe` record into the spec.
pub(super) fn decode_probe(
    args: &[Vec<u8>],
    s: &mut super::spec::ServiceSpec,
) -> Result<(), String> {
    use super::wire::{num, text};
    let [which, interval, failing, timeout, fails, succs, delay, kind, rest @ ..] = args else {
        return Err("bad probe".into());
    };
    let kind = match (kind.as_slice(), rest) {
        (b"exec", argv) if !argv.is_empty() => {
            ProbeKind::Exec(argv.iter().map(|a| text(a)).collect::<Result<_, _>>()?)
        }
        (b"tcp", [port, host]) => ProbeKind::Tcp {
            port: port_of(port)?,
            host: text(host)?,
        },
        (b"http", [path, port, host, lo, hi, body @ ..]) if body.len() <= 1 => ProbeKind::Http {
            path: text(path)?,
            port: port_of(port)?,
            host: text(host)?,
            status: (num(lo)?, num(hi)?),
            body: body.first().map(|b| text(b)).transpose()?,
        },
        _ => return Err("bad probe kind".into()),
    };
    let p = Probe {
        kind,
        interval_ms: num(interval)?,
        failing_interval_ms: num(failing)?,
        timeout_ms: num(timeout)?,
        failure_threshold: num(fails)?,
        success_threshold: num(succs)?,
        initial_delay_ms: num(delay)?,
    };
    match which.as_slice() {
        b"startup" => s.startup = Some(p),
        b"readiness" => s.readiness = Some(p),
        b"liveness" => s.liveness = Some(p),
        _ => return Err("bad probe".into()),
    }
    Ok(())
}

pub(super) fn decode_breaker(args: &[Vec<u8>]) -> Result<Breaker, String> {
    use super::wire::num;
    let [failures, cooldown] = args else {
        return Err("bad breaker".into());
    };
    Ok(Breaker {
        failures: num(failures)?,
        cooldown_ms: num(cooldown)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(fail: u32, succ: u32) -> Probe {
        let mut p = Probe::new(ProbeKind::Exec(vec!["true".into()]));
        p.failure_threshold = fail;
        p.success_threshold = succ;
        p
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let p = probe(3, 2);
        let mut t = Tally::default();
        assert_eq!(t.record(false, &p), None);
        assert_eq!(t.record(false, &p), None);
        // A success in between resets the failures.
        assert_eq!(t.record(true, &p), None);
        assert_eq!(t.record(false, &p), None);
        assert_eq!(t.record(false, &p), None);
        assert_eq!(t.record(false, &p), Some(false));
        assert_eq!(t.record(false, &p), None, "no repeat of a verdict");
        assert_eq!(t.record(true, &p), None);
        assert_eq!(t.record(true, &p), Some(true));
        assert_eq!(t.verdict, Some(true));
        assert_eq!(t.last_ok, Some(true));
    }

    #[test]
    fn http_replies_are_judged_on_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nall ok\n";
        assert_eq!(http_verdict(ok, false, (200, 399), None), Some(true));
        assert_eq!(http_verdict(ok, false, (200, 399), Some("ok")), Some(true));
        assert_eq!(
            http_verdict(ok, false, (200, 399), Some("nope")),
            Some(false)
        );
        let err = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert_eq!(http_verdict(err, false, (200, 399), None), Some(false));
        assert_eq!(http_verdict(err, false, (500, 503), None), Some(true));
        // Half a reply: more is needed, unless the peer closed.
        assert_eq!(http_verdict(b"HTTP/1.1 20", false, (200, 399), None), None);
        assert_eq!(
            http_verdict(b"HTTP/1.1 20", true, (200, 399), None),
            Some(false)
        );
        // The body match waits for the body (no length: until the close).
        let part = b"HTTP/1.0 200 OK\r\n\r\nwarming";
        assert_eq!(http_verdict(part, false, (200, 399), Some("ready")), None);
        assert_eq!(
            http_verdict(part, true, (200, 399), Some("ready")),
            Some(false)
        );
        assert_eq!(
            http_verdict(b"garbage\r\n\r\n", false, (200, 399), None),
            Some(false)
        );
        let req = String::from_utf8(http_request("/healthz", "::1", 8080)).unwrap();
        assert!(
            req.starts_with("GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\n"),
            "{req}"
        );
    }
}
