"""The checkpoint record, typed: the one value a checkpoint's result is.

The worker builds it (measure/checkpoint.run_checkpoint), the driver records it (tracking), every reader reads it
(report, refine). Its statistics are typed (stats.py: per condition, per contrast, the null); numbers.py walks
every number it holds, with its identity, for the long table, MLflow and the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pythia_sweep.stats import ConditionStats, ContrastStats, NullStats

STATUSES = ("ok", "failed", "duplicate")  # measured; could not be fetched or loaded; identical weights to another


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint's result: built by the worker (measure/checkpoint.run_checkpoint), recorded by the driver (tracking),
    read back by everyone (report, refine, the long table). Small and JSON-able: no tensors cross Ray.

    The measured part (status "ok") is scoring.summarize_record's statistics (`conditions`, `contrasts`, `null`),
    the plan it ran (`settings`), the attention evidence, the prompts and one response row per
    (condition, prompt). `dataclasses.replace` makes a changed copy: a record is never edited in place."""

    model: str  # Hub repo id
    revision: str  # the branch measured, e.g. "step1000"
    step: int | None  # training step from the revision name; None for names without one
    sweep_id: str  # SweepConfig.sweep_id of the sweep it belongs to
    task: dict  # Task.describe(): name, question, source, digest
    status: str = "failed"  # one of STATUSES
    error: str | None = None  # why it failed, or which revision it duplicates
    commit: str | None = None  # the git commit the branch pointed to
    weight_sha256: dict[str, str] = field(default_factory=dict)  # weight file -> sha256
    weights_digest: str | None = None  # one hash over all weight files: equal digests, identical weights
    duplicate_of: tuple[str, ...] = ()  # the revision measured in its place (status "duplicate")
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    worker: dict | None = None  # host, pid, node, peak memory, threads of the worker that measured it
    settings: dict = field(default_factory=dict)  # groups, layout, prompts, null plan, methods, batch size, device
    conditions: dict[str, ConditionStats] = field(default_factory=dict)  # condition -> kind, heads, method, each metric's estimate
    contrasts: dict[str, ContrastStats] = field(default_factory=dict)  # contrast -> plus, minus, metric, each metric's estimate
    null: NullStats = field(default_factory=NullStats)  # the null sets' bands and each group's placement among them
    evidence: dict | None = None  # ICL score, per-head induction and previous-token scores
    head_map: dict | None = None  # every head's attribution, the exact effects of the heads checked, their agreement
    circuit: dict | None = None  # measure/circuits/search.circuit_at: every edge's attribution, the circuit kept, its faithfulness by patching
    prompts: dict[str, dict] = field(default_factory=dict)  # prompt id -> clean, corrupted, answers
    responses: list[dict] = field(default_factory=list)  # one row per (condition, prompt)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not valid: one of {', '.join(STATUSES)}")
        object.__setattr__(self, "duplicate_of", tuple(self.duplicate_of or ()))
        for what, values, kind in (("conditions", self.conditions.values(), ConditionStats), ("contrasts", self.contrasts.values(), ContrastStats),
                                   ("null", [self.null], NullStats)):  # fmt: skip
            wrong = next((v for v in values if not isinstance(v, kind)), None)
            if wrong is not None:
                raise TypeError(f"{what} holds a {type(wrong).__name__}: a {kind.__name__} (stats.py; from JSON: CheckpointRecord.from_json)")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        plain = dataclasses.asdict(dataclasses.replace(self, conditions={}, contrasts={}, null=NullStats()))
        return plain | {"duplicate_of": list(self.duplicate_of), "null": self.null.to_json(),
                        "conditions": {n: c.to_json() for n, c in self.conditions.items()},
                        "contrasts": {n: c.to_json() for n, c in self.contrasts.items()}}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict, where: str = "record.json") -> CheckpointRecord:
        """A record read back from the store; a key the type does not know is refused, never dropped."""
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise ValueError(f"{where}: {unknown[0]}={data[unknown[0]]!r} is not valid: a record field ({', '.join(sorted(FIELDS))})")
        typed = {
            "conditions": {n: ConditionStats.from_json(c, f"{where}: condition {n!r}") for n, c in (data.get("conditions") or {}).items()},
            "contrasts": {n: ContrastStats.from_json(c, f"{where}: contrast {n!r}") for n, c in (data.get("contrasts") or {}).items()},
            "null": NullStats.from_json(data.get("null"), f"{where}: null"),
        }  # fmt: skip
        return cls(**{k: v for k, v in data.items() if v is not None or k in NULLABLE} | typed)


FIELDS = {f.name for f in dataclasses.fields(CheckpointRecord)}
NULLABLE = {"step", "error", "commit", "weights_digest", "worker", "evidence", "head_map", "circuit"}


ROW_KEY = {"success_rate": "success", "logprob_diff": "logprob_diff", "prob_diff": "prob_diff"}  # a response row's field per metric


def per_prompt(record: CheckpointRecord, condition: str, metric: str) -> dict[str, float] | None:
    """Each prompt's value of `metric` under `condition` in one record, by prompt id; None where the
    condition was not decoded (a success rate needs a generation)."""
    key = ROW_KEY[metric]
    rows = {r["prompt_id"]: r[key] for r in record.responses if r["condition"] == condition}
    if not rows or any(v is None for v in rows.values()):
        return None
    return {pid: float(v) for pid, v in rows.items()}


def shown_text(row: dict) -> str:
    """A response row's generation as a person reads it: with its special tokens (task/align.shown_generation); the
    rows of a record written before they kept it are given it by tracking/legacy.py."""
    return repr(row["generation"])


def responses_text(record: CheckpointRecord) -> str:
    """A checkpoint's generations, readable: a header, then one line per (condition, prompt)."""
    lines = [
        f"# {record.model} @ {record.revision} (step {record.step}), task {record.task['name']}",
        "# condition, prompt id, OK where the task's success rule accepts the generation, the generation",
    ]
    for pid, p in record.prompts.items():
        lines.append(f"# prompt {pid}: clean {p['clean']!r} -> {p['correct']}{' ...' if p['n_correct'] > 5 else ''}; "
                     f"corrupted {p['corrupted']!r} -> {p['wrong']}{' ...' if p['n_wrong'] > 5 else ''}")  # fmt: skip
    lines += ["", f"{'condition':>16}  {'prompt id':<28} OK  generation"]
    lines += [
        f"{r['condition']:>16}  {r['prompt_id']:<28} {'OK' if r['success'] else '  '}  "
        + ("(not decoded: teacher-forced metrics only)" if r["response"] is None else shown_text(r))
        for r in record.responses
    ]
    return "\n".join(lines) + "\n"
