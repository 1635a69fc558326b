"""How the report is built: a sweep's records -> a polars timeline -> analysis -> parquet, JSON and one HTML page.

Every label comes from the sweep's task (its question, groups and contrasts) and every column from the
records' own names (tracking.flatten): nothing here knows which task it draws.

The reducer (`reduce`) reads every checkpoint record of a sweep (finished or partial) back from MLflow, keeps
one per checkpoint, and orders them by training step. Each policy is one function it calls: where training
ends (checkpoints.final_step), which revisions are one checkpoint and whose the measurement is
(checkpoints.identical_weights), which null test the verdict cites (scoring.null_test); what the numbers
support is verdict.py's. A checkpoint not analysed says why (`excluded_because`). The page is self-contained
(plotly.js embedded) so it opens offline.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from pythia_sweep import analysis
from pythia_sweep import verdict as verdicts
from pythia_sweep.checkpoints import Checkpoint, IdenticalWeights, identical_weights
from pythia_sweep.checkpoints import final_step as end_of_training
from pythia_sweep.config import SweepConfig
from pythia_sweep.records import CheckpointRecord, long_table, per_prompt
from pythia_sweep.scoring import null_test
from pythia_sweep.tasks import Contrast, Task
from pythia_sweep.tracking import SweepReader, SweepRecorder, TrackingStoreError, experiment_name, flatten

PALETTE = ("#1f77b4", "#d62728", "#ff7f0e", "#17becf", "#bcbd22", "#e377c2", "#8c564b")
FIXED_COLORS = {"baseline": "#7f7f7f", "clean": "#2ca02c", "all": "#9467bd"}
SHOWN_KINDS = ("baseline", "clean", "group", "all")  # conditions drawn as lines (single heads: the heatmap)


def colors_for(names: list[str]) -> dict[str, str]:
    """A fixed colour for baseline, clean and all; the palette, in order, for the task's groups."""
    groups = [n for n in names if n not in FIXED_COLORS]
    return {**FIXED_COLORS, **{n: PALETTE[i % len(PALETTE)] for i, n in enumerate(groups)}}


def timeline(records: list[CheckpointRecord], final_step: int | None, twins: list[IdenticalWeights] = ()) -> pl.DataFrame:
    """One row per checkpoint, ordered by step: status, hashes, whether it is analysed (and why not), and every
    number of the record under its flattened name ('<condition>/<metric>', '<contrast>/<metric>', intervals).

    `final_step` (checkpoints.final_step) sets the training fractions; `twins` (checkpoints.identical_weights)
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
        row |= {k: v for k, v in flatten(r).items() if not k.startswith("time/")}
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.sort("step", nulls_last=True) if len(frame) else frame


def drawn_conditions(records: list[CheckpointRecord]) -> list[str]:
    """The conditions drawn as lines: baseline, clean, the groups and all heads of the primary method (the one
    the baseline is measured with), by each condition's own kind and method fields."""
    shown: dict[str, None] = {}
    for r in records:
        conditions = r.conditions
        primary = (conditions.get("baseline") or {}).get("method")
        shown |= {n: None for n, c in conditions.items() if c.get("kind") in SHOWN_KINDS and c.get("method") == primary}
    return list(shown)


def _column(frame: pl.DataFrame, name: str) -> list:
    return frame[name].to_list() if name in frame.columns else [None] * len(frame)


def per_prompt_matrix(records: dict[str, CheckpointRecord], revisions: list[str], contrast: str) -> np.ndarray | None:
    """(checkpoints, prompts): each prompt's contrast value (plus - minus on the contrast's metric) at each
    revision, over the prompts every revision measured; None where a side was not decoded or no prompts are shared."""
    columns = []
    for revision in revisions:
        c = records[revision].contrasts[contrast]
        plus, minus = (per_prompt(records[revision], c[side], c["metric"]) for side in ("plus", "minus"))
        if plus is None or minus is None:
            return None
        columns.append({pid: plus[pid] - minus[pid] for pid in plus if pid in minus})
    shared = sorted(set.intersection(*(set(c) for c in columns))) if columns else []
    if not shared:
        return None
    return np.array([[c[pid] for pid in shared] for c in columns])  # (C, P)


