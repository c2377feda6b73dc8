"""Preprocessing step (SageMaker Processing contract): validate the raw CSVs and split them.

Reads every ``*.csv`` under ``/opt/ml/processing/input`` (except the ``code/`` folder the job's own script
lives in), checks them, and writes stratified ``train.csv``, ``validation.csv`` and ``test.csv`` to
``/opt/ml/processing/{train,validation,test}`` and ``schema.json`` to ``/opt/ml/processing/schema``.

Checks (each failure names the file, column and line): at least one CSV with at least one row; every file
UTF-8 text; no column name given twice; the label column present in every file; every file has the same
columns; every feature value numeric, present and within the 32-bit float range the served model takes;
the labels are 0 and 1 (the model's score is P(class 1)), each with at least ``MIN_ROWS_PER_CLASS`` rows so
that the train, validation and test splits each hold both classes. Feature names are read from the data's header, nothing is specific to
one data set. Exit code 1 with a one-line ``error: ...`` on stderr (and in ``/opt/ml/output/message``
when that folder exists) on bad data.

Every path can be overridden (``--base-dir`` moves them all), so the same script runs locally.
Runs on Python 3.9 in the SageMaker scikit-learn container: numpy, pandas, scikit-learn and stdlib only.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path

DEFAULT_BASE_DIR = "/opt/ml/processing"
# The largest magnitude of a 32-bit float: the served models take 32-bit floats, so the API refuses larger
# feature values (lambdas/proxy/proxy_logic.py's FLOAT32_MAX, which this script, running in the SageMaker
# container, cannot import; tests/training/test_preprocess_data_checks.py keeps the two equal).
FLOAT32_MAX = 3.4028234663852886e38
CLASSES = (0, 1)  # the label's classes; the model's score is P(class 1)
# Rows of each class needed so that the train, validation and test splits each get at least one (split()).
MIN_ROWS_PER_CLASS = 3


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


def read_text(path: Path) -> str:
    """The file's text (UTF-8, an optional BOM dropped); DataError naming the file, byte and offset if it is
    binary or not UTF-8 (the wording of ``trainserve predict``)."""
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{path.name} is not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}) "
            "cannot be decoded; save it as UTF-8 (in Excel: CSV UTF-8)"
        ) from None
    nul = data.find(b"\x00")
    if nul >= 0:  # valid UTF-8, but not text (a UTF-16 file, a binary one)
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(
            f"{path.name} is not CSV text: byte 0x00 at offset {nul} (line {line}); "
            "save it as UTF-8 (in Excel: CSV UTF-8)"
        )
    return text


def header_names(text: str) -> list:
    """The column names of the first non-blank line, as written (pandas would rename a repeated name)."""
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if any(cell.strip() for cell in row):
            return [cell.strip() for cell in row]
    return []


def read_and_validate(files: list, label_column: str):
    """Read the CSV files into one DataFrame; raise DataError naming the first problem found."""
    import numpy as np
    import pandas as pd

    frames = []
    columns = None
    for path in files:
        text = read_text(path)
        names = header_names(text)
        duplicated = sorted({c for c in names if names.count(c) > 1})
        if duplicated:
            raise DataError(
                f"{path.name}: column names given more than once: {', '.join(duplicated)} "
                "(each column needs its own name)"
            )
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
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
            if column != label_column:
                # Python's float, as the API parses JSON numbers (pandas' parser can be off by an ulp): read again
                # only the values pandas puts within an ulp of the limit or past it
                near = converted.abs() >= np.nextafter(FLOAT32_MAX, 0)
                beyond = values[near].map(lambda v: abs(float(v)) > FLOAT32_MAX)
                if beyond.any():
                    index = beyond[beyond].index[0]
                    raise DataError(
                        f"{path.name}, line {_line(index)}: feature column '{column}' value "
                        f"{values.loc[index]} is beyond the 32-bit float range the served model takes "
                        f"(at most {FLOAT32_MAX!r} in magnitude)"
                    )
        frames.append(pd.DataFrame(numeric)[columns])
    if not frames:
        raise DataError(f"no data rows in {', '.join(p.name for p in files)}")
    data = pd.concat(frames, ignore_index=True)
    labels = data[label_column]
    if not (labels == labels.round()).all():
        index = labels[labels != labels.round()].index[0]
        raise DataError(
            f"label column '{label_column}' holds {labels.loc[index]!r}; the labels must be 0 and 1 "
            "(the model's score is the probability of class 1)"
        )
    data[label_column] = labels.astype(int)
    found = sorted(int(c) for c in data[label_column].unique())
    others = [c for c in found if c not in CLASSES]
    if others:
        raise DataError(
            f"label column '{label_column}' holds the values {found[:10]}; the labels must be 0 and 1 "
            "(the model's score is the probability of class 1)"
        )
    if len(found) != 2:
        raise DataError(
            f"label column '{label_column}' must hold exactly two classes for binary classification; "
            f"found {len(found)}: {found}"
        )
    counts = {c: int((data[label_column] == c).sum()) for c in CLASSES}
    short = [c for c in CLASSES if counts[c] < MIN_ROWS_PER_CLASS]
    if short:
        have = ", ".join(f"{counts[c]} of class {c}" for c in CLASSES)
        raise DataError(
            f"label column '{label_column}': {have}; at least {MIN_ROWS_PER_CLASS} rows of each class are "
            "needed so that the train, validation and test splits each hold both classes"
        )
    return data, list(CLASSES)


def class_split_sizes(n: int, validation_fraction: float, test_fraction: float) -> tuple:
    """(train, validation, test) row counts for one class of ``n`` rows: the fractions rounded, each split
    at least one row (possible from ``MIN_ROWS_PER_CLASS`` = 3 rows on, whatever the fractions)."""
    n_test = max(1, int(n * test_fraction + 0.5))
    n_validation = max(1, int(n * validation_fraction + 0.5))
    while n - n_test - n_validation < 1 and (n_test > 1 or n_validation > 1):
        if n_test >= n_validation:
            n_test -= 1
        else:
            n_validation -= 1
    return n - n_test - n_validation, n_validation, n_test


def split(data, label_column: str, validation_fraction: float, test_fraction: float, random_state: int):
    """Stratified train/validation/test split in which every split holds every class.

    Each class is shuffled and cut by the fractions on its own (at least one row in each split), so a rare
    class cannot be left out of the test split as a split of the whole data set can do (no ROC AUC then)."""
    import numpy as np

    if not (
        0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1
    ):
        raise DataError("validation and test fractions must be in (0, 1) and sum to less than 1")
    rng = np.random.RandomState(random_state)
    parts: dict = {"train": [], "validation": [], "test": []}
    for cls in sorted(data[label_column].unique()):
        index = data.index[data[label_column] == cls].to_numpy()
        if len(index) < MIN_ROWS_PER_CLASS:
            raise DataError(
                f"label column '{label_column}': class {cls} has {len(index)} rows; at least "
                f"{MIN_ROWS_PER_CLASS} of each class are needed so that every split holds both classes"
            )
        index = index[rng.permutation(len(index))]
        n_train, n_validation, _n_test = class_split_sizes(len(index), validation_fraction, test_fraction)
        parts["train"].append(index[:n_train])
        parts["validation"].append(index[n_train : n_train + n_validation])
        parts["test"].append(index[n_train + n_validation :])
    out = []
    for name in ("train", "validation", "test"):
        index = np.concatenate(parts[name])
        out.append(data.loc[index[rng.permutation(len(index))]])
    train, validation, test = out
    assert all(frame[label_column].nunique() == data[label_column].nunique() for frame in out)
    return train, validation, test


def run(args) -> dict:
    files = find_csv_files(args.input_dir)
    data, classes = read_and_validate(files, args.label_column)
    feature_names = [c for c in data.columns if c != args.label_column]
    data = data[feature_names + [args.label_column]]
    train, validation, test = split(
        data, args.label_column, args.validation_fraction, args.test_fraction, args.random_state
    )
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
