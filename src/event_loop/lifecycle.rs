//! The loop's life: starting the entrypoint's main command, signals,
//! the orderly shutdown, and PID 1's last sweep and reboot(2).

use super::*;

impl EventLoop {
    /// Entrypoint mode: starts the main command with archon's own stdio,
    /// environment, working directory and inherited fds, in its own process
    /// group, in the terminal's foreground when archon has it.
    pub(super) fn start_main(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let argv_os = self.opts.command.clone();
        let shown: Vec<String> = argv_os
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let path = std::env::var_os("PATH");
        let spawned = platform::resolve_program(&argv_os[0], path.as_deref())
            .map_err(SpawnFail::Exec)
            .and_then(|program| {
                let nul = |_| {
                    SpawnFail::Exec(platform::ExecError {
                        code: 127,
                        reason: "argument contains NUL".into(),
                    })
                };
                let argv = platform::to_cstrings(argv_os.iter().map(|a| a.as_bytes().to_vec()))
                    .ok_or(())
                    .map_err(nul)?;
                let envp: Vec<_> = platform::to_cstrings(std::env::vars_os().map(|(k, v)| {
                    let mut kv = k.as_bytes().to_vec();
                    kv.push(b'=');
                    kv.extend_from_slice(v.as_bytes());
                    kv
                }))
                .ok_or(())
                .map_err(nul)?
                .into_iter()
                .map(std::rc::Rc::new)
                .collect();
                let mut spec = platform::SpawnSpec::new(
                    program,
                    argv,
                    envp,
                    [0, 1, 2],
                    self.nofile,
                    self.ignored_signals.clone(),
                );
                spec.keep_inherited_fds = true;
                spec.foreground_tty = platform::foreground_tty();
                platform::spawn(&spec).map_err(SpawnFail::Os)
            });
        match spawned {
            Ok(sp) => {
                let now = self.now();
                let (id, fx) = self
                    .sup
                    .started_main(sp.pid(), shown, self.opts.forward_group, now);
                log::debug!("main command started id={id} pid={}", sp.pid());
                self.watch(id, Kind::Main, sp);
                let profile = self.profile_of(None);
                self.monitor_start(id, super::monitor::RingKey::Entry(id), profile);
                self.apply(fx);
            }
            Err(fail) => {
                let (code, why) = match fail {
                    SpawnFail::Exec(e) => (e.code, e.reason),
                    SpawnFail::Os(e) => (126, format!("{}: {e}", shown[0])),
                };
                // Not through the log: this must be seen even with logging off.
                eprintln!("archon: {why}");
                self.exit_code = Some(code);
                self.begin_shutdown("main command could not start", sig::TERM);
            }
        }
    }

    /// PID 1's last step (a no-op otherwise): true once no other process is
    /// left, or the sweep has given up after SIGKILL and a second grace
    /// period. Started on the first call, advanced on every later one.
    pub(super) fn sweep_done(&mut self) -> bool {
        if !self.pid1 {
            return true;
        }
        self.reap();
        let now = self.now().mono;
        let left = match platform::other_live_pids() {
            Some(pids) => pids,
            // No /proc of its own: kill(-1, 0) says whether any process of
            // the namespace is left (and children are archon's to reap).
            None if platform::has_children() || platform::kill_all(0).is_ok() => vec![-1],
            None => Vec::new(),
        };
        if left.is_empty() {
            if let Some(sw) = self.sweep.take() {
                for (_, h) in sw.watched {
                    self.exits.remove(self.poll.registry(), &h);
                }
            }
            return true;
        }
        let grace = self.opts.grace_ms;
        let sweep = self.sweep.get_or_insert_with(|| {
            log::info!(
                "sending SIGTERM to every remaining process count={}",
                left.len()
            );
            if let Err(e) = platform::kill_all(sig::TERM) {
                log::warn!("kill(-1, SIGTERM) failed error={e}");
            }
            Sweep {
                killed: false,
                deadline: now + grace,
                watched: HashMap::new(),
            }
        });
        for &pid in left.iter().filter(|&&p| p > 0) {
            if sweep.watched.contains_key(&pid) {
                continue;
            }
            // Where no handle can be opened (FreeBSD), SIGCHLD of the
            // adopted orphans wakes the loop instead.
            if let Ok(h) = ProcHandle::open(pid) {
                let token = Source::Sweep(pid).token();
                if self.exits.add(self.poll.registry(), &h, token).is_ok() {
                    sweep.watched.insert(pid, h);
                }
            }
        }
        if now < sweep.deadline {
            return false;
        }
        if !sweep.killed {
            log::warn!(
                "sending SIGKILL to every remaining process count={}",
                left.len()
            );
            if let Err(e) = platform::kill_all(sig::KILL) {
                log::warn!("kill(-1, SIGKILL) failed error={e}");
            }
            sweep.killed = true;
            sweep.deadline = now + grace.max(1000);
            return false;
        }
        log::error!("processes survived SIGKILL, giving up on them pids={left:?}");
        true
    }