def series_summary(usable: pl.DataFrame, records: dict[str, CheckpointRecord], contrast_name: str, contrast: Contrast,
                   final_step: int | None, hypotheses: dict, resamples: int, seed: int) -> dict:  # fmt: skip
    """The analysis plan on one contrast's series (`contrast_name` as the records name it) over the analysed
    checkpoints: emergence point and its step interval, type, shape on training time, events."""
    key = f"{contrast_name}/{contrast.metric}"
    have = usable.filter(pl.col(key).is_not_null()) if key in usable.columns else usable.clear()
    steps, values, revisions = have["step"].to_list(), _column(have, key), have["revision"].to_list()
    lows, highs = _column(have, f"{key}_ci_low"), _column(have, f"{key}_ci_high")
    i = analysis.emergence_index(values, contrast.threshold)
    point = None
    if i is not None:
        point = {
            "revision": revisions[i], "step": steps[i], "fraction": steps[i] / final_step if final_step else None,
            "value": values[i], "ci": [lows[i], highs[i]], "previous_revision": revisions[i - 1] if i > 0 else None,
            "previous_ci": [lows[i - 1], highs[i - 1]] if i > 0 else None,
        }  # fmt: skip
    matrix = per_prompt_matrix(records, revisions, contrast_name) if revisions else None
    interval = analysis.emergence_step_interval(steps, matrix, contrast.threshold, resamples, seed) if matrix is not None else None
    kind = analysis.emergence_type(point["fraction"] if point else None)
    width_limit = contrast.threshold  # an interval wider than the strong level cannot tell strong from none
    return {
        "key": key,
        "contrast": contrast_name,
        "metric": contrast.metric,
        "levels": list(contrast.levels),
        "emergence_point": point,
        "emergence_step_interval": interval,
        "emergence_type": kind,
        "hypothesis": analysis.hypothesis(kind, hypotheses),
        "final_value": values[-1] if values else None,
        "final_ci": [lows[-1], highs[-1]] if values else None,
        "final_class": analysis.strength_class(values[-1], contrast.levels) if values else None,
        "first_value": values[0] if values else None,
        "series": values,
        "shape": analysis.rise_shape(steps, values, weak=contrast.levels[2]),
        "monotonic": analysis.is_monotonic(values, contrast.levels[2]),
        "events": analysis.crossing_events(steps, values, contrast.threshold),
        "intervals_too_wide": [r for r, lo, hi in zip(revisions, lows, highs) if analysis.interval_too_wide(lo, hi, width_limit)],
    }


def summarize(frame: pl.DataFrame, records: list[CheckpointRecord], task: Task, final_step: int | None, methods: list[str] | None = None,
              twins: list[IdenticalWeights] = (), resamples: int = 2000, seed: int = 0) -> dict:  # fmt: skip
    """Everything the analysis plan asks for, machine-readable: for the headline contrast, and for every
    contrast of every method the sweep ran (`results`, keyed '<contrast>/<metric>'), each with its claim."""
    by_revision = {r.revision: r for r in records}
    failed = frame.filter(pl.col("status") == "failed")
    usable = frame.filter(pl.col("analysed"))
    methods = methods or [""]
    results = {}
    for m, method in enumerate(methods):
        for contrast in task.contrasts:
            name = contrast.name if m == 0 else f"{method}/{contrast.name}"
            if f"{name}/{contrast.metric}" in frame.columns or m == 0:
                res = series_summary(usable, by_revision, name, contrast, final_step, task.hypotheses, resamples, seed)
                results[res["key"]] = res | {"base_contrast": contrast.name, "method": method, "primary": m == 0}
    headline_key = f"{task.headline.name}/{task.headline.metric}"
    head = results[headline_key]
    final = by_revision[usable["revision"][-1]] if len(usable) else None
    null = null_test(final.null if final else None, task.headline, final.settings.get("null") if final else None)
    clean = verdicts.clean_check(usable)
    for res in results.values():
        res["claim"] = verdicts.claim(res, clean, null if res["primary"] else None)
    summary = {
        "task": task.describe(),
        "headline": headline_key,
        "checkpoints": len(frame),
        "usable_checkpoints": len(usable),
        "final_step": final_step,
        "n_prompts": final.settings.get("n_prompts") if final else None,
        **{k: head[k] for k in ("emergence_point", "emergence_step_interval", "emergence_type", "hypothesis", "final_value",
                                "final_class", "shape", "monotonic", "events", "claim")},
        "results": results,
        "null": null,
        "clean": clean,
        "quality": {
            "final_shows_known_result": bool(head["final_value"] is not None and head["final_value"] > task.headline.threshold),
            "earliest_shows_none": bool(head["first_value"] is not None and abs(head["first_value"]) <= task.headline.levels[2]),
            "failed_revisions": [{"revision": r, "error": e} for r, e in zip(failed["revision"], failed["error"])],
            "duplicate_revisions": [list(g.members) for g in twins],
            "duplicates": [{"members": list(g.members), "measurement_belongs_to": g.owner} for g in twins],
            "intervals_too_wide": head["intervals_too_wide"],
        },
    }
    summary["evidence"] = evidence_summary(usable, head)
    summary["verdict"] = verdicts.verdict(summary, task)
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
    window = shape["window"]
    out = {
        "icl_first": icl[0], "icl_final": icl[-1], "icl_shape": shape["shape"], "icl_drop": shape["doubling_rise"],
        "icl_drop_window": window, "icl_share": shape["share"],
        "induction_max_final": rows["evidence/induction_max"].to_list()[-1] if "evidence/induction_max" in rows.columns else None,
    }  # fmt: skip
    where = (f"its largest fall within one doubling of training steps is {shape['doubling_rise']:.2f} nats, between steps "
             f"{window[0]:,} and {window[1]:,} ({shape['shape']})")  # fmt: skip
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


