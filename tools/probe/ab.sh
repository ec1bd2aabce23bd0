#!/bin/bash
# Alternating probe boots of two or more builds, so that both see the same hour:
#   ab.sh DIR_A DIR_B        each DIR holds berth.iso (and vmlinuz, initrd for MODE=kernel;
#                            berth.qcow2 for MODE=disk),
#                            e.g. copies of target/berth made after each build
# PAIRS (default 3) rounds; MODE, QEMU_EXTRA, APPEND and EXTRA as for boot.sh. Prints, per
# boot, each service's created -> ready times and PID 1's stage marks from `berth boot-time`.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
for i in $(seq 1 "${PAIRS:-3}"); do
  for dir in "$@"; do
    tag=$(basename "$dir")$i
    out=$(ISO=$dir/berth.iso KERNEL=$dir/vmlinuz INITRD=$dir/initrd QCOW2=$dir/berth.qcow2 \
      "$HERE/boot.sh" "$tag" \
      "sudo berth boot-time" "sudo berth logs console | grep 'after console-init'" 2>&1)
    echo "$tag $(echo "$out" | awk '/^(console|network|ntp|docker) /{printf "%s %s->%s ", $1, $2, $4}')"
    echo "$out" | grep -E '^PID 1|console-init: ready' | sed 's/^/    /'
  done
done
