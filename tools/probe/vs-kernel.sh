#!/bin/bash
# Wall-clock pairs as `cargo xtask bench boot` takes them, with the VM's shape
# as a knob: QEMU's start → the bare kernel's marker (busybox /init, the
# kernel's stock arguments), then QEMU's start → `berth: system ready` (direct
# kernel boot, the ISO as a virtio disk, a NoCloud seed without the engine),
# ROUNDS times alternately. Prints one line per boot and the ratio of medians.
#
# Usage: vs-kernel.sh [ROUNDS]        (default 3)
# Environment:
#   CPUS       vCPUs of both VMs (default 1, as the bench boots)
#   QEMU_CPU   a QEMU CPU model for both (-cpu; default QEMU's own, as the bench)
#   KERNEL, INITRD, ISO   default: the build in target/berth
set -eu
ROUNDS=${1:-3}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$REPO/target/berth
D=$OUT/probe/vs-kernel; rm -rf "$D"; mkdir -p "$D"
KERNEL=${KERNEL:-$OUT/vmlinuz}; INITRD=${INITRD:-$OUT/initrd}; ISO=${ISO:-$OUT/berth.iso}
MARKER=BERTH-BASELINE-INIT-RAN  # qemu_tests::BASELINE_MARKER

# The bench's own baseline initramfs (qemu_tests::baseline_initrd), which
# `cargo xtask bench boot` leaves in target/berth/bench.
BASELINE=$OUT/bench/baseline-initrd
[ -f "$BASELINE" ] || { echo "no $BASELINE: run \`cargo xtask bench boot\` once" >&2; exit 2; }

printf '#cloud-config\nberth:\n  services:\n    docker: null\n' > "$D/user-data"
printf 'instance-id: vs-kernel\n' > "$D/meta-data"
cloud-localds "$D/seed.img" "$D/user-data" "$D/meta-data"

# One boot: seconds from QEMU's start to MARK on the serial console.
boot() {
  local log=$1 mark=$2; shift 2
  local start end
  start=$(date +%s.%N)
  # shellcheck disable=SC2086 # QEMU_CPU is one optional argument pair
  timeout 300 qemu-system-x86_64 -name vs-kernel -m 1024 -smp "${CPUS:-1}" \
    ${QEMU_CPU:+-cpu $QEMU_CPU} -accel tcg,tb-size=256 -machine pc "$@" \
    -display none -serial "file:$log" -monitor none &
  local q=$!
  until grep -aq "$mark" "$log" 2>/dev/null; do
    kill -0 $q 2>/dev/null || { echo "QEMU ended before '$mark' ($log)" >&2; exit 1; }
    sleep 0.02
  done
  end=$(date +%s.%N)
  kill $q 2>/dev/null; wait $q 2>/dev/null || true
  echo "$end - $start" | bc
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > "$D/kernel.txt"; : > "$D/berth.txt"
for r in $(seq 1 "$ROUNDS"); do
  k=$(boot "$D/kernel-$r.log" "$MARKER" -kernel "$KERNEL" -initrd "$BASELINE" \
        -append "console=ttyS0,115200n8 panic=-1")
  b=$(boot "$D/berth-$r.log" "system ready" -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0,115200n8 panic=-1 cryptomgr.notests=1 percpu_alloc=page" \
        -drive "file=$ISO,if=virtio,format=raw,readonly=on" \
        -drive "file=$D/seed.img,if=virtio,format=raw,readonly=on" \
        -netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile= -device virtio-rng-pci)
  echo "round $r: kernel $k s, Berth $b s"
  echo "$k" >> "$D/kernel.txt"; echo "$b" >> "$D/berth.txt"
done
k=$(median < "$D/kernel.txt"); b=$(median < "$D/berth.txt")
echo "medians: kernel $k s, Berth $b s, ratio $(echo "scale=2; $b / $k" | bc)"
