#!/bin/bash
# Alternating ordinary boots of two or more builds' installed disks, as the bench's
# `boot_ready_disk` boots them (SeaBIOS, GRUB from the disk, a state partition already made):
#   ab-disk.sh DIR_A DIR_B    each DIR holds berth.qcow2 (a copy of target/berth's after a build)
# Each disk (a copy-on-write overlay) boots once first, to grow and format its state
# partition and cache the seed; then PAIRS (default 4) rounds of one boot of each. Prints per
# boot the seconds from QEMU's start to `berth: system ready`, timed here, and PID 1's stage
# marks from `berth boot-time`. Files go to target/berth/probe/ab-disk.
# Environment: PAIRS, QEMU_EXTRA, PORT (2312).
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
D=$REPO/target/berth/probe/ab-disk; rm -rf "$D"; mkdir -p "$D"
PORT=${PORT:-2312}
# shellcheck source=tools/probe/disk-lib.sh
. "$REPO/tools/probe/disk-lib.sh"
disk_seed
# boot DISK LOG: one boot to the ready line; prints its time and PID 1's marks, then powers off.
boot() {
  local t0 t1
  t0=$(date +%s.%N)
  disk_boot "$1" "$2"
  t1=$(date +%s.%N)
  sleep 2
  printf '%.2f s  %s\n' "$(echo "$t1 - $t0" | bc)" \
    "$("${SSH[@]}" 'sudo berth boot-time' | sed -n 's/^PID 1: //p')"
  disk_poweroff
}
for dir in "$@"; do
  name=$(basename "$dir")
  qemu-img create -q -f qcow2 -b "$(cd "$dir" && pwd)/berth.qcow2" -F qcow2 "$D/$name.qcow2" 8G
  boot "$D/$name.qcow2" "$D/$name-first.log" > /dev/null
done
for i in $(seq 1 "${PAIRS:-4}"); do
  for dir in "$@"; do
    name=$(basename "$dir")
    echo "$name$i $(boot "$D/$name.qcow2" "$D/$name$i.log")"
  done
done
