#!/usr/bin/env bash
# What a failed or stuck test run needs to be understood from its log alone: free disk
# and memory, the zfs-fuse daemon and its pools, processes stuck in the kernel (a FUSE
# daemon that stopped answering leaves its callers in state D), leftover mounts.
# Every probe is bounded in time; nothing here changes the machine.
set -u
cd "$(dirname "$0")/.."
tmp=${TMPDIR:-/tmp}
echo "--- disk (target/ and \$TMPDIR=$tmp)"
df -h "${CARGO_TARGET_DIR:-target}" "$tmp" 2>/dev/null | awk 'NR == 1 || !seen[$0]++'
echo "--- memory"
free -m 2>/dev/null | sed -n 1,2p
echo "--- zfs-fuse"
if pgrep -x zfs-fuse >/dev/null 2>&1; then
  ps -o pid,stat,etime,rss,cmd -C zfs-fuse 2>/dev/null
  timeout 5 zpool list -H -o name,size,alloc,health 2>&1 || echo "zpool list: no answer within 5 s (exit $?)"
  timeout 5 zpool status -x 2>&1 | head -20 || echo "zpool status: no answer within 5 s"
else
  echo "not running"
fi
echo "--- processes waiting in the kernel (state D)"
ps -eo pid,stat,etime,wchan:24,args 2>/dev/null | awk 'NR == 1 || $2 ~ /^D/' | cut -c1-160 | head -20
echo "--- FUSE mounts: $(awk '$3 ~ /^fuse/' /proc/mounts | wc -l)"
awk '$3 ~ /^fuse/ {print "    " $2 " (" $3 ")"}' /proc/mounts | head -10
