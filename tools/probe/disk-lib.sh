# Sourced by the probes that boot installed disks (disk2.sh, ab-disk.sh): the NoCloud
# seed they boot with and one boot of a disk, as the bench boots the disk image
# (SeaBIOS, GRUB from the disk, one vCPU, 1 GiB, no user engine).
# Needs REPO, D (the probe's directory) and PORT set.
KEY=$REPO/target/berth/probe/key
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEY"
SSH=(ssh -q -i "$KEY" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null berth@127.0.0.1)

# disk_seed: $D/seed.img, the probe key authorized and docker off.
disk_seed() {
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
}

# disk_boot DISK SERIAL_LOG: starts QEMU on DISK in the background (its pid in DISK_PID)
# and returns once `berth: system ready` is in SERIAL_LOG.
disk_boot() {
  rm -f "$2"
  # shellcheck disable=SC2086 # QEMU_EXTRA is a list of arguments
  timeout 300 qemu-system-x86_64 -name probe -m 1024 -smp 1 -accel tcg,tb-size=256 -machine pc \
    ${QEMU_EXTRA:-} -drive "file=$1,if=virtio,format=qcow2,cache=unsafe" \
    -drive "file=$D/seed.img,if=virtio,format=raw,readonly=on" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=net0,romfile= \
    -device virtio-rng-pci -display none -serial "file:$2" -monitor none &
  DISK_PID=$!
  for _ in $(seq 1 6000); do grep -q "system ready" "$2" 2>/dev/null && break; sleep 0.05; done
}

# disk_poweroff: `berth poweroff` over SSH, then waits for QEMU to end.
disk_poweroff() {
  "${SSH[@]}" "sudo berth poweroff" >/dev/null 2>&1
  for _ in $(seq 1 120); do kill -0 "$DISK_PID" 2>/dev/null || break; sleep 0.5; done
  kill "$DISK_PID" 2>/dev/null; wait "$DISK_PID" 2>/dev/null
}
