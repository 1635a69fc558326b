"""A sweep's records -> a timeline (one row per checkpoint), the analysis plan and the summary.

`reduce` keeps one record per checkpoint and orders them by training step. Each policy is one function it
calls: where training ends (hub/revisions.TrainingEnd), which revisions are one checkpoint and whose the
measurement is (duplicates.identical_weights), which null test the verdict cites (scoring.null_test, for each side of a contrast: claim.nulls_by_side); what
the numbers support is claim.py's rule, put in words by verdict.py. A checkpoint not analysed says why (`excluded_because`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pythia_sweep import analysis
from pythia_sweep.analysis import SIDES, Levels
from pythia_sweep.hub.revisions import Checkpoint, TrainingEnd
from pythia_sweep.hub.duplicates import IdenticalWeights, identical_weights
from pythia_sweep.stats import SUMMARY_KINDS, MethodSet
from pythia_sweep.config import SweepConfig
from pythia_sweep.numbers import long_table, named, numbers
from pythia_sweep.records import CheckpointRecord, per_prompt
from pythia_sweep.report import verdict as verdicts
from pythia_sweep.report.claim import Claim, SweepContext, clean_check, nulls_by_side
from pythia_sweep.report.heads import circuit_summary, discovery_summary, head_map_summary
from pythia_sweep.task.definition import Contrast, Task
from pythia_sweep.tracking.status import final_status


def timeline(records: list[CheckpointRecord], final_step: int | None, twins: list[IdenticalWeights] = ()) -> pl.DataFrame:
    """One row per checkpoint, ordered by step: status, hashes, whether it is analysed (and why not), and every
    number of the record under its flat name (numbers.named) ('<condition>/<metric>', '<contrast>/<metric>', intervals).

    `final_step` (hub/revisions.TrainingEnd) sets the training fractions; `twins` (duplicates.identical_weights)
    says which revisions are one checkpoint: only the revision a measurement belongs to is analysed."""
    excluded = {}
    for group in twins:
        for revision in group.members:
            if group.owner is None:
                others = ", ".join(m for m in group.members if m != revision)
                excluded[revision] = f"identical weights to {others}; which step they were saved at is unknown"
            elif revision != group.owner:
                excluded[revision] = f"identical weights to {group.owner}; the measurement belongs to {group.owner}"
    rows = []
    for r in records:
        step, ok = r.step, r.ok
        reason = excluded.get(r.revision) or (None if ok else r.error or r.status)
        if ok and step is None:
            reason = "no training step in the revision name"
        row = {
            "revision": r.revision,
            "step": step,
            "fraction": step / final_step if final_step and step is not None else None,
            "status": r.status,
            "error": r.error,
            "commit": r.commit,
            "weights_digest": r.weights_digest,
            "duplicate_of": next((g.owner or "unknown" for g in twins if r.revision in g.members and r.revision != g.owner), None),
            "analysed": ok and reason is None,
            "excluded_because": reason,
            "n_prompts": r.settings.get("n_prompts"),
        }
        row |= named(n for n in numbers(r) if n.measured)
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.sort("step", nulls_last=True) if len(frame) else frame


def drawn_conditions(records: list[CheckpointRecord]) -> list[str]:
    """The conditions drawn as lines: baseline, clean, the groups and all heads of the primary method (the one
    the baseline is measured with), by each condition's own kind and method fields."""
    shown: dict[str, None] = {}
    for r in records:
        baseline = r.conditions.get("baseline")
        shown |= {n: None for n, c in r.conditions.items() if c.kind in SUMMARY_KINDS and baseline and c.method == baseline.method}
    return list(shown)


def column(frame: pl.DataFrame, name: str) -> list:
    """A timeline column's values, or one None per checkpoint where no checkpoint had that number."""
    return frame[name].to_list() if name in frame.columns else [None] * len(frame)


def per_prompt_matrix(records: dict[str, CheckpointRecord], revisions: list[str], contrast: str) -> np.ndarray | None:
    """(checkpoints, prompts): each prompt's contrast value (plus - minus on the contrast's metric) at each
    revision, over the prompts every revision measured; None where a side was not decoded or no prompts are shared."""
    columns = []
    for revision in revisions:
        c = records[revision].contrasts[contrast]
        plus, minus = (per_prompt(records[revision], side, c.metric) for side in (c.plus, c.minus))
        if plus is None or minus is None:
            return None
        columns.append({pid: plus[pid] - minus[pid] for pid in plus if pid in minus})
    shared = sorted(set.intersection(*(set(c) for c in columns))) if columns else []
    if not shared:
        return None
    return np.array([[c[pid] for pid in shared] for c in columns])  # (C, P)


