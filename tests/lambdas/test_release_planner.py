"""The release rules (ARCHITECTURE.md "Release semantics") as table tests: pure, no AWS."""

from __future__ import annotations

from dataclasses import replace

import pytest
import release_planner
from release_planner import (
    APPROVED,
    DEPLOYMENT_MARGIN_SECONDS,
    PENDING,
    REJECTED,
    EndpointState,
    LiveVariant,
    PackageVersion,
    PlanError,
    ReleaseBlocked,
    ReleaseEvent,
    ReleaseSettings,
    SettingsError,
    apply_to_state,
    deployment_timeout_seconds,
    deployment_wait_seconds,
    event_pattern,
    plan,
    promote,
    rollback,
    rollback_challengers,
    set_weights,
    version_of,
)

SETTINGS = ReleaseSettings("proj", "proj-endpoint", "proj-models", challenger_weight=0.1, max_live_variants=3)
A, R, P = APPROVED, REJECTED, PENDING


def registry(**statuses: str) -> list[PackageVersion]:
    """registry(v1="Approved", v2="Rejected") -> package versions."""
    return [
        PackageVersion(int(k[1:]), f"arn:aws:sagemaker:us-east-1:1:model-package/proj-models/{k[1:]}", s)
        for k, s in statuses.items()
    ]


def endpoint(
    weights: dict[int, float], champion: int | None = None, status: str = "InService"
) -> EndpointState:
    return EndpointState(
        exists=True,
        status=status,
        variants=tuple(
            LiveVariant(f"v{v}", v, w, w, f"proj-v{v}-abcdef", "ml.m5.large", 1)
            for v, w in sorted(weights.items())
        ),
        champion_tag=f"v{champion}" if champion is not None else None,
    )


NO_ENDPOINT = EndpointState(exists=False)


def final(decision, current):
    state = current
    for step in decision.steps:
        state = apply_to_state(state, step)
    return state


def weights_of(decision) -> dict[int, float]:
    return {v: round(w, 9) for v, w in decision.desired.variants}


# --- Approved -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reg", "current", "event", "action", "expected", "champion"),
    [
        # no endpoint: create with v champion at 100%
        (registry(v1=A), NO_ENDPOINT, (1, A), "create", {1: 1.0}, 1),
        # a burst: v1 and v2 both approved before the first event is handled -> the newest is champion
        (registry(v1=A, v2=A), NO_ENDPOINT, (1, A), "create", {2: 1.0}, 2),
        # new version newer than the champion: challenger at 10% taken from the champion
        (registry(v1=A, v2=A), endpoint({1: 1.0}, 1), (2, A), "update", {1: 0.9, 2: 0.1}, 1),
        # a third version: another challenger, again taken from the champion
        (
            registry(v1=A, v2=A, v3=A),
            endpoint({1: 0.9, 2: 0.1}, 1),
            (3, A),
            "update",
            {1: 0.8, 2: 0.1, 3: 0.1},
            1,
        ),
        # already live: no change
        (registry(v1=A, v2=A), endpoint({1: 0.9, 2: 0.1}, 1), (2, A), "none", {1: 0.9, 2: 0.1}, 1),
        # older than the champion: no change
        (registry(v1=A, v2=A), endpoint({2: 1.0}, 2), (1, A), "none", {2: 1.0}, 2),
        # stale Approved event for a version the registry now says is Rejected: treated as rejected
        (registry(v1=A, v2=R), endpoint({1: 0.9, 2: 0.1}, 1), (2, A), "update", {1: 1.0}, 1),
        # champion with no more than the challenger share: every live variant gives in proportion
        (
            registry(v1=A, v2=A, v3=A),
            endpoint({1: 0.05, 2: 0.95}, 1),
            (3, A),
            "update",
            {1: 0.045, 2: 0.855, 3: 0.1},
            1,
        ),
        # champion with a little more than the share: it gives the whole share
        (
            registry(v1=A, v2=A, v3=A),
            endpoint({1: 0.15, 2: 0.85}, 1),
            (3, A),
            "update",
            {1: 0.05, 2: 0.85, 3: 0.1},
            1,
        ),
    ],
)
def test_approved(reg, current, event, action, expected, champion):
    decision = plan(reg, current, SETTINGS, event)
    assert decision.action == action, decision.reason
    assert weights_of(decision) == expected
    assert decision.desired.champion == champion


def test_no_change_reasons_are_explained():
    live = plan(registry(v1=A, v2=A), endpoint({1: 0.9, 2: 0.1}, 1), SETTINGS, (2, A))
    older = plan(registry(v1=A, v2=A), endpoint({2: 1.0}, 2), SETTINGS, (1, A))
    assert "already live" in live.reason and not live.steps
    assert "older than the champion v2" in older.reason and not older.steps


def test_full_endpoint_drops_the_oldest_challenger():
    settings = ReleaseSettings(
        "proj", "proj-endpoint", "proj-models", challenger_weight=0.1, max_live_variants=2
    )
    decision = plan(registry(v1=A, v2=A, v3=A), endpoint({1: 0.9, 2: 0.1}, 1), settings, (3, A))
    assert weights_of(decision) == {1: 0.9, 3: 0.1}
    assert any("v2 dropped" in c for c in decision.changes)


def test_full_endpoint_does_not_add_a_version_older_than_every_challenger():
    settings = ReleaseSettings("proj", "proj-endpoint", "proj-models", max_live_variants=2)
    decision = plan(registry(v1=A, v2=A, v3=A), endpoint({1: 0.9, 3: 0.1}, 1), settings, (2, A))
    assert decision.action == "none" and weights_of(decision) == {1: 0.9, 3: 0.1}


