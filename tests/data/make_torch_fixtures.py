"""Writes PyTorch state dicts as PyTorch writes them, for tests/api/torch_checkpoint.rs: the
tensors of `nn.Sequential(nn.Linear(3, n), nn.Tanh(), nn.Linear(n, 2))`, each linear
weight as PyTorch stores it (outputs x inputs), each bias as a vector, in float64.

    python3 -m venv venv && venv/bin/pip install safetensors numpy
    venv/bin/python tests/data/make_torch_fixtures.py

- torch_mlp_3_4_2.safetensors: n = 4, with the metadata {"format": "pt"} that Hugging
  Face's `save_pretrained` writes;
- torch_mlp_3_3_2.safetensors: n = 3 (a square first weight), without metadata, as
  `safetensors.torch.save_file(model.state_dict(), path)` writes it;
- torch_mlp_expected.safetensors: an input x and each network's output, computed here
  with PyTorch's formula y = x @ W.T + b (numpy, float64).

torch itself is not needed: `safetensors.torch.save_file` writes the same bytes as
`safetensors.numpy.save_file` for the same float64 arrays.
"""

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HERE = Path(__file__).parent


def state_dict(hidden):
    shapes = {
        "0.weight": (hidden, 3),
        "0.bias": (hidden,),
        "2.weight": (2, hidden),
        "2.bias": (2,),
    }
    out = {}
    for k, (name, shape) in enumerate(shapes.items()):
        n = int(np.prod(shape))
        out[name] = (0.5 * np.cos(0.9 * np.arange(n) + k)).reshape(shape).astype(np.float64)
    return out


def forward(p, x):
    h = np.tanh(x @ p["0.weight"].T + p["0.bias"])
    return h @ p["2.weight"].T + p["2.bias"]


def main():
    x = np.linspace(-1.0, 1.0, 15).reshape(5, 3)
    wide, square = state_dict(4), state_dict(3)
    save_file(wide, HERE / "torch_mlp_3_4_2.safetensors", metadata={"format": "pt"})
    save_file(square, HERE / "torch_mlp_3_3_2.safetensors")
    expected = {"x": x, "y_3_4_2": forward(wide, x), "y_3_3_2": forward(square, x)}
    save_file(expected, HERE / "torch_mlp_expected.safetensors")


if __name__ == "__main__":
    main()
