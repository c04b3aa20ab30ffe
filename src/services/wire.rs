//! `ServiceSpec`s as records of the worker protocol (`protocol::worker`):
//! the Lua worker evaluates the config and sends them; archon decodes and
//! validates them. Pure. Every field of the spec has one record; a decoded
//! spec starts from the defaults, so a record left out means its default.
//!
//! ```text
//! [Service, name, file, line]  then, for that service:
//! [cmd, argv...]  [env, k, v]...  [env_clear, 0|1]  [cwd, dir]
//! [user, name]  [group, name]  [identity, uid, gid, groups...]  [umask, n]
//! [rlimit, resource, soft, hard]...  [stdout|stderr, prefix|inherit|null]
//! [stdout|stderr, file, path, max_size, keep]  [stop_signal, n]  [grace, ms]
//! [restart, always|on-failure|never]  [success_codes, n...]
//! [backoff, initial_ms, multiplier, max_ms, reset_after_ms]
//! [budget, restarts, window_ms] (none: [budget])  [replicas, n]
//! [depends_on, names...]  [oneshot, 0|1]  [ready, exec|notify]
//! [ready, fd, n]  [ready, command, interval_ms, argv...]
//! [health, interval_ms, argv...]  [start_timeout, ms]  [essential, 0|1]
//! [autostart, 0|1]  [startsecs, ms]  [watchdog, ms, signal]
//! [monitor, off]  [monitor, interval_ms, all|cpu,memory, history, pss 0|1]
//! (no monitor record: archon's --monitor)
//! [limits, memory|"", rss|pss, cpu|"", runtime_ms|"", sustain_ms, restart|stop|event]
//! [port, name, auto|N, address, archon|service]...
//! [socket, name, tcp|udp, address, backlog]...
//! [socket, name, unix, path, backlog, mode|"", uid|"", gid|""]...
//! [hostnames, names...] [drain, ms] [socket_activated, 1]
//! [probe, startup|readiness|liveness, ...] [breaker, failures, cooldown_ms]
//! (services::probe::encode)
//! ```

use super::spec::{
    Backoff, Budget, Health, Identity, KillMode, LimitAction, Limits, Measure, Monitor, Output,
    Readiness, Restart, ServiceSpec,
};
use crate::monitor::{Collect, Profile};
use crate::protocol::worker::Record;
use std::rc::Rc;

pub(super) fn b(s: impl AsRef<str>) -> Vec<u8> {
    s.as_ref().as_bytes().to_vec()
}

fn flag(v: bool) -> Vec<u8> {
    b(if v { "1" } else { "0" })
}

pub(super) fn rec<I: IntoIterator<Item = Vec<u8>>>(head: &str, rest: I) -> Record {
    std::iter::once(b(head)).chain(rest).collect()
}

fn output(head: &str, o: &Output) -> Record {
    match o {
        Output::Prefix => rec(head, [b("prefix")]),
        Output::Inherit => rec(head, [b("inherit")]),
        Output::Null => rec(head, [b("null")]),
        Output::File {
            path,
            max_size,
            keep,
        } => rec(
            head,
            [
                b("file"),
                b(path),
                b(max_size.to_string()),
                b(keep.to_string()),
            ],
        ),
    }
}

