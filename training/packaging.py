"""Deterministic tarballs: the script-mode source dirs (``sourcedir.tar.gz``) and ``model.tar.gz``.

The same folder always gives the same bytes (sorted names, fixed mtime/uid/gid/mode, no gzip timestamp), so
CDK asset hashes only change when the code does. ``__pycache__`` folders and ``*.pyc``/``*.pyo`` files are
left out. Used by the training stack at synth time and by the local training runner.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

FIXED_MTIME = 0
EXCLUDED_DIRS = frozenset(
    {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints"}
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def _files(src_dir: Path) -> list:
    out = []
    for root, dirs, files in os.walk(src_dir):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(EXCLUDED_SUFFIXES) or name.startswith("."):
                continue
            out.append(Path(root) / name)
    return sorted(out, key=lambda p: p.relative_to(src_dir).as_posix())


def _write_tarball(entries: list, out_path: Path) -> Path:
    """``entries``: (archive name, file path) pairs, written in the given order."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path in entries:
            data = Path(path).read_bytes()
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME) as gz:
        gz.write(buffer.getvalue())
    os.replace(tmp, out_path)
    return out_path


def make_sourcedir_tarball(src_dir: Path, out_path: Path) -> Path:
    """Pack ``src_dir``'s files (paths relative to it) into ``out_path`` (a ``.tar.gz``); return ``out_path``."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"source folder {src_dir} does not exist")
    entries = [(p.relative_to(src_dir).as_posix(), p) for p in _files(src_dir)]
    if not entries:
        raise FileNotFoundError(f"source folder {src_dir} holds no files to pack")
    return _write_tarball(entries, out_path)


def make_model_tarball(model_dir: Path, out_path: Path) -> Path:
    """Pack a model folder (``model.joblib``, ``schema.json``, ...) into ``model.tar.gz`` at ``out_path``."""
    model_dir = Path(model_dir)
    if not (model_dir / "model.joblib").exists():
        raise FileNotFoundError(f"no model.joblib in {model_dir}")
    entries = [(p.relative_to(model_dir).as_posix(), p) for p in _files(model_dir)]
    return _write_tarball(entries, out_path)
