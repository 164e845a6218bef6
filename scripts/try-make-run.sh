#!/usr/bin/env bash
# Does what the README says, literally: `make run` in the background, the README
# walk-throughs (the cluster's, then the hypervisor's) against it, then Ctrl-C (SIGINT
# to make's process group),
# and checks that no service process, pool or mount of the stack is left. For a fresh
# machine: `../shared/tools/freshroot.sh run DIR . -- scripts/try-make-run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. config/dev.env
log=$(mktemp)
setsid make run >"$log" 2>&1 &
pgid=$!
cleanup() { kill -INT -- "-$pgid" 2>/dev/null || true; }
trap cleanup EXIT
# Ready as the README says: both hypervisors registered and alive (their heartbeats in
# etcd), as chypervisord lists them.
ready() {
  local alive
  alive=$(curl -sf "http://127.0.0.1:$HYPERVISORS_PORT/hypervisors?alive=true" 2>/dev/null) || return 1
  [[ "$alive" == *"$HV1_ID"* && "$alive" == *"$HV2_ID"* ]]
}
for _ in $(seq 1 1800); do
  ready && break
  if ! kill -0 "$pgid" 2>/dev/null; then cat "$log"; echo "try-make-run: make run exited" >&2; exit 1; fi
  sleep 1
done
ready || { tail -50 "$log"; echo "try-make-run: the dev cluster did not come up" >&2; exit 1; }
# The supervisor and every process below it, as pid:starttime (a reused pid is no match).
starttime() { awk '{sub(/.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }
tree() { echo "$1"; for c in $(pgrep -P "$1"); do tree "$c"; done; }
sup=$(pgrep -f "mistify-supervisord --addr $SUPERVISOR_ADDR" | head -1)
procs=$(for p in $(tree "$sup"); do echo "$p:$(starttime "$p"):$(cat "/proc/$p/comm" 2>/dev/null | tr -c 'a-zA-Z0-9_.\n-' _)"; done)
echo "try-make-run: the dev cluster is up ($(echo "$procs" | wc -l) processes); running the README walk-throughs"
work=$(mktemp -d)
for block in cluster-walkthrough walkthrough; do
  script=$(awk "/<!-- $block:begin -->/{on=1;next} /<!-- $block:end -->/{on=0} on" README.md \
    | awk '/^```sh/{inb=1;next} /^```/{inb=0;next} inb')
  ( cd "$work" && PATH="$root/target/debug:$PATH" AGENT="http://$AGENT_ADDRESS" bash -euo pipefail -c "$script" )
done
rm -rf "$work"
echo "try-make-run: walk-through passed; Ctrl-C"
trap - EXIT
kill -INT -- "-$pgid"
for _ in $(seq 1 120); do kill -0 "$pgid" 2>/dev/null || break; sleep 1; done
if kill -0 "$pgid" 2>/dev/null; then echo "try-make-run: make run did not stop" >&2; exit 1; fi
tail -5 "$log"
# A process counts as left when it still runs (a zombie waiting to be reaped does not)
# five seconds after make run returned.
alive() { [ "$(starttime "$1")" = "$2" ] && [ "$(awk '{sub(/.*\) /, ""); print $1}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
for _ in $(seq 1 50); do
  left=""
  for ps in $procs; do
    p=${ps%%:*}; rest=${ps#*:}; t=${rest%%:*}; name=${rest#*:}
    if alive "$p" "$t"; then
      cmd=$( (tr '\0' ' ' <"/proc/$p/cmdline") 2>/dev/null || true)  # it may exit meanwhile
      left="$left $p[$name]($cmd)"
    fi
  done
  [ -z "$left" ] && break
  sleep 0.1
done
[ -z "$left" ] || { echo "try-make-run: processes left:$left" >&2; exit 1; }
if zpool list "$MISTIFY_POOL" >/dev/null 2>&1; then echo "try-make-run: pool $MISTIFY_POOL still imported" >&2; exit 1; fi
if grep -q "$root/target/dev" /proc/mounts; then echo "try-make-run: mounts left under target/dev" >&2; exit 1; fi
echo "try-make-run: OK (stack up, walk-through passed, stopped clean)"
