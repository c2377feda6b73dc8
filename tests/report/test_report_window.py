"""The A/B report's window and the variants at 0%, on generated warehouse files: the default window starts
when the current weights took effect (DescribeEndpoint's LastModifiedTime plus the proxy's cache delay); a
``since`` across a change is warned about; a variant drained to 0% gets no expected share, no sample-size
target and no decision; a ``since`` after the data is refused."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta

import duckdb
import proxy_logic
import pytest
from warehouse_fixture import ENDPOINT, Arm, create_schema, fill
from warehouse_query import DuckDBQuery

from trainserve import PROJECT_ROOT
from trainserve.report import PROXY_WEIGHTS_DELAY_SECONDS, WindowError, build_report

START = datetime(2026, 2, 1, 9, 0, 0)
DELAY = timedelta(seconds=PROXY_WEIGHTS_DELAY_SECONDS)


def _state(changed_at=None, current=None, **weights):
    """A DescribeEndpoint response: ``LastModifiedTime`` timezone-aware, as boto3 gives it."""
    current = current or weights
    state = {
        "EndpointName": ENDPOINT,
        "EndpointStatus": "InService",
        "ProductionVariants": [
            {"VariantName": k, "CurrentWeight": current[k], "DesiredWeight": w} for k, w in weights.items()
        ],
    }
    if changed_at is not None:
        state["LastModifiedTime"] = changed_at.replace(tzinfo=UTC)
    return state


class CountingQuery(DuckDBQuery):
    """The real DuckDB backend, counting the statements it runs."""

    statements = 0

    def query(self, sql, params=None):
        self.statements += 1
        return super().query(sql, params)


def _warehouse(tmp_path, segments):
    """``segments``: (arms, n, start, seconds) filled one after the other, with their own request ids."""
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    for k, (arms, n, start, seconds) in enumerate(segments):
        fill(con, arms, n, start=start, seconds=seconds, offset=k * 1_000_000, salt=k)
    con.close()
    return CountingQuery(path)


def _count(q, since, until=None):
    con = duckdb.connect(str(q.path), read_only=True)
    try:
        rows = con.execute(
            "SELECT variant_name, COUNT(*) FROM prediction_log_dedup WHERE event_time >= ?"
            + (" AND event_time < ?" if until else "")
            + " GROUP BY 1",
            [since, until] if until else [since],
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def test_the_delay_is_the_proxys_cache_of_the_endpoint():
    tree = ast.parse((PROJECT_ROOT / "lambdas" / "proxy" / "proxy_handler.py").read_text())
    [cache] = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "ENDPOINT_CACHE_SECONDS" for t in node.targets)
    ]
    assert ast.unparse(cache) == "logic.ENDPOINT_CACHE_SECONDS"  # the proxy's cache is the shared value
    assert PROXY_WEIGHTS_DELAY_SECONDS == proxy_logic.ENDPOINT_CACHE_SECONDS == 5.0


# ------------------------------------------------------------------------------------ 1: a variant at 0%


def test_a_challenger_drained_to_zero_is_reported_as_draining_not_a_crash(tmp_path, config):
    # v1/v2 at 50/50 for an hour, then `traffic set v1=1 v2=0` (a rollback's first step): during the proxy's
    # cache delay v2 still gets its share, then only v1 serves.
    change = START + timedelta(hours=1)
    q = _warehouse(
        tmp_path,
        [
            ([Arm("v1", 1, 0.5, 0.80), Arm("v2", 2, 0.5, 0.90)], 6_000, START, 3600),
            ([Arm("v1", 1, 0.5, 0.80), Arm("v2", 2, 0.5, 0.90)], 40, change, 4),
            ([Arm("v1", 1, 1.0, 0.80)], 3_000, change + timedelta(seconds=6), 1800),
        ],
    )
    report = build_report(q, config=config, endpoint_state=_state(change, v1=1.0, v2=0.0), champion="v1")
    assert report["window"]["start"] == (change + DELAY).isoformat()
    assert report["window"]["basis"] == "endpoint_changed"
    by = {v["variant_name"]: v for v in report["variants"]}
    assert (by["v1"]["role"], by["v2"]["role"]) == ("champion", "draining")
    assert by["v2"]["draining"] is True and by["v2"]["weight"] == 0.0
    assert by["v2"]["requests"] == 0 and by["v1"]["requests"] == 3_000
    (cmp,) = report["comparisons"]
    assert cmp["challenger"] == "v2" and cmp["decision"] == "draining"
    assert cmp["min_sample"] is None and cmp["still_needed"] == {}  # no sample-size target for it
    srm = report["srm"]
    assert srm["mismatch"] is False and srm["unexpected"] == {} and srm["expected"]["v2"] == 0
    rec = report["recommendation"]
    assert rec["action"] == "nothing to act on" and rec["command"] == "trainserve endpoint status"
    assert rec["reason"].startswith("v2 at 0%: draining") and "only v1 receives traffic" in rec["reason"]
    assert any("v2 at 0% (draining" in n for n in report["notes"])


def test_what_a_draining_variant_collected_is_still_shown(tmp_path, config):
    change = START + timedelta(hours=1)
    q = _warehouse(
        tmp_path,
        [
            ([Arm("v1", 1, 0.5, 0.80), Arm("v2", 2, 0.5, 0.90)], 6_000, START, 3600),
            ([Arm("v1", 1, 1.0, 0.80)], 3_000, change + timedelta(seconds=6), 1800),
        ],
    )
    report = build_report(
        q, config=config, endpoint_state=_state(change, v1=1.0, v2=0.0), since=START, champion="v1"
    )
    by = {v["variant_name"]: v for v in report["variants"]}
    assert by["v2"]["requests"] == _count(q, START)["v2"] > 2_000
    assert by["v2"]["accuracy"] == pytest.approx(0.90, abs=0.03)
    (cmp,) = report["comparisons"]
    assert cmp["decision"] == "draining" and cmp["difference"] == pytest.approx(0.10, abs=0.04)
    assert report["recommendation"]["action"] == "nothing to act on"
    # the window spans the change: v2's traffic before it is no split problem
    assert report["window"]["weights_changed_inside"] is True
    assert report["srm"]["applicable"] is False and report["srm"]["mismatch"] is False


def test_a_draining_variant_is_left_out_of_the_split_check_of_the_others(tmp_path, config):
    # v3 was rejected (drained to 0%); v1/v2 run at 80/20 and v2 is clearly better
    change = START + timedelta(hours=1)
    q = _warehouse(
        tmp_path,
        [
            ([Arm("v1", 1, 0.7, 0.8), Arm("v2", 2, 0.2, 0.88), Arm("v3", 3, 0.1, 0.7)], 5_000, START, 3600),
            ([Arm("v1", 1, 0.8, 0.8), Arm("v2", 2, 0.2, 0.88)], 30_000, change + DELAY, 4 * 3600),
        ],
    )
    report = build_report(
        q, config=config, endpoint_state=_state(change, v1=0.8, v2=0.2, v3=0.0), champion="v1"
    )
    srm = report["srm"]
    n = srm["observed"]["v1"] + srm["observed"]["v2"]
    assert srm["observed"]["v3"] == 0 and srm["chi2"] is not None
    assert srm["expected"] == pytest.approx({"v1": 0.8 * n, "v2": 0.2 * n, "v3": 0.0})
    assert srm["p_value"] > 0.001 and srm["mismatch"] is False
    decisions = {c["challenger"]: c["decision"] for c in report["comparisons"]}
    assert decisions == {"v2": "promote", "v3": "draining"}
    assert report["recommendation"]["command"] == "trainserve traffic promote v2"


def test_traffic_on_a_variant_at_zero_after_the_change_is_a_split_problem(tmp_path, config):
    # v2 was drained to 0%, but something (a TARGET_VARIANT pin) still sends it half the traffic
    change = START + timedelta(hours=1)
    q = _warehouse(
        tmp_path,
        [([Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 0.8)], 4_000, change + DELAY, 3600)],
    )
    report = build_report(q, config=config, endpoint_state=_state(change, v1=1.0, v2=0.0), champion="v1")
    srm = report["srm"]
    assert srm["mismatch"] is True and srm["unexpected"] == {"v2": report["variants"][1]["requests"]}
    rec = report["recommendation"]
    assert rec["action"] == "keep collecting" and rec["command"] == "trainserve params get"
    assert "variants at 0% received traffic in the window (v2 got" in rec["reason"]
    assert "TARGET_VARIANT" in rec["reason"]


# ------------------------------------------------------------------- 2: the weights changed during the window


def _operator_ramp(tmp_path):
    """90/10 for two hours, `traffic set v4=0.5 v6=0.5` at ``change``; for 4 s the proxy's cached weights
    still send a burst at 90/10; then 50/50."""
    change = START + timedelta(hours=2)
    arms_90 = [Arm("v4", 4, 0.9, 0.80), Arm("v6", 6, 0.1, 0.80)]
    arms_50 = [Arm("v4", 4, 0.5, 0.80), Arm("v6", 6, 0.5, 0.80)]
    q = _warehouse(
        tmp_path,
        [
            (arms_90, 10_000, START, 2 * 3600),
            (arms_90, 2_000, change, 4),
            (arms_50, 6_000, change + timedelta(seconds=5), 3600),
        ],
    )
    return q, change


def test_an_operator_ramp_is_no_sample_ratio_mismatch(tmp_path, config):
    q, change = _operator_ramp(tmp_path)
    report = build_report(q, config=config, endpoint_state=_state(change, v4=0.5, v6=0.5), champion="v4")
    window = report["window"]
    assert window["start"] == (change + DELAY).isoformat() and window["basis"] == "endpoint_changed"
    assert window["endpoint_changed_at"] == change.isoformat()
    assert window["reason"].startswith("since the endpoint last changed at 2026-02-01 11:00:00 UTC")
    assert f"plus {PROXY_WEIGHTS_DELAY_SECONDS:g} s" in window["reason"]
    assert window["weights_changed_inside"] is False and report["warnings"] == []
    got = {v["variant_name"]: v["requests"] for v in report["variants"]}
    assert got == _count(q, change + DELAY)
    assert report["srm"]["applicable"] is True and report["srm"]["mismatch"] is False
    assert "fix the split" not in report["recommendation"]["reason"]


def test_without_the_endpoints_change_time_the_ramp_looks_like_a_broken_split(tmp_path, config):
    # the defect this guards against: the window from the variants' first predictions mixes both splits
    q, change = _operator_ramp(tmp_path)
    report = build_report(q, config=config, endpoint_state=_state(v4=0.5, v6=0.5), champion="v4")
    assert report["window"]["basis"] == "first_prediction"
    assert report["srm"]["mismatch"] is True


def test_the_proxys_cache_delay_is_kept_out_of_the_window(tmp_path, config):
    # a window from the change itself holds the 90/10 burst the proxy sent with its cached weights
    q, change = _operator_ramp(tmp_path)
    report = build_report(
        q, config=config, endpoint_state=_state(change, v4=0.5, v6=0.5), since=change, champion="v4"
    )
    srm = report["srm"]
    assert srm["p_value"] < 0.001  # the burst shows: against the current weights it is a mismatch...
    assert srm["mismatch"] is False and srm["applicable"] is False  # ...which is not flagged
    assert srm["caveat"] == report["warnings"][0]
    assert report["window"]["weights_changed_inside"] is True


def test_a_since_before_the_change_warns_and_does_not_flag_the_split(tmp_path, config):
    q, change = _operator_ramp(tmp_path)
    report = build_report(
        q, config=config, endpoint_state=_state(change, v4=0.5, v6=0.5), since=START, champion="v4"
    )
    assert report["window"]["start"] == START.isoformat() and report["window"]["basis"] == "given"
    (warning,) = report["warnings"]
    assert "changed at 2026-02-01 11:00:00 UTC, inside the window" in warning
    assert "sample-ratio check against the current weights is not meaningful" in warning
    assert report["srm"]["mismatch"] is False and report["srm"]["applicable"] is False
    assert "fix the split" not in report["recommendation"]["reason"]


def test_a_variant_that_comes_back_is_counted_from_the_change(tmp_path, config):
    # v3 served alone long ago; v4 (champion) and v6 ran; v4 was rejected: v3 is back as champion beside v6
    change = START + timedelta(days=1)
    q = _warehouse(
        tmp_path,
        [
            ([Arm("v3", 3, 1.0, 0.8)], 3_000, START - timedelta(days=2), 3600),
            ([Arm("v4", 4, 0.9, 0.8), Arm("v6", 6, 0.1, 0.8)], 6_000, START, 6 * 3600),
            ([Arm("v3", 3, 0.9, 0.8), Arm("v6", 6, 0.1, 0.8)], 6_000, change + DELAY, 3 * 3600),
        ],
    )
    state = _state(change, v3=0.9, v6=0.1)
    report = build_report(q, config=config, endpoint_state=state, champion="v3")
    assert report["window"]["start"] == (change + DELAY).isoformat()
    got = {v["variant_name"]: v["requests"] for v in report["variants"]}
    assert got == _count(q, change + DELAY) and got["v3"] > 4_000
    assert report["srm"]["mismatch"] is False
    assert any("no longer live are left out: v4" in n for n in report["notes"])
    # the defect: from the variants' first predictions, v3 has nothing during v4's time and v6 has a lot
    old = build_report(q, config=config, endpoint_state=_state(v3=0.9, v6=0.1), champion="v3")
    assert old["srm"]["mismatch"] is True


def test_a_variant_first_logged_after_the_change_does_not_start_the_window(tmp_path, config):
    """Was: the window started at v2's first logged prediction when that came after the change (the old
    rule). The endpoint says v1/v2 at 90/10 since ``change``: every request from ``change + DELAY`` on was
    randomised under those weights, so v1's requests before v2's first one belong in the experiment; here v2
    got nothing for 20 minutes, which the sample-ratio check now shows instead of the window hiding it."""
    change = START
    q = _warehouse(
        tmp_path,
        [
            ([Arm("v1", 1, 1.0, 0.8)], 1_000, START + timedelta(minutes=1), 600),
            ([Arm("v1", 1, 0.9, 0.8), Arm("v2", 2, 0.1, 0.8)], 3_000, START + timedelta(minutes=20), 3600),
        ],
    )
    report = build_report(q, config=config, endpoint_state=_state(change, v1=0.9, v2=0.1), champion="v1")
    window = report["window"]
    assert window["basis"] == "endpoint_changed" and window["start"] == (change + DELAY).isoformat()
    assert window["reason"].startswith("since the endpoint last changed at 2026-02-01 09:00:00 UTC")
    got = {v["variant_name"]: v["requests"] for v in report["variants"]}
    assert got == _count(q, change + DELAY) and got["v1"] > 3_500
    assert report["srm"]["applicable"] is True and report["srm"]["mismatch"] is True


def _insert(q, rows):
    """Explicit predictions: (request_id, event_time, variant, user_id), each labelled 1 at score 0.9."""
    con = duckdb.connect(str(q.path))
    try:
        for request_id, at, variant, user in rows:
            con.execute(
                "INSERT INTO prediction_log VALUES (?, ?, ?, ?, NULL, ?, ?, '{}', 0.9, 1, 0.5, 10.0, '{}')",
                [request_id, at, ENDPOINT, variant, int(variant[1:]), user],
            )
    finally:
        con.close()


def test_champion_requests_before_the_challengers_first_are_in_the_window(tmp_path, config):
    """The review's repro: 30 sticky users at 90/10 (24 on v1, 6 on v2), all after the weights were in force.
    v1 users u0..u23 come first; v2's first request comes after them, then v1's u7..u23 again and the other
    v2 users. A window from v2's first prediction compared 17 v1 users with 6 v2 users: the 7 v1 users seen
    only before it were dropped, always from the champion's side. The window starts at the change."""
    q = _warehouse(tmp_path, [])
    settled = START + DELAY
    at = iter(settled + timedelta(seconds=k) for k in range(1, 1_000))
    rows = [(f"a{u}", next(at), "v1", f"u{u}") for u in range(24)]
    rows.append(("b24", next(at), "v2", "u24"))
    rows += [(f"c{u}", next(at), "v1", f"u{u}") for u in range(7, 24)]
    rows += [(f"d{u}", next(at), "v2", f"u{u}") for u in range(25, 30)]
    _insert(q, rows)
    report = build_report(q, config=config, endpoint_state=_state(START, v1=0.9, v2=0.1), champion="v1")
    assert report["window"]["start"] == settled.isoformat()
    assert report["window"]["basis"] == "endpoint_changed" and report["warnings"] == []
    assert report["srm"]["unit"] == "users" and report["srm"]["observed"] == {"v1": 24, "v2": 6}
    got = {v["variant_name"]: v["requests"] for v in report["variants"]}
    assert got == {"v1": 24 + 17, "v2": 6}


