#!/usr/bin/env python3
"""Checks for the double-double references of src/kernels/accuracy/dd.rs: each function at
points across its range, by mpmath at 50 digits.

    pip install mpmath==1.3.0
    python3 tests/data/make_kernel_reference.py > tests/data/kernel_reference.txt

Each line: function, x as an exact hexadecimal f64 (Python's float.hex), and the value as
a decimal mantissa and a power of two: value = m * 2**k (so that results far below the
f64 range are exact too).
"""

import mpmath as mp

mp.mp.dps = 50

POINTS = {
    "exp": [-745.0, -700.5, -100.25, -20.0, -1.0, -1e-10, 1e-300, 0.3, 1.0, 20.0, 300.0, 709.5],
    "ln": [5e-324, 1e-310, 1e-300, 1e-10, 0.5, 0.99999, 1.00001, 1.5, 2.0, 10.0, 1e100, 1.7e308],
    "tanh": [-30.0, -5.0, -1.0, -1e-3, -1e-20, 1e-300, 1e-6, 0.25, 0.75, 3.0, 19.0],
    "sigmoid": [-740.0, -300.0, -40.0, -5.0, -1e-5, 0.0, 1e-5, 2.0, 10.0, 30.0, 40.0],
    "softplus": [-740.0, -100.0, -20.0, -5.0, -1e-5, 0.0, 1e-5, 3.0, 20.0, 40.0, 1e5],
    "erf": [-6.5, -4.0, -2.9, -1.0, -0.5, -1e-5, 1e-310, 1e-8, 0.3, 0.56, 1.5, 2.99, 3.01, 5.0],
    "gelu": [-39.0, -30.0, -20.0, -8.0, -4.3, -4.2, -2.0, -0.7, -1e-6, 1e-300, 0.5, 1.0, 4.0, 9.0, 30.0],
    "phi": [-39.0, -20.0, -4.3, -4.2, -1.0, 0.0, 0.3, 2.0, 8.0],
    "density": [-30.0, -5.0, -0.75, 0.0, 0.1, 2.0, 37.0],
    "elu": [-40.0, -5.0, -1.0, -1e-3, -1e-7, -1e-20, 0.5, 2.0],
    "silu": [-740.0, -50.0, -1.0, -1e-5, 1e-5, 1.0, 30.0],
}


def f(name, x):
    x = mp.mpf(x)
    if name == "exp":
        return mp.exp(x)
    if name == "ln":
        return mp.log(x)
    if name == "tanh":
        return mp.tanh(x)
    if name == "sigmoid":
        return 1 / (1 + mp.exp(-x))
    if name == "softplus":
        return mp.log1p(mp.exp(x))
    if name == "erf":
        return mp.erf(x)
    if name == "gelu":
        return x * mp.ncdf(x)
    if name == "phi":
        return mp.ncdf(x)
    if name == "density":
        return x * mp.npdf(x)
    if name == "elu":
        return x if x > 0 else mp.expm1(x)
    if name == "silu":
        return x / (1 + mp.exp(-x))
    raise ValueError(name)


if __name__ == "__main__":
    print("# function x value_mantissa value_exponent2 (made by make_kernel_reference.py, mpmath 50 digits)")
    for name, xs in POINTS.items():
        for x in xs:
            v = f(name, x)
            if v == 0:
                m, k = mp.mpf(0), 0
            else:
                k = int(mp.floor(mp.log(abs(v), 2)))
                m = v / mp.mpf(2) ** k
            print(name, float(x).hex(), mp.nstr(m, 40, strip_zeros=False), k)
