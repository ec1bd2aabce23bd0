#!/bin/bash
# An A/B of `berth os upgrade --no-reboot --force` in one VM: the build's installed disk
# (MODE=disk boot.sh), the `next` test OS image in a docker-registry on the host, and
# OLD (another static `berth` binary, copied into the VM over the probe's stdin) and the
# build's own `berth` run alternately, ROUNDS rounds; prints one `RUN binary seconds` line
# per upgrade (from the guest's /proc/uptime) into target/berth/probe/abup/out.txt.
#
# Usage: ab-upgrade.sh OLD_BERTH      e.g. a `cargo build --release --target
#        x86_64-unknown-linux-musl -p berth-cli` of another commit, in a worktree
# Environment: ROUNDS (default 3), ORDER (default "/tmp/berth-old /usr/bin/berth"),
#   PORT (the registry's, default 5123); `cargo xtask bench upgrade` made test-os/next.tar.
set -eu
OLD=$1; ROUNDS=${ROUNDS:-3}; PORT=${PORT:-5123}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$REPO/target/berth
D=$OUT/probe/abup-registry; rm -rf "$D"; mkdir -p "$D"
cat > "$D/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $D/data}}
http: {addr: 127.0.0.1:$PORT}
EOF
docker-registry serve "$D/registry.yml" >/dev/null 2>&1 & REGISTRY=$!
trap 'kill $REGISTRY' EXIT
sleep 1
skopeo copy --quiet --dest-tls-verify=false "oci-archive:$OUT/test-os/next.tar" \
  "docker://127.0.0.1:$PORT/berth/os:next"
ORDER=${ORDER:-/tmp/berth-old /usr/bin/berth}
LOOP="for i in \$(seq $ROUNDS); do for b in $ORDER; do s=\$(cut -d' ' -f1 /proc/uptime); \
sudo \$b os upgrade --no-reboot --force --insecure 10.0.2.2:$PORT/berth/os:next >/tmp/out 2>&1 || cat /tmp/out; \
e=\$(cut -d' ' -f1 /proc/uptime); echo \"RUN \$b \$(awk \"BEGIN{print \$e-\$s}\")\"; done; done"
MODE=disk SETTLE=5 timeout 900 "$REPO/tools/probe/boot.sh" abup \
  'cat > /tmp/berth-old; chmod +x /tmp/berth-old' "$LOOP" < "$OLD"
