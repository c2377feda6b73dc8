"""A/B statistics for the report: thin, documented wrappers over scipy and statsmodels.

All functions take plain counts (successes and trials per arm; "success" = a correct prediction) and return
plain floats/dicts, so the report stays JSON-able. Arm ``a`` is the champion, arm ``b`` the challenger.

Which test decides? The report is read again and again while data arrives, and a fixed-horizon test checked
repeatedly inflates its false-positive rate far above ``alpha`` (peeking). The recommendation therefore uses
the **always-valid p-value of a mixture sequential probability ratio test** (``msprt_p_value``, Johari,
Koomen, Pekelis & Walsh, "Always valid inference: continuous monitoring of A/B tests", Operations Research
2022; Robbins 1970 normal mixture; Howard et al. 2021 for the confidence-sequence view). The fixed-horizon
two-proportion z-test, the Bayesian probability of being better and the minimum sample size are reported
alongside, for context.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from scipy import integrate, stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize, proportions_ztest

SRM_P_THRESHOLD = 0.001


def _check_counts(successes: int, n: int, what: str = "arm") -> None:
    for name, v in (("successes", successes), ("trials", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{what} {name} must be a non-negative integer, got {v!r}")
    if successes > n:
        raise ValueError(f"{what} successes ({successes}) exceed trials ({n})")


def proportion_ci(
    successes: int, n: int, alpha: float = 0.05, method: str = "wilson"
) -> tuple[float, float] | None:
    """Confidence interval of a proportion (Wilson score by default; ``agresti_coull`` also fits small n).

    ``None`` when ``n == 0`` (nothing to estimate).
    """
    _check_counts(successes, n)
    if n == 0:
        return None
    lo, hi = proportion_confint(successes, n, alpha=alpha, method=method)
    p = successes / n  # the bounds can round past the estimate (all successes: an upper bound of 0.999...)
    return max(0.0, min(float(lo), p)), min(1.0, max(float(hi), p))


def two_proportion_ztest(s_a: int, n_a: int, s_b: int, n_b: int) -> dict | None:
    """Fixed-horizon two-sided z-test of ``p_b == p_a`` (pooled variance; statsmodels ``proportions_ztest``).

    Valid only when looked at once, at a sample size fixed in advance. ``None`` when an arm has no data or
    every observation is identical (no variance: nothing to test).
    """
    _check_counts(s_a, n_a, "champion")
    _check_counts(s_b, n_b, "challenger")
    if n_a == 0 or n_b == 0 or s_a + s_b in (0, n_a + n_b):
        return None
    z, p = proportions_ztest([s_b, s_a], [n_b, n_a])
    return {"z": float(z), "p_value": float(p)}


def srm_test(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_P_THRESHOLD
) -> dict:
    """Sample-ratio mismatch: chi-square goodness of fit of the observed units to the configured weights.

    A mismatch (``p < threshold``, 0.001 by convention) means the split itself is broken (pinning, sticky
    assignment, logging loss by variant...), so no comparison of the variants can be trusted.

    Variants at weight 0 (draining: they get no new traffic) have no expected share and are
    left out of the chi-square, which compares the variants that receive traffic. They should get nothing:
    any unit observed on one is a mismatch by itself (``unexpected``: variant -> count; ``chi2`` is then
    ``None`` and ``p_value`` 0). With fewer than two weighted variants there is no split to test
    (``chi2`` and ``p_value`` ``None``).
    """
    names = sorted(observed)
    if set(names) != set(weights):
        raise ValueError(f"observed variants {names} and weighted variants {sorted(weights)} differ")
    if any(weights[k] < 0 for k in names):
        raise ValueError(f"negative weight in {dict(weights)}")
    total_w = float(sum(weights[k] for k in names))
    if total_w <= 0:
        raise ValueError("the configured weights sum to 0")
    weighted = [k for k in names if weights[k] > 0]
    unexpected = {k: int(observed[k]) for k in names if weights[k] == 0 and observed[k] > 0}
    total_n = int(sum(observed[k] for k in weighted))
    expected = {k: (total_n * weights[k] / total_w if k in weighted else 0.0) for k in names}
    result: dict = {
        "chi2": None,
        "p_value": None,
        "mismatch": False,
        "expected": expected,
        "threshold": threshold,
        "unexpected": unexpected,
    }
    if unexpected:
        return {**result, "p_value": 0.0, "mismatch": True}
    if len(weighted) < 2 or total_n == 0:
        return result
    chi2, p = stats.chisquare([observed[k] for k in weighted], f_exp=[expected[k] for k in weighted])
    return {**result, "chi2": float(chi2), "p_value": float(p), "mismatch": bool(p < threshold)}


def prob_b_beats_a(s_a: int, n_a: int, s_b: int, n_b: int, prior: tuple[float, float] = (1.0, 1.0)) -> float:
    """P(p_b > p_a) under independent Beta(prior + successes, prior + failures) posteriors.

    Exact numerical integration: ``P = ∫ f_b(x) F_a(x) dx`` over the bulk of the b posterior
    (``scipy.integrate.quad``; the mass left outside is < 1e-12).
    """
    _check_counts(s_a, n_a, "champion")
    _check_counts(s_b, n_b, "challenger")
    a0, b0 = prior
    post_a = stats.beta(a0 + s_a, b0 + n_a - s_a)
    post_b = stats.beta(a0 + s_b, b0 + n_b - s_b)
    lo, hi = post_b.ppf(1e-13), post_b.isf(1e-13)
    inner = [x for x in (post_b.mean(), post_a.mean()) if lo < x < hi]
    value, _ = integrate.quad(
        lambda x: post_b.pdf(x) * post_a.cdf(x), lo, hi, points=inner or None, limit=200, epsabs=1e-12
    )
    return float(min(1.0, max(0.0, value)))


def min_sample_size(
    p_baseline: float, min_effect: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> dict:
    """Labelled observations per arm a fixed-horizon two-sided test needs to detect ``min_effect``.

    Effect size is Cohen's h between ``p_baseline`` and ``p_baseline + min_effect`` (or ``- min_effect`` when
    that exceeds 1); ``ratio`` = n_b / n_a (the traffic split). statsmodels ``NormalIndPower``.
    """
    if not 0 <= p_baseline <= 1:
        raise ValueError(f"p_baseline must be in [0, 1], got {p_baseline!r}")
    if not 0 < min_effect < 1:
        raise ValueError(f"min_effect must be in (0, 1), got {min_effect!r}")
    if ratio <= 0:
        raise ValueError(f"ratio must be > 0, got {ratio!r}")
    target = p_baseline + min_effect if p_baseline + min_effect <= 1 else p_baseline - min_effect
    h = abs(float(proportion_effectsize(target, p_baseline)))
    n_a = float(NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio))
    return {"effect_size": h, "n_a": math.ceil(n_a), "n_b": math.ceil(n_a * ratio)}


def msprt_p_value(s_a: int, n_a: int, s_b: int, n_b: int, tau: float) -> float:
    """Always-valid p-value of H0: p_b = p_a at the current sample (mixture SPRT, normal mixture).

    With ``d = p̂_b - p̂_a`` and its variance under H0 ``V = p̂(1-p̂)(1/n_a + 1/n_b)`` (pooled ``p̂``), the
    mixture likelihood ratio against a N(0, tau²) prior on the true difference is

        Λ = N(d; 0, V + tau²) / N(d; 0, V)

    (``scipy.stats.norm`` log-densities), and ``p = min(1, 1/Λ)``. By Ville's inequality
    ``P_H0(sup_n Λ_n >= 1/alpha) <= alpha``, so rejecting whenever ``p <= alpha`` at *any* look keeps the
    false-positive rate at ``alpha`` no matter how often the report is read. ``tau`` (the mixing standard
    deviation) is the scale of differences the test is most sensitive to; the report uses ``ab_min_effect``.
    """
    _check_counts(s_a, n_a, "champion")
    _check_counts(s_b, n_b, "challenger")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    if n_a == 0 or n_b == 0:
        return 1.0
    pooled = (s_a + s_b) / (n_a + n_b)
    var = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if var <= 0:
        return 1.0
    d = s_b / n_b - s_a / n_a
    log_lr = stats.norm.logpdf(d, scale=math.sqrt(var + tau * tau)) - stats.norm.logpdf(
        d, scale=math.sqrt(var)
    )
    return float(min(1.0, math.exp(-log_lr)))


def always_valid_p_value(looks: Iterable[tuple[int, int, int, int]], tau: float) -> float:
    """Running minimum of ``msprt_p_value`` over successive cumulative looks ``(s_a, n_a, s_b, n_b)``.

    The running minimum of an always-valid p-value is itself always valid (it is the first time the
    likelihood-ratio martingale crossed the level), and never larger than the last look's value.
    """
    best = 1.0
    for s_a, n_a, s_b, n_b in looks:
        best = min(best, msprt_p_value(s_a, n_a, s_b, n_b, tau))
    return best
