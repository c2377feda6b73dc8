"""preprocess.py refuses data that would train a model serving cannot use or judge: labels other than 0/1,
splits without both classes, repeated column names, non-UTF-8 files, features beyond 32-bit float range."""

from __future__ import annotations

import json
import math
from pathlib import Path

import proxy_logic
import pytest

from training import preprocess


def _write(tmp_path: Path, files: dict[str, str | bytes]) -> None:
    data = tmp_path / "input"
    data.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (data / name).write_bytes(content)
        else:
            (data / name).write_text(content)


def _error(tmp_path: Path, files: dict[str, str | bytes], *extra: str) -> str:
    _write(tmp_path, files)
    args = preprocess.parse_args(["--base-dir", str(tmp_path), *extra])
    with pytest.raises(preprocess.DataError) as err:
        preprocess.run(args)
    return str(err.value)


def _csv(labels: list[int], header: str = "a,b,target") -> str:
    return header + "\n" + "".join(f"{i},{i % 7},{y}\n" for i, y in enumerate(labels))


# -- 1. labels must be 0 and 1 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "found"), [((1, 2), "[1, 2]"), ((-1, 1), "[-1, 1]"), ((0, 1, 2), "[0, 1, 2]")]
)
def test_labels_other_than_0_and_1_are_refused(tmp_path, labels, found):
    message = _error(tmp_path, {"d.csv": _csv([labels[i % len(labels)] for i in range(30)])})
    assert message == (
        f"label column 'target' holds the values {found}; the labels must be 0 and 1 "
        "(the model's score is the probability of class 1)"
    )


def test_fractional_label_is_refused_as_not_0_or_1(tmp_path):
    message = _error(tmp_path, {"d.csv": _csv([0, 1] * 10).replace(",1\n", ",0.5\n", 1)})
    assert "label column 'target' holds 0.5; the labels must be 0 and 1" in message


def test_the_label_column_named_in_the_refusal_is_the_configured_one(tmp_path):
    text = _csv([1, 2] * 10, header="a,b,outcome")
    message = _error(tmp_path, {"d.csv": text}, "--label-column", "outcome")
    assert message.startswith("label column 'outcome' holds the values [1, 2]")


# -- 2. every split holds both classes ---------------------------------------------------------------------


def _split_labels(tmp_path: Path, labels: list[int], *extra: str) -> dict[str, list[int]]:
    _write(tmp_path, {"d.csv": _csv(labels)})
    summary = preprocess.run(preprocess.parse_args(["--base-dir", str(tmp_path), *extra]))
    out = {}
    for name in ("train", "validation", "test"):
        lines = (tmp_path / name / f"{name}.csv").read_text().splitlines()
        assert lines[0] == "a,b,target"
        out[name] = [int(line.rsplit(",", 1)[1]) for line in lines[1:]]
        assert summary[name] == len(out[name])
    assert sum(len(v) for v in out.values()) == len(labels)
    return out


def test_a_rare_class_reaches_every_split(tmp_path):
    """65 rows, 3 positives: a plain stratified split left the 10-row test split without a positive (ROC AUC
    nan, and the quality gate blamed the model)."""
    splits = _split_labels(tmp_path, [1 if i in (5, 30, 60) else 0 for i in range(65)])
    for name, labels in splits.items():
        assert set(labels) == {0, 1}, name
    assert splits["test"].count(1) == 1 and len(splits["test"]) == 1 + round(62 * 0.15)


def test_three_rows_per_class_is_the_true_minimum(tmp_path):
    """The stated minimum suffices (6 rows, 3 per class, used to fail with sklearn's 'test_size = 1')."""
    splits = _split_labels(tmp_path, [0, 1] * 3)
    assert {name: sorted(v) for name, v in splits.items()} == {
        n: [0, 1] for n in ("train", "validation", "test")
    }


@pytest.mark.parametrize("fractions", [("0.05", "0.05"), ("0.45", "0.5"), ("0.15", "0.15")])
def test_any_fractions_give_each_split_both_classes_from_three_per_class(tmp_path, fractions):
    splits = _split_labels(
        tmp_path, [0] * 40 + [1] * 3, "--validation-fraction", fractions[0], "--test-fraction", fractions[1]
    )
    assert all(set(labels) == {0, 1} for labels in splits.values())


def test_too_few_rows_of_a_class_gives_the_counts_and_the_minimum(tmp_path):
    message = _error(tmp_path, {"d.csv": _csv([1 if i < 2 else 0 for i in range(65)])})
    assert message == (
        "label column 'target': 63 of class 0, 2 of class 1; at least 3 rows of each class are needed "
        "so that the train, validation and test splits each hold both classes"
    )
    assert preprocess.MIN_ROWS_PER_CLASS == 3