ONE = ReleaseSettings("proj", "proj-endpoint", "proj-models", max_live_variants=1)


def test_max_live_variants_one_a_newer_approved_version_replaces_the_champion():
    decision = plan(registry(v1=A, v2=A), endpoint({1: 1.0}, 1), ONE, (2, A))
    assert decision.action == "update" and weights_of(decision) == {2: 1.0} and decision.desired.champion == 2
    assert [s.kind for s in decision.steps] == ["deploy"]  # one redeploy, as an instance-type change
    assert (
        "v2 replaces champion v1 at 100%: max_live_variants is 1, so there is no A/B test" in decision.reason
    )
    assert "not added" not in decision.reason
    state = final(decision, endpoint({1: 1.0}, 1))
    assert {v.version: v.weight for v in state.variants} == {2: 1.0} and state.champion_tag == "v2"
    assert not plan(registry(v1=A, v2=A), state, ONE, (2, A)).steps  # the duplicate event changes nothing


def test_max_live_variants_one_reconcile_serves_the_newest_approved_version():
    """``endpoint sync`` (a reconcile) after the approval's event was lost: the newest approved version."""
    decision = plan(registry(v1=A, v2=A, v3=A), endpoint({1: 1.0}, 1), ONE, None)
    assert weights_of(decision) == {3: 1.0} and "v3 replaces champion v1" in decision.reason


@pytest.mark.parametrize("order", [[(2, A), (3, A)], [(3, A), (2, A)], [(2, A), (3, A), (2, A)]])
def test_max_live_variants_one_burst_is_order_proof(order):
    reg, state = registry(v1=A, v2=A, v3=A), endpoint({1: 1.0}, 1)
    for event in order:
        state = final(plan(reg, state, ONE, event), state)
    assert {v.version: v.weight for v in state.variants} == {3: 1.0}


def test_max_live_variants_one_older_approval_and_rejected_champion():
    older = plan(registry(v1=A, v2=A), endpoint({2: 1.0}, 2), ONE, (1, A))
    assert older.action == "none" and "older than the champion v2" in older.reason
    # the champion rejected with only a newer approved version: that one serves (not blocked)
    newer = plan(registry(v1=R, v2=A), endpoint({1: 1.0}, 1), ONE, (1, R))
    assert newer.blocked is None and weights_of(newer) == {2: 1.0}
    # with an older and a newer one: the newest approved version
    both = plan(registry(v1=A, v2=R, v3=A), endpoint({2: 1.0}, 2), ONE, (2, R))
    assert both.blocked is None and weights_of(both) == {3: 1.0}


def test_max_live_variants_lowered_to_one_the_newest_live_version_takes_over():
    decision = plan(registry(v1=A, v2=A), endpoint({1: 0.9, 2: 0.1}, 1), ONE, None)
    assert weights_of(decision) == {2: 1.0} and decision.desired.champion == 2
    assert [s.kind for s in decision.steps] == ["weights", "deploy"]  # traffic moves at once, then v1 goes


def test_lowered_max_live_variants_drops_oldest_challengers():
    settings = ReleaseSettings("proj", "proj-endpoint", "proj-models", max_live_variants=2)
    decision = plan(registry(v1=A, v2=A, v3=A), endpoint({1: 0.8, 2: 0.1, 3: 0.1}, 1), settings, None)
    assert weights_of(decision) == {1: 0.9, 3: 0.1}


def test_challenger_weight_setting_is_used():
    settings = ReleaseSettings("proj", "proj-endpoint", "proj-models", challenger_weight=0.25)
    decision = plan(registry(v1=A, v2=A), endpoint({1: 1.0}, 1), settings, (2, A))
    assert weights_of(decision) == {1: 0.75, 2: 0.25}


def test_adding_a_variant_is_a_deploy_not_a_weights_change():
    decision = plan(registry(v1=A, v2=A), endpoint({1: 1.0}, 1), SETTINGS, (2, A))
    assert [s.kind for s in decision.steps] == ["deploy"]


def test_create_only_on_an_approval():
    decision = plan(registry(v1=A, v2=R), NO_ENDPOINT, SETTINGS, (2, R))
    assert decision.action == "none" and not decision.steps
    assert plan(registry(v1=R), NO_ENDPOINT, SETTINGS, (1, A)).action == "none"  # stale approval
    assert plan([], NO_ENDPOINT, SETTINGS, None).action == "none"


# --- Rejected / Pending ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reg", "current", "event", "expected", "champion"),
    [
        # a live challenger is removed, its weight returns to the champion
        (registry(v1=A, v2=R), endpoint({1: 0.9, 2: 0.1}, 1), (2, R), {1: 1.0}, 1),
        # with two challengers, the others keep their weights
        (registry(v1=A, v2=R, v3=A), endpoint({1: 0.8, 2: 0.1, 3: 0.1}, 1), (2, R), {1: 0.9, 3: 0.1}, 1),
        # a rejected champion: the newest approved older version replaces it, taking its weight
        (registry(v1=A, v2=A, v3=R, v4=A), endpoint({3: 0.9, 4: 0.1}, 3), (3, R), {2: 0.9, 4: 0.1}, 2),
        # the replacement was live as a challenger: it takes the champion's weight on top of its own
        (registry(v1=A, v2=A, v3=R), endpoint({2: 0.1, 3: 0.9}, 3), (3, R), {2: 1.0}, 2),
        # a version reverted to pending while live is no longer approved: removed
        (registry(v1=A, v2=P), endpoint({1: 0.9, 2: 0.1}, 1), (2, P), {1: 1.0}, 1),
        # a live version deleted from the registry is removed too
        (registry(v1=A), endpoint({1: 0.9, 2: 0.1}, 1), None, {1: 1.0}, 1),
    ],
)
def test_rejected(reg, current, event, expected, champion):
    decision = plan(reg, current, SETTINGS, event)
    assert decision.action == "update", decision.reason
    assert weights_of(decision) == expected
    assert decision.desired.champion == champion


