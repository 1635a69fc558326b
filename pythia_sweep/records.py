"""A sweep's numbers as one long table: a row per (revision, condition or contrast, metric), identity as columns.

A checkpoint record (engine.measure) nests its numbers by condition, contrast, null and evidence. Readers that
select by name would have to parse names back ("L06H03" -> layer 6, head 3; a group called `Late_heads` is then
mistaken for a head). The long table keeps identity as data instead:

  revision, step     which checkpoint
  method             the measuring method's label ("per-head", "upstream"); None for evidence
  condition          the condition or contrast name as the task gives it ("even", "baseline", "strength", "null03")
  kind               baseline, clean, group, all, head, null, contrast, or evidence
  layer, head        for a single head (kind head) or a head's evidence score; None otherwise
  metric             success_rate, logprob_diff, prob_diff, restoration; for evidence icl_score, induction, previous_token
  value, ci_low, ci_high   the number and its 95% interval (None where there is none)

    import pythia_sweep
    frame = pythia_sweep.load_long_table()            # the latest sweep in the project's store
    frame.filter(pl.col("kind") == "head", pl.col("metric") == "logprob_diff")

The same table is written beside each report as long.parquet.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

CONDITION_METRICS = ("success_rate", "logprob_diff", "prob_diff", "restoration")
CONTRAST_METRICS = ("success_rate", "logprob_diff", "prob_diff")
ROW_KEY = {"success_rate": "success", "logprob_diff": "logprob_diff", "prob_diff": "prob_diff"}  # a response row's field
SCHEMA = {
    "revision": pl.String, "step": pl.Int64, "method": pl.String, "condition": pl.String, "kind": pl.String,
    "layer": pl.Int64, "head": pl.Int64, "metric": pl.String, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}  # fmt: skip


def _rows(record: dict) -> Iterable[dict]:
    base = {"revision": record["revision"], "step": record.get("step")}
    for name, c in (record.get("conditions") or {}).items():
        single = c.get("kind") == "head" and len(c.get("heads", [])) == 1
        layer, head = c["heads"][0] if single else (None, None)
        for metric in CONDITION_METRICS:
            if c.get(metric) is None:
                continue
            ci = c.get(f"{metric}_ci") or (None, None)
            yield base | {"method": c.get("method"), "condition": name, "kind": c.get("kind"), "layer": layer, "head": head,
                          "metric": metric, "value": c[metric], "ci_low": ci[0], "ci_high": ci[1]}  # fmt: skip
    for name, c in (record.get("contrasts") or {}).items():
        for metric in CONTRAST_METRICS:
            ci = c.get(f"{metric}_ci") or (None, None)
            yield base | {"method": c.get("method"), "condition": name, "kind": "contrast", "layer": None, "head": None,
                          "metric": metric, "value": c.get(metric), "ci_low": ci[0], "ci_high": ci[1]}  # fmt: skip
    evidence = record.get("evidence") or {}
    if evidence:
        empty = {"method": None, "kind": "evidence", "ci_low": None, "ci_high": None}
        yield base | empty | {"condition": "icl", "layer": None, "head": None, "metric": "icl_score", "value": evidence["icl_score"]}
        for score in ("induction", "previous_token"):
            for layer, row in enumerate(evidence[score]):
                for head, value in enumerate(row):
                    yield base | empty | {"condition": score, "layer": layer, "head": head, "metric": score, "value": value}


def long_table(records: Iterable[dict]) -> pl.DataFrame:
    """Every number of every ok record, one row each (columns: SCHEMA), in the records' order."""
    return pl.DataFrame([row for r in records if r.get("status") == "ok" for row in _rows(r)], schema=SCHEMA, orient="row")


def per_prompt(record: dict, condition: str, metric: str) -> dict[str, float] | None:
    """Each prompt's value of `metric` under `condition` in one record, by prompt id; None where the
    condition was not decoded (a success rate needs a generation)."""
    key = ROW_KEY[metric]
    rows = {r["prompt_id"]: r[key] for r in record.get("responses", []) if r["condition"] == condition}
    if not rows or any(v is None for v in rows.values()):
        return None
    return {pid: float(v) for pid, v in rows.items()}


def load_long_table(sweep: str | None = None, *, tracking_uri: str | None = None) -> pl.DataFrame:
    """A sweep's long table (parent run id, sweep_id or name; default the latest), read from the tracking store."""
    from pythia_sweep.tracking import SweepReader

    reader = SweepReader(tracking_uri)
    return long_table(reader.load_records(reader.find_sweep(sweep)))
