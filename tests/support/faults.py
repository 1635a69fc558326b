"""Fault injection for the reliability tests, handed to `run_sweep(before_checkpoint=...)`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KillOnce:
    """Kill the worker process abruptly in the middle of each checkpoint the first time it meets it
    (a marker file per revision in `folder` remembers, across the restarted workers)."""

    folder: str

    def __call__(self, revision: str) -> None:
        marker = Path(self.folder) / revision
        if not marker.exists():
            marker.touch()
            os._exit(1)