def test_rejected_challenger_is_drained_by_weights_before_the_redeploy():
    decision = plan(registry(v1=A, v2=R), endpoint({1: 0.9, 2: 0.1}, 1), SETTINGS, (2, R))
    assert [s.kind for s in decision.steps] == ["weights", "deploy"]
    assert decision.steps[0].endpoint.weights == {1: 1.0, 2: 0.0}
    assert decision.steps[1].endpoint.weights == {1: 1.0}


def test_rejected_champion_without_older_approved_version_blocks_and_changes_nothing():
    decision = plan(registry(v1=R, v2=A), endpoint({1: 0.9, 2: 0.1}, 1), SETTINGS, (1, R))
    assert decision.blocked.startswith("champion v1 is Rejected and no approved version older than it exists")
    assert "promote a live challenger (trainserve traffic promote v2)" in decision.blocked
    assert "BLOCKED" in decision.reason
    assert decision.action == "none" and not decision.steps


def _remedy(reg, state, remedy: str):
    """Apply a remedy the blocked text gives, as the CLI and then the release controller would: the registry
    and the endpoint afterwards."""
    words = remedy.split()
    if words[:3] == ["trainserve", "traffic", "promote"]:
        return reg, final(promote(state, words[3], reg), state)
    assert words[:2] == ["trainserve", "models"] and words[2] in ("approve", "reject"), remedy
    version, status = int(words[3]), A if words[2] == "approve" else R
    reg = [replace(p, status=status) if p.version == version else p for p in reg]
    return reg, final(plan(reg, state, SETTINGS, (version, status)), state)


def _served(state) -> dict[int, float]:
    return {v.version: round(v.weight, 9) for v in state.variants}


@pytest.mark.parametrize(
    ("reg", "weights", "advice", "remedies", "served"),
    [
        # a live approved challenger
        (registry(v1=R, v2=A), {1: 0.9, 2: 0.1}, "(trainserve traffic promote v2)", ["promote v2"], {2: 1.0}),
        # no challenger live, a newer approved version that is not live (dropped to make room, or rolled back
        # and approved again): `traffic promote` deploys it alone
        (registry(v3=R, v4=A), {3: 1.0}, "(trainserve traffic promote v4)", ["promote v4"], {4: 1.0}),
        # older versions that are not approved: approving one makes it the replacement
        (
            registry(v1=P, v2=R, v3=R),
            {3: 1.0},
            "(trainserve models approve N, N one of 1, 2)",
            ["approve 2"],
            {2: 1.0},
        ),
        (
            registry(v1=P, v2=R, v3=R),
            {3: 1.0},
            "(trainserve models approve N, N one of 1, 2)",
            ["approve 1"],
            {1: 1.0},
        ),
        # nothing approved, nothing older: approve the newer version (it joins as a challenger), promote it
        (
            registry(v1=R, v2=P),
            {1: 1.0},
            "approve a newer version (trainserve models approve 2), which joins as a challenger, then promote it",
            ["approve 2", "promote v2"],
            {2: 1.0},
        ),
    ],
)
def test_blocked_champion_advice_names_remedies_that_work(reg, weights, advice, remedies, served):
    state = endpoint(weights, min(weights))
    decision = plan(reg, state, SETTINGS, None)
    assert decision.blocked and advice in decision.blocked, decision.blocked
    for remedy in remedies:
        command = "trainserve traffic" if remedy.startswith("promote") else "trainserve models"
        reg, state = _remedy(reg, state, f"{command} {remedy}")
    assert _served(state) == served
    after = plan(reg, state, SETTINGS, None)
    assert after.blocked is None and not after.steps


def test_promoting_an_older_version_that_is_not_live_is_refused_with_what_works():
    reg, state = registry(v1=A, v2=A, v3=A), endpoint({3: 1.0}, 3)
    with pytest.raises(PlanError, match="reject the newer versions"):
        promote(state, "v1", reg)
    with pytest.raises(PlanError, match="v4 is not live; live variants: v3; and v4 is not in the registry"):
        promote(state, "v4", reg)


def test_blocked_with_nothing_to_approve_says_to_train_a_version():
    decision = plan(registry(v1=R), endpoint({1: 1.0}, 1), SETTINGS, (1, R))
    assert "approve a newer version (train one first), which joins as a challenger, then promote it" in (
        decision.blocked
    )


def test_blocked_champion_still_loses_its_rejected_challengers():
    decision = plan(registry(v1=R, v2=R), endpoint({1: 0.9, 2: 0.1}, 1), SETTINGS, (2, R))
    assert decision.blocked and decision.desired.weights == {1: 1.0} and decision.desired.champion == 1
    assert [s.kind for s in decision.steps] == ["weights", "deploy"]


def test_failed_endpoint_blocks():
    with pytest.raises(ReleaseBlocked, match="Failed"):
        plan(registry(v1=A, v2=A), endpoint({1: 1.0}, 1, status="Failed"), SETTINGS, (2, A))


