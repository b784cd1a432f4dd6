"""Intervals for paired comparisons of runs: over seeds (Student t) and over seeds × puzzles (bootstrap).

Two sources of noise sit in every number of the small-scale chapters: which seeds were run (training
noise: rollouts, masks, data order) and which puzzles the pool happens to hold. A t-interval over
per-seed means covers the first only; the two-way bootstrap (:func:`bootstrap`) resamples seeds and
puzzles together and covers both. With several comparisons made, :func:`holm` adjusts their p-values
(Holm's step-down method, which controls the family-wise error rate without assuming independence).
The Student t distribution is computed here (regularised incomplete beta function) so the package
needs no SciPy.
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap(diff: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a ``(seeds, puzzles)`` array of paired differences and its 95% bootstrap interval.

    Each replicate resamples the seeds and the puzzles with replacement (a two-way bootstrap), so the
    interval covers the noise of both the seeds and the puzzle draw.
    """
    rng = np.random.default_rng(seed)
    S, N = diff.shape
    means = np.empty(reps)
    for k in range(reps):
        means[k] = diff[rng.integers(0, S, S)][:, rng.integers(0, N, N)].mean()
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(diff.mean()), float(lo), float(hi)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_two_sided_p(t: float, dof: int) -> float:
    """P(|T| >= |t|) for Student's T with ``dof`` degrees of freedom: I_{dof/(dof+t^2)}(dof/2, 1/2)."""
    return betainc(dof / 2, 0.5, dof / (dof + t * t))


def t_quantile(level: float, dof: int) -> float:
    """The two-sided critical value c with P(|T| <= c) = ``level`` (bisection on :func:`t_two_sided_p`)."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, dof) > 1 - level else (lo, mid)
    return (lo + hi) / 2


def t_interval(values, level: float = 0.95) -> dict:
    """Mean, standard error, ``level`` t-interval and two-sided p-value (H0: mean 0) of per-seed values.

    With one value there is no spread to measure: se, interval and p are None.
    """
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "se": None, "ci": None, "p": None, "n": int(x.size)}
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    half = t_quantile(level, x.size - 1) * se
    p = t_two_sided_p(mean / se, x.size - 1) if se > 0 else float(mean == 0)
    return {"mean": mean, "se": se, "ci": [mean - half, mean + half], "p": p, "n": int(x.size)}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input's order (None stays None and does not count)."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted
