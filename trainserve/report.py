"""The A/B report: per-variant traffic, latency and online accuracy from the warehouse, the statistics of
each challenger against the champion, and one recommendation with the exact command to act on it.

The report only reads (the warehouse, and the endpoint's live weights); it never changes the endpoint.

Experiment window (unless ``since``/``until`` are given): from when the current weights took effect to the
last logged prediction. The weights took effect at the endpoint's ``LastModifiedTime`` (DescribeEndpoint:
its weights or variants last changed then) plus ``PROXY_WEIGHTS_DELAY_SECONDS`` (the proxy caches the
weights that long): every request from then on was randomised under them, so the window starts there even
when a variant's first logged prediction comes later (starting at it would drop the other variants' requests
before it and bias the sample). Only without a ``LastModifiedTime`` does the window start at the newest live
variant's first logged prediction. A ``since`` before the weights took effect spans a change: the report
warns, and the sample-ratio check, which compares with the current weights, is shown but not flagged.
Champion: the release controller's (its tag) when it is live and receives traffic, else the live variant
with the largest weight (ties: the lowest model version).

Proxy parameters: when the window's predictions of the live variants were logged under more than one
``DECISION_THRESHOLD`` or ``LOG_SAMPLE_RATE`` (``prediction_log.params``; ``MIXING_PARAMS``), the figures
pool two regimes: the report warns, naming the values, their counts and the ``--since`` after the change.

Variants at weight 0 are draining (they get no new traffic: a rollback, a rejection or `traffic set` put them at
0%): they have no expected
share in the sample-ratio check (any unit they receive in the window is a mismatch), no sample-size target
and no decision; what they logged in the window is still shown.

Decision (``ab_alpha`` from the config): the **sequential** always-valid p-value (mixture SPRT, see
``trainserve.abtest``) decides, because the report is read repeatedly while data arrives. A sample-ratio
mismatch (chi-square p < 0.001) blocks every decision: fix the split first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import proxy_logic
import warehouse_sql

from trainserve import abtest

MIN_LOOK_LABELLED = 30  # a sequential look counts once each arm has this many labelled predictions
# How long after a change of the endpoint's weights traffic may still follow the old ones: the proxy caches
# DescribeEndpoint for this long.
PROXY_WEIGHTS_DELAY_SECONDS = proxy_logic.ENDPOINT_CACHE_SECONDS
_UPDATING = ("Updating", "SystemUpdating")
# Proxy parameters (``trainserve params set`` names) whose change inside the window makes the pooled figures
# mix two regimes, and what they then mix.
MIXING_PARAMS = {
    "DECISION_THRESHOLD": (
        "the labels, positive rate and accuracy mix predictions labelled at different thresholds"
    ),
    "LOG_SAMPLE_RATE": "the counts are of differently sampled traffic",
}
_VARIANT = re.compile(r"^v(\d+)$")


def variant_version(name: str) -> int | None:
    """Model version from a variant name (``v3`` -> 3; DESIGN: the variant name alone tells the version)."""
    m = _VARIANT.match(name or "")
    return int(m.group(1)) if m else None


def endpoint_weights(endpoint_state: Mapping[str, Any] | None) -> dict[str, float]:
    """Live weights by variant name from a ``DescribeEndpoint`` response (CurrentWeight, else DesiredWeight)."""
    if not endpoint_state:
        return {}
    out = {}
    for v in endpoint_state.get("ProductionVariants") or []:
        w = v.get("CurrentWeight", v.get("DesiredWeight"))
        if v.get("VariantName") and w is not None:
            out[v["VariantName"]] = float(w)
    return out


def _sort_key(name: str) -> tuple[int, str]:
    v = variant_version(name)
    return (v if v is not None else 10**9, name)


def choose_champion(weights: Mapping[str, float], requests: Mapping[str, int]) -> str | None:
    """Largest live weight (ties: lowest version); without weights, the variant with the most requests."""
    basis = weights if weights else requests
    if not basis:
        return None
    return sorted(basis, key=lambda k: (-basis[k], *_sort_key(k)))[0]


def _grain(span: timedelta) -> str:
    if span <= timedelta(hours=3):
        return "minute"
    if span <= timedelta(days=7):
        return "hour"
    return "day"


def _naive(ts: Any) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pts"


def _t(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


class WindowError(ValueError):
    """The window asked for holds no logged prediction: ``since`` is in the future, or after the last logged
    prediction of the live variants. ``detail`` says which, with the current and the last data time."""

    def __init__(self, since: datetime, now: datetime, last_data: datetime | None = None):
        self.since, self.now, self.last_data = since, now, last_data
        last = f"last logged prediction of the live variants: {_t(last_data)}" if last_data else ""
        if since > now:
            self.detail = f"is in the future (now: {_t(now)}" + (f"; {last})" if last else ")")
        else:
            self.detail = f"is after the last logged prediction ({last}; now: {_t(now)})"
        super().__init__(f"since {_t(since)} {self.detail}: the window would be empty")


def check_since(since: datetime | None, now: datetime | None = None) -> None:
    """Refuse a window start in the future (``WindowError``); ``since`` naive is taken as UTC."""
    if since is None:
        return
    now = _naive(now or datetime.now(UTC))
    if _naive(since) > now:
        raise WindowError(_naive(since), now)


def endpoint_changed_at(endpoint_state: Mapping[str, Any] | None) -> datetime | None:
    """When the endpoint's weights or variants last changed: DescribeEndpoint's ``LastModifiedTime`` (UTC)."""
    ts = (endpoint_state or {}).get("LastModifiedTime")
    return _naive(ts) if ts else None


def pending_weights(endpoint_state: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """Variants whose weight is being changed: name -> (CurrentWeight, DesiredWeight), where they differ."""
    out = {}
    for v in (endpoint_state or {}).get("ProductionVariants") or []:
        cur, want = v.get("CurrentWeight"), v.get("DesiredWeight")
        if v.get("VariantName") and cur is not None and want is not None and abs(cur - want) > 1e-9:
            out[v["VariantName"]] = (float(cur), float(want))
    return out


def _param_value(row: Mapping[str, Any], field: str) -> float | None:
    """The value of the ``ProxyParams`` field ``field`` a row of ``warehouse_sql.params_in_window_sql`` was logged with:
    from its ``params`` JSON; the decision threshold, without it, from the ``threshold`` column (the one the
    label used). ``None``: not logged."""
    try:
        logged = json.loads(row.get("params") or "null")
    except ValueError:
        logged = None
    value = logged.get(field) if isinstance(logged, dict) else None
    if value is None and field == "decision_threshold":
        value = row.get("threshold")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def params_mix(rows: list[Mapping[str, Any]], variants: list[str]) -> list[str]:
    """Warnings for the ``MIXING_PARAMS`` that had more than one value over the window's predictions of
    ``variants`` (rows of ``warehouse_sql.params_in_window_sql``): the parameter, each value with its count (in the order of
    their last predictions), what the figures then mix, and the ``--since`` after which only the latest value
    holds (the first whole second after the last prediction under another value)."""
    out = []
    for name, mixes in MIXING_PARAMS.items():
        field = proxy_logic.PARAMS[name][0]
        counts: dict[float | None, int] = {}
        last: dict[float | None, datetime] = {}
        for r in rows:
            if r["variant_name"] not in variants:
                continue
            value = _param_value(r, field)
            counts[value] = counts.get(value, 0) + int(r["predictions"] or 0)
            seen = _naive(r["last_seen"])
            last[value] = max(last.get(value, seen), seen)
        known = sorted((v for v in counts if v is not None), key=lambda v: (last[v], v))  # the latest last
        if len(known) < 2:
            continue
        changed = max(last[v] for v in known[:-1])
        since = changed.replace(microsecond=0) + timedelta(seconds=1)
        values = ", ".join(f"{v:g} ({counts[v]:,} predictions)" for v in known)
        unknown = f"; {counts[None]:,} predictions without it logged" if counts.get(None) else ""
        out.append(
            f"the window's predictions of the live variants were made under {len(known)} values of the "
            f"proxy's {name}: {values}{unknown}: {mixes}; start the window after the change: "
            f"trainserve report ab --since {since:%Y-%m-%dT%H:%M:%S}"
        )
    return out


def build_report(
    query: Any,
    *,
    config: Any,
    endpoint_state: dict | None,
    endpoint_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    tau: float | None = None,
    champion: str | None = None,
) -> dict:
    """Build the A/B report (JSON-able dict). ``query`` is a ``WarehouseQuery``; ``endpoint_state`` the
    endpoint's ``DescribeEndpoint`` response (``None``: no live endpoint known, weights and SRM are skipped;
    its ``LastModifiedTime`` starts the default window, see the module docstring).

    ``tau``: the mixing standard deviation of the sequential test (default ``config.ab_min_effect``).
    ``champion``: the release controller's champion (its ``trainserve:champion`` tag) when known and live;
    otherwise the largest live weight. ``since`` in the future (checked before any query) or after the last
    logged prediction raises ``WindowError``.
    """
    alpha, power, min_effect = float(config.ab_alpha), float(config.ab_power), float(config.ab_min_effect)
    tau = float(tau if tau is not None else min_effect)
    endpoint_name = endpoint_name or (endpoint_state or {}).get("EndpointName") or config.endpoint_name
    dialect = getattr(query, "dialect", "redshift")
    now = _naive(datetime.now(UTC))
    check_since(since, now)
    weights = endpoint_weights(endpoint_state)
    total_w = sum(weights.values())
    changed_at = endpoint_changed_at(endpoint_state) if weights else None
    settled_at = changed_at + timedelta(seconds=PROXY_WEIGHTS_DELAY_SECONDS) if changed_at else None
    notes: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {
        "endpoint_name": endpoint_name,
        "generated_at": datetime.now(UTC).isoformat(),
        "window": None,
        "settings": {"alpha": alpha, "power": power, "min_effect": min_effect, "tau": tau},
        "decision_test": "mixture SPRT always-valid p-value (sequential)",
        "champion": None,
        "variants": [],
        "srm": None,
        "comparisons": [],
        "histograms": {},
        "histogram_bins": warehouse_sql.HISTOGRAM_BINS,
        "traffic": [],
        "warnings": warnings,
        "notes": notes,
        "recommendation": None,
    }

    seen = {
        r["variant_name"]: r
        for r in query.query(warehouse_sql.variant_first_seen_sql(), {"endpoint_name": endpoint_name})
    }
    live = sorted(weights, key=_sort_key) if weights else sorted(seen, key=_sort_key)
    # weight 0 (a rollback, a rejection or `traffic set`): the variant should receive no new traffic
    draining = [v for v in live if total_w > 0 and weights.get(v, 0.0) <= 0]
    ignored = sorted(set(seen) - set(live), key=_sort_key)
    if ignored:
        notes.append(f"variants no longer live are left out: {', '.join(ignored)}")
    logged_live = [v for v in live if v in seen]
    if not logged_live and len(live) == 1:
        report["recommendation"] = nothing_to_compare(live[0], config)
        report["recommendation"]["reason"] += f" (no prediction of {live[0]} is logged yet either)"
        return report
    if not logged_live:
        report["recommendation"] = {
            "action": "keep collecting",
            "reason": f"no logged predictions for the live variants of {endpoint_name} yet",
            "command": "trainserve report ab",
        }
        return report
    last_data = max(_naive(seen[v]["last_seen"]) for v in logged_live)
    if since is not None:
        since = _naive(since)
        if since > last_data:
            raise WindowError(since, now, last_data)
        basis, reason = "given", f"from the start asked for ({_t(since)})"
    else:
        if settled_at is not None and changed_at is not None:
            # Every request from here on was randomised under the current weights, whenever each variant's
            # first one came: starting later (at the challenger's first prediction) would drop the champion's
            # requests before it, always from the champion's side.
            since, basis = settled_at, "endpoint_changed"
            reason = (
                f"since the endpoint last changed at {_t(changed_at)} (its weights or variants; LastModifiedTime), "
                f"plus {PROXY_WEIGHTS_DELAY_SECONDS:g} s while the proxy's cached weights catch up"
            )
        else:
            # without the change time, the newest variant's first prediction is the earliest time known to be
            # under the current variants
            serving = [v for v in logged_live if v not in draining] or logged_live
            newest = max(serving, key=lambda v: (_naive(seen[v]["first_seen"]), _sort_key(v)))
            since, basis = _naive(seen[newest]["first_seen"]), "first_prediction"
            reason = (
                f"since the first logged prediction of {newest}, the newest live variant to receive traffic"
            )
    if until is None:
        until = max(last_data + timedelta(seconds=1), since)
    until = _naive(until)
    if until < since:
        raise ValueError(f"the window ends ({_t(until)}) before it starts ({_t(since)})")
    grain = _grain(until - since)
    spans_change = settled_at is not None and since < settled_at
    report["window"] = {
        "start": since.isoformat(),
        "end": until.isoformat(),
        "grain": grain,
        "basis": basis,
        "reason": reason,
        "endpoint_changed_at": changed_at.isoformat() if changed_at else None,
        "weights_in_force_from": settled_at.isoformat() if settled_at else None,
        "weights_changed_inside": spans_change,
    }
    srm_caveat = None
    if spans_change:
        assert changed_at is not None and settled_at is not None
        srm_caveat = (
            f"the endpoint's weights or variants changed at {_t(changed_at)}, inside the window (from {_t(since)}): "
            f"traffic before {_t(settled_at)} may follow earlier weights, so the sample-ratio check against the "
            "current weights is not meaningful over this window and is not flagged (the default window, from the "
            "change on, checks it)"
        )
        warnings.append(srm_caveat)
    status = (endpoint_state or {}).get("EndpointStatus")
    pending = pending_weights(endpoint_state)
    if pending or status in _UPDATING:
        change = ", ".join(f"{k} {a:g} -> {b:g}" for k, (a, b) in sorted(pending.items()))
        srm_caveat = (
            f"the endpoint is {status or 'changing'}" + (f" (weights {change})" if change else "") + ": the "
            "sample-ratio check is not flagged until the change is in force"
        )
        warnings.append(srm_caveat)
    params = {"endpoint_name": endpoint_name, "since": since, "until": until}

    # an empty window (the endpoint changed after the last logged prediction) needs no query
    rows = query.query(warehouse_sql.report_sql(dialect, grain), params) if until > since else []
    if rows:
        warnings.extend(params_mix(query.query(warehouse_sql.params_in_window_sql(), params), live))
    bins = warehouse_sql.HISTOGRAM_BINS
    summary: dict[str, dict] = {}
    labelled = {v: 0 for v in live}
    correct = {v: 0 for v in live}
    positives = {v: 0 for v in live}
    users = {v: 0 for v in live}
    anonymous = {v: 0 for v in live}
    versions: dict[str, set] = {v: set() for v in live}
    by_bucket: dict[datetime, dict[str, dict[str, int]]] = {}
    for r in rows:
        v = r["variant_name"]
        if v not in labelled:
            continue
        if r["kind"] == "variant":
            summary[v] = r
            continue
        if r["kind"] == "units":
            users[v] = int(r["requests"] or 0)
            anonymous[v] = int(r["labelled"] or 0)
            continue
        labelled[v] += int(r["labelled"] or 0)
        correct[v] += int(r["correct"] or 0)
        positives[v] += int(r["positives"] or 0)
        versions[v].update(x for x in (r["min_version"], r["max_version"]) if x is not None)
        hist = report["histograms"].setdefault(v, [0] * bins)
        if r["hb"] is not None and 0 <= int(r["hb"]) < bins:
            hist[int(r["hb"])] += int(r["requests"] or 0)
        cell = by_bucket.setdefault(_naive(r["bucket"]), {}).setdefault(
            v, {"requests": 0, "labelled": 0, "correct": 0}
        )
        cell["requests"] += int(r["requests"] or 0)
        cell["labelled"] += int(r["labelled"] or 0)
        cell["correct"] += int(r["correct"] or 0)
    buckets = sorted(by_bucket)
    for b in buckets:
        total = sum(x["requests"] for x in by_bucket[b].values())
        for v in live:
            n = by_bucket[b].get(v, {}).get("requests", 0)
            report["traffic"].append(
                {
                    "bucket": b.isoformat(),
                    "variant_name": v,
                    "requests": n,
                    "share": n / total if total else None,
                }
            )

    requests = {v: int((summary.get(v) or {}).get("requests") or 0) for v in live}
    total_requests = sum(requests.values())
    if champion in draining:
        notes.append(
            f"the release controller's champion {champion} is at 0%: the report compares with the heaviest "
            "variant that receives traffic"
        )
    if champion not in live or champion in draining:
        serving_weights = {v: w for v, w in weights.items() if v not in draining}
        serving_requests = {v: n for v, n in requests.items() if v not in draining}
        champion = choose_champion(serving_weights, serving_requests) or live[0]
    assert champion is not None  # live is not empty here
    report["champion"] = champion
    for v in live:
        s = summary.get(v) or {}
        if len(versions[v]) > 1:
            notes.append(f"variant {v} logged model versions {sorted(versions[v])}")
        n = requests[v]
        report["variants"].append(
            {
                "variant_name": v,
                "model_version": s.get("max_version")
                if s.get("max_version") is not None
                else variant_version(v),
                "role": "champion" if v == champion else ("draining" if v in draining else "challenger"),
                "draining": v in draining,
                "weight": (weights[v] / total_w) if weights and total_w else None,
                "requests": n,
                "users": users[v],
                "share": n / total_requests if total_requests else None,
                "latency_p50_ms": s.get("latency_p50"),
                "latency_p95_ms": s.get("latency_p95"),
                "latency_p99_ms": s.get("latency_p99"),
                "positive_rate": positives[v] / n if n else None,
                "labelled": labelled[v],
                "correct": correct[v],
                "accuracy": correct[v] / labelled[v] if labelled[v] else None,
                "accuracy_ci": abtest.proportion_ci(correct[v], labelled[v], alpha=alpha),
            }
        )
    if draining:
        notes.append(
            f"{', '.join(draining)} at 0% (draining: it gets no new traffic): no expected share, "
            "no sample-size target, no decision; what it logged in the window is shown"
        )

    srm = None
    unlogged = [v for v in live if v not in seen and weights.get(v, 0) > 0]
    if unlogged:
        notes.append(
            f"live variant(s) {', '.join(unlogged)} have no logged predictions yet: no sample-ratio check"
        )
    elif weights and len(live) >= 2:
        # The unit of randomisation: with sticky assignment a user_id is assigned once, so its requests are
        # not independent draws; requests without a user_id are each their own unit.
        units = {v: users[v] + anonymous[v] for v in live}
        srm = abtest.srm_test(units, weights)
        srm["unit"] = "users" if any(users.values()) else "requests"
        srm["observed"] = units
        srm["applicable"] = srm_caveat is None
        srm["caveat"] = srm_caveat
        if srm_caveat is not None:
            srm["mismatch"] = False  # shown, not flagged: the weights were not the same over the window
        report["srm"] = srm
    elif not weights:
        notes.append("no live endpoint weights: the sample-ratio check is skipped")

    cum = {v: [0, 0] for v in live}
    looks: dict[str, list[tuple[int, int, int, int]]] = {v: [] for v in live if v != champion}
    for b in buckets:
        for v, x in by_bucket[b].items():
            cum[v][0] += x["correct"]
            cum[v][1] += x["labelled"]
        for v in looks:
            if cum[champion][1] >= MIN_LOOK_LABELLED and cum[v][1] >= MIN_LOOK_LABELLED:
                looks[v].append((cum[champion][0], cum[champion][1], cum[v][0], cum[v][1]))

    s_a, n_a = correct[champion], labelled[champion]
    for v in looks:
        s_b, n_b = correct[v], labelled[v]
        diff = (s_b / n_b - s_a / n_a) if n_a and n_b else None
        fixed = abtest.two_proportion_ztest(s_a, n_a, s_b, n_b)
        seq = abtest.always_valid_p_value(looks[v], tau) if looks[v] else 1.0
        min_sample: dict[str, int] | None = None
        still_needed: dict[str, int] = {}
        if v in draining:
            decision = "draining"  # it leaves: nothing to decide, no sample to collect
        else:
            ratio = (
                (weights[v] / weights[champion])
                if weights and weights.get(champion)
                else ((requests[v] / requests[champion]) if requests[champion] and requests[v] else 1.0)
            )
            need = abtest.min_sample_size(s_a / n_a if n_a else 0.5, min_effect, alpha, power, ratio=ratio)
            min_sample = {champion: need["n_a"], v: need["n_b"]}
            still_needed = {champion: max(0, need["n_a"] - n_a), v: max(0, need["n_b"] - n_b)}
            if srm and srm["mismatch"]:
                decision = "keep collecting"
            elif seq <= alpha and diff is not None:
                decision = "promote" if diff > 0 else "rollback"
            else:
                decision = "keep collecting"
        report["comparisons"].append(
            {
                "challenger": v,
                "champion": champion,
                "champion_accuracy": s_a / n_a if n_a else None,
                "challenger_accuracy": s_b / n_b if n_b else None,
                "difference": diff,
                "z": fixed["z"] if fixed else None,
                "p_value_fixed": fixed["p_value"] if fixed else None,
                "p_value_sequential": seq,
                # with no labelled prediction on one side there is nothing to compare (only the prior)
                "prob_better": abtest.prob_b_beats_a(s_a, n_a, s_b, n_b) if n_a and n_b else None,
                "min_sample": min_sample,
                "still_needed": still_needed,
                "decision": decision,
            }
        )
    report["recommendation"] = recommend(report, alpha, config)
    if unlogged:
        report["recommendation"] = {
            "action": "keep collecting",
            "reason": f"{', '.join(unlogged)} is live but has no logged predictions yet (check TARGET_VARIANT and "
            "LOG_SAMPLE_RATE, or wait for the warehouse load)",
            "command": "trainserve params get",
        }
    elif total_requests == 0 and report["recommendation"]["action"] == "keep collecting":
        report["recommendation"] = {
            "action": "keep collecting",
            "reason": f"no predictions logged in the window yet ({reason})",
            "command": "trainserve report ab",
        }
    return report


def srm_unexpected(srm: Mapping[str, Any]) -> str | None:
    """The traffic variants at 0% received in the window, as text ("v2 got 12 users"); None if none did."""
    unexpected = srm.get("unexpected") or {}
    if not unexpected:
        return None
    unit = srm.get("unit", "requests")
    return ", ".join(f"{v} got {n:,} {unit}" for v, n in sorted(unexpected.items()))


def nothing_to_compare(variant: str, config: Any = None) -> dict:
    """The recommendation with one variant live (e.g. just after ``traffic promote``): no A/B test runs, so
    more data decides nothing; a challenger comes from approving a newer model version (``config``'s
    ``max_live_variants`` and ``challenger_weight`` say what the approval does)."""
    reason = f"only {variant} is live (one variant): there is nothing to compare"
    if getattr(config, "max_live_variants", None) == 1:
        reason += (
            f"; max_live_variants is 1: an approved newer version replaces {variant} at 100% instead of "
            "joining it as a challenger (set max_live_variants to 2 or more for an A/B test)"
        )
    else:
        weight = getattr(config, "challenger_weight", None)
        reason += (
            f"; to add a challenger, approve a model version newer than {variant} (trainserve models list)"
            + (f": it joins as a challenger at {weight:.0%}" if weight is not None else "")
        )
    return {"action": "nothing to act on", "reason": reason, "command": "trainserve models approve V"}


def recommend(report: Mapping[str, Any], alpha: float, config: Any = None) -> dict:
    """One action for the operator, its reason in one line, and the exact command (``config``: the project's,
    for what approving a version does when only one variant is live)."""
    champion = report["champion"]
    srm = report.get("srm")
    comps = [c for c in report["comparisons"] if c["decision"] != "draining"]
    draining = [c["challenger"] for c in report["comparisons"] if c["decision"] == "draining"]
    if srm and srm["mismatch"]:
        got = srm_unexpected(srm)
        if got:
            what = f"variants at 0% received traffic in the window ({got})"
        else:
            unit = srm.get("unit", "requests")
            what = (
                f"sample ratio mismatch (chi-square on {unit}, p={srm['p_value']:.2g} < {srm['threshold']}): "
                "the observed split differs from the configured weights"
            )
        return {
            "action": "keep collecting",
            "reason": (
                f"{what}; fix the split first (check TARGET_VARIANT, STICKY_ASSIGNMENT, LOG_SAMPLE_RATE), no "
                "decision is trustworthy until then"
            ),
            "command": "trainserve params get",
        }
    if not comps:
        if draining:
            return {
                "action": "nothing to act on",
                "reason": (
                    f"{', '.join(draining)} at 0%: draining (it gets no new traffic), nothing to "
                    f"decide; only {champion} receives traffic"
                ),
                "command": "trainserve endpoint status",
            }
        return nothing_to_compare(champion, config)
    winners = [c for c in comps if c["decision"] == "promote"]
    if winners:
        best = max(winners, key=lambda c: c["difference"])
        return {
            "action": "promote",
            "reason": (
                f"{best['challenger']} beats {champion} by {_pct(best['difference'])} accuracy, sequential "
                f"p={best['p_value_sequential']:.2g} <= {alpha:g}, P(better)={best['prob_better']:.3f}"
            ),
            "command": f"trainserve traffic promote {best['challenger']}",
        }
    losers = [c for c in comps if c["decision"] == "rollback"]
    if losers and len(losers) == len(comps):
        worst = min(losers, key=lambda c: c["difference"])
        return {
            "action": "rollback",
            "reason": (
                f"{worst['challenger']} is worse than {champion} by {_pct(-worst['difference'])} accuracy, "
                f"sequential p={worst['p_value_sequential']:.2g} <= {alpha:g}"
            ),
            "command": "trainserve traffic rollback",
        }
    pending = [c for c in comps if c["decision"] == "keep collecting"]
    c = min(pending, key=lambda c: c["p_value_sequential"])
    more = c["still_needed"][c["challenger"]]
    worse = f"; {', '.join(x['challenger'] for x in losers)} significantly worse" if losers else ""
    return {
        "action": "keep collecting",
        "reason": (
            f"{c['challenger']} vs {champion}: {_pct(c['difference'])}, sequential p={c['p_value_sequential']:.2g} "
            f"> {alpha:g}"
            + (
                f"; about {more:,} more labelled predictions on {c['challenger']} for a fixed-horizon test"
                if more
                else ""
            )
            + worse
        ),
        "command": "trainserve report ab",
    }


# ----------------------------------------------------------------------------------------- target wiring


def warehouse_query_for(target: Any, timeout_s: float = 300.0) -> Any:
    """The ``WarehouseQuery`` of a target: the local DuckDB file, or the Redshift Data API on AWS."""
    from warehouse_query import RedshiftDataQuery

    wh = target.warehouse or {}
    if target.is_local:
        from trainserve.local.monitoring import LocalWarehouseQuery

        if not wh.get("path"):
            raise ValueError("the local cloud reports no warehouse_path")
        return LocalWarehouseQuery(wh["path"])
    missing = [k for k in ("database", "secret_arn") if not wh.get(k)]
    if not (wh.get("workgroup") or wh.get("cluster")):
        missing.insert(0, "workgroup or cluster")
    if missing:
        keys = {
            "workgroup or cluster": "WarehouseWorkgroup/WarehouseCluster",
            "database": "WarehouseDatabase",
            "secret_arn": "WarehouseSecretArn",
        }
        raise ValueError(
            "the deployed stacks do not output the warehouse's "
            + ", ".join(f"{m} ({keys[m]})" for m in missing)
        )
    return RedshiftDataQuery(
        target.client("redshift-data"),
        workgroup=wh.get("workgroup") or None,
        cluster=None if wh.get("workgroup") else wh.get("cluster"),
        database=wh["database"],
        secret_arn=wh["secret_arn"],
        timeout_s=timeout_s,
    )


def fetch_baselines(target: Any, report: Mapping[str, Any]) -> tuple[dict[str, dict], list[str]]:
    """Training baselines of the report's variants (for the plot): variant -> baseline.json; plus problems."""
    import monitor_job

    sm, s3 = target.client("sagemaker"), target.client("s3")
    out: dict[str, dict] = {}
    problems: list[str] = []
    for v in report.get("variants", []):
        version = v.get("model_version")
        if version is None:
            continue
        try:
            arn = monitor_job.package_arn_for(sm, target.names.model_package_group, int(version))
            out[v["variant_name"]] = monitor_job.load_baseline(sm, s3, arn)
        except Exception as exc:  # noqa: BLE001 - the plot is drawn without that baseline
            problems.append(f"no training baseline for {v['variant_name']}: {exc}")
    return out, problems


