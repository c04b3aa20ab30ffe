#!/bin/sh
# Runs every libFuzzer target of fuzz/ for SECONDS each (default 15), on
# the stable toolchain: the coverage instrumentation is plain codegen
# flags. Corpora live in fuzz/corpus/<target> (seeded from protocol/);
# crashes are written to fuzz/artifacts/ and make this script fail.
#   scripts/fuzz.sh            # about a minute: what CI runs
#   scripts/fuzz.sh 3600       # the longer run
set -eu
cd "$(dirname "$0")/../fuzz"
secs=${1:-15}
target=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags="$flags -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags="$flags -Cllvm-args=-sanitizer-coverage-pc-table"
flags="$flags -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
cargo run --quiet --release --bin seed -- corpus
RUSTFLAGS="$flags" cargo build --quiet --release --target "$target" \
    --bin framing --bin record --bin request --bin worker
mkdir -p artifacts
for t in framing record request worker; do
    echo "fuzzing $t for ${secs}s"
    "target/$target/release/$t" -max_total_time="$secs" -max_len=70000 \
        -artifact_prefix="artifacts/$t-" -print_final_stats=1 \
        "corpus/$t" 2>"artifacts/$t.log" || {
        tail -40 "artifacts/$t.log"
        echo "fuzz target $t failed: see fuzz/artifacts/" >&2
        exit 1
    }
    grep -E '^stat::(number_of_executed_units|new_units_added)' "artifacts/$t.log" || true
done
