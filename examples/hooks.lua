-- Hooks for archon (see archon-hooks(5)): plain Lua functions called when
-- something happens, acting through the `archon` table.
--   archon --config examples/hooks.lua
-- The services only use sh and sleep.

service "db" {
  cmd = { "sh", "-c", "sleep 0.3; echo >&3; exec sleep 100000" },
  ready = { fd = 3 },
}
service "worker" {
  cmd = { "sh", "-c", "echo \"worker $ARCHON_INSTANCE up\"; exec sleep 100000" },
  replicas = 2, depends_on = { "db" },
}
service "payments" {
  cmd = { "sh", "-c", "echo 'payments: upstream down'; exit 1" },
  restart = "on-failure", backoff = { initial = 0.2 },
  budget = { restarts = 3, window = 60 },
}
service "payments-fallback" {
  cmd = { "sh", "-c", "echo 'serving from cache'; exec sleep 100000" },
  autostart = false,
}

-- Restart the workers whenever the database becomes ready again (after a
-- restart of db, its old connections are gone).
local db_was_ready = false
on("ready", "db", function(ev)
  if db_was_ready then
    archon.log("info", "db is back: rolling restart of the workers")
    archon.restart("worker")
  end
  db_was_ready = true
end)

-- When payments has spent its restart budget (it failed for good after
-- three restarts), start the fallback and say so.
on("failed", "payments", function(ev)
  archon.log("warn", "payments failed " .. ev.restarts .. " restarts in; starting the fallback")
  archon.start("payments-fallback")
  archon.set_status("payments", "replaced by payments-fallback")
end)

-- Any `Run` that exits non-zero: tell a webhook (asynchronously: the
-- result comes back to the callback later, archon never waits for it).
on("run_exited", "*", function(ev)
  if ev.status ~= 0 then
    local body = string.format('{"command":"%s","status":%d}', ev.service, ev.status)
    archon.run({ "curl", "-fsS", "-m", "5", "-H", "Content-Type: application/json",
                 "-d", body, env("WEBHOOK_URL") or "http://127.0.0.1:9/hook" },
      function(status)
        if status ~= 0 then archon.log("warn", "webhook call failed: " .. status) end
      end)
  end
end)

-- A process archon only watches (MonitorFD / MonitorPid) went away: start
-- the service that replaces it.
on("monitor_exited", "legacy-daemon", function(ev)
  archon.log("warn", "legacy-daemon (pid " .. tostring(ev.pid) .. ") exited; starting its replacement")
  archon.start("worker")
end)
