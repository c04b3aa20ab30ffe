//! Who may do what on the control socket, decided from the peer's
//! credentials (SO_PEERCRED and SO_PEERGROUPS, taken at accept). Pure: no
//! I/O; names are resolved to ids before a `Policy` is built.
//!
//! By default only root and the uid archon runs as ("admins") may connect.
//! `--allow WHO=GRANTS` rules open more, each for a user or a group:
//!
//! | grant | verbs |
//! | --- | --- |
//! | `read` | `Version`, `Status`, `Subscribe`, `DumpConfig` |
//! | `control:NAME` (`control:*` for all) | `Start`, `Stop`, `Restart`, `Scale`, `Signal`, `Logs` of that service, and `read` |
//! | `run` | `Run`, `StartDaemon`, `MonitorPid`/`MonitorFD` of the peer's own processes, `Stop`/`Signal` of what the peer started or watches, and `read`; commands run as the peer (uid, gid, groups) |
//! | `run-as-root` | `run`, with commands run as archon's own identity |
//!
//! `Reload`, `Depend`, `Undepend` stay with admins; `Poweroff`, `Reboot`
//! and `Halt` with root alone. A refusal is `Error,permission,...`.

use crate::protocol::Request;

/// A peer's identity as the kernel reported it at connect().
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (SO_PEERGROUPS); empty where unknown, and for
    /// an admin (not asked for: nothing an admin does looks at them).
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Uid(u32),
    Gid(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Read,
    /// Control of one service, or of every one (`None`).
    Control(Option<String>),
    Run,
    RunAsRoot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub who: Who,
    pub grants: Vec<Grant>,
}

/// A rule as written on the command line, with its names unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleText {
    /// `user` or `group`.
    pub group: bool,
    pub name: String,
    pub grants: Vec<Grant>,
}

/// Parses `user:NAME=GRANT[,GRANT...]` or `group:NAME=...`.
pub fn parse_rule(text: &str) -> Result<RuleText, String> {
    let bad = |why: &str| format!("bad --allow {text:?}: {why}");
    let (who, grants) = text
        .split_once('=')
        .ok_or_else(|| bad("expected WHO=GRANTS"))?;
    let (kind, name) = who
        .split_once(':')
        .ok_or_else(|| bad("WHO is user:NAME or group:NAME"))?;
    let group = match kind {
        "user" => false,
        "group" => true,
        _ => return Err(bad("WHO is user:NAME or group:NAME")),
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    let mut list = Vec::new();
    for g in grants.split(',') {
        list.push(match g {
            "read" => Grant::Read,
            "run" => Grant::Run,
            "run-as-root" => Grant::RunAsRoot,
            "control:*" => Grant::Control(None),
            _ => match g.strip_prefix("control:") {
                Some(svc) if !svc.is_empty() => Grant::Control(Some(svc.to_string())),
                _ => {
                    return Err(bad(&format!(
                        "unknown grant {g:?} (read, control:NAME, control:*, run, run-as-root)"
                    )))
                }
            },
        });
    }
    Ok(RuleText {
        group,
        name: name.to_string(),
        grants: list,
    })
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The uid archon runs as: an admin like root.
    pub own_uid: u32,
    pub rules: Vec<Rule>,
}

/// What a request may do, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// An admin: everything, commands as archon.
    Full,
    /// Allowed; commands it starts run as the peer, and it may touch only
    /// the processes it owns.
    AsPeer,
    /// Allowed; commands run as archon, but it may touch only the
    /// processes it owns.
    AsArchon,
}

impl Policy {
    pub fn is_admin(&self, p: &Peer) -> bool {
        p.uid == 0 || p.uid == self.own_uid
    }

    fn matches(who: &Who, p: &Peer) -> bool {
        match who {
            Who::Uid(u) => *u == p.uid,
            Who::Gid(g) => *g == p.gid || p.groups.contains(g),
        }
    }