def write_plot(report: Mapping[str, Any], path: str, baselines: Mapping[str, dict] | None = None) -> None:
    """PNG: accuracy per variant with its interval; score distributions vs the training baseline; traffic share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = baselines or {}
    variants = report.get("variants", [])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    names = [v["variant_name"] for v in variants]
    for i, v in enumerate(variants):
        if v["accuracy"] is None:
            continue
        lo, hi = v["accuracy_ci"]
        ax.errorbar(
            [i],
            [v["accuracy"]],
            yerr=[[max(0.0, v["accuracy"] - lo)], [max(0.0, hi - v["accuracy"])]],
            fmt="o",
            capsize=6,
            color="C0" if v["role"] == "champion" else "C1",
        )
    ax.set_xticks(range(len(names)), [f"{n}\n({v['role']})" for n, v in zip(names, variants, strict=True)])
    ax.set_xlim(-0.5, max(len(names), 1) - 0.5)
    ax.set_title(f"Online accuracy, {100 * (1 - report['settings']['alpha']):.0f}% Wilson interval")
    ax.set_ylabel("accuracy")

    ax = axes[1]
    # CDFs, not densities: training baselines use decile edges, which can be arbitrarily narrow.
    bins = report.get("histogram_bins", 20)
    edges = [i / bins for i in range(bins + 1)]
    for i, (name, counts) in enumerate(sorted(report.get("histograms", {}).items())):
        total = sum(counts) or 1
        cdf, acc = [0.0], 0
        for c in counts:
            acc += c
            cdf.append(acc / total)
        ax.plot(edges, cdf, label=f"{name} live", color=f"C{i}")
        base = baselines.get(name)
        if base:
            be, fr = base["score"]["bin_edges"], base["score"]["fractions"]
            tot = sum(fr) or 1.0
            bcdf, acc_f = [0.0], 0.0
            for f in fr:
                acc_f += f
                bcdf.append(acc_f / tot)
            ax.plot(be, bcdf, label=f"{name} training baseline", color=f"C{i}", linestyle="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Score distribution (cumulative) vs training baseline")
    ax.set_xlabel("score")
    if ax.get_legend_handles_labels()[0]:  # an empty window draws nothing to name
        ax.legend(fontsize=8)

    ax = axes[2]
    for i, name in enumerate(names):
        pts = [
            (datetime.fromisoformat(t["bucket"]), t["share"])
            for t in report.get("traffic", [])
            if t["variant_name"] == name and t["share"] is not None
        ]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", markersize=3, label=name, color=f"C{i}")
        w = variants[i].get("weight")
        if w is not None:
            ax.axhline(w, color=f"C{i}", linestyle=":", linewidth=1)
    times = [datetime.fromisoformat(t["bucket"]) for t in report.get("traffic", [])]
    if times:
        pad = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}[
            (report.get("window") or {}).get("grain", "minute")
        ]
        ax.set_xlim(min(times) - pad, max(times) + pad)
    ax.set_ylim(0, 1)
    ax.set_title("Traffic share over time (dotted: configured weight)")
    if ax.get_legend_handles_labels()[0]:  # an empty window draws nothing to name
        ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=30)
    rec = report.get("recommendation") or {}
    fig.suptitle(
        f"{report['endpoint_name']}: {rec.get('action', '')} — {rec.get('reason', '')}"[:180], fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