# -- figures ---------------------------------------------------------------------------------------------
def _x(frame: pl.DataFrame) -> list[float]:
    return [max(s, 1) for s in frame["step"].to_list()]  # step 0 drawn at 1 on the log axis


def _band(fig, x, low, high, color, name, row=None, col=None, opacity=0.18, legend=False, group=None) -> bool:
    """An interval band, filled from `low` to `high`; returns whether one was drawn. None is drawn where the two
    are equal at every x (it could not be seen). A line's band is named in its line's legend entry; only the null
    band has one of its own (`legend`), one for all its panels (`group`)."""
    pairs = [(a, lo, hi) for a, lo, hi in zip(x, low, high) if lo is not None and hi is not None]
    if all(lo == hi for _, lo, hi in pairs):
        return False
    xs, lows, highs = zip(*pairs)
    kw = {"row": row, "col": col} if row else {}
    fig.add_trace(go.Scatter(x=list(xs), y=list(highs), mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip",
                             legendgroup=group), **kw)  # fmt: skip
    fig.add_trace(
        go.Scatter(x=list(xs), y=list(lows), mode="lines", line={"width": 0}, fill="tonexty", name=name,
                   fillcolor=_rgba(color, opacity), hoverinfo="skip", showlegend=legend, legendgroup=group), **kw,
    )  # fmt: skip
    return True


def _vertical(step: int, low: float, high: float, name: str, legend: bool = True) -> go.Scatter:
    """A vertical line at a training step, as a trace in data coordinates (a layout shape on a log axis is
    placed in the axis's log units, which moved it when the axis type was set after the shape)."""
    x = max(step, 1)
    return go.Scatter(x=[x, x], y=[low, high], mode="lines", name=name, showlegend=legend,
                      line={"color": FIXED_COLORS["clean"], "width": 2}, hoverinfo="name")  # fmt: skip


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")


