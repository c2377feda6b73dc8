"""Population stability index (PSI) of live scores and features against the training baseline. Stdlib only
(runs in Lambda).

The baseline is ``baseline.json`` written by ``training/evaluate.py``::

    {"score": {"bin_edges": [e0, ..., e10], "fractions": [f0, ..., f9]}, "features": {...},
     "positive_rate": .., "n": ..}

Live scores are counted into the same bins (values below the first edge go to the first bin, values at or
above the last edge to the last bin, as the training-time histogram covered the whole hold-out set); a bin
``i`` holds ``edges[i] <= x < edges[i+1]``. The counting usually happens in SQL (``bucket_case_sql``) so the
monitor fetches 10 numbers per variant, not every score.

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

with ``a`` the live fractions and ``e`` the baseline fractions. An empty bin on either side would make the
term infinite, so fractions are floored at ``epsilon`` (default 1e-4) and renormalised. Common reading:
< 0.1 stable, 0.1-0.2 moderate shift, > 0.2 significant shift (the default alarm threshold).

PSI needs enough live values: drawn from the baseline's own distribution, ``n`` values give a PSI of about
``(bins - 1) / n`` on average (chi-square with ``bins - 1`` degrees of freedom, over ``n``), and a bin that
``n`` values leave empty adds ``e_i * ln(e_i / epsilon)`` (0.69 for a decile). The monitoring job therefore
computes no PSI for fewer than ``drift_min_predictions`` predictions (``monitor_job``).

Feature bins (``baseline["features"][name]``) are read with ``feature_bins``; live feature values are
counted in Python (``bucket_counts``) from a bounded sample of rows (``monitor_job.FEATURE_SAMPLE_ROWS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_EPSILON = 1e-4


class BaselineError(ValueError):
    """A baseline document is malformed; the message names the bad field."""


def validate_bins(bin_edges: Sequence[float], fractions: Sequence[float], where: str = "score") -> None:
    """Check that ``bin_edges`` (n+1 finite, non-decreasing numbers) and ``fractions`` (n, >= 0) fit together."""
    if not isinstance(bin_edges, Sequence) or isinstance(bin_edges, str) or len(bin_edges) < 2:
        raise BaselineError(f"baseline field '{where}.bin_edges' must be a list of at least 2 numbers")
    if not isinstance(fractions, Sequence) or isinstance(fractions, str):
        raise BaselineError(f"baseline field '{where}.fractions' must be a list of numbers")
    if len(fractions) != len(bin_edges) - 1:
        raise BaselineError(
            f"baseline field '{where}.fractions' has {len(fractions)} values; "
            f"'{where}.bin_edges' has {len(bin_edges)} edges, so {len(bin_edges) - 1} were expected"
        )
    for i, e in enumerate(bin_edges):
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e):
            raise BaselineError(f"baseline field '{where}.bin_edges[{i}]' is {e!r}, not a finite number")
        if i and e < bin_edges[i - 1]:
            raise BaselineError(f"baseline field '{where}.bin_edges' is not sorted at index {i} ({e!r})")
    for i, f in enumerate(fractions):
        if isinstance(f, bool) or not isinstance(f, int | float) or not math.isfinite(f) or f < 0:
            raise BaselineError(f"baseline field '{where}.fractions[{i}]' is {f!r}, not a number >= 0")
    if sum(fractions) <= 0:
        raise BaselineError(f"baseline field '{where}.fractions' sums to 0")


def score_bins(baseline: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """The validated ``(bin_edges, fractions)`` of the score distribution in a ``baseline.json`` document."""
    if not isinstance(baseline, Mapping) or not isinstance(baseline.get("score"), Mapping):
        raise BaselineError("baseline field 'score' is missing or not an object")
    edges = baseline["score"].get("bin_edges")
    fractions = baseline["score"].get("fractions")
    validate_bins(edges, fractions, "score")
    return [float(e) for e in edges], [float(f) for f in fractions]


def feature_bins(baseline: Mapping[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """The validated ``{feature name: (bin_edges, fractions)}`` of a ``baseline.json`` document's features.

    Raises ``BaselineError`` naming the field when ``features`` is missing, empty or has a malformed entry.
    """
    features = baseline.get("features") if isinstance(baseline, Mapping) else None
    if not isinstance(features, Mapping) or not features:
        raise BaselineError("baseline field 'features' is missing, empty or not an object")
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name, bins in features.items():
        where = f"features.{name}"
        if not isinstance(bins, Mapping):
            raise BaselineError(f"baseline field '{where}' is not an object")
        edges: Any = bins.get("bin_edges")
        fractions: Any = bins.get("fractions")
        validate_bins(edges, fractions, where)
        out[str(name)] = ([float(e) for e in edges], [float(f) for f in fractions])
    return out


def bucket_index(x: float, bin_edges: Sequence[float]) -> int:
    """The bin of ``x`` (clipped into the first/last bin), the same rule as ``bucket_case_sql``."""
    n = len(bin_edges) - 1
    for i in range(n - 1):
        if x < bin_edges[i + 1]:
            return i
    return n - 1


def bucket_counts(values: Sequence[float], bin_edges: Sequence[float]) -> list[int]:
    """Count ``values`` into the bins: the SQL bucketing's rule in Python (the feature PSI counts with it)."""
    counts = [0] * (len(bin_edges) - 1)
    for x in values:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            continue
        counts[bucket_index(float(x), bin_edges)] += 1
    return counts


def bucket_case_sql(column: str, bin_edges: Sequence[float]) -> str:
    """A portable ``CASE`` expression giving the bin index (0-based) of ``column`` for these edges.

    The edges are validated finite floats written with ``repr``, so no value reaches the SQL text unchecked.
    Works unchanged on Redshift and DuckDB (neither WIDTH_BUCKET with explicit edges is portable).
    """
    n = len(bin_edges) - 1
    if n < 1:
        raise BaselineError("at least 2 bin edges are needed")
    parts = []
    for i in range(n - 1):
        edge = float(bin_edges[i + 1])
        if not math.isfinite(edge):
            raise BaselineError(f"bin edge {i + 1} is {edge!r}, not a finite number")
        parts.append(f"WHEN {column} < {edge!r} THEN {i}")
    if not parts:
        return "0"
    return "CASE " + " ".join(parts) + f" ELSE {n - 1} END"


def _smoothed(fractions: Sequence[float], epsilon: float) -> list[float]:
    total = float(sum(fractions))
    if total <= 0:
        raise ValueError("cannot compute PSI of an empty distribution")
    floored = [max(f / total, epsilon) for f in fractions]
    norm = sum(floored)
    return [f / norm for f in floored]


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = DEFAULT_EPSILON) -> float:
    """PSI between two distributions over the same bins, given as fractions or counts (each is normalised).

    ``expected`` is the baseline, ``actual`` the live distribution. Empty bins are floored at ``epsilon``.
    """
    if len(expected) != len(actual):
        raise ValueError(f"expected has {len(expected)} bins but actual has {len(actual)}")
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    e = _smoothed(expected, epsilon)
    a = _smoothed(actual, epsilon)
    return sum((ai - ei) * math.log(ai / ei) for ai, ei in zip(a, e, strict=True))


def score_psi(
    baseline: Mapping[str, Any], live_counts: Sequence[int], epsilon: float = DEFAULT_EPSILON
) -> float:
    """PSI of live score counts (per baseline bin) against a ``baseline.json`` document."""
    _, fractions = score_bins(baseline)
    return psi(fractions, live_counts, epsilon)