    fn grants<'a>(&'a self, p: &'a Peer) -> impl Iterator<Item = &'a Grant> + 'a {
        self.rules
            .iter()
            .filter(move |r| Self::matches(&r.who, p))
            .flat_map(|r| r.grants.iter())
    }

    /// Whether the peer may connect at all.
    pub fn may_connect(&self, p: &Peer) -> bool {
        self.is_admin(p) || self.grants(p).next().is_some()
    }

    /// Decides one request.
    pub fn check(&self, p: &Peer, req: &Request) -> Result<Access, String> {
        if let Request::Power(a) = req {
            return if p.uid == 0 {
                Ok(Access::Full)
            } else {
                Err(format!(
                    "{} is for root only (peer uid {})",
                    a.verb(),
                    p.uid
                ))
            };
        }
        if self.is_admin(p) {
            return Ok(Access::Full);
        }
        let has = |want: &dyn Fn(&Grant) -> bool| self.grants(p).any(want);
        let run = has(&|g| matches!(g, Grant::Run | Grant::RunAsRoot));
        let root = has(&|g| matches!(g, Grant::RunAsRoot));
        let read = run || has(&|g| matches!(g, Grant::Read | Grant::Control(_)));
        let controls = |svc: &str| {
            has(&|g| match g {
                Grant::Control(None) => true,
                // `web.1` is controlled by a grant of `web`.
                Grant::Control(Some(s)) => s == crate::protocol::split_target(svc).0,
                _ => false,
            })
        };
        let verdict = match req {
            Request::Version
            | Request::Status(_)
            | Request::StatusService(_)
            | Request::Tree
            | Request::Lookup(_)
            | Request::Stats { .. }
            | Request::Subscribe
            | Request::DumpConfig => read,
            Request::Start(n)
            | Request::StopService(n)
            | Request::Restart(n)
            | Request::Scale { name: n, .. }
            | Request::SignalService { name: n, .. }
            // What a service writes may be as private as what it does.
            | Request::Logs { target: n, .. } => controls(n),
            Request::Run(_)
            | Request::StartDaemon(_)
            | Request::MonitorFd
            | Request::MonitorPid(_)
            | Request::Stop { .. }
            | Request::Signal { .. } => run,
            Request::Reload
            | Request::Depend { .. }
            | Request::Undepend { .. }
            | Request::Power(_) => false,
        };
        if !verdict {
            return Err(format!(
                "uid {} may not use {} (see --allow in archon(8))",
                p.uid,
                req.verb()
            ));
        }
        Ok(if root {
            Access::AsArchon
        } else {
            Access::AsPeer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_request;

    fn req(line: &str) -> Request {
        match parse_request(line.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{line}: {e:?}"),
        }
    }

    fn policy(rules: &[(&str, Who)]) -> Policy {
        Policy {
            own_uid: 500,
            rules: rules
                .iter()
                .map(|(t, w)| Rule {
                    who: w.clone(),
                    grants: parse_rule(&format!("user:x={t}"))
                        .map(|r| r.grants)
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    const NOBODY: Peer = Peer {
        uid: 65534,
        gid: 65534,
        groups: Vec::new(),
    };

    #[test]
    fn by_default_only_root_and_archons_uid() {
        let p = policy(&[]);
        for uid in [0, 500] {
            let peer = Peer { uid, ..NOBODY };
            assert!(p.may_connect(&peer));
            assert_eq!(p.check(&peer, &req("Run,true")), Ok(Access::Full));
        }
        assert!(!p.may_connect(&NOBODY));
        assert!(p.check(&NOBODY, &req("Status")).is_err());
        // Power is root's alone, even for archon's own uid.
        let own = Peer { uid: 500, ..NOBODY };
        assert!(p.check(&own, &req("Poweroff")).is_err());
    }

    #[test]
    fn grants_open_exactly_their_verbs() {
        let p = policy(&[
            ("read", Who::Gid(100)),
            ("control:web", Who::Uid(1001)),
            ("run", Who::Uid(1002)),
            ("run-as-root", Who::Uid(1003)),
        ]);
        let member = Peer {
            uid: 1000,
            gid: 1000,
            groups: vec![100],
        };
        assert!(p.may_connect(&member));
        assert!(p.check(&member, &req("Status")).is_ok());
        assert!(p.check(&member, &req("Run,true")).is_err());
        assert!(p.check(&member, &req("Start,web")).is_err());
        // Reading a service's output takes its control grant, not read.
        assert!(p.check(&member, &req("Logs,web")).is_err());
        let ctl = Peer {
            uid: 1001,
            ..NOBODY
        };
        assert!(p.check(&ctl, &req("Restart,web")).is_ok());
        assert!(p.check(&ctl, &req("Restart,db")).is_err());
        // An instance is controlled by its service's grant, and only by it.
        assert!(p.check(&ctl, &req("Stop,web.1")).is_ok());
        assert!(p.check(&ctl, &req("Stop,db.1")).is_err());
        assert!(p.check(&ctl, &req("Stop,web.x")).is_err());
        assert!(p.check(&ctl, &req("Logs,web.1,5,follow")).is_ok());
        assert!(p.check(&ctl, &req("Logs,db")).is_err());
        assert!(p.check(&ctl, &req("Reload")).is_err());
        let runner = Peer {
            uid: 1002,
            ..NOBODY
        };
        assert_eq!(p.check(&runner, &req("Run,true")), Ok(Access::AsPeer));
        assert!(p.check(&runner, &req("Status")).is_ok());
        assert!(p.check(&runner, &req("Start,web")).is_err());
        let rooted = Peer {
            uid: 1003,
            ..NOBODY
        };
        assert_eq!(p.check(&rooted, &req("Run,true")), Ok(Access::AsArchon));
        assert!(!p.may_connect(&NOBODY));
    }

    #[test]
    fn rules_parse_strictly() {
        assert!(parse_rule("group:ops=read,control:*").is_ok());
        for bad in [
            "ops=read",
            "host:x=read",
            "user:=read",
            "user:x",
            "user:x=write",
            "user:x=control:",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }
}
