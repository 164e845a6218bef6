#!/usr/bin/env bash
# `make test`: prerequisites, formatting, lints, build, every test. Prints the wall
# time of each phase. MISTIFY_SKIP=suite,... skips whole test suites (never in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

declare -a phases=()
phase() {  # name, command...
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name"
  if "$@"; then
    phases+=("$(printf '%-8s %4ss' "$name" $((SECONDS - start)))")
  else
    local rc=$?
    echo "==> $name FAILED (exit $rc) after $((SECONDS - start))s" >&2
    exit "$rc"
  fi
}

phase deps   scripts/install-deps.sh
phase fmt    cargo fmt --all --check
phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings
phase build  cargo build --workspace --bins --examples --locked
phase test   cargo test --workspace --locked --no-fail-fast

echo
echo "==> wall time per phase"
printf '    %s\n' "${phases[@]}"
if [ -n "${MISTIFY_SKIP:-}" ]; then
  echo "==> SKIPPED test suites (MISTIFY_SKIP): ${MISTIFY_SKIP}"
fi
