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
KEY=$REPO/target/berth/probe/key; PORT=${PORT:-2312}
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
SSH=(ssh -q -i "$KEY" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null berth@127.0.0.1)
# boot DISK LOG: one boot to the ready line; prints its time and PID 1's marks, then powers off.
boot() {
  rm -f "$2"
  local t0 t1 q
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # QEMU_EXTRA is a list of arguments
  timeout 300 qemu-system-x86_64 -name probe -m 1024 -smp 1 -accel tcg,tb-size=256 -machine pc \
    ${QEMU_EXTRA:-} -drive "file=$1,if=virtio,format=qcow2,cache=unsafe" \
    -drive "file=$D/seed.img,if=virtio,format=raw,readonly=on" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=net0,romfile= \
    -device virtio-rng-pci -display none -serial "file:$2" -monitor none &
  q=$!
  for _ in $(seq 1 6000); do grep -q "system ready" "$2" 2>/dev/null && break; sleep 0.05; done
  t1=$(date +%s.%N)
  sleep 2
  printf '%.2f s  %s\n' "$(echo "$t1 - $t0" | bc)" \
    "$("${SSH[@]}" 'sudo berth boot-time' | sed -n 's/^PID 1: //p')"
  "${SSH[@]}" "sudo berth poweroff" >/dev/null 2>&1
  for _ in $(seq 1 120); do kill -0 $q 2>/dev/null || break; sleep 0.5; done
  kill $q 2>/dev/null; wait $q 2>/dev/null
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
