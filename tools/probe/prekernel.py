#!/usr/bin/env python3
"""Wall time from QEMU's start to the kernel's first serial line and to `Run /init`.

Usage: prekernel.py TAG QEMU-ARGS...   (the boot device and machine, e.g.
  prekernel.py ide -machine pc -drive file=target/berth/berth.iso,media=cdrom,if=ide,index=2 -boot order=d)
The host timestamps the serial output as it arrives, so firmware and boot loader time is in it.
"""
import subprocess, sys, time
tag = sys.argv[1]
t0 = time.time()
p = subprocess.Popen(["qemu-system-x86_64", "-m", "1024", "-smp", "1", "-accel", "tcg,tb-size=256",
    "-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none"] + sys.argv[2:],
    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
buf = b""; marks = {}
deadline = t0 + 120
while time.time() < deadline:
    b = p.stdout.read1(4096)
    if not b: break
    now = time.time() - t0
    buf += b
    for m in [b"Linux version", b"Run /init"]:
        if m in buf and m not in marks: marks[m] = now
    if b"Run /init" in buf: break
p.kill(); p.wait()
print(tag, " ".join(f"{k.decode()}={v:.2f}" for k, v in marks.items()))