def test_without_the_endpoints_change_time_the_window_starts_at_the_newest_variants_first_prediction(
    tmp_path, config
):
    # the fallback when DescribeEndpoint gives no LastModifiedTime
    q = _warehouse(
        tmp_path,
        [
            ([Arm("v1", 1, 1.0, 0.8)], 1_000, START + timedelta(minutes=1), 600),
            ([Arm("v1", 1, 0.9, 0.8), Arm("v2", 2, 0.1, 0.8)], 3_000, START + timedelta(minutes=20), 3600),
        ],
    )
    report = build_report(q, config=config, endpoint_state=_state(v1=0.9, v2=0.1), champion="v1")
    window = report["window"]
    assert window["basis"] == "first_prediction"
    assert window["start"] >= (START + timedelta(minutes=20)).isoformat()
    assert window["reason"] == (
        "since the first logged prediction of v2, the newest live variant to receive traffic"
    )
    assert window["endpoint_changed_at"] is None and window["weights_in_force_from"] is None


def test_while_the_weights_are_changing_the_split_is_not_flagged(tmp_path, config):
    # UpdateEndpointWeightsAndCapacities in flight: CurrentWeight 90/10 still, DesiredWeight 50/50
    q = _warehouse(tmp_path, [([Arm("v1", 1, 0.8, 0.8), Arm("v2", 2, 0.2, 0.8)], 20_000, START, 3600)])
    state = _state(START - timedelta(hours=1), current={"v1": 0.9, "v2": 0.1}, v1=0.5, v2=0.5)
    state["EndpointStatus"] = "Updating"
    report = build_report(q, config=config, endpoint_state=state, champion="v1")
    assert report["srm"]["p_value"] < 0.001 and report["srm"]["mismatch"] is False
    assert report["srm"]["caveat"].startswith(
        "the endpoint is Updating (weights v1 0.9 -> 0.5, v2 0.1 -> 0.5)"
    )