def line_style(i: int) -> tuple[str, str]:
    """The i-th line's dash and marker: distinct pairs for the first 36 lines, so lines that coincide stay
    told apart by their dash or marker (colour alone does not survive overlap)."""
    return DASHES[i % len(DASHES)], SYMBOLS[(i + i // len(DASHES)) % len(SYMBOLS)]


def headline_figure(frame: pl.DataFrame, summary: dict, task: Task) -> go.Figure:
    """The headline contrast over training, one line per method, with its interval, levels and emergence."""
    ok = frame.filter(pl.col("status") == "ok")
    x = _x(ok)
    fig = go.Figure()
    same_units = [(key, res) for key, res in summary["results"].items() if res["metric"] == task.headline.metric]
    for i, (key, res) in enumerate(same_units):  # contrasts on the headline's metric: one axis, one unit
        color = PALETTE[i % len(PALETTE)]
        name = verdicts.describe_contrast(task, res) + ", band: 95% interval"
        _band(fig, x, _column(ok, f"{key}_ci_low"), _column(ok, f"{key}_ci_high"), color, f"{res['contrast']}: 95% bootstrap interval", opacity=0.18 if i == 0 else 0.1)
        fig.add_trace(go.Scatter(x=x, y=_column(ok, key), mode="lines+markers", name=name, text=ok["revision"].to_list(),
                                 line={"color": color, "width": 3 if i == 0 else 2, "dash": line_style(i)[0]}, marker={"symbol": line_style(i)[1]},
                                 hovertemplate="%{text}<br>%{y:.3f}<extra>" + res["contrast"] + "</extra>"))  # fmt: skip
    dup = ok.filter(~pl.col("analysed"))
    if len(dup):
        fig.add_trace(go.Scatter(x=_x(dup), y=_column(dup, summary["headline"]), mode="markers", name="identical weights (left out)",
                                 marker={"symbol": "x", "size": 12, "color": "black"}))  # fmt: skip
    for level, name in zip(task.headline.levels, ("strong", "moderate", "weak")):
        for sign in (1, -1):
            fig.add_hline(y=sign * level, line={"dash": "dash", "color": "#999" if sign > 0 else "#ccc", "width": 1},
                          annotation_text=f"{name} ({sign * level:+g})", annotation_position="right")  # fmt: skip
    point = summary["emergence_point"]
    if point:  # the marker spans the drawn values and levels, in the headline's own unit
        drawn = [v for key, _ in same_units for v in _column(ok, key) + _column(ok, f"{key}_ci_low") + _column(ok, f"{key}_ci_high") if v is not None]
        span = max([abs(v) for v in drawn] + [task.headline.threshold])
        interval = summary["emergence_step_interval"] or {}
        name = f"first above the strong level: {point['revision']}"
        if interval.get("low") is not None and interval.get("high") is not None:  # the step's 95% interval, shaded
            low, high = max(interval["low"], 1), max(interval["high"], 1)
            name += f" (shaded: its 95% interval over resampled prompts, step {interval['low']:,} to {interval['high']:,})"
            fig.add_trace(go.Scatter(x=[low, low, high, high, low], y=[-span, span, span, -span, -span], mode="lines", fill="toself",
                                     fillcolor=_rgba(FIXED_COLORS["clean"], 0.12), line={"width": 0}, showlegend=False,
                                     legendgroup="emergence", hoverinfo="skip"))  # fmt: skip
        fig.add_trace(_vertical(point["step"], -span, span, name).update(legendgroup="emergence"))
    metric = task.headline.metric.replace("_", " ")
    fig.update_layout(title=f"{task.headline.name} = {task.headline.plus} - {task.headline.minus} ({metric}) over training",
                      template="plotly_white", xaxis={"type": "log", "title": "training step (log; step 0 drawn at 1)"},
                      yaxis={"title": f"{task.headline.name} ({metric})"}, height=460, legend={"orientation": "h", "y": -0.2},
                      margin={"r": 130})  # fmt: skip
    if task.headline.metric == "success_rate":
        fig.update_yaxes(range=[-1.05, 1.05])
    return fig


def rates_figure(frame: pl.DataFrame, shown: list[str], colors: dict[str, str]) -> go.Figure:
    """Success rate and log-prob difference of baseline, clean, each group and all heads, with intervals
    and the null band; lines that would hide each other are drawn with distinct dashes and markers."""
    ok = frame.filter(pl.col("status") == "ok")
    x = _x(ok)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "Success rate (the task's success rule), Wilson 95%", "Answer log-prob difference log Σp(correct) - log Σp(wrong), bootstrap 95%"))  # fmt: skip
    if "null/success_rate_q05" in ok.columns:
        null = {"color": "#444444", "name": "null: random head sets (5-95%)", "opacity": 0.12, "group": "null"}
        named = _band(fig, x, _column(ok, "null/success_rate_q05"), _column(ok, "null/success_rate_q95"), row=1, col=1, legend=True, **null)
        _band(fig, x, _column(ok, "null/logprob_diff_q05"), _column(ok, "null/logprob_diff_q95"), row=1, col=2, legend=not named, **null)
    for i, name in enumerate(shown):
        if f"{name}/success_rate" not in ok.columns:
            continue
        rate, low, high = _column(ok, f"{name}/success_rate"), _column(ok, f"{name}/success_rate_ci_low"), _column(ok, f"{name}/success_rate_ci_high")
        dash, symbol = line_style(i)
        style, marker = {"color": colors.get(name, "#333"), "dash": dash}, {"symbol": symbol, "size": 7}
        fig.add_trace(go.Scatter(
            x=x, y=rate, mode="lines+markers", name=name, legendgroup=name, line=style, marker=marker,
            error_y={"type": "data", "symmetric": False, "array": [(h - r) if None not in (h, r) else 0 for h, r in zip(high, rate)],
                     "arrayminus": [(r - lo) if None not in (r, lo) else 0 for r, lo in zip(rate, low)], "thickness": 1},
        ), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=_column(ok, f"{name}/logprob_diff"), mode="lines+markers", name=name, legendgroup=name,
                                 showlegend=False, line=style, marker=marker), row=1, col=2)  # fmt: skip
    fig.update_xaxes(type="log", title="training step (log)")
    fig.update_yaxes(title="success rate", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(title="log-prob difference (nats)", row=1, col=2)
    fig.update_layout(template="plotly_white", height=440, legend={"orientation": "h", "y": -0.25})
    return fig


def detail_figure(frame: pl.DataFrame, summary: dict, task: Task, colors: dict[str, str]) -> go.Figure | None:
    """The checkpoints around the emergence point: the headline with its interval, and the log-prob
    differences of the contrast's two sides and the baseline."""
    point = summary["emergence_point"]
    ok = frame.filter(pl.col("analysed"))
    if not point or not len(ok):
        return None
    key = summary["headline"]
    i = ok["revision"].to_list().index(point["revision"])
    near = ok.slice(max(i - 3, 0), 7)
    values = _column(near, key)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=near["revision"].to_list(), y=values, name=task.headline.name,
                         marker_color=[FIXED_COLORS["clean"] if r == point["revision"] else PALETTE[0] for r in near["revision"]],
                         error_y={"type": "data", "symmetric": False,
                                  "array": [(h if h is not None else v) - v for h, v in zip(_column(near, f"{key}_ci_high"), values)],
                                  "arrayminus": [v - (lo if lo is not None else v) for lo, v in zip(_column(near, f"{key}_ci_low"), values)]}))  # fmt: skip
    for name in dict.fromkeys((task.headline.plus, task.headline.minus, "baseline")):
        fig.add_trace(go.Scatter(x=near["revision"].to_list(), y=_column(near, f"{name}/logprob_diff"), mode="lines+markers",
                                 name=f"{name}: log-prob difference", line={"color": colors.get(name, "#333")}), secondary_y=True)  # fmt: skip
    fig.add_hline(y=task.headline.threshold, line={"dash": "dash", "color": "#999"}, annotation_text=f"strong ({task.headline.threshold:g})")
    fig.update_layout(title=f"Around the emergence point ({point['revision']})", template="plotly_white", height=400)
    fig.update_yaxes(title=task.headline.name, secondary_y=False)
    fig.update_yaxes(title="log-prob difference (nats)", secondary_y=True)
    return fig


