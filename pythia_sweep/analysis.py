"""The methodology's analysis plan, as small pure functions over a headline timeline.

The headline is the task's first contrast (e.g. strength = one group's success rate - another's), one
value per checkpoint ordered by training step. Thresholds default to the methodology's (0.5 / 0.3 / 0.1);
a task sets its own per contrast. Training fractions use the model's real last step (143000 for Pythia),
not the 1,000,000 the methodology assumed.
"""

from __future__ import annotations

from collections.abc import Sequence

STRONG, MODERATE, WEAK = 0.5, 0.3, 0.1
LEVELS = (STRONG, MODERATE, WEAK)


def strength_class(value: float, levels: Sequence[float] = LEVELS) -> str:
    """strong / moderate / weak / none by |value| (above levels[0] / [1] / [2]); "none" is "below weak"."""
    s = abs(value)
    return "strong" if s > levels[0] else "moderate" if s > levels[1] else "weak" if s > levels[2] else "none"


def emergence_index(strengths: Sequence[float], threshold: float = STRONG) -> int | None:
    """Index of the first checkpoint with strength > threshold, or None."""
    return next((i for i, s in enumerate(strengths) if s > threshold), None)


def emergence_type(fraction: float | None) -> str:
    """early (first 25% of training) / mid (middle 50%) / late (last 25%) / none."""
    if fraction is None:
        return "none"
    return "early" if fraction < 0.25 else "mid" if fraction < 0.75 else "late"


def hypothesis(kind: str, hypotheses: dict[str, str]) -> str:
    return hypotheses.get(kind, "no clear emergence: the headline never passes the strong threshold")


def rise_shape(strengths: Sequence[float], sudden_share: float = 0.5, weak: float = WEAK) -> dict:
    """Gradual vs sudden: the largest jump between neighbouring checkpoints against the whole rise.

    The rise is max(strength) - the first value; a single step carrying at least `sudden_share` of it
    is "sudden". No rise at all (never above the first value by more than `weak`) is "flat".
    """
    if len(strengths) < 2:
        return {"shape": "flat", "largest_jump": 0.0, "rise": 0.0, "jump_index": None}
    rise = max(strengths) - strengths[0]
    jumps = [b - a for a, b in zip(strengths, strengths[1:])]
    j = max(range(len(jumps)), key=lambda i: jumps[i])
    if rise <= weak:
        shape = "flat"
    else:
        shape = "sudden" if jumps[j] >= sudden_share * rise else "gradual"
    return {"shape": shape, "largest_jump": jumps[j], "rise": rise, "jump_index": j + 1}


def is_monotonic(strengths: Sequence[float], tolerance: float = WEAK) -> bool:
    """True if the strength never falls by more than `tolerance` below its running maximum."""
    best = float("-inf")
    for s in strengths:
        if s < best - tolerance:
            return False
        best = max(best, s)
    return True


def crossing_events(steps: Sequence[int], strengths: Sequence[float], threshold: float = STRONG) -> list[dict]:
    """appear / disappear / reappear events: each crossing of the threshold, with its step."""
    events, above, seen = [], False, False
    for step, s in zip(steps, strengths):
        if s > threshold and not above:
            events.append({"event": "reappear" if seen else "appear", "step": step})
            above = seen = True
        elif s <= threshold and above:
            events.append({"event": "disappear", "step": step})
            above = False
    return events


def duplicate_groups(revisions: Sequence[str], digests: Sequence[str | None]) -> list[list[str]]:
    """Groups of revisions whose weight files hash identically (a public checkpoint served twice)."""
    groups: dict[str, list[str]] = {}
    for revision, digest in zip(revisions, digests):
        if digest:
            groups.setdefault(digest, []).append(revision)
    return [g for g in groups.values() if len(g) > 1]


def interval_too_wide(low: float | None, high: float | None, limit: float = 0.5) -> bool:
    """An interval wider than `limit` (or missing) cannot tell strong from none."""
    return low is None or high is None or (high - low) > limit
