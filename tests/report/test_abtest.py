"""The A/B statistics wrappers against published reference values, and the sequential test's validity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import betaln

from trainserve import abtest


def test_wilson_interval_matches_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I example (a): 81/263 -> Wilson 0.2553-0.3662.
    lo, hi = abtest.proportion_ci(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5)
    assert hi == pytest.approx(0.3662, abs=5e-5)


def test_interval_of_no_data_is_none_and_bad_counts_are_named():
    assert abtest.proportion_ci(0, 0) is None
    with pytest.raises(ValueError, match="successes .* exceed trials"):
        abtest.proportion_ci(5, 3)
    with pytest.raises(ValueError, match="trials must be a non-negative integer"):
        abtest.proportion_ci(1, -2)


def test_two_proportion_ztest_matches_statsmodels_docs_example():
    # statsmodels proportions_ztest docstring: count=[5, 12], nobs=[83, 99] -> p = 0.159
    res = abtest.two_proportion_ztest(12, 99, 5, 83)  # champion 12/99, challenger 5/83
    assert res["p_value"] == pytest.approx(0.159, abs=5e-4)
    assert res["z"] < 0  # the challenger's rate is lower
    assert abtest.two_proportion_ztest(0, 0, 1, 2) is None
    assert abtest.two_proportion_ztest(10, 10, 5, 5) is None  # no variance: nothing to test


def test_srm_chi_square_matches_textbook_dice_example():
    # Dice example of the scipy.stats.chisquare docs: observed [16,18,16,14,12,12], expected [16,16,16,16,16,8]
    # -> chi2 = 3.5, p = 0.62339.
    observed = dict(zip("abcdef", [16, 18, 16, 14, 12, 12], strict=True))
    weights = dict(zip("abcdef", [16, 16, 16, 16, 16, 8], strict=True))
    res = abtest.srm_test(observed, weights)
    assert res["chi2"] == pytest.approx(3.5)
    assert res["p_value"] == pytest.approx(0.62338762774958223, rel=1e-9)
    assert res["mismatch"] is False


def test_srm_flags_a_broken_split_and_a_zero_weight_variant_with_traffic():
    res = abtest.srm_test({"v1": 9200, "v2": 800}, {"v1": 0.9, "v2": 0.1})
    assert res["mismatch"] is True and res["p_value"] < 1e-9
    assert abtest.srm_test({"v1": 10, "v2": 3}, {"v1": 1.0, "v2": 0.0})["mismatch"] is True
    with pytest.raises(ValueError, match="differ"):
        abtest.srm_test({"v1": 1}, {"v2": 1.0})


def test_srm_leaves_a_draining_variant_out_of_the_chi_square():
    # v3 at 0% (draining) with nothing observed: the split of v1/v2 is still tested, on their own shares
    res = abtest.srm_test({"v1": 9200, "v2": 800, "v3": 0}, {"v1": 0.9, "v2": 0.1, "v3": 0.0})
    chi2, p = stats.chisquare([9200, 800], f_exp=[9000, 1000])
    assert res["chi2"] == pytest.approx(chi2) and res["p_value"] == pytest.approx(p)
    assert res["mismatch"] is True and res["expected"] == {"v1": 9000, "v2": 1000, "v3": 0.0}
    fine = abtest.srm_test({"v1": 9010, "v2": 990, "v3": 0}, {"v1": 0.9, "v2": 0.1, "v3": 0.0})
    assert fine["mismatch"] is False and fine["unexpected"] == {} and fine["p_value"] > 0.5
    # one variant left with traffic: no split to test; traffic on the 0% variant is a mismatch by itself
    alone = abtest.srm_test({"v1": 500, "v2": 0}, {"v1": 1.0, "v2": 0.0})
    assert alone["p_value"] is None and alone["mismatch"] is False
    leak = abtest.srm_test({"v1": 500, "v2": 7}, {"v1": 1.0, "v2": 0.0})
    assert leak["mismatch"] is True and leak["unexpected"] == {"v2": 7} and leak["chi2"] is None


def _evan_miller_prob_b_beats_a(alpha_a, beta_a, alpha_b, beta_b):
    """Evan Miller's closed form for integer alpha_b: sum_{i<alpha_b} B(a_a+i, b_a+b_b) / ((b_b+i) B(1+i,b_b) B(a_a,b_a))."""
    total = 0.0
    for i in range(alpha_b):
        total += math.exp(
            betaln(alpha_a + i, beta_a + beta_b)
            - math.log(beta_b + i)
            - betaln(1 + i, beta_b)
            - betaln(alpha_a, beta_a)
        )
    return total


@pytest.mark.parametrize(
    ("s_a", "n_a", "s_b", "n_b"), [(10, 100, 15, 100), (40, 50, 38, 50), (3, 7, 5, 7), (200, 1000, 230, 1000)]
)
def test_prob_better_matches_the_exact_closed_form(s_a, n_a, s_b, n_b):
    expected = _evan_miller_prob_b_beats_a(1 + s_a, 1 + n_a - s_a, 1 + s_b, 1 + n_b - s_b)
    assert abtest.prob_b_beats_a(s_a, n_a, s_b, n_b) == pytest.approx(expected, abs=1e-8)