def test_rejecting_a_version_that_is_not_live_changes_nothing():
    decision = plan(registry(v1=A, v2=A, v3=R), endpoint({1: 0.9, 2: 0.1}, 1), SETTINGS, (3, R))
    assert decision.action == "none" and not decision.steps


def test_pending_event_changes_nothing():
    decision = plan(registry(v1=A, v2=P), endpoint({1: 1.0}, 1), SETTINGS, (2, P))
    assert decision.action == "none" and not decision.steps
    assert plan(registry(v1=P), NO_ENDPOINT, SETTINGS, (1, P)).action == "none"


# --- idempotence and order ------------------------------------------------------------------------------


def test_duplicate_event_after_apply_changes_nothing():
    reg = registry(v1=A, v2=A)
    state = final(plan(reg, endpoint({1: 1.0}, 1), SETTINGS, (2, A)), endpoint({1: 1.0}, 1))
    again = plan(reg, state, SETTINGS, (2, A))
    assert again.action == "none" and not again.steps


@pytest.mark.parametrize(
    "order", [[(1, A), (2, A), (3, A)], [(3, A), (1, A), (2, A)], [(2, A), (3, A), (1, A)]]
)
def test_burst_of_approvals_ends_at_the_same_endpoint(order):
    reg = registry(v1=A, v2=A, v3=A)  # all approved before the first event is handled
    state = NO_ENDPOINT
    for event in order:
        state = final(plan(reg, state, SETTINGS, event), state)
    assert {v.version: v.weight for v in state.variants} == {3: 1.0}


@pytest.mark.parametrize("order", [[(2, A), (3, A)], [(3, A), (2, A)]])
def test_burst_on_a_full_endpoint_is_order_proof(order):
    settings = ReleaseSettings("proj", "proj-endpoint", "proj-models", max_live_variants=2)
    reg = registry(v1=A, v2=A, v3=A)
    state = endpoint({1: 1.0}, 1)
    for event in order:
        state = final(plan(reg, state, settings, event), state)
    assert {v.version: round(v.weight, 9) for v in state.variants} == {1: 0.9, 3: 0.1}


# --- champion -------------------------------------------------------------------------------------------


def test_champion_comes_from_the_tag_not_the_weights():
    state = endpoint({1: 0.3, 2: 0.7}, champion=1)
    assert state.champion == 1
    decision = plan(registry(v1=A, v2=A, v3=A), state, SETTINGS, (3, A))
    assert weights_of(decision) == {1: 0.2, 2: 0.7, 3: 0.1}


def test_champion_without_tag_is_the_heaviest_and_a_tie_goes_to_the_oldest():
    assert endpoint({1: 0.3, 2: 0.7}).champion == 2
    assert endpoint({1: 0.5, 2: 0.5}).champion == 1
    assert endpoint({1: 0.5, 2: 0.5}, champion=9).champion == 1  # a tag naming no live variant is ignored


def test_instance_type_change_redeploys_the_same_variants():
    settings = ReleaseSettings("proj", "proj-endpoint", "proj-models", instance_type="ml.c5.xlarge")
    decision = plan(registry(v1=A, v2=A), endpoint({1: 0.9, 2: 0.1}, 1), settings, None)
    assert [s.kind for s in decision.steps] == ["deploy"] and weights_of(decision) == {1: 0.9, 2: 0.1}
    assert "v1, v2 redeployed on ml.c5.xlarge" in decision.reason
    assert not plan(registry(v1=A, v2=A), endpoint({1: 0.9, 2: 0.1}, 1), SETTINGS, None).steps


def test_weights_are_normalized():
    decision = plan(registry(v1=A, v2=A), endpoint({1: 3.0}, 1), SETTINGS, (2, A))
    assert sum(decision.desired.weights.values()) == pytest.approx(1.0, abs=1e-9)
    assert weights_of(decision) == {1: 0.9, 2: 0.1}


# --- operator actions -----------------------------------------------------------------------------------


def test_set_weights_is_weights_only_and_normalized():
    decision = set_weights(endpoint({1: 0.9, 2: 0.1}, 1), {"v1": 7, "2": 3})
    assert [s.kind for s in decision.steps] == ["weights"]
    assert weights_of(decision) == {1: 0.7, 2: 0.3}
    assert decision.desired.champion == 1


def test_set_weights_with_shares_that_sum_to_one():
    decision = set_weights(endpoint({1: 0.9, 2: 0.1}, 1), {"v1": 0.7, "v2": 0.3})
    assert weights_of(decision) == {1: 0.7, 2: 0.3} and "normalised" not in decision.reason
    three = set_weights(endpoint({1: 0.8, 2: 0.1, 3: 0.1}, 1), {"v1": 0.7, "v2": 0.2, "v3": 0.1})
    assert weights_of(three) == {1: 0.7, 2: 0.2, 3: 0.1}


