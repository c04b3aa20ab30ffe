//! Lua hooks: functions the config registers with `on(event, pattern, fn)`,
//! called when a matching event happens, in the config's own sandboxed
//! state (see `config`), which stays alive for them.
//!
//! A hook gets a fresh table describing the event and acts through the
//! `archon` table. Its calls that change something (start, stop, restart,
//! scale, signal, run, set_status) are queued and applied by the event loop
//! after the current event is fully handled, in order, never recursively.
//! Each call runs under an instruction budget and the state's memory limit;
//! a hook that errors or spends its budget is stopped, logged once with its
//! location, counted, and disabled after `MAX_FAILURES` failures.

use super::config::LuaBudget;
use mlua::{Function, Lua, RegistryKey, Table, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

/// VM instructions one hook call may run.
pub const CALL_BUDGET: u64 = 1_000_000;
/// Memory the hooks' Lua state may use in all.
pub const HOOK_MEMORY: usize = 32 << 20;
/// Failures (errors, budget spent) before a hook is disabled.
pub const MAX_FAILURES: u32 = 3;
/// Instructions one hook may run across its calls within `WINDOW`; past
/// it, its calls are skipped until the window ends.
pub const WINDOW_BUDGET: u64 = 100 * CALL_BUDGET;
pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Callbacks of `archon.run` commands still running, at most.
pub const MAX_CALLBACKS: usize = 10_000;

pub use crate::protocol::worker::{HookAction, HookEvent, EVENTS};

/// Callbacks of commands hooks ran, by the id archon gets for each.
#[derive(Default)]
pub struct Callbacks {
    next: u64,
    keys: HashMap<u64, RegistryKey>,
}

pub struct Handler {
    event: String,
    pattern: String,
    status: Option<i32>,
    signal: Option<String>,
    /// Instructions spent in the current window, and when it began.
    window_spent: u64,
    window_start: std::time::Instant,
    throttled: bool,
    func: Function,
    /// `file:line`, for messages.
    pub at: String,
    pub failures: u32,
    pub disabled: bool,
    pub calls: u64,
}

/// One instance as `archon.status()` shows it: state, pid, restarts, and
/// restarts by reason.
pub type InstanceRow = (String, Option<i32>, u32, [u64; 5]);

/// What the API reads (`archon.status()`): kept up to date by the loop.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub services: BTreeMap<(String, u32), InstanceRow>,
}

pub struct Hooks {
    lua: Lua,
    /// Makes an event's table, read-only to the hook.
    make_event: Option<Function>,
    pub handlers: Vec<Handler>,
    budget: Rc<LuaBudget>,
    queue: Rc<RefCell<VecDeque<HookAction>>>,
    in_hook: Rc<Cell<bool>>,
    current: Rc<RefCell<String>>,
    callbacks: Rc<RefCell<Callbacks>>,
}

/// Shared between the config's evaluation and the hooks.
pub(crate) struct Registry {
    pub handlers: Rc<RefCell<Vec<Handler>>>,
    pub queue: Rc<RefCell<VecDeque<HookAction>>>,
    pub in_hook: Rc<Cell<bool>>,
    pub current: Rc<RefCell<String>>,
    pub snapshot: Rc<RefCell<Snapshot>>,
    pub callbacks: Rc<RefCell<Callbacks>>,
}

/// `*` any run of characters, `?` one.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Installs `on` and the `archon` API in a config's state. Errors in `on`
/// calls go to `errors` with file and line.
/// `snapshot` is what `archon.status()` reads: the worker keeps it up to
/// date from archon's messages, across config reloads.
pub(crate) fn install(
    lua: &Lua,
    file: Rc<str>,
    errors: Rc<RefCell<Vec<String>>>,
    snapshot: Rc<RefCell<Snapshot>>,
) -> mlua::Result<Registry> {
    let reg = Registry {
        handlers: Rc::new(RefCell::new(Vec::new())),
        queue: Rc::new(RefCell::new(VecDeque::new())),
        in_hook: Rc::new(Cell::new(false)),
        current: Rc::new(RefCell::new(String::new())),
        snapshot,
        callbacks: Rc::new(RefCell::new(Callbacks::default())),
    };
    let handlers = reg.handlers.clone();
    let on = lua.create_function(
        move |lua, (event, pattern, f, filter): (Value, Value, Value, Value)| {
            let line = lua
                .inspect_stack(1, |d| d.current_line())
                .flatten()
                .unwrap_or(0);
            let at = format!("{file}:{line}");
            let text = |v: &Value| match v {
                Value::String(s) => s.to_str().ok().map(|s| s.to_string()),
                _ => None,
            };
            let event = match text(&event) {
                Some(e) if EVENTS.contains(&e.as_str()) => e,
                _ => {
                    errors.borrow_mut().push(format!(
                        "{at}: on: the first argument must be an event: {}",
                        EVENTS.join(", ")
                    ));
                    return Ok(());
                }
            };
            let Some(pattern) = text(&pattern) else {
                errors.borrow_mut().push(format!(
                    "{at}: on: the second argument must be a name pattern such as \"web*\""
                ));
                return Ok(());
            };
            let Value::Function(func) = f else {
                errors
                    .borrow_mut()
                    .push(format!("{at}: on: the third argument must be a function"));
                return Ok(());
            };
            let mut signal = None;
            let status = match &filter {
                Value::Nil => None,
                Value::Table(t) => {
                    signal = match t.get::<Value>("signal")? {
                        Value::Nil => None,
                        v => match text(&v).and_then(|s| crate::platform::signal_number(&s)) {
                            Some(n) => Some(crate::platform::signal_name(n)),
                            None => {
                                errors
                                    .borrow_mut()
                                    .push(format!("{at}: on: filter signal must be a signal name"));
                                None
                            }
                        },
                    };
                    match t.get::<Value>("status")? {
                        Value::Integer(n) => Some(n as i32),
                        Value::Nil => None,
                        _ => {
                            errors
                                .borrow_mut()
                                .push(format!("{at}: on: filter status must be a number"));
                            None
                        }
                    }
                }
                _ => {
                    errors.borrow_mut().push(format!(
                        "{at}: on: the fourth argument must be a filter table"
                    ));
                    None
                }
            };
            handlers.borrow_mut().push(Handler {
                event,
                pattern,
                status,
                signal,
                window_spent: 0,
                window_start: std::time::Instant::now(),
                throttled: false,
                func,
                at,
                failures: 0,
                disabled: false,
                calls: 0,
            });
            Ok(())
        },
    )?;
    lua.globals().set("on", on)?;
    let api = lua.create_table()?;
    let queue_fn = |lua: &Lua, name: &'static str, reg: &Registry| -> mlua::Result<Function> {
        let queue = reg.queue.clone();
        let in_hook = reg.in_hook.clone();
        let current = reg.current.clone();
        let callbacks = reg.callbacks.clone();
        lua.create_function(move |lua, args: mlua::MultiValue| {
            if !in_hook.get() {
                let at = lua
                    .inspect_stack(1, |d| {
                        format!(
                            "{}:{}: ",
                            d.source().short_src.as_deref().unwrap_or("?"),
                            d.current_line().unwrap_or(0)
                        )
                    })
                    .unwrap_or_default();
                return Err(mlua::Error::runtime(format!(
                    "{at}archon.{name} can only be called from a hook"
                )));
            }
            let args: Vec<Value> = args.into_iter().collect();
            let s = |i: usize| -> mlua::Result<String> {
                match args.get(i) {
                    Some(Value::String(s)) => Ok(s.to_str()?.to_string()),
                    _ => Err(mlua::Error::runtime(format!(
                        "archon.{name}: argument {} must be a string",
                        i + 1
                    ))),
                }
            };
            let n = |i: usize| -> mlua::Result<i64> {
                match args.get(i) {
                    Some(Value::Integer(n)) => Ok(*n),
                    Some(Value::Number(f)) if f.fract() == 0.0 => Ok(*f as i64),
                    _ => Err(mlua::Error::runtime(format!(
                        "archon.{name}: argument {} must be a whole number",
                        i + 1
                    ))),
                }
            };
            let action = match name {
                "start" => HookAction::Start(s(0)?),
                "stop" => HookAction::Stop(s(0)?),
                "restart" => HookAction::Restart(s(0)?),
                "scale" => HookAction::Scale(
                    s(0)?,
                    u32::try_from(n(1)?)
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .ok_or_else(|| {
                            mlua::Error::runtime("archon.scale: 0 to 10000 instances")
                        })?,
                ),
                "signal" => {
                    let sig = match args.get(1) {
                        Some(Value::Integer(n)) => Some(*n as i32),
                        Some(Value::String(t)) => crate::platform::signal_number(&t.to_str()?),
                        _ => None,
                    }
                    .ok_or_else(|| mlua::Error::runtime("archon.signal: unknown signal"))?;
                    HookAction::Signal(s(0)?, sig)
                }
                "set_status" => HookAction::SetStatus(s(0)?, s(1)?),
                "run" => {
                    let argv: Vec<String> = match args.first() {
                        Some(Value::Table(t)) => t
                            .clone()
                            .sequence_values::<String>()
                            .collect::<mlua::Result<_>>()?,
                        _ => {
                            return Err(mlua::Error::runtime(
                                "archon.run: expected a list of strings",
                            ))
                        }
                    };
                    if argv.is_empty() {
                        return Err(mlua::Error::runtime("archon.run: empty command"));
                    }
                    let callback = match args.get(1) {
                        Some(Value::Function(f)) => {
                            let mut cb = callbacks.borrow_mut();
                            if cb.keys.len() >= MAX_CALLBACKS {
                                return Err(mlua::Error::runtime(format!(
                                    "archon.run: {MAX_CALLBACKS} commands with callbacks are running already"
                                )));
                            }
                            cb.next += 1;
                            let id = cb.next;
                            let key = lua.create_registry_value(f.clone())?;
                            cb.keys.insert(id, key);
                            Some(id)
                        }
                        None | Some(Value::Nil) => None,
                        _ => {
                            return Err(mlua::Error::runtime(
                                "archon.run: the callback must be a function",
                            ))
                        }
                    };
                    HookAction::Run {
                        argv,
                        callback,
                        by: current.borrow().clone(),
                    }
                }
                _ => return Ok(()),
            };
            let mut q = queue.borrow_mut();
            if q.len() >= 1000 {
                return Err(mlua::Error::runtime(
                    "archon: more than 1000 actions queued",
                ));
            }
            q.push_back(action);
            Ok(())
        })
    };
    for name in [
        "start",
        "stop",
        "restart",
        "scale",
        "signal",
        "set_status",
        "run",
    ] {
        api.set(name, queue_fn(lua, name, &reg)?)?;
    }
    let current = reg.current.clone();
    api.set(
        "log",
        lua.create_function(move |_, (level, msg): (String, String)| {
            let at = current.borrow().clone();
            let msg: String = msg.chars().take(4096).collect();
            match level.as_str() {
                "error" => log::error!("hook {at}: {msg}"),
                "warn" => log::warn!("hook {at}: {msg}"),
                "debug" => log::debug!("hook {at}: {msg}"),
                _ => log::info!("hook {at}: {msg}"),
            }
            Ok(())
        })?,
    )?;
    let snapshot = reg.snapshot.clone();
    api.set(
        "status",
        lua.create_function(move |lua, ()| {
            let t = lua.create_table()?;
            for ((name, idx), (state, pid, restarts, by)) in snapshot.borrow().services.iter() {
                let row = lua.create_table()?;
                row.set("service", name.as_str())?;
                row.set("instance", *idx)?;
                row.set("state", state.as_str())?;
                row.set("pid", *pid)?;
                row.set("restarts", *restarts)?;
                // The metrics' counters: restarts since start by reason.
                let reasons = lua.create_table()?;
                for (k, n) in crate::services::manager::RESTART_REASONS.iter().zip(by) {
                    reasons.set(*k, *n)?;
                }
                row.set("restarts_by", reasons)?;
                t.push(row)?;
            }
            Ok(t)
        })?,
    )?;
    lua.globals().set("archon", api)?;
    Ok(reg)
}

