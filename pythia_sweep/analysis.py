"""The methodology's analysis plan, as small pure functions over a headline timeline.

The headline is the task's first contrast (e.g. strength = one group's success rate - another's), one
value per checkpoint ordered by training step. Thresholds default to the methodology's (0.5 / 0.3 / 0.1);
a task sets its own per contrast. Training fractions use the model's real last step (143000 for Pythia),
not the 1,000,000 the methodology assumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


SUDDEN_SHARE = 0.5  # a rise is sudden when at least this share of it happens within one doubling of the step


def training_time(steps: Sequence[int]) -> np.ndarray:
    """Training time on the scale the shape is judged on: log2(step + 1), so one unit is one doubling."""
    return np.log2(np.asarray(steps, dtype=float) + 1.0)


def rise_shape(steps: Sequence[int], values: Sequence[float], weak: float = WEAK, sudden_share: float = SUDDEN_SHARE) -> dict:
    """Gradual vs sudden, judged on training time, not on how densely checkpoints were sampled.

    The rise is max(value) - the first value. The series is read as a line through the checkpoints on
    log2(step + 1); its largest increase over any window of one doubling (the extremes of a piecewise-linear
    difference lie where a window starts or ends at a checkpoint) is the `doubling_rise`. "sudden" when that
    carries at least `sudden_share` of the rise, "gradual" otherwise, "flat" when the rise is at most `weak`.
    A checkpoint added inside the window (by `refine`) can only show the rise steeper, never spread it out."""
    if len(values) < 2:
        return {"shape": "flat", "rise": 0.0, "doubling_rise": 0.0, "share": None, "window": None}
    x, y = training_time(steps), np.asarray(values, dtype=float)
    rise = float(y.max() - y[0])
    starts = np.concatenate([x, x - 1.0]).clip(x[0], x[-1])
    ends = (starts + 1.0).clip(x[0], x[-1])
    gains = np.interp(ends, x, y) - np.interp(starts, x, y)
    k = int(np.argmax(gains))
    window = [float(2 ** starts[k] - 1), float(2 ** ends[k] - 1)]
    shape = "flat" if rise <= weak else "sudden" if gains[k] >= sudden_share * rise else "gradual"
    return {"shape": shape, "rise": rise, "doubling_rise": float(gains[k]), "share": float(gains[k] / rise) if rise > 0 else None,
            "window": [round(w) for w in window]}  # fmt: skip


def emergence_step_interval(steps: Sequence[int], per_prompt: np.ndarray, threshold: float, resamples: int, seed: int,
                            confidence: float = 0.95) -> dict | None:  # fmt: skip
    """How sure the emergence step is: resample prompts (the same resample at every checkpoint), recompute the
    series and its first step above `threshold`, and report the central `confidence` range of those steps.

    `per_prompt` is (checkpoints, prompts): each prompt's contrast value at each checkpoint, in step order.
    `high` is None when more than (1 - confidence) / 2 of the resamples never cross: the sweep cannot say the
    effect emerges at all. None with fewer than two prompts (nothing to resample)."""
    values = np.asarray(per_prompt, dtype=float)  # (C, P)
    n_checkpoints, n_prompts = values.shape
    if n_prompts < 2 or n_checkpoints == 0:
        return None
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=resamples)  # (B, P) draws per prompt
    series = values @ counts.T / n_prompts  # (C, B): each resample's mean at each checkpoint
    above = series > threshold
    first = np.where(above.any(axis=0), above.argmax(axis=0), n_checkpoints)  # (B,) index; C = never
    steps_inf = np.append(np.asarray(steps, dtype=float), np.inf)[first]
    tail = (1 - confidence) / 2
    low, high = np.quantile(steps_inf, tail, method="lower"), np.quantile(steps_inf, 1 - tail, method="higher")
    return {
        "low": None if np.isinf(low) else int(low), "high": None if np.isinf(high) else int(high),
        "share_emerging": float(np.mean(first < n_checkpoints)), "resamples": int(resamples), "prompts": int(n_prompts),
        "confidence": confidence,
    }


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


def interval_too_wide(low: float | None, high: float | None, limit: float = 0.5) -> bool:
    """An interval wider than `limit` (or missing) cannot tell strong from none."""
    return low is None or high is None or (high - low) > limit
