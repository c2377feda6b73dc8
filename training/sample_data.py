"""The sample data set: scikit-learn's bundled breast-cancer data (no download), as CSV files.

Writes two disjoint parts of the 569 rows, split stratified with a fixed seed:

- ``train/breast_cancer.csv``: the training data (header, 30 snake_case feature columns, label ``target``);
  this folder is what the training pipeline's ``InputData`` points at.
- ``traffic/traffic.csv``: held-out rows the model never sees in training, features only (the same header
  without ``target``), with a ``row_id`` first column; ``traffic/traffic_labels.csv`` holds their true
  labels (``row_id,target``) so the demo can send the rows as live traffic and the outcomes as feedback.

CLI: ``python training/sample_data.py --out DIR [--seed N] [--traffic-fraction F]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

LABEL_COLUMN = "target"
TRAIN_FILE = "breast_cancer.csv"
TRAFFIC_FILE = "traffic.csv"
TRAFFIC_LABELS_FILE = "traffic_labels.csv"


def snake_case(name: str) -> str:
    """``"mean radius"`` -> ``"mean_radius"``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def load_frame():
    """The breast-cancer data as a DataFrame with snake_case feature columns and the ``target`` label."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [snake_case(c) if c != LABEL_COLUMN else LABEL_COLUMN for c in frame.columns]
    return frame


def write_sample_data(out_dir: Path, seed: int = 0, traffic_fraction: float = 0.2) -> dict:
    """Write the training CSV and the held-out traffic files under ``out_dir``; return their paths.

    Returns ``{"data_dir", "train", "traffic_dir", "traffic", "traffic_labels", "n_train", "n_traffic",
    "feature_names"}`` (paths are ``Path`` objects). The same seed always gives the same files.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < traffic_fraction < 1:
        raise ValueError(f"traffic_fraction must be strictly between 0 and 1, got {traffic_fraction}")
    out_dir = Path(out_dir)
    frame = load_frame()
    train, traffic = train_test_split(
        frame, test_size=traffic_fraction, random_state=seed, stratify=frame[LABEL_COLUMN]
    )
    data_dir = out_dir / "train"
    traffic_dir = out_dir / "traffic"
    data_dir.mkdir(parents=True, exist_ok=True)
    traffic_dir.mkdir(parents=True, exist_ok=True)

    train_path = data_dir / TRAIN_FILE
    train.sort_index().to_csv(train_path, index=False, float_format="%.6g")

    traffic = traffic.sort_index()
    features = traffic.drop(columns=[LABEL_COLUMN])
    features.insert(0, "row_id", traffic.index.astype(int))
    traffic_path = traffic_dir / TRAFFIC_FILE
    features.to_csv(traffic_path, index=False, float_format="%.6g")
    labels_path = traffic_dir / TRAFFIC_LABELS_FILE
    traffic[[LABEL_COLUMN]].assign(row_id=traffic.index.astype(int))[["row_id", LABEL_COLUMN]].to_csv(
        labels_path, index=False
    )
    return {
        "data_dir": data_dir,
        "train": train_path,
        "traffic_dir": traffic_dir,
        "traffic": traffic_path,
        "traffic_labels": labels_path,
        "n_train": int(len(train)),
        "n_traffic": int(len(traffic)),
        "feature_names": [c for c in frame.columns if c != LABEL_COLUMN],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write train/ and traffic/ into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--traffic-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    paths = write_sample_data(args.out, seed=args.seed, traffic_fraction=args.traffic_fraction)
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in paths.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
