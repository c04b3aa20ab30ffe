-- A small stack for archon (see archon-config(5)):
--   archon --config examples/stack.lua
-- Everything here uses only sh and sleep, so it runs anywhere.

-- A oneshot: runs to completion before its dependents start.
service "migrate" {
  cmd = { "sh", "-c", "echo 'applying migrations'; sleep 0.2; echo 'schema is current'" },
  oneshot = true,
  restart = "on-failure",
}

-- A database that says when it is ready (the s6 convention: a newline on
-- fd 3), with its own stop signal and grace period.
service "db" {
  cmd = { "sh", "-c", "echo 'db: starting'; sleep 0.3; echo >&3; echo 'db: accepting connections'; exec sleep 100000" },
  ready = { fd = 3 },
  stop_signal = "INT",
  grace = 5,
}

-- A pool of web workers, each with its index in ARCHON_INSTANCE; they start
-- once the database is ready and the migration has succeeded.
service "web" {
  cmd = { "sh", "-c", "echo \"worker $ARCHON_INSTANCE listening on port $((8080 + ARCHON_INSTANCE))\"; exec sleep 100000" },
  replicas = 2,
  depends_on = { "db", "migrate" },
  env = { APP_ENV = "demo" },
}

-- A job that keeps failing: restarted with exponential backoff (0.2 s, 0.4 s,
-- 0.8 s, ...) until its budget of 3 restarts a minute is spent; then it
-- stays failed until `archonctl start flaky`.
service "flaky" {
  cmd = { "sh", "-c", "echo 'flaky: cannot reach upstream'; exit 1" },
  restart = "on-failure",
  backoff = { initial = 0.2, multiplier = 2, max = 5, reset_after = 30 },
  budget = { restarts = 3, window = 60 },
}
