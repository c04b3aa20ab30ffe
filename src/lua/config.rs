//! The Lua configuration: evaluated once per load in a fresh, sandboxed and
//! bounded Lua state, turned into plain `ServiceSpec`s, then validated.
//! Every error is collected, each with its file and line; a config with any
//! error is refused as a whole.
//!
//! The sandbox: only the `string`, `table`, `math` (without `random`) and
//! `utf8` libraries and the safe base functions; no `io`, `os`, `require`,
//! `load`, `loadfile`, `dofile`, `collectgarbage`, `debug`. An instruction
//! budget and a memory limit bound the evaluation (a loop or a huge string
//! is an error, not a hang), and `pcall`/`xpcall` cannot swallow the
//! budget's error. What the config may call: `service "name" { ... }` and
//! `env("NAME")` (archon's environment, or nil).

use crate::services::spec::{Backoff, Budget, Config, Output, Readiness, Restart, ServiceSpec};
use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// Largest config file read.
pub const MAX_FILE: u64 = crate::protocol::worker::MAX_CONFIG;
/// Memory the evaluation may use.
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Lua VM instructions the evaluation may run.
pub const INSTRUCTION_BUDGET: u64 = 50_000_000;
const HOOK_EVERY: u32 = 10_000;
const BUDGET_TAG: &str = "instruction budget spent";

/// Loads and validates `path`. On error, every problem found, one per line.
pub fn load(path: &Path) -> Result<Config, Vec<String>> {
    load_all(path).map(|(c, _)| c)
}

/// Loads `path`: its services, and its hooks (None when it registers none).
pub fn load_all(path: &Path) -> Result<(Config, Option<super::hooks::Hooks>), Vec<String>> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| vec![format!("{shown}: {e}")])?;
    if meta.len() > MAX_FILE {
        return Err(vec![format!("{shown}: larger than {} bytes", MAX_FILE)]);
    }
    let text = std::fs::read(path).map_err(|e| vec![format!("{shown}: {e}")])?;
    load_str_all(&text, &shown)
}

/// Evaluates config text; `name` is what messages call the file.
pub fn load_str(text: &[u8], name: &str) -> Result<Config, Vec<String>> {
    load_str_all(text, name).map(|(c, _)| c)
}

pub fn load_str_all(
    text: &[u8],
    name: &str,
) -> Result<(Config, Option<super::hooks::Hooks>), Vec<String>> {
    load_with_snapshot(text, name, Rc::default())
}

/// As `load_str_all`, with the hooks' `archon.status()` reading `snapshot`.
pub fn load_with_snapshot(
    text: &[u8],
    name: &str,
    snapshot: Rc<RefCell<super::hooks::Snapshot>>,
) -> Result<(Config, Option<super::hooks::Hooks>), Vec<String>> {
    let errors: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
    let services: Rc<RefCell<Vec<ServiceSpec>>> = Rc::new(RefCell::new(Vec::new()));
    let budget = Rc::new(LuaBudget::default());
    budget.limit.set(INSTRUCTION_BUDGET);
    let lua =
        sandbox(budget.clone()).map_err(|e| vec![format!("{name}: cannot set up Lua: {e}")])?;
    let registry = super::hooks::install(&lua, Rc::from(name), errors.clone(), snapshot)
        .map_err(|e| vec![format!("{name}: cannot set up Lua: {e}")])?;
    // Declarations whose settings table has not come (yet): a bare
    // `service "a"` must not be dropped in silence.
    let unfinished: Rc<RefCell<Vec<(usize, String, bool)>>> = Rc::default();
    let register = {
        let errors = errors.clone();
        let services = services.clone();
        let unfinished = unfinished.clone();
        let file: Rc<str> = Rc::from(name);
        lua.create_function(move |lua, svc_name: Value| {
            let line = lua
                .inspect_stack(1, |d| d.current_line())
                .flatten()
                .unwrap_or(0);
            let slot = {
                let mut u = unfinished.borrow_mut();
                let shown = match &svc_name {
                    Value::String(s) => s.to_string_lossy(),
                    _ => String::new(),
                };
                u.push((line, shown, false));
                u.len() - 1
            };
            let unfinished = unfinished.clone();
            // None: the name was not a string (already reported).
            let svc_name = match svc_name {
                Value::String(s) => Some(s.to_string_lossy()),
                other => {
                    errors.borrow_mut().push(format!(
                        "{file}:{line}: service needs a name string, got {}",
                        other.type_name()
                    ));
                    None
                }
            };
            let errors = errors.clone();
            let services = services.clone();
            let file = file.clone();
            lua.create_function(move |_, body: Value| {
                if let Some(u) = unfinished.borrow_mut().get_mut(slot) {
                    u.2 = true;
                }
                let mut errs = Vec::new();
                let name = svc_name.as_deref().unwrap_or("");
                let spec = parse_service(name, file.clone(), line, body, &mut errs);
                match &svc_name {
                    Some(n) if valid_name(n) => services.borrow_mut().push(spec),
                    Some(n) => errs.push(format!(
                        "{file}:{line}: bad service name {n:?}: use letters, digits, '-', '_', '.' (not digits alone, not ending in '.' and digits, which names an instance), at most 64"
                    )),
                    None => {}
                }
                errors.borrow_mut().extend(errs);
                Ok(())
            })
        })
    }
    .map_err(|e| vec![format!("{name}: {e}")])?;
    let env_fn = lua
        .create_function(|_, var: String| Ok(std::env::var(var).ok()))
        .map_err(|e| vec![format!("{name}: {e}")])?;
    let globals = lua.globals();
    let _ = globals.set("service", register);
    let _ = globals.set("env", env_fn);
    let run = lua
        .load(text)
        .set_name(format!("@{name}"))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .exec();
    if let Err(e) = run {
        errors.borrow_mut().push(first_line(&e.to_string(), name));
    }
    let mut errs = errors.take();
    for (line, svc, _) in unfinished.take().into_iter().filter(|u| !u.2) {
        errs.push(format!(
            "{name}:{line}: service {svc:?} has no settings: write service {svc:?} {{ cmd = {{ ... }} }}"
        ));
    }
    let config = Config {
        services: services.take(),
    };
    errs.extend(config.validate());
    if !errs.is_empty() {
        return Err(errs);
    }
    let hooks = if registry.handlers.borrow().is_empty() {
        None
    } else {
        Some(super::hooks::Hooks::new(lua, registry, budget))
    };
    Ok((config, hooks))
}

