"""A local warehouse (DuckDB) filled with generated predictions and feedback, for the report/monitor tests
and ``benchmarks/report.py``.

The tables come from ``lambdas/warehouse_setup/schema.sql`` when it exists (the agreed DDL), otherwise from
``FALLBACK_SCHEMA`` (the same DDL). Rows are generated inside DuckDB with ``range()`` and ``hash()``-based
pseudo-random numbers, so 10^7 rows take seconds and every run produces the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from trainserve import PROJECT_ROOT

SCHEMA_FILE = PROJECT_ROOT / "lambdas" / "warehouse_setup" / "schema.sql"
ENDPOINT = "trainserve-endpoint"
GROUP_ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models"

FALLBACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS prediction_log (
    request_id VARCHAR(128) NOT NULL, event_time TIMESTAMP NOT NULL, endpoint_name VARCHAR(256),
    variant_name VARCHAR(64), model_package_arn VARCHAR(512), model_version INTEGER, user_id VARCHAR(256),
    features VARCHAR(65535), score DOUBLE PRECISION, label INTEGER, threshold DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION, params VARCHAR(4096));
CREATE TABLE IF NOT EXISTS prediction_feedback (
    request_id VARCHAR(128) NOT NULL, event_time TIMESTAMP NOT NULL, outcome INTEGER NOT NULL);
CREATE OR REPLACE VIEW prediction_log_dedup AS
    SELECT request_id, event_time, endpoint_name, variant_name, model_package_arn, model_version, user_id,
           features, score, label, threshold, latency_ms, params
    FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY request_id ORDER BY event_time) AS rn FROM prediction_log) d
    WHERE rn = 1;
CREATE OR REPLACE VIEW prediction_feedback_dedup AS
    SELECT request_id, event_time, outcome
    FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY request_id ORDER BY event_time DESC) AS rn
          FROM prediction_feedback) d
    WHERE rn = 1;
"""


@dataclass(frozen=True)
class Arm:
    """One generated variant: its share of the traffic, the accuracy its outcomes give, a score shift."""

    variant: str
    version: int
    share: float
    accuracy: float
    score_shift: float = 0.0
    latency_ms: float = 10.0


def schema_sql() -> str:
    return SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else FALLBACK_SCHEMA


def schema_statements(text: str) -> list[str]:
    """schema.sql's own rule: strip ``--`` comments, split on ``;`` at the end of a line."""
    lines = [line.split("--", 1)[0].rstrip() for line in text.splitlines()]
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return [s for s in statements if s]


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    for statement in schema_statements(schema_sql()):
        con.execute(statement)


def _u(i: str, salt: int) -> str:
    """A deterministic uniform number in [0, 1) from the row index."""
    return f"((hash({i}, {salt}) % 1000000) / 1000000.0)"


