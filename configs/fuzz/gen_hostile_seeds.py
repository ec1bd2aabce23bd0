#!/usr/bin/env python3
"""Writes the generated (hostile) seed inputs into seeds/.

The hand-written seeds (full.yml, rancher.yml, ...) are committed as they are;
these ones are easier to generate than to type. Each stays under 16 KiB: with no
-max_len, libFuzzer caps mutated inputs at the largest seed (minimum 4 KiB), and
big seeds slow every run down. Really large inputs (50 MB scalars, 10k-deep
nesting) are covered by configs/tests/hostile.rs instead.

Run from configs/fuzz/: python3 gen_hostile_seeds.py
"""

import os

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
HEAD = "#cloud-config\n"


def write(name, text):
    with open(os.path.join(SEEDS, name), "w", encoding="utf-8") as f:
        f.write(text)


# Deep nesting, just past the parser's depth limit (64) and well past it.
write("deep-flow-seq.yml", HEAD + "a: " + "[" * 100 + "]" * 100 + "\n")
write("deep-flow-map.yml", HEAD + "a: " + "{a: " * 80 + "x" + "}" * 80 + "\n")
write("deep-flow-map-63.yml", HEAD + "a: " + "{a: " * 62 + "x" + "}" * 62 + "\n")
write(
    "deep-block-map.yml",
    HEAD + "".join(" " * i + "k:\n" for i in range(70)),
)
write(
    "deep-block-seq.yml",
    HEAD + "runcmd:\n" + "".join(" " * (2 * i) + "-\n" for i in range(70)) + " " * 140 + "- x\n",
)

# Billion laughs: 9 levels of 10 aliases each (10^9 nodes when expanded).
lol = HEAD + "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
for i in range(1, 10):
    p = f"*a{i - 1}"
    lol += f"a{i}: &a{i} [" + ", ".join([p] * 10) + "]\n"
write("billion-laughs.yml", lol)

# The same with mappings and merge keys.
bomb = HEAD + "m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}\n"
for i in range(1, 8):
    p = f"*m{i - 1}"
    bomb += f"m{i}: &m{i} {{" + ", ".join(f"k{j}: {p}" for j in range(10)) + f", <<: {p}}}\n"
write("merge-key-bomb.yml", bomb)

# One big scalar, aliased many times (copies of a large string).
big = "x" * 8000
write(
    "aliased-scalar.yml",
    HEAD + f"hostname: &h \"{big}\"\nberth:\n  modules: [" + ", ".join(["*h"] * 500) + "]\n",
)

# Huge scalars, plain and block.
write("huge-plain.yml", HEAD + "hostname: " + "y" * 12000 + "\n")
write(
    "huge-block.yml",
    HEAD + "write_files:\n  - path: /a\n    content: |\n" + "      " + "z" * 100 + "\n" * 1 + ("      line\n" * 1000),
)

# Many keys in one mapping; many duplicate merge keys.
write("many-keys.yml", HEAD + "berth:\n  sysctl:\n" + "".join(f"    k{i}: {i}\n" for i in range(900)))
write("many-merges.yml", HEAD + "b: &b {x: 1}\nc:\n" + "".join("  <<: *b\n" for _ in range(500)))

# A long line of `-`, and long runs of other indicator characters.
write("dashes.yml", "-" * 12000 + "\n")
write("indicators.yml", HEAD + "a: " + "[{" * 30 + "?:-|>!&*%@`#," * 200 + "\n")

# A kernel command line with many keys and a long base64 document.
write(
    "cmdline-long.txt",
    " ".join(f"berth.sysctl.k{i}={i}" for i in range(400))
    + " berth.cloud_config="
    + "I2Nsb3VkLWNvbmZpZwo" * 50
    + "\n",
)
