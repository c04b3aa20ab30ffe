//! Big replies streamed as the client reads them: `Status` (process rows,
//! then service rows), `Status,<service>` and `DumpConfig`. A `Cursor`
//! remembers where the table was left; the loop asks it for more rows only
//! while the client's output is under `client::STREAM_LOW`, so a table of
//! any size costs archon about one chunk per client. Rows are read from
//! the live tables as they are sent: a row changed meanwhile is sent as it
//! is then (each row is consistent; the table as a whole is not a
//! snapshot).

use crate::platform;
use crate::protocol::encode_record;
use crate::services::spec::{Output, Readiness, ServiceSpec};
use crate::services::{Services, SvcState};
use crate::supervisor::{Clock, Supervisor};

/// Rows generated per step, between checks of the output's size.
const ROWS_PER_STEP: usize = 64;

/// Where a streamed table was left.
pub enum Cursor {
    /// Process rows from this id on; then the service rows, with `services`.
    Processes { from: u64, services: bool },
    /// Service rows of `only` (or of every service) from (name, position).
    Services {
        only: Option<String>,
        from: Option<(String, usize)>,
    },
    /// `DumpConfig` rows, one service at a time, from this name.
    Settings { from: String },
}

impl Cursor {
    pub fn status_all() -> Cursor {
        Cursor::Processes {
            from: 0,
            services: true,
        }
    }

    /// Appends the next rows to `out`; true when the table is done (the
    /// caller then closes it with `Ok`).
    pub fn fill(
        &mut self,
        out: &mut Vec<u8>,
        sup: &Supervisor,
        svcs: &Services,
        now: Clock,
    ) -> bool {
        match self {
            Cursor::Processes { from, services } => {
                let next = sup.rows_from(*from, ROWS_PER_STEP, |r| {
                    out.extend_from_slice(r.encode().as_bytes())
                });
                match next {
                    Some(id) => *from = id,
                    None if *services => {
                        *self = Cursor::Services {
                            only: None,
                            from: None,
                        }
                    }
                    None => return true,
                }
                false
            }
            Cursor::Services { only, from } => {
                let at = from.as_ref().map(|(n, p)| (n.as_str(), *p));
                let next = svcs.instances_from(only.as_deref(), at, ROWS_PER_STEP, |name, i| {
                    let breaker = svcs.spec(name).and_then(|s| i.breaker(s));
                    out.extend_from_slice(service_row(name, i, breaker, now).as_bytes())
                });
                match next {
                    Ok(Some(n)) => {
                        *from = Some(n);
                        false
                    }
                    // A service removed meanwhile ends its table.
                    Ok(None) | Err(_) => true,
                }
            }
            Cursor::Settings { from } => {
                let mut specs = svcs.specs_from(from);
                for _ in 0..ROWS_PER_STEP / 16 {
                    let Some(s) = specs.next() else {
                        return true;
                    };
                    let mut text = String::new();
                    setting_rows(s, svcs, &mut text);
                    out.extend_from_slice(text.as_bytes());
                }
                match specs.next() {
                    Some(s) => {
                        *from = s.name.clone();
                        false
                    }
                    None => true,
                }
            }
        }
    }
}

/// One `Service` row.
fn service_row(
    name: &str,
    i: &crate::services::Instance,
    breaker: Option<&str>,
    now: Clock,
) -> String {
    let row = [
        "Service".to_string(),
        name.to_string(),
        i.index.to_string(),
        i.state.as_str().to_string(),
        i.pid.map(|p| p.to_string()).unwrap_or_default(),
        fmt_millis(i.since_wall),
        i.restarts.to_string(),
        fmt_millis(i.delay_ms),
        i.next_attempt
            .filter(|_| i.state == SvcState::Backoff)
            .map(|t| fmt_millis(now.wall + t.saturating_sub(now.mono)))
            .unwrap_or_default(),
        i.last_exit
            .as_ref()
            .map(|e| e.describe())
            .unwrap_or_default(),
        i.status_text.clone(),
        breaker.unwrap_or_default().to_string(),
    ];
    encode_record(&row)
}

