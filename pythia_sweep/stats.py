"""What a checkpoint's statistics are, as types: each number with its interval, per condition, per contrast, and the null.

The worker builds them (measure/scoring.summarize_record); the record carries them (records.CheckpointRecord);
numbers.py walks them. On disk (the record.json each checkpoint run keeps in MLflow) each is the same flat JSON
object it always was: `<metric>` and `<metric>_ci` keys side by side, so stored sweeps read back unchanged; a key
the type does not know is refused, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Head = tuple[int, int]  # (layer, head)


def head_name(layer: int, head: int) -> str:
    """A head as a key in a record or an MLflow name ("L06H03"): fixed width, sorts by layer. Never parsed back."""
    return f"L{layer:02d}H{head:02d}"


def head_label(layer: int, head: int) -> str:
    """A head as a person reads it in a sentence or a figure ("6.3", layer then head)."""
    return f"{layer}.{head}"


def head_sender(layer: int, head: int) -> str:
    """A head as the circuit graph names it, a sender ("a6.3": layer 6's attention, head 3)."""
    return f"a{layer}.{head}"


def head_senders(n_layers: int, n_heads: int) -> dict[str, Head]:
    """Each head's name in the circuit graph and its (layer, head): readers look names up, never parse them."""
    return {head_sender(layer, head): (layer, head) for layer in range(n_layers) for head in range(n_heads)}

SUMMARY_KINDS = ("baseline", "clean", "group", "all")  # the condition kinds a person reads as lines and compares across runs
CONDITION_METRICS = ("success_rate", "logprob_diff", "prob_diff", "restoration")
CONTRAST_METRICS = ("success_rate", "logprob_diff", "prob_diff")


@dataclass(frozen=True)
class MethodSet:
    """The measuring methods a sweep runs, in order: the first is primary (its conditions and contrasts keep the
    task's names; the baseline is measured with it), every other one's names carry its label as a prefix."""

    labels: tuple[str, ...]

    @property
    def primary(self) -> str:
        return self.labels[0]

    def named(self, label: str, name: str) -> str:
        """A condition's or contrast's name under `label`: 'even' for the primary method, 'upstream/even' otherwise."""
        return name if label == self.primary else f"{label}/{name}"


@dataclass(frozen=True)
class Estimate:
    """A number and its 95% interval; `value` None where the number was not measured (a success rate with nothing
    decoded), `ci` None where there is no interval (one prompt, or a restoration whose gap is noise)."""

    value: float | None = None
    ci: tuple[float, float] | None = None

    @classmethod
    def of(cls, data: Mapping, metric: str) -> Estimate:
        ci = data.get(f"{metric}_ci")
        return cls(data.get(metric), tuple(ci) if ci else None)

    def to_json(self, metric: str) -> dict:
        return {metric: self.value, f"{metric}_ci": list(self.ci) if self.ci else None}


def _pick(stats, metric: str, metrics: tuple[str, ...]) -> Estimate:
    """One metric's estimate of a ConditionStats or ContrastStats; a metric it does not hold is refused by name."""
    if metric not in metrics:
        raise ValueError(f"metric={metric!r} is not valid: one of {', '.join(metrics)}")
    return getattr(stats, metric)


def _estimates_json(stats, metrics: tuple[str, ...]) -> dict:
    """Each metric's value and interval side by side, as the record's JSON has always held them."""
    return {k: v for metric in metrics for k, v in _pick(stats, metric, metrics).to_json(metric).items()}


def _refuse_unknown(data: Mapping, known: set[str], what: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what}: {unknown[0]}={data[unknown[0]]!r} is not valid: one of {', '.join(sorted(known))}")


@dataclass(frozen=True)
class ConditionStats:
    """One condition's numbers over the prompts: what was patched (kind, heads, the prompt it was patched from,
    the method) and each metric as an `Estimate`."""

    kind: str  # baseline, clean, group, all, head, null (measure/conditions.py)
    heads: tuple[Head, ...]
    prompt: str  # the prompt patched from
    method: str  # the measuring method's label
    n_prompts: int
    n_trials: int  # prompts counted by their weights
    decoded: bool  # whether a generation was read (a success rate exists)
    successes: int | None
    success_rate: Estimate = Estimate()
    logprob_diff: Estimate = Estimate()
    prob_diff: Estimate = Estimate()
    restoration: Estimate = Estimate()

    def estimate(self, metric: str) -> Estimate:
        return _pick(self, metric, CONDITION_METRICS)

    @property
    def single_head(self) -> Head | None:
        """The head, for a condition that patches one head alone (kind "head"); None otherwise."""
        return self.heads[0] if self.kind == "head" and len(self.heads) == 1 else None

    def to_json(self) -> dict:
        return {"kind": self.kind, "heads": [list(h) for h in self.heads], "prompt": self.prompt, "method": self.method,
                "n_prompts": self.n_prompts, "n_trials": self.n_trials, "decoded": self.decoded, "successes": self.successes,
                **_estimates_json(self, CONDITION_METRICS)}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping, where: str = "condition") -> ConditionStats:
        _refuse_unknown(data, CONDITION_KEYS, where)
        return cls(kind=data["kind"], heads=tuple(tuple(h) for h in data["heads"]), prompt=data["prompt"], method=data["method"],
                   n_prompts=data["n_prompts"], n_trials=data["n_trials"], decoded=data["decoded"], successes=data.get("successes"),
                   **{m: Estimate.of(data, m) for m in CONDITION_METRICS})  # fmt: skip


