"""The pieces the local cloud daemon runs, and what each is given.

The daemon (``trainserve.local.daemon``) starts moto first (in its own process, ``control_plane``), creates the project's base resources, then
starts each component in order with a ``LocalContext`` and stops them in reverse order. A component is a
small object with ``name``, ``start(ctx)``, ``stop()`` and ``status() -> dict`` (shown by
``trainserve local status``; a ``"alarms"`` list there is shown as breached alarms).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stacks.config import Config
from trainserve.target import Names, Target


@dataclass(frozen=True)
class LocalContext:
    config: Config
    names: Names
    state_dir: Path  # .trainserve/ : everything the local cloud writes lives here
    aws_endpoint_url: str  # the moto server, e.g. http://127.0.0.1:4566
    runtime_url: str  # the local SageMaker runtime, e.g. http://127.0.0.1:4567
    api_url: str  # the local prediction API, e.g. http://127.0.0.1:4568
    warehouse_path: Path  # the DuckDB file
    region: str
    log: logging.Logger
    # what Firehose does on its own (flush, call counts): ``control_plane.MotoProcess`` in the daemon; None
    # means moto runs in this process (``control_plane.InProcessControlPlane``)
    control_plane: Any = None

    def target(self) -> Target:
        """A CLI-style Target on this local cloud (its ``client(service)`` talks to moto / the runtime)."""
        return Target(
            mode="local",
            region=self.region,
            config=self.config,
            names=self.names,
            aws_endpoint_url=self.aws_endpoint_url,
            runtime_url=self.runtime_url,
            api_url=self.api_url,
            warehouse={"path": str(self.warehouse_path)},
        )


class Component(Protocol):
    name: str

    def start(self, ctx: LocalContext) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...
