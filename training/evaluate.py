"""Evaluation step (SageMaker Processing contract): score the model on the held-out test split.

Inputs: ``/opt/ml/processing/model/model.tar.gz`` (``model.joblib`` + ``schema.json``) and the test CSVs in
``/opt/ml/processing/test``. Outputs in ``/opt/ml/processing/evaluation``:

- ``evaluation.json``: the SageMaker model-quality shape (``binary_classification_metrics`` with
  ``{"value", "standard_deviation"}`` per metric and the confusion matrix), a flat ``metrics`` dict
  (accuracy, precision, recall, f1, roc_auc) that the pipeline's quality gate reads with ``JsonGet``, and
  ``registry_metadata``: the registry's ``CustomerMetadataProperties`` values as strings (so the pipeline's
  RegisterModel step can copy them with ``JsonGet``). Every value is valid as SageMaker metadata (at most
  256 characters of letters, digits, spaces and ``_.:/=+-@``): ``metrics`` is ``accuracy=0.95 f1=0.93 ...``
  (``format_metrics``), and the feature names, which do not fit, are in ``features.json`` instead; their
  digest is ``features_sha256`` (``features_digest``: the release controller admits a challenger only with
  the champion's inputs).
- ``baseline.json``: decile bin edges and fractions of the score and of every feature, the positive rate and
  the row count, over every held-out row: the test split and, when given (``/opt/ml/processing/validation``),
  the validation split, which training only reports on (the drift monitor compares live traffic with these
  bins; more rows make its PSI steadier).
- ``features.json``: ``{"feature_names": [...]}``, the model's input features in order (the registry's
  ``features_uri`` points here; the proxy validates payloads against it).

Accuracy, precision, recall, f1, the confusion matrix and the positive rate label a row 1 when its score is
at least ``--decision-threshold`` (the serving proxy's ``DECISION_THRESHOLD``; default 0.5).

Standard deviations come from a fixed-seed bootstrap of the test set. ``--base-dir`` moves every path so the
same script runs locally. Python 3.9, numpy/pandas/scikit-learn/joblib + stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_BASE_DIR = "/opt/ml/processing"
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
N_BINS = 10
FEATURES_FILE = "features.json"


def features_digest(names) -> str:
    """The SHA-256 (hex) of the feature names, in order, as compact UTF-8 JSON: equal for two models exactly
    when one request's rows mean the same to both (the ``features_sha256`` registry metadata)."""
    text = json.dumps([str(n) for n in names], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def format_metrics(metrics: dict) -> str:
    """``{"accuracy": 0.95, "f1": 0.93}`` -> ``"accuracy=0.95 f1=0.93"`` (METRICS order, 6 decimals at most):
    only characters SageMaker allows in a metadata value (``trainserve.registry.parse_metrics`` reads it)."""
    return " ".join(f"{m}={round(float(metrics[m]), 6)!r}" for m in METRICS if m in metrics)


def threshold_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate the trained model on the test split.")
    parser.add_argument("--base-dir", default=DEFAULT_BASE_DIR)
    parser.add_argument("--model-dir", default=None, help="folder with model.tar.gz (default <base>/model)")
    parser.add_argument("--test-dir", default=None, help="default: <base>/test")
    parser.add_argument(
        "--validation-dir",
        default=None,
        help="default: <base>/validation; its rows join the test rows in baseline.json (not in the metrics)",
    )
    parser.add_argument("--output-dir", default=None, help="default: <base>/evaluation")
    parser.add_argument("--quality-metric", default="roc_auc", choices=METRICS)
    parser.add_argument(
        "--decision-threshold",
        type=threshold_arg,
        default=0.5,
        help="score at or above which a row is labelled 1 (the serving proxy's DECISION_THRESHOLD)",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=200, help="bootstrap resamples for standard deviations"
    )
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)
    base = Path(args.base_dir)
    args.model_dir = Path(args.model_dir or base / "model")
    args.test_dir = Path(args.test_dir or base / "test")
    args.validation_dir = Path(args.validation_dir or base / "validation")
    args.output_dir = Path(args.output_dir or base / "evaluation")
    return args


def load_model(model_dir: Path):
    """Extract ``model.tar.gz`` and load ``(pipeline, schema)``."""
    import joblib

    tarball = model_dir / "model.tar.gz"
    if not tarball.exists():
        raise SystemExit(f"error: no model.tar.gz in {model_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar.getmembers():
                if member.name in ("model.joblib", "schema.json", "./model.joblib", "./schema.json"):
                    tar.extract(member, tmp)
        pipeline = joblib.load(Path(tmp) / "model.joblib")
        schema = json.loads((Path(tmp) / "schema.json").read_text())
    return pipeline, schema


def compute_metrics(y_true, scores, threshold: float = 0.5) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    y_pred = (scores >= threshold).astype(int)
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
    }
    out["roc_auc"] = float(roc_auc_score(y_true, scores)) if len(set(y_true)) == 2 else float("nan")
    return out


