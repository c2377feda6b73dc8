"""What the endpoint should look like: the release rules as pure functions (no AWS in here).

The release controller and the CLI's ``traffic`` commands both call these functions; the AWS side
(reading the registry and the endpoint, applying a ``Decision``) is in ``sagemaker_adapter``.

Rules (ARCHITECTURE.md, "Release semantics"), and the choices made where it is silent:

- The desired endpoint is computed from the REGISTRY's current statuses and the current endpoint, never
  from the event alone: the event only says which version to consider adding, and its claimed status is
  ignored (a stale ``Approved`` event for a version that is now ``Rejected`` is handled as a rejection).
  Duplicate events, stale events and bursts therefore converge on the same endpoint.
- Every live version that is no longer ``Approved`` in the registry (rejected, reverted to pending, or
  deleted) is removed. A removed challenger's weight goes to the champion. A removed champion is replaced
  by the newest approved version older than it (live or not); the replacement takes the old champion's
  weight (plus its own, if it was already live as a challenger); the other challengers keep theirs. With
  no such version the champion keeps serving (rejected challengers still leave, a newly approved version
  may still join) and the decision is ``blocked``: the handler applies it, then raises ``ReleaseBlocked``
  for the operator. The blocked text lists only remedies that work on that registry and endpoint
  (promote a live challenger or an approved version that is not live, approve an older version, or approve
  a newer one and promote it). A newer approved version is never made champion without a person: it has
  not been compared with the champion (with ``max_live_variants == 1``, below, there is no comparison to
  wait for).
- ``Approved(v)`` with no endpoint: the endpoint is created with the NEWEST approved version as champion at
  100% (v itself, unless a newer version is already approved too: the same endpoint whatever the order in
  which a burst of approvals arrives).
- ``Approved(v)`` with an endpoint: when v is approved, not live, and newer than the champion, v is added
  as a challenger at ``challenger_weight``, taken from the champion. If the champion has no more than that
  share (after manual weights, or with large shares and several challengers), every live variant gives in
  proportion instead, so that no variant drops to 0%. When the endpoint already serves
  ``max_live_variants`` variants, the newest ``max_live_variants - 1`` challengers among the live ones and
  v are kept: the oldest challenger is dropped (its weight goes to the champion), or v is not added if it
  is the oldest. Nor is v added when its input features (the ``features_sha256`` registry metadata: the
  names, in order) differ from the champion's: the proxy validates a request against one feature list, so
  the two could not serve the same requests (rows as lists would even be read in another order). The
  reason names the remedy (``trainserve traffic promote v``: it then serves alone). Packages without the
  metadata (registered before training wrote it) are admitted as before. A new champion that serves alone
  (a rejected champion's replacement, ``max_live_variants == 1``, a promote) may have other inputs than the
  old one: that change is made, with a note that the clients must send the new features.
- ``max_live_variants == 1``: there is no A/B test. The endpoint serves the NEWEST approved version alone:
  a newer approved version replaces the champion at 100% in one redeploy (a ``deploy`` step, the path an
  instance-type change takes; SageMaker applies the deployment guardrails only when the variant names
  stay, so this one is its default blue/green, all at once), whichever event (or a reconcile) finds it. A
  rejected champion is replaced by the newest approved version, older or newer.
- A version already live, or older than the champion, changes nothing (the reason says so). With
  ``max_live_variants >= 2`` only the event's version can join (a reconcile adds nothing): approved versions
  that were dropped to make room stay out, except that a late duplicate ``Approved(v)`` for such a v adds
  it again (the registry still says Approved; reject v to keep it out for good). Versions rolled back with
  ``trainserve traffic rollback`` are rejected in the registry by that command, so they stay out until
  someone approves them again.
- The champion is stored explicitly in the endpoint tag ``trainserve:champion`` (e.g. ``v3``): a weights
  split never changes who is champion, only ``promote`` (or a champion rejection) does. When the tag is
  missing or names a variant that is not live, the champion is the variant with the largest weight, a tie
  going to the OLDEST version (a challenger that only ties the champion has not been promoted).
- A live variant on another instance type than ``INSTANCE_TYPE`` is redeployed (same variant names, so
  with blue/green deployment guardrails); instance COUNTS are not compared (autoscaling may own them).
- Weights are floats that sum to 1 (SageMaker weights are relative). The champion takes the rounding
  residue so that the sum is exact to 1e-9.
- Guarded updates: the blue/green deployment's ``MaximumExecutionTimeoutInSeconds`` must exceed its total
  waiting (one ``WaitIntervalInSeconds`` per traffic shift plus ``TerminationWaitInSeconds``) and be at most
  28800 s; ``deployment_timeout_seconds`` computes it and ``ReleaseSettings`` refuses a routing and wait
  that cannot fit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

APPROVED = "Approved"
REJECTED = "Rejected"
PENDING = "PendingManualApproval"
STATUSES = (APPROVED, REJECTED, PENDING)

CHAMPION_TAG = "trainserve:champion"
TRAFFIC_ROUTING = ("ALL_AT_ONCE", "CANARY", "LINEAR")
MAX_ROLLBACK_ALARMS = 10  # SageMaker's AutoRollbackConfiguration accepts 1..10 alarms
# Blue/green traffic routing of guarded updates (stacks/config.py repeats these numbers for its synth-time
# check: stacks never import lambdas; a test keeps the two in step).
CANARY_PERCENT = 10  # CANARY: share of the new fleet's capacity that gets traffic first
LINEAR_STEP_PERCENT = 25  # LINEAR: capacity shifted per step (SageMaker allows 10..50)
# Traffic shifts of one guarded update, each followed by WaitIntervalInSeconds.
TRAFFIC_SHIFTS = {"ALL_AT_ONCE": 1, "CANARY": 2, "LINEAR": -(-100 // LINEAR_STEP_PERCENT)}
# Added to the waiting for MaximumExecutionTimeoutInSeconds: bringing up and health-checking the new fleet.
DEPLOYMENT_MARGIN_SECONDS = 1800
DEPLOYMENT_TIMEOUT_MIN_SECONDS = 600  # SageMaker's range of MaximumExecutionTimeoutInSeconds: 600..28800
DEPLOYMENT_TIMEOUT_MAX_SECONDS = 28800
EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"
EVENT_PATTERN_FILE = Path(__file__).with_name("event_pattern.json")

_VARIANT = re.compile(r"^v(\d+)$")
_TOLERANCE = 1e-9


# SageMaker instance families with local (NVMe) instance storage: SageMaker encrypts it with a hardware key
# on the instance and refuses a KmsKeyId for an endpoint config using one (CreateEndpointConfig's KmsKeyId)
LOCAL_STORAGE_FAMILIES = frozenset(
    {
        "m5d",
        "c5d",
        "r5d",
        "m6id",
        "c6id",
        "r6id",
        "g4dn",
        "g5",
        "g6",
        "g6e",
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "trn1",
        "trn1n",
        "inf2",
    }
)


def has_local_storage(instance_type: str) -> bool:
    """Whether ``instance_type`` (``ml.<family>.<size>``) has local instance storage (see above)."""
    parts = instance_type.split(".")
    return len(parts) == 3 and parts[1] in LOCAL_STORAGE_FAMILIES


# the registry metadata key of a package's input features (the SHA-256 of their names, in order, as compact
# JSON: ``training/evaluate.py`` writes it); the planner admits a challenger only with the champion's inputs
FEATURES_DIGEST_KEY = "features_sha256"


class PlanError(ValueError):
    """An operator request the rules refuse (unknown variant, negative weight...); nothing was changed."""


class ReleaseBlocked(RuntimeError):
    """The endpoint cannot reach a valid state without a person (e.g. the champion was rejected and no
    older approved version exists). The endpoint keeps serving as it is; retrying does not help."""


class SettingsError(ValueError):
    """An environment variable of the release controller is missing or wrong; the message names it."""


def deployment_wait_seconds(traffic_routing: str, wait_seconds: int) -> int:
    """The total waiting of one guarded (blue/green) update: ``wait_seconds`` after each traffic shift
    (``WaitIntervalInSeconds``) and once more before the old fleet is terminated
    (``TerminationWaitInSeconds``)."""
    return wait_seconds * (TRAFFIC_SHIFTS[traffic_routing] + 1)


def deployment_timeout_seconds(traffic_routing: str, wait_seconds: int) -> int:
    """``MaximumExecutionTimeoutInSeconds`` of a guarded update: its total waiting plus
    ``DEPLOYMENT_MARGIN_SECONDS``, at least 600. It can exceed SageMaker's 28800 s maximum: callers refuse
    such a configuration (``ReleaseSettings`` does) rather than cut the guardrails' own waiting short."""
    return max(
        DEPLOYMENT_TIMEOUT_MIN_SECONDS,
        deployment_wait_seconds(traffic_routing, wait_seconds) + DEPLOYMENT_MARGIN_SECONDS,
    )


