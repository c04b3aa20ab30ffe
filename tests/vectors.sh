#!/bin/bash
# Replays the error vectors of protocol/requests.tsv against a live archon at
# $ARCHON_SOCKET through socat: each must be answered `Error,<kind>,...`.
# Then checks that the connection survived by asking Version after each.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
fail=0
n=0
while IFS=$'\t' read -r request expected; do
    [[ $request == \#* ]] && continue
    [[ $expected == !* ]] || continue
    kind=${expected#!}
    # printf %b understands the vector escapes (\n \r \t \0 \\ \xHH).
    reply=$( { printf '%b\n' "$request"; printf 'Version\n'; } |
        socat -t 10 - "UNIX-CONNECT:$ARCHON_SOCKET")
    first=${reply%%$'\n'*}
    second=${reply#*$'\n'}
    if [[ $first != "Error,$kind,"* || $second != Ok,archon,* ]]; then
        echo "FAIL: $request -> $reply (want Error,$kind)" >&2
        fail=1
    fi
    n=$((n + 1))
done <"$top/protocol/requests.tsv"
echo "replayed $n error vectors"
[ "$n" -gt 20 ] || { echo "too few vectors" >&2; exit 1; }
exit "$fail"
