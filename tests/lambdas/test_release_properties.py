"""Property: any sequence of approvals, rejections, registrations, duplicate and stale events, rollbacks and
reconciles (``endpoint sync``), planned and applied to a simulated endpoint, keeps the endpoint valid and
every decision idempotent, and a rolled-back version stays off the endpoint until it is approved again."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from release_planner import (
    APPROVED,
    PENDING,
    REJECTED,
    EndpointState,
    PackageVersion,
    ReleaseEvent,
    ReleaseSettings,
    apply_to_state,
    plan,
    rollback,
    rollback_challengers,
)

OPS = st.one_of(
    st.tuples(st.just("register"), st.just(0)),
    st.tuples(st.just("approve_newest"), st.just(0)),
    st.tuples(st.sampled_from(["approve", "reject"]), st.integers(0, 30)),
    st.tuples(st.just("duplicate"), st.just(0)),
    st.tuples(st.just("stale"), st.integers(0, 30)),
    st.tuples(st.sampled_from(["rollback", "sync"]), st.just(0)),
)


def _run(ops, release_settings: ReleaseSettings) -> None:
    statuses: dict[int, str] = {}
    delivered: list[ReleaseEvent] = []
    rolled_back: set[int] = set()  # rejected by `traffic rollback` and not approved since
    state = EndpointState(exists=False)
    for op, n in ops:
        event: ReleaseEvent | None
        if op == "register":
            v = len(statuses) + 1
            statuses[v] = PENDING
            event = ReleaseEvent(v, PENDING)
        elif op == "approve_newest":  # the common path: a new version is registered, then approved
            v = len(statuses) + 1
            statuses[v] = APPROVED
            event = ReleaseEvent(v, APPROVED)
        elif op in ("approve", "reject"):
            if not statuses:
                continue
            v = sorted(statuses)[n % len(statuses)]
            statuses[v] = APPROVED if op == "approve" else REJECTED
            if op == "approve":
                rolled_back.discard(v)
            event = ReleaseEvent(v, statuses[v])
        elif op == "rollback":  # `traffic rollback`: drain the challengers now, reject them in the registry
            if not state.exists or not rollback_challengers(state):
                continue
            for step in rollback(state, remove=False).steps:
                state = apply_to_state(state, step)
            for v in rollback_challengers(state):
                statuses[v] = REJECTED
                rolled_back.add(v)
                delivered.append(ReleaseEvent(v, REJECTED))
            event = delivered.pop()
        elif op == "sync":
            event = None
        elif op == "duplicate":
            if not delivered:
                continue
            event = delivered[-1]
        else:  # a stale event: an earlier one, delivered again out of order
            if not delivered:
                continue
            event = delivered[n % len(delivered)]
        if event is not None:
            delivered.append(event)
        registry = [PackageVersion(v, f"arn:pkg/{v}", s) for v, s in statuses.items()]

        decision = plan(registry, state, release_settings, event)
        blocked = decision.blocked is not None
        for step in decision.steps:
            state = apply_to_state(state, step)
        # idempotent: the same event again, against the endpoint it produced, changes nothing
        assert not plan(registry, state, release_settings, event).steps

        if not state.exists:
            continue
        weights = {v.version: v.weight for v in state.variants}
        champion = state.champion
        assert champion in weights and state.champion_tag == f"v{champion}"  # exactly one champion
        assert abs(sum(weights.values()) - 1.0) <= 1e-9
        assert all(w >= 0 for w in weights.values()) and weights[champion] > 0
        assert len(weights) <= release_settings.max_live_variants
        for v in weights:  # only approved versions are live (a rejected champion only while blocked)
            assert statuses.get(v) == APPROVED or (blocked and v == champion), (v, statuses, blocked)
        assert all(w > 0 for w in weights.values())  # drained variants are removed, not left at 0%
        assert not rolled_back & set(weights), (rolled_back, weights)  # a rollback lasts


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(OPS, max_size=40), max_live=st.integers(1, 4), share=st.sampled_from([0.1, 0.25, 0.5, 0.6])
)
def test_any_event_sequence_keeps_the_endpoint_valid(ops, max_live, share):
    _run(
        ops,
        ReleaseSettings(
            "proj", "proj-endpoint", "proj-models", challenger_weight=share, max_live_variants=max_live
        ),
    )
