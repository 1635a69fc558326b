"""How answers are scored: the published success check, the log-prob difference, and honest intervals.

Success is decided by the methodology's `check_bug_fixed`, exactly as published (generalised only in
which two numbers it looks for; the defaults are the published 9.8 / 9.11). Intervals are over distinct
prompts, never over repeats of one greedy prompt: 15 identical trials are one observation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def check_bug_fixed(output: str, correct: str = "9.8", wrong: str = "9.11") -> bool:
    """The methodology's success criterion, verbatim for the defaults."""
    output_lower = output.lower()
    correct_patterns = [f"{correct} is bigger", f"{correct} is larger", correct]
    bug_patterns = [f"{wrong} is bigger", f"{wrong} is larger", wrong]

    has_correct = any(pattern in output_lower for pattern in correct_patterns)
    has_bug = any(pattern in output_lower for pattern in bug_patterns)

    return has_correct and not has_bug


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (scipy); (0, 1) when there is no observation."""
    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_mean_interval(
    values: Sequence[float], resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; None with fewer than two observations (no interval)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,), np.mean, n_resamples=resamples, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_difference_interval(
    a: Sequence[float], b: Sequence[float], resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Bootstrap interval of mean(a) - mean(b) over paired observations (same prompts)."""
    return bootstrap_mean_interval(np.asarray(a, float) - np.asarray(b, float), resamples, seed, confidence)


def summarize_condition(successes: Sequence[bool], diffs: Sequence[float], weights: Sequence[int], resamples: int, seed: int) -> dict:
    """Rate, Wilson interval, mean log-prob difference and its bootstrap interval, over distinct prompts."""
    k, n = int(sum(successes)), len(successes)
    rate = k / n if n else float("nan")
    low, high = wilson_interval(k, n)
    diff_ci = bootstrap_mean_interval(diffs, resamples, seed)
    return {
        "n_prompts": n,
        "n_trials": int(sum(weights)),
        "successes": k,
        "success_rate": rate,
        "success_ci": [low, high],
        "logprob_diff": float(np.mean(diffs)) if n else float("nan"),
        "logprob_diff_ci": list(diff_ci) if diff_ci else None,
    }


def null_position(observed: float, null: Sequence[float]) -> dict:
    """Where an observed value falls in a null distribution: percentile and a permutation p-value.

    p = (1 + #{null >= observed}) / (K + 1): the exact p-value of a Monte Carlo permutation test, never 0.
    """
    null = np.asarray(null, dtype=float)
    if len(null) == 0:
        return {"percentile": None, "p_value": None}
    return {
        "percentile": float(stats.percentileofscore(null, observed, kind="weak")),
        "p_value": float((1 + np.sum(null >= observed)) / (len(null) + 1)),
    }
