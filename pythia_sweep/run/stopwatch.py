"""Seconds per named part of a sweep's start-up (published revisions, pre-flight, store, Ray, worker processes):
what `make bench` prints, in the order the parts ran (SweepResult.startup)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Stopwatch:
    """Seconds per named part of a sweep's start-up, in the order they ran: what `make bench` prints."""

    def __init__(self):
        self.parts: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start