def heatmap_figure(frame: pl.DataFrame, long: pl.DataFrame) -> go.Figure | None:
    """Each single head's change in log-prob difference over the baseline, per checkpoint. The colour scale
    is symmetric and at least as wide as the null band, so a change no bigger than random head sets make
    shows as (almost) no colour. Heads are read from the long table's layer and head columns."""
    ok = frame.filter(pl.col("status") == "ok")
    single = long.filter((pl.col("kind") == "head") & (pl.col("metric") == "logprob_diff"))
    if not len(single):
        return None
    baseline = long.filter((pl.col("kind") == "baseline") & (pl.col("metric") == "logprob_diff")).select("revision", pl.col("value").alias("base"))
    delta = single.join(baseline, on="revision", how="left").with_columns((pl.col("value") - pl.col("base")).alias("delta"))
    rates = long.filter((pl.col("kind") == "head") & (pl.col("metric") == "success_rate")).select("revision", "layer", "head", pl.col("value").alias("rate"))
    delta = delta.join(rates, on=["revision", "layer", "head"], how="left")
    revisions = ok["revision"].to_list()
    heads = delta.select("layer", "head").unique().sort("layer", "head").rows()
    cell = {(r["revision"], r["layer"], r["head"]): r for r in delta.iter_rows(named=True)}
    z = [[cell.get((rev, layer, head), {}).get("delta") for rev in revisions] for layer, head in heads]
    decoded = len(rates) > 0  # single heads are teacher-forced in a sweep
    custom = [[cell.get((rev, layer, head), {}).get("rate") for rev in revisions] for layer, head in heads] if decoded else None
    widths = [hi - lo for lo, hi in zip(_column(ok, "null/logprob_diff_q05"), _column(ok, "null/logprob_diff_q95")) if None not in (lo, hi)]
    lim = max([abs(v) for row in z for v in row if v is not None] + widths + [0.1])
    fig = go.Figure(go.Heatmap(
        z=z, x=revisions, y=[f"layer {layer} head {head}" for layer, head in heads], colorscale="RdBu", zmid=0,
        zmin=-lim, zmax=lim, customdata=custom, colorbar={"title": "Δ log-prob<br>vs baseline<br>(nats)"},
        hovertemplate="%{y} at %{x}<br>Δ log-prob %{z:.3f}" + ("<br>success rate %{customdata:.2f}" if decoded else "") + "<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(title=f"Each head patched alone: change in answer log-prob difference over the corrupted baseline "
                            f"(scale ±{lim:.2f} nats, at least the null band's width)",
                      template="plotly_white", height=max(300, 22 * len(heads) + 160), xaxis={"title": "checkpoint"})  # fmt: skip
    return fig


def context_tables(records: list[CheckpointRecord], task: Task, config: SweepConfig) -> list[tuple[str, str]]:
    """What a reader needs to trust the numbers: the task's prompts, example generations at the last measured
    checkpoint, the run config, and the versions of the libraries that produced them."""
    from importlib.metadata import PackageNotFoundError, version

    ok = [r for r in records if r.ok]
    tables = []
    if ok:
        last = ok[-1]
        prompts = [{"prompt": pid, "clean": p["clean"], "corrupted": p["corrupted"],
                    "correct": ", ".join(map(repr, p["correct"])) + (" ..." if p["n_correct"] > 5 else ""),
                    "wrong": ", ".join(map(repr, p["wrong"])) + (" ..." if p["n_wrong"] > 5 else "")}
                   for pid, p in list(last.prompts.items())[:6]]  # fmt: skip
        n = len(last.prompts)
        tables.append((f"The task's prompts ({min(n, 6)} of {n}; {task.source})", _table(prompts, ["prompt", "clean", "corrupted", "correct", "wrong"])))
        shown = {"baseline", "clean", task.headline.plus, task.headline.minus}
        first_ids = list(last.prompts)[:3]
        examples = [{"condition": r["condition"], "prompt": r["prompt_id"], "success": "yes" if r["success"] else "no",
                     "generation": repr(r["response"]), "log-prob difference": f"{r['logprob_diff']:+.3f}"}
                    for r in last.responses if r["condition"] in shown and r["prompt_id"] in first_ids]  # fmt: skip
        tables.append((f"Example generations at {last.revision}", _table(examples, ["condition", "prompt", "success", "generation", "log-prob difference"])))
    settings = [{"setting": k, "value": json.dumps(v) if not isinstance(v, str) else v} for k, v in config.to_dict().items()]
    tables.append(("Run config", _table(settings + [{"setting": "task digest", "value": task.digest}], ["setting", "value"])))
    versions = []
    for package in ("pythia_sweep", "torch", "transformers", "huggingface_hub", "ray", "mlflow", "polars", "plotly", "scipy"):
        try:
            versions.append({"package": package, "version": version(package)})
        except PackageNotFoundError:
            versions.append({"package": package, "version": "not installed"})
    tables.append(("Package versions (of this report's build)", _table(versions, ["package", "version"])))
    return tables


def evidence_figures(frame: pl.DataFrame, long: pl.DataFrame, summary: dict) -> list[go.Figure]:
    """The second line of evidence over training: the in-context-learning score and the strongest heads'
    induction and previous-token scores as curves, and each head's induction score as a heatmap."""
    ok = frame.filter(pl.col("status") == "ok")
    if "evidence/icl_score" not in ok.columns or ok["evidence/icl_score"].is_null().all():
        return []
    x = _x(ok)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "In-context-learning score: loss on the repeat - loss on the first pass (nats)",
        "Strongest head's attention-pattern score (share of attention on the pattern)"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=_column(ok, "evidence/icl_score"), mode="lines+markers", name="ICL score", text=ok["revision"].to_list(),
                             line={"color": PALETTE[0]}), row=1, col=1)  # fmt: skip
    for i, (key, name, color) in enumerate((("evidence/induction_max", "induction (prefix-matching)", PALETTE[1]), ("evidence/previous_token_max", "previous-token", PALETTE[2]))):
        dash, symbol = line_style(i)  # the two scores often sit together (both near 0 before training)
        fig.add_trace(go.Scatter(x=x, y=_column(ok, key), mode="lines+markers", name=name, line={"color": color, "dash": dash},
                                 marker={"symbol": symbol}), row=1, col=2)  # fmt: skip
    point = summary["emergence_point"]
    if point:
        icl = [v for v in _column(ok, "evidence/icl_score") if v is not None]
        fig.add_trace(_vertical(point["step"], min(icl + [0.0]), max(icl + [0.0]), f"patching headline first above its strong level: {point['revision']}"), row=1, col=1)
        fig.add_trace(_vertical(point["step"], 0.0, 1.0, f"patching headline first above its strong level: {point['revision']}", legend=False), row=1, col=2)
    fig.update_xaxes(type="log", title="training step (log; green: the patching emergence)")
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=2)
    fig.update_layout(title="Second line of evidence: in-context learning and attention patterns on repeated random tokens",
                      template="plotly_white", height=420, legend={"orientation": "h", "y": -0.25})  # fmt: skip
    induction = long.filter((pl.col("kind") == "evidence") & (pl.col("metric") == "induction"))
    if not len(induction):
        return [fig]
    revisions = ok["revision"].to_list()
    heads = induction.select("layer", "head").unique().sort("layer", "head").rows()
    cell = {(r["revision"], r["layer"], r["head"]): r["value"] for r in induction.iter_rows(named=True)}
    z = [[cell.get((rev, layer, head)) for rev in revisions] for layer, head in heads]
    heat = go.Figure(go.Heatmap(
        z=z, x=revisions, y=[f"layer {layer} head {head}" for layer, head in heads], colorscale="Viridis",
        zmin=0, zmax=1, colorbar={"title": "induction<br>score"}, hovertemplate="%{y} at %{x}<br>induction score %{z:.2f}<extra></extra>",
    ))  # fmt: skip
    heat.update_layout(title="Each head's induction (prefix-matching) score over training: 0 = never on the pattern, 1 = always",
                       template="plotly_white", height=max(300, 14 * len(heads) + 160), xaxis={"title": "checkpoint"})  # fmt: skip
    return [fig, heat]


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(title: str, subtitle: str, verdict_text: str, figures: list[go.Figure], tables: list[tuple[str, str]]) -> str:
    """One self-contained page: plotly.js inlined once, then each figure."""
    divs = "".join(f'<section>{f.to_html(full_html=False, include_plotlyjs=False)}</section>' for f in figures)
    tabs = "".join(f"<section><h2>{html.escape(t)}</h2>{body}</section>" for t, body in tables)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