/// Not `web.1`: that names instance 1 of `web` in every service verb.
fn valid_name(n: &str) -> bool {
    crate::protocol::is_declarable_service_name(n)
}

/// Lua's messages carry a traceback; the first line says it all. Memory and
/// budget errors get the file name in front when Lua did not put it there.
fn first_line(msg: &str, file: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg).trim();
    let line = line.strip_prefix("runtime error: ").unwrap_or(line);
    let line = line.strip_prefix("syntax error: ").unwrap_or(line);
    if line.starts_with(file) {
        line.to_string()
    } else {
        format!("{file}: {line}")
    }
}

/// The instruction budget of whatever Lua runs now (the config, or one
/// hook call): `spent` is reset before each run, `limit` says how much.
#[derive(Debug, Default)]
pub struct LuaBudget {
    pub spent: std::cell::Cell<u64>,
    pub limit: std::cell::Cell<u64>,
}

/// A fresh sandboxed state (see the module's comment), its instruction
/// hook counting into `budget`. Coroutines are there for hooks; their
/// `resume` and `wrap`, like `pcall` and `xpcall`, re-raise the budget's
/// error, and an `xpcall` handler runs after the call, where the budget
/// still applies (a real message handler would run with hooks off).
pub(crate) fn sandbox(budget: Rc<LuaBudget>) -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE,
        LuaOptions::default(),
    )?;
    lua.set_memory_limit(MEMORY_LIMIT)?;
    let g = lua.globals();
    for name in [
        "dofile",
        "loadfile",
        "load",
        "require",
        "collectgarbage",
        "print",
    ] {
        g.raw_set(name, Value::Nil)?;
    }
    if let Ok(math) = g.get::<Table>("math") {
        math.raw_set("random", Value::Nil)?;
        math.raw_set("randomseed", Value::Nil)?;
    }
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_, debug| {
            let n = budget.spent.get() + HOOK_EVERY as u64;
            budget.spent.set(n);
            let limit = budget.limit.get();
            if n > limit {
                // Keeps failing from here on, wherever it fires.
                let src = debug.source();
                let line = debug.current_line().unwrap_or(0);
                return Err(mlua::Error::runtime(format!(
                    "{}:{line}: {BUDGET_TAG} ({limit} instructions): does it loop?",
                    src.short_src.as_deref().unwrap_or("?")
                )));
            }
            Ok(VmState::Continue)
        },
    )?;
    lua.load(format!(
        r#"
        local rawpcall, pack, unpack, err, tostr = pcall, table.pack, table.unpack, error, tostring
        local create, resume, status = coroutine.create, coroutine.resume, coroutine.status
        local function spent(e) return tostr(e):find("{BUDGET_TAG}", 1, true) end
        local function check(r)
            if not r[1] and spent(r[2]) then err(r[2], 0) end
            return unpack(r, 1, r.n)
        end
        pcall = function(...) return check(pack(rawpcall(...))) end
        xpcall = function(f, h, ...)
            local r = pack(rawpcall(f, ...))
            if r[1] then return unpack(r, 1, r.n) end
            if spent(r[2]) then err(r[2], 0) end
            return false, h(r[2])
        end
        coroutine.resume = function(co, ...) return check(pack(resume(co, ...))) end
        coroutine.wrap = function(f)
            local co = create(f)
            return function(...)
                local r = pack(resume(co, ...))
                if not r[1] then err(r[2], 0) end
                return unpack(r, 2, r.n)
            end
        end
        -- Patterns run in C, where the budget cannot stop them: refuse the
        -- expensive ones (several repetitions) on long subjects.
        local sfind, smatch, sgmatch, sgsub, slen = string.find, string.match, string.gmatch, string.gsub, string.len
        local function guard(s, p, plain)
            if plain or type(s) ~= "string" or type(p) ~= "string" then return end
            local reps = select(2, sgsub(sgsub(p, "%%.", ""), "[%*%+%-]", ""))
            if reps >= 2 and slen(s) > 4096 then
                err("pattern with " .. reps .. " repetitions on a " .. slen(s) .. "-byte string: too slow for archon's Lua", 2)
            end
        end
        string.find = function(s, p, i, plain) guard(s, p, plain) return sfind(s, p, i, plain) end
        string.match = function(s, p, ...) guard(s, p) return smatch(s, p, ...) end
        string.gmatch = function(s, p, ...) guard(s, p) return sgmatch(s, p, ...) end
        string.gsub = function(s, p, ...) guard(s, p) return sgsub(s, p, ...) end
        "#
    ))
    .set_name("=archon")
    .exec()?;
    Ok(lua)
}

