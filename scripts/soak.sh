#!/usr/bin/env bash
# make soak: the crash and load soak of crates/mistify-e2e/tests/soak.rs on a release
# build — the agent killed with jobs in flight (SOAK_ROUNDS, default 100), the sub-agent
# killed under the supervisor (SOAK_ROUNDS), and 64 clients across 1,000 guests for
# SOAK_LOAD_SECONDS (default 60). Prints a `SOAK:` line of figures per test; any failed
# check stops with the test named.
set -euo pipefail
cd "$(dirname "$0")/.."
MISTIFY_SKIP=etcd,zfs,stack,replay,supervisor-tls,schemathesis scripts/install-deps.sh
echo "==> soak: release build"
cargo build --release --locked --workspace --bins --examples
cargo test --release --locked -p mistify-e2e --test soak --no-run
echo "==> soak: tests"
start=$(date +%s)
log=target/soak.log
rc=0
cargo test --release --locked -p mistify-e2e --test soak \
    -- --include-ignored --nocapture --test-threads=1 >"$log" 2>&1 || rc=$?
grep -E '^(SOAK:|test |test result)' "$log" || true
if [ "$rc" != 0 ]; then
    grep -A12 'panicked' "$log" >&2 || tail -40 "$log" >&2
    echo "soak: failed (exit $rc); the whole output is in $log" >&2
    exit 1
fi
echo "soak: passed in $(( $(date +%s) - start )) s (output in $log)"
