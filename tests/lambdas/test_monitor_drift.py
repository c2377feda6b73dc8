"""PSI (lambdas/monitor/drift.py) on hand-computed examples, and its SQL bucketing against the Python one."""

from __future__ import annotations

import math

import drift
import duckdb
import pytest


def test_psi_of_a_hand_computed_example():
    # (0.1-0.25)ln(0.1/0.25) + (0.2-0.25)ln(0.2/0.25) + (0.3-0.25)ln(0.3/0.25) + (0.4-0.25)ln(0.4/0.25)
    # = 0.137444 + 0.011157 + 0.009116 + 0.070501 = 0.228218
    assert drift.psi([0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.228218, abs=1e-6)
    # counts are normalised like fractions
    assert drift.psi([1, 1, 1, 1], [10, 20, 30, 40]) == pytest.approx(0.228218, abs=1e-6)
    assert drift.psi([0.2] * 5, [0.2] * 5) == 0.0


def test_psi_floors_empty_bins_at_epsilon():
    # actual [10, 0] -> [1/(1+1e-4), 1e-4/(1+1e-4)] against [0.5, 0.5]
    a1, a2 = 1 / 1.0001, 1e-4 / 1.0001
    expected = (a1 - 0.5) * math.log(a1 / 0.5) + (a2 - 0.5) * math.log(a2 / 0.5)
    value = drift.psi([0.5, 0.5], [10, 0])
    assert math.isfinite(value) and value == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="bins"):
        drift.psi([0.5, 0.5], [1, 2, 3])


def test_baseline_validation_names_the_bad_field():
    with pytest.raises(drift.BaselineError, match="'score' is missing"):
        drift.score_bins({})
    with pytest.raises(drift.BaselineError, match=r"score\.fractions' has 2 values"):
        drift.score_bins({"score": {"bin_edges": [0, 0.5, 0.7, 1], "fractions": [0.5, 0.5]}})
    with pytest.raises(drift.BaselineError, match=r"bin_edges' is not sorted at index 2"):
        drift.score_bins({"score": {"bin_edges": [0, 0.5, 0.4], "fractions": [0.5, 0.5]}})
    with pytest.raises(drift.BaselineError, match=r"fractions\[1\]"):
        drift.score_bins({"score": {"bin_edges": [0, 0.5, 1], "fractions": [0.5, -1]}})


def test_sql_bucketing_equals_python_bucketing():
    edges = [0.0, 0.1, 0.2, 0.35, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    values = [-0.5, 0.0, 0.05, 0.1, 0.2, 0.34, 0.5, 0.55, 0.7, 0.95, 1.0, 1.7]
    con = duckdb.connect()
    con.execute("CREATE TABLE s (score DOUBLE)")
    con.executemany("INSERT INTO s VALUES (?)", [[v] for v in values])
    rows = con.execute(
        f"SELECT score, {drift.bucket_case_sql('score', edges)} FROM s ORDER BY score"
    ).fetchall()
    assert [b for _, b in rows] == [drift.bucket_index(v, edges) for v in sorted(values)]
    assert drift.bucket_counts(values, edges) == [3, 1, 2, 0, 0, 2, 0, 1, 0, 3]


def test_score_psi_of_a_baseline_document():
    baseline = {"score": {"bin_edges": [0, 0.25, 0.5, 0.75, 1], "fractions": [0.25] * 4}, "n": 100}
    assert drift.score_psi(baseline, [10, 20, 30, 40]) == pytest.approx(0.228218, abs=1e-6)


def test_feature_bins_of_a_baseline_document_are_validated_by_name():
    deciles = {"bin_edges": [0, 0.5, 1], "fractions": [0.5, 0.5]}
    constant = {"bin_edges": [3.0, 3.0], "fractions": [1.0]}  # training's bins of a constant column
    bins = drift.feature_bins({"features": {"mean_area": deciles, "flag": constant}})
    assert bins == {"mean_area": ([0.0, 0.5, 1.0], [0.5, 0.5]), "flag": ([3.0, 3.0], [1.0])}
    # a constant column's one bin holds every value: its PSI is 0 whatever the values
    assert drift.psi(bins["flag"][1], drift.bucket_counts([1.0, 3.0, 9.0], bins["flag"][0])) == 0.0
    for doc in ({}, {"features": {}}, {"features": []}):
        with pytest.raises(drift.BaselineError, match="'features' is missing, empty or not an object"):
            drift.feature_bins(doc)
    with pytest.raises(drift.BaselineError, match=r"'features\.mean_area' is not an object"):
        drift.feature_bins({"features": {"mean_area": [0, 1]}})
    with pytest.raises(drift.BaselineError, match=r"'features\.mean_area\.fractions' has 1 values"):
        drift.feature_bins({"features": {"mean_area": {"bin_edges": [0, 0.5, 1], "fractions": [1.0]}}})
    with pytest.raises(drift.BaselineError, match=r"'features\.mean_area\.bin_edges\[1\]' is nan"):
        drift.feature_bins({"features": {"mean_area": {"bin_edges": [0, float("nan")], "fractions": [1.0]}}})


def test_a_feature_shifted_tenfold_lands_in_the_last_bin():
    edges = [i / 10 for i in range(11)]
    values = [(i + 0.5) / 100 for i in range(100)]  # uniform on [0, 1): 10 per decile
    assert drift.bucket_counts(values, edges) == [10] * 10
    shifted = drift.bucket_counts([10 * v for v in values], edges)
    assert shifted == [1] * 9 + [91]  # only the values below 0.1 stay inside the range
    assert drift.psi([0.1] * 10, shifted) > 3
