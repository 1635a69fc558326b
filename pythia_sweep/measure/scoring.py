"""How a checkpoint's rows become numbers: per-condition metrics with honest intervals, contrasts, the null.

Per condition, over distinct prompts (15 identical greedy trials of one prompt are one observation):
  success_rate  share of generations the task's success rule accepts, Wilson 95% interval (scipy)
  logprob_diff  log sum p(correct) - log sum p(wrong), teacher-forced over the answers' tokens; bootstrap 95%
  prob_diff     sum p(correct) - sum p(wrong) (Hanna et al. 2023); bootstrap 95%
  restoration   (patched - corrupted) / (clean - corrupted) of the mean log-prob difference, the Wang et al. /
                Tigges et al. normalization: 0 = no repair, 1 = the clean run's level; paired bootstrap 95%;
                undefined (None) where clean and corrupted do not differ beyond noise (restoration_is_defined)
A contrast is the difference of two conditions' metric (plus - minus) with a paired bootstrap interval over
prompts. The null places each group among random head sets of the same size: percentile and a Monte Carlo
permutation p-value.
"""

from __future__ import annotations

import math

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from pythia_sweep.errors import NonFiniteNumbers
from pythia_sweep.records import ROW_KEY
from pythia_sweep.stats import CONTRAST_METRICS, ConditionStats, ContrastStats, Estimate, MethodSet, NullBand, NullPosition, NullStats

MEAN_METRICS = ("logprob_diff", "prob_diff")  # per-row numbers averaged over prompts
NULL_METRICS = CONTRAST_METRICS  # the null places a group on whichever metric its headline is taken on


def check_finite(logprobs: Sequence[Sequence[float]], rows: Sequence[tuple], dtype: object) -> None:
    """Refuse a NaN or an infinity among the answers' log-probabilities of `rows` ((condition, pair) each, in the same
    order), naming the first such row: no row's number is ever one. `dtype`: the model's, said in the message."""
    for r, values in enumerate(logprobs):
        if not all(math.isfinite(v) for v in values):
            cond, pair = rows[r]
            raise NonFiniteNumbers(f"non-finite answer log-probabilities ({', '.join(f'{v:.4g}' for v in values)}) of condition "
                                   f"{cond.name!r} on prompt {pair.id!r} in {dtype}")  # fmt: skip


def describe_rows(rows: Sequence[tuple]) -> str:
    """A batch's rows ((condition, pair) each) in words: how many, of which conditions and prompts (the first few)."""
    conditions = list(dict.fromkeys(cond.name for cond, _ in rows))
    prompts = list(dict.fromkeys(pair.id for _, pair in rows))
    few = lambda names: ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")  # noqa: E731
    return f"{len(rows)} rows (conditions {few(conditions)}; prompts {few(prompts)})"


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


def restoration(patched: Sequence[float], corrupted: Sequence[float], clean: Sequence[float]) -> float | None:
    """(mean patched - mean corrupted) / (mean clean - mean corrupted); None where clean = corrupted."""
    gap = float(np.mean(clean) - np.mean(corrupted))
    return None if abs(gap) < 1e-9 else float(np.mean(patched) - np.mean(corrupted)) / gap


