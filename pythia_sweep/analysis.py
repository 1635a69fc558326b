"""The methodology's analysis plan, as small pure functions over a headline timeline.

The headline is the task's first contrast (e.g. strength = one group's success rate - another's), one
value per checkpoint ordered by training step. Thresholds default to the methodology's (0.5 / 0.3 / 0.1);
a task sets its own per contrast. Training fractions use the model's real last step (143000 for Pythia),
not the 1,000,000 the methodology assumed.

A contrast has a sign: it runs from minus (the minus side specialises; the methodology's -1, "the odd heads")
to plus. `Levels` holds the one sign rule every reader uses: a crossing is `sign * value > strong`, for the
plus side (sign +1) or the minus side (sign -1), and a class is the size of |value| on the side it lies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pythia_sweep.levels import SIDES, STRONG, WEAK, Levels  # noqa: F401  (Levels: the analysis's vocabulary, read through it by the report)


def emergence_index(strengths: Sequence[float], threshold: float = STRONG, sign: int = 1) -> int | None:
    """Index of the first checkpoint past the threshold on the `sign` side (sign * strength > threshold), or None."""
    return next((i for i, s in enumerate(strengths) if sign * s > threshold), None)


BANDS = ("early", "mid", "late")  # the first 25% of training, the middle 50%, the last 25%


def emergence_type(fraction: float | None) -> str:
    """early (first 25% of training) / mid (middle 50%) / late (last 25%) / none."""
    if fraction is None:
        return "none"
    return "early" if fraction < 0.25 else "mid" if fraction < 0.75 else "late"


def bands_spanned(after: int | None, by: int, final_step: int | None) -> list[str]:
    """The bands of training a crossing in (after, by] can lie in: one band means its type is known; more, that
    it is not. `after` None: from the start of training."""
    if not final_step:
        return []
    first = emergence_type(0.0 if after is None else (after + 1) / final_step)
    last = emergence_type(by / final_step)
    return list(BANDS[BANDS.index(first) : BANDS.index(last) + 1])


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
    A checkpoint added inside the window (by `refine`) can only show the rise steeper, never spread it out.
    The window is said by the checkpoint it starts or ends at (`anchor`, `anchored`: "from" / "to"): its other
    end is one doubling away, rarely a saved step."""
    if len(values) < 2:
        return {"shape": "flat", "rise": 0.0, "doubling_rise": 0.0, "share": None, "window": None, "anchor": None, "anchored": None}
    x, y = training_time(steps), np.asarray(values, dtype=float)
    rise = float(y.max() - y[0])
    starts = np.concatenate([x, x - 1.0]).clip(x[0], x[-1])
    ends = (starts + 1.0).clip(x[0], x[-1])
    gains = np.interp(ends, x, y) - np.interp(starts, x, y)
    k = int(np.argmax(gains))
    window = [float(2 ** starts[k] - 1), float(2 ** ends[k] - 1)]
    from_checkpoint = k < len(x)  # the first half of the candidates start at a checkpoint, the second end at one
    anchor = int(steps[k]) if from_checkpoint else int(steps[k - len(x)])
    shape = "flat" if rise <= weak else "sudden" if gains[k] >= sudden_share * rise else "gradual"
    return {"shape": shape, "rise": rise, "doubling_rise": float(gains[k]), "share": float(gains[k] / rise) if rise > 0 else None,
            "window": [round(w) for w in window], "anchor": anchor, "anchored": "from" if from_checkpoint else "to"}  # fmt: skip


def doubling_words(shape: dict) -> str:
    """Where a rise_shape window lies, by the saved step it is anchored at: "the doubling from step 256"."""
    return f"the doubling of training steps {shape['anchored']} step {shape['anchor']:,}"


TAIL = 0.025  # of prompt resamples: (1 - 0.95) / 2


def min_prompts(tail: float = TAIL) -> int:
    """The fewest prompts whose resamples can make a `tail` of their own: n prompts give C(2n - 1, n) distinct
    resamples (multisets), and a 2.5% tail needs at least 1 / 0.025 = 40 of them (5 prompts: 126; 4: 35)."""
    return next(n for n in range(1, 100) if math.comb(2 * n - 1, n) >= 1 / tail)


def crossing_interval(steps: Sequence[int], revisions: Sequence[str], per_prompt: np.ndarray, threshold: float, sign: int,
                      resamples: int, seed: int, confidence: float = 0.95) -> dict | None:  # fmt: skip
    """When, and how sure: the span the first crossing of `threshold` on the `sign` side lies in, from the prompts
    and the checkpoint grid together.

    Prompts are resampled (the same resample at every checkpoint, the same resamples for either sign) and each
    resample's first checkpoint past the threshold found. `share_crossing` is the share of resamples that cross at
    all. The central `confidence` range of those first checkpoints, [lo, hi], is widened by the grid: a crossing
    first seen at checkpoint lo happened after the checkpoint before lo. So the crossing lies in (`after`, `by`]:
    `after` the step of the checkpoint before lo (None where lo is the first checkpoint: no before was measured),
    `by` the step of hi (None where more than the tail of resamples never cross). `per_prompt` is (checkpoints,
    prompts), in step order. None with fewer than two prompts (nothing to resample)."""
    values = np.asarray(per_prompt, dtype=float)  # (C, P)
    n_checkpoints, n_prompts = values.shape
    if n_prompts < 2 or n_checkpoints == 0:
        return None
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=resamples)  # (B, P) draws per prompt
    series = values @ counts.T / n_prompts  # (C, B): each resample's mean at each checkpoint
    past = sign * series > threshold
    first = np.where(past.any(axis=0), past.argmax(axis=0), n_checkpoints)  # (B,) index; C = never
    tail = (1 - confidence) / 2
    lo, hi = int(np.quantile(first, tail, method="lower")), int(np.quantile(first, 1 - tail, method="higher"))
    found = lo < n_checkpoints
    return {
        "sign": sign, "side": SIDES[sign], "threshold": threshold, "share_crossing": float(np.mean(first < n_checkpoints)),
        "resamples": int(resamples), "prompts": int(n_prompts), "confidence": confidence,
        "after": int(steps[lo - 1]) if found and lo > 0 else None, "after_revision": revisions[lo - 1] if found and lo > 0 else None,
        "by": int(steps[hi]) if hi < n_checkpoints else None, "by_revision": revisions[hi] if hi < n_checkpoints else None,
        "from_first_checkpoint": found and lo == 0, "share_at_first": float(np.mean(first == 0)),
    }  # fmt: skip


def is_monotonic(strengths: Sequence[float], tolerance: float = WEAK, sign: int = 1) -> bool:
    """True if the strength never falls back (on the `sign` side: toward zero) by more than `tolerance` from its
    running extreme."""
    best = float("-inf")
    for s in strengths:
        if sign * s < best - tolerance:
            return False
        best = max(best, sign * s)
    return True


def crossing_events(steps: Sequence[int], strengths: Sequence[float], threshold: float = STRONG, sign: int = 1) -> list[dict]:
    """appear / disappear / reappear events: each crossing of the threshold on the `sign` side, with its step."""
    events, past, seen = [], False, False
    for step, s in zip(steps, strengths):
        if sign * s > threshold and not past:
            events.append({"event": "reappear" if seen else "appear", "step": step})
            past = seen = True
        elif sign * s <= threshold and past:
            events.append({"event": "disappear", "step": step})
            past = False
    return events
