"""Student t from first principles against known quantiles; Holm's adjustment; the two-way bootstrap."""

import numpy as np
import pytest

from bgpo.stats import betainc, bootstrap, holm, t_interval, t_quantile, t_two_sided_p


@pytest.mark.parametrize("dof, c", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantiles_match_the_tables(dof, c):
    assert t_quantile(0.95, dof) == pytest.approx(c, abs=1e-4)
    assert t_two_sided_p(c, dof) == pytest.approx(0.05, abs=1e-5)


def test_incomplete_beta_edges_and_symmetry():
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    assert betainc(2.5, 1.5, 0.3) == pytest.approx(1 - betainc(1.5, 2.5, 0.7), abs=1e-12)
    assert betainc(1.0, 1.0, 0.37) == pytest.approx(0.37, abs=1e-12)  # uniform


def test_t_interval_of_five_seeds():
    r = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    se = np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)
    assert r["mean"] == 3.0 and r["se"] == pytest.approx(se)
    assert r["ci"] == pytest.approx([3 - 2.7764 * se, 3 + 2.7764 * se], abs=1e-3)
    assert r["p"] == pytest.approx(0.01324, abs=1e-4) and t_interval([0.5])["ci"] is None  # t = 4.243, 4 dof


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])


def test_two_way_bootstrap_widens_with_puzzle_noise():
    rng = np.random.default_rng(0)
    seed_only = np.repeat(rng.normal(1.0, 0.1, (5, 1)), 200, axis=1)
    noisy = seed_only + rng.normal(0, 2.0, (5, 200))
    _, lo1, hi1 = bootstrap(seed_only, reps=500)
    m, lo2, hi2 = bootstrap(noisy, reps=500)
    assert hi2 - lo2 > 2 * (hi1 - lo1) and lo2 < m < hi2


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_puzzles():
    rng = np.random.default_rng(0)
    small = rng.normal(0.01, 0.1, size=(4, 64))
    large = rng.normal(0.01, 0.1, size=(4, 1024))
    m, lo, hi = bootstrap(small)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap(large)
    assert (hi2 - lo2) < 0.5 * (hi - lo)  # ~ 1/sqrt(16) of the width
    assert bootstrap(np.zeros((3, 10)))[1:] == (0.0, 0.0)