impl Hooks {
    pub(crate) fn new(lua: Lua, reg: Registry, budget: Rc<LuaBudget>) -> Hooks {
        let _ = lua.set_memory_limit(HOOK_MEMORY);
        let handlers = std::mem::take(&mut *reg.handlers.borrow_mut());
        // Builds an event's table and its read-only proxy in one call: the
        // table constructor's constant keys cost nothing at run time, where
        // setting twelve fields from Rust interned each name every time.
        let make_event = lua
            .load(
                r#"local setmetatable, next, error = setmetatable, next, error
                local function read_only() error("the event is read-only", 2) end
                return function(event, service, instance, pid, old_state, state, status,
                                signal, restarts, delay, time, limit, value, threshold)
                  local t = { event = event, service = service, name = service,
                              instance = instance, pid = pid, old_state = old_state,
                              state = state, status = status, signal = signal,
                              restarts = restarts, delay = delay, time = time,
                              limit = limit, value = value, threshold = threshold }
                  return setmetatable({}, {
                    __index = t,
                    __newindex = read_only,
                    __pairs = function() return next, t, nil end,
                    __metatable = false,
                  })
                end"#,
            )
            .set_name("=archon")
            .eval::<Function>()
            .ok();
        Hooks {
            lua,
            make_event,
            handlers,
            budget,
            queue: reg.queue,
            in_hook: reg.in_hook,
            current: reg.current,
            callbacks: reg.callbacks,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// The event kinds some live hook listens for.
    pub fn wanted(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .handlers
            .iter()
            .filter(|h| !h.disabled)
            .map(|h| h.event.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Calls every matching hook with the event; returns what they asked for.
    pub fn fire(&mut self, ev: &HookEvent) -> Vec<HookAction> {
        for i in 0..self.handlers.len() {
            let h = &self.handlers[i];
            if h.disabled
                || h.event != ev.kind
                || !glob(&h.pattern, &ev.service)
                || h.status.is_some_and(|s| Some(s) != ev.status)
                || h.signal
                    .as_ref()
                    .is_some_and(|s| Some(s) != ev.signal.as_ref())
            {
                continue;
            }
            let (func, at) = (h.func.clone(), h.at.clone());
            if !self.within_window(i) {
                continue;
            }
            let result = self
                .event_table(ev)
                .and_then(|t| self.call(&at, |_| func.call::<()>(t)));
            self.account(i, result);
        }
        self.queue.borrow_mut().drain(..).collect()
    }

    /// A `run` finished: its callback gets the status.
    pub fn run_done(&mut self, callback: u64, by: &str, status: i32) -> Vec<HookAction> {
        let Some(key) = self.callbacks.borrow_mut().keys.remove(&callback) else {
            // Not this state's (it was replaced since): nothing to call.
            return Vec::new();
        };
        let func: mlua::Result<Function> = self.lua.registry_value(&key);
        let _ = self.lua.remove_registry_value(key);
        let idx = self.handlers.iter().position(|h| h.at == by);
        if idx.is_some_and(|i| self.handlers[i].disabled) {
            return Vec::new();
        }
        let result = func.and_then(|f| self.call(by, |_| f.call::<()>(status)));
        match idx {
            Some(i) => self.account(i, result),
            None => {
                if let Err(e) = result {
                    log::warn!("hook callback {by} failed: {}", first_line(&e));
                }
            }
        }
        self.queue.borrow_mut().drain(..).collect()
    }

    fn call(&self, at: &str, f: impl FnOnce(&Lua) -> mlua::Result<()>) -> mlua::Result<()> {
        self.budget.spent.set(0);
        self.budget.limit.set(CALL_BUDGET);
        self.in_hook.set(true);
        *self.current.borrow_mut() = at.to_string();
        let r = f(&self.lua);
        self.in_hook.set(false);
        // What a failed call queued is dropped: it did not finish.
        if r.is_err() {
            self.queue.borrow_mut().clear();
        }
        r
    }

    /// Whether hook `i` may run now: its instructions across calls within
    /// the current window are bounded too.
    fn within_window(&mut self, i: usize) -> bool {
        let h = &mut self.handlers[i];
        if h.window_start.elapsed() >= WINDOW {
            h.window_start = std::time::Instant::now();
            h.window_spent = 0;
            h.throttled = false;
        }
        if h.window_spent <= WINDOW_BUDGET {
            return true;
        }
        if !h.throttled {
            h.throttled = true;
            log::warn!(
                "hook {} spent {WINDOW_BUDGET} instructions within {} s: skipped until the window ends",
                h.at,
                WINDOW.as_secs()
            );
        }
        false
    }

    fn account(&mut self, i: usize, result: mlua::Result<()>) {
        let spent = self.budget.spent.get();
        let h = &mut self.handlers[i];
        h.window_spent += spent;
        h.calls += 1;
        if let Err(e) = result {
            h.failures += 1;
            log::warn!(
                "hook {} failed ({} of {MAX_FAILURES}): {}",
                h.at,
                h.failures,
                first_line(&e)
            );
            if h.failures >= MAX_FAILURES {
                h.disabled = true;
                log::error!("hook {} disabled after {MAX_FAILURES} failures", h.at);
            }
        }
    }

    fn event_table(&self, ev: &HookEvent) -> mlua::Result<Table> {
        match &self.make_event {
            Some(make) => make.call::<Table>((
                ev.kind,
                ev.service.as_str(),
                ev.instance,
                ev.pid,
                ev.old_state.as_str(),
                ev.state.as_str(),
                ev.status,
                ev.signal.as_deref(),
                ev.restarts,
                ev.delay,
                ev.time,
                ev.limit.as_deref(),
                ev.value,
                ev.threshold,
            )),
            // Only if the constant chunk above failed to load.
            None => Err(mlua::Error::runtime("archon: event tables unavailable")),
        }
    }
}

fn first_line(e: &mlua::Error) -> String {
    let s = e.to_string();
    let l = s.lines().next().unwrap_or("").trim();
    l.strip_prefix("runtime error: ").unwrap_or(l).to_string()
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("worker*", "worker.3") && glob("*", "") && glob("w?b", "web"));
        assert!(!glob("worker*", "db") && !glob("w?b", "wb"));
    }
}