/// The records of one service.
pub fn encode(s: &ServiceSpec, out: &mut Vec<Record>) {
    out.push(rec(
        "Service",
        [b(&s.name), b(&*s.file), b(s.line.to_string())],
    ));
    out.push(rec("cmd", s.cmd.iter().map(b)));
    for (k, v) in &s.env {
        out.push(rec("env", [b(k), b(v)]));
    }
    out.push(rec("env_clear", [flag(s.env_clear)]));
    if let Some(d) = &s.cwd {
        out.push(rec("cwd", [b(d)]));
    }
    if let Some(u) = &s.user {
        out.push(rec("user", [b(u)]));
    }
    if let Some(g) = &s.group {
        out.push(rec("group", [b(g)]));
    }
    if let Some(i) = &s.identity {
        let id = |v: Option<u32>| b(v.map(|n| n.to_string()).unwrap_or_default());
        out.push(rec(
            "identity",
            [id(i.uid), id(i.gid)]
                .into_iter()
                .chain(i.groups.iter().map(|g| b(g.to_string()))),
        ));
    }
    if let Some(m) = s.umask {
        out.push(rec("umask", [b(m.to_string())]));
    }
    for (res, soft, hard) in &s.rlimits {
        out.push(rec(
            "rlimit",
            [b(res), b(soft.to_string()), b(hard.to_string())],
        ));
    }
    out.push(output("stdout", &s.stdout));
    out.push(output("stderr", &s.stderr));
    out.push(rec("stop_signal", [b(s.stop_signal.to_string())]));
    out.push(rec(
        "kill_mode",
        [b(match s.kill_mode {
            KillMode::Group => "group",
            KillMode::Process => "process",
        })],
    ));
    out.push(rec("grace", [b(s.grace_ms.to_string())]));
    out.push(rec(
        "restart",
        [b(match s.restart {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        })],
    ));
    out.push(rec(
        "success_codes",
        s.success_codes.iter().map(|c| b(c.to_string())),
    ));
    let k = &s.backoff;
    out.push(rec(
        "backoff",
        [
            b(k.initial_ms.to_string()),
            b(k.multiplier.to_string()),
            b(k.max_ms.to_string()),
            b(k.reset_after_ms.to_string()),
        ],
    ));
    match &s.budget {
        Some(g) => out.push(rec(
            "budget",
            [b(g.restarts.to_string()), b(g.window_ms.to_string())],
        )),
        None => out.push(rec("budget", [])),
    }
    if let Some(g) = &s.pool_budget {
        out.push(rec(
            "pool_budget",
            [b(g.restarts.to_string()), b(g.window_ms.to_string())],
        ));
    }
    out.push(rec("replicas", [b(s.replicas.to_string())]));
    out.push(rec("depends_on", s.depends_on.iter().map(b)));
    out.push(rec("oneshot", [flag(s.oneshot)]));
    out.push(match &s.ready {
        Readiness::Exec => rec("ready", [b("exec")]),
        Readiness::Notify => rec("ready", [b("notify")]),
        Readiness::Fd(n) => rec("ready", [b("fd"), b(n.to_string())]),
        Readiness::Command { argv, interval_ms } => rec(
            "ready",
            [b("command"), b(interval_ms.to_string())]
                .into_iter()
                .chain(argv.iter().map(b)),
        ),
    });
    if let Some(h) = &s.health {
        out.push(rec(
            "health",
            std::iter::once(b(h.interval_ms.to_string())).chain(h.argv.iter().map(b)),
        ));
    }
    out.push(rec("start_timeout", [b(s.start_timeout_ms.to_string())]));
    out.push(rec("startsecs", [b(s.start_secs_ms.to_string())]));
    out.push(rec(
        "watchdog",
        [
            b(s.watchdog_ms.to_string()),
            b(s.watchdog_signal.to_string()),
        ],
    ));
    out.push(rec("essential", [flag(s.essential)]));
    out.push(rec("autostart", [flag(s.autostart)]));
    match s.monitor {
        Monitor::Inherit => {}
        Monitor::Off => out.push(rec("monitor", [b("off")])),
        Monitor::Profile(p) => out.push(rec(
            "monitor",
            [
                b(p.interval_ms.to_string()),
                b(match p.collect {
                    Collect::All => "all",
                    Collect::CpuMemory => "cpu,memory",
                }),
                b(p.history.to_string()),
                flag(p.pss),
            ],
        )),
    }
    super::net::encode(s, out);
    super::probe::encode(s, out);
    if let Some(l) = &s.limits {
        let o = |v: Option<String>| b(v.unwrap_or_default());
        out.push(rec(
            "limits",
            [
                o(l.memory.map(|m| m.to_string())),
                b(match l.measure {
                    Measure::Rss => "rss",
                    Measure::Pss => "pss",
                }),
                o(l.cpu.map(|c| c.to_string())),
                o(l.runtime_ms.map(|r| r.to_string())),
                b(l.sustain_ms.to_string()),
                b(l.action.as_str()),
            ],
        ));
    }
}

pub(super) fn text(f: &[u8]) -> Result<String, String> {
    String::from_utf8(f.to_vec()).map_err(|_| "a text field is not UTF-8".to_string())
}

pub(super) fn num<T: std::str::FromStr>(f: &[u8]) -> Result<T, String> {
    text(f)?
        .parse()
        .map_err(|_| format!("bad number {:?}", String::from_utf8_lossy(f)))
}

fn bool_of(f: &[u8]) -> Result<bool, String> {
    match f {
        b"1" => Ok(true),
        b"0" => Ok(false),
        _ => Err("bad flag".into()),
    }
}

fn decode_output(r: &[Vec<u8>]) -> Result<Output, String> {
    Ok(match r.first().map(|f| f.as_slice()) {
        Some(b"prefix") => Output::Prefix,
        Some(b"inherit") => Output::Inherit,
        Some(b"null") => Output::Null,
        Some(b"file") if r.len() == 4 => Output::File {
            path: text(&r[1])?,
            max_size: num(&r[2])?,
            keep: num(&r[3])?,
        },
        _ => return Err("bad output".into()),
    })
}

