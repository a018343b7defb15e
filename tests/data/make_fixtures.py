"""Writes the safetensors fixtures that tests/checkpoint.rs loads, with Python's safetensors.

    python3 -m venv venv && venv/bin/pip install safetensors numpy
    venv/bin/python tests/data/make_fixtures.py

The model is tapegrad's `mlp(&[3, 4, 2], Tanh, Identity)`: parameters "0.weight" (3 x 4),
"0.bias" (1 x 4), "2.weight" (4 x 2), "2.bias" (1 x 2); tapegrad's Linear computes
`X @ W + b` with W of shape inputs x outputs. The expected file holds an input and the
network's output computed here in float64.
"""

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HERE = Path(__file__).parent
SHAPES = {"0.weight": (3, 4), "0.bias": (1, 4), "2.weight": (4, 2), "2.bias": (1, 2)}


def params(dtype):
    out = {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        n = shape[0] * shape[1]
        values = 0.5 * np.sin(0.7 * np.arange(n) + k)
        out[name] = values.reshape(shape).astype(dtype)
    return out


def main():
    for dtype, tag in [(np.float32, "f32"), (np.float64, "f64")]:
        save_file(params(dtype), HERE / f"mlp_3_4_2_{tag}.safetensors")
    p = params(np.float64)
    x = np.linspace(-1.0, 1.0, 15).reshape(5, 3)
    y = np.tanh(x @ p["0.weight"] + p["0.bias"]) @ p["2.weight"] + p["2.bias"]
    save_file({"x": x, "y": y}, HERE / "mlp_3_4_2_expected.safetensors")


if __name__ == "__main__":
    main()
