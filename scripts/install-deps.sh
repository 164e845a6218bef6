#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when any is missing.
# A quick no-op when everything is present. Run as root on Debian 12 (apt-get);
# elsewhere it only checks and says what to install.
#
# MISTIFY_SKIP=etcd,zfs,...  leaves out the packages of the skipped test suites only;
# build prerequisites are always required.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

skip=",${MISTIFY_SKIP:-},"
skipped() { [[ "$skip" == *",$1,"* ]]; }

# package -> what needs it
declare -A need=(
  [pkg-config]="build (libvirt bindings)"
  [libvirt-dev]="build (libvirt bindings); its libvirt0 carries the test:/// driver"
  [protobuf-compiler]="build (etcd client)"
  [libprotobuf-dev]="build (etcd client: the well-known .proto files)"
)
skipped replay  || need[python3]="wire replay tests (tests/tools/replay.py)"
skipped schemathesis || { need[python3]="the schemathesis step (scripts/schemathesis.sh)"; need[python3-venv]="the schemathesis step (python3 -m venv)"; }
skipped etcd    || { need[etcd-server]="lochness tests (a real etcd)"; need[etcd-client]="lochness tests (etcdctl)"; }
skipped zfs     || need[zfs-fuse]="storage sub-agent tests (a real ZFS pool)"
skipped supervisor-tls || need[openssl]="TLS tests of the supervisor, the agent and lochness (make test certificates)"
skipped netns   || { need[kea-dhcp4-server]="DHCP tests (a real kea-dhcp4 in a network namespace)"; need[busybox]="DHCP tests (udhcpc, the DHCP client)"; need[isc-dhcp-server]="DHCP tests (dhcpd -t checks the ISC files)"; need[nftables]="firewall tests (nft)"; need[iproute2]="network namespace tests (ip netns)"; }
skipped stack   || { need[curl]="the README walk-through (dev stack tests)"; need[procps]="the dev stack manifests (pgrep)"; }

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${!need[@]}"; do installed "$p" || missing+=("$p"); done
else
  echo "install-deps: not a Debian system (no dpkg-query); checking commands only" >&2
fi

if [ ${#missing[@]} -gt 0 ]; then
  IFS=$'\n' missing=($(sort <<<"${missing[*]}")); unset IFS
  echo "install-deps: missing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: cannot install them (need root and apt-get). Run as root:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  # Daemons shipped by these packages (etcd, zfs-fuse) must not be started here.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
  fi
  rc=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ "$created_policy" = 0 ] || rm -f "$policy"
  if [ "$rc" != 0 ]; then
    echo "install-deps: apt-get install ${missing[*]} failed (exit $rc)" >&2
    exit 1
  fi
  for p in "${missing[@]}"; do
    installed "$p" || { echo "install-deps: $p is still not installed" >&2; exit 1; }
  done
  echo "install-deps: installed ${missing[*]}"
fi

# The commands and files the build and tests use, whatever installed them.
fail=0
check() {  # description, test command...
  local what=$1; shift
  if ! "$@" >/dev/null 2>&1; then
    echo "install-deps: missing $what" >&2
    fail=1
  fi
}
check "pkg-config" command -v pkg-config
check "libvirt development files (pkg-config libvirt)" pkg-config --exists libvirt
check "protoc (protobuf-compiler)" command -v protoc
check "google/protobuf/descriptor.proto (libprotobuf-dev)" test -f /usr/include/google/protobuf/descriptor.proto
skipped replay || check "python3" command -v python3
skipped schemathesis || { check "python3" command -v python3; check "python3 -m venv with pip (python3-venv)" python3 -c 'import venv, ensurepip'; }
skipped etcd   || { check "etcd (etcd-server)" command -v etcd; check "etcdctl (etcd-client)" command -v etcdctl; }
skipped zfs    || { check "zfs-fuse" test -x /usr/sbin/zfs-fuse -o -x /usr/bin/zfs-fuse; check "zfs/zpool commands (zfs-fuse)" command -v zpool; }
skipped supervisor-tls || check "openssl" command -v openssl
skipped netns  || { check "kea-dhcp4 (kea-dhcp4-server)" command -v kea-dhcp4; check "busybox udhcpc (busybox)" command -v busybox; check "dhcpd (isc-dhcp-server)" command -v dhcpd; check "nft (nftables)" command -v nft; check "ip (iproute2)" command -v ip; }
skipped stack  || { check "curl" command -v curl; check "pgrep (procps)" command -v pgrep; }
[ "$fail" = 0 ] || { echo "install-deps: prerequisites are missing (see above)" >&2; exit 1; }

# cargo-deb builds the Debian package (the package test, `make deb`): a pinned version,
# installed once into ~/.cargo/bin.
CARGO_DEB_VERSION=3.8.0
if ! skipped package && ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "install-deps: installing cargo-deb $CARGO_DEB_VERSION (cargo install, a few minutes)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
echo "install-deps: all prerequisites present"
