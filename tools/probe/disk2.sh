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
KEY=$OUT/probe/key; PORT=${PORT:-2310}
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEY"
cat > "$D/user-data" <<EOC
#cloud-config
ssh_authorized_keys:
  - $(cat "$KEY.pub")
berth:
  services:
    docker: null
EOC
printf 'instance-id: probe\nlocal-hostname: berth\n' > "$D/meta-data"
cloud-localds "$D/seed.img" "$D/user-data" "$D/meta-data"
qemu-img create -q -f qcow2 -b "${QCOW2:-$OUT/berth.qcow2}" -F qcow2 "$D/disk.qcow2" 8G
SSH=(ssh -q -i "$KEY" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null berth@127.0.0.1)
for boot in 1 2; do
  # shellcheck disable=SC2086 # QEMU_EXTRA is a list of arguments
  timeout 300 qemu-system-x86_64 -name probe -m 1024 -smp 1 -accel tcg,tb-size=256 -machine pc \
    ${QEMU_EXTRA:-} -drive "file=$D/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -drive "file=$D/seed.img,if=virtio,format=raw,readonly=on" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=net0,romfile= \
    -device virtio-rng-pci -display none -serial "file:$D/serial$boot.log" -monitor none &
  Q=$!
  for _ in $(seq 1 600); do grep -q "system ready" "$D/serial$boot.log" 2>/dev/null && break; sleep 0.5; done
  sleep 3
  [ "$boot" = 2 ] && "${SSH[@]}" "$CMD"
  "${SSH[@]}" "sudo berth poweroff" >/dev/null 2>&1
  for _ in $(seq 1 120); do kill -0 $Q 2>/dev/null || break; sleep 0.5; done
  kill $Q 2>/dev/null; wait $Q 2>/dev/null
done