def test_set_weights_gives_the_variants_not_named_the_rest_in_proportion():
    """v1=0.7 on a 95/5 endpoint means 70% for v1 (not 0.7 beside v2's 0.05, normalized to 93%)."""
    decision = set_weights(endpoint({1: 0.95, 2: 0.05}, 1), {"v1": 0.7})
    assert weights_of(decision) == {1: 0.7, 2: 0.3}
    assert "(v2 not named: the rest, in proportion)" in decision.reason
    three = set_weights(endpoint({1: 0.8, 2: 0.1, 3: 0.1}, 1), {"v2": 0.2})
    assert weights_of(three) == {1: round(0.8 * 0.8 / 0.9, 9), 2: 0.2, 3: round(0.8 * 0.1 / 0.9, 9)}
    drained = set_weights(endpoint({1: 0.9, 2: 0.1}, 1), {"v1": 1})  # the whole traffic: v2 drains
    assert drained.desired.weights == {1: 1.0, 2: 0.0}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"v7": 0.5}, "variant v7 is not live; live variants: v1, v2"),
        ({"banana": 0.5}, "'banana' is not a variant name"),
        ({"v2": -0.1}, "weight of v2 is -0.1; weights must be finite and >= 0"),
        ({"v2": float("nan")}, "weights must be finite"),
        ({"v2": "abc"}, "weight of v2 is 'abc', not a number"),
        ({"v1": 0, "v2": 0}, "all weights are zero"),
        ({"v1": 0, "v2": 1}, "the champion v1 cannot get weight 0"),
        ({}, "no weights given"),
        # shares that do not add up: refused, not normalized
        ({"v1": 0.5, "v2": 0.3}, "the weights v1=0.5, v2=0.3 sum to 0.8, not 1: give shares that sum to 1"),
        ({"v1": 0.7, "v2": 0.7}, "the weights v1=0.7, v2=0.7 sum to 1.4, not 1"),
        # a ratio beside a variant not named
        ({"v1": 2}, "v1=2: a weight above 1 is a ratio, which needs every live variant named (v2 is not)"),
    ],
)
def test_set_weights_rejects_bad_requests(request_, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        set_weights(endpoint({1: 0.9, 2: 0.1}, 1), request_)


@pytest.mark.parametrize(
    ("weights", "request_", "message"),
    [
        (
            {1: 0.8, 2: 0.1, 3: 0.1},
            {"v1": 0.8, "v2": 0.3},
            "the shares v1=0.8, v2=0.3 sum to 1.1, more than 1, with v3 not named",
        ),
        (
            {1: 1.0, 2: 0.0},  # v2 drained
            {"v1": 0.7},
            "the shares v1=0.7 leave 0.3 of the traffic to v2, which now gets none; name every live variant",
        ),
    ],
)
def test_set_weights_with_variants_not_named_refuses_shares_it_cannot_complete(weights, request_, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        set_weights(endpoint(weights, 1), request_)


def test_set_weights_needs_an_endpoint():
    with pytest.raises(PlanError, match="does not exist"):
        set_weights(NO_ENDPOINT, {"v1": 1})


def test_promote_drains_then_removes_the_others():
    decision = promote(endpoint({1: 0.8, 2: 0.1, 3: 0.1}, 1), "2")
    assert [s.kind for s in decision.steps] == ["weights", "deploy"]
    assert decision.steps[0].endpoint.weights == {1: 0.0, 2: 1.0, 3: 0.0}
    assert decision.steps[0].endpoint.champion == 2
    assert decision.desired.weights == {2: 1.0} and decision.desired.champion == 2


def test_promote_checks_the_variant_and_the_registry():
    with pytest.raises(PlanError, match="variant v5 is not live"):
        promote(endpoint({1: 0.9, 2: 0.1}, 1), "v5")
    with pytest.raises(PlanError, match="v2 is Rejected; only an approved version can be promoted"):
        promote(endpoint({1: 0.9, 2: 0.1}, 1), "v2", registry(v1=A, v2=R))
    assert promote(endpoint({1: 1.0}, 1), "v1").action == "none"


def test_rollback_zeroes_challengers_at_once_then_removes_them():
    decision = rollback(endpoint({1: 0.8, 2: 0.1, 3: 0.1}, 1))
    assert [s.kind for s in decision.steps] == ["weights", "deploy"]
    assert decision.steps[0].endpoint.weights == {1: 1.0, 2: 0.0, 3: 0.0}
    assert decision.steps[1].endpoint.weights == {1: 1.0}


def test_rollback_skips_the_weights_step_when_challengers_are_already_at_zero():
    decision = rollback(endpoint({1: 1.0, 2: 0.0}, 1))
    assert [s.kind for s in decision.steps] == ["deploy"]
    assert rollback(endpoint({1: 1.0}, 1)).action == "none"


def test_rollback_drain_only_leaves_the_removal_to_the_registry():
    state = endpoint({1: 0.8, 2: 0.1, 3: 0.1}, 1)
    assert rollback_challengers(state) == (2, 3)
    decision = rollback(state, remove=False)
    assert [s.kind for s in decision.steps] == ["weights"]
    assert decision.desired.weights == {1: 1.0, 2: 0.0, 3: 0.0} and decision.desired.champion == 1
    drained = final(decision, state)
    assert rollback(drained, remove=False).action == "none"  # run again: nothing more to drain
    assert rollback(endpoint({1: 1.0}, 1), remove=False).action == "none"


@pytest.mark.parametrize("max_live", [2, 3])
def test_a_rollback_recorded_as_rejection_survives_redelivery_and_reconcile(max_live):
    """Approved(v2) joins; `traffic rollback` drains v2 and rejects it; then the same Approved(v2) event is
    delivered again (before or after the Rejected(v2) event), and a reconcile (`endpoint sync`) runs."""
    settings = ReleaseSettings("proj", "proj-endpoint", "proj-models", max_live_variants=max_live)
    reg = registry(v1=A, v2=A)
    state = final(plan(reg, endpoint({1: 1.0}, 1), settings, (2, A)), endpoint({1: 1.0}, 1))
    assert weights_of(plan(reg, state, settings, None)) == {1: 0.9, 2: 0.1}
    state = final(rollback(state, remove=False), state)  # drained: v2 at 0%
    reg = registry(v1=A, v2=R)  # ... and rejected
    redelivered = plan(reg, state, settings, (2, A))  # before the Rejected(v2) event was handled
    assert "stale: the registry now says Rejected" in redelivered.reason
    assert weights_of(redelivered) == {1: 1.0}
    state = final(redelivered, state)
    for event in [(2, A), (2, R), None, (1, A)]:  # duplicates, the rejection's own event, a reconcile
        decision = plan(reg, state, settings, event)
        assert not decision.steps and weights_of(decision) == {1: 1.0}, decision.reason
    reapproved = plan(registry(v1=A, v2=A), state, settings, (2, A))  # `models approve 2` re-admits it
    assert weights_of(reapproved) == {1: 0.9, 2: 0.1}


# --- guarded updates: the blue/green timeout ------------------------------------------------------------


@pytest.mark.parametrize(
    ("routing", "wait", "total"),
    [
        ("ALL_AT_ONCE", 0, 0),
        ("ALL_AT_ONCE", 300, 600),  # the shift's wait, then the termination wait
        ("CANARY", 600, 1800),  # canary, the rest, the termination wait
        ("LINEAR", 3600, 18000),  # 4 steps of 25% and the termination wait: 4 x 3600 + 3600
    ],
)
def test_deployment_timeout_exceeds_the_total_waiting(routing, wait, total):
    assert deployment_wait_seconds(routing, wait) == total
    timeout = deployment_timeout_seconds(routing, wait)
    assert timeout == max(600, total + DEPLOYMENT_MARGIN_SECONDS) and total < timeout <= 28800


def test_every_allowed_routing_and_wait_fits_sagemakers_limit():
    for routing in ("ALL_AT_ONCE", "CANARY", "LINEAR"):
        for wait in range(0, 3601, 60):
            ReleaseSettings("proj", "e", "g", traffic_routing=routing, guardrail_wait_seconds=wait)
            assert deployment_timeout_seconds(routing, wait) <= 28800


def test_a_routing_and_wait_over_sagemakers_limit_are_refused_by_name(monkeypatch):
    """With 10% linear steps (SageMaker allows 10..50%) an hour's wait cannot fit in 28800 s."""
    monkeypatch.setitem(release_planner.TRAFFIC_SHIFTS, "LINEAR", 10)
    with pytest.raises(SettingsError) as err:
        ReleaseSettings.from_env({**ENV, "TRAFFIC_ROUTING": "LINEAR", "GUARDRAIL_WAIT_SECONDS": "3600"})
    message = str(err.value)
    assert "TRAFFIC_ROUTING=LINEAR and GUARDRAIL_WAIT_SECONDS=3600 do not fit together" in message
    assert "would wait 39600 s" in message and "28800 s" in message
    assert "GUARDRAIL_WAIT_SECONDS at most 2454 with TRAFFIC_ROUTING=LINEAR" in message
    ReleaseSettings.from_env({**ENV, "TRAFFIC_ROUTING": "LINEAR", "GUARDRAIL_WAIT_SECONDS": "2454"})
    with pytest.raises(SettingsError):
        ReleaseSettings.from_env({**ENV, "TRAFFIC_ROUTING": "LINEAR", "GUARDRAIL_WAIT_SECONDS": "2455"})


# --- settings, names, events ----------------------------------------------------------------------------

ENV = {"PROJECT_NAME": "proj", "ENDPOINT_NAME": "proj-endpoint", "MODEL_PACKAGE_GROUP": "proj-models"}


def test_settings_from_env_round_trip():
    full = ReleaseSettings(
        "proj",
        "proj-endpoint",
        "proj-models",
        challenger_weight=0.2,
        max_live_variants=4,
        data_capture_enabled=True,
        data_capture_s3_uri="s3://b/capture",
        rollback_alarms=("a1", "a2"),
        traffic_routing="CANARY",
        serving_image_uri="1.dkr.ecr/x:1",
    )
    assert ReleaseSettings.from_env(full.as_env()) == full
    assert ReleaseSettings.from_env(ENV).rollback_alarms == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROJECT_NAME": ""}, "PROJECT_NAME is not set"),
        ({"CHALLENGER_WEIGHT": "abc"}, "CHALLENGER_WEIGHT='abc' is not a valid number"),
        ({"CHALLENGER_WEIGHT": "1.0"}, "CHALLENGER_WEIGHT is invalid"),
        ({"MAX_LIVE_VARIANTS": "11"}, "MAX_LIVE_VARIANTS is invalid"),
        ({"DATA_CAPTURE_ENABLED": "yes"}, "DATA_CAPTURE_ENABLED='yes'"),
        ({"DATA_CAPTURE_ENABLED": "true"}, "DATA_CAPTURE_S3_URI is invalid"),
        ({"TRAFFIC_ROUTING": "ROLLING"}, "TRAFFIC_ROUTING is invalid"),
        ({"ROLLBACK_ALARMS": ",".join(f"a{i}" for i in range(11))}, "ROLLBACK_ALARMS is invalid"),
        ({"GUARDRAIL_WAIT_SECONDS": "1.5"}, "GUARDRAIL_WAIT_SECONDS='1.5' is not a valid integer"),
    ],
)
def test_settings_errors_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        ReleaseSettings.from_env({**ENV, **env})


