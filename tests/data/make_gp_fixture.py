"""Writes tests/data/gp_co2_sklearn.txt: a scikit-learn reference for Gaussian-process
regression on the Mauna Loa CO2 series, for tapegrad's Rust reimplementation to check against.

    python3 -m venv /tmp/gpenv && /tmp/gpenv/bin/pip install scikit-learn numpy
    /tmp/gpenv/bin/python tests/data/make_gp_fixture.py

It follows scikit-learn's example "Forecasting of CO2 level on Mona Loa dataset using
Gaussian process regression (GPR)" (examples/gaussian_process/plot_gpr_co2.py), which loads
the same weekly series from OpenML (data_id 41187) and uses polars; here the series is read
from examples/data/co2.csv (statsmodels' copy) with the standard library only.

Preprocessing (everything the Rust side must reproduce):
  * co2.csv has the header `date,co2`, date as YYYYMMDD; rows whose co2 field is empty
    (59 weeks) are dropped.
  * The remaining weeks are grouped by calendar month (year, month) of their date, as the
    example's `group_by_dynamic("date", every="1mo").agg(mean).drop_nulls()` does: windows
    are calendar months, so the partial first month (1958-03, one week: 1958-03-29) and the
    last (2001-12) are kept, and months with no week of data (1958-06, 1958-10, 1964-02,
    1964-03, 1964-04) are absent, not interpolated. y is each month's mean (sum of its
    weeks in date order divided by their count), in ppm.
  * x = year + month / 12 with month in 1..12 (so January 1959 is 1959.0833..., December
    2001 is 2002.0). Computed in float64 as float(year) + (month / 12.0).
  * The regression target is y - mean(y); mean(y) is numpy's mean over the monthly values
    (numpy sums pairwise, so a plain sequential sum can differ in the last bits).

Kernel, in scikit-learn's notation (k(x, x') with d = |x - x'|):
  long      = 50.0**2 * RBF(length_scale=50.0)
  seasonal  = 2.0**2 * RBF(length_scale=100.0)
              * ExpSineSquared(length_scale=1.0, periodicity=1.0, periodicity_bounds="fixed")
  irregular = 0.5**2 * RationalQuadratic(length_scale=1.0, alpha=1.0)
  noise     = 0.1**2 * RBF(length_scale=0.1)
              + WhiteKernel(noise_level=0.1**2, noise_level_bounds=(1e-5, 1e5))
  kernel    = long + seasonal + irregular + noise
with
  ConstantKernel c:          k = c
  RBF(l):                    k = exp(-d^2 / (2 l^2))
  ExpSineSquared(l, p):      k = exp(-2 sin^2(pi d / p) / l^2)
  RationalQuadratic(l, a):   k = (1 + d^2 / (2 a l^2))^(-a)
  WhiteKernel(s):            k = s if x and x' are the same training point (diagonal of
                             K(X, X)), else 0
The periodicity is fixed, so theta has 11 entries: the natural log of each free
hyperparameter, in the order of `theta_names` (scikit-learn's `kernel.theta` order):
  long: constant, RBF length_scale; seasonal: constant, RBF length_scale, ExpSineSquared
  length_scale; irregular: constant, RationalQuadratic alpha, RationalQuadratic
  length_scale (alpha first: within one kernel scikit-learn sorts hyperparameters by
  name); noise: constant, RBF length_scale, WhiteKernel noise_level.
All bounds are (1e-5, 1e5), i.e. log bounds +-11.512925464970229.

GaussianProcessRegressor(kernel=kernel, normalize_y=False) with its default alpha=1e-10,
which is added to the diagonal of K. The log marginal likelihood is
  LML = -0.5 y^T K^-1 y - sum(log diag L) - n/2 log(2 pi),   K + 1e-10 I = L L^T,
and grad_init is d LML / d theta (theta in log space) at the initial hyperparameters.
The fit uses scikit-learn's default optimizer (scipy's L-BFGS-B via fmin_l_bfgs_b, started
at the initial theta, n_restarts_optimizer=0), maximising LML; theta_fit and lml_fit come
from it and depend on the scipy version (recorded in the file).

The fixture is plain text, one item per line, `name value1 value2 ...`, floats as repr()
(shortest round-trip form, i.e. exact float64); lines starting with # are comments. The
script also checks, with numpy alone, that the formulas above give scikit-learn's LML
(to 1e-8 relative; they agree to ~2e-10) and, by central differences, its gradient.

Tolerances for a reimplementation: K + 1e-10 I has a condition number of ~1.2e8 at
theta_init, so two correct float64 implementations (e.g. numpy and scikit-learn, which
builds K^-1 explicitly for the gradient) differ by ~1e-7 in lml_init (~2e-10 relative) and
~5e-8 in grad_init; compare with a relative tolerance around 1e-8, not bit-exactly.
"""

import csv
import math
import time
from pathlib import Path

import numpy as np
import scipy
import sklearn
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import (
    RBF,
    ExpSineSquared,
    RationalQuadratic,
    WhiteKernel,
)

HERE = Path(__file__).resolve().parent
CSV = HERE / ".." / ".." / "examples" / "data" / "co2.csv"
OUT = HERE / "gp_co2_sklearn.txt"


