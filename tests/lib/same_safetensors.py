#!/usr/bin/env python3
"""Checks that two .safetensors files hold the same tensors (names, dtypes, shapes) with values
within ATOL of each other. Standard library only. Exit 0 when they match, 1 (naming the first
difference) when not.

Usage: same_safetensors.py A.safetensors B.safetensors ATOL
"""
import json
import struct
import sys
from array import array

FORMATS = {"F32": "f", "F64": "d", "I64": "q", "I32": "i"}


def read(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if info["dtype"] not in FORMATS:
            sys.exit(f"{path}: {name}: dtype {info['dtype']} is not handled here")
        values = array(FORMATS[info["dtype"]])
        values.frombytes(data[begin:end])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = (info["dtype"], info["shape"], values)
    return out


def main():
    a_path, b_path, atol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    a, b = read(a_path), read(b_path)
    if sorted(a) != sorted(b):
        print(f"tensor names differ: only in {a_path}: {sorted(set(a) - set(b))}, "
              f"only in {b_path}: {sorted(set(b) - set(a))}")
        return 1
    for name in sorted(a):
        (da, sa, va), (db, sb, vb) = a[name], b[name]
        if (da, sa) != (db, sb):
            print(f"{name}: {da}{sa} vs {db}{sb}")
            return 1
        worst = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
        if worst > atol:
            print(f"{name}: values differ by up to {worst:g} (atol {atol:g})")
            return 1
    print(f"same tensors: {len(a)} ({a_path} vs {b_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