def test_no_prediction_since_the_change_is_an_empty_window_not_an_error(tmp_path, config):
    q = _warehouse(tmp_path, [([Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 0.8)], 2_000, START, 3600)])
    change = START + timedelta(hours=2)  # `traffic set` after the last prediction
    report = build_report(q, config=config, endpoint_state=_state(change, v1=0.5, v2=0.5), champion="v1")
    window = report["window"]
    assert window["start"] == window["end"] == (change + DELAY).isoformat()
    assert [v["requests"] for v in report["variants"]] == [0, 0]
    rec = report["recommendation"]
    assert rec["action"] == "keep collecting" and rec["command"] == "trainserve report ab"
    assert rec["reason"].startswith(
        "no predictions logged in the window yet (since the endpoint last changed"
    )


# ---------------------------------------------------------------------------------- 3: a since after the data


def test_a_since_in_the_future_is_refused_before_any_query(tmp_path, config):
    q = _warehouse(tmp_path, [([Arm("v1", 1, 1.0, 0.8)], 100, START, 60)])
    with pytest.raises(WindowError, match=r"since 2030-01-01 00:00:00 UTC is in the future \(now: ") as info:
        build_report(q, config=config, endpoint_state=_state(v1=1.0), since=datetime(2030, 1, 1))
    assert q.statements == 0
    assert info.value.since == datetime(2030, 1, 1) and info.value.now < datetime(2030, 1, 1)


def test_a_since_after_the_last_prediction_is_refused(tmp_path, config):
    q = _warehouse(tmp_path, [([Arm("v1", 1, 0.5, 0.8), Arm("v2", 2, 0.5, 0.8)], 600, START, 600)])
    since = START + timedelta(hours=1)
    with pytest.raises(WindowError) as info:
        build_report(q, config=config, endpoint_state=_state(v1=0.5, v2=0.5), since=since)
    last = datetime(2026, 2, 1, 9, 9, 59)  # the 600th prediction, 1 s apart from 09:00:00
    assert info.value.last_data.replace(microsecond=0) == last
    assert str(info.value).startswith(
        "since 2026-02-01 10:00:00 UTC is after the last logged prediction (last logged prediction of the "
        "live variants: 2026-02-01 09:09:59 UTC; now: "
    )
    assert q.statements == 1  # the first/last-seen look-up only: no report query
