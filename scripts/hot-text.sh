#!/usr/bin/env bash
# Regenerates link/hot-text.txt: the functions archon runs as a container's
# init (start, one child, an orphan, a signal, the exit) and as a supervisor
# answering queries, which build.rs has the linker put together at the
# start of the text: the loop's first, grouped by the scenarios that run
# them, then start-up's. The kernel maps a file's pages
# around each fault (fault-around, 64 KiB), so code run at start-up that is
# spread over the whole text maps all of it; kept together it maps a few
# windows (BENCHMARKS.md, "archon's fixed costs").
#
# Needs valgrind (callgrind lists every function run), unshare, and the musl
# target (the same build as `make static`). Run it after changes to the
# start-up, the loop or the exit path, then `archon-bench --entrypoint-only`.
# Names are kept without their hash, so the list survives most changes; a
# stale list makes archon bigger, never wrong.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "hot-text: needs valgrind" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target=x86_64-unknown-linux-musl
# Both builds: the static one of `make static` and the glibc one; their
# standard libraries take different paths.
CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --locked -p archon \
    --target "$target" --target-dir "$work/t"
CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --locked -p archon \
    --target-dir "$work/t"
ns=(unshare --pid --fork --mount-proc --)
# Every process writes its own file; a child archon starts dumps before its
# execve, which is how the code it runs in archon's memory (a CLONE_VM
# child) gets listed too. Each scenario runs twice: once listing
# everything (cg.all.*), once only what runs inside the loop
# (`EventLoop::run`, cg.loop.*). The loop's functions go first: a second
# after start-up archon unmaps its text (event_loop/pages.rs), and what an
# event maps back then is the windows these few functions share; the rest
# is start-up's, run once.
run_loop='--toggle-collect=_ZN6archon10event_loop9EventLoop3run17h*'
scenarios() { # BIN PREFIX VALGRIND-ARGS...
    local bin=$1 out=$2
    shift 2
    local vg=(valgrind --tool=callgrind --demangle=no --dump-before=execve
        "--callgrind-out-file=$work/$out.%p" "$@")
    # A plain child; PID 1 with a child that sleeps past the release of
    # the start-up's pages, makes an orphan and exits; PID 1 told to stop.
    # (valgrind runs archon in its own process: archon is PID 1.) Each
    # scenario's files are named after it: functions the same scenarios
    # run are put next to each other.
    "${vg[@]/%.%p/.a.%p}" "$bin" -- /bin/true >/dev/null 2>&1
    "${ns[@]}" "${vg[@]/%.%p/.b.%p}" "$bin" -- sh -c 'sleep 2.5; sh -c "true &"; sleep 0.3' >/dev/null 2>&1
    "${ns[@]}" "${vg[@]/%.%p/.c.%p}" "$bin" -- sh -c 'kill -TERM 1; sleep 1' >/dev/null 2>&1 || true
    # A supervisor answering queries on fresh connections, then stopped.
    local sock="$work/s.$out"
    "${vg[@]/%.%p/.d.%p}" "$bin" --socket "$sock" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 300); do
        [ -S "$sock" ] && break
        sleep 0.1
    done
    for q in Version Status List Tree Version Status,1 Nonsense; do
        printf '%s\n' "$q" | timeout 10 socat - "UNIX-CONNECT:$sock" >/dev/null 2>&1 || true
    done
    kill -TERM "$pid"
    wait "$pid" || true
}
for bin in "$work/t/$target/release/archon" "$work/t/release/archon"; do
    scenarios "$bin" cg.all
    scenarios "$bin" cg.loop --collect-atstart=no "$run_loop"
done
libc="$(rustc --print sysroot)/lib/rustlib/$target/lib/self-contained/libc.a"
nm -A --defined-only "$libc" 2>/dev/null | awk '$2 ~ /^[TtWw]$/ {print $1, $3}' >"$work/libc.syms"
names() { cat "$@" | sed -n 's/^c\{0,1\}fn=([0-9]*) //p' | sort -u; }
for s in a b c d; do
    names "$work"/cg.loop."$s".* >"$work/loop.$s"
done
names "$work"/cg.all.* >"$work/all"
python3 - "$work/all" "$work/libc.syms" "$work"/loop.? >link/hot-text.txt <<'PY'
import re, sys
member = {}
for line in open(sys.argv[2]):
    path, sym = line.split()
    member.setdefault(sym, path.rsplit(":", 2)[-2])

def entries(path):
    out = set()
    for n in open(path):
        n = n.strip()
        # LLVM's clone suffixes (.llvm.N, .N) vary from build to build.
        n = re.sub(r"(\.llvm)?\.[0-9]+$", "", n)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.$]*", n):
            continue
        m = re.fullmatch(r"(_ZN.*17h)[0-9a-f]{16}E", n)
        if m:
            out.add(m.group(1) + "*")
        elif n.startswith("_R"):
            # v0 names (the standard library's): crate hashes differ
            # between targets (glibc, musl) and toolchains.
            out.add(re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", n) + "*")
        elif n in member:
            out.add(member[n])
        elif not n.startswith("_ZN"):
            out.add(n + "*")
    return out

# Which scenarios run each of the loop's functions. The queries' first (a
# supervisor's most frequent event: health checks, archonctl), those all
# scenarios run leading, then the others; functions run by the same
# scenarios next to each other, so that one kind of event maps few
# windows.
runs = {}
for i, path in enumerate(sys.argv[3:]):
    for e in entries(path):
        runs.setdefault(e, set()).add(i)
# The child's last call (callgrind dumps before it) and the loop itself.
for e in ("execve.lo", "_ZN6archon10event_loop9EventLoop3run17h*"):
    runs[e] = set(range(len(sys.argv) - 3))
queries = len(sys.argv) - 4  # loop.d, the last
loop = sorted(runs, key=lambda e: (queries not in runs[e], -len(runs[e]), sorted(runs[e]), e))
rest = entries(sys.argv[1]) - set(loop)
print("# Generated by scripts/hot-text.sh; read by build.rs, in order. One entry")
print("# a line: a symbol glob (Rust hashes as *), or a member of musl's libc.a,")
print("# `name.lo`. First what the loop runs (events, queries, the exit), then")
print("# what start-up runs once.")
for e in loop:
    print(e)
print("# start-up")
for e in sorted(rest):
    print(e)
PY
echo "hot-text: $(grep -vc '^#' link/hot-text.txt) entries in link/hot-text.txt"