def test_version_of():
    assert version_of("v3") == 3 and version_of("3") == 3 and version_of(3) == 3
    assert version_of("x3") is None and version_of("v0") is None and version_of("0") is None


def test_event_pattern_filters_group_and_status():
    pattern = event_pattern("proj-models")
    assert pattern["source"] == ["aws.sagemaker"]
    assert pattern["detail-type"] == ["SageMaker Model Package State Change"]
    assert pattern["detail"] == {
        "ModelApprovalStatus": ["Approved", "Rejected"],
        "ModelPackageGroupName": ["proj-models"],
    }


def test_release_event_tuple_and_object_are_equivalent():
    reg, state = registry(v1=A, v2=A), endpoint({1: 1.0}, 1)
    assert plan(reg, state, SETTINGS, (2, A)) == plan(reg, state, SETTINGS, ReleaseEvent(2, A))


def _with_inputs(packages: list[PackageVersion], **inputs: str) -> list[PackageVersion]:
    return [replace(p, inputs=inputs.get(f"v{p.version}")) for p in packages]


def test_a_challenger_with_other_inputs_than_the_champion_is_not_added():
    reg = _with_inputs(registry(v1=A, v2=A), v1="1" * 64, v2="2" * 64)
    decision = plan(reg, endpoint({1: 1.0}, champion=1), SETTINGS, (2, A))
    assert decision.action == "none" and decision.steps == () and decision.blocked is None
    (change,) = decision.changes
    assert change.startswith("v2 not added: its input features differ from those of champion v1")
    assert "features_sha256 222222222222... against 111111111111..." in change
    assert "trainserve traffic promote v2" in change


