#!/bin/bash
# How the docker engine fares at one memory size: boots the build with the engine (as
# `ENGINE=1 MODE=kernel tools/probe/boot.sh` does) at -m MEM, then over SSH times the docker
# CLI's first answer, imports the build's busybox image (`berth/busybox`, a layer of the
# staged root) and times two `docker run --rm bb /bin/busybox true`. Prints MemAvailable at
# the end and the OOM killer's count from the serial console.
#
# Usage: engine-memory.sh MEM       e.g. engine-memory.sh 256
set -u
MEM=$1
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$HERE/../.." && pwd)/target/berth
TAG=engine-m$MEM
PORT=${PORT:-2300}
# `berth/busybox:latest`'s one layer, unpacked in the staged root under its diff ID.
STAGED=$OUT/rootfs-staging/usr/share/berth
LAYER=$STAGED/layers/$(python3 - "$STAGED/images" <<'PY'
import json, sys
blobs = sys.argv[1] + "/blobs/sha256/"
for m in json.load(open(sys.argv[1] + "/index.json"))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "berth/busybox:latest":
        manifest = json.load(open(blobs + m["digest"].split(":")[1]))
        config = json.load(open(blobs + manifest["config"]["digest"].split(":")[1]))
        print(config["rootfs"]["diff_ids"][0].split(":")[1])
PY
)
[ -x "$LAYER/bin/busybox" ] || { echo "no berth/busybox layer in $STAGED (cargo xtask build)" >&2; exit 2; }
ENGINE=1 MODE=kernel MEM=$MEM SETTLE=1 PORT=$PORT "$HERE/boot.sh" "$TAG" "sleep 600" >/dev/null 2>&1 &
BOOT=$!
LOG=$OUT/probe/$TAG/serial.log
sleep 2
for _ in $(seq 1 300); do grep -q "system ready" "$LOG" 2>/dev/null && break; sleep 1; done
grep -q "system ready" "$LOG" 2>/dev/null || { echo "-m $MEM: no ready line in 300 s"; kill $BOOT; exit 1; }
SSH=(ssh -q -i "$OUT/probe/key" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o ConnectTimeout=60 berth@127.0.0.1)
start=$(date +%s.%N)
answered=; never=" (never)"
for _ in $(seq 1 20); do
  if "${SSH[@]}" "timeout 20 docker version --format '{{.Server.Version}}'" 2>/dev/null | grep -q .; then
    answered=1; never=; break
  fi
done
echo "-m $MEM: the docker CLI's first answer $(echo "$(date +%s.%N) - $start" | bc) s after the ready line$never"
if [ -n "$answered" ]; then
  tar -C "$LAYER" -cf - . | "${SSH[@]}" "docker import - bb >/dev/null &&
    for i in 1 2; do s=\$(date +%s%N); docker run --rm bb /bin/busybox true &&
      echo \"  docker run \$i: \$(( (\$(date +%s%N) - s) / 1000000 )) ms\"; done;
    grep MemAvailable /proc/meminfo"
fi
echo "  OOM kills: $(grep -a -c 'Out of memory' "$LOG")"
pkill -f "qemu-system-x86_64 -name probe" 2>/dev/null
wait $BOOT 2>/dev/null