    /// The end: answers what can be answered, removes the socket, then
    /// either reboot(2) (PID 1 asked to power off, reboot or halt; always
    /// for the system's init, which must not exit) or returns archon's exit
    /// status: the main command's, as a shell reports it, or 0.
    pub(super) fn finish_shutdown(mut self) -> i32 {
        // Hooks of the last events (the last `stopped`) still run; nothing
        // they ask for does.
        self.flush_hooks();
        self.hook_actions.clear();
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for cid in ids {
            if let Some(c) = self.clients.get_mut(&cid) {
                let _ = c.flush(0);
            }
        }
        // Services' sockets close; Unix sockets' files archon made go.
        self.activation_disarm_all();
        self.endpoints.release_all();
        if self.listener.is_some() {
            if let Err(e) = std::fs::remove_file(&self.opts.socket) {
                log::warn!(
                    "cannot remove socket path={} error={e}",
                    self.opts.socket.display()
                );
            }
        }
        let code = self
            .exit_code
            .or_else(|| self.sup.main_exit().and_then(|e| e.shell_code()))
            .unwrap_or(0);
        // tini's -e: an exit code the user expects is a success.
        let code = if self.exit_code.is_none() && self.opts.remap_exit.contains(&code) {
            0
        } else {
            code
        };
        let power = match (self.power, self.system_init) {
            (Some(p), _) if self.pid1 => Some(p),
            (None, true) => Some(PowerAction::Poweroff),
            _ => None,
        };
        if let Some(p) = power {
            let cmd = match p {
                PowerAction::Poweroff => platform::RebootCmd::Poweroff,
                PowerAction::Reboot => platform::RebootCmd::Reboot,
                PowerAction::Halt => platform::RebootCmd::Halt,
            };
            log::info!("stopped; {}", p.verb().to_lowercase());
            let err = platform::reboot(cmd);
            log::error!("reboot(2) failed error={err}");
            if self.system_init {
                // Exiting would panic the kernel: stay, reaping, forever.
                log::error!("init cannot exit; reaping orphans until power is cut");
                loop {
                    platform::reap_blocking();
                }
            }
        }
        log::info!("stopped status={code}");
        code
    }

    /// Starts the orderly shutdown (see `Supervisor::shutdown`); the main
    /// command gets `main_signal`. A second request kills what is left.
    pub(super) fn begin_shutdown(&mut self, why: &str, main_signal: i32) {
        let now = self.now();
        if self.shutting_down {
            log::info!("second {why}: killing what is left now");
            let fx = self.sup.hurry(now);
            self.apply(fx);
            if let Some(sw) = self.sweep.as_mut() {
                sw.deadline = now.mono;
            }
            return;
        }
        log::info!("shutting down reason={why}");
        self.fire_simple("shutdown", "archon", 0);
        self.flush_hooks();
        self.hook_actions.clear();
        self.shutting_down = true;
        if let Some(l) = self.listener.as_mut() {
            let _ = self.poll.registry().deregister(l);
        }
        let fx = self.sup.shutdown(self.opts.grace_ms, main_signal, now);
        self.apply(fx);
        let cmds = self.services.shutdown(now.mono, now.wall);
        self.apply_svc(cmds);
        // A service's former main process (it named another with
        // MAINPID= and lives on) is no instance's: stopped here, or the
        // shutdown would wait for it.
        let former: Vec<u64> = self
            .sup
            .live_entries()
            .filter(|e| e.kind == Kind::Service && self.services.owner(e.id).is_none())
            .map(|e| e.id)
            .collect();
        for id in former {
            let fx = self
                .sup
                .stop(id, self.opts.grace_ms, None, now)
                .unwrap_or_default();
            self.apply(fx);
        }
    }

    pub(super) fn read_signals(&mut self) {
        while let Some(signo) = self.signals.next_signal() {
            let name = platform::signal_name(signo);
            log::debug!("signal received signal={name}");
            match signo {
                // After this iteration's events: the handles of archon's
                // own children have reaped those by pid by then.
                sig::CHLD => self.chld_pending = true,
                // The system's init: Ctrl-Alt-Del (the kernel sends SIGINT
                // once told to) reboots.
                sig::INT if self.system_init => {
                    self.power.get_or_insert(PowerAction::Reboot);
                    self.begin_shutdown("SIGINT (Ctrl-Alt-Del)", sig::TERM);
                }
                // Power failure, or `lxc-stop`: power off.
                s if Some(s) == sig::PWR && self.pid1 => {
                    self.power.get_or_insert(PowerAction::Poweroff);
                    self.begin_shutdown("SIGPWR", sig::TERM);
                }
                // The first starts the shutdown, the main command getting
                // this very signal; later ones are forwarded like any
                // other (as tini and dumb-init do: a child that traps
                // SIGINT must still see `docker stop`'s SIGTERM). Only the
                // grace timer escalates to SIGKILL.
                sig::TERM | sig::INT if self.shutting_down => {
                    log::info!("SIG{name} while shutting down: forwarded, grace timer unchanged");
                    let fx = self.sup.forward(signo);
                    self.apply(fx);
                }
                sig::TERM | sig::INT => self.begin_shutdown(&format!("SIG{name}"), signo),
                sig::HUP
                    if self.opts.config.is_some()
                        && self.opts.command.is_empty()
                        && !self.shutting_down =>
                {
                    log::info!("SIGHUP: reloading the config");
                    // Errors are logged; the outcome comes with the worker's reply.
                    let _ = self.reload(None);
                }
                _ if platform::is_forwarded(signo) => {
                    let fx = self.sup.forward(signo);
                    if fx.is_empty() {
                        log::info!("ignoring signal={name}");
                    }
                    self.apply(fx);
                }
                _ => log::debug!("ignoring signal={name}"),
            }
        }
    }
}
