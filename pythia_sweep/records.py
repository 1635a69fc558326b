"""The checkpoint record, typed, and a sweep's numbers as one long table, identity as columns.

`CheckpointRecord` is the one value a checkpoint's result is: the worker builds it, the driver records it, every
reader reads it. Its numbers nest by condition, contrast, null and evidence (checkpoint_run.measure); the long table
flattens them to a row per (revision, condition or contrast, metric). Readers that selected conditions by
name would have to parse names back ("L06H03" -> layer 6, head 3; a group called `Late_heads` is then
mistaken for a head). The long table keeps identity as data instead:

  revision, step     which checkpoint
  method             the measuring method's label ("per-head", "upstream"); None for evidence
  condition          the condition or contrast name as the task gives it ("baseline", "clean", a group, a contrast, "null03")
  kind               baseline, clean, group, all, head, null, contrast, evidence, head_map, circuit or edge
  layer, head        for a single head (kind head) or a head's evidence score; None otherwise
  metric             success_rate, logprob_diff, prob_diff, restoration; for evidence icl_score, induction, previous_token
  value, ci_low, ci_high   the number and its 95% interval (None where there is none)

    import pythia_sweep
    frame = pythia_sweep.load_long_table()            # the latest sweep in the project's store
    frame.filter(pl.col("kind") == "head", pl.col("metric") == "logprob_diff")

The same table is written beside each report as long.parquet.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

STATUSES = ("ok", "failed", "duplicate")  # measured; could not be fetched or loaded; identical weights to another


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint's result: built by the worker (checkpoint_run.run_checkpoint), recorded by the driver (tracking),
    read back by everyone (report, refine, the long table). Small and JSON-able: no tensors cross Ray.

    The measured part (status "ok") is scoring.summarize_record's numbers (`conditions`, `contrasts`, `null`),
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
    conditions: dict[str, dict] = field(default_factory=dict)  # condition -> kind, heads, method, metrics, intervals
    contrasts: dict[str, dict] = field(default_factory=dict)  # contrast -> plus, minus, metric, values, intervals
    null: dict = field(default_factory=dict)  # the null sets' values, band and each group's placement
    evidence: dict | None = None  # ICL score, per-head induction and previous-token scores
    head_map: dict | None = None  # every head's attribution, the exact effects of the heads checked, their agreement
    circuit: dict | None = None  # circuits.circuit_at: every edge's attribution, the circuit kept, its faithfulness by patching
    prompts: dict[str, dict] = field(default_factory=dict)  # prompt id -> clean, corrupted, answers
    responses: list[dict] = field(default_factory=list)  # one row per (condition, prompt)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not valid: one of {', '.join(STATUSES)}")
        object.__setattr__(self, "duplicate_of", tuple(self.duplicate_of or ()))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"duplicate_of": list(self.duplicate_of)}

    @classmethod
    def from_json(cls, data: dict, where: str = "record.json") -> CheckpointRecord:
        """A record read back from the store; a key the type does not know is refused, never dropped."""
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise ValueError(f"{where}: {unknown[0]}={data[unknown[0]]!r} is not valid: a record field ({', '.join(sorted(FIELDS))})")
        return cls(**{k: v for k, v in data.items() if v is not None or k in NULLABLE})


FIELDS = {f.name for f in dataclasses.fields(CheckpointRecord)}
NULLABLE = {"step", "error", "commit", "weights_digest", "worker", "evidence", "head_map", "circuit"}


CONDITION_METRICS = ("success_rate", "logprob_diff", "prob_diff", "restoration")
CONTRAST_METRICS = ("success_rate", "logprob_diff", "prob_diff")
ROW_KEY = {"success_rate": "success", "logprob_diff": "logprob_diff", "prob_diff": "prob_diff"}  # a response row's field
SCHEMA = {
    "revision": pl.String, "step": pl.Int64, "method": pl.String, "condition": pl.String, "kind": pl.String,
    "layer": pl.Int64, "head": pl.Int64, "metric": pl.String, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}  # fmt: skip


def _rows(record: CheckpointRecord) -> Iterable[dict]:
    base = {"revision": record.revision, "step": record.step}
    for name, c in record.conditions.items():
        single = c.get("kind") == "head" and len(c.get("heads", [])) == 1
        layer, head = c["heads"][0] if single else (None, None)
        for metric in CONDITION_METRICS:
            if c.get(metric) is None:
                continue
            ci = c.get(f"{metric}_ci") or (None, None)
            yield base | {"method": c.get("method"), "condition": name, "kind": c.get("kind"), "layer": layer, "head": head,
                          "metric": metric, "value": c[metric], "ci_low": ci[0], "ci_high": ci[1]}  # fmt: skip
    for name, c in record.contrasts.items():
        for metric in CONTRAST_METRICS:
            ci = c.get(f"{metric}_ci") or (None, None)
            yield base | {"method": c.get("method"), "condition": name, "kind": "contrast", "layer": None, "head": None,
                          "metric": metric, "value": c.get(metric), "ci_low": ci[0], "ci_high": ci[1]}  # fmt: skip
    evidence = record.evidence or {}
    if evidence:
        empty = {"method": None, "kind": "evidence", "ci_low": None, "ci_high": None}
        yield base | empty | {"condition": "icl", "layer": None, "head": None, "metric": "icl_score", "value": evidence["icl_score"]}
        for score in ("induction", "previous_token"):
            for layer, row in enumerate(evidence[score]):
                for head, value in enumerate(row):
                    yield base | empty | {"condition": score, "layer": layer, "head": head, "metric": score, "value": value}


def _head_map_rows(record: CheckpointRecord) -> Iterable[dict]:
    """The head map's numbers: each head's attribution, each checked head's exact effect (nats of logprob_diff)."""
    found = record.head_map or {}
    if not found:
        return
    base = {"revision": record.revision, "step": record.step, "method": None, "kind": "head_map", "ci_low": None, "ci_high": None}
    for layer, row in enumerate(found["attribution"]):
        for head, value in enumerate(row):
            yield base | {"condition": "attribution", "layer": layer, "head": head, "metric": "logprob_diff_effect", "value": value}
    for name, value in found["exact"].items():
        layer, head = found["exact_heads"][name]
        yield base | {"condition": "exact", "layer": layer, "head": head, "metric": "logprob_diff_effect", "value": value}


