"""Training step (SageMaker script mode): fit a scikit-learn Pipeline (StandardScaler + estimator).

Script-mode contract: reads the CSVs of the ``train`` channel (``SM_CHANNEL_TRAIN``) and, when present,
the ``validation`` channel (``SM_CHANNEL_VALIDATION``); writes ``model.joblib`` (the fitted Pipeline) and
``schema.json`` (``{"feature_names", "label", "classes", "estimator", "hyperparameters"}``) to
``SM_MODEL_DIR``. Hyperparameters arrive as command-line arguments (SageMaker passes them that way).
Validation metrics are printed as ``validation:<metric>=<value>`` lines (usable as metric definitions).

Runs on Python 3.9 in the SageMaker scikit-learn container: numpy, pandas, scikit-learn, joblib, stdlib.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ESTIMATORS = ("logistic_regression", "random_forest", "gradient_boosting")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a scikit-learn binary classifier.")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="logistic_regression")
    parser.add_argument(
        "--C", "-C", type=float, default=1.0, help="logistic_regression: inverse regularization"
    )
    parser.add_argument(
        "--max-iter", "--max_iter", type=int, default=1000, help="logistic_regression: solver iterations"
    )
    parser.add_argument(
        "--n-estimators", "--n_estimators", type=int, default=100, help="random_forest, gradient_boosting"
    )
    parser.add_argument(
        "--max-depth", "--max_depth", type=int, default=0, help="tree depth; 0 = the estimator's default"
    )
    parser.add_argument(
        "--learning-rate", "--learning_rate", type=float, default=0.1, help="gradient_boosting"
    )
    parser.add_argument("--random-state", "--random_state", type=int, default=42)
    parser.add_argument("--label-column", "--label_column", default="target")
    parser.add_argument("--model-dir", "--model_dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    parser.add_argument("--validation", default=os.environ.get("SM_CHANNEL_VALIDATION"))
    args = parser.parse_args(argv)
    if args.C <= 0:
        parser.error("--C must be > 0")
    for name in ("max_iter", "n_estimators"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_depth < 0:
        parser.error("--max-depth must be >= 0")
    if not 0 < args.learning_rate <= 1:
        parser.error("--learning-rate must be in (0, 1]")
    if not 0 <= args.random_state < 2**32:  # what scikit-learn's estimators take as a seed
        parser.error("--random-state must be in [0, 4294967295]")
    return args


def hyperparameters(args) -> dict:
    """The hyperparameters that matter for the chosen estimator."""
    per_estimator = {
        "logistic_regression": ("C", "max_iter"),
        "random_forest": ("n_estimators", "max_depth"),
        "gradient_boosting": ("n_estimators", "max_depth", "learning_rate"),
    }
    out = {name: getattr(args, name) for name in per_estimator[args.estimator]}
    out["random_state"] = args.random_state
    return out


def build_pipeline(args):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    depth = args.max_depth or None
    if args.estimator == "logistic_regression":
        model = LogisticRegression(C=args.C, max_iter=args.max_iter, random_state=args.random_state)
    elif args.estimator == "random_forest":
        model = RandomForestClassifier(
            n_estimators=args.n_estimators, max_depth=depth, random_state=args.random_state, n_jobs=1
        )
    else:
        model = GradientBoostingClassifier(
            n_estimators=args.n_estimators,
            max_depth=depth or 3,
            learning_rate=args.learning_rate,
            random_state=args.random_state,
        )
    return Pipeline([("scaler", StandardScaler()), ("model", model)])


def read_channel(channel_dir, label_column: str):
    """All CSVs of a channel as (X DataFrame, y Series)."""
    import pandas as pd

    folder = Path(channel_dir)
    files = sorted(folder.rglob("*.csv")) if folder.is_dir() else []
    if not files:
        raise SystemExit(f"error: no CSV files in channel folder {folder}")
    data = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if label_column not in data.columns:
        raise SystemExit(f"error: label column '{label_column}' missing from {folder}")
    return data.drop(columns=[label_column]).astype(float), data[label_column].astype(int)


def main(argv=None) -> int:
    args = parse_args(argv)
    import joblib
    from sklearn.metrics import accuracy_score, roc_auc_score

    X, y = read_channel(args.train, args.label_column)
    pipeline = build_pipeline(args)
    pipeline.fit(X, y)
    print(f"trained {args.estimator} on {len(X)} rows, {X.shape[1]} features")
    if args.validation and Path(args.validation).is_dir():
        Xv, yv = read_channel(args.validation, args.label_column)
        Xv = Xv[list(X.columns)]
        scores = pipeline.predict_proba(Xv)[:, 1]
        print(f"validation:accuracy={accuracy_score(yv, (scores >= 0.5).astype(int)):.6f}")
        if len(set(yv)) == 2:
            print(f"validation:roc_auc={roc_auc_score(yv, scores):.6f}")
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, model_dir / "model.joblib")
    schema = {
        "feature_names": [str(c) for c in X.columns],
        "label": args.label_column,
        "classes": [int(c) for c in pipeline.classes_],
        "estimator": args.estimator,
        "hyperparameters": hyperparameters(args),
    }
    (model_dir / "schema.json").write_text(json.dumps(schema, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
