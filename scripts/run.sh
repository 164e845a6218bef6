#!/usr/bin/env bash
# `make run`: the whole dev hypervisor stack under mistify-supervisord, in the
# foreground. The manifests are config/services/dev; ports and names come from
# config/dev.env (each overridable from the environment). Ctrl-C stops every service
# in reverse dependency order: the agent, the sub-agents, then the pool's filesystems
# are unmounted and the pool is exported (scripts/dev-pool.sh), and zfs-fuse is stopped
# if (and only if) the stack started it. A pool that is still imported afterwards is
# reported with what holds it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=../config/dev.env
. config/dev.env

if [ "$(id -u)" -ne 0 ]; then
  echo "make run: needs root (zfs-fuse and zpool)" >&2
  exit 1
fi
scripts/install-deps.sh
# The same build as `make test` (bins and examples), so the two share their artifacts.
cargo build --workspace --bins --examples --locked

export MISTIFY_BIN="$root/target/debug"
export MISTIFY_SRC="$root"
export MISTIFY_DATA="${MISTIFY_DATA:-$root/target/dev}"
sup="$MISTIFY_DATA/supervisor"
mkdir -p "$sup"
ln -sfn "$root/config/services/dev" "$sup/services"

"$MISTIFY_BIN/mistify-supervisord" --addr "$SUPERVISOR_ADDR" --dir "$sup" &
supervisor=$!
stop() { kill -TERM "$supervisor" 2>/dev/null || true; }
trap stop INT TERM

ready=
for _ in $(seq 1 300); do
  if curl -fsS "http://$AGENT_ADDRESS/healthz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$supervisor" 2>/dev/null || break
  sleep 0.2
done
if [ -n "$ready" ]; then
  cat <<TXT

make run: the dev stack is up.
  agent      : http://$AGENT_ADDRESS  (REST API; store and config under $MISTIFY_DATA)
  supervisor : $SUPERVISOR_ADDR  (target/debug/mistify-supervisor --addr $SUPERVISOR_ADDR list | tui)
  behind it  : mistify-zfs on 127.0.0.1:$ZFS_PORT (pool $MISTIFY_POOL, file disks),
               mistify-libvirt on 127.0.0.1:$LIBVIRT_PORT ($LIBVIRT_URI),
               mistify-image-server on 127.0.0.1:$IMAGE_PORT (image "sample")
  try        : the walk-through in README.md, e.g.
               curl -s -XPOST http://$AGENT_ADDRESS/images -d '{"id":"sample"}'
               curl -s http://$AGENT_ADDRESS/images
Ctrl-C stops everything.
TXT
else
  echo "make run: the agent did not become ready; see the supervisor's log above" \
       "(target/debug/mistify-supervisor --addr $SUPERVISOR_ADDR list)" >&2
fi
set +e
wait "$supervisor"
rc=$?
while kill -0 "$supervisor" 2>/dev/null; do wait "$supervisor"; rc=$?; done
set -e
if zpool list "$MISTIFY_POOL" >/dev/null 2>&1; then
  {
    echo "make run: pool $MISTIFY_POOL is still imported; what holds it:"
    MISTIFY_POOL=$MISTIFY_POOL MISTIFY_DATA=$MISTIFY_DATA scripts/dev-pool.sh holders
    echo "make run: when nothing holds it any more: scripts/dev-pool.sh down (never zpool export -f: on zfs-fuse it can wedge every mount)"
  } >&2
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