def series_summary(usable: pl.DataFrame, records: dict[str, CheckpointRecord], contrast_name: str, contrast: Contrast,
                   final_step: int | None, resamples: int, seed: int) -> dict:  # fmt: skip
    """The analysis plan on one contrast's series (`contrast_name` as the records name it) over the analysed
    checkpoints, for each side of the contrast (plus: above +strong; minus: below -strong): the first crossing as
    measured (`point`), its interval over prompt resamples and the checkpoint grid, its events and monotonicity."""
    key = f"{contrast_name}/{contrast.metric}"
    have = usable.filter(pl.col(key).is_not_null()) if key in usable.columns else usable.clear()
    steps, values, revisions = have["step"].to_list(), column(have, key), have["revision"].to_list()
    lows, highs = column(have, f"{key}_ci_low"), column(have, f"{key}_ci_high")
    levels = Levels.of(contrast.levels)
    matrix = per_prompt_matrix(records, revisions, contrast_name) if revisions else None
    sides = {}
    for sign, side in SIDES.items():
        i = analysis.emergence_index(values, levels.strong, sign)
        point = None
        if i is not None:
            point = {
                "revision": revisions[i], "step": steps[i], "fraction": steps[i] / final_step if final_step else None,
                "value": values[i], "ci": [lows[i], highs[i]], "previous_revision": revisions[i - 1] if i > 0 else None,
                "previous_value": values[i - 1] if i > 0 else None, "previous_ci": [lows[i - 1], highs[i - 1]] if i > 0 else None,
            }  # fmt: skip
        interval = analysis.crossing_interval(steps, revisions, matrix, levels.strong, sign, resamples, seed) if matrix is not None else None
        sides[side] = {"point": point, "interval": interval, "events": analysis.crossing_events(steps, values, levels.strong, sign),
                       "monotonic": analysis.is_monotonic(values, levels.weak, sign)}  # fmt: skip
    return {
        "key": key,
        "contrast": contrast_name,
        "metric": contrast.metric,
        "levels": list(contrast.levels),
        "sides": sides,
        "final_value": values[-1] if values else None,
        "final_ci": [lows[-1], highs[-1]] if values else None,
        "final_revision": revisions[-1] if values else None,
        "final_class": levels.words(values[-1]) if values else None,
        "first_value": values[0] if values else None,
        "steps": steps,
        "revisions": revisions,
        "series": values,
    }


def called_series(res: dict, claim: Claim, final_step: int | None, hypotheses: dict) -> dict:
    """The series as its claim reads it, on the side called (or measured): the emergence point and interval, the
    bands of training the interval spans and the stage (only when it is one band), the shape, the events."""
    sign = claim.sign or 1
    side = res["sides"][SIDES[sign]]
    interval = side["interval"] if claim.called else None
    bands = analysis.bands_spanned(interval["after"], interval["by"], final_step) if interval else []
    kind = bands[0] if len(bands) == 1 else "none"
    return {
        "claim": claim.to_dict(),
        "emergence_point": side["point"] if (claim.called or side["point"]) else res["sides"]["plus"]["point"],
        "emergence_interval": interval,
        "bands": bands,
        "emergence_type": kind,
        "hypothesis": analysis.hypothesis(kind, hypotheses) if len(bands) == 1 else None,
        "shape": analysis.rise_shape(res["steps"], [sign * v for v in res["series"]], weak=res["levels"][2]),
        "monotonic": side["monotonic"],
        "events": side["events"],
    }


def summarize(frame: pl.DataFrame, records: list[CheckpointRecord], task: Task, final_step: int | None, methods: list[str] | None = None,
              twins: list[IdenticalWeights] = (), resamples: int = 2000, seed: int = 0,
              context: SweepContext = SweepContext()) -> dict:  # fmt: skip
    """Everything the analysis plan asks for, machine-readable: for the headline contrast, and for every
    contrast of every method the sweep ran (`results`, keyed '<contrast>/<metric>'), each with its claim."""
    by_revision = {r.revision: r for r in records}
    failed = frame.filter(pl.col("status") == "failed")
    usable = frame.filter(pl.col("analysed"))
    final = by_revision[usable["revision"][-1]] if len(usable) else None
    clean = clean_check(usable)
    methods = MethodSet(tuple(methods or [""]))
    # the null sets are patched with the primary method: its reading is the group's, whichever method patched the group
    null_of = {c.name: nulls_by_side(final.null if final else None, c, final.settings.get("null") if final else None) for c in task.contrasts}
    results, claims = {}, {}
    for method in methods.labels:
        primary = method == methods.primary
        for contrast in task.contrasts:
            name = methods.named(method, contrast.name)
            if f"{name}/{contrast.metric}" in frame.columns or primary:
                res = series_summary(usable, by_revision, name, contrast, final_step, resamples, seed)
                claim = Claim.of(res, clean, null_of[contrast.name], context)
                claims[res["key"]] = claim
                results[res["key"]] = res | called_series(res, claim, final_step, task.hypotheses) | {
                    "base_contrast": contrast.name, "method": method, "primary": primary}  # fmt: skip
    headline_key = f"{task.headline.name}/{task.headline.metric}"
    head = results[headline_key]
    nulls = null_of[task.headline.name]
    summary = {
        "task": task.describe(),
        "headline": headline_key,
        "checkpoints": len(frame),
        "usable_checkpoints": len(usable),
        "final_step": final_step,
        "n_prompts": final.settings.get("n_prompts") if final else None,
        **{k: head[k] for k in ("emergence_point", "emergence_interval", "bands", "emergence_type", "hypothesis", "final_value",
                                "final_class", "shape", "monotonic", "events", "claim")},
        "results": results,
        "null": nulls["plus"],
        "nulls": nulls,
        "clean": clean,
        "quality": {
            "final_shows_known_result": bool(head["final_value"] is not None and head["final_value"] > task.headline.threshold),
            "earliest_shows_none": bool(head["first_value"] is not None and abs(head["first_value"]) <= task.headline.levels[2]),
            "failed_revisions": [{"revision": r, "error": e} for r, e in zip(failed["revision"], failed["error"])],
            "duplicate_revisions": [list(g.members) for g in twins],
            "duplicates": [{"members": list(g.members), "measurement_belongs_to": g.owner} for g in twins],
        },
    }
    summary["evidence"] = evidence_summary(usable, head)
    point = head["emergence_point"]
    summary["discovery"] = discovery_summary(records)
    summary["heads"] = head_map_summary(records, usable["revision"].to_list(), task, point["revision"] if point else None)
    summary["circuit"] = circuit_summary(records, usable["revision"].to_list(), point["revision"] if point else None)
    said = verdicts.verdict(summary, task, claims, context)
    summary["verdict"] = said.text()
    summary["verdict_lines"] = said.to_dict()
    summary["verdict_markdown"] = said.markdown()
    return summary