# ----------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseSettings:
    """The release controller's settings (its Lambda environment; the CLI builds the same object)."""

    project_name: str
    endpoint_name: str
    model_package_group: str
    challenger_weight: float = 0.1
    max_live_variants: int = 2
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    data_capture_enabled: bool = False
    data_capture_percent: int = 20
    data_capture_s3_uri: str = ""
    model_execution_role_arn: str = ""
    rollback_alarms: tuple[str, ...] = ()
    traffic_routing: str = "ALL_AT_ONCE"
    guardrail_wait_seconds: int = 300
    serving_image_uri: str = ""
    kms_key_arn: str = ""  # the project key: the endpoint's ML storage volumes and its captured data

    def __post_init__(self) -> None:
        checks = (
            ("PROJECT_NAME", bool(self.project_name), "a non-empty name"),
            ("ENDPOINT_NAME", bool(self.endpoint_name), "a non-empty name"),
            ("MODEL_PACKAGE_GROUP", bool(self.model_package_group), "a non-empty name"),
            ("CHALLENGER_WEIGHT", 0 < self.challenger_weight < 1, "a number strictly between 0 and 1"),
            ("MAX_LIVE_VARIANTS", 1 <= self.max_live_variants <= 10, "an integer in 1..10"),
            ("INSTANCE_TYPE", self.instance_type.startswith("ml."), "a SageMaker instance type (ml.*)"),
            ("INSTANCE_COUNT", 1 <= self.instance_count <= 100, "an integer in 1..100"),
            ("DATA_CAPTURE_PERCENT", 1 <= self.data_capture_percent <= 100, "an integer in 1..100"),
            (
                "DATA_CAPTURE_S3_URI",
                not self.data_capture_enabled or self.data_capture_s3_uri.startswith("s3://"),
                "an s3:// URI when DATA_CAPTURE_ENABLED is true",
            ),
            ("ROLLBACK_ALARMS", len(self.rollback_alarms) <= MAX_ROLLBACK_ALARMS, "at most 10 alarm names"),
            ("TRAFFIC_ROUTING", self.traffic_routing in TRAFFIC_ROUTING, " | ".join(TRAFFIC_ROUTING)),
            ("GUARDRAIL_WAIT_SECONDS", 0 <= self.guardrail_wait_seconds <= 3600, "an integer in 0..3600"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise SettingsError(f"environment variable {name} is invalid; allowed: {allowed}")
        timeout = deployment_timeout_seconds(self.traffic_routing, self.guardrail_wait_seconds)
        if timeout > DEPLOYMENT_TIMEOUT_MAX_SECONDS:
            shifts = TRAFFIC_SHIFTS[self.traffic_routing]
            most = (DEPLOYMENT_TIMEOUT_MAX_SECONDS - DEPLOYMENT_MARGIN_SECONDS) // (shifts + 1)
            raise SettingsError(
                f"environment variables TRAFFIC_ROUTING={self.traffic_routing} and "
                f"GUARDRAIL_WAIT_SECONDS={self.guardrail_wait_seconds} do not fit together: a guarded update "
                f"would wait {deployment_wait_seconds(self.traffic_routing, self.guardrail_wait_seconds)} s "
                f"({shifts} traffic shifts and the final wait) plus {DEPLOYMENT_MARGIN_SECONDS} s for the new "
                f"fleet, more than SageMaker's {DEPLOYMENT_TIMEOUT_MAX_SECONDS} s deployment limit; allowed: "
                f"GUARDRAIL_WAIT_SECONDS at most {most} with TRAFFIC_ROUTING={self.traffic_routing}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReleaseSettings:
        """Parse the Lambda environment (exact variable names; see the module docstring of the handler)."""

        def text(name: str, default: str | None = None) -> str:
            value = env.get(name)
            if value is None or value.strip() == "":
                if default is None:
                    raise SettingsError(f"environment variable {name} is not set")
                return default
            return value.strip()

        def number(name: str, default: str, kind: type) -> Any:
            raw = text(name, default)
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(
                    f"environment variable {name}={raw!r} is not a valid {'integer' if kind is int else 'number'}"
                ) from None
            if kind is float and not math.isfinite(value):
                raise SettingsError(f"environment variable {name}={raw!r} is not a finite number")
            return value

        capture = text("DATA_CAPTURE_ENABLED", "false").lower()
        if capture not in ("true", "false"):
            raise SettingsError(
                f"environment variable DATA_CAPTURE_ENABLED={capture!r}; allowed: true | false"
            )
        alarms = tuple(a.strip() for a in env.get("ROLLBACK_ALARMS", "").split(",") if a.strip())
        return cls(
            project_name=text("PROJECT_NAME"),
            endpoint_name=text("ENDPOINT_NAME"),
            model_package_group=text("MODEL_PACKAGE_GROUP"),
            challenger_weight=number("CHALLENGER_WEIGHT", "0.1", float),
            max_live_variants=number("MAX_LIVE_VARIANTS", "2", int),
            instance_type=text("INSTANCE_TYPE", "ml.m5.large"),
            instance_count=number("INSTANCE_COUNT", "1", int),
            data_capture_enabled=capture == "true",
            data_capture_percent=number("DATA_CAPTURE_PERCENT", "20", int),
            data_capture_s3_uri=text("DATA_CAPTURE_S3_URI", ""),
            model_execution_role_arn=text("MODEL_EXECUTION_ROLE_ARN", ""),
            rollback_alarms=alarms,
            traffic_routing=text("TRAFFIC_ROUTING", "ALL_AT_ONCE").upper(),
            guardrail_wait_seconds=number("GUARDRAIL_WAIT_SECONDS", "300", int),
            serving_image_uri=text("SERVING_IMAGE_URI", ""),
            kms_key_arn=text("KMS_KEY_ARN", ""),
        )

    def as_env(self) -> dict[str, str]:
        """The inverse of ``from_env`` (what a stack or the local cloud sets on the function)."""
        return {
            "PROJECT_NAME": self.project_name,
            "ENDPOINT_NAME": self.endpoint_name,
            "MODEL_PACKAGE_GROUP": self.model_package_group,
            "CHALLENGER_WEIGHT": repr(float(self.challenger_weight)),
            "MAX_LIVE_VARIANTS": str(self.max_live_variants),
            "INSTANCE_TYPE": self.instance_type,
            "INSTANCE_COUNT": str(self.instance_count),
            "DATA_CAPTURE_ENABLED": "true" if self.data_capture_enabled else "false",
            "DATA_CAPTURE_PERCENT": str(self.data_capture_percent),
            "DATA_CAPTURE_S3_URI": self.data_capture_s3_uri,
            "MODEL_EXECUTION_ROLE_ARN": self.model_execution_role_arn,
            "ROLLBACK_ALARMS": ",".join(self.rollback_alarms),
            "TRAFFIC_ROUTING": self.traffic_routing,
            "GUARDRAIL_WAIT_SECONDS": str(self.guardrail_wait_seconds),
            "SERVING_IMAGE_URI": self.serving_image_uri,
            "KMS_KEY_ARN": self.kms_key_arn,
        }


# ----------------------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageVersion:
    """One version of the model package group, with its CURRENT approval status."""

    version: int
    arn: str
    status: str
    created: Any = None
    # the ``features_sha256`` metadata (the model's input features, in order): None when not read, or for a
    # package registered before training wrote it
    inputs: str | None = None


@dataclass(frozen=True)
class LiveVariant:
    """A production variant of the endpoint (``weight`` is the variant's desired, else current, weight)."""

    name: str
    version: int
    weight: float
    current_weight: float | None = None
    model_name: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None


@dataclass(frozen=True)
class EndpointState:
    exists: bool
    status: str | None = None
    variants: tuple[LiveVariant, ...] = ()
    champion_tag: str | None = None  # the value of the trainserve:champion tag, if any
    config_name: str | None = None

    @property
    def weights(self) -> dict[int, float]:
        """Live versions -> weights normalized to sum 1 (all-zero weights: the champion gets 1)."""
        raw = {v.version: max(0.0, float(v.weight)) for v in self.variants}
        total = sum(raw.values())
        if total <= 0:
            champion = self._champion_from(raw, ignore_weights=True)
            return {v: (1.0 if v == champion else 0.0) for v in raw}
        return {v: w / total for v, w in raw.items()}

    @property
    def champion(self) -> int | None:
        """The champion's version: the tag if it names a live variant, else the heaviest (tie: oldest)."""
        if not self.variants:
            return None
        return self._champion_from({v.version: float(v.weight) for v in self.variants})

    def _champion_from(self, raw: dict[int, float], ignore_weights: bool = False) -> int:
        tagged = version_of(self.champion_tag) if self.champion_tag else None
        if tagged is not None and tagged in raw:
            return tagged
        if ignore_weights:
            return min(raw)
        return min(raw, key=lambda v: (-raw[v], v))

    def variant(self, version: int) -> LiveVariant | None:
        return next((v for v in self.variants if v.version == version), None)


@dataclass(frozen=True)
class DesiredEndpoint:
    """The endpoint to reach: (version, weight) pairs sorted by version, weights summing to 1."""

    variants: tuple[tuple[int, float], ...]
    champion: int

    @property
    def weights(self) -> dict[int, float]:
        return dict(self.variants)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(v for v, _ in self.variants)

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {"variant": variant_name(v), "version": v, "weight": w, "champion": v == self.champion}
            for v, w in self.variants
        ]


@dataclass(frozen=True)
class Step:
    """One change to the endpoint: ``create`` it, ``deploy`` a new endpoint config, or change ``weights`` only
    (``UpdateEndpointWeightsAndCapacities``: live variants only, no redeploy)."""

    kind: str
    endpoint: DesiredEndpoint


@dataclass(frozen=True)
class Decision:
    """What to do. ``action`` is ``none``, ``create`` or ``update``; ``steps`` run in order."""

    action: str
    reason: str
    desired: DesiredEndpoint | None = None
    steps: tuple[Step, ...] = ()
    changes: tuple[str, ...] = field(default=())
    blocked: str | None = None  # set when a person must act; the steps are still safe to apply

    @property
    def changed(self) -> bool:
        return bool(self.steps)


@dataclass(frozen=True)
class ReleaseEvent:
    """The part of a model package state change event the controller uses."""

    version: int
    status: str
    arn: str | None = None


def variant_name(version: int) -> str:
    return f"v{version}"


def version_of(name: str | int) -> int | None:
    """``v3``, ``3`` or ``"3"`` -> 3; anything else -> None."""
    if isinstance(name, int) and not isinstance(name, bool):
        return name if name > 0 else None
    text = str(name).strip()
    m = _VARIANT.match(text)
    if m:
        return int(m.group(1)) or None
    return int(text) if text.isdigit() and int(text) > 0 else None


def event_pattern(model_package_group: str) -> dict[str, Any]:
    """The EventBridge pattern of the release rule (``event_pattern.json``) for one model package group."""
    pattern = json.loads(EVENT_PATTERN_FILE.read_text())
    pattern["detail"]["ModelPackageGroupName"] = [model_package_group]
    return pattern


# ----------------------------------------------------------------------------------------------------------
# The release rules
# ----------------------------------------------------------------------------------------------------------

_SHARE_TOLERANCE = 1e-6  # how far shares a person gives may sum from 1 (float rounding: 0.7 + 0.2 + 0.1)
BLOCKING_STATUSES = ("Failed", "OutOfService", "Deleting")


def plan(
    registry: Iterable[PackageVersion],
    current: EndpointState,
    settings: ReleaseSettings,
    event: ReleaseEvent | tuple[int, str] | None = None,
) -> Decision:
    """The decision for ``event`` (None: reconcile only) given the registry and the current endpoint.

    ``Decision.blocked`` says when a person must act (the champion was rejected and no older approved
    version exists). Raises ``ReleaseBlocked`` when the endpoint cannot be changed at all (Failed, ...).
    """
    if isinstance(event, tuple):
        event = ReleaseEvent(version=int(event[0]), status=str(event[1]))
    status = {p.version: p.status for p in registry}
    approved = sorted(v for v, s in status.items() if s == APPROVED)
    about = _event_text(event, status)

    if not current.exists:
        if event is not None and status.get(event.version) != APPROVED:
            return Decision("none", f"{about}; no endpoint exists and only an approval creates one")
        if not approved:
            return Decision("none", f"{about}; no approved version to serve")
        champion = approved[-1]
        desired = DesiredEndpoint(((champion, 1.0),), champion)
        note = f"create the endpoint with {variant_name(champion)} as champion at 100%"
        if event is not None and champion != event.version:
            note += f" (the newest approved version; {variant_name(event.version)} is older)"
        return Decision("create", f"{about}; {note}", desired, (Step("create", desired),), (note,))

    if current.status in BLOCKING_STATUSES:
        raise ReleaseBlocked(
            f"endpoint is {current.status}; it cannot be updated (delete it and re-approve a version, or fix it)"
        )
    if not current.variants:
        raise ReleaseBlocked("endpoint has no production variants; delete it and re-approve a version")

    weights = current.weights
    champion = current._champion_from(weights)  # variants exist (checked above): never None
    inputs = {p.version: p.inputs for p in registry if p.inputs}
    changes: list[str] = []
    blocked: str | None = None
    single = settings.max_live_variants == 1  # no A/B: the newest approved version serves alone

    # 1. Versions no longer approved leave; a removed champion is replaced by the newest older approved one
    #    (with max_live_variants 1: by the newest approved one).
    removed = sorted(v for v in weights if status.get(v) != APPROVED)
    if champion in removed:
        candidates = approved if single else [v for v in approved if v < champion]
        if not candidates:
            blocked = _blocked(champion, status, weights, inputs)
        else:
            replacement = candidates[-1]
            freed = weights.pop(champion)
            weights[replacement] = weights.get(replacement, 0.0) + freed
            changes.append(
                f"champion {variant_name(champion)} is {status.get(champion, 'gone')}: "
                f"{variant_name(replacement)} replaces it"
            )
            changes.extend(_inputs_note(replacement, champion, inputs))
            champion = replacement
    for v in removed:
        if v in weights and v != champion:
            weights[champion] += weights.pop(v)
            changes.append(
                f"challenger {variant_name(v)} is {status.get(v, 'gone')}: removed, its weight to the champion"
            )

    # 2. max_live_variants 1: a newer approved version replaces the champion (there is nothing to compare).
    took_over: int | None = None
    if single and approved and approved[-1] > champion and blocked is None:
        newest = took_over = approved[-1]
        for v in sorted(x for x in weights if x not in (champion, newest)):
            changes.append(f"challenger {variant_name(v)} dropped: max_live_variants is 1")
        changes.append(
            f"{variant_name(newest)} replaces champion {variant_name(champion)} at 100%: max_live_variants is 1, "
            "so there is no A/B test and the newest approved version serves alone (a redeploy: SageMaker's "
            "blue/green, all at once, since its guardrails need unchanged variant names)"
        )
        changes.extend(_inputs_note(newest, champion, inputs))
        weights, champion = {newest: 1.0}, newest

    # 3. More live variants than allowed (the setting was lowered): drop the oldest challengers.
    for v in sorted(x for x in weights if x != champion)[: max(0, len(weights) - settings.max_live_variants)]:
        weights[champion] += weights.pop(v)
        changes.append(
            f"challenger {variant_name(v)} dropped: more than {settings.max_live_variants} live variants"
        )

    # 4. The event's version joins as a challenger if the rules allow it.
    if event is not None and event.version != took_over:
        changes.extend(_admit(event.version, status, weights, champion, settings, inputs))

    # 4b. A reconcile (no event) names each newer approved version it does not serve, and why: its inputs,
    #     or it was taken off earlier (dropped to make room, drained by hand); a reconcile adds no challenger.
    if event is None:
        for v in (x for x in approved if x > champion and x not in weights):
            name = variant_name(v)
            if _other_inputs(v, champion, inputs):
                changes.append(
                    f"{name} is approved but not served: its input features differ from those of "
                    f"champion {variant_name(champion)} (to serve it: trainserve traffic promote {name}, "
                    "then update the clients)"
                )
            else:
                trial = dict(weights)  # would its approval add it now? (``_admit`` on a copy)
                notes = _admit(v, status, trial, champion, settings, inputs)
                if v in trial:
                    changes.append(
                        f"{name} is approved but not served: a reconcile adds no challenger, only an approval "
                        f"does (to add it: trainserve models approve {v}, which applies its approval again; or "
                        f"to serve it alone: trainserve traffic promote {name})"
                    )
                else:
                    why = notes[0].split(": ", 1)[-1] if notes else "the release rules do not add it"
                    changes.append(
                        f"{name} is approved but not served, and approving it again would not add it: {why} "
                        f"(to serve it alone: trainserve traffic promote {name})"
                    )

    desired = _desired(weights, champion)
    steps = _steps(current, desired)
    # 5. Same variants but another instance type than configured: redeploy (the one case where SageMaker
    #    allows deployment guardrails, which need the same variant names in the old and new config).
    drifted = sorted(
        v.name
        for v in current.variants
        if v.version in desired.weights and v.instance_type and v.instance_type != settings.instance_type
    )
    if drifted and set(current.weights) == set(desired.versions):
        steps = (Step("deploy", desired),)
        changes.append(f"{', '.join(drifted)} redeployed on {settings.instance_type} (instance type changed)")
    tail = f"; BLOCKED: {blocked}" if blocked else ""
    if not steps:
        reason = "; ".join(changes) if changes else "the endpoint already matches the registry"
        return Decision("none", f"{about}; {reason}{tail}", desired, (), tuple(changes), blocked)
    if not changes:
        changes.append("endpoint brought in line with the registry")
    return Decision("update", f"{about}; {'; '.join(changes)}{tail}", desired, steps, tuple(changes), blocked)


def _blocked(
    champion: int, status: Mapping[int, str], weights: Mapping[int, float], inputs: Mapping[int, str]
) -> str:
    """Why a person must act on a rejected champion, and the remedies that work on this registry and endpoint
    (only when no approved version older than the champion exists). A version trained on other input
    features than the champion's is named apart: it cannot join as a challenger (``_admit``), only be
    promoted to serve alone, and either way the clients must then send its features."""
    name = variant_name(champion)

    def command(text: str, versions: list[int], variants: bool = True) -> str:
        labels = [variant_name(v) if variants else str(v) for v in versions]
        if len(labels) == 1:
            return f"{text} {labels[0]}"
        placeholder = "V" if variants else "N"
        return f"{text} {placeholder}, {placeholder} one of {', '.join(labels)}"

    def clients(versions: list[int]) -> str:
        """The warning for remedies that serve one of ``versions`` in the champion's place, if any of them
        takes other input features."""
        other = [variant_name(v) for v in versions if _other_inputs(v, champion, inputs)]
        if not other:
            return ""
        which = other[0] if len(other) == 1 else f"{', '.join(other[:-1])} and {other[-1]}"
        return (
            f"; {which} {'takes' if len(other) == 1 else 'take'} other input features than {name}: "
            "the clients must then send its features"
        )

    live = sorted(v for v in weights if v != champion and status.get(v) == APPROVED)
    not_live = sorted(v for v, s in status.items() if s == APPROVED and v not in weights)
    older = sorted(v for v, s in status.items() if v < champion and s != APPROVED)
    newer = sorted(v for v, s in status.items() if v > champion and s != APPROVED and v not in weights)
    remedies = []
    if live:
        remedies.append(f"promote a live challenger ({command('trainserve traffic promote', live)})")
    if not_live:
        remedies.append(
            "promote an approved version that is not live, deployed alone at 100% "
            f"({command('trainserve traffic promote', not_live)}{clients(not_live)})"
        )
    if older:
        remedies.append(
            "approve an older version, which then replaces it "
            f"({command('trainserve models approve', older, variants=False)}{clients(older)})"
        )
    if not remedies:
        joins = [v for v in newer if not _other_inputs(v, champion, inputs)]
        alone = [v for v in newer if v not in joins]
        if joins or not alone:
            remedies.append(
                "approve a newer version"
                + (
                    f" ({command('trainserve models approve', joins, variants=False)})"
                    if joins
                    else " (train one first)"
                )
                + ", which joins as a challenger, then promote it (trainserve traffic promote V)"
            )
        if alone:
            remedies.append(
                "approve a newer version trained on other input features, then promote it to serve alone "
                f"({command('trainserve models approve', alone, variants=False)}, then trainserve traffic "
                f"promote {variant_name(alone[0]) if len(alone) == 1 else 'vN'}: it cannot join as a "
                "challenger; the clients must then send its features)"
            )
    return (
        f"champion {name} is {status.get(champion, 'deleted from the registry')} and no approved version older "
        f"than it exists; it keeps serving. To replace it: {'; or '.join(remedies)}"
    )


def _other_inputs(version: int, champion: int, inputs: Mapping[int, str]) -> str | None:
    """``features_sha256 <version's>... against <champion's>...`` when both are known and differ, else None."""
    mine, theirs = inputs.get(version), inputs.get(champion)
    if mine and theirs and mine != theirs:
        return f"features_sha256 {mine[:12]}... against {theirs[:12]}..."
    return None


def _inputs_note(new: int, old: int, inputs: Mapping[int, str]) -> list[str]:
    """A note when ``new`` replaces ``old`` as champion and their input features differ (both known): the
    clients must send ``new``'s features from then on (requests in ``old``'s features get a 400)."""
    digests = _other_inputs(new, old, inputs)
    if digests is None:
        return []
    return [
        f"note: {variant_name(new)}'s input features differ from {variant_name(old)}'s ({digests}): from then on the clients must send {variant_name(new)}'s "
        "features (its features.json); requests in the old ones get a 400"
    ]


def _admit(
    version: int,
    status: dict[int, str],
    weights: dict[int, float],
    champion: int,
    settings: ReleaseSettings,
    inputs: Mapping[int, str],
) -> list[str]:
    name = variant_name(version)
    if status.get(version) != APPROVED:
        return []  # a not-approved event version was handled by the removal rule above
    if version in weights:
        return [f"{name} is already live: no change"]
    if version < champion:
        return [f"{name} is older than the champion {variant_name(champion)}: no change"]
    digests = _other_inputs(version, champion, inputs)
    if digests:
        return [
            f"{name} not added: its input features differ from those of champion {variant_name(champion)} "
            f"({digests}), so no request could be valid for both "
            f"and an A/B test would not compare them on the same traffic; to serve it, promote it "
            f"(trainserve traffic promote {name}: it then serves alone) and update the clients"
        ]
    notes = []
    challengers = sorted(v for v in weights if v != champion)
    if len(weights) >= settings.max_live_variants:
        keep = sorted([*challengers, version])[-(settings.max_live_variants - 1) :]
        if version not in keep:
            return [f"{name} not added: the endpoint is full and every live challenger is newer"]
        for v in challengers:
            if v not in keep:
                weights[champion] += weights.pop(v)
                notes.append(f"challenger {variant_name(v)} dropped to make room (oldest challenger)")
    share = settings.challenger_weight
    if weights[champion] > share:
        weights[champion] -= share
        source = "taken from the champion"
    else:  # the champion cannot give the whole share and stay above 0%: every live variant gives in proportion
        for v in weights:
            weights[v] *= 1.0 - share
        source = "taken from every live variant in proportion (the champion had too little)"
    weights[version] = share
    notes.append(f"{name} added as challenger at {share:.0%}, {source}")
    return notes


def _desired(weights: dict[int, float], champion: int) -> DesiredEndpoint:
    """Normalize (sum 1, the champion takes the residue) and freeze."""
    total = sum(max(0.0, w) for w in weights.values())
    norm = {v: (max(0.0, w) / total if total > 0 else 0.0) for v, w in weights.items()}
    for v in norm:
        if v != champion:
            norm[v] = round(norm[v], 12)
    norm[champion] = max(0.0, 1.0 - sum(w for v, w in norm.items() if v != champion))
    return DesiredEndpoint(tuple(sorted(norm.items())), champion)


def _same_weights(a: Mapping[int, float], b: Mapping[int, float]) -> bool:
    return set(a) == set(b) and all(abs(a[v] - b[v]) <= _TOLERANCE for v in a)


def _steps(current: EndpointState, desired: DesiredEndpoint) -> tuple[Step, ...]:
    """The mechanics: weights only when the live set stays; a config deploy when variants come or go.

    When variants only leave, a weights step first drains them (traffic stops in seconds; the redeploy
    that removes them takes minutes with blue/green guardrails).
    """
    live = current.weights
    same_champion = current.champion == desired.champion
    if set(live) == set(desired.versions):
        if _same_weights(live, desired.weights) and same_champion:
            return ()
        return (Step("weights", desired),)
    if set(desired.versions) < set(live):
        drained = _drained(live, desired)
        if _same_weights(live, drained.weights) and same_champion:
            return (Step("deploy", desired),)
        return (Step("weights", drained), Step("deploy", desired))
    return (Step("deploy", desired),)


def _drained(live: Mapping[int, float], desired: DesiredEndpoint) -> DesiredEndpoint:
    """The live variants at ``desired``'s weights, every variant it leaves out at 0% (a drain's weights)."""
    return DesiredEndpoint(
        tuple(sorted({**{v: 0.0 for v in live}, **desired.weights}.items())), desired.champion
    )


def _event_text(event: ReleaseEvent | None, status: Mapping[int, str]) -> str:
    if event is None:
        return "reconcile"
    now = status.get(event.version, "not in the registry")
    text = f"{event.status}({variant_name(event.version)})"
    if now != event.status:
        text += f" [stale: the registry now says {now}]"
    return text


# ----------------------------------------------------------------------------------------------------------
# Operator actions (the CLI's traffic commands)
# ----------------------------------------------------------------------------------------------------------


def _require_endpoint(current: EndpointState) -> int:
    """The live champion's version (PlanError when there is no endpoint to act on)."""
    if not current.exists or not current.variants or current.champion is None:
        raise PlanError(
            "the endpoint does not exist yet: approve a model version first, or, if one is approved, wait for "
            "the release controller to create it (trainserve endpoint status; trainserve endpoint sync applies "
            "it now)"
        )
    return current.champion


def _live_version(current: EndpointState, variant: str | int) -> int:
    version = version_of(variant)
    live = ", ".join(v.name for v in current.variants)
    if version is None:
        raise PlanError(f"{variant!r} is not a variant name (expected v<N> or <N>); live variants: {live}")
    if current.variant(version) is None:
        raise PlanError(f"variant {variant_name(version)} is not live; live variants: {live}")
    return version


def set_weights(current: EndpointState, requested: Mapping[str, float]) -> Decision:
    """Live weights (weights only, no redeploy). The champion does not change (use ``promote``) and cannot
    get 0.

    With every live variant named, the weights are shares that sum to 1, or ratios (any weight above 1, e.g.
    v1=7 v2=3), which are normalized (and the decision says so). With some variants not named, each named
    weight is a share of the traffic (0 to 1, together at most 1), and the variants not named share the rest
    in proportion to their current weights: on v1=0.95 v2=0.05, ``v1=0.7`` gives v2 0.3. Anything else (shares
    that do not sum to 1, a ratio beside variants not named) is refused, naming the weights, rather than
    guessed at."""
    champion = _require_endpoint(current)
    if not requested:
        raise PlanError("no weights given; use VARIANT=WEIGHT, e.g. v1=0.9 v2=0.1")
    weights = current.weights
    named: dict[int, float] = {}
    given_parts: list[str] = []  # the weights as given: a refusal must show the difference it is about
    for name, weight in requested.items():
        version = _live_version(current, name)
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise PlanError(f"weight of {name} is {weight!r}, not a number") from None
        if not math.isfinite(w) or w < 0:
            raise PlanError(f"weight of {name} is {weight!r}; weights must be finite and >= 0")
        named[version] = w
        given_parts.append(f"{variant_name(version)}={str(weight).strip()}")
    given = ", ".join(given_parts)  # and totals below at full precision
    others = sorted(v for v in weights if v not in named)
    rest = ", ".join(variant_name(v) for v in others)
    total = sum(named.values())
    ratios = any(w > 1 for w in named.values())
    if not others:
        if total <= 0:
            raise PlanError("all weights are zero; at least one variant must receive traffic")
        if not ratios and abs(total - 1.0) > _SHARE_TOLERANCE:
            raise PlanError(
                f"the weights {given} sum to {total:.12g}, not 1: give shares that sum to 1, or ratios with "
                "a weight above 1 (v1=7 v2=3 is 70%/30%)"
            )
        weights = dict(named)
    else:
        if ratios:
            raise PlanError(
                f"{given}: a weight above 1 is a ratio, which needs every live variant named "
                f"({rest} {'is' if len(others) == 1 else 'are'} not); with variants not named, each weight "
                "is a share from 0 to 1"
            )
        if total > 1.0 + _SHARE_TOLERANCE:
            raise PlanError(
                f"the shares {given} sum to {total:.12g}, more than 1, with {rest} not named; "
                "shares of the traffic sum to at most 1"
            )
        left = max(0.0, 1.0 - total)
        current_rest = sum(weights[v] for v in others)
        if left > _SHARE_TOLERANCE and current_rest <= 0:
            raise PlanError(
                f"the shares {given} leave {left:.12g} of the traffic to {rest}, which now "
                f"{'gets' if len(others) == 1 else 'get'} none; name every live variant"
            )
        weights = {
            **named,
            **{v: (left * weights[v] / current_rest if current_rest > 0 else 0.0) for v in others},
        }
    desired = _desired(weights, champion)
    # after normalizing and rounding (``_desired`` gives the champion the rest of rounded challengers): a
    # champion at 0, or at a share too small to survive it (1e-13), is refused
    if desired.weights[champion] < _SHARE_TOLERANCE:
        raise PlanError(
            f"the champion {variant_name(champion)} cannot get weight 0 (or a share under {_SHARE_TOLERANCE:g}); "
            "promote another variant first (trainserve traffic promote V)"
        )
    steps = _steps(current, desired)
    text = ", ".join(f"{variant_name(v)}={w:.4g}" for v, w in desired.variants)
    if not others and ratios:  # said, so that the ratios' reading is seen
        text += f" (normalised to sum 1: the weights summed to {total:.4g})"
    elif others:
        text += f" ({rest} not named: the rest, in proportion)"
    if not steps:
        return Decision("none", f"weights already {text}", desired)
    return Decision("update", f"set weights {text}", desired, steps, (f"set weights {text}",))


def promote(
    current: EndpointState, variant: str | int, registry: Iterable[PackageVersion] | None = None
) -> Decision:
    """``variant`` becomes champion at 100%; the others drain at once (weights) and are then removed.

    With ``registry``, an approved version that is not live but newer than the champion can be promoted
    too: it is deployed alone at 100% (one redeploy). An older one cannot: the others would be newer than the
    new champion and approved, so the next approval event would bring them back; to go back to an older
    version, reject the newer ones (the newest approved version older than a rejected champion replaces
    it)."""
    champion = _require_endpoint(current)
    version = version_of(variant)
    registry = list(registry) if registry is not None else None
    statuses = {p.version: p.status for p in registry} if registry is not None else None
    inputs = {p.version: p.inputs for p in registry or () if p.inputs}
    if version is not None and current.variant(version) is None and statuses is not None:
        decision = _promote_not_live(current, champion, version, statuses)
        notes = _inputs_note(version, champion, inputs)
        return replace(
            decision, reason="; ".join([decision.reason, *notes]), changes=(*decision.changes, *notes)
        )
    version = _live_version(current, variant)
    if statuses is not None:
        status = statuses.get(version, "not in the registry")
        if status != APPROVED:
            raise PlanError(f"{variant_name(version)} is {status}; only an approved version can be promoted")
    desired = DesiredEndpoint(((version, 1.0),), version)
    steps = _steps(current, desired)
    if not steps:
        return Decision("none", f"{variant_name(version)} already serves alone as champion", desired)
    notes = [f"promote {variant_name(version)} to champion at 100%; the others drain and are removed"]
    notes.extend(_inputs_note(version, champion, inputs))
    return Decision("update", "; ".join(notes), desired, steps, tuple(notes))


def _promote_not_live(
    current: EndpointState, champion: int, version: int, statuses: Mapping[int, str]
) -> Decision:
    name, live = variant_name(version), ", ".join(v.name for v in current.variants)
    status = statuses.get(version, "not in the registry")
    if status != APPROVED:
        raise PlanError(
            f"variant {name} is not live; live variants: {live}; and {name} is {status}: only an approved "
            "version can be promoted"
        )
    if version < champion:
        raise PlanError(
            f"variant {name} is not live and older than the champion {variant_name(champion)}: promoting it "
            "would not last (the newer approved versions come back with their next approval event). To go back "
            f"to it, reject the newer versions (trainserve models reject N): a rejected champion is replaced "
            "by the newest approved version older than it"
        )
    desired = DesiredEndpoint(((version, 1.0),), version)
    note = (
        f"promote {name} (approved, not live) to champion at 100%: deployed alone in one redeploy; "
        f"{live} removed"
    )
    return Decision("update", note, desired, (Step("deploy", desired),), (note,))


def rollback_challengers(current: EndpointState) -> tuple[int, ...]:
    """The versions ``rollback`` takes off the endpoint: every live variant but the champion."""
    champion = current.champion
    return tuple(v.version for v in current.variants if v.version != champion)


def rollback(current: EndpointState, remove: bool = True) -> Decision:
    """Challengers go to 0% at once (weights only), then are removed (a redeploy with the champion alone).

    ``remove=False``: the drain only (no step if they are at 0% already). ``trainserve traffic rollback``
    uses it: it then rejects the challengers in the registry, and the release controller removes them, so
    that the rollback lasts (a redelivered approval event, or a reconcile, cannot bring them back)."""
    champion = _require_endpoint(current)
    desired = DesiredEndpoint(((champion, 1.0),), champion)
    gone = ", ".join(variant_name(v) for v in rollback_challengers(current))
    if not gone:
        return Decision("none", f"no challengers: {variant_name(champion)} already serves alone", desired)
    if not remove:
        drained = _drained(current.weights, desired)
        if _same_weights(current.weights, drained.weights):
            return Decision("none", f"challengers {gone} are at 0% already", drained)
        note = f"roll back to champion {variant_name(champion)}: challengers {gone} to 0% now"
        return Decision("update", note, drained, (Step("weights", drained),), (note,))
    steps = _steps(current, desired)
    note = f"roll back to champion {variant_name(champion)}: challengers {gone} to 0% now, then removed"
    return Decision("update", note, desired, steps, (note,))


def apply_to_state(current: EndpointState, step: Step) -> EndpointState:
    """The endpoint after ``step`` (what a perfect SageMaker would show); used by tests and dry runs."""
    old = {v.version: v for v in current.variants}
    variants = tuple(
        replace(old[v], weight=w, current_weight=w)
        if v in old
        else LiveVariant(name=variant_name(v), version=v, weight=w, current_weight=w)
        for v, w in step.endpoint.variants
    )
    return replace(
        current,
        exists=True,
        status="InService",
        variants=variants,
        champion_tag=variant_name(step.endpoint.champion),
    )