def _fast_metrics(y_true, scores, threshold: float = 0.5) -> dict:
    """The same metrics as ``compute_metrics`` with plain numpy (the bootstrap calls this many times)."""
    import numpy as np
    from scipy.stats import rankdata

    y_pred = scores >= threshold
    positive = y_true == 1
    tp = float(np.sum(y_pred & positive))
    fp = float(np.sum(y_pred & ~positive))
    fn = float(np.sum(~y_pred & positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    n_pos, n_neg = float(positive.sum()), float((~positive).sum())
    ranks = rankdata(scores)
    auc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return {
        "accuracy": float(np.mean(y_pred == positive)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "roc_auc": float(auc),
    }


def bootstrap_std(y_true, scores, n: int, seed: int, threshold: float = 0.5) -> dict:
    import numpy as np

    rng = np.random.RandomState(seed)
    samples = {m: [] for m in METRICS}
    size = len(y_true)
    for _ in range(max(n, 0)):
        idx = rng.randint(0, size, size)
        yt = y_true[idx]
        if len(set(yt.tolist())) < 2:
            continue
        for name, value in _fast_metrics(yt, scores[idx], threshold).items():
            samples[name].append(value)
    return {m: float(np.std(v)) if v else 0.0 for m, v in samples.items()}


def decile_bins(values) -> dict:
    """Decile bin edges (unique, increasing) and the fraction of ``values`` in each bin."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)))
    if len(edges) == 1:  # a constant column: one bin holding everything
        edges = np.array([edges[0], edges[0]])
        return {"bin_edges": [float(e) for e in edges], "fractions": [1.0]}
    counts, _ = np.histogram(values, bins=edges)
    return {"bin_edges": [float(e) for e in edges], "fractions": [float(c) / len(values) for c in counts]}


def _checked(frame, features, label: str, what: str):
    missing = [f for f in features if f not in frame.columns]
    if missing or label not in frame.columns:
        raise SystemExit(
            f"error: {what} data lacks columns {missing + ([label] if label not in frame else [])}"
        )
    return frame[features].astype(float)


def evaluate(pipeline, schema: dict, test, args, validation=None) -> tuple:
    """``(evaluation, baseline)``: the metrics of the ``test`` rows; the baseline of every held-out row, the
    ``validation`` rows (when given) with the test rows. Training never fits on either, and the drift
    monitor's PSI is steadier against bins estimated from more rows (its noise under no drift grows with
    the number of bins over the rows: about 9/n for deciles)."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import confusion_matrix

    label = schema.get("label", "target")
    features = schema["feature_names"]
    X = _checked(test, features, label, "test")
    y = test[label].astype(int).to_numpy()
    scores = pipeline.predict_proba(X)[:, 1]
    threshold = float(getattr(args, "decision_threshold", 0.5))
    metrics = compute_metrics(y, scores, threshold)
    std = bootstrap_std(y, scores, args.bootstrap, args.random_state, threshold)
    cm = confusion_matrix(y, (scores >= threshold).astype(int), labels=[0, 1])
    # SageMaker model-quality layout: confusion_matrix[actual][predicted].
    confusion = {str(a): {str(p): int(cm[a][p]) for p in (0, 1)} for a in (0, 1)}
    names = {
        "accuracy": "accuracy",
        "precision": "precision",
        "recall": "recall",
        "f1": "f1",
        "roc_auc": "auc",
    }
    binary = {names[m]: {"value": metrics[m], "standard_deviation": std[m]} for m in METRICS}
    binary["confusion_matrix"] = confusion
    estimator = schema.get("estimator", type(pipeline.steps[-1][1]).__name__)
    evaluation = {
        "binary_classification_metrics": binary,
        "metrics": metrics,
        "n_test": int(len(y)),
        "estimator": estimator,
        "hyperparameters": schema.get("hyperparameters", {}),
        "decision_threshold": threshold,
        "feature_names": list(features),
        "registry_metadata": {
            "n_features": str(len(features)),
            "estimator": str(estimator),
            "quality_metric": args.quality_metric,
            "quality_value": repr(round(metrics[args.quality_metric], 6)),
            "metrics": format_metrics(metrics),
            "decision_threshold": repr(threshold),
            "features_sha256": features_digest(features),
        },
    }
    held_out, held_out_scores = X, scores
    if validation is not None and len(validation):
        Xv = _checked(validation, features, label, "validation")
        held_out = pd.concat([X, Xv], ignore_index=True)
        held_out_scores = np.concatenate([scores, pipeline.predict_proba(Xv)[:, 1]])
    baseline = {
        "score": decile_bins(held_out_scores),
        "features": {name: decile_bins(held_out[name].to_numpy()) for name in features},
        "positive_rate": float(np.mean(held_out_scores >= threshold)),
        "n": int(len(held_out_scores)),
    }
    return evaluation, baseline


def main(argv=None) -> int:
    import pandas as pd

    args = parse_args(argv)
    pipeline, schema = load_model(args.model_dir)
    files = sorted(args.test_dir.rglob("*.csv")) if args.test_dir.is_dir() else []
    if not files:
        print(f"error: no test CSV files in {args.test_dir}", file=sys.stderr)
        return 1
    test = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    held = sorted(args.validation_dir.rglob("*.csv")) if args.validation_dir.is_dir() else []
    validation = pd.concat([pd.read_csv(f) for f in held], ignore_index=True) if held else None
    evaluation, baseline = evaluate(pipeline, schema, test, args, validation)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    (args.output_dir / "baseline.json").write_text(json.dumps(baseline, indent=2))
    features = {"feature_names": evaluation["feature_names"]}
    (args.output_dir / FEATURES_FILE).write_text(json.dumps(features, indent=2))
    print(json.dumps(evaluation["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
