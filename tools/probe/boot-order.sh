#!/bin/bash
# Regenerates cli/boot-symbol-order.txt: the functions of `berth` in the order a boot first
# runs them, which the release build links together (cli/build.rs; docs/benchmarks.md,
# "The boot's code together"). Run after `cargo xtask build`, as root; commit the file.
#
# How: `berth` built without position independence (its code then sits at the same
# addresses in every process, apart from every other program's) and with its symbols, put
# in place of the shipped one in a copy of the root; one boot as the bench boots
# (MODE=kernel), with QEMU logging the code it translates in that range (`-d in_asm
# -dfilter`). QEMU translates code the first time it runs, so the log is the order in which
# the boot first ran each function; the symbol names are those of the shipped build.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$REPO/target/berth
W=$OUT/boot-order
rm -rf "$W"; mkdir -p "$W/iso/berth"
echo "==> berth, not position-independent, with symbols"
# Through RUSTFLAGS, not the profile: Cargo hashes the profile (its `strip` too) into
# every symbol's name, and those names must be the shipped build's.
CARGO_TARGET_DIR=$W/target RUSTFLAGS="-C relocation-model=static -C strip=none" \
  cargo build --release --locked -p berth-cli --bin berth --target x86_64-unknown-linux-musl
BIN=$W/target/x86_64-unknown-linux-musl/release/berth
echo "==> a root and an ISO with it"
cp -al "$OUT/rootfs-staging" "$W/root"
rm "$W/root/usr/bin/berth"; cp "$BIN" "$W/root/usr/bin/berth"
mksquashfs "$W/root" "$W/iso/berth/rootfs.squashfs" -comp zstd -Xcompression-level 15 -b 64K \
  -noappend -no-progress -quiet
xorriso -as mkisofs -r -V BERTH_ISO -o "$W/berth.iso" "$W/iso" 2>/dev/null
read -r START SIZE < <(readelf -SW "$BIN" |
  sed -n 's/.* \.text *PROGBITS *\([0-9a-f]*\) *[0-9a-f]* *\([0-9a-f]*\) .*/\1 \2/p')
echo "==> one boot, QEMU logging the code it translates in .text (0x$START, 0x$SIZE bytes)"
ISO=$W/berth.iso MODE=kernel QEMU_EXTRA="-d in_asm -dfilter 0x$START+0x$SIZE -D $W/in_asm.log" \
  "$HERE/boot.sh" boot-order true
echo "==> $REPO/cli/boot-symbol-order.txt"
python3 - "$W/in_asm.log" "$BIN" "$REPO/cli/boot-symbol-order.txt" <<'PY'
import bisect, re, subprocess, sys
log, binary, out = sys.argv[1:]
functions = []
nm = subprocess.run(["nm", "-S", "-n", "--defined-only", binary], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    f = line.split()
    if len(f) == 4 and f[2] in "tTwW":
        functions.append((int(f[0], 16), int(f[1], 16), f[3]))
functions.sort()
starts = [f[0] for f in functions]
address = re.compile(r"^0x([0-9a-f]+):")
seen, order = set(), []
for line in open(log, errors="replace"):
    m = address.match(line)
    if not m:
        continue
    a = int(m.group(1), 16)
    i = bisect.bisect_right(starts, a) - 1
    if i < 0 or a >= functions[i][0] + max(functions[i][1], 1):
        continue
    name = functions[i][2]
    if name not in seen:
        seen.add(name)
        order.append(functions[i])
if len(order) < 100:
    sys.exit(f"only {len(order)} functions in the log: did the boot run this build?")
with open(out, "w") as f:
    f.writelines(name + "\n" for _, _, name in order)
print(f"{len(order)} of {len(functions)} functions ran, {sum(s for _, s, _ in order) / 1e6:.2f} MB of code")
PY