@pytest.mark.parametrize(
    "inputs",
    [
        {"v1": "1" * 64, "v2": "1" * 64},  # the same features
        {"v1": "1" * 64},  # the challenger's are unknown (registered before the metadata)
        {"v2": "2" * 64},  # the champion's are unknown
        {},
    ],
)
def test_a_challenger_is_added_when_its_inputs_match_or_are_unknown(inputs):
    decision = plan(
        _with_inputs(registry(v1=A, v2=A), **inputs), endpoint({1: 1.0}, champion=1), SETTINGS, (2, A)
    )
    assert decision.action == "update" and decision.desired.weights == pytest.approx({1: 0.9, 2: 0.1})


def test_with_one_live_variant_a_newer_version_with_other_inputs_still_replaces_the_champion():
    """max_live_variants 1: there is no A/B test, the new version serves alone (the clients move with it)."""
    single = replace(SETTINGS, max_live_variants=1)
    reg = _with_inputs(registry(v1=A, v2=A), v1="1" * 64, v2="2" * 64)
    decision = plan(reg, endpoint({1: 1.0}, champion=1), single, (2, A))
    assert decision.desired.weights == {2: 1.0}
    assert (
        "note: v2's input features differ from v1's (features_sha256 222222222222... against"
        in decision.reason
    )
    assert "the clients must send v2's features" in decision.reason
    same = _with_inputs(registry(v1=A, v2=A), v1="1" * 64, v2="1" * 64)
    assert "input features differ" not in plan(same, endpoint({1: 1.0}, champion=1), single, (2, A)).reason


def test_promote_serves_a_version_with_other_inputs_alone():
    reg = _with_inputs(registry(v1=A, v2=A), v1="1" * 64, v2="2" * 64)
    decision = promote(endpoint({1: 1.0}, champion=1), "v2", reg)
    assert decision.desired.weights == {2: 1.0} and decision.desired.champion == 2
    assert any(c.startswith("note: v2's input features differ from v1's") for c in decision.changes)
    assert "note: v2's input features differ from v1's" in decision.reason
    live = promote(
        endpoint({1: 0.9, 2: 0.1}, champion=1), "v2", reg
    )  # v2 live (admitted before the metadata)
    assert live.changes[0].startswith("promote v2 to champion at 100%")
    assert live.changes[1].startswith("note: v2's input features differ from v1's")
    unknown = promote(endpoint({1: 1.0}, champion=1), "v2", registry(v1=A, v2=A))
    assert "input features" not in unknown.reason


def test_a_rejected_champion_replaced_by_a_version_with_other_inputs_says_the_clients_must_change():
    reg = _with_inputs(registry(v1=A, v2=R), v1="1" * 64, v2="2" * 64)
    decision = plan(reg, endpoint({2: 1.0}, champion=2), SETTINGS, (2, R))
    assert decision.desired.weights == {1: 1.0}
    assert "champion v2 is Rejected: v1 replaces it" in decision.reason
    assert "note: v1's input features differ from v2's" in decision.reason


def test_a_reconcile_says_why_a_newer_approved_version_with_other_inputs_is_not_served():
    reg = _with_inputs(registry(v1=A, v2=A), v1="1" * 64, v2="2" * 64)
    decision = plan(reg, endpoint({1: 1.0}, champion=1), SETTINGS)
    assert decision.action == "none" and decision.steps == ()
    assert (
        "v2 is approved but not served: its input features differ from those of champion v1"
        in decision.reason
    )
    assert "trainserve traffic promote v2" in decision.reason
    same = _with_inputs(registry(v1=A, v2=A), v1="1" * 64, v2="1" * 64)  # dropped earlier, say
    reconcile = plan(same, endpoint({1: 1.0}, champion=1), SETTINGS)
    assert reconcile.action == "none" and reconcile.steps == ()
    assert "input features" not in reconcile.reason


