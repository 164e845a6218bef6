#!/usr/bin/env bash
# `make run`: the dev cluster under mistify-supervisord, in the foreground: etcd, the
# controllers (cguestd, chypervisord, cnetworkd, cplacerd, cworkerd), and two hypervisor
# stacks — hv1 is the dev stack of config/services/dev, hv2 its twin on 127.0.0.2
# (config/services/cluster) — registered through the REST daemons
# (scripts/dev-cluster.sh) with their heartbeats running. Ports, ids and names come
# from config/dev.env (each overridable from the environment). Ctrl-C stops every
# service in reverse dependency order: heartbeats, agents, sub-agents, controllers,
# etcd; the pools' filesystems are unmounted and the pools exported
# (scripts/dev-pool.sh), and zfs-fuse is stopped if (and only if) the stack started
# it. A pool that is still imported afterwards is reported with what holds it.
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
# The services: the dev hypervisor stack (hv1) and the cluster around it (etcd, the
# controllers, hv2, registration, heartbeats), one link per manifest.
services="$sup/services"
if [ -L "$services" ]; then rm "$services"; fi
rm -rf "$services"
mkdir -p "$services"
for f in "$root"/config/services/dev/*.json "$root"/config/services/cluster/*.json; do
  ln -s "$f" "$services/"
done

"$MISTIFY_BIN/mistify-supervisord" --addr "$SUPERVISOR_ADDR" --dir "$sup" &
supervisor=$!
stop() { kill -TERM "$supervisor" 2>/dev/null || true; }
trap stop INT TERM

export LOCHNESS_GUESTS="http://127.0.0.1:$GUESTS_PORT"
export LOCHNESS_HYPERVISORS="http://127.0.0.1:$HYPERVISORS_PORT"
export LOCHNESS_NETWORKS="http://127.0.0.1:$NETWORKS_PORT"
# Up: both agents answer and the registration has run (the second hypervisor exists).
ready=
for _ in $(seq 1 600); do
  if curl -fsS "http://$AGENT_ADDRESS/healthz" >/dev/null 2>&1 &&
     curl -fsS "http://$HV2_AGENT_ADDRESS/healthz" >/dev/null 2>&1 &&
     "$MISTIFY_BIN/lochness" -o plain hv get "$HV2_ID" >/dev/null 2>&1; then
    ready=1
    break
  fi
  kill -0 "$supervisor" 2>/dev/null || break
  sleep 0.2
done
if [ -n "$ready" ]; then
  cat <<TXT

make run: the dev cluster is up.
  controllers: cguestd http://127.0.0.1:$GUESTS_PORT, chypervisord http://127.0.0.1:$HYPERVISORS_PORT,
               cnetworkd http://127.0.0.1:$NETWORKS_PORT, cplacerd and cworkerd (metrics on
               :$PLACER_PORT and :$WORKER_PORT), etcd http://127.0.0.1:$ETCD_PORT
  hv1        : $HV1_ID, agent http://$AGENT_ADDRESS (pool $MISTIFY_POOL, data $MISTIFY_DATA)
  hv2        : $HV2_ID, agent http://$HV2_AGENT_ADDRESS (pool $HV2_POOL, data $MISTIFY_DATA/hv2)
  registered : network $CLUSTER_NETWORK, subnet $CLUSTER_CIDR, flavor $CLUSTER_FLAVOR,
               firewall group $CLUSTER_FWGROUP (scripts/dev-cluster.sh)
  supervisor : $SUPERVISOR_ADDR  (target/debug/mistify-supervisor --addr $SUPERVISOR_ADDR list | tui)
  try        : the walk-through in README.md, e.g.
               export PATH=\$PWD/target/debug:\$PATH; . config/dev.env
               lochness guest create --flavor \$CLUSTER_FLAVOR --network \$CLUSTER_NETWORK --wait
               lochness guest list
Ctrl-C stops everything.
TXT
else
  echo "make run: the dev cluster did not become ready; see the supervisor's log above" \
       "(target/debug/mistify-supervisor --addr $SUPERVISOR_ADDR list)" >&2
fi
set +e
wait "$supervisor"
rc=$?
while kill -0 "$supervisor" 2>/dev/null; do wait "$supervisor"; rc=$?; done
set -e
for pool in "$MISTIFY_POOL" "$HV2_POOL"; do
  if zpool list "$pool" >/dev/null 2>&1; then
    data=$MISTIFY_DATA
    [ "$pool" = "$MISTIFY_POOL" ] || data=$MISTIFY_DATA/hv2
    {
      echo "make run: pool $pool is still imported; what holds it:"
      MISTIFY_POOL=$pool MISTIFY_DATA=$data scripts/dev-pool.sh holders
      echo "make run: when nothing holds it any more: MISTIFY_POOL=$pool MISTIFY_DATA=$data scripts/dev-pool.sh down (never zpool export -f: on zfs-fuse it can wedge every mount)"
    } >&2
    [ "$rc" -ne 0 ] || rc=1
  fi
done
exit "$rc"