def _circuit_rows(record: CheckpointRecord) -> Iterable[dict]:
    """The circuit's numbers: its size, faithfulness (with its interval) and gap (kind "circuit"), and every edge's
    attribution score in nats (kind "edge", condition "sender->receiver", value 1 for `in_circuit` where kept)."""
    found = record.circuit or {}
    if not found:
        return
    base = {"revision": record.revision, "step": record.step, "method": None, "layer": None, "head": None}
    for metric in CIRCUIT_METRICS:
        ci = found.get(f"{metric}_ci") or (None, None)
        yield base | {"condition": "circuit", "kind": "circuit", "metric": metric, "value": found.get(metric), "ci_low": ci[0], "ci_high": ci[1]}
    kept = {f"{u}->{v}" for u, v in found["edges"]}
    for edge, score in found["every_edge"].items():
        yield base | {"condition": edge, "kind": "edge", "metric": "attribution", "value": score, "ci_low": None, "ci_high": None}
        yield base | {"condition": edge, "kind": "edge", "metric": "in_circuit", "value": float(edge in kept), "ci_low": None, "ci_high": None}


CIRCUIT_METRICS = ("size", "faithfulness", "gap")  # a circuit's numbers in the long table and MLflow (circuit/<metric>)


def long_table(records: Iterable[CheckpointRecord]) -> pl.DataFrame:
    """Every number of every ok record, one row each (columns: SCHEMA), in the records' order."""
    rows = [row for r in records if r.ok for row in itertools.chain(_rows(r), _head_map_rows(r), _circuit_rows(r))]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def per_prompt(record: CheckpointRecord, condition: str, metric: str) -> dict[str, float] | None:
    """Each prompt's value of `metric` under `condition` in one record, by prompt id; None where the
    condition was not decoded (a success rate needs a generation)."""
    key = ROW_KEY[metric]
    rows = {r["prompt_id"]: r[key] for r in record.responses if r["condition"] == condition}
    if not rows or any(v is None for v in rows.values()):
        return None
    return {pid: float(v) for pid, v in rows.items()}


def shown_text(row: dict) -> str:
    """A response row's generation as a person reads it: with its special tokens (prompts.shown_generation); the
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
