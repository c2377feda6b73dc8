"""The A/B report on generated warehouse files with a known answer: a winner, no winner yet, a broken split,
a loser; plus the window, de-duplication, and the same numbers from the Redshift flavour of the SQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pytest
from warehouse_fixture import ENDPOINT, Arm, create_schema, fill
from warehouse_query import DuckDBQuery

from trainserve import abtest
from trainserve.report import build_report, choose_champion, endpoint_weights

START = datetime(2026, 2, 1, 9, 0, 0)


def _state(**weights):
    return {
        "EndpointName": ENDPOINT,
        "EndpointStatus": "InService",
        "ProductionVariants": [
            {"VariantName": k, "CurrentWeight": w, "DesiredWeight": w} for k, w in weights.items()
        ],
    }


def _warehouse(tmp_path, arms, n, **kw):
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    fill(con, arms, n, start=START, seconds=kw.pop("seconds", 4 * 3600), **kw)
    con.close()
    return DuckDBQuery(path)


def test_a_clear_winner_is_promoted_with_the_exact_command(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v1", 1, 0.5, 0.80), Arm("v2", 2, 0.5, 0.86, latency_ms=20)], 20_000)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    assert report["champion"] == "v1"
    rec = report["recommendation"]
    assert rec["action"] == "promote"
    assert rec["command"] == "trainserve traffic promote v2"
    assert "v2 beats v1" in rec["reason"] and "\n" not in rec["reason"]
    (cmp,) = report["comparisons"]
    assert cmp["decision"] == "promote" and cmp["p_value_sequential"] <= config.ab_alpha
    assert cmp["difference"] == pytest.approx(0.06, abs=0.015) and cmp["prob_better"] > 0.999
    assert report["srm"]["mismatch"] is False
    v1, v2 = report["variants"]
    assert (v1["role"], v2["role"]) == ("champion", "challenger")
    assert v1["model_version"] == 1 and v2["model_version"] == 2
    assert 19_990 <= v1["requests"] + v2["requests"] <= 20_000  # from v2's first prediction on
    assert v2["latency_p50_ms"] == pytest.approx(20, rel=0.05) and v1["latency_p50_ms"] == pytest.approx(
        10, rel=0.05
    )
    assert v1["accuracy_ci"] == pytest.approx(
        abtest.proportion_ci(v1["correct"], v1["labelled"], alpha=config.ab_alpha)
    )
    assert sum(report["histograms"]["v1"]) == v1["requests"]
    assert report["window"]["grain"] == "hour" and report["traffic"]


def test_no_winner_yet_means_keep_collecting(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v1", 1, 0.9, 0.80), Arm("v2", 2, 0.1, 0.81)], 3_000)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.9, v2=0.1))
    rec = report["recommendation"]
    assert rec["action"] == "keep collecting"
    assert rec["command"] == "trainserve report ab"
    assert "more labelled predictions on v2" in rec["reason"]
    (cmp,) = report["comparisons"]
    assert cmp["p_value_sequential"] > config.ab_alpha
    assert cmp["still_needed"]["v2"] > 0
    assert report["srm"]["mismatch"] is False


def test_a_sample_ratio_mismatch_blocks_promotion(tmp_path, config):
    # configured 90/10 but the logs show 80/20, and v2 looks much better: the split is broken, no promote.
    q = _warehouse(tmp_path, [Arm("v1", 1, 0.8, 0.75), Arm("v2", 2, 0.2, 0.90)], 20_000)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.9, v2=0.1))
    assert report["srm"]["mismatch"] is True and report["srm"]["p_value"] < 0.001
    rec = report["recommendation"]
    assert rec["action"] == "keep collecting"
    assert "fix the split first" in rec["reason"]
    assert "promote" not in rec["command"]
    assert all(c["decision"] != "promote" for c in report["comparisons"])


def test_a_clearly_worse_challenger_is_rolled_back(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v3", 3, 0.7, 0.85), Arm("v4", 4, 0.3, 0.70)], 20_000)
    report = build_report(q, config=config, endpoint_state=_state(v3=0.7, v4=0.3))
    assert report["recommendation"]["action"] == "rollback"
    assert report["recommendation"]["command"] == "trainserve traffic rollback"


def test_the_window_starts_when_the_newest_live_variant_started_and_old_variants_are_left_out(
    tmp_path, config
):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    fill(con, [Arm("v1", 1, 1.0, 0.8)], 5_000, start=START - timedelta(days=1), seconds=3600)  # v1 alone
    fill(
        con, [Arm("v0", 0, 1.0, 0.8)], 1_000, start=START - timedelta(days=2), seconds=3600, offset=50_000
    )  # gone
    fill(
        con,
        [Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 0.8)],
        2_000,
        start=START,
        seconds=1800,
        offset=100_000,
    )
    # Firehose delivered a batch twice: duplicates must not count
    con.execute(
        "INSERT INTO prediction_log SELECT * FROM prediction_log WHERE event_time >= ? LIMIT 300", [START]
    )
    con.execute("INSERT INTO prediction_feedback SELECT * FROM prediction_feedback LIMIT 300")
    first_v2 = con.execute("SELECT MIN(event_time) FROM prediction_log WHERE variant_name = 'v2'").fetchone()[
        0
    ]
    truth = dict(
        con.execute(
            "SELECT variant_name, COUNT(DISTINCT request_id) FROM prediction_log WHERE event_time >= ? GROUP BY 1",
            [first_v2],
        ).fetchall()
    )
    lat = [
        r[0]
        for r in con.execute("SELECT latency_ms FROM prediction_log_dedup WHERE variant_name='v2'").fetchall()
    ]
    con.close()
    report = build_report(DuckDBQuery(path), config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    assert report["window"]["start"] == first_v2.isoformat()
    assert report["window"]["grain"] == "minute"
    got = {v["variant_name"]: v["requests"] for v in report["variants"]}
    assert got == truth and sum(got.values()) < 2_000 + 1
    assert any("v0" in n for n in report["notes"])
    v2 = report["variants"][1]
    assert v2["latency_p95_ms"] == pytest.approx(float(np.percentile(lat, 95)))
    assert v2["latency_p99_ms"] == pytest.approx(float(np.percentile(lat, 99)))


def test_redshift_flavoured_sql_gives_the_same_report(tmp_path, config):
    # DuckDB also accepts PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY x): the Redshift SQL runs here unchanged.
    q = _warehouse(tmp_path, [Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 0.82)], 5_000)

    class RedshiftFlavour(DuckDBQuery):
        dialect = "redshift"

    a = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    b = build_report(RedshiftFlavour(q.path), config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    for va, vb in zip(a["variants"], b["variants"], strict=True):
        for k in ("requests", "labelled", "correct", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
            assert va[k] == pytest.approx(vb[k]), k
    assert a["recommendation"] == b["recommendation"]


def test_nothing_logged_yet(tmp_path, config):
    """Two variants live (it had one: with one variant live there is nothing to compare, see below)."""
    q = _warehouse(tmp_path, [Arm("v1", 1, 1.0, 0.8)], 0)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.9, v2=0.1))
    assert report["recommendation"]["action"] == "keep collecting"
    assert "no logged predictions" in report["recommendation"]["reason"]


def _nothing_to_compare(rec, variant):
    assert rec["action"] == "nothing to act on"
    assert rec["reason"].startswith(f"only {variant} is live (one variant): there is nothing to compare")
    assert f"approve a model version newer than {variant} (trainserve models list)" in rec["reason"]
    assert rec["command"] == "trainserve models approve V"


def test_one_live_variant_has_nothing_to_compare(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v2", 2, 1.0, 0.8)], 2_000)
    report = build_report(q, config=config, endpoint_state=_state(v2=1.0))
    assert report["comparisons"] == [] and report["variants"][0]["requests"] == 2_000
    _nothing_to_compare(report["recommendation"], "v2")
    assert f"it joins as a challenger at {config.challenger_weight:.0%}" in report["recommendation"]["reason"]


def test_one_live_variant_with_nothing_logged_has_nothing_to_compare(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v1", 1, 1.0, 0.8)], 0)
    report = build_report(q, config=config, endpoint_state=_state(v1=1.0))
    _nothing_to_compare(report["recommendation"], "v1")
    assert report["recommendation"]["reason"].endswith("(no prediction of v1 is logged yet either)")


def test_just_after_a_promote_there_is_nothing_to_compare_not_nothing_logged(tmp_path, config):
    """`traffic promote v2`: v2 alone at 100% from now on, so the window is empty, and the report said 'keep
    collecting: no predictions logged in the window yet'; more data changes nothing with one variant."""
    from datetime import UTC

    q = _warehouse(tmp_path, [Arm("v1", 1, 0.5, 0.80), Arm("v2", 2, 0.5, 0.86)], 4_000)
    state = _state(v2=1.0)
    state["LastModifiedTime"] = datetime.now(UTC)
    report = build_report(q, config=config, endpoint_state=state, champion="v2")
    assert report["window"]["basis"] == "endpoint_changed" and report["variants"][0]["requests"] == 0
    _nothing_to_compare(report["recommendation"], "v2")


