#!/usr/bin/env bash
# The dev cluster's one-time registration (the oneshot `register:dev` of
# config/services/cluster): a network with one subnet, a flavor on the cluster image, a
# firewall group, and the two hypervisors of `make run` (hv1: the agent on
# $AGENT_ADDRESS, hv2: the agent on $HV2_AGENT_ADDRESS) linked to the subnet. Every object
# has a fixed id (config/dev.env), and each is created only when missing, so a restart of
# the dev cluster on the same data directory finds them and changes nothing. Everything
# goes through the REST daemons with the `lochness` CLI, as an operator would.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../config/dev.env
. "$here/config/dev.env"
bin="${MISTIFY_BIN:-/usr/sbin}"
export LOCHNESS_GUESTS="http://127.0.0.1:$GUESTS_PORT"
export LOCHNESS_HYPERVISORS="http://127.0.0.1:$HYPERVISORS_PORT"
export LOCHNESS_NETWORKS="http://127.0.0.1:$NETWORKS_PORT"
l() { "$bin/lochness" -o plain "$@"; }

# `ensure KIND ID CREATE-ARGS…`: create unless `lochness KIND get ID` finds it.
ensure() {
  local kind=$1 id=$2
  shift 2
  if l "$kind" get "$id" >/dev/null 2>&1; then
    echo "$kind $id: registered already"
  else
    l "$kind" create --id "$id" "$@" >/dev/null
    echo "$kind $id: created"
  fi
}

case "${1:-}" in
  register)
    ensure network "$CLUSTER_NETWORK" --metadata name=dev
    ensure subnet "$CLUSTER_SUBNET" --network "$CLUSTER_NETWORK" --cidr "$CLUSTER_CIDR" \
      --gateway "$CLUSTER_GATEWAY" --start "$CLUSTER_RANGE_START" --end "$CLUSTER_RANGE_END"
    ensure flavor "$CLUSTER_FLAVOR" --image "$CLUSTER_IMAGE" --memory 256 --disk 64 --cpu 1 \
      --metadata name=small
    ensure fwgroup "$CLUSTER_FWGROUP" --rule "source=$CLUSTER_CIDR,ports=22,protocol=tcp" \
      --metadata name=ssh
    n=0
    for spec in "$HV1_ID ${AGENT_ADDRESS%:*} ${AGENT_ADDRESS##*:} 52:54:00:6c:00:01" \
                "$HV2_ID ${HV2_AGENT_ADDRESS%:*} ${HV2_AGENT_ADDRESS##*:} 52:54:00:6c:00:02"; do
      read -r id ip port mac <<<"$spec"
      n=$((n + 1))
      ensure hv "$id" --ip "$ip" --netmask 255.0.0.0 --mac "$mac" --metadata "name=hv$n"
      l hv config modify "$id" "{\"agentPort\":\"$port\",\"guestDiskDir\":\"$MISTIFY_DATA\"}" >/dev/null
      l hv subnets modify "$id" "{\"$CLUSTER_SUBNET\":\"br0\"}" >/dev/null
    done
    echo "the dev cluster is registered: hypervisors $HV1_ID (hv1) and $HV2_ID (hv2)"
    ;;
  *)
    echo "usage: $0 register" >&2
    exit 2
    ;;
esac