/// Decodes every service in `records` (as `encode` wrote them).
pub fn decode(records: &[Record]) -> Result<Vec<ServiceSpec>, String> {
    let mut out: Vec<ServiceSpec> = Vec::new();
    let mut file: Rc<str> = Rc::from("");
    for r in records {
        let (head, args) = match r.split_first() {
            Some((h, a)) => (h.as_slice(), a),
            None => return Err("empty record".into()),
        };
        if head == b"Service" {
            let [name, f, line] = args else {
                return Err("bad Service record".into());
            };
            let f = text(f)?;
            // One string for every service of a file, as the config makes.
            if *file != *f {
                file = Rc::from(f.as_str());
            }
            out.push(ServiceSpec::new_in(&text(name)?, file.clone(), num(line)?));
            continue;
        }
        let s = out.last_mut().ok_or("a setting before any Service")?;
        let strings = || args.iter().map(|f| text(f)).collect::<Result<Vec<_>, _>>();
        let one = || match args {
            [a] => Ok(a.as_slice()),
            _ => Err(format!(
                "{}: one value expected",
                String::from_utf8_lossy(head)
            )),
        };
        match head {
            b"cmd" => s.cmd = strings()?,
            b"env" => match args {
                [k, v] => s.env.push((text(k)?, text(v)?)),
                _ => return Err("bad env".into()),
            },
            b"env_clear" => s.env_clear = bool_of(one()?)?,
            b"cwd" => s.cwd = Some(text(one()?)?),
            b"user" => s.user = Some(text(one()?)?),
            b"group" => s.group = Some(text(one()?)?),
            b"identity" => {
                let opt = |f: &[u8]| -> Result<Option<u32>, String> {
                    if f.is_empty() {
                        Ok(None)
                    } else {
                        num(f).map(Some)
                    }
                };
                let [uid, gid, groups @ ..] = args else {
                    return Err("bad identity".into());
                };
                s.identity = Some(Identity {
                    uid: opt(uid)?,
                    gid: opt(gid)?,
                    groups: groups.iter().map(|g| num(g)).collect::<Result<_, _>>()?,
                });
            }
            b"umask" => s.umask = Some(num(one()?)?),
            b"rlimit" => match args {
                [res, soft, hard] => s.rlimits.push((text(res)?, num(soft)?, num(hard)?)),
                _ => return Err("bad rlimit".into()),
            },
            b"stdout" => s.stdout = decode_output(args)?,
            b"stderr" => s.stderr = decode_output(args)?,
            b"stop_signal" => s.stop_signal = num(one()?)?,
            b"kill_mode" => {
                s.kill_mode = match one()? {
                    b"group" => KillMode::Group,
                    b"process" => KillMode::Process,
                    _ => return Err("bad kill_mode".into()),
                }
            }
            b"grace" => s.grace_ms = num(one()?)?,
            b"restart" => {
                s.restart = match one()? {
                    b"always" => Restart::Always,
                    b"on-failure" => Restart::OnFailure,
                    b"never" => Restart::Never,
                    _ => return Err("bad restart".into()),
                }
            }
            b"success_codes" => {
                s.success_codes = args.iter().map(|c| num(c)).collect::<Result<_, _>>()?
            }
            b"backoff" => match args {
                [i, m, x, r] => {
                    s.backoff = Backoff {
                        initial_ms: num(i)?,
                        multiplier: num(m)?,
                        max_ms: num(x)?,
                        reset_after_ms: num(r)?,
                    }
                }
                _ => return Err("bad backoff".into()),
            },
            b"budget" => {
                s.budget = match args {
                    [] => None,
                    [n, w] => Some(Budget {
                        restarts: num(n)?,
                        window_ms: num(w)?,
                    }),
                    _ => return Err("bad budget".into()),
                }
            }
            b"pool_budget" => match args {
                [n, w] => {
                    s.pool_budget = Some(Budget {
                        restarts: num(n)?,
                        window_ms: num(w)?,
                    })
                }
                _ => return Err("bad pool_budget".into()),
            },
            b"replicas" => s.replicas = num(one()?)?,
            b"depends_on" => s.depends_on = strings()?,
            b"oneshot" => s.oneshot = bool_of(one()?)?,
            b"ready" => {
                s.ready = match args {
                    [k] if k == b"exec" => Readiness::Exec,
                    [k] if k == b"notify" => Readiness::Notify,
                    [k, n] if k == b"fd" => Readiness::Fd(num(n)?),
                    [k, iv, argv @ ..] if k == b"command" && !argv.is_empty() => {
                        Readiness::Command {
                            interval_ms: num(iv)?,
                            argv: argv.iter().map(|f| text(f)).collect::<Result<_, _>>()?,
                        }
                    }
                    _ => return Err("bad ready".into()),
                }
            }
            b"health" => match args {
                [iv, argv @ ..] if !argv.is_empty() => {
                    s.health = Some(Health {
                        interval_ms: num(iv)?,
                        argv: argv.iter().map(|f| text(f)).collect::<Result<_, _>>()?,
                    })
                }
                _ => return Err("bad health".into()),
            },
            b"start_timeout" => s.start_timeout_ms = num(one()?)?,
            b"startsecs" => s.start_secs_ms = num(one()?)?,
            b"watchdog" => match args {
                [ms, sig] => {
                    s.watchdog_ms = num(ms)?;
                    s.watchdog_signal = num(sig)?;
                }
                _ => return Err("bad watchdog".into()),
            },
            b"essential" => s.essential = bool_of(one()?)?,
            b"autostart" => s.autostart = bool_of(one()?)?,
            b"monitor" => match args {
                [off] if off.as_slice() == b"off" => s.monitor = Monitor::Off,
                [ms, collect, history, pss] => {
                    let p = Profile::custom(
                        None,
                        Some(num(ms)?),
                        Some(&text(collect)?),
                        Some(num(history)?),
                        Some(bool_of(pss)?),
                    )?
                    .ok_or("bad monitor")?;
                    s.monitor = Monitor::Profile(p);
                }
                _ => return Err("bad monitor".into()),
            },
            b"limits" => {
                let [memory, measure, cpu, runtime, sustain, action] = args else {
                    return Err("bad limits".into());
                };
                let opt = |f: &[u8]| -> Result<Option<u64>, String> {
                    if f.is_empty() {
                        Ok(None)
                    } else {
                        num(f).map(Some)
                    }
                };
                s.limits = Some(Limits {
                    memory: opt(memory)?,
                    measure: match measure.as_slice() {
                        b"rss" => Measure::Rss,
                        b"pss" => Measure::Pss,
                        _ => return Err("bad limits measure".into()),
                    },
                    cpu: if cpu.is_empty() {
                        None
                    } else {
                        Some(num(cpu)?)
                    },
                    runtime_ms: opt(runtime)?,
                    sustain_ms: num(sustain)?,
                    action: match action.as_slice() {
                        b"restart" => LimitAction::Restart,
                        b"stop" => LimitAction::Stop,
                        b"event" => LimitAction::Event,
                        _ => return Err("bad limits action".into()),
                    },
                });
            }
            b"port" => s.ports.push(super::net::decode_port(args)?),
            b"hostnames" => s.hostnames = strings()?,
            b"drain" => s.drain_ms = num(one()?)?,
            b"socket_activated" => s.socket_activated = bool_of(one()?)?,
            b"socket" => s.sockets.push(super::net::decode_socket(args)?),
            b"probe" => super::probe::decode_probe(args, s)?,
            b"breaker" => s.breaker = Some(super::probe::decode_breaker(args)?),
            other => {
                return Err(format!(
                    "unknown setting record {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        }
    }
    // What the Lua side guarantees, checked again on this side of the
    // socket: a spec without a command or replicas could not run.
    for s in &out {
        if s.cmd.is_empty() {
            return Err(format!("service {:?} has no command", s.name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_with_every_setting_round_trips() {
        let mut s = ServiceSpec::new("web", "a.lua", 7);
        s.cmd = vec!["srv".into(), "a,b\nc".into(), "".into()];
        s.env = vec![("K".into(), "v\n=".into())];
        s.env_clear = true;
        s.cwd = Some("/srv".into());
        s.user = Some("www".into());
        s.group = Some("www".into());
        s.identity = Some(Identity {
            uid: Some(33),
            gid: None,
            groups: vec![33, 4],
        });
        s.umask = Some(0o27);
        s.rlimits = vec![("nofile".into(), 10, u64::MAX)];
        s.stdout = Output::File {
            path: "/l".into(),
            max_size: 5,
            keep: 2,
        };
        s.stderr = Output::Null;
        s.stop_signal = 2;
        s.kill_mode = KillMode::Process;
        s.grace_ms = 1500;
        s.restart = Restart::OnFailure;
        s.success_codes = vec![0, 3];
        s.backoff.multiplier = 1.5;
        s.budget = None;
        s.pool_budget = Some(Budget {
            restarts: 4,
            window_ms: 9000,
        });
        s.replicas = 3;
        s.depends_on = vec!["db".into()];
        s.oneshot = true;
        s.ready = Readiness::Command {
            argv: vec!["probe".into()],
            interval_ms: 250,
        };
        s.health = Some(Health {
            argv: vec!["check".into()],
            interval_ms: 1000,
        });
        s.start_timeout_ms = 9;
        s.start_secs_ms = 1500;
        s.watchdog_ms = 2500;
        s.watchdog_signal = 3;
        s.essential = true;
        s.autostart = false;
        s.monitor = Monitor::Profile(Profile {
            interval_ms: 1500,
            collect: Collect::CpuMemory,
            history: 7,
            pss: true,
        });
        {
            use crate::services::net::{PortBind, PortSpec, SocketKind, SocketSpec};
            s.ports = vec![
                PortSpec {
                    name: "admin".into(),
                    port: Some(9100),
                    address: "::1".into(),
                    bind: PortBind::Service,
                },
                PortSpec {
                    name: "http".into(),
                    port: None,
                    address: "0.0.0.0".into(),
                    bind: PortBind::Archon,
                },
            ];
            s.sockets = vec![
                SocketSpec {
                    name: "ctl".into(),
                    kind: SocketKind::Unix {
                        path: "/run/a,b.sock".into(),
                        mode: Some(0o660),
                        uid: None,
                        gid: Some(33),
                    },
                    backlog: 5,
                },
                SocketSpec {
                    name: "dns".into(),
                    kind: SocketKind::Udp("[::]:53".into()),
                    backlog: 128,
                },
            ];
        }
        {
            use crate::services::probe::{Breaker, PortRef, Probe, ProbeKind};
            s.startup = Some(Probe::new(ProbeKind::Exec(vec![
                "test".into(),
                "-e".into(),
            ])));
            let mut r = Probe::new(ProbeKind::Http {
                path: "/h?a,b".into(),
                port: PortRef::Named("http".into()),
                host: "::1".into(),
                status: (200, 204),
                body: Some("ok, fine".into()),
            });
            r.success_threshold = 2;
            r.failing_interval_ms = 300;
            s.readiness = Some(r);
            s.liveness = Some(Probe::new(ProbeKind::Tcp {
                port: PortRef::Number(8080),
                host: "127.0.0.1".into(),
            }));
            s.breaker = Some(Breaker {
                failures: 2,
                cooldown_ms: 1500,
            });
            s.hostnames = vec!["a.test".into(), "b.test".into()];
            s.drain_ms = 2500;
            s.socket_activated = true;
        }
        let mut other = ServiceSpec::new("db", "a.lua", 9);
        other.cmd = vec!["db".into()];
        other.ready = Readiness::Fd(3);
        other.monitor = Monitor::Off;
        other.limits = Some(Limits {
            memory: Some(512 << 20),
            measure: Measure::Pss,
            cpu: Some(90.5),
            runtime_ms: None,
            sustain_ms: 5000,
            action: LimitAction::Stop,
        });
        let mut recs = Vec::new();
        encode(&s, &mut recs);
        encode(&other, &mut recs);
        let back = decode(&recs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, vec![s, other]);
        assert!(Rc::ptr_eq(&back[0].file, &back[1].file));
    }

    #[test]
    fn bad_records_are_errors() {
        let r = |v: &[&[u8]]| -> Record { v.iter().map(|f| f.to_vec()).collect() };
        for bad in [
            vec![r(&[b"cmd", b"x"])],
            vec![r(&[b"Service", b"a", b"f"])],
            vec![r(&[b"Service", b"a", b"f", b"1"])],
            vec![
                r(&[b"Service", b"a", b"f", b"1"]),
                r(&[b"cmd", b"x"]),
                r(&[b"ready", b"fd"]),
            ],
            vec![
                r(&[b"Service", b"a", b"f", b"1"]),
                r(&[b"cmd", b"x"]),
                r(&[b"grace", b"-1"]),
            ],
            vec![
                r(&[b"Service", b"a", b"f", b"1"]),
                r(&[b"cmd", b"x"]),
                r(&[b"colour", b"red"]),
            ],
            vec![r(&[b"Service", b"a", b"f", b"1"]), r(&[b"cmd", &[0xff]])],
            vec![vec![]],
        ] {
            assert!(decode(&bad).is_err(), "{bad:?}");
        }
    }
}
