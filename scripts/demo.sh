#!/bin/sh
# demo.sh: start archon on a socket in a temp dir, drive it with archonctl and
# with the shell scripts (socat or nc), show every reply, stop it.
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

"$bin/archon" --log-level info 2>"$dir/archon.log" &
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

say "stopping archon (SIGTERM): it stops its daemons and removes its socket"
kill -TERM "$pid"
wait "$pid" && echo "archon exited 0"
[ -e "$ARCHON_SOCKET" ] || echo "socket removed"
say "archon's log"
cat "$dir/archon.log"

say "entrypoint mode: archon --no-socket -- sh -c '...; exit 3' exits with the command's status"
"$bin/archon" --no-socket -- sh -c 'echo "I am the main command, pid $$ in my own group"; exit 3' \
    && status=0 || status=$?
echo "archon exited $status"
