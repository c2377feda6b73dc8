"""The A/B report warns when the window's predictions of the live variants were made under more than one
DECISION_THRESHOLD or LOG_SAMPLE_RATE (``prediction_log.params``, the proxy's parameters as JSON): the pooled
labels, positive rate and accuracy would mix thresholds, the counts differently sampled traffic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import proxy_logic
from click.testing import CliRunner
from warehouse_fixture import ENDPOINT, Arm, create_schema, fill
from warehouse_query import DuckDBQuery

from trainserve.report import PROXY_WEIGHTS_DELAY_SECONDS, build_report

START = datetime(2026, 2, 1, 9, 0, 0)
CHANGE = START + timedelta(hours=1)  # `trainserve params set ...` here
ARMS = [Arm("v1", 1, 0.5, 0.80), Arm("v2", 2, 0.5, 0.82)]


def _state(changed_at=START - timedelta(minutes=1), **weights):
    return {
        "EndpointName": ENDPOINT,
        "EndpointStatus": "InService",
        "LastModifiedTime": changed_at.replace(tzinfo=UTC),
        "ProductionVariants": [
            {"VariantName": k, "CurrentWeight": w, "DesiredWeight": w} for k, w in weights.items()
        ],
    }


def _params(**kw):
    return proxy_logic.ProxyParams(**kw).as_json()


def _warehouse(tmp_path, before, after, *, arms=ARMS, n=4_000):
    """``n`` predictions over two hours from START; those before CHANGE logged with the proxy parameters
    ``before`` (a dict of ProxyParams fields), those from it on with ``after``."""
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    fill(con, arms, n, start=START, seconds=2 * 3600)
    for since, kw in ((START, before), (CHANGE, after)):
        threshold = kw.get("decision_threshold", 0.5)
        con.execute(
            "UPDATE prediction_log SET params = ?, threshold = ?,"
            " label = CASE WHEN score >= ? THEN 1 ELSE 0 END WHERE event_time >= ?",
            [_params(**kw), threshold, threshold, since],
        )
    con.close()
    return DuckDBQuery(path)


def _counts(q, where):
    con = duckdb.connect(str(q.path), read_only=True)
    try:
        return con.execute(f"SELECT COUNT(*) FROM prediction_log_dedup WHERE {where}").fetchone()[0]
    finally:
        con.close()


def _last_before_change(q):
    con = duckdb.connect(str(q.path), read_only=True)
    try:
        return con.execute(
            "SELECT MAX(event_time) FROM prediction_log WHERE event_time < ?", [CHANGE]
        ).fetchone()[0]
    finally:
        con.close()


def test_two_decision_thresholds_in_the_window_are_warned_about(tmp_path, config):
    q = _warehouse(tmp_path, {"decision_threshold": 0.5}, {"decision_threshold": 0.7})
    report = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5), champion="v1")
    (warning,) = report["warnings"]
    before, after = _counts(q, f"event_time < '{CHANGE}'"), _counts(q, f"event_time >= '{CHANGE}'")
    assert before > 1_500 and after > 1_500
    assert warning.startswith(
        f"the window's predictions of the live variants were made under 2 values of the proxy's "
        f"DECISION_THRESHOLD: 0.5 ({before:,} predictions), 0.7 ({after:,} predictions): the labels, positive "
        "rate and accuracy mix predictions labelled at different thresholds"
    )
    # the first whole second after the last prediction under the earlier value
    since = (_last_before_change(q) + timedelta(seconds=1)).replace(microsecond=0)
    assert warning.endswith(
        f"start the window after the change: trainserve report ab --since {since:%Y-%m-%dT%H:%M:%S}"
    )
    again = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5), since=since, champion="v1")
    assert again["warnings"] == []
    assert sum(v["requests"] for v in again["variants"]) == after


def test_two_log_sample_rates_in_the_window_are_warned_about(tmp_path, config):
    q = _warehouse(tmp_path, {"log_sample_rate": 1.0}, {"log_sample_rate": 0.25})
    report = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5), champion="v1")
    (warning,) = report["warnings"]
    before, after = _counts(q, f"event_time < '{CHANGE}'"), _counts(q, f"event_time >= '{CHANGE}'")
    assert f"LOG_SAMPLE_RATE: 1 ({before:,} predictions), 0.25 ({after:,} predictions)" in warning
    assert "the counts are of differently sampled traffic" in warning
    assert "DECISION_THRESHOLD" not in warning


def test_both_changed_gives_one_warning_each(tmp_path, config):
    q = _warehouse(
        tmp_path,
        {"decision_threshold": 0.5, "log_sample_rate": 1.0},
        {"decision_threshold": 0.6, "log_sample_rate": 0.5},
    )
    warnings = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))["warnings"]
    assert len(warnings) == 2
    assert "DECISION_THRESHOLD: 0.5 (" in warnings[0] and "LOG_SAMPLE_RATE: 1 (" in warnings[1]


def test_other_parameters_changing_is_no_mix(tmp_path, config):
    # STICKY_ASSIGNMENT and TARGET_VARIANT change the params text, not the threshold or the sampling
    q = _warehouse(
        tmp_path, {"sticky_assignment": True}, {"sticky_assignment": False, "target_variant": "v2"}
    )
    report = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    assert report["warnings"] == []


def test_a_change_before_the_window_is_no_mix(tmp_path, config):
    # the endpoint changed after the threshold did: the default window holds only the new threshold
    q = _warehouse(tmp_path, {"decision_threshold": 0.5}, {"decision_threshold": 0.7})
    state = _state(CHANGE + timedelta(minutes=1), v1=0.5, v2=0.5)
    report = build_report(q, config=config, endpoint_state=state)
    assert (
        report["window"]["start"]
        == (CHANGE + timedelta(minutes=1, seconds=PROXY_WEIGHTS_DELAY_SECONDS)).isoformat()
    )
    assert report["warnings"] == []


def test_a_variant_no_longer_live_is_not_counted(tmp_path, config):
    # v0 logged under another threshold in the window, but only v1 and v2 are live
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    fill(con, ARMS, 2_000, start=START, seconds=3600)
    fill(con, [Arm("v0", 0, 1.0, 0.8)], 200, start=START, seconds=3600, offset=1_000_000, salt=3)
    con.execute("UPDATE prediction_log SET params = ?", [_params()])
    con.execute(
        "UPDATE prediction_log SET params = ? WHERE variant_name = 'v0'", [_params(decision_threshold=0.9)]
    )
    con.close()
    report = build_report(DuckDBQuery(path), config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    assert report["warnings"] == [] and any("left out: v0" in n for n in report["notes"])


def test_predictions_without_params_are_counted_as_such(tmp_path, config):
    # records logged before params were (NULL, '{}', not JSON): named, but no value of their own
    q = _warehouse(tmp_path, {"decision_threshold": 0.5}, {"decision_threshold": 0.7})
    con = duckdb.connect(str(q.path))
    con.execute("UPDATE prediction_log SET params = NULL, threshold = NULL WHERE request_id IN ('r0', 'r1')")
    con.execute("UPDATE prediction_log SET params = 'not json', threshold = NULL WHERE request_id = 'r2'")
    con.close()
    (warning,) = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))["warnings"]
    assert "0.7 (" in warning and "; 3 predictions without it logged:" in warning


def test_the_threshold_column_stands_in_for_params_without_it(tmp_path, config):
    q = _warehouse(tmp_path, {"decision_threshold": 0.5}, {"decision_threshold": 0.7})
    con = duckdb.connect(str(q.path))
    con.execute(
        "UPDATE prediction_log SET params = '{}' WHERE event_time < ?", [CHANGE]
    )  # threshold 0.5 stays
    con.close()
    (warning,) = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))["warnings"]
    assert "DECISION_THRESHOLD: 0.5 (" in warning and "without it logged" not in warning


def test_the_redshift_flavour_warns_the_same(tmp_path, config):
    class RedshiftFlavour(DuckDBQuery):
        dialect = "redshift"

    q = _warehouse(tmp_path, {"decision_threshold": 0.5}, {"decision_threshold": 0.7})
    a = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    b = build_report(RedshiftFlavour(q.path), config=config, endpoint_state=_state(v1=0.5, v2=0.5))
    assert a["warnings"] == b["warnings"] and len(a["warnings"]) == 1


def test_the_params_sql_is_the_same_for_both_engines_and_reads_no_json():
    from warehouse_sql import params_in_window_sql

    sql = params_in_window_sql()
    assert "json" not in sql.lower() and ":endpoint_name" in sql and ":since" in sql and ":until" in sql
    assert "COUNT(DISTINCT request_id)" in sql  # duplicated deliveries count once


def test_duplicate_deliveries_count_once(tmp_path, config):
    q = _warehouse(tmp_path, {"decision_threshold": 0.5}, {"decision_threshold": 0.7})
    before, after = _counts(q, f"event_time < '{CHANGE}'"), _counts(q, f"event_time >= '{CHANGE}'")
    con = duckdb.connect(str(q.path))
    con.execute("INSERT INTO prediction_log SELECT * FROM prediction_log LIMIT 500")  # Firehose, twice
    con.close()
    (warning,) = build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5))["warnings"]
    assert f"0.5 ({before:,} predictions), 0.7 ({after:,} predictions)" in warning


def test_report_ab_prints_the_warning(tmp_path, config, monkeypatch):
    from trainserve.cli import cli
    from trainserve.commands import options
    from trainserve.commands import report as report_cmd
    from trainserve.target import Names, Target

    q = _warehouse(tmp_path, {"decision_threshold": 0.5}, {"decision_threshold": 0.7})
    target = Target(
        mode="local",
        region="us-east-1",
        config=config,
        names=Names.local(config),
        warehouse={"path": str(q.path)},
    )
    monkeypatch.setattr(options, "resolve_target", lambda local: target)
    monkeypatch.setattr(report_cmd, "_endpoint", lambda target: (_state(v1=0.5, v2=0.5), "v1"))
    result = CliRunner().invoke(cli, ["report", "ab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert (
        "warning: the window's predictions of the live variants were made under 2 values of the proxy's DECISION_THRESHOLD: 0.5 ("
        in said
    )
    out = json.loads(CliRunner().invoke(cli, ["report", "ab", "--json"], catch_exceptions=False).stdout)
    assert len(out["warnings"]) == 1 and "DECISION_THRESHOLD" in out["warnings"][0]