def restoration_is_defined(clean: Sequence[float], corrupted: Sequence[float], resamples: int, seed: int) -> bool:
    """Whether (patched - corrupted) / (clean - corrupted) means anything: the clean run's log-prob difference
    must exceed the corrupted run's beyond noise (its paired 95% interval excludes 0). Where the gap is within its
    noise (step0 of a model: restoration 1.90, interval -10.1..11.0), restoration is undefined, not a number."""
    ci = paired_difference_interval(clean, corrupted, resamples, seed)
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def restoration_interval(
    patched: Sequence[float], corrupted: Sequence[float], clean: Sequence[float], resamples: int, seed: int,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Paired percentile bootstrap of `restoration` over prompts; None with fewer than two prompts."""
    arrays = [np.asarray(a, dtype=float) for a in (patched, corrupted, clean)]
    if len(arrays[0]) < 2 or restoration(*arrays) is None:
        return None

    def statistic(p, b, c, axis=-1):
        return (p.mean(axis) - b.mean(axis)) / (c.mean(axis) - b.mean(axis))

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # degenerate resamples (no spread) are handled below
        result = stats.bootstrap(
            arrays, statistic, paired=True, vectorized=True, n_resamples=resamples, confidence_level=confidence,
            method="percentile", rng=np.random.default_rng(seed),
        )  # fmt: skip
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if np.isnan(low) or np.isnan(high):
        value = restoration(*arrays)
        return (value, value) if np.all(arrays[0] == arrays[1]) or np.all(arrays[0] == arrays[2]) else None
    return low, high


def summarize_condition(rows: list[dict], corrupted: list[dict], clean: list[dict], resamples: int, seed: int,
                        restoration_defined: bool = True) -> dict:  # fmt: skip
    """Every metric of one condition and its interval, over distinct prompts (rows in prompt order): the counts and
    the `Estimate` of each metric, the measured fields of a ConditionStats."""
    n = len(rows)
    out = {"n_prompts": n, "n_trials": int(sum(r["weight"] for r in rows)), "decoded": any(r["success"] is not None for r in rows)}
    if out["decoded"]:
        k = int(sum(r["success"] for r in rows))
        out |= {"successes": k, "success_rate": Estimate(k / n if n else float("nan"), wilson_interval(k, n))}
    else:  # teacher-forced only: no generation was read, so there is no success rate
        out |= {"successes": None, "success_rate": Estimate()}
    for metric in MEAN_METRICS:
        values = [r[metric] for r in rows]
        out[metric] = Estimate(float(np.mean(values)) if n else float("nan"), bootstrap_mean_interval(values, resamples, seed))
    diffs = [[r["logprob_diff"] for r in side] for side in (rows, corrupted, clean)]
    # clean and corrupted not differing beyond noise: a ratio over that gap would be noise too, so no restoration
    out["restoration"] = Estimate(restoration(*diffs), restoration_interval(*diffs, resamples, seed)) if restoration_defined else Estimate()
    return out


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


def summarize_record(conditions, contrasts, rows: list[dict], resamples: int, seed: int) -> dict:
    """Per-condition statistics, every contrast per method, and the null control: a record's numbers, typed
    (`conditions`: name -> ConditionStats, `contrasts`: name -> ContrastStats, `null`: NullStats).

    `conditions` in their fixed order (condition i's bootstrap is seeded `seed + i`); `contrasts` are the
    task's, taken for each method (named with the method's prefix beyond the first method: MethodSet.named).
    """
    by_condition: dict[str, list[dict]] = {}
    for row in rows:
        by_condition.setdefault(row["condition"], []).append(row)
    corrupted, clean = by_condition["baseline"], by_condition["clean"]
    defined = restoration_is_defined([r["logprob_diff"] for r in clean], [r["logprob_diff"] for r in corrupted], resamples, seed)
    condition_stats = {
        cond.name: ConditionStats(kind=cond.kind, heads=tuple(tuple(h) for h in cond.heads), prompt=cond.prompt, method=cond.method,
                                  **summarize_condition(by_condition[cond.name], corrupted, clean, resamples, seed + i, defined))
        for i, cond in enumerate(conditions)
    }  # fmt: skip
    methods = MethodSet(tuple(dict.fromkeys(c.method for c in conditions)))
    contrast_stats = {}
    for label in methods.labels:
        for contrast in contrasts:
            plus = methods.named(label, contrast.plus)
            minus = contrast.minus if contrast.minus == "baseline" else methods.named(label, contrast.minus)
            estimates = {}
            for metric in CONTRAST_METRICS:
                key = ROW_KEY[metric]
                value = condition_stats[plus].estimate(metric).value - condition_stats[minus].estimate(metric).value
                ci = paired_difference_interval([r[key] for r in by_condition[plus]], [r[key] for r in by_condition[minus]], resamples, seed)
                estimates[metric] = Estimate(value, ci)
            contrast_stats[methods.named(label, contrast.name)] = ContrastStats(plus=plus, minus=minus, metric=contrast.metric, method=label,
                                                                                **estimates)  # fmt: skip
    nulls = [c for c in conditions if c.kind == "null"]
    if not nulls:
        return {"conditions": condition_stats, "contrasts": contrast_stats, "null": NullStats()}
    size = len(nulls[0].heads)
    bands = {}
    for metric in NULL_METRICS:
        values = [condition_stats[c.name].estimate(metric).value for c in nulls]
        if any(v is None for v in values):  # a metric not read for every null set (not decoded): no band
            continue
        bands[metric] = NullBand(tuple(values), float(np.quantile(values, 0.05)), float(np.quantile(values, 0.95)))
    groups = {  # only a group of the null sets' size can be placed among them
        c.name: {m: NullPosition(**null_position(condition_stats[c.name].estimate(m).value, band.values)) for m, band in bands.items()}
        for c in conditions if c.kind == "group" and c.method == methods.primary and len(c.heads) == size
    }  # fmt: skip
    return {"conditions": condition_stats, "contrasts": contrast_stats, "null": NullStats(len(nulls), size, bands, groups)}


NULL_LEVEL = 0.05  # a group beats the null when p <= this


def null_test(null: NullStats | None, contrast, null_settings: dict | None = None) -> dict:
    """The one reading of the null control for a verdict: the headline's plus group placed among the random
    head sets on the headline's own metric. Status "beats" / "does not beat" (p <= NULL_LEVEL or not),
    "no null possible" (no other set of that size exists in the pool: the group is all of it), "not run"
    (the sweep drew no null sets), or "not applicable" (the plus side is no group of the null's size)."""
    null = null or NullStats()
    metric, group = contrast.metric, contrast.plus
    possible = (null_settings or {}).get("possible")
    out = {"group": group, "metric": metric, "p_value": None, "percentile": None, "k": null.k, "size": null.size,
           "possible": possible, "at_floor": False}  # fmt: skip
    if not null.k:
        if possible == 0:
            return out | {"status": "no null possible",
                          "statement": f"no other set of {null_settings.get('size', 'as many')} heads exists "
                                       f"among {null_settings.get('pool_description', 'the pool')} (the {group} group is all of them; "
                                       "null_pool = \"all-layers\" in the task draws from every layer)"}  # fmt: skip
        return out | {"status": "not run", "statement": "the sweep drew no random head sets (null_subsets = 0)"}
    position = null.position(group, metric)
    if position is None or position.p_value is None:
        return out | {"status": "not applicable",
                      "statement": f"the {group} side is not a group of the null sets' size ({null.size} heads)"}  # fmt: skip
    p, floor = position.p_value, 1 / (null.k + 1)
    status = "beats" if p <= NULL_LEVEL else "does not beat"
    sets = f"{null.k} random {null.size}-head sets on {metric.replace('_', ' ')}"
    if status == "does not beat" and p <= floor:  # above every set drawn: too few sets, not an ordinary group
        why = (f"the pool holds only {possible} such sets" if possible is not None and possible <= null.k else
               f"null_subsets = {math.ceil(1 / NULL_LEVEL) - 1} or more could")  # fmt: skip
        statement = (f"the {group} group is above all {sets}, but {null.k} sets cannot give a null p at or below "
                     f"{NULL_LEVEL:g} (the smallest possible is {floor:.2g}; {why})")  # fmt: skip
    else:
        statement = (f"the {group} group {'stands' if status == 'beats' else 'does not stand'} out among {sets} "
                     f"(null p = {p:.2g}; the smallest possible with {null.k} sets is {floor:.2g})")  # fmt: skip
    return out | {"status": status, "p_value": p, "percentile": position.percentile, "statement": statement, "at_floor": p <= floor}