def test_prob_better_at_large_counts_matches_the_normal_limit():
    # 10^6 trials per arm: the posteriors are normal; d = 0.001, sd = sqrt(2 * 0.25e-6) -> Phi(1.41421) = 0.92135
    assert abtest.prob_b_beats_a(500_000, 1_000_000, 501_000, 1_000_000) == pytest.approx(0.92135, abs=2e-4)


def test_min_sample_size_matches_cohen_table():
    # Cohen (1988), Table 6.4.1: h = 0.20, alpha = 0.05 two-sided, power 0.80 -> n = 392 per group.
    # From p = 0.5, h = 0.2 is an effect of sin²(π/4 + 0.1) - 0.5 (h = 2 asin√p₂ - 2 asin√p₁).
    effect = math.sin(math.pi / 4 + 0.1) ** 2 - 0.5
    res = abtest.min_sample_size(0.5, effect, alpha=0.05, power=0.8)
    assert res["effect_size"] == pytest.approx(0.2, abs=1e-9)
    assert res["n_a"] == res["n_b"] == pytest.approx(393, abs=1)
    # A 10% challenger (ratio n_b/n_a = 1/9) needs (1 + 9) / 2 = 5x the per-arm size on the champion.
    uneven = abtest.min_sample_size(0.5, effect, ratio=1 / 9)
    assert uneven["n_a"] == pytest.approx(392.44 * 5, rel=1e-3)


def test_msprt_matches_the_mixture_integral():
    # Λ = ∫ N(d; θ, V) N(θ; 0, τ²) dθ / N(d; 0, V), integrated numerically here.
    from scipy import integrate

    s_a, n_a, s_b, n_b, tau = 400, 1000, 440, 1000, 0.05
    pooled = (s_a + s_b) / (n_a + n_b)
    var = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    d = s_b / n_b - s_a / n_a
    num, _ = integrate.quad(
        lambda t: stats.norm.pdf(d, loc=t, scale=math.sqrt(var)) * stats.norm.pdf(t, scale=tau),
        -1,
        1,
        points=[0, d],
    )
    lam = num / stats.norm.pdf(d, scale=math.sqrt(var))
    assert abtest.msprt_p_value(s_a, n_a, s_b, n_b, tau) == pytest.approx(min(1.0, 1 / lam), rel=1e-6)
    assert abtest.msprt_p_value(0, 0, 1, 1, tau) == 1.0
    with pytest.raises(ValueError, match="tau"):
        abtest.msprt_p_value(1, 2, 1, 2, 0)


def test_sequential_test_keeps_alpha_under_continuous_peeking_where_the_z_test_does_not():
    # 300 A/A experiments (p = 0.8 on both arms), read after every 100 labelled predictions per arm, 40 looks.
    rng = np.random.default_rng(7)
    sims, looks, step, alpha = 300, 40, 100, 0.05
    a = rng.binomial(step, 0.8, size=(sims, looks)).cumsum(axis=1)
    b = rng.binomial(step, 0.8, size=(sims, looks)).cumsum(axis=1)
    n = step * np.arange(1, looks + 1)
    # fixed-horizon pooled z-test at every look (vectorised; equals two_proportion_ztest, checked below)
    pooled = (a + b) / (2 * n)
    z = (b - a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    z_p = 2 * stats.norm.sf(np.abs(z))
    assert z_p[0, 0] == pytest.approx(
        abtest.two_proportion_ztest(int(a[0, 0]), step, int(b[0, 0]), step)["p_value"]
    )
    z_reject = np.mean((z_p <= alpha).any(axis=1))
    seq_reject = np.mean(
        [
            abtest.always_valid_p_value(
                ((int(a[k, j]), int(n[j]), int(b[k, j]), int(n[j])) for j in range(looks)), 0.03
            )
            <= alpha
            for k in range(sims)
        ]
    )
    assert seq_reject <= alpha
    assert z_reject > 2 * alpha  # peeking at the fixed-horizon test inflates its error rate


def test_sequential_test_detects_a_real_difference():
    assert abtest.msprt_p_value(8000, 10000, 8500, 10000, 0.03) < 1e-10
    assert abtest.always_valid_p_value([(80, 100, 85, 100), (8000, 10000, 8500, 10000)], 0.03) < 1e-10


def test_an_interval_always_holds_its_estimate():
    """statsmodels' Wilson bound for all successes rounds to 0.999...: the bar from the estimate to it would be
    negative (matplotlib refuses it); the interval is clamped to hold the estimate, within [0, 1]."""
    for s, n in ((9, 9), (0, 9), (1, 1), (0, 1), (1000, 1000), (3, 7)):
        lo, hi = abtest.proportion_ci(s, n)
        assert 0.0 <= lo <= s / n <= hi <= 1.0, (s, n, lo, hi)
    assert abtest.proportion_ci(9, 9)[1] == 1.0
