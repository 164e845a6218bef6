#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each,
# installing the nightly toolchain and cargo-fuzz when missing. A crash stops the run
# with the target named; its input is kept under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install, a few minutes)"
    cargo install cargo-fuzz --locked
fi
targets=$(cd fuzz && cargo +nightly fuzz list)
for t in $targets; do
    echo "==> fuzz $t for ${seconds}s"
    start=$(date +%s)
    log="fuzz/artifacts/$t.log"
    mkdir -p fuzz/artifacts
    rc=0
    cargo +nightly fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=4096 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)|panicked' "$log" || true
    if [ "$rc" != 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz: target $t failed (exit $rc); the input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
    echo "fuzz: $t: no crash in ${seconds}s of fuzzing ($(( $(date +%s) - start ))s with its build)"
done