CONDITION_KEYS = {"kind", "heads", "prompt", "method", "n_prompts", "n_trials", "decoded", "successes"} | {
    k for m in CONDITION_METRICS for k in (m, f"{m}_ci")}  # fmt: skip


@dataclass(frozen=True)
class ContrastStats:
    """A contrast at one checkpoint: plus minus minus (paired over prompts) on every metric; `metric` is the one
    the task reads it on (its headline value)."""

    plus: str  # a condition's name
    minus: str
    metric: str
    method: str
    success_rate: Estimate = Estimate()
    logprob_diff: Estimate = Estimate()
    prob_diff: Estimate = Estimate()

    def estimate(self, metric: str) -> Estimate:
        return _pick(self, metric, CONTRAST_METRICS)

    @property
    def value(self) -> float | None:
        """The contrast on its own metric."""
        return self.estimate(self.metric).value

    def to_json(self) -> dict:
        out = {"plus": self.plus, "minus": self.minus, "metric": self.metric, "method": self.method, **_estimates_json(self, CONTRAST_METRICS)}
        return out | {"value": self.value, "value_ci": out[f"{self.metric}_ci"]}  # the headline value, for readers of the JSON

    @classmethod
    def from_json(cls, data: Mapping, where: str = "contrast") -> ContrastStats:
        _refuse_unknown(data, CONTRAST_KEYS, where)
        return cls(plus=data["plus"], minus=data["minus"], metric=data["metric"], method=data["method"],
                   **{m: Estimate.of(data, m) for m in CONTRAST_METRICS})  # fmt: skip


CONTRAST_KEYS = {"plus", "minus", "metric", "method", "value", "value_ci"} | {k for m in CONTRAST_METRICS for k in (m, f"{m}_ci")}


@dataclass(frozen=True)
class NullPosition:
    """Where a group falls among the null's random head sets on one metric."""

    percentile: float | None
    p_value: float | None  # (1 + sets at or above the group) / (sets + 1)


@dataclass(frozen=True)
class NullBand:
    """The null sets' values of one metric and their 5% and 95% quantiles."""

    values: tuple[float, ...]
    q05: float
    q95: float


@dataclass(frozen=True)
class NullStats:
    """The null control at one checkpoint: `k` random head sets of `size` heads, each metric's band (a metric not
    read for every set has none), and where each group of that size falls among them."""

    k: int = 0
    size: int | None = None
    bands: dict[str, NullBand] = field(default_factory=dict)
    groups: dict[str, dict[str, NullPosition]] = field(default_factory=dict)  # group -> metric -> position

    def position(self, group: str, metric: str) -> NullPosition | None:
        return self.groups.get(group, {}).get(metric)

    def to_json(self) -> dict:
        out: dict = {"k": self.k, "groups": {g: {m: vars(p) for m, p in by.items()} for g, by in self.groups.items()}}
        if self.size is not None:
            out["size"] = self.size
        for metric, band in self.bands.items():
            out |= {metric: list(band.values), f"{metric}_q05": band.q05, f"{metric}_q95": band.q95}
        return out

    @classmethod
    def from_json(cls, data: Mapping | None, where: str = "null") -> NullStats:
        data = data or {}
        bands = {m: NullBand(tuple(data[m]), data[f"{m}_q05"], data[f"{m}_q95"]) for m in CONTRAST_METRICS if m in data}
        _refuse_unknown(data, {"k", "size", "groups"} | {k for m in bands for k in (m, f"{m}_q05", f"{m}_q95")}, where)
        groups = {g: {m: NullPosition(**p) for m, p in by.items()} for g, by in data.get("groups", {}).items()}
        return cls(k=data.get("k", 0), size=data.get("size"), bands=bands, groups=groups)