def fill(
    con: duckdb.DuckDBPyConnection,
    arms: list[Arm],
    n: int,
    *,
    start: datetime,
    seconds: float,
    feedback_rate: float = 0.8,
    offset: int = 0,
    endpoint: str = ENDPOINT,
    salt: int = 0,
    users: int | None = None,
) -> None:
    """Insert ``n`` predictions spread evenly over ``seconds`` from ``start`` (request ids ``r{offset+i}``),
    split between ``arms`` by share, and feedback for about ``feedback_rate`` of them (correct with the arm's
    accuracy probability), one second after the prediction.

    ``users=None``: no user ids (every request assigned on its own). ``users=N``: N user ids with skewed
    activity (user = floor(N * u²)), each user sticky on the arm its own hash picks (sticky assignment).
    """
    total = sum(a.share for a in arms)
    cum, whens = 0.0, []
    for k, a in enumerate(arms):
        cum += a.share / total
        whens.append(f"WHEN u1 < {cum!r} THEN {k}")
    arm_idx = "CASE " + " ".join(whens[:-1]) + f" ELSE {len(arms) - 1} END" if len(arms) > 1 else "0"

    def pick(attr: str, quote: bool = False) -> str:
        vals = [getattr(a, attr) for a in arms]
        lit = [f"'{v}'" if quote else repr(v) for v in vals]
        return "CASE arm " + " ".join(f"WHEN {k} THEN {x}" for k, x in enumerate(lit)) + " END"

    step_us = seconds * 1e6 / max(n, 1)
    gi = f"(r.i + {offset})"  # global row index: random numbers depend on it, not on the chunk's index
    if users:
        user = f"CAST(FLOOR({users} * {_u(gi, 6 + salt)} * {_u(gi, 6 + salt)}) AS BIGINT)"
        u1, user_sql = _u(user, 1 + salt), "'u' || user_ix"
    else:
        user, u1, user_sql = "NULL", _u(gi, 1 + salt), "CAST(NULL AS VARCHAR)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE gen AS
        SELECT i, arm, u2, u3, u4, u5, user_ix,
               LEAST(0.999999, GREATEST(0.0, u2 + {pick("score_shift")})) AS score
        FROM (SELECT i, {arm_idx} AS arm, u2, u3, u4, u5, user_ix
              FROM (SELECT r.i + {offset} AS i, {user} AS user_ix, {u1} AS u1, {_u(gi, 2 + salt)} AS u2,
                           {_u(gi, 3 + salt)} AS u3, {_u(gi, 4 + salt)} AS u4, {_u(gi, 5 + salt)} AS u5
                    FROM range({n}) r(i)))
        """
    )
    start_lit = start.strftime("%Y-%m-%d %H:%M:%S")
    con.execute(
        f"""
        INSERT INTO prediction_log
        SELECT 'r' || i, TIMESTAMP '{start_lit}' + to_microseconds(CAST((i - {offset}) * {step_us!r} AS BIGINT)),
               '{endpoint}', {pick("variant", True)}, '{GROUP_ARN}/' || {pick("version")},
               {pick("version")}, {user_sql}, '{{}}', score,
               CASE WHEN score >= 0.5 THEN 1 ELSE 0 END, 0.5, {pick("latency_ms")} * (0.5 + u3), '{{}}'
        FROM gen
        """
    )
    con.execute(
        f"""
        INSERT INTO prediction_feedback
        SELECT 'r' || i,
               TIMESTAMP '{start_lit}' + to_microseconds(CAST((i - {offset}) * {step_us!r} AS BIGINT) + 1000000),
               CASE WHEN u5 < {pick("accuracy")} THEN label ELSE 1 - label END
        FROM (SELECT i, arm, u4, u5, CASE WHEN score >= 0.5 THEN 1 ELSE 0 END AS label FROM gen)
        WHERE u4 < {feedback_rate!r}
        """
    )
    con.execute("DROP TABLE gen")


def new_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    create_schema(con)
    return con


UNIFORM_BASELINE = {
    "score": {"bin_edges": [i / 10 for i in range(11)], "fractions": [0.1] * 10},
    "features": {},
    "positive_rate": 0.5,
    "n": 1000,
}


def register_versions(sm, s3, baselines, *, group="trainserve-models", bucket="trainserve-artifacts"):
    """One approved model package per baseline document (None: no baseline_uri); returns their ARNs."""
    import json

    s3.create_bucket(Bucket=bucket)
    sm.create_model_package_group(ModelPackageGroupName=group)
    arns = []
    for version, baseline in enumerate(baselines, start=1):
        meta = {"estimator": "logistic_regression"}
        if baseline is not None:
            key = f"models/v{version}/baseline.json"
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(baseline).encode())
            meta["baseline_uri"] = f"s3://{bucket}/{key}"
        arns.append(
            sm.create_model_package(
                ModelPackageGroupName=group,
                ModelApprovalStatus="Approved",
                CustomerMetadataProperties=meta,
                InferenceSpecification={
                    "Containers": [{"Image": "img", "ModelDataUrl": f"s3://{bucket}/m{version}.tar.gz"}],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
            )["ModelPackageArn"]
        )
    return arns


def create_endpoint(sm, weights: dict[str, float], endpoint: str = ENDPOINT) -> None:
    """An InService endpoint (moto) with one production variant per ``v<N>`` at the given weights."""
    role = "arn:aws:iam::123456789012:role/sagemaker"
    variants = []
    for name, w in weights.items():
        model = f"trainserve-{name}-abc123"
        sm.create_model(
            ModelName=model,
            ExecutionRoleArn=role,
            PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m"},
        )
        variants.append(
            {
                "VariantName": name,
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": w,
            }
        )
    sm.create_endpoint_config(EndpointConfigName="trainserve-ec-1", ProductionVariants=variants)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName="trainserve-ec-1")


def set_endpoint_changed_at(when: datetime, endpoint: str = ENDPOINT) -> None:
    """Backdate the endpoint's ``LastModifiedTime`` (and creation) in the in-process moto backend: generated
    predictions lie in the past, and the report's default window starts when the endpoint last changed."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    ep = sagemaker_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].endpoints[endpoint]
    ep.creation_time = ep.last_modified_time = when
