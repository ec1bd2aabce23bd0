#!/bin/bash
# One probe boot of Berth in QEMU (TCG, one vCPU, -m 1024 unless MEM is set, virtio-rng, no user engine
# unless ENGINE=1),
# then COMMANDS over SSH once `berth: system ready` is out; prints the ready line and
# what the commands printed. Files go to target/berth/probe/TAG.
#
# Usage: boot.sh TAG [COMMAND...]      e.g. boot.sh a1 "sudo berth boot-time"
# Environment:
#   MODE=iso      the ISO on IDE through GRUB (default: what `cargo xtask run` does)
#   MODE=kernel   QEMU loads KERNEL and INITRD itself and the ISO is a virtio disk,
#                 as `cargo xtask bench boot` boots
#   MODE=disk     a copy-on-write overlay of QCOW2 (the disk image: SeaBIOS, GRUB from
#                 disk), its first boot (the state partition grown and formatted), as
#                 the bench's disk boots
#   ISO, KERNEL, INITRD, QCOW2   default: the build in target/berth
#   APPEND        kernel arguments added in MODE=kernel (e.g. berth.debug)
#   KERNEL_ARGS   Berth's own kernel arguments in MODE=kernel (iso/src/grub.rs KERNEL_ARGS;
#                 KERNEL_ARGS= boots without them)
#   EXTRA         lines added under `berth: services:` in the seed's user-data
#   TOP           top-level lines added to the user-data (e.g. a bootcmd)
#   ENGINE=1      keep the user engine (docker) the default config starts
#   QEMU_EXTRA    QEMU arguments added, e.g. "-icount shift=1,sleep=off" (see README.md)
#   PORT          host port forwarded to the guest's SSH (default 2300)
#   MEM           guest memory in MiB (default 1024)
#   CPUS          vCPUs (default 1, as the bench boots)
#   SETTLE        seconds to wait after the ready line before the commands (default 3)
set -u
TAG=$1; shift
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$REPO/target/berth
ISO=${ISO:-$OUT/berth.iso}
PORT=${PORT:-2300}
D=$OUT/probe/$TAG; rm -rf "$D"; mkdir -p "$D"
KEY=$OUT/probe/key
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEY"
# An empty `services:` would remove every service (a null key removes what the
# defaults set), so the key is written only with something under it.
SERVICES=$([ -n "${ENGINE:-}" ] || echo "    docker: null")${EXTRA:+
$EXTRA}
[ -z "$SERVICES" ] || SERVICES="berth:
  services:
$SERVICES"
cat > "$D/user-data" <<EOC
#cloud-config
ssh_authorized_keys:
  - $(cat "$KEY.pub")
$SERVICES
${TOP:-}
EOC
printf 'instance-id: probe\nlocal-hostname: berth\n' > "$D/meta-data"
cloud-localds "$D/seed.img" "$D/user-data" "$D/meta-data"
case ${MODE:-iso} in
  iso)
    truncate -s 4G "$D/state.img"
    BOOT=(-drive "file=$ISO,media=cdrom,readonly=on,if=ide,index=2" -boot order=d
          -drive "file=$D/state.img,if=virtio,format=raw,cache=unsafe") ;;
  kernel)
    BOOT=(-kernel "${KERNEL:-$OUT/vmlinuz}" -initrd "${INITRD:-$OUT/initrd}"
          -append "console=ttyS0 panic=-1 ${KERNEL_ARGS-cryptomgr.notests=1 percpu_alloc=page} ${APPEND:-}"
          -drive "file=$ISO,if=virtio,format=raw,readonly=on") ;;
  disk)
    qemu-img create -q -f qcow2 -b "${QCOW2:-$OUT/berth.qcow2}" -F qcow2 "$D/disk.qcow2" 8G
    BOOT=(-drive "file=$D/disk.qcow2,if=virtio,format=qcow2,cache=unsafe") ;;
  *) echo "MODE is iso, kernel or disk" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086 # QEMU_EXTRA is a list of arguments
timeout 300 qemu-system-x86_64 -name probe -m "${MEM:-1024}" -smp "${CPUS:-1}" -accel tcg,tb-size=256 -machine pc \
  "${BOOT[@]}" -drive "file=$D/seed.img,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=net0,romfile= \
  -device virtio-rng-pci ${QEMU_EXTRA:-} -display none -serial "file:$D/serial.log" -monitor none &
QPID=$!
for _ in $(seq 1 600); do grep -q "system ready" "$D/serial.log" 2>/dev/null && break; sleep 0.5; done
sleep "${SETTLE:-3}"
SSH=(ssh -q -i "$KEY" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null berth@127.0.0.1)
for c in "$@"; do echo "### $c"; "${SSH[@]}" "$c"; done > "$D/out.txt" 2>&1
kill $QPID; wait $QPID 2>/dev/null
grep -a "system ready" "$D/serial.log" | head -1
cat "$D/out.txt"