const KEYS: &[&str] = &[
    "cmd",
    "env",
    "env_file",
    "env_clear",
    "cwd",
    "user",
    "group",
    "umask",
    "rlimits",
    "stdout",
    "stderr",
    "stop_signal",
    "kill_mode",
    "grace",
    "restart",
    "success_codes",
    "backoff",
    "budget",
    "pool_budget",
    "replicas",
    "depends_on",
    "oneshot",
    "ready",
    "health",
    "start_timeout",
    "startsecs",
    "watchdog",
    "watchdog_signal",
    "essential",
    "autostart",
    "monitor",
    "limits",
    "ports",
    "sockets",
    "startup",
    "readiness",
    "liveness",
    "breaker",
    "hostnames",
    "drain",
];

/// Reads one `service "name" { ... }` body. Problems go to `errs`, each
/// with file and line; what could be read is returned.
fn parse_service(
    name: &str,
    file: Rc<str>,
    line: usize,
    body: Value,
    errs: &mut Vec<String>,
) -> ServiceSpec {
    let mut s = ServiceSpec::new_in(name, file.clone(), line);
    let at = format!("{file}:{line}: service {name:?}");
    let Value::Table(t) = body else {
        errs.push(format!(
            "{at}: expected a table of settings, got {}",
            body.type_name()
        ));
        return s;
    };
    let mut bad = |key: &str, what: &str| errs.push(format!("{at}: {key}: {what}"));
    let mut env_files: Vec<String> = Vec::new();
    // Read after the loop: a probe may name one of `ports`.
    let mut probes: Vec<(crate::services::probe::Which, Value)> = Vec::new();
    let mut breaker: Option<Value> = None;
    for pair in t.clone().pairs::<Value, Value>() {
        let Ok((k, v)) = pair else { continue };
        let key = match &k {
            Value::String(s) => s.to_str().map(|s| s.to_string()).unwrap_or_default(),
            _ => {
                bad("settings", "keys must be names (did you mean cmd = {...}?)");
                continue;
            }
        };
        match key.as_str() {
            "cmd" => match strings(&v) {
                Some(c) if !c.is_empty() && !c[0].is_empty() => s.cmd = c,
                _ => bad("cmd", "expected a non-empty list of strings"),
            },
            "env" => match &v {
                Value::Table(e) => {
                    let mut env = Vec::new();
                    for p in e.clone().pairs::<Value, Value>() {
                        match p {
                            Ok((Value::String(k), val)) => match (k.to_str(), scalar(&val)) {
                                (Ok(k), Some(val)) if !k.is_empty() && !k.contains('=') => {
                                    env.push((k.to_string(), val))
                                }
                                _ => bad("env", "expected NAME = \"value\" pairs"),
                            },
                            _ => bad("env", "expected NAME = \"value\" pairs"),
                        }
                    }
                    env.sort();
                    s.env = env;
                }
                _ => bad("env", "expected a table of NAME = \"value\""),
            },
            "env_file" => match (text(&v), strings(&v)) {
                (Some(f), _) => env_files.push(f),
                (None, Some(fs)) => env_files.extend(fs),
                _ => bad("env_file", "expected a path or a list of paths"),
            },
            "env_clear" => set_bool(&v, &mut s.env_clear, "env_clear", &mut bad),
            "cwd" => match &v {
                Value::String(d) => s.cwd = d.to_str().ok().map(|d| d.to_string()),
                _ => bad("cwd", "expected a directory path"),
            },
            "user" | "group" => match scalar(&v) {
                Some(n) if !n.is_empty() => {
                    if key == "user" {
                        s.user = Some(n)
                    } else {
                        s.group = Some(n)
                    }
                }
                _ => bad(&key, "expected a name or a number"),
            },
            "umask" => match text(&v).and_then(|t| u32::from_str_radix(&t, 8).ok()) {
                Some(m) if m <= 0o777 => s.umask = Some(m),
                _ => bad("umask", "expected an octal string such as \"022\""),
            },
            "rlimits" => match &v {
                Value::Table(r) => {
                    let mut lims = Vec::new();
                    for p in r.clone().pairs::<Value, Value>() {
                        let Ok((k, v)) = p else { continue };
                        let Some(res) =
                            text(&k).filter(|k| crate::platform::rlimit_resource(k).is_some())
                        else {
                            bad("rlimits", "unknown resource (as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, sigpending, stack)");
                            continue;
                        };
                        let one = |v: &Value| match v {
                            Value::String(s) if s.to_str().is_ok_and(|s| s == "unlimited") => {
                                Some(u64::MAX)
                            }
                            other => int(other).and_then(|n| u64::try_from(n).ok()),
                        };
                        let pair = match &v {
                            Value::Table(t) => {
                                let soft = t.get::<Value>("soft").ok().as_ref().and_then(one);
                                let hard = t.get::<Value>("hard").ok().as_ref().and_then(one);
                                soft.zip(hard)
                            }
                            other => one(other).map(|n| (n, n)),
                        };
                        match pair {
                            Some((soft, hard)) if soft <= hard => lims.push((res, soft, hard)),
                            _ => bad(
                                &format!("rlimits.{res}"),
                                "expected a number, \"unlimited\", or { soft = N, hard = N } with soft <= hard",
                            ),
                        }
                    }
                    lims.sort();
                    s.rlimits = lims;
                }
                _ => bad("rlimits", "expected a table such as { nofile = 4096 }"),
            },
            "stdout" | "stderr" => {
                let file = match &v {
                    Value::Table(t) => {
                        let path = t.get::<Value>("file").ok().and_then(|p| text(&p));
                        let size = t.get::<Value>("max_size").ok().and_then(|v| size(&v));
                        let keep = t.get::<Value>("keep").ok().and_then(|v| int(&v));
                        let extra = t
                            .clone()
                            .pairs::<Value, Value>()
                            .filter_map(|p| p.ok())
                            .any(|(k, _)| {
                                !matches!(text(&k).as_deref(), Some("file" | "max_size" | "keep"))
                            });
                        match (path, size, keep) {
                            (Some(p), s, k)
                                if p.starts_with('/')
                                    && !extra
                                    && s.is_none_or(|s| s >= 1024)
                                    && k.is_none_or(|k| (0..=1000).contains(&k)) =>
                            {
                                Some(Output::File {
                                    path: p,
                                    max_size: s.unwrap_or(10 << 20),
                                    keep: k.unwrap_or(5) as u32,
                                })
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let out = match (text(&v).as_deref(), file) {
                    (_, Some(f)) => f,
                    (Some("prefix"), _) => Output::Prefix,
                    (Some("inherit"), _) => Output::Inherit,
                    (Some("null"), _) => Output::Null,
                    _ => {
                        bad(
                            &key,
                            "expected \"prefix\", \"inherit\", \"null\" or { file = \"/abs/path\", max_size = N | \"10M\" (>= 1K), keep = N }",
                        );
                        continue;
                    }
                };
                if key == "stdout" {
                    s.stdout = out
                } else {
                    s.stderr = out
                }
            }
            "stop_signal" => match scalar(&v).and_then(|n| crate::platform::signal_number(&n)) {
                Some(n) => s.stop_signal = n,
                None => bad("stop_signal", "expected a signal name or number"),
            },
            "kill_mode" => match text(&v).as_deref() {
                Some("group") => s.kill_mode = crate::services::spec::KillMode::Group,
                Some("process") => s.kill_mode = crate::services::spec::KillMode::Process,
                _ => bad("kill_mode", "expected \"group\" or \"process\""),
            },
            "grace" => set_ms(&v, &mut s.grace_ms, "grace", &mut bad),
            "start_timeout" => set_ms(&v, &mut s.start_timeout_ms, "start_timeout", &mut bad),
            "startsecs" => set_ms(&v, &mut s.start_secs_ms, "startsecs", &mut bad),
            "watchdog" => set_ms(&v, &mut s.watchdog_ms, "watchdog", &mut bad),
            "watchdog_signal" => {
                match scalar(&v).and_then(|n| crate::platform::signal_number(&n)) {
                    Some(n) => s.watchdog_signal = n,
                    None => bad("watchdog_signal", "expected a signal name or number"),
                }
            }
            "restart" => match text(&v).as_deref() {
                Some("always") => s.restart = Restart::Always,
                Some("on-failure") => s.restart = Restart::OnFailure,
                Some("never") => s.restart = Restart::Never,
                _ => bad(
                    "restart",
                    "expected \"always\", \"on-failure\" or \"never\"",
                ),
            },
            "success_codes" => match ints(&v) {
                Some(c) if c.iter().all(|c| (0..=255).contains(c)) => s.success_codes = c,
                _ => bad("success_codes", "expected a list of exit codes 0-255"),
            },
            "backoff" => match &v {
                Value::Table(b) => {
                    let mut bo = Backoff::default();
                    for p in b.clone().pairs::<String, Value>() {
                        let Ok((k, v)) = p else {
                            bad("backoff", "expected named settings");
                            continue;
                        };
                        match k.as_str() {
                            "initial" => {
                                set_ms(&v, &mut bo.initial_ms, "backoff.initial", &mut bad)
                            }
                            "max" => set_ms(&v, &mut bo.max_ms, "backoff.max", &mut bad),
                            "reset_after" => {
                                set_ms(&v, &mut bo.reset_after_ms, "backoff.reset_after", &mut bad)
                            }
                            "multiplier" => match number(&v) {
                                Some(m) if (1.0..=100.0).contains(&m) => bo.multiplier = m,
                                _ => bad("backoff.multiplier", "expected a number from 1 to 100"),
                            },
                            other => bad(
                                &format!("backoff.{other}"),
                                "unknown setting (initial, multiplier, max, reset_after)",
                            ),
                        }
                    }
                    if bo.max_ms < bo.initial_ms {
                        bad("backoff", "max is below initial");
                    }
                    s.backoff = bo;
                }
                _ => bad("backoff", "expected a table"),
            },
            key @ ("budget" | "pool_budget") => match parse_budget(&v) {
                Some(b) if key == "budget" => s.budget = b,
                Some(b) => s.pool_budget = b,
                None => bad(key, "expected { restarts = N, window = SECONDS } or false"),
            },
            "replicas" => match int(&v) {
                Some(n) if (0..=10_000).contains(&n) => s.replicas = n as u32,
                _ => bad("replicas", "expected a whole number from 0 to 10000"),
            },
            "depends_on" => match strings(&v) {
                Some(d) => {
                    s.depends_on = d;
                    s.depends_on.sort();
                    s.depends_on.dedup();
                }
                None => bad("depends_on", "expected a list of service names"),
            },
            "health" => match &v {
                Value::Table(h) => match check(h, &["command", "interval"]) {
                    Some((argv, interval_ms, _)) => {
                        s.health = Some(crate::services::spec::Health { argv, interval_ms })
                    }
                    None => bad("health", "expected { command = {...}, interval = SECONDS }"),
                },
                _ => bad("health", "expected { command = {...}, interval = SECONDS }"),
            },
            "limits" => match super::settings::parse_limits(&v) {
                Ok(l) => s.limits = Some(l),
                Err(e) => bad("limits", &e),
            },
            "startup" => probes.push((crate::services::probe::Which::Startup, v)),
            "readiness" => probes.push((crate::services::probe::Which::Readiness, v)),
            "liveness" => probes.push((crate::services::probe::Which::Liveness, v)),
            "breaker" => breaker = Some(v),
            "hostnames" => match strings(&v) {
                Some(h) if h.iter().all(|h| crate::services::net::valid_hostname(h)) => {
                    s.hostnames = h.iter().map(|h| h.to_ascii_lowercase()).collect();
                    s.hostnames.sort();
                    s.hostnames.dedup();
                }
                _ => bad(
                    "hostnames",
                    "expected a list of host names such as { \"api.example.test\" }",
                ),
            },
            "drain" => set_ms(&v, &mut s.drain_ms, "drain", &mut bad),
            "ports" => match super::net::parse_ports(&v) {
                Ok(p) => s.ports = p,
                Err(e) => bad("ports", &e),
            },
            "sockets" => match super::net::parse_sockets(&v) {
                Ok(p) => s.sockets = p,
                Err(e) => bad("sockets", &e),
            },
            "monitor" => match super::settings::parse_monitor(&v) {
                Ok(m) => s.monitor = m,
                Err(e) => bad("monitor", &e),
            },
            "oneshot" => set_bool(&v, &mut s.oneshot, "oneshot", &mut bad),
            "essential" => set_bool(&v, &mut s.essential, "essential", &mut bad),
            "autostart" => match &v {
                Value::String(x) if x.to_str().is_ok_and(|x| x == "socket") => {
                    s.autostart = false;
                    s.socket_activated = true;
                }
                _ => set_bool(&v, &mut s.autostart, "autostart", &mut bad),
            },
            "ready" => match &v {
                Value::String(r) if r.to_str().is_ok_and(|r| r == "exec") => {
                    s.ready = Readiness::Exec
                }
                Value::String(r) if r.to_str().is_ok_and(|r| r == "notify") => {
                    s.ready = Readiness::Notify
                }
                Value::Table(r) if r.contains_key("command").unwrap_or(false) => {
                    match check(r, &["command", "interval", "timeout"]) {
                        Some((argv, interval_ms, timeout)) => {
                            s.ready = Readiness::Command { argv, interval_ms };
                            if let Some(t) = timeout {
                                s.start_timeout_ms = t;
                            }
                        }
                        None => bad(
                            "ready",
                            "expected { command = {...}, interval = SECONDS, timeout = SECONDS }",
                        ),
                    }
                }
                Value::Table(r) => match r.get::<Value>("fd").ok().and_then(|v| int(&v)) {
                    Some(fd) if (3..=1023).contains(&fd) => s.ready = Readiness::Fd(fd as i32),
                    _ => bad(
                        "ready",
                        "expected \"exec\", \"notify\" or { fd = N } with N from 3 to 1023",
                    ),
                },
                _ => bad("ready", "expected \"exec\", \"notify\" or { fd = N }"),
            },
            other => bad(
                other,
                &format!("unknown setting (known: {})", KEYS.join(", ")),
            ),
        }
    }
    for (which, v) in probes {
        use crate::services::probe::Which;
        match super::probes::parse_probe(&v, which, &s.ports) {
            Ok(p) => match which {
                Which::Startup => s.startup = Some(p),
                Which::Readiness => s.readiness = Some(p),
                Which::Liveness => s.liveness = Some(p),
            },
            Err(e) => bad(which.as_str(), &e),
        }
    }
    s.breaker = match breaker {
        None => s.liveness.as_ref().map(|_| Default::default()),
        Some(v) => match super::probes::parse_breaker(&v) {
            Ok(b) => b,
            Err(e) => {
                bad("breaker", &e);
                None
            }
        },
    };
    if let Some(p) = &s.startup {
        // The start timeout must not cut a startup probe's own budget
        // short (Kubernetes has only the probe).
        let budget = p.initial_delay_ms
            + u64::from(p.failure_threshold)
                * (p.interval_ms.max(p.failing_interval_ms) + p.timeout_ms)
            + 1000;
        if s.start_timeout_ms == ServiceSpec::new("", "", 0).start_timeout_ms {
            s.start_timeout_ms = s.start_timeout_ms.max(budget);
        }
    }
    if s.breaker.is_some() && s.liveness.is_none() {
        bad(
            "breaker",
            "it counts liveness restarts: give a liveness probe",
        );
    }
    if s.socket_activated && s.sockets.is_empty() {
        bad(
            "autostart",
            "\"socket\" starts it on a connection to its sockets: give sockets",
        );
    }
    if !s.hostnames.is_empty() && s.ports.is_empty() {
        bad(
            "hostnames",
            "the registry gives instances' ports: give ports",
        );
    }
    if s.health.is_some() && s.readiness.is_some() {
        bad(
            "health",
            "health is the older form of readiness: give one of them",
        );
    }
    if s.oneshot && (s.startup.is_some() || s.readiness.is_some() || s.liveness.is_some()) {
        bad("oneshot", "probes are for long-running services");
    }
    // After `env`, whatever the order the table gives: a file's variables
    // win over `env`, as systemd's EnvironmentFile= over Environment=.
    for f in env_files {
        match read_env_file(&f) {
            Ok(vars) => {
                for (k, v) in vars {
                    s.env.retain(|(ek, _)| *ek != k);
                    s.env.push((k, v));
                }
            }
            Err(e) => bad("env_file", &e),
        }
    }
    if s.cmd.is_empty() && !errs.iter().any(|e| e.contains(": cmd:")) {
        errs.push(format!("{at}: cmd: missing"));
    }
    if s.user.is_some() || s.group.is_some() {
        match resolve_identity(s.user.as_deref(), s.group.as_deref()) {
            Ok(id) => s.identity = Some(id),
            Err(e) => errs.push(format!("{at}: {e}")),
        }
    }
    if s.oneshot && (s.start_secs_ms > 0 || s.watchdog_ms > 0) {
        errs.push(format!(
            "{at}: startsecs and watchdog are for long-running services, not a oneshot"
        ));
    }
    let passed = s.passed_fd_names();
    let mut names: Vec<&str> = s
        .ports
        .iter()
        .map(|p| p.name.as_str())
        .chain(s.sockets.iter().map(|k| k.name.as_str()))
        .collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        errs.push(format!("{at}: a port and a socket have the same name"));
    }
    if let Readiness::Fd(n) = s.ready {
        if !passed.is_empty() && (n as usize) < 3 + passed.len() {
            errs.push(format!(
                "{at}: ready = {{ fd = {n} }} is one of the fds passed from 3 on ({}); use {} or above",
                passed.join(", "),
                3 + passed.len()
            ));
        }
    }
    if passed.len() > crate::platform::MAX_EXTRA_FDS - 1 {
        errs.push(format!("{at}: too many ports and sockets to pass"));
    }
    if s.oneshot && s.replicas > 1 {
        errs.push(format!(
            "{at}: a oneshot service has one instance (replicas = {})",
            s.replicas
        ));
    }
    s
}

/// user -> its uid, primary gid and groups; group -> overrides the gid.
fn resolve_identity(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<crate::services::spec::Identity, String> {
    let mut id = crate::services::spec::Identity {
        uid: None,
        gid: None,
        groups: Vec::new(),
    };
    if let Some(u) = user {
        let (uid, gid) = crate::platform::lookup_user(u)?;
        id.uid = Some(uid);
        id.gid = Some(gid);
        id.groups = crate::platform::user_groups(u, gid);
    }
    if let Some(g) = group {
        let gid = crate::platform::lookup_group(g)?;
        id.gid = Some(gid);
        if !id.groups.contains(&gid) && id.uid.is_some() {
            id.groups.push(gid);
        }
    }
    Ok(id)
}

/// `{ restarts = N, window = SECONDS }` or `false` (Some(None)); None when
/// it is neither.
fn parse_budget(v: &Value) -> Option<Option<Budget>> {
    match v {
        Value::Boolean(false) => Some(None),
        Value::Table(b) => {
            let restarts = b.get::<Value>("restarts").ok().and_then(|v| int(&v));
            let window = b.get::<Value>("window").ok().and_then(|v| seconds(&v));
            let extra = b
                .clone()
                .pairs::<Value, Value>()
                .filter_map(|p| p.ok())
                .any(|(k, _)| !matches!(text(&k).as_deref(), Some("restarts" | "window")));
            match (restarts, window) {
                (Some(r), Some(w)) if (0..=1_000_000).contains(&r) && !extra => {
                    Some(Some(Budget {
                        restarts: r as u32,
                        window_ms: w,
                    }))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A systemd-style environment file: `NAME=value` lines; blank lines and
/// `#` or `;` comments skipped; an `export ` prefix allowed; a value in
/// matching single or double quotes loses them. `-/path` may be missing.
/// Read when the config is loaded (and on reload), at most 1 MiB.
fn read_env_file(spec: &str) -> Result<Vec<(String, String)>, String> {
    use std::io::Read;
    let (optional, path) = match spec.strip_prefix('-') {
        Some(p) => (true, p),
        None => (false, spec),
    };
    let mut text = String::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            f.take(MAX_FILE + 1)
                .read_to_string(&mut text)
                .map_err(|e| format!("{path}: {e}"))?;
        }
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{path}: {e}")),
    }
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{path}: larger than {MAX_FILE} bytes"));
    }
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{path}:{}: expected NAME=value", n + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{path}:{}: bad variable name {k:?}", n + 1));
        }
        let v = v.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
            .unwrap_or(v);
        vars.push((k.to_string(), unquoted.to_string()));
    }
    Ok(vars)
}

/// Every key of `t` is one of `keys` (else which is not, and the list).
pub(super) fn known_keys(t: &mlua::Table, keys: &[&str]) -> Result<(), String> {
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        let k = text(&k).unwrap_or_default();
        if !keys.contains(&k.as_str()) {
            return Err(format!("unknown key {k:?} ({})", keys.join(", ")));
        }
    }
    Ok(())
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.to_str().ok().map(|s| s.to_string()),
        _ => None,
    }
}