def evidence_summary(usable: pl.DataFrame, head: dict) -> dict | None:
    """When the attention-pattern evidence moves, and whether it moves with the patching headline: the largest
    fall of the in-context-learning score within one doubling of training steps (analysis.rise_shape, the
    same rule as the headline's shape), against the headline's emergence step; they coincide when the
    emergence lies within one doubling of that window's end."""
    if "evidence/icl_score" not in usable.columns:
        return None
    rows = usable.filter(pl.col("evidence/icl_score").is_not_null())
    if len(rows) < 2:
        return None
    steps, icl = rows["step"].to_list(), rows["evidence/icl_score"].to_list()
    shape = analysis.rise_shape(steps, [-v for v in icl])  # a fall of the ICL score is a rise of in-context learning
    window, where_words = shape["window"], analysis.doubling_words(shape)
    out = {
        "icl_first": icl[0], "icl_final": icl[-1], "icl_shape": shape["shape"], "icl_drop": shape["doubling_rise"],
        "icl_drop_window": window, "icl_share": shape["share"],
        "induction_max_final": rows["evidence/induction_max"].to_list()[-1] if "evidence/induction_max" in rows.columns else None,
    }  # fmt: skip
    where = f"its largest fall within one doubling of training steps is {shape['doubling_rise']:.2f} nats, in {where_words} ({shape['shape']})"
    point = head["emergence_point"]
    if point is None or shape["shape"] == "flat":
        out["coincides"] = None
        out["statement"] = (
            f"The in-context-learning score goes from {icl[0]:+.2f} to {icl[-1]:+.2f} nats"
            + (" with no marked fall" if shape["shape"] == "flat" else f"; {where}")
            + ("; the patching headline never crosses its strong level, so there is nothing to line it up with." if point is None
               else f"; the patching headline first crosses its strong level at {point['revision']}.")
        )  # fmt: skip
        return out
    distance = abs(float(analysis.training_time([point["step"]])[0] - analysis.training_time([window[1]])[0]))
    out["coincides"] = distance <= 1.0
    out["statement"] = (
        f"The attention-pattern evidence agrees: {where}, within one doubling of the patching headline's first crossing "
        f"at {point['revision']}." if out["coincides"] else
        f"The attention-pattern evidence does NOT line up: {where}, while the patching headline first crosses at {point['revision']}."
    )  # fmt: skip
    return out


def reduce(records: list[CheckpointRecord], task: Task, config: SweepConfig, published: list[Checkpoint] | None,
           final_step: int | None = None) -> tuple[dict, pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """A sweep's records -> (summary, timeline, long table), by the one rule for each policy: where training
    ends (hub/revisions.TrainingEnd: the published list, else the last ok record), which revisions are one
    checkpoint (duplicates.identical_weights), and which null test a verdict cites (scoring.null_test)."""
    ok = [r for r in records if r.ok]
    end = TrainingEnd.of(published, [Checkpoint(r.revision, r.step) for r in ok])
    final_step, final = final_step or end.step, end.revision
    digests = {r.revision: r.weights_digest for r in records if final_status(r.status)}
    twins = identical_weights(digests, final)
    frame = timeline(records, final_step, twins)
    context = SweepContext(refine=f"python -m jobs.refine --sweep {config.sweep_id(task.digest)}",
                           earliest_published=published[0].revision if published else None, null_pool=task.null_pool)  # fmt: skip
    summary = summarize(frame, records, task, final_step, list(config.methods(task.align)), twins, config.bootstrap_resamples, config.seed,
                        context)  # fmt: skip
    return summary, frame, long_table(records)