def test_class_split_sizes_never_leave_a_split_empty():
    for n in range(3, 60):
        for validation in (0.01, 0.15, 0.3, 0.49):
            for test in (0.01, 0.15, 0.3, 0.5):
                sizes = preprocess.class_split_sizes(n, validation, test)
                assert sum(sizes) == n and min(sizes) >= 1, (n, validation, test, sizes)


def test_split_is_reproducible(tmp_path):
    first = _split_labels(tmp_path / "one", [0, 1, 1, 0, 0] * 10)
    again = _split_labels(tmp_path / "two", [0, 1, 1, 0, 0] * 10)
    assert first == again
    assert (tmp_path / "one" / "test" / "test.csv").read_bytes() == (
        tmp_path / "two" / "test" / "test.csv"
    ).read_bytes()


# -- 3. repeated column names ------------------------------------------------------------------------------


def test_repeated_column_names_are_refused_by_name(tmp_path):
    message = _error(tmp_path, {"d.csv": _csv([0, 1] * 5, header="a,a,target")})
    assert message == "d.csv: column names given more than once: a (each column needs its own name)"


def test_repeated_names_differing_only_by_spaces_are_refused(tmp_path):
    message = _error(tmp_path, {"d.csv": _csv([0, 1] * 5, header="x, b,b ,target").replace("\n", ",9\n", 0)})
    assert "column names given more than once: b" in message


# -- 4. non-UTF-8 and binary files -------------------------------------------------------------------------


def test_latin1_file_names_the_file_byte_and_offset(tmp_path):
    content = "a,caf\xe9,target\n1,2,0\n".encode("latin-1")
    message = _error(tmp_path, {"d.csv": _csv([0, 1] * 5), "latin.csv": content})
    assert message == (
        "latin.csv is not UTF-8 text: byte 0xe9 at offset 5 (line 1) cannot be decoded; "
        "save it as UTF-8 (in Excel: CSV UTF-8)"
    )


def test_binary_file_is_refused(tmp_path):
    gzip_like = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
    message = _error(tmp_path, {"data.csv": gzip_like})
    assert message.startswith("data.csv is not UTF-8 text: byte 0x8b at offset 1 (line 1)")
    utf16 = _csv([0, 1] * 5).encode("utf-16-le")
    message = _error(tmp_path / "u", {"wide.csv": utf16})
    assert message.startswith("wide.csv is not CSV text: byte 0x00 at offset 1 (line 1)")
    assert message.endswith("save it as UTF-8 (in Excel: CSV UTF-8)")


def test_utf8_with_bom_is_read(tmp_path):
    _write(tmp_path, {"d.csv": b"\xef\xbb\xbf" + _csv([0, 1] * 5).encode()})
    preprocess.run(preprocess.parse_args(["--base-dir", str(tmp_path)]))
    assert json.loads((tmp_path / "schema" / "schema.json").read_text())["feature_names"] == ["a", "b"]


# -- 5. values the served model cannot take ---------------------------------------------------------------


def test_the_float32_limit_is_the_proxys():
    assert preprocess.FLOAT32_MAX == proxy_logic.FLOAT32_MAX
    assert float.fromhex("0x1.fffffep+127") == preprocess.FLOAT32_MAX


def test_feature_beyond_float32_is_refused_naming_file_line_and_column(tmp_path):
    text = _csv([0, 1] * 5).replace("\n4,4,0\n", "\n4,1e200,0\n")
    message = _error(tmp_path, {"d.csv": text})
    assert message == (
        "d.csv, line 6: feature column 'b' value 1e200 is beyond the 32-bit float range the served model "
        "takes (at most 3.4028234663852886e+38 in magnitude)"
    )
    assert "line 3: feature column 'a' value -3.5e38" in _error(
        tmp_path / "neg", {"d.csv": _csv([0, 1] * 5).replace("\n1,1,1\n", "\n-3.5e38,1,1\n")}
    )


def test_the_float32_limit_itself_is_accepted(tmp_path):
    edge = repr(proxy_logic.FLOAT32_MAX)
    _write(tmp_path, {"d.csv": _csv([0, 1] * 5).replace("\n1,1,1\n", f"\n{edge},-{edge},1\n")})
    summary = preprocess.run(preprocess.parse_args(["--base-dir", str(tmp_path)]))
    assert summary["rows"] == 10 and math.isfinite(preprocess.FLOAT32_MAX)
