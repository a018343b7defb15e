"""Checks that a checkpoint tapegrad wrote loads in Python's safetensors and holds exactly
the tensors of a reference file: same names, dtypes, shapes and bits.

    python3 tests/data/check_checkpoint.py WRITTEN.safetensors REFERENCE.safetensors

Run by tests/checkpoint.rs (`written_here_loads_in_python`) when Python's safetensors is
installed; .ci/run installs it.
"""

import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def main(written, reference):
    a, b = load_file(written), load_file(reference)
    assert sorted(a) == sorted(b), f"names differ: {sorted(a)} vs {sorted(b)}"
    for name in a:
        assert a[name].dtype == b[name].dtype, f"{name}: dtype {a[name].dtype} vs {b[name].dtype}"
        assert a[name].shape == b[name].shape, f"{name}: shape {a[name].shape} vs {b[name].shape}"
        assert a[name].tobytes() == b[name].tobytes(), f"{name}: values differ"
    with safe_open(written, framework="numpy") as f:
        assert f.metadata() == {"layout": "tapegrad"}, f.metadata()
    print(f"{written}: {len(a)} tensors identical to {reference}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
