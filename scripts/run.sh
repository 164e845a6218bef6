#!/usr/bin/env bash
# `make run`: the hypervisor stack with the dev configuration in config/.
# Not every part exists yet: this starts what exists and says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../config/dev.env
. config/dev.env

cargo build --workspace --bins --examples --locked
mkdir -p target/dev
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

target/debug/examples/test-rpc-service --port "${TEST_RPC_PORT}" --log-level warn &
pids+=($!)
target/debug/mistify-libvirt --uri "${LIBVIRT_URI}" --port "${LIBVIRT_PORT}" --log-level warn &
pids+=($!)
target/debug/mistify-agent -a "${AGENT_ADDRESS}" -c "${AGENT_CONFIG}" --log-level info --log-format pretty &
pids+=($!)
cat <<TXT
make run:
  agent    : mistify-agent on http://${AGENT_ADDRESS} (config ${AGENT_CONFIG}, store target/dev/agent.redb)
  behind it: mistify-libvirt on 127.0.0.1:${LIBVIRT_PORT} (libvirt ${LIBVIRT_URI}) for guest actions,
             test-rpc-service (canned answers) on 127.0.0.1:${TEST_RPC_PORT} standing in for storage
  missing  : mistify-zfs, mistify-supervisor (not written yet)
  try      : curl -s -XPOST http://${AGENT_ADDRESS}/guests -d '{"memory":512,"cpu":1}'
             curl -s -XPOST http://${AGENT_ADDRESS}/guests/<id>/start
             curl -s "http://${AGENT_ADDRESS}/guests/<id>?refresh=true"
Ctrl-C stops everything.
TXT
wait -n "${pids[@]}"
