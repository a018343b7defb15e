#!/usr/bin/env python3
"""Rebuild GradBench's evals/lstm/data/lstm_full.txt from ADBench's data, for a GradBench
tree that lacks it (a full clone has it; use this only when it is missing).

ADBench's data/lstm/lstm_l2_c4096.txt begins with a line "layers characters bits" and ends
with one line per character of the same text, its code point in binary, one bit per
number. Decoding those lines gives the text's first 4096 characters. The lstm eval reads at
most 8192 (its largest -c), and only their bits matter to it, so the 4096 characters are
written twice: every input size keeps its shape; beyond character 4096 the bits differ
from upstream's text.

Usage: lstm_text.py ADBENCH/data/lstm/lstm_l2_c4096.txt OUTPUT
"""

import sys


def main(source, output):
    lines = [line.split() for line in open(source, encoding="utf8") if line.strip()]
    _layers, count, bits = (int(v) for v in lines[0])
    rows = lines[-count:]
    if any(len(row) != bits or set(row) - {"0", "1"} for row in rows):
        sys.exit(f"{source}: the last {count} lines are not {bits}-bit characters")
    text = "".join(chr(int("".join(row), 2)) for row in rows)
    with open(output, "w", encoding="utf8") as f:
        f.write(text * 2)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