def test_a_reconcile_names_a_newer_approved_version_dropped_earlier_and_how_to_add_it_again():
    """v3 made room by dropping v2, then v3 was rejected: v2 is approved and not served, and a reconcile
    (``endpoint sync``) does not add it back; it says so, and the remedy it gives works."""
    reg, state = registry(v1=A, v2=A, v3=R), endpoint({1: 1.0}, champion=1)
    decision = plan(reg, state, SETTINGS)
    assert decision.action == "none" and decision.steps == ()
    (change,) = decision.changes
    assert change.startswith("v2 is approved but not served: a reconcile adds no challenger")
    assert "trainserve models approve 2, which applies its approval again" in change
    assert "trainserve traffic promote v2" in change
    reg, state = _remedy(reg, state, "trainserve models approve 2")  # as the CLI applies it (no event)
    assert _served(state) == {1: 0.9, 2: 0.1}
    assert plan(reg, state, SETTINGS).changes == ()


def test_a_blocked_champion_names_a_newer_version_with_other_inputs_as_one_to_serve_alone():
    """Approved, it would not join as a challenger (``_admit``): the remedy is to approve it, then promote it,
    and the clients must change; following the advice ends the block."""
    reg = _with_inputs(registry(v1=R, v2=P), v1="1" * 64, v2="2" * 64)
    state = endpoint({1: 1.0}, 1)
    blocked = plan(reg, state, SETTINGS, None).blocked
    assert blocked and "which joins as a challenger" not in blocked, blocked
    assert (
        "approve a newer version trained on other input features, then promote it to serve alone "
        "(trainserve models approve 2, then trainserve traffic promote v2: it cannot join as a challenger; "
        "the clients must then send its features)"
    ) in blocked
    reg, state = _remedy(reg, state, "trainserve models approve 2")
    assert _served(state) == {1: 1.0}  # not added beside v1
    reg, state = _remedy(reg, state, "trainserve traffic promote v2")
    assert _served(state) == {2: 1.0}
    assert plan(reg, state, SETTINGS, None).blocked is None


def test_a_blocked_champion_separates_newer_versions_that_can_join_from_those_that_cannot():
    reg = _with_inputs(registry(v1=R, v2=P, v3=P), v1="1" * 64, v2="1" * 64, v3="3" * 64)
    blocked = plan(reg, endpoint({1: 1.0}, 1), SETTINGS, None).blocked
    assert "approve a newer version (trainserve models approve 2), which joins as a challenger" in blocked
    assert "(trainserve models approve 3, then trainserve traffic promote v3: it cannot join" in blocked


@pytest.mark.parametrize(
    ("reg", "weights", "remedy"),
    [
        # an approved version that is not live, promoted to serve alone
        (
            _with_inputs(registry(v3=R, v4=A), v3="3" * 64, v4="4" * 64),
            {3: 1.0},
            "(trainserve traffic promote v4; v4 takes other input features than v3: the clients must then "
            "send its features)",
        ),
        # an older version that, approved, replaces the champion
        (
            _with_inputs(registry(v1=P, v2=R), v1="1" * 64, v2="2" * 64),
            {2: 1.0},
            "(trainserve models approve 1; v1 takes other input features than v2: the clients must then send "
            "its features)",
        ),
    ],
)
def test_a_blocked_champion_says_when_a_remedy_changes_the_input_features(reg, weights, remedy):
    blocked = plan(reg, endpoint(weights, min(weights)), SETTINGS, None).blocked
    assert blocked and remedy in blocked, blocked
    same = [replace(p, inputs="1" * 64) for p in reg]
    assert "other input features" not in plan(same, endpoint(weights, min(weights)), SETTINGS, None).blocked


def test_a_reconcile_does_not_advise_approving_again_a_version_its_approval_would_not_add():
    """Right after v3 made room by dropping v2, the endpoint is full with a newer challenger: approving v2
    again would not add it, so the note says why instead (and the remedy that does work)."""
    two = replace(SETTINGS, max_live_variants=2)
    reg, state = registry(v1=A, v2=A, v3=A), endpoint({1: 0.9, 3: 0.1}, champion=1)
    (change,) = plan(reg, state, two).changes
    assert change == (
        "v2 is approved but not served, and approving it again would not add it: the endpoint is full and "
        "every live challenger is newer (to serve it alone: trainserve traffic promote v2)"
    )
    assert not plan(reg, state, two, (2, A)).steps  # indeed
    assert _served(_remedy(reg, state, "trainserve traffic promote v2")[1]) == {2: 1.0}


def test_set_weights_refuses_a_champion_share_that_rounding_would_take_to_zero():
    state = endpoint({1: 0.95, 2: 0.05}, 1)
    for request_ in ({"v2": "0.9999999999999"}, {"v1": "1e-13", "v2": "1"}):
        with pytest.raises(PlanError, match="the champion v1 cannot get weight 0"):
            set_weights(state, request_)


def test_set_weights_refusals_show_the_weights_as_given_and_the_exact_total():
    state = endpoint({1: 0.9, 2: 0.1}, 1)
    with pytest.raises(PlanError, match=r"the weights v1=0\.700002, v2=0\.3 sum to 1\.000002, not 1"):
        set_weights(state, {"v1": "0.700002", "v2": "0.3"})
    with pytest.raises(PlanError, match=r"the weights v1=0\.69999, v2=0\.3 sum to 0\.99999, not 1"):
        set_weights(state, {"v1": "0.69999", "v2": "0.3"})