def test_with_max_live_variants_1_an_approval_replaces_the_only_variant(tmp_path, config):
    import dataclasses

    config = dataclasses.replace(config, max_live_variants=1)
    q = _warehouse(tmp_path, [Arm("v1", 1, 1.0, 0.8)], 500)
    rec = build_report(q, config=config, endpoint_state=_state(v1=1.0))["recommendation"]
    assert rec["action"] == "nothing to act on" and rec["command"] == "trainserve models approve V"
    assert "max_live_variants is 1: an approved newer version replaces v1 at 100%" in rec["reason"]


def test_champion_and_weights_from_describe_endpoint():
    assert endpoint_weights(_state(v1=0.9, v2=0.1)) == {"v1": 0.9, "v2": 0.1}
    assert endpoint_weights({"ProductionVariants": [{"VariantName": "v5", "DesiredWeight": 1.0}]}) == {
        "v5": 1.0
    }
    assert choose_champion({"v3": 0.5, "v2": 0.5}, {}) == "v2"  # tie -> lowest version
    assert choose_champion({}, {"v3": 10, "v2": 4}) == "v3"
    assert choose_champion({}, {}) is None


def test_a_live_challenger_without_logged_predictions_is_not_a_split_problem(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v1", 1, 1.0, 0.8)], 2_000)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.9, v2=0.1))
    assert report["srm"] is None
    assert report["recommendation"]["action"] == "keep collecting"
    assert report["recommendation"]["reason"].startswith("v2 is live but has no logged predictions yet")
    assert [v["requests"] for v in report["variants"]] == [2_000, 0]


def test_with_sticky_users_the_split_is_checked_on_users_not_requests(tmp_path, config):
    # 300 users with very unequal activity, each sticky on one arm, 50/50: the request split wanders far
    # from 50/50 (a few heavy users), the user split does not. A request-level chi-square would cry SRM.
    q = _warehouse(tmp_path, [Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 0.8)], 6_000, users=300)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    by = {v["variant_name"]: v for v in report["variants"]}
    assert report["srm"]["unit"] == "users"
    assert report["srm"]["observed"] == {k: v["users"] for k, v in by.items()}
    assert by["v1"]["users"] + by["v2"]["users"] <= 300
    assert report["srm"]["mismatch"] is False
    request_level = abtest.srm_test({k: v["requests"] for k, v in by.items()}, {"v1": 0.5, "v2": 0.5})
    assert request_level["mismatch"] is True  # what the report would have said counting requests


def test_a_real_user_split_mismatch_is_still_caught(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v1", 1, 0.7, 0.8), Arm("v2", 2, 0.3, 0.9)], 20_000, users=5_000)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.9, v2=0.1))
    assert report["srm"]["unit"] == "users" and report["srm"]["mismatch"] is True
    assert report["recommendation"]["action"] == "keep collecting"
    assert "chi-square on users" in report["recommendation"]["reason"]


def test_a_variant_right_every_time_is_plotted(tmp_path, config):
    """Accuracy 100% (a small labelled sample): its interval's upper bound is the estimate, and the plot is
    written (the bar below it was negative and matplotlib refused it)."""
    from trainserve.report import write_plot

    q = _warehouse(tmp_path, [Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 1.0)], 400)
    report = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    v2 = report["variants"][1]
    assert v2["accuracy"] == 1.0 and v2["accuracy_ci"][1] == 1.0
    png = tmp_path / "ab.png"
    write_plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_labelled_predictions_there_is_no_probability_of_being_better(tmp_path, config):
    q = _warehouse(tmp_path, [Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 0.8)], 400, feedback_rate=0.0)
    (cmp,) = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))["comparisons"]
    assert cmp["challenger_accuracy"] is None and cmp["prob_better"] is None
