#!/bin/sh
# demo.sh: start archon on a socket in a temp dir with the bundled services
# config (examples/stack.lua), show the stack with archonctl, resize a pool,
# drive archon with archonctl and the shell scripts (socat or nc), stop it.
# Builds the release binaries first if needed.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release --quiet --bins
bin=$top/target/release
dir=$(mktemp -d)
ARCHON_SOCKET=$dir/archon.sock
export ARCHON_SOCKET
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

"$bin/archon" --log-level info --config examples/stack.lua \
    >"$dir/services.out" 2>"$dir/archon.log" &
pid=$!
tries=0
until "$bin/archonctl" version >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 500 ] || { echo "archon did not start" >&2; cat "$dir/archon.log" >&2; exit 1; }
    sleep 0.01
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "archonctl version"
"$bin/archonctl" version

say "the stack of examples/stack.lua: waiting until both web workers are running"
tries=0
until [ "$("$bin/archonctl" --csv status web | grep -c ',running,')" -eq 2 ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 1000 ] || { echo "the stack did not come up" >&2; cat "$dir/archon.log" >&2; exit 1; }
    sleep 0.01
done
sleep 1 # let flaky spend some of its restart budget, for the show
say "archonctl status"
"$bin/archonctl" status
say "archonctl scale web 3; archonctl status web"
"$bin/archonctl" scale web 3
tries=0
until [ "$("$bin/archonctl" --csv status web | grep -c ',running,')" -eq 3 ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 1000 ] || { echo "web did not scale" >&2; exit 1; }
    sleep 0.01
done
"$bin/archonctl" status web
say "what the services wrote (archon's stdout, one prefix per instance)"
cat "$dir/services.out"
say "archonctl logs -n 3 web.2 (kept by archon per instance); archonctl status --tree"
"$bin/archonctl" logs -n 3 web.2
"$bin/archonctl" status --tree
say "archonctl run -- sh -c 'echo output reaches this terminal; exit 7'"
"$bin/archonctl" run -- sh -c 'echo output reaches this terminal; exit 7' || echo "(exit status $?)"
say "archonctl start sleep 1000"
id=$("$bin/archonctl" start sleep 1000)
echo "started id $id"

if command -v socat >/dev/null 2>&1 || command -v nc >/dev/null 2>&1; then
    say "requests from examples/demo.requests, through scripts/archon-send"
    while IFS= read -r line; do printf '> %s\n' "$line"; done <examples/demo.requests
    scripts/archon-send - <examples/demo.requests | sed 's/^/< /'
    say "scripts/archon-status"
    scripts/archon-status
else
    say "neither socat nor nc is installed: skipping the shell-script part (apt-get install socat)"
fi
say "archonctl stop $id 1"
"$bin/archonctl" stop "$id" 1
say "archonctl --csv status"
"$bin/archonctl" --csv status

say "stopping archon (SIGTERM): it stops the web workers, then db (dependents first), and its daemons"
kill -TERM "$pid"
wait "$pid" && echo "archon exited 0"
[ -e "$ARCHON_SOCKET" ] || echo "socket removed"
say "archon's log"
cat "$dir/archon.log"

say "entrypoint mode: archon --no-socket -- sh -c '...; exit 3' exits with the command's status"
"$bin/archon" --no-socket -- sh -c 'echo "I am the main command, pid $$ in my own group"; exit 3' \
    && status=0 || status=$?
echo "archon exited $status"
