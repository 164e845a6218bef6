#!/bin/sh
# The dev pool of `make run` (config/services/dev/20-pool.json), on a sparse file under
# the data directory (cachefile=none).
#
#   dev-pool.sh up       import the pool (or create it when it has no file yet; an
#                        imported one is re-used), mount every filesystem of it that is
#                        not mounted, send READY=1 to $NOTIFY_SOCKET once all are, then
#                        wait; SIGTERM/SIGINT: `down`
#   dev-pool.sh down     unmount its filesystems (deepest first) and export it, retrying
#                        "busy" for MISTIFY_POOL_EXPORT_SECONDS (20); then, still
#                        imported, say what holds it and exit 1
#   dev-pool.sh holders  what holds the pool: its mounted filesystems, and the processes
#                        with a file open or their working directory under them
#
# Never `-f`: on zfs-fuse a forced unmount (`zfs unmount -f`, `zpool export -f`) is a
# lazy one, and once the last file open on the detached mount is closed zfs-fuse stops
# answering every mount of the machine for good (docs/zfs.md). A failed import never
# deletes the pool's file. Every zpool and mount-changing zfs command holds
# /tmp/mistify-zpool.lock (flock), as every test and mistify-zfs do.
set -u
pool=${MISTIFY_POOL:-mistifydev}
data=${MISTIFY_DATA:-/var/lib/mistify-dev}
file=$data/pool.img
lock=/tmp/mistify-zpool.lock
export LC_ALL=C
tab=$(printf '\t')

say() { printf '%s\n' "$*"; }

# One line: the text's lines joined by spaces.
oneline() { printf '%s' "$1" | tr '\n' ' ' | sed 's/ *$//'; }

# "dataset<TAB>mountpoint" of every mounted filesystem of the pool, deepest first
# (from /proc/self/mountinfo: nothing here touches the filesystems themselves).
mounted() {
  awk -v pool="$pool" '{
    for (i = 7; i <= NF; i++) if ($i == "-") break
    type = $(i + 1); src = $(i + 2)
    if ((type == "fuse.zfs" || type == "zfs") && (src == pool || index(src, pool "/") == 1)) {
      depth = src; n = gsub("/", "", depth)
      print n "\t" src "\t" $5
    }
  }' /proc/self/mountinfo | sort -rn | cut -f2-
}

# The filesystems of the pool that should be mounted (a mountpoint, canmount on),
# parents first.
wanted() {
  zfs list -H -o name,mountpoint,canmount -t filesystem -r "$pool" 2>/dev/null |
    awk -F'\t' '$2 != "none" && $2 != "legacy" && $2 != "-" && $3 == "on" { print $1 }'
}

holders() {
  mounts=$(mounted)
  if [ -z "$mounts" ]; then
    say "  nothing of $pool is mounted, and no process can hold it: zfs-fuse itself does"
    return 0
  fi
  printf '%s\n' "$mounts" | while IFS="$tab" read -r name dir; do
    say "  still mounted: $name at $dir"
  done
  dirs=$(printf '%s\n' "$mounts" | cut -f2)
  found=$(
    {
      find /proc/[0-9]*/cwd -maxdepth 0 -printf '%p\t%l\n' 2>/dev/null
      find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -printf '%p\t%l\n' 2>/dev/null
    } | awk -F'\t' -v dirs="$dirs" '
      BEGIN { n = split(dirs, d, "\n") }
      {
        for (i = 1; i <= n; i++)
          if ($2 == d[i] || index($2, d[i] "/") == 1) {
            split($1, p, "/"); what = ($1 ~ /\/cwd$/) ? "cwd " $2 : $2
            print p[3] "\t" what; break
          }
      }' | sort -u
  )
  if [ -z "$found" ]; then
    say "  no process has a file open or its working directory there"
    return 0
  fi
  printf '%s\n' "$found" | while IFS="$tab" read -r pid what; do
    say "  in use by pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)): $what"
  done
}

down() {
  if ! zpool list "$pool" >/dev/null 2>&1; then
    say "pool $pool is not imported"
    return 0
  fi
  limit=${MISTIFY_POOL_EXPORT_SECONDS:-20}
  start=$(date +%s)
  delay_ms=200
  tries=0
  while :; do
    tries=$((tries + 1))
    why=
    for fs in $(mounted | cut -f1); do
      out=$(flock "$lock" zfs unmount "$fs" 2>&1) || why=${why:-$out}
    done
    if out=$(flock "$lock" zpool export "$pool" 2>&1); then
      say "exported $pool (try $tries, $(($(date +%s) - start)) s)"
      return 0
    fi
    why=$(oneline "${why:-$out}")
    waited=$(($(date +%s) - start))
    if [ "$waited" -ge "$limit" ]; then
      say "cannot export $pool: still busy after $tries tries in $waited s: $why"
      say "what holds it:"
      holders
      return 1
    fi
    say "export $pool: busy (try $tries: $why); retrying in ${delay_ms} ms"
    sleep "$(awk -v ms="$delay_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    delay_ms=$((delay_ms * 2))
    [ "$delay_ms" -le 2000 ] || delay_ms=2000
  done
}

# Mounts every filesystem of the pool that should be and is not (`zfs mount -a` for
# this pool only); fails naming those that stay unmounted.
mount_all() {
  names=$(wanted)
  if [ -z "$names" ]; then
    say "pool $pool: no filesystem to mount (zfs list failed?)"
    return 1
  fi
  now=$(mounted | cut -f1)
  count=0
  for name in $names; do
    printf '%s\n' "$now" | grep -qxF "$name" && continue
    if out=$(flock "$lock" zfs mount "$name" 2>&1); then
      count=$((count + 1))
    else
      say "cannot mount $name: $(oneline "$out")"
    fi
  done
  [ "$count" -eq 0 ] || say "mounted $count filesystem(s) of $pool that were not mounted"
  now=$(mounted | cut -f1)
  missing=
  total=0
  for name in $names; do
    total=$((total + 1))
    printf '%s\n' "$now" | grep -qxF "$name" || missing="$missing $name"
  done
  if [ -n "$missing" ]; then
    say "pool $pool: not mounted:$missing"
    return 1
  fi
  say "pool $pool: all $total filesystems mounted"
}

notify() {
  [ -n "${NOTIFY_SOCKET:-}" ] || return 0
  python3 -c 'import os,socket; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])'
}

up() {
  i=0
  until zpool list >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 150 ] || { say "zfs-fuse does not answer"; exit 1; }
    sleep 0.2
  done
  mkdir -p "$data"
  if zpool list "$pool" >/dev/null 2>&1; then
    say "pool $pool is already imported: re-using it"
  elif [ -e "$file" ]; then
    if ! out=$(flock "$lock" zpool import -d "$data" -o cachefile=none "$pool" 2>&1); then
      say "cannot import $pool from $file: $(oneline "$out")"
      say "$file is kept: import it by hand (zpool import -d $data $pool), or move it away to start with a new pool"
      exit 1
    fi
    say "imported $pool from $file"
  else
    truncate -s "${MISTIFY_POOL_SIZE:-4G}" "$file" || exit 1
    if ! out=$(flock "$lock" zpool create -o cachefile=none -m "$data/mnt" "$pool" "$file" 2>&1); then
      say "cannot create $pool on $file: $(oneline "$out")"
      exit 1
    fi
    say "created $pool on $file"
  fi
  mount_all || exit 1
  trap 'down; exit $?' TERM INT
  notify
  while :; do
    sleep 1 &
    wait $!
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  holders) holders ;;
  *)
    say "usage: $0 up|down|holders" >&2
    exit 2
    ;;
esac