/// A string or a number, as text (env values, signal names).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.to_str().ok().map(|s| s.to_string()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) if n.is_finite() => Some(*n),
        _ => None,
    }
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 && n.is_finite() => Some(*n as i64),
        _ => None,
    }
}

/// `{ command = {...}, interval = s [, timeout = s] }`: (argv, interval
/// ms, timeout ms). Interval defaults to 1 s, at least 10 ms.
fn check(t: &Table, allowed: &[&str]) -> Option<(Vec<String>, u64, Option<u64>)> {
    let extra = t
        .clone()
        .pairs::<Value, Value>()
        .filter_map(|p| p.ok())
        .any(|(k, _)| !text(&k).is_some_and(|k| allowed.contains(&k.as_str())));
    if extra {
        return None;
    }
    let argv = strings(&t.get::<Value>("command").ok()?).filter(|a| !a.is_empty())?;
    let interval = match t.get::<Value>("interval").ok()? {
        Value::Nil => 1000,
        v => seconds(&v).filter(|ms| *ms >= 10)?,
    };
    let timeout = match t.get::<Value>("timeout").ok()? {
        Value::Nil => None,
        v => Some(seconds(&v)?),
    };
    Some((argv, interval, timeout))
}

/// A size in bytes: a number, or a string with K, M or G.
pub(super) fn size(v: &Value) -> Option<u64> {
    if let Some(n) = int(v) {
        return u64::try_from(n).ok();
    }
    let t = text(v)?;
    let (num, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t.as_str(), 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Seconds (a number, fractions allowed) as milliseconds.
pub(super) fn seconds(v: &Value) -> Option<u64> {
    number(v)
        .filter(|s| (0.0..=7.0 * 86400.0).contains(s))
        .map(|s| (s * 1000.0).round() as u64)
}

/// A Lua sequence (1..n, nothing else) of strings.
fn strings(v: &Value) -> Option<Vec<String>> {
    let Value::Table(t) = v else { return None };
    let n = t.raw_len();
    let mut out = Vec::with_capacity(n);
    for i in 1..=n {
        out.push(text(&t.raw_get::<Value>(i).ok()?)?);
    }
    (t.clone().pairs::<Value, Value>().count() == n).then_some(out)
}

fn ints(v: &Value) -> Option<Vec<i32>> {
    let Value::Table(t) = v else { return None };
    let n = t.raw_len();
    let mut out = Vec::with_capacity(n);
    for i in 1..=n {
        out.push(i32::try_from(int(&t.raw_get::<Value>(i).ok()?)?).ok()?);
    }
    (t.clone().pairs::<Value, Value>().count() == n).then_some(out)
}

fn set_bool(v: &Value, into: &mut bool, key: &str, bad: &mut impl FnMut(&str, &str)) {
    match v {
        Value::Boolean(b) => *into = *b,
        _ => bad(key, "expected true or false"),
    }
}

fn set_ms(v: &Value, into: &mut u64, key: &str, bad: &mut impl FnMut(&str, &str)) {
    match seconds(v) {
        Some(ms) => *into = ms,
        None => bad(key, "expected seconds (a number from 0 to 604800)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Config {
        load_str(text.as_bytes(), "t.lua").unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errs(text: &str) -> Vec<String> {
        load_str(text.as_bytes(), "t.lua").expect_err("should fail")
    }

    #[test]
    fn a_full_service() {
        let c = ok(r#"
            local port = 8000 + 80
            service "db" { cmd = {"postgres"}, ready = { fd = 3 }, stop_signal = "INT" }
            service "web" {
                cmd = {"/usr/bin/web", "--port", tostring(port)},
                env = { PORT = port, MODE = "prod" },
                restart = "on-failure", success_codes = {0, 3},
                backoff = { initial = 0.5, multiplier = 3, max = 20, reset_after = 30 },
                budget = { restarts = 4, window = 60 },
                replicas = 3, depends_on = {"db"}, grace = 2.5, essential = true,
            }
        "#);
        assert_eq!(c.services.len(), 2);
        let w = &c.services[1];
        assert_eq!(w.line, 4);
        assert_eq!(w.cmd, ["/usr/bin/web", "--port", "8080"]);
        assert_eq!(
            w.env,
            [
                ("MODE".into(), "prod".into()),
                ("PORT".into(), "8080".into())
            ]
        );
        assert_eq!(w.restart, Restart::OnFailure);
        assert_eq!(w.backoff.initial_ms, 500);
        assert_eq!(
            w.budget,
            Some(Budget {
                restarts: 4,
                window_ms: 60_000
            })
        );
        assert_eq!((w.replicas, w.grace_ms, w.essential), (3, 2500, true));
        assert_eq!(c.services[0].ready, Readiness::Fd(3));
        assert_eq!(c.services[0].stop_signal, 2);
    }

    #[test]
    fn empty_names_and_bare_declarations_are_errors_not_dropped() {
        let all = errs("service \"\" { cmd = {\"x\"} }\n").join("\n");
        assert!(all.contains("t.lua:1: bad service name \"\""), "{all}");
        let all = errs("service \"a\" { cmd = {\"x\"} }\nservice \"b\"\n").join("\n");
        assert!(
            all.contains("t.lua:2: service \"b\" has no settings"),
            "{all}"
        );
        let all = errs("service(nil) { cmd = {\"x\"} }\n").join("\n");
        assert!(
            all.contains("t.lua:1: service needs a name string"),
            "{all}"
        );
    }

    #[test]
    fn every_error_is_reported_with_file_and_line() {
        let e = errs(
            "service \"a\" { cmd = \"notalist\", colour = 1 }\n\
             service \"b\" { cmd = {\"x\"}, replicas = -1, restart = \"sometimes\" }\n\
             service \"a\" { cmd = {\"y\"}, depends_on = {\"zz\"} }\n",
        );
        let all = e.join("\n");
        assert!(
            all.contains("t.lua:1: service \"a\": cmd: expected"),
            "{all}"
        );
        assert!(
            all.contains("t.lua:1: service \"a\": colour: unknown setting"),
            "{all}"
        );
        assert!(all.contains("t.lua:2: service \"b\": replicas"), "{all}");
        assert!(all.contains("t.lua:2: service \"b\": restart"), "{all}");
        assert!(
            all.contains("t.lua:3: service \"a\" is declared twice"),
            "{all}"
        );
        assert!(all.contains("unknown service \"zz\""), "{all}");
    }

    #[test]
    fn syntax_errors_and_cycles() {
        let e = errs("service \"a\" { cmd = {\"x\"} \n service \"b\" {");
        assert!(e[0].starts_with("t.lua:2:"), "{e:?}");
        let e = errs(
            "service \"a\" { cmd = {\"x\"}, depends_on = {\"b\"} }\nservice \"b\" { cmd = {\"x\"}, depends_on = {\"a\"} }",
        );
        assert!(e[0].contains("dependency cycle: a -> b -> a"), "{e:?}");
    }

    #[test]
    fn loops_and_bombs_are_stopped_not_hung() {
        let e = errs("while true do end");
        assert!(e[0].contains("instruction budget"), "{e:?}");
        assert!(e[0].starts_with("t.lua:1:"), "{e:?}");
        let e = errs("while true do pcall(function() while true do end end) end");
        assert!(e[0].contains("instruction budget"), "{e:?}");
        let e = errs("local ok = xpcall(function() while true do end end, function(m) return m end)\nwhile true do end");
        assert!(e[0].contains("instruction budget"), "{e:?}");
        let e = errs("local s = 'x' for i = 1, 40 do s = s .. s end");
        assert!(e[0].contains("memory"), "{e:?}");
        let e = errs("local t = {} for i = 1, 1e9 do t[i] = i end");
        assert!(
            e.iter()
                .any(|m| m.contains("memory") || m.contains("budget")),
            "{e:?}"
        );
    }

    #[test]
    fn the_sandbox_has_no_way_out() {
        for code in [
            "io.open('/etc/passwd')",
            "os.execute('true')",
            "require('os')",
            "load('return 1')()",
            "dofile('/etc/passwd')",
            "math.random()",
            "debug.getinfo(1)",
            "collectgarbage('stop')",
        ] {
            let e = errs(code);
            assert!(e[0].starts_with("t.lua:1:"), "{code}: {e:?}");
        }
        // env() reads archon's environment.
        let c = ok("service 'x' { cmd = { env('PATH') and 'yes' or 'no' } }");
        assert_eq!(c.services[0].cmd, ["yes"]);
    }
}
