#!/usr/bin/env bash
# `make test`: prerequisites, formatting, lints, build, every test, then Schemathesis
# against the agent's OpenAPI document (scripts/schemathesis.sh), then a check that the
# tests left nothing behind (scripts/leftovers.sh). Prints the wall time of each phase.
#
# The build phase builds every binary, example and test binary, and the Debian package
# the package test inspects, once; the tests never run cargo (they find what was built,
# and fail naming what to build when it is missing). MISTIFY_SKIP=suite,... skips whole test suites (never in CI); the
# Schemathesis phase is the suite `schemathesis`.
#
# Bounded: the test phase gets MISTIFY_TEST_TIMEOUT seconds (default 2400; a normal
# run needs about 300), so a stuck daemon ends in a red run with a diagnosis instead of
# a CI timeout. On any failure the state of the machine (disk, memory, zfs-fuse, stuck
# processes) is printed last, where a shortened log still shows it.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build per run: incremental artefacts would only cost disk (several GiB).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

declare -a phases=()
phase() {  # name, command...
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name"
  if "$@"; then
    phases+=("$(printf '%-12s %4ss' "$name" $((SECONDS - start)))")
  else
    local rc=$?
    echo "==> $name FAILED (exit $rc) after $((SECONDS - start))s" >&2
    echo "==> state of the machine" >&2
    scripts/diagnose.sh >&2 || true
    exit "$rc"
  fi
}

# MiB free on the filesystem holding $1.
free_mib() { df -Pm "$1" | awk 'NR == 2 {print $4}'; }

# The ZFS tests keep their pools in sparse files under $TMPDIR; a pool whose file cannot
# grow suspends its I/O and every later ZFS call waits forever. Refuse to start them
# without room.
room_for_tests() {
  local tmp=${TMPDIR:-/tmp} need=${MISTIFY_TEST_MIN_FREE_MIB:-3072} have
  have=$(free_mib "$tmp")
  echo "free: $have MiB in $tmp (the tests need $need), $(free_mib .) MiB here"
  if [ "$have" -lt "$need" ]; then
    echo "not enough free disk in $tmp for the test pools: $have MiB < $need MiB" >&2
    return 1
  fi
}

phase deps   scripts/install-deps.sh
phase fmt    cargo fmt --all --check
phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings
build() {
  cargo build --workspace --bins --examples --locked
  cargo test --workspace --locked --no-run
  if [[ ",${MISTIFY_SKIP:-}," != *",package,"* ]]; then
    # The package of these debug binaries, for the package test (target/debian-test/),
    # with the CLIs' man pages and completions made by those binaries.
    rm -rf "${CARGO_TARGET_DIR:-target}/debian-test"
    scripts/cli-assets.sh "${CARGO_TARGET_DIR:-target}/debug"
    cargo deb -p mistify-supervisor --no-build --fast --profile dev \
      --output "${CARGO_TARGET_DIR:-target}/debian-test/" >/dev/null
  fi
}
phase build  build
phase room   room_for_tests
leftovers_state=$(mktemp)
trap 'rm -f "$leftovers_state"' EXIT
scripts/leftovers.sh snapshot "$leftovers_state"
phase test   timeout --kill-after=30 "${MISTIFY_TEST_TIMEOUT:-2400}" \
  cargo test --workspace --locked --no-fail-fast
# About a minute and a half (half a minute more to make the venv); bounded like the test phase.
if [[ ",${MISTIFY_SKIP:-}," == *",schemathesis,"* ]]; then
  echo "==> schemathesis skipped (MISTIFY_SKIP)"
else
  phase schemathesis timeout --kill-after=30 "${MISTIFY_SCHEMATHESIS_TIMEOUT:-600}" \
    scripts/schemathesis.sh
fi

phase leftovers scripts/leftovers.sh check "$leftovers_state"

echo
echo "==> wall time per phase"
printf '    %s\n' "${phases[@]}"
echo "==> disk used by target/: $(du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null | cut -f1)"
if [ -n "${MISTIFY_SKIP:-}" ]; then
  echo "==> SKIPPED test suites (MISTIFY_SKIP): ${MISTIFY_SKIP}"
fi