/// `DumpConfig`: one row per setting of a service.
/// A list (a command's argv) takes one field per element, so that it
/// reads back exactly; other values are one field.
fn setting_rows(s: &ServiceSpec, services: &Services, out: &mut String) {
    let mut put_all = |k: &str, values: &[&str]| {
        let mut f = vec!["Setting", s.name.as_str(), k];
        f.extend_from_slice(values);
        out.push_str(&encode_record(&f));
    };
    let argv = |head: &[String], argv: &[String]| -> Vec<String> {
        head.iter().chain(argv).cloned().collect()
    };
    let cmd: Vec<&str> = s.cmd.iter().map(String::as_str).collect();
    put_all("cmd", &cmd);
    let ready = match &s.ready {
        Readiness::Exec => vec!["exec".to_string()],
        Readiness::Fd(n) => vec!["fd".to_string(), n.to_string()],
        Readiness::Notify => vec!["notify".to_string()],
        Readiness::Command {
            argv: a,
            interval_ms,
        } => argv(&["command".into(), fmt_millis(*interval_ms)], a),
    };
    put_all(
        "ready",
        &ready.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    if let Some(h) = &s.health {
        let health = argv(&["command".into(), fmt_millis(h.interval_ms)], &h.argv);
        put_all(
            "health",
            &health.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    for p in &s.ports {
        let port = p.port.map_or("auto".into(), |n| n.to_string());
        let bind = match p.bind {
            crate::services::net::PortBind::Archon => "archon",
            crate::services::net::PortBind::Service => "service",
        };
        put_all("port", &[&p.name, &port, &p.address, bind]);
    }
    for k in &s.sockets {
        let backlog = k.backlog.to_string();
        let mut f = vec![
            k.name.clone(),
            k.kind.as_str().into(),
            k.kind.target().into(),
            backlog,
        ];
        if let crate::services::net::SocketKind::Unix { mode, uid, gid, .. } = &k.kind {
            let o = |v: &Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
            f.extend([
                mode.map(|m| format!("{m:04o}")).unwrap_or_default(),
                o(uid),
                o(gid),
            ]);
        }
        put_all("socket", &f.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for w in crate::services::probe::Which::ALL {
        let Some(p) = s.probe(w) else { continue };
        use crate::services::probe::{PortRef, ProbeKind};
        let port = |p: &PortRef| match p {
            PortRef::Named(n) => n.clone(),
            PortRef::Number(n) => n.to_string(),
        };
        let mut f = vec![
            fmt_millis(p.interval_ms),
            fmt_millis(p.failing_interval_ms),
            fmt_millis(p.timeout_ms),
            p.failure_threshold.to_string(),
            p.success_threshold.to_string(),
            fmt_millis(p.initial_delay_ms),
        ];
        match &p.kind {
            ProbeKind::Exec(argv) => {
                f.push("exec".into());
                f.extend(argv.iter().cloned());
            }
            ProbeKind::Tcp { port: n, host } => f.extend(["tcp".into(), port(n), host.clone()]),
            ProbeKind::Http {
                path,
                port: n,
                host,
                status,
                body,
            } => {
                f.extend(["http".into(), path.clone(), port(n), host.clone()]);
                f.push(format!("{}-{}", status.0, status.1));
                f.push(body.clone().unwrap_or_default());
            }
        }
        put_all(
            w.as_str(),
            &f.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    if !s.hostnames.is_empty() {
        put_all(
            "hostnames",
            &s.hostnames.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    put_all("drain", &[&fmt_millis(s.drain_ms)]);
    if let Some(b) = &s.breaker {
        put_all(
            "breaker",
            &[&b.failures.to_string(), &fmt_millis(b.cooldown_ms)],
        );
    }
    let mut put = |k: &str, v: String| put_all(k, &[v.as_str()]);
    put("declared", format!("{}:{}", s.file, s.line));
    for (k, v) in &s.env {
        put("env", format!("{k}={v}"));
    }
    put("env_clear", s.env_clear.to_string());
    put("cwd", s.cwd.clone().unwrap_or_default());
    put("user", s.user.clone().unwrap_or_default());
    put("group", s.group.clone().unwrap_or_default());
    put(
        "umask",
        s.umask.map(|m| format!("{m:03o}")).unwrap_or_default(),
    );
    for (res, soft, hard) in &s.rlimits {
        let v = |n: &u64| {
            if *n == u64::MAX {
                "unlimited".to_string()
            } else {
                n.to_string()
            }
        };
        put(
            &format!("rlimits.{res}"),
            format!("{} {}", v(soft), v(hard)),
        );
    }
    put("stdout", output_str(&s.stdout));
    put("stderr", output_str(&s.stderr));
    put("stop_signal", platform::signal_name(s.stop_signal));
    put(
        "kill_mode",
        match s.kill_mode {
            crate::services::spec::KillMode::Group => "group",
            crate::services::spec::KillMode::Process => "process",
        }
        .into(),
    );
    put("grace", fmt_millis(s.grace_ms));
    put(
        "restart",
        match s.restart {
            crate::services::spec::Restart::Always => "always",
            crate::services::spec::Restart::OnFailure => "on-failure",
            crate::services::spec::Restart::Never => "never",
        }
        .into(),
    );
    put(
        "success_codes",
        s.success_codes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    put("backoff.initial", fmt_millis(s.backoff.initial_ms));
    put("backoff.multiplier", s.backoff.multiplier.to_string());
    put("backoff.max", fmt_millis(s.backoff.max_ms));
    put("backoff.reset_after", fmt_millis(s.backoff.reset_after_ms));
    match &s.budget {
        Some(b) => {
            put("budget.restarts", b.restarts.to_string());
            put("budget.window", fmt_millis(b.window_ms));
        }
        None => put("budget", "false".into()),
    }
    if let Some(b) = &s.pool_budget {
        put("pool_budget.restarts", b.restarts.to_string());
        put("pool_budget.window", fmt_millis(b.window_ms));
    }
    put("replicas", s.replicas.to_string());
    let mut deps = s.depends_on.clone();
    deps.extend(services.extra_deps(&s.name));
    put("depends_on", deps.join(" "));
    put("oneshot", s.oneshot.to_string());
    put("start_timeout", fmt_millis(s.start_timeout_ms));
    put("startsecs", fmt_millis(s.start_secs_ms));
    put("watchdog", fmt_millis(s.watchdog_ms));
    put(
        "watchdog_signal",
        crate::platform::signal_name(s.watchdog_signal),
    );
    put("essential", s.essential.to_string());
    put(
        "autostart",
        if s.socket_activated {
            "socket".into()
        } else {
            s.autostart.to_string()
        },
    );
    if let Some(l) = &s.limits {
        let mut v = Vec::new();
        if let Some(m) = l.memory {
            v.push(format!("memory {m}"));
            v.push(format!(
                "measure {}",
                match l.measure {
                    crate::services::spec::Measure::Rss => "rss",
                    crate::services::spec::Measure::Pss => "pss",
                }
            ));
        }
        if let Some(c) = l.cpu {
            v.push(format!("cpu {c}"));
        }
        if let Some(r) = l.runtime_ms {
            v.push(format!("runtime {}", fmt_millis(r)));
        }
        v.push(format!("sustain {}", fmt_millis(l.sustain_ms)));
        v.push(format!("action {}", l.action.as_str()));
        put("limits", v.join(" "));
    }
    put(
        "monitor",
        match s.monitor {
            crate::services::spec::Monitor::Inherit => "inherit".into(),
            crate::services::spec::Monitor::Off => "off".into(),
            crate::services::spec::Monitor::Profile(p) => format!(
                "interval {} collect {} history {} pss {}",
                fmt_millis(p.interval_ms),
                match p.collect {
                    crate::monitor::Collect::All => "all",
                    crate::monitor::Collect::CpuMemory => "cpu,memory",
                },
                p.history,
                p.pss
            ),
        },
    );
}

fn output_str(o: &Output) -> String {
    match o {
        Output::Prefix => "prefix".into(),
        Output::Inherit => "inherit".into(),
        Output::Null => "null".into(),
        Output::File {
            path,
            max_size,
            keep,
        } => format!("file {path} max_size {max_size} keep {keep}"),
    }
}

/// Milliseconds as seconds with three decimals, the protocol's time form.
pub(super) fn fmt_millis(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}