def load_monthly():
    """Monthly means of the weeks with data, as (x, y) float64 arrays in date order."""
    months = {}  # (year, month) -> list of weekly values, in file (date) order
    with open(CSV, newline="") as f:
        rows = csv.reader(f)
        assert next(rows) == ["date", "co2"]
        for date, co2 in rows:
            if co2 == "":
                continue
            key = (int(date[0:4]), int(date[4:6]))
            months.setdefault(key, []).append(float(co2))
    x, y = [], []
    for (year, month), values in sorted(months.items()):
        total = 0.0
        for v in values:
            total += v
        x.append(float(year) + month / 12.0)
        y.append(total / len(values))
    return np.array(x), np.array(y)


def make_kernel():
    long_term = 50.0**2 * RBF(length_scale=50.0)
    seasonal = (
        2.0**2
        * RBF(length_scale=100.0)
        * ExpSineSquared(length_scale=1.0, periodicity=1.0, periodicity_bounds="fixed")
    )
    irregular = 0.5**2 * RationalQuadratic(length_scale=1.0, alpha=1.0)
    noise = 0.1**2 * RBF(length_scale=0.1) + WhiteKernel(
        noise_level=0.1**2, noise_level_bounds=(1e-5, 1e5)
    )
    return long_term + seasonal + irregular + noise


def numpy_lml(theta, x, y, jitter=1e-10):
    """LML from the kernel formulas in the docstring, theta in scikit-learn's order."""
    # scikit-learn orders a kernel's own hyperparameters by name, so the rational
    # quadratic's alpha comes before its length_scale.
    c1, l1, c2, l2, l3, c3, a4, l4, c4, l5, s = np.exp(theta)
    p = 1.0  # fixed periodicity
    d = np.abs(x[:, None] - x[None, :])
    d2 = d * d
    K = (
        c1 * np.exp(-d2 / (2 * l1**2))
        + c2 * np.exp(-d2 / (2 * l2**2)) * np.exp(-2 * np.sin(np.pi * d / p) ** 2 / l3**2)
        + c3 * (1 + d2 / (2 * a4 * l4**2)) ** (-a4)
        + c4 * np.exp(-d2 / (2 * l5**2))
    )
    K[np.diag_indices_from(K)] += s + jitter
    L = np.linalg.cholesky(K)
    z = np.linalg.solve(L, y)  # L z = y, so z.z = y^T K^-1 y
    n = len(y)
    return -0.5 * (z @ z) - np.sum(np.log(np.diag(L))) - 0.5 * n * math.log(2 * math.pi)


def fmt(name, values):
    return " ".join([name] + [repr(float(v)) for v in np.atleast_1d(values)])


def main():
    x, y = load_monthly()
    n = len(x)
    y_mean = y.mean()
    yc = y - y_mean
    X = x.reshape(-1, 1)

    kernel = make_kernel()
    names = [h.name for h in kernel.hyperparameters if not h.fixed]
    theta_init = kernel.theta.copy()
    assert len(names) == len(theta_init) == 11

    # log_marginal_likelihood(theta) evaluates with a clone of kernel_, which exists only
    # after fit; optimizer=None keeps kernel_ at the initial hyperparameters.
    gp0 = GaussianProcessRegressor(kernel=kernel, normalize_y=False, optimizer=None)
    gp0.fit(X, yc)
    lml_init, grad_init = gp0.log_marginal_likelihood(theta_init, eval_gradient=True)
    assert lml_init == gp0.log_marginal_likelihood_value_

    lml_np = numpy_lml(theta_init, x, yc)
    rel = abs(lml_np - lml_init) / abs(lml_init)
    assert rel < 1e-8, (lml_np, lml_init, rel)

    # Central differences of the numpy LML as a rough check of scikit-learn's gradient.
    # K is ill-conditioned (condition number ~1.2e8 at theta_init), so the LML carries
    # ~1e-7 of rounding noise: a step much below 1e-3 is swamped by it.
    h = 1e-3
    fd = np.array(
        [
            (numpy_lml(theta_init + h * e, x, yc) - numpy_lml(theta_init - h * e, x, yc))
            / (2 * h)
            for e in np.eye(len(theta_init))
        ]
    )
    fd_err = np.max(np.abs(fd - grad_init) / np.maximum(1.0, np.abs(grad_init)))
    assert fd_err < 1e-3, (fd, grad_init)

    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False)
    t0 = time.perf_counter()
    gp.fit(X, yc)
    fit_seconds = time.perf_counter() - t0
    theta_fit = gp.kernel_.theta
    lml_fit = gp.log_marginal_likelihood_value_
    assert [h.name for h in gp.kernel_.hyperparameters if not h.fixed] == names

    lines = [
        "# scikit-learn GaussianProcessRegressor on the Mauna Loa CO2 monthly means;"
        " written by tests/data/make_gp_fixture.py",
        f"# sklearn {sklearn.__version__} numpy {np.__version__} scipy {scipy.__version__}",
        f"# initial kernel: {kernel}",
        f"# fitted kernel: {gp.kernel_}",
        f"n {n}",
        fmt("y_mean", y_mean),
        fmt("x_head", x[:3]),
        fmt("y_head", y[:3]),
        fmt("x_tail", x[-3:]),
        fmt("y_tail", y[-3:]),
        " ".join(["theta_names"] + names),
        fmt("theta_init", theta_init),
        fmt("lml_init", lml_init),
        fmt("grad_init", grad_init),
        fmt("theta_fit", theta_fit),
        fmt("lml_fit", lml_fit),
    ]
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text, end="")
    print(f"# numpy LML at theta_init: {float(lml_np)!r} (relative difference {rel:.3e})")
    print(f"# finite-difference gradient check: max scaled error {fd_err:.3e}")
    print(f"# fit took {fit_seconds:.2f} s")
    print(f"# wrote {OUT}")


if __name__ == "__main__":
    main()
