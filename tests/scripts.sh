#!/bin/bash
# Drives the POSIX sh scripts in scripts/ against a live archon at
# $ARCHON_SOCKET, with the client named by $ARCHON_CLIENT (socat or nc).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
s=$top/scripts
check() { # description, got, want-pattern
    # shellcheck disable=SC2053 # the third argument is a glob on purpose
    if [[ $2 != $3 ]]; then echo "FAIL ($ARCHON_CLIENT): $1: got [$2], want [$3]" >&2; exit 1; fi
}

check "send Version" "$("$s/archon-send" Version)" "Ok,archon,*,protocol=1"
check "send two" "$("$s/archon-send" 'Run,/bin/sh,-c,exit 4' Version | head -1)" "ExitStatus,4"
check "stdin lines" "$(printf 'Frob\nVersion\n' | "$s/archon-send" - | tr '\n' '|')" "Error,unknown-verb,*|Ok,archon,*|"

set +e
"$s/archon-run" /bin/sh -c 'exit 9' >/dev/null
check "archon-run status" "$?" "9"
# shellcheck disable=SC2016 # $X is for the inner shell
"$s/archon-run" -e 'X=a, b' -- /bin/sh -c 'test "$X" = "a, b"' >/dev/null
check "archon-run env with comma" "$?" "0"
set -e

id=$("$s/archon-start" sleep 300)
check "archon-start" "$id" "Ok,*"
id=${id#Ok,}
check "archon-status" "$("$s/archon-status" "$id" | tail -1)" "*$id*daemon*running*sleep 300"

# Subscribe: events for a command started after the subscription.
events=$(mktemp)
set -m # the subscriber gets its own process group, killed whole below
ARCHON_WAIT=20 "$s/archon-subscribe" >"$events" 2>/dev/null &
sub=$!
set +m
# The subscription may start after the first runs: wait for one command whose
# start and exit were both seen.
seen=""
for _ in $(seq 1 2000); do
    "$s/archon-send" 'Run,/bin/true' >/dev/null
    seen=$(awk '$3 == "run" && $5 == "started" { s[$2] = 1 }
        $5 == "exited" && $6 == "0" && s[$2] { print $2; exit }' "$events")
    [ -n "$seen" ] && break
done
kill -- "-$sub" 2>/dev/null || true
wait "$sub" 2>/dev/null || true
[ -n "$seen" ] || { echo "FAIL: no started+exited events: $(cat "$events")" >&2; exit 1; }
rm -f "$events"

check "stop" "$("$s/archon-send" "Stop,$id,1")" "Ok,$id,143"
echo "scripts ok with $ARCHON_CLIENT"
