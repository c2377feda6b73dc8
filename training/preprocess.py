"""Preprocessing step (SageMaker Processing contract): validate the raw CSVs and split them.

Reads every ``*.csv`` under ``/opt/ml/processing/input`` (except the ``code/`` folder the job's own script
lives in), checks them, and writes stratified ``train.csv``, ``validation.csv`` and ``test.csv`` to
``/opt/ml/processing/{train,validation,test}`` and ``schema.json`` to ``/opt/ml/processing/schema``.

Checks (each failure names the file, column and line): at least one CSV with at least one row; the label
column present in every file; every file has the same columns; every feature value numeric and present;
the label has exactly two classes. Feature names are read from the data's header, nothing is specific to
one data set. Exit code 1 with a one-line ``error: ...`` on stderr (and in ``/opt/ml/output/message``
when that folder exists) on bad data.

Every path can be overridden (``--base-dir`` moves them all), so the same script runs locally.
Runs on Python 3.9 in the SageMaker scikit-learn container: numpy, pandas, scikit-learn and stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

DEFAULT_BASE_DIR = "/opt/ml/processing"


class DataError(ValueError):
    """The input data is unusable; the message says where and why."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Validate and split the training data.")
    parser.add_argument("--base-dir", default=DEFAULT_BASE_DIR, help="root of the processing paths")
    parser.add_argument("--input-dir", default=None, help="default: <base>/input")
    parser.add_argument("--train-dir", default=None, help="default: <base>/train")
    parser.add_argument("--validation-dir", default=None, help="default: <base>/validation")
    parser.add_argument("--test-dir", default=None, help="default: <base>/test")
    parser.add_argument("--schema-dir", default=None, help="default: <base>/schema")
    parser.add_argument("--label-column", default="target")
    parser.add_argument("--validation-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--random-state", type=int, default=42)
    args = parser.parse_args(argv)
    base = Path(args.base_dir)
    for name in ("input", "train", "validation", "test", "schema"):
        attr = f"{name}_dir"
        setattr(args, attr, Path(getattr(args, attr) or base / name))
    return args


def find_csv_files(input_dir: Path) -> list:
    if not input_dir.is_dir():
        raise DataError(f"input folder {input_dir} does not exist")
    files = []
    for path in sorted(input_dir.rglob("*.csv")):
        rel = path.relative_to(input_dir)
        if rel.parts[0] == "code":
            continue
        files.append(path)
    if not files:
        raise DataError(f"no CSV files in {input_dir}")
    return files


def _line(index) -> int:
    """Line number in the CSV file of a 0-based data row (line 1 is the header)."""
    return int(index) + 2


def read_and_validate(files: list, label_column: str):
    """Read the CSV files into one DataFrame; raise DataError naming the first problem found."""
    import numpy as np
    import pandas as pd

    frames = []
    columns = None
    for path in files:
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path.name}: the file is empty (no header, no rows)") from None
        except pd.errors.ParserError as exc:
            raise DataError(f"{path.name}: not a valid CSV file: {exc}") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        if label_column not in frame.columns:
            raise DataError(
                f"{path.name}: label column '{label_column}' is missing (columns: {', '.join(frame.columns)})"
            )
        if len(frame.columns) < 2:
            raise DataError(f"{path.name}: no feature columns besides the label column '{label_column}'")
        duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
        if duplicated:
            raise DataError(f"{path.name}: duplicated column names: {', '.join(duplicated)}")
        if columns is None:
            columns = list(frame.columns)
        elif set(frame.columns) != set(columns):
            missing = sorted(set(columns) - set(frame.columns))
            extra = sorted(set(frame.columns) - set(columns))
            raise DataError(
                f"{path.name}: columns differ from {files[0].name} (missing: {missing or 'none'}, "
                f"extra: {extra or 'none'})"
            )
        if frame.empty:
            continue
        numeric = {}
        for column in frame.columns:
            values = frame[column].str.strip()
            converted = pd.to_numeric(values, errors="coerce")
            bad = converted.isna() | ~np.isfinite(converted.astype(float))
            if bad.any():
                index = bad[bad].index[0]
                raw = values.loc[index]
                what = "is empty" if raw == "" else f"is not a finite number: {raw!r}"
                kind = "label" if column == label_column else "feature"
                raise DataError(f"{path.name}, line {_line(index)}: {kind} column '{column}' {what}")
            numeric[column] = converted.astype(float)
        frames.append(pd.DataFrame(numeric)[columns])
    if not frames:
        raise DataError(f"no data rows in {', '.join(p.name for p in files)}")
    data = pd.concat(frames, ignore_index=True)
    labels = data[label_column]
    if not (labels == labels.round()).all():
        index = labels[labels != labels.round()].index[0]
        raise DataError(
            f"label column '{label_column}' must hold integer class labels; found {labels.loc[index]!r}"
        )
    data[label_column] = labels.astype(int)
    classes = sorted(int(c) for c in data[label_column].unique())
    if len(classes) != 2:
        raise DataError(
            f"label column '{label_column}' must hold exactly two classes for binary classification; "
            f"found {len(classes)}: {classes[:10]}"
        )
    counts = data[label_column].value_counts()
    if counts.min() < 3:
        raise DataError(
            f"label column '{label_column}': class {int(counts.idxmin())} has only {int(counts.min())} rows; "
            "at least 3 per class are needed to split train/validation/test"
        )
    return data, classes


def split(data, label_column: str, validation_fraction: float, test_fraction: float, random_state: int):
    from sklearn.model_selection import train_test_split

    if not (
        0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1
    ):
        raise DataError("validation and test fractions must be in (0, 1) and sum to less than 1")
    rest, test = train_test_split(
        data, test_size=test_fraction, random_state=random_state, stratify=data[label_column]
    )
    train, validation = train_test_split(
        rest,
        test_size=validation_fraction / (1 - test_fraction),
        random_state=random_state,
        stratify=rest[label_column],
    )
    return train, validation, test


def run(args) -> dict:
    files = find_csv_files(args.input_dir)
    data, classes = read_and_validate(files, args.label_column)
    feature_names = [c for c in data.columns if c != args.label_column]
    data = data[feature_names + [args.label_column]]
    try:
        train, validation, test = split(
            data, args.label_column, args.validation_fraction, args.test_fraction, args.random_state
        )
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot split {len(data)} rows stratified: {exc}") from None
    for frame, folder, name in (
        (train, args.train_dir, "train.csv"),
        (validation, args.validation_dir, "validation.csv"),
        (test, args.test_dir, "test.csv"),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_csv(folder / name, index=False)
    schema = {"feature_names": feature_names, "label": args.label_column, "classes": classes}
    args.schema_dir.mkdir(parents=True, exist_ok=True)
    (args.schema_dir / "schema.json").write_text(json.dumps(schema, indent=2))
    summary = {
        "files": [p.name for p in files],
        "rows": int(len(data)),
        "train": int(len(train)),
        "validation": int(len(validation)),
        "test": int(len(test)),
        "n_features": len(feature_names),
    }
    print(json.dumps(summary))
    return summary


def report_failure(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    output_dir = os.environ.get("SM_OUTPUT_MESSAGE_DIR", "/opt/ml/output")
    if os.path.isdir(output_dir):
        with contextlib.suppress(OSError):
            Path(output_dir, "message").write_text(message)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except DataError as exc:
        report_failure(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
