#!/usr/bin/env python3
"""Samples the guest's instruction pointer every 50 ms through QEMU's monitor.

Usage: [SECS=12] sample-ip.py TAG QEMU-ARGS...
Prints one line per sample: seconds since QEMU started, RIP (or EIP), CR0, and how far the
serial console got (pre, grub-done once a grub.cfg `echo MARK-initrd` printed,
kernel-printed once `Linux version` did). Many samples at one address are one long
instruction or a tight loop; `uniq -c` over the addresses shows where a boot spends itself.
"""
import subprocess, sys, time, socket, os, re, collections
tag = sys.argv[1]
sock = f"/tmp/mon-{tag}.sock"
if os.path.exists(sock): os.unlink(sock)
t0 = time.time()
p = subprocess.Popen(["qemu-system-x86_64", "-m", "1024", "-smp", "1", "-accel", "tcg,tb-size=256",
    "-display", "none", "-serial", f"file:/tmp/ser-{tag}.log", "-monitor", f"unix:{sock},server,nowait", "-nic", "none"] + sys.argv[2:],
    stdin=subprocess.DEVNULL)
while not os.path.exists(sock): time.sleep(0.01)
s = socket.socket(socket.AF_UNIX); s.connect(sock); s.settimeout(2)
def cmd(c):
    s.sendall(c.encode() + b"\n")
    out = b""
    while not out.endswith(b"(qemu) "):
        out += s.recv(65536)
    return out.decode(errors="replace")
cmd("")
samples = []
while time.time() - t0 < float(os.environ.get("SECS", "12")):
    r = cmd("info registers")
    m = re.search(r"[RE]IP=([0-9a-f]+)", r); c = re.search(r"CR0=([0-9a-f]+)", r); e = re.search(r"EFER=([0-9a-f]+)", r)
    ser = open(f"/tmp/ser-{tag}.log", "rb").read()
    phase = "kernel-printed" if b"Linux version" in ser else ("grub-done" if b"MARK-initrd" in ser else "pre")
    samples.append((round(time.time() - t0, 2), m.group(1) if m else "?", c.group(1) if c else "?", phase))
    time.sleep(0.05)
p.kill()
for t, rip, cr0, ph in samples: print(t, rip, cr0, ph)
