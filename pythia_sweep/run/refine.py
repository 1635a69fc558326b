"""Pinpoint the step: bisect over published revisions between the last checkpoint below the emergence
threshold and the first above it, until two neighbouring published revisions bracket the change.

A sweep on a doubling schedule leaves gaps of up to tens of thousands of steps; Pythia publishes a
revision every 1000 steps, so bisection reaches a 1000-step bracket in log2(gap / 1000) extra fetches
instead of sweeping every revision in the gap. The sweep's own records are reused as known points.
Where specialization rises and falls again, there is no single step: refine says so and brackets the
first rise only.
"""

from __future__ import annotations

import os

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pythia_sweep import analysis
from pythia_sweep.levels import STRONG
from pythia_sweep.numbers import named, numbers
from pythia_sweep.stats import SUMMARY_KINDS
from pythia_sweep.hub.revisions import Checkpoint


def metric_value(record, metric: str) -> float:
    """A record's value of `metric`, by the record's own names: a contrast ("strength": its headline
    metric) or any named number ("clean/success_rate", "strength/logprob_diff", "evidence/icl_score", ...)."""
    if metric in record.contrasts:
        return record.contrasts[metric].value
    flat = named(n for n in numbers(record) if n.measured)
    if metric not in flat:
        known = sorted(record.contrasts) + sorted(n.name for n in numbers(record) if n.kind in SUMMARY_KINDS + ("contrast",))[:12]
        raise ValueError(f"metric={metric!r} is not in this sweep's records: use one of {', '.join(known)} ...")
    return flat[metric]


@dataclass
class Bracket:
    below: str | None  # the last published revision below the threshold
    above: str | None  # the first published revision above it
    fetched: list[str] = field(default_factory=list)  # revisions measured by the bisection
    gap: int = 0  # published revisions strictly between the sweep's bracketing checkpoints
    monotonic: bool = True
    events: list[dict] = field(default_factory=list)
    note: str = ""


def bisect_emergence(
    published: Sequence[Checkpoint],
    known: dict[str, float],
    measure: Callable[[str], float],
    threshold: float = STRONG,
) -> Bracket:
    """Narrow the first crossing of `threshold` to two neighbouring published revisions.

    `known` maps revisions already measured (the sweep) to their strength; `measure` measures one more.
    """
    order = [c.revision for c in published]
    points = sorted((order.index(r), s) for r, s in known.items() if r in order)
    steps = [published[i].step for i, _ in points]
    values = [s for _, s in points]
    events = analysis.crossing_events(steps, values, threshold)
    monotonic = not any(e["event"] == "disappear" for e in events)
    first = analysis.emergence_index(values, threshold)
    if first is None:
        return Bracket(None, None, events=events, monotonic=monotonic, note="no known checkpoint is above the threshold: nothing to bracket")
    hi = points[first][0]
    if first == 0:
        return Bracket(None, order[hi], events=events, monotonic=monotonic, note="already above the threshold at the earliest swept checkpoint")
    lo = points[first - 1][0]
    bracket = Bracket(order[lo], order[hi], gap=hi - lo - 1, events=events, monotonic=monotonic)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        strength = measure(order[mid])
        bracket.fetched.append(order[mid])
        if strength > threshold:
            hi = mid
        else:
            lo = mid
    bracket.below, bracket.above = order[lo], order[hi]
    if not monotonic:
        bracket.note = (
            "specialization rises and falls again ("
            + ", ".join(f"{e['event']} at step {e['step']}" for e in events)
            + "): there is no single emergence step; this brackets the first rise only"
        )
    return bracket


def refine_sweep(config, task, published: Sequence[Checkpoint], records: Iterable, metric: str, threshold: float, *,
                 tracking_uri: str, ray_address: str | None = None) -> Bracket:  # fmt: skip
    """Bisect a recorded sweep: its ok `records` are the known points of `metric` (a contrast or any named
    number); each probe is a one-checkpoint sweep of the same config, recorded in the same MLflow sweep, and read
    from the record `run_sweep` returns (no store re-read per probe)."""
    from pythia_sweep.errors import PythiaSweepError
    from pythia_sweep.run.driver import run_sweep

    known = {r.revision: metric_value(r, metric) for r in records if r.ok}
    # A probe is one checkpoint: in this process (no Ray to start) unless a cluster or a worker count is asked for
    probe_config = config.replace(workers=0) if config.workers == "auto" and not (ray_address or os.environ.get("RAY_ADDRESS")) else config

    def measure(revision: str) -> float:
        result = run_sweep(probe_config.replace(checkpoints=(revision,)), task, tracking_uri=tracking_uri, ray_address=ray_address,
                           published=published, progress=False)  # fmt: skip
        record = next((r for r in result.records if r.revision == revision), None)
        if record is None or not record.ok:
            raise PythiaSweepError(f"probe {revision} " + (f"failed: {record.error}" if record else "was not measured: it is recorded already"))
        return metric_value(record, metric)

    return bisect_emergence(published, known, measure, threshold)
