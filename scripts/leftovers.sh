#!/usr/bin/env bash
# What a test run left behind. `leftovers.sh snapshot FILE` records the machine's state
# before the tests; `leftovers.sh check FILE` lists what is there now and was not then,
# and exits 1 when anything is:
#   - processes running a binary of this workspace's target directory, or one of the
#     daemons and clients the tests start (etcd, kea-dhcp4, dhclient, udhcpc, zfs-fuse);
#   - ZFS pools (`zpool list`);
#   - mounts (`/proc/mounts`);
#   - network namespaces (`ip netns`);
#   - `mistify-*`, `lochness-*` and `etcd-*` entries in $TMPDIR (the lock file
#     mistify-zpool.lock, shared by every run on the machine, is not counted).
# /run/netns, mounted by `ip netns add` on first use, is unmounted when the run made it
# and left it empty. A zfs-fuse daemon that the tests started (none ran before) is
# stopped first when it holds no pool: a machine service the run brought up is not a leftover of a test, but
# it must not outlive the run either.
set -u
cd "$(dirname "$0")/.."
mode=${1:?usage: leftovers.sh snapshot|check FILE}
file=${2:?usage: leftovers.sh snapshot|check FILE}
tmp=${TMPDIR:-/tmp}
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
daemons='^(etcd|kea-dhcp4|dhclient|udhcpc|zfs-fuse)$'

state() {
  local pid exe comm
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = "$$" ] && continue
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    if [[ "$exe" == "$target"/* ]] || [[ "$comm" =~ $daemons ]]; then
      echo "process $pid $comm ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120))"
    fi
  done
  if pgrep -x zfs-fuse >/dev/null 2>&1 || [ -e /dev/zfs ]; then
    timeout 10 zpool list -H -o name 2>/dev/null | sed 's/^/pool /'
  fi
  awk '{print "mount " $2 " (" $3 ")"}' /proc/mounts
  ip netns list 2>/dev/null | awk '{print "netns " $1}'
  find "$tmp" -maxdepth 1 \( -name 'mistify-*' -o -name 'lochness-*' -o -name 'etcd-*' \) \
    ! -name mistify-zpool.lock -printf 'tempdir %p\n' 2>/dev/null
}

case "$mode" in
  snapshot)
    state | sort >"$file"
    ;;
  check)
    # A zfs-fuse the run started, holding no pool any more, is stopped.
    if ! grep -q ' zfs-fuse ' "$file" && pgrep -x zfs-fuse >/dev/null 2>&1 \
        && [ -z "$(timeout 10 zpool list -H -o name 2>/dev/null)" ]; then
      pkill -x zfs-fuse
      for _ in $(seq 50); do pgrep -x zfs-fuse >/dev/null || break; sleep 0.2; done
    fi
    # `ip netns add` mounts /run/netns (a shared bind mount of the directory) the first
    # time a machine gets a named namespace; when the run made it and no namespace is
    # left in it, it is unmounted too.
    if ! grep -qx 'mount /run/netns (.*)' "$file" && [ -z "$(ip netns list 2>/dev/null)" ]; then
      while grep -q ' /run/netns ' /proc/mounts; do umount /run/netns 2>/dev/null || break; done
    fi
    now=$(state | sort)
    # Processes are compared by pid and name only (arguments may differ in spacing).
    left=$(comm -13 <(sed -E 's/^(process [0-9]+ [^ ]+).*/\1/' "$file" | sort) \
                    <(sed -E 's/^(process [0-9]+ [^ ]+).*/\1/' <<<"$now" | sort))
    if [ -n "$left" ]; then
      echo "leftovers: the tests left these behind:" >&2
      while IFS= read -r line; do
        case "$line" in
          process*) grep -F "$line " <<<"$now" | head -1 | sed 's/^/    /' >&2 ;;
          *) echo "    $line" >&2 ;;
        esac
      done <<<"$left"
      exit 1
    fi
    echo "leftovers: none (no process, pool, mount, namespace or temp dir left by the tests)"
    ;;
  *)
    echo "usage: leftovers.sh snapshot|check FILE" >&2
    exit 2
    ;;
esac
