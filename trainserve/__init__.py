"""trainserve: the operator CLI and the local cloud of the Train-Then-Serve stack."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = PROJECT_ROOT / "lambdas"


def _expose_project_code() -> None:
    """Make ``stacks``, ``training``, ``inference`` and every Lambda folder importable.

    Each ``lambdas/<name>/`` folder is a self-contained Lambda asset whose modules import their siblings
    by plain name (as the Lambda runtime does), so module names are unique across all Lambda folders.
    """
    paths = [str(PROJECT_ROOT)] + sorted(
        str(p) for p in LAMBDAS_DIR.iterdir() if p.is_dir() and p.name[0] != "_"
    )
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)


if LAMBDAS_DIR.is_dir():
    _expose_project_code()

__version__ = "0.1.0"
