#!/bin/bash
# Two boots of one installed disk (a copy-on-write overlay of QCOW2): the first grows
# and formats the state partition and caches the NoCloud seed; the second is an
# ordinary boot, over which COMMAND runs by SSH (default `sudo berth boot-time`).
# The machine is powered off cleanly between them. Files go to target/berth/probe/TAG.
#
# Usage: disk2.sh TAG [COMMAND]
#   e.g. disk2.sh j "head -3 /proc/fs/jbd2/vda5-8/info; cat /sys/block/vda/vda5/stat"
# Environment: QCOW2 (default: the build's berth.qcow2), QEMU_EXTRA, PORT (2310).
set -u
TAG=$1; CMD=${2:-sudo berth boot-time}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$REPO/target/berth
D=$OUT/probe/$TAG; rm -rf "$D"; mkdir -p "$D"
PORT=${PORT:-2310}
# shellcheck source=tools/probe/disk-lib.sh
. "$REPO/tools/probe/disk-lib.sh"
disk_seed
qemu-img create -q -f qcow2 -b "${QCOW2:-$OUT/berth.qcow2}" -F qcow2 "$D/disk.qcow2" 8G
for boot in 1 2; do
  disk_boot "$D/disk.qcow2" "$D/serial$boot.log"
  sleep 3
  [ "$boot" = 2 ] && "${SSH[@]}" "$CMD"
  disk_poweroff
done
