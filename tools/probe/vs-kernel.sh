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
D=$OUT/probe/vs-kernel; rm -rf "$D"; mkdir -p "$D/root/bin" "$D/root/dev"
KERNEL=${KERNEL:-$OUT/vmlinuz}; INITRD=${INITRD:-$OUT/initrd}; ISO=${ISO:-$OUT/berth.iso}
MARKER=BERTH-BASELINE-INIT-RAN

# The bench's baseline initramfs (iso::initramfs::baseline), newc written here.
cp /bin/busybox "$D/root/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox echo %s\n/bin/busybox poweroff -f\n' "$MARKER" > "$D/root/init"
python3 - "$D/root" "$D/baseline-initrd" <<'EOF'
import os, sys
root, out = sys.argv[1], sys.argv[2]
def entry(name, mode, data=b"", rdev=(0, 0)):
    name = name.encode() + b"\0"
    hdr = "070701" + "".join("%08x" % v for v in (
        0, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name), 0))
    b = hdr.encode() + name
    b += b"\0" * (-len(b) % 4) + data
    return b + b"\0" * (-len(b) % 4)
a = entry("bin", 0o40755) + entry("dev", 0o40755)
a += entry("dev/console", 0o20600, rdev=(5, 1))
a += entry("bin/busybox", 0o100755, open(os.path.join(root, "bin/busybox"), "rb").read())
a += entry("bin/sh", 0o120777, b"busybox")
a += entry("init", 0o100755, open(os.path.join(root, "init"), "rb").read())
a += entry("TRAILER!!!", 0)
open(out, "wb").write(a)
EOF

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
  k=$(boot "$D/kernel-$r.log" "$MARKER" -kernel "$KERNEL" -initrd "$D/baseline-initrd" \
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
