#!/bin/bash
# One probe boot of the build in DIR (berth.iso, vmlinuz, initrd; MODE=kernel as the bench
# boots), timed on the host: QEMU's CPU seconds (every thread, from /proc) and wall seconds
# from QEMU's start to `berth: system ready`, then PID 1's ready mark from `berth boot-time`.
# QEMU's CPU time is what the emulated boot costs; the wall clock adds whatever else the host
# ran. Alternate builds to compare them:  for i in 1 2 3; do cpu.sh A a$i; cpu.sh B b$i; done
#
# Usage: cpu.sh DIR TAG        (files go to target/berth/probe/TAG, as boot.sh's)
set -u
DIR=$1; TAG=$2
HERE=$(cd "$(dirname "$0")" && pwd)
S=$HERE/../../target/berth/probe/$TAG/serial.log
OUT=$(mktemp)
rm -f "$S"
ISO=$DIR/berth.iso KERNEL=$DIR/vmlinuz INITRD=$DIR/initrd MODE=kernel SETTLE=0 \
  "$HERE/boot.sh" "$TAG" "sudo berth boot-time | grep '^PID 1'" > "$OUT" 2>&1 &
BOOT=$!
QP=
for _ in $(seq 1 200); do
  QP=$(pgrep -f "^qemu-system-x86_64 -name probe" | head -1); [ -n "$QP" ] && break; sleep 0.02
done
[ -n "$QP" ] || { echo "$TAG: QEMU did not start" >&2; exit 1; }
T0=$(date +%s.%N)
for _ in $(seq 1 3000); do grep -q "system ready" "$S" 2>/dev/null && break; sleep 0.02; done
T1=$(date +%s.%N)
TICKS=$(awk '{print $14 + $15}' "/proc/$QP/stat")
# boot.sh prints the commands' output after QEMU is gone.
wait "$BOOT"
R=$(grep -o 'ready [0-9.]*s' "$OUT" | head -1)
echo "$TAG qemu_cpu $(echo "scale=2; $TICKS / $(getconf CLK_TCK)" | bc) s wall $(echo "$T1 - $T0" | bc | cut -c1-5) s guest_$R"
rm -f "$OUT"
