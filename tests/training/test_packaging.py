"""Deterministic source-dir and model tarballs."""

from __future__ import annotations

import os
import tarfile
import time

import pytest

from training.packaging import make_model_tarball, make_sourcedir_tarball


def _tree(root):
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    (root / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0")
    (root / "stale.pyc").write_bytes(b"\0")
    return root


def test_sourcedir_tarball_is_deterministic_and_clean(tmp_path):
    src = _tree(tmp_path / "src")
    first = make_sourcedir_tarball(src, tmp_path / "a.tar.gz").read_bytes()
    os.utime(src / "train.py", (time.time() + 100, time.time() + 100))
    second = make_sourcedir_tarball(src, tmp_path / "b.tar.gz").read_bytes()
    assert first == second
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["pkg/util.py", "train.py"]
        assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}
        assert tar.extractfile("train.py").read() == b"print('hi')\n"
    (src / "train.py").write_text("print('changed')\n")
    assert make_sourcedir_tarball(src, tmp_path / "c.tar.gz").read_bytes() != first


def test_model_tarball_needs_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.joblib"):
        make_model_tarball(tmp_path, tmp_path / "model.tar.gz")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.joblib").write_bytes(b"x")
    (tmp_path / "m" / "schema.json").write_text("{}")
    with tarfile.open(make_model_tarball(tmp_path / "m", tmp_path / "out" / "model.tar.gz")) as tar:
        assert tar.getnames() == ["model.joblib", "schema.json"]


def test_missing_or_empty_source_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_sourcedir_tarball(tmp_path / "nope", tmp_path / "x.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no files"):
        make_sourcedir_tarball(tmp_path / "empty", tmp_path / "x.tar.gz")
