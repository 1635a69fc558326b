"""Every number of a checkpoint record, once: one walk (`numbers`) that yields each with its identity as fields.

The views are all of this walk:
  long_table(records)     one row per number (columns: SCHEMA), written beside each report as long.parquet and read
                          in a notebook by `pythia_sweep.load_long_table()`
  named(numbers)          '<name>' -> value, with '<name>_ci_low' / '<name>_ci_high' for an interval: the MLflow
                          metrics of a checkpoint run (the `compared` part) and the report's timeline columns

A number's identity is data, never parsed back from its name:

  revision, step     which checkpoint
  method             the measuring method's label ("per-head", "upstream"); None outside conditions and contrasts
  condition          the condition or contrast name as the task gives it ("baseline", "clean", a group, a contrast,
                     "null03"); for other kinds what the number is of ("icl", "induction", "attribution", a stage ...)
  kind               a condition's kind (baseline, clean, group, all, head, null), or contrast, null_band,
                     null_position, evidence, head_map, circuit, edge, time
  layer, head        for a single head (kind head) or a head's score; None otherwise
  metric             success_rate, logprob_diff, prob_diff, restoration; icl_score, induction, previous_token ...
  value, ci_low, ci_high   the number and its 95% interval (None where there is none)

Beside its identity a number says where it is shown: `name` (its flat name, None for the long table only: each
edge's attribution) and `compared` (logged on the checkpoint's MLflow run and compared across runs in the UI;
single heads, null sets and per-head scores stay in the record, the parquet and the report).

    import pythia_sweep
    frame = pythia_sweep.load_long_table()            # the latest sweep in the project's store
    frame.filter(pl.col("kind") == "head", pl.col("metric") == "logprob_diff")
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import polars as pl

from pythia_sweep.records import CheckpointRecord
from pythia_sweep.stats import CONDITION_METRICS, CONTRAST_METRICS, SUMMARY_KINDS, Estimate, head_name

CIRCUIT_METRICS = ("size", "faithfulness", "gap")  # a circuit's numbers (circuit/<metric>)
EVIDENCE_SCORES = ("induction", "previous_token")  # per-head attention-pattern scores: the keys measure/evidence.attention_evidence returns


@dataclass(frozen=True)
class Number:
    """One number of one checkpoint, with its identity (see the module's docstring)."""

    revision: str
    step: int | None
    method: str | None
    condition: str
    kind: str
    layer: int | None
    head: int | None
    metric: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    name: str | None = None  # its flat name; None: in the long table only
    compared: bool = False  # on the checkpoint's MLflow run, compared across runs

    @property
    def measured(self) -> bool:
        """A number of the model, not of the machine: every kind but a stage's seconds (the report's columns, the
        parent's charts against training step and refine read these only)."""
        return self.kind != "time"


SCHEMA = {
    "revision": pl.String, "step": pl.Int64, "method": pl.String, "condition": pl.String, "kind": pl.String,
    "layer": pl.Int64, "head": pl.Int64, "metric": pl.String, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}  # fmt: skip


def numbers(record: CheckpointRecord) -> Iterator[Number]:
    """Every number of an ok record, each once: conditions, contrasts, the null, evidence, the head map, the
    circuit and its edges, the timings."""
    if not record.ok:
        return

    def number(condition: str, kind: str, metric: str, value, *, estimate: Estimate | None = None, method=None, layer=None,
               head=None, name=None, compared=False) -> Number:  # fmt: skip
        ci = estimate.ci if estimate and estimate.ci else (None, None)
        value = estimate.value if estimate else value
        return Number(record.revision, record.step, method, condition, kind, layer, head, metric,
                      None if value is None else float(value), *ci, name, compared)  # fmt: skip

    for name, c in record.conditions.items():
        layer, head = c.single_head or (None, None)
        for metric in CONDITION_METRICS:
            if c.estimate(metric).value is not None:
                yield number(name, c.kind, metric, None, estimate=c.estimate(metric), method=c.method, layer=layer, head=head,
                             name=f"{name}/{metric}", compared=c.kind in SUMMARY_KINDS)  # fmt: skip
    for name, c in record.contrasts.items():
        for metric in CONTRAST_METRICS:
            yield number(name, "contrast", metric, None, estimate=c.estimate(metric), method=c.method, name=f"{name}/{metric}", compared=True)
    null = record.null
    for metric, band in null.bands.items():
        for q, value in (("q05", band.q05), ("q95", band.q95)):
            yield number("null", "null_band", f"{metric}_{q}", value, name=f"null/{metric}_{q}", compared=True)
    for group, positions in null.groups.items():
        for metric, position in positions.items():
            if position.p_value is not None:
                yield number(group, "null_position", f"{metric}_p", position.p_value, name=f"null/{group}/{metric}_p", compared=True)
                yield number(group, "null_position", f"{metric}_percentile", position.percentile, name=f"null/{group}/{metric}_percentile",
                             compared=True)  # fmt: skip
    yield from _evidence(record.evidence, number)
    yield from _head_map(record.head_map, number)
    yield from _circuit(record.circuit, number)
    for stage, seconds in record.timings.items():
        yield number(stage, "time", "seconds", seconds, name=f"time/{stage}", compared=True)


def _evidence(evidence: dict | None, number) -> Iterator[Number]:
    if not evidence:
        return
    yield number("icl", "evidence", "icl_score", evidence["icl_score"], name="evidence/icl_score", compared=True)
    for score in EVIDENCE_SCORES:
        table = evidence[score]
        yield number(score, "evidence", f"{score}_max", max(max(row) for row in table), name=f"evidence/{score}_max", compared=True)
        for layer, row in enumerate(table):
            for head, value in enumerate(row):
                yield number(score, "evidence", score, value, layer=layer, head=head, name=f"evidence/{score}/{head_name(layer, head)}")


def _head_map(found: dict | None, number) -> Iterator[Number]:
    """The agreement of attribution with exact patching (compared across runs), the checked heads' exact effects
    (charted against step) and every head's attribution (nats of logprob_diff)."""
    if not found:
        return
    yield number("agreement", "head_map", "top_k_found", found["top_k_found"], name="head_map/top_k_found", compared=True)
    if found["rank_correlation"] is not None:
        yield number("agreement", "head_map", "rank_correlation", found["rank_correlation"], name="head_map/rank_correlation", compared=True)
    for key, (layer, head) in found["exact_heads"].items():
        yield number("exact", "head_map", "logprob_diff_effect", found["exact"][key], layer=layer, head=head,
                     name=f"head_map/exact/{head_name(layer, head)}", compared=True)  # fmt: skip
    for layer, row in enumerate(found["attribution"]):
        for head, value in enumerate(row):
            yield number("attribution", "head_map", "logprob_diff_effect", value, layer=layer, head=head,
                         name=f"head_map/attribution/{head_name(layer, head)}")  # fmt: skip


def _circuit(found: dict | None, number) -> Iterator[Number]:
    """The circuit's size, faithfulness (with its interval) and gap (kind "circuit"; no circuit: all None but the
    gap), and every edge's attribution in nats (kind "edge", condition "sender->receiver"; `in_circuit` 1 where kept)."""
    if not found:
        return
    for metric in CIRCUIT_METRICS:
        yield number("circuit", "circuit", metric, None, estimate=Estimate.of(found, metric), name=f"circuit/{metric}", compared=True)
    kept = {f"{u}->{v}" for u, v in found["edges"]}
    for edge, score in found["every_edge"].items():
        yield number(edge, "edge", "attribution", score)
        yield number(edge, "edge", "in_circuit", float(edge in kept))


def long_table(records: Iterable[CheckpointRecord]) -> pl.DataFrame:
    """Every number of every ok record, one row each (columns: SCHEMA), in the records' order."""
    rows = [tuple(getattr(n, column) for column in SCHEMA) for r in records for n in numbers(r)]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def named(found: Iterable[Number]) -> dict[str, float]:
    """Numbers by their flat names, each interval as '<name>_ci_low' / '<name>_ci_high'; numbers without a name or a
    value are left out."""
    out: dict[str, float] = {}
    for n in found:
        if n.name is None or n.value is None:
            continue
        out[n.name] = n.value
        if n.ci_low is not None:
            out[f"{n.name}_ci_low"], out[f"{n.name}_ci_high"] = n.ci_low, n.ci_high
    return out