.verdict {{ background: #f3f7fb; border-left: 4px solid #1f77b4; padding: 0.8em 1.2em; font-size: 1.1em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
section {{ margin: 2em 0; }} .sub {{ color: #666; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>
<p class="verdict">{html.escape(verdict_text)}</p>{divs}{tabs}</body></html>"""


@dataclass
class Report:
    folder: Path
    html_path: Path
    summary: dict
    verdict: str
    frame: pl.DataFrame  # one row per checkpoint (results.parquet)
    long: pl.DataFrame  # one row per number (long.parquet, records.long_table)


def build_report(
    sweep: str | None = None,
    *,
    tracking_uri: str | None = None,
    reports_dir: str | Path = "reports",
    final_step: int | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Reduce a sweep (parent run id, sweep_id or name; default the latest) to parquet, JSON and HTML."""
    reader = SweepReader(tracking_uri)
    parent = reader.find_sweep(sweep)
    config = reader.sweep_config(parent)
    task = reader.sweep_task(parent)
    records = reader.load_records(parent)
    if not records:
        raise TrackingStoreError(f"sweep {parent} has no checkpoint records yet: run or resume it first")
    published = reader.published(parent) or _published_now(config)
    summary, frame, long = reduce(records, task, config, published, final_step)
    summary |= {"sweep": parent, "config": config.to_dict(), "experiment": experiment_name(config.model, task.name)}
    final_step = summary["final_step"]
    folder = Path(reports_dir) / _safe(summary["experiment"]) / parent
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / "results.parquet")
    long.write_parquet(folder / "long.parquet")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    shown = drawn_conditions(records)
    colors = colors_for(shown)
    figures = [f for f in (headline_figure(frame, summary, task), rates_figure(frame, shown, colors),
                           detail_figure(frame, summary, task, colors), heatmap_figure(frame, long)) if f]  # fmt: skip
    figures += evidence_figures(frame, long, summary)
    problems = [{"revision": r["revision"], "problem": r["excluded_because"]} for r in frame.filter(~pl.col("analysed")).iter_rows(named=True)]
    key = summary["headline"]
    columns = {"revision": "revision", "step": "step", "status": "status", key: task.headline.name,
               f"{key}_ci_low": "interval low", f"{key}_ci_high": "interval high",
               **{f"{n}/success_rate": f"{n}: success" for n in shown}}  # fmt: skip
    checkpoints = []
    for row in frame.select([c for c in columns if c in frame.columns]).to_dicts():
        checkpoints.append({columns[k]: (f"{v:+.3f}" if k.startswith(key) else f"{v:.3f}") if isinstance(v, float) else v for k, v in row.items()})
    link = reader.run_url(parent)
    subtitle = (f"{config.model} · task {task.name} ({task.source}) · sweep {parent} · method {config.method} · "
                f"{len(frame)} checkpoints · final step {final_step}" + (f" · MLflow run: {link}" if link else f" · MLflow run {parent} in {reader.uri}"))  # fmt: skip
    page = render_html(
        f"{config.model}: {task.question}", subtitle, summary["verdict"], figures,
        [("Failed or duplicate revisions", _table(problems, ["revision", "problem"])),
         ("Checkpoints", _table(checkpoints, list(checkpoints[0]) if checkpoints else [])),
         *context_tables(records, task, config)],
    )  # fmt: skip
    html_path = folder / "report.html"
    html_path.write_text(page)
    if log_to_mlflow:
        recorder = SweepRecorder(reader.uri)
        recorder.log_report(parent, folder)
        metrics = {f"final/{k}": res["final_value"] for k, res in summary["results"].items()}
        metrics["usable_checkpoints"] = summary["usable_checkpoints"]
        if summary["emergence_point"]:
            metrics["emergence_step"] = summary["emergence_point"]["step"]
            metrics["emergence_fraction"] = summary["emergence_point"]["fraction"]
        interval = summary["emergence_step_interval"] or {}
        metrics["emergence_step_low"], metrics["emergence_step_high"] = interval.get("low"), interval.get("high")
        metrics["emergence_resamples_crossing"] = interval.get("share_emerging")
        recorder.log_summary(parent, metrics, summary["verdict"])
    return Report(folder, html_path.resolve(), summary, summary["verdict"], frame, long)


def reduce(records: list[CheckpointRecord], task: Task, config: SweepConfig, published: list[Checkpoint] | None,
           final_step: int | None = None) -> tuple[dict, pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """A sweep's records -> (summary, timeline, long table), by the one rule for each policy: where training
    ends (checkpoints.final_step: the published list, else the last ok record), which revisions are one
    checkpoint (checkpoints.identical_weights), and which null test a verdict cites (scoring.null_test)."""
    ok = [r for r in records if r.ok]
    final_step = final_step or end_of_training(published, [r.step for r in ok])
    final_revision = published[-1].revision if published else (max(ok, key=lambda r: r.step or -1).revision if ok else None)
    digests = {r.revision: r.weights_digest for r in records if r.status in ("ok", "duplicate")}
    twins = identical_weights(digests, final_revision)
    records = _attribute_to_owners(records, twins)
    frame = timeline(records, final_step, twins)
    summary = summarize(frame, records, task, final_step, list(config.methods(task.align)), twins, config.bootstrap_resamples, config.seed)
    return summary, frame, long_table(records)


def _attribute_to_owners(records: list[CheckpointRecord], twins: list[IdenticalWeights]) -> list[CheckpointRecord]:
    """Where the revision a measurement belongs to was not the one measured (a sweep recorded before the
    duplicate rule gave `main`'s weights to the final step measured them at the earliest twin), the numbers
    move to their owner and the measured twin becomes its duplicate: the same weights, the same numbers."""
    by_revision = {r.revision: r for r in records}
    for group in twins:
        owner = by_revision.get(group.owner)
        measured = next((by_revision[m] for m in group.members if m in by_revision and by_revision[m].ok), None)
        if owner is None or owner.ok or measured is None:
            continue
        by_revision[owner.revision] = replace(measured, revision=owner.revision, step=owner.step, commit=owner.commit, error=None,
                                              duplicate_of=())  # fmt: skip
        by_revision[measured.revision] = replace(
            measured, status="duplicate", duplicate_of=(owner.revision,), conditions={}, contrasts={}, null={}, evidence=None,
            responses=[], error=f"identical weight files to {owner.revision}, to which the measurement belongs",
        )  # fmt: skip
    return sorted(by_revision.values(), key=lambda r: (r.step is None, r.step or 0))


def _published_now(config: SweepConfig) -> list[Checkpoint] | None:
    """The published revisions from the Hub (or the local cache offline), for a sweep saved without them."""
    from pythia_sweep.checkpoints import published_revisions

    try:
        return published_revisions(config.model)
    except Exception:  # noqa: BLE001 - offline and uncached: final_step falls back to the last ok record
        return None


def _safe(name: str) -> str:
    return name.replace("/", "__")


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def compare_sweeps(sweeps: list[str], *, tracking_uri: str | None = None, out: str | Path = "reports/compare.html") -> Path:
    """One page overlaying the headline timelines of several sweeps (each method of each sweep a line)."""
    reader = SweepReader(tracking_uri)
    fig = go.Figure()
    for sweep in sweeps:
        parent = reader.find_sweep(sweep)
        config, task = reader.sweep_config(parent), reader.sweep_task(parent)
        summary, frame, _ = reduce(reader.load_records(parent), task, config, reader.published(parent))
        frame = frame.filter(pl.col("analysed"))
        label = f"{config.label(task.name)} ({parent[:8]})"
        for m, method in enumerate(config.methods(task.align)):
            name = task.headline.name if m == 0 else f"{method}/{task.headline.name}"
            key = f"{name}/{task.headline.metric}"
            if key in frame.columns:
                fig.add_trace(go.Scatter(x=_x(frame), y=_column(frame, key), mode="lines+markers", name=f"{label}: {name}",
                                         line={"dash": "solid" if m == 0 else "dot"}, text=frame["revision"].to_list()))  # fmt: skip
    fig.update_layout(title="Headline contrasts over training, sweeps compared", template="plotly_white",
                      xaxis={"type": "log", "title": "training step (log; step 0 drawn at 1)"}, height=520)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html("Sweeps compared", ", ".join(sweeps), f"{len(sweeps)} sweeps overlaid.", [fig], []))
    return out.resolve()


def scan_page(rows: list[dict], title: str, stem: Path) -> Path:
    """The layer x head scan as a heatmap page (and a parquet of its rows)."""
    frame = pl.DataFrame(rows)
    baseline = frame.filter(pl.col("head") == -1)["logprob_diff"][0]
    heads = frame.filter(pl.col("head") >= 0).with_columns((pl.col("logprob_diff") - baseline).alias("delta"))
    layers = sorted(heads["layer"].unique().to_list())
    n_heads = heads["head"].max() + 1
    z = [[heads.filter((pl.col("layer") == layer) & (pl.col("head") == h))["delta"][0] for h in range(n_heads)] for layer in layers]
    lim = max(abs(v) for row in z for v in row) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=[f"head {h}" for h in range(n_heads)], y=[f"layer {layer}" for layer in layers],
                               colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, colorbar={"title": "Δ log-prob<br>vs baseline"}))  # fmt: skip
    fig.update_layout(title=f"Each head patched alone: {title}", template="plotly_white", height=120 + 40 * len(layers))
    stem.parent.mkdir(parents=True, exist_ok=True)
    heads.write_parquet(stem.with_suffix(".parquet"))
    path = stem.with_suffix(".html")
    path.write_text(render_html(f"Layer x head scan: {title}", f"corrupted baseline log-prob difference {baseline:+.3f}",
                                "Blue: the head moves the answer toward the clean prompt's; red: away from it.", [fig], []))  # fmt: skip
    return path.resolve()
