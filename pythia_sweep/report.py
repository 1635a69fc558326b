"""How the report is built: a sweep's records -> a polars timeline -> analysis -> parquet, JSON and one HTML page.

Every label comes from the sweep's task (its question, groups and contrasts) and every column from the
records' own names (tracking.flatten): nothing here knows which task it draws.

The reducer reads every checkpoint record of a sweep (finished or partial) back from MLflow, keeps one per
checkpoint, and orders them by training step. Revisions with identical weights (a public checkpoint served
twice) are flagged and left out of emergence detection, as are failed ones. The page is self-contained
(plotly.js embedded) so it opens offline.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from pythia_sweep import analysis
from pythia_sweep.config import SweepConfig
from pythia_sweep.tasks import Contrast, Task
from pythia_sweep.tracking import SweepReader, SweepRecorder, TrackingStoreError, experiment_name, flatten

PALETTE = ("#1f77b4", "#d62728", "#ff7f0e", "#17becf", "#bcbd22", "#e377c2", "#8c564b")
FIXED_COLORS = {"baseline": "#7f7f7f", "clean": "#2ca02c", "all": "#9467bd"}
SHOWN_KINDS = ("baseline", "clean", "group", "all")  # conditions drawn as lines (single heads: the heatmap)


def colors_for(names: list[str]) -> dict[str, str]:
    """A fixed colour for baseline, clean and all; the palette, in order, for the task's groups."""
    groups = [n for n in names if n not in FIXED_COLORS]
    return {**FIXED_COLORS, **{n: PALETTE[i % len(PALETTE)] for i, n in enumerate(groups)}}


def timeline(records: list[dict], final_step: int | None = None) -> pl.DataFrame:
    """One row per checkpoint, ordered by step: status, hashes, and every number of the record under its
    flattened name ('<condition>/<metric>', '<contrast>/<metric>', their intervals)."""
    rows = []
    digests = [r.get("weights_digest") for r in records]
    duplicates = {rev: group for group in analysis.duplicate_groups([r["revision"] for r in records], digests) for rev in group}
    last = final_step or max((r["step"] for r in records if r.get("step") is not None), default=None)
    for r in records:
        row = {
            "revision": r["revision"],
            "step": r.get("step"),
            "fraction": (r["step"] / last) if last and r.get("step") is not None else None,
            "status": r.get("status"),
            "error": r.get("error"),
            "commit": r.get("commit"),
            "weights_digest": r.get("weights_digest"),
            "duplicate_of": ", ".join(x for x in duplicates.get(r["revision"], []) if x != r["revision"]) or None,
            "n_prompts": (r.get("settings") or {}).get("n_prompts"),
        }
        row |= {k: v for k, v in flatten(r).items() if not k.startswith("time/")}
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.sort("step", nulls_last=True) if len(frame) else frame


def condition_kinds(records: list[dict]) -> dict[str, str]:
    """Condition name -> kind (baseline, clean, group, all, head, null), from the records themselves."""
    kinds: dict[str, str] = {}
    for r in records:
        for name, c in (r.get("conditions") or {}).items():
            kinds.setdefault(name, c.get("kind", "group"))
    return kinds


def _column(frame: pl.DataFrame, name: str) -> list:
    return frame[name].to_list() if name in frame.columns else [None] * len(frame)


def series_summary(usable: pl.DataFrame, key: str, contrast: Contrast, final_step: int | None, hypotheses: dict) -> dict:
    """The analysis plan on one headline series (`key` = '<contrast>/<metric>') of the usable checkpoints."""
    steps, values = usable["step"].to_list(), _column(usable, key)
    pairs = [(s, v) for s, v in zip(steps, values) if v is not None]
    steps, values = [s for s, _ in pairs], [v for _, v in pairs]
    revisions = [r for r, v in zip(usable["revision"].to_list(), _column(usable, key)) if v is not None]
    lows, highs = _column(usable, f"{key}_ci_low"), _column(usable, f"{key}_ci_high")
    lows = [lo for lo, v in zip(lows, _column(usable, key)) if v is not None]
    highs = [hi for hi, v in zip(highs, _column(usable, key)) if v is not None]
    i = analysis.emergence_index(values, contrast.threshold)
    point = None
    if i is not None:
        point = {
            "revision": revisions[i], "step": steps[i], "fraction": steps[i] / final_step if final_step else None,
            "value": values[i], "ci": [lows[i], highs[i]], "previous_revision": revisions[i - 1] if i > 0 else None,
        }  # fmt: skip
    kind = analysis.emergence_type(point["fraction"] if point else None)
    width_limit = contrast.threshold  # an interval wider than the strong level cannot tell strong from none
    return {
        "key": key,
        "contrast": contrast.name,
        "metric": contrast.metric,
        "levels": list(contrast.levels),
        "emergence_point": point,
        "emergence_type": kind,
        "hypothesis": analysis.hypothesis(kind, hypotheses),
        "final_value": values[-1] if values else None,
        "final_class": analysis.strength_class(values[-1], contrast.levels) if values else None,
        "first_value": values[0] if values else None,
        "shape": analysis.rise_shape(values, weak=contrast.levels[2]),
        "monotonic": analysis.is_monotonic(values, contrast.levels[2]),
        "events": analysis.crossing_events(steps, values, contrast.threshold),
        "intervals_too_wide": [r for r, lo, hi in zip(revisions, lows, highs) if analysis.interval_too_wide(lo, hi, width_limit)],
    }


def summarize(frame: pl.DataFrame, task: Task, final_step: int | None, methods: list[str] | None = None) -> dict:
    """Everything the analysis plan asks for, machine-readable: for the headline contrast, and for every
    contrast of every method the sweep ran (`results`, keyed '<contrast>/<metric>')."""
    failed = frame.filter(pl.col("status") == "failed")
    usable = frame.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null() & pl.col("step").is_not_null())
    steps = usable["step"].to_list()
    final_step = final_step or (max(steps) if steps else None)
    methods = methods or [""]
    results = {}
    for m, method in enumerate(methods):
        for contrast in task.contrasts:
            name = contrast.name if m == 0 else f"{method}/{contrast.name}"
            key = f"{name}/{contrast.metric}"
            if key in frame.columns:
                results[key] = series_summary(usable, key, contrast, final_step, task.hypotheses) | {"contrast": name, "method": method}
    headline_key = f"{task.headline.name}/{task.headline.metric}"
    head = results.get(headline_key) or series_summary(usable, headline_key, task.headline, final_step, task.hypotheses)
    duplicates = analysis.duplicate_groups(frame["revision"].to_list(), frame["weights_digest"].to_list())
    final = usable.tail(1).to_dicts()[0] if len(usable) else {}
    p_key = f"null/{task.headline.plus}/success_rate_p" if task.headline.metric == "success_rate" else f"null/{task.headline.plus}/logprob_diff_p"
    summary = {
        "task": task.describe(),
        "headline": headline_key,
        "checkpoints": len(frame),
        "usable_checkpoints": len(usable),
        "final_step": final_step,
        **{k: head[k] for k in ("emergence_point", "emergence_type", "hypothesis", "final_value", "final_class", "shape", "monotonic", "events")},
        "results": results,
        "quality": {
            "final_shows_known_result": bool(head["final_value"] is not None and head["final_value"] > task.headline.threshold),
            "earliest_shows_none": bool(head["first_value"] is not None and abs(head["first_value"]) <= task.headline.levels[2]),
            "failed_revisions": [{"revision": r, "error": e} for r, e in zip(failed["revision"], failed["error"])],
            "duplicate_revisions": duplicates,
            "intervals_too_wide": head["intervals_too_wide"],
        },
        "null_p_at_final": final.get(p_key),
        "group_beats_null_at_final": bool(final.get(p_key) is not None and final[p_key] <= 0.05),
    }
    summary["evidence"] = evidence_summary(usable, head)
    summary["verdict"] = verdict(summary, task)
    return summary


def evidence_summary(usable: pl.DataFrame, head: dict) -> dict | None:
    """When the attention-pattern evidence moves, and whether it moves with the patching headline: the
    largest single drop of the in-context-learning score (the checkpoint after it is the evidence's emergence)
    against the headline's emergence point; they coincide within one saved checkpoint or they do not."""
    if "evidence/icl_score" not in usable.columns:
        return None
    rows = usable.filter(pl.col("evidence/icl_score").is_not_null())
    if len(rows) < 2:
        return None
    revisions, icl = rows["revision"].to_list(), rows["evidence/icl_score"].to_list()
    shape = analysis.rise_shape([-v for v in icl])  # a drop of the ICL score is a rise of in-context learning
    j = shape["jump_index"]
    out = {
        "icl_first": icl[0], "icl_final": icl[-1], "icl_shape": shape["shape"], "icl_drop": shape["largest_jump"],
        "icl_drop_between": [revisions[j - 1], revisions[j]], "icl_emergence": revisions[j],
        "induction_max_final": rows["evidence/induction_max"].to_list()[-1] if "evidence/induction_max" in rows.columns else None,
    }  # fmt: skip
    point = head["emergence_point"]
    if point is None or shape["shape"] == "flat":
        out["coincides"] = None
        out["statement"] = (
            f"The in-context-learning score goes from {icl[0]:+.2f} to {icl[-1]:+.2f} nats "
            + ("with no marked drop" if shape["shape"] == "flat" else f"with its largest drop ({shape['largest_jump']:.2f} nats, {shape['shape']}) between {revisions[j - 1]} and {revisions[j]}")
            + ("; the patching headline never emerges, so there is nothing to line it up with." if point is None else "; the patching headline emerges at " + point["revision"] + ".")
        )
        return out
    i = revisions.index(point["revision"]) if point["revision"] in revisions else None
    out["coincides"] = i is not None and abs(i - j) <= 1
    where = f"the in-context-learning score drops most ({shape['largest_jump']:.2f} nats, {shape['shape']}) between {revisions[j - 1]} and {revisions[j]}"
    out["statement"] = (
        f"The attention-pattern evidence agrees: {where}, within one saved checkpoint of the patching emergence at {point['revision']}."
        if out["coincides"] else
        f"The attention-pattern evidence does NOT line up: {where}, while patching emerges at {point['revision']}."
    )  # fmt: skip
    return out


def _describe_contrast(task: Task, name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    c = next(c for c in task.contrasts if c.name == base)
    return f"{name} ({c.plus} - {c.minus}, {c.metric.replace('_', ' ')})"


def verdict(summary: dict, task: Task) -> str:
    """A short plain-language answer, with the caveats that matter."""
    q = summary["quality"]
    caveats = []
    if q["failed_revisions"]:
        caveats.append(f"{len(q['failed_revisions'])} revisions failed: " + ", ".join(f["revision"] for f in q["failed_revisions"]) + ".")
    if q["duplicate_revisions"]:
        caveats.append("Identical weights: " + "; ".join(" = ".join(g) for g in q["duplicate_revisions"]) + " (left out).")
    if summary["usable_checkpoints"] == 0:
        return " ".join(["No usable checkpoint: every revision failed or was a duplicate; nothing can be said.", *caveats])
    parts = []
    headline_results = [(k, r) for k, r in summary["results"].items() if r["contrast"].rsplit("/", 1)[-1] == task.headline.name]
    for key, res in headline_results:  # the headline contrast, for each method (the others: summary.json, plots)
        label = _describe_contrast(task, res["contrast"])
        strong, weak = res["levels"][0], res["levels"][2]
        point = res["emergence_point"]
        if point:
            parts.append(
                f"{label} emerges at {point['revision']} (step {point['step']:,}"
                + (f", {100 * point['fraction']:.1f}% of training" if point["fraction"] is not None else "")
                + f"): first above the strong level {strong:g} ({point['value']:+.2f}); {res['emergence_type']} emergence, "
                f"{res['shape']['shape']} rise; {res['hypothesis']}."
            )
        else:
            final, klass = res["final_value"], res["final_class"]
            described = f"below the weak level {weak:g}" if klass == "none" else f"{klass}"
            parts.append(f"No emergence of {label}: it never exceeds the strong level {strong:g} (final {final:+.2f}, {described}).")
        if not res["monotonic"] and res["events"]:
            parts.append("It is not monotonic: " + ", ".join(f"{e['event']} at step {e['step']:,}" for e in res["events"]) + ".")
        elif not res["monotonic"]:
            parts.append(f"It is not monotonic: it falls back by more than {weak:g} after a rise, below the strong level.")
    if summary["null_p_at_final"] is not None:
        beats = "stands" if summary["group_beats_null_at_final"] else "does not stand"
        parts.append(f"At the final checkpoint the {task.headline.plus} group {beats} out of the random head sets (null p = {summary['null_p_at_final']:.2f}).")
    if summary.get("evidence"):
        parts.append(summary["evidence"]["statement"])
    if q["intervals_too_wide"]:
        parts.append(
            f"Intervals are too wide to call it at {len(q['intervals_too_wide'])} of {summary['usable_checkpoints']} "
            f"checkpoints (headline interval wider than {task.headline.threshold:g} or missing: too few distinct prompts)."
        )
    return " ".join(parts + caveats)


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
        name = _describe_contrast(task, res["contrast"]) + ", band: 95% interval"
        _band(fig, x, _column(ok, f"{key}_ci_low"), _column(ok, f"{key}_ci_high"), color, f"{res['contrast']}: 95% bootstrap interval", opacity=0.18 if i == 0 else 0.1)
        fig.add_trace(go.Scatter(x=x, y=_column(ok, key), mode="lines+markers", name=name, text=ok["revision"].to_list(),
                                 line={"color": color, "width": 3 if i == 0 else 2, "dash": line_style(i)[0]}, marker={"symbol": line_style(i)[1]},
                                 hovertemplate="%{text}<br>%{y:.3f}<extra>" + res["contrast"] + "</extra>"))  # fmt: skip
    dup = ok.filter(pl.col("duplicate_of").is_not_null())
    if len(dup):
        fig.add_trace(go.Scatter(x=_x(dup), y=_column(dup, summary["headline"]), mode="markers", name="duplicate weights (excluded)",
                                 marker={"symbol": "x", "size": 12, "color": "black"}))  # fmt: skip
    for level, name in zip(task.headline.levels, ("strong", "moderate", "weak")):
        for sign in (1, -1):
            fig.add_hline(y=sign * level, line={"dash": "dash", "color": "#999" if sign > 0 else "#ccc", "width": 1},
                          annotation_text=f"{name} ({sign * level:+g})", annotation_position="right")  # fmt: skip
    point = summary["emergence_point"]
    if point:
        fig.add_trace(_vertical(point["step"], -1.0, 1.0, f"emergence: {point['revision']}"))
    metric = task.headline.metric.replace("_", " ")
    fig.update_layout(title=f"{task.headline.name} = {task.headline.plus} - {task.headline.minus} ({metric}) over training",
                      template="plotly_white", xaxis={"type": "log", "title": "training step (log; step 0 drawn at 1)"},
                      yaxis={"title": f"{task.headline.name} ({metric})"}, height=460, legend={"orientation": "h", "y": -0.2},
                      margin={"r": 130})  # fmt: skip
    if task.headline.metric == "success_rate":
        fig.update_yaxes(range=[-1.05, 1.05])
    return fig


def rates_figure(frame: pl.DataFrame, kinds: dict[str, str], colors: dict[str, str]) -> go.Figure:
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
    shown = [n for n, k in kinds.items() if k in SHOWN_KINDS and "/" not in n]
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
    ok = frame.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null())
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


def heatmap_figure(frame: pl.DataFrame, kinds: dict[str, str]) -> go.Figure | None:
    """Each single head's change in log-prob difference over the baseline, per checkpoint. The colour scale
    is symmetric and at least as wide as the null band, so a change no bigger than random head sets make
    shows as (almost) no colour."""
    ok = frame.filter(pl.col("status") == "ok")
    heads = [n for n, k in kinds.items() if k == "head" and f"{n}/logprob_diff" in ok.columns]
    if not heads:
        return None
    baseline = _column(ok, "baseline/logprob_diff")
    z = [[(v - b) if v is not None and b is not None else None for v, b in zip(_column(ok, f"{h}/logprob_diff"), baseline)] for h in heads]
    decoded = all(f"{h}/success_rate" in ok.columns for h in heads)  # single heads are teacher-forced in a sweep
    rates = [_column(ok, f"{h}/success_rate") for h in heads] if decoded else None
    widths = [hi - lo for lo, hi in zip(_column(ok, "null/logprob_diff_q05"), _column(ok, "null/logprob_diff_q95")) if None not in (lo, hi)]
    lim = max([abs(v) for row in z for v in row if v is not None] + widths + [0.1])
    fig = go.Figure(go.Heatmap(
        z=z, x=ok["revision"].to_list(), y=[f"layer {int(h[1:3])} head {int(h[4:])}" for h in heads], colorscale="RdBu", zmid=0,
        zmin=-lim, zmax=lim, customdata=rates, colorbar={"title": "Δ log-prob<br>vs baseline<br>(nats)"},
        hovertemplate="%{y} at %{x}<br>Δ log-prob %{z:.3f}" + ("<br>success rate %{customdata:.2f}" if decoded else "") + "<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(title=f"Each head patched alone: change in answer log-prob difference over the corrupted baseline "
                            f"(scale ±{lim:.2f} nats, at least the null band's width)",
                      template="plotly_white", height=max(300, 22 * len(heads) + 160), xaxis={"title": "checkpoint"})  # fmt: skip
    return fig


def context_tables(records: list[dict], task: Task, config: SweepConfig) -> list[tuple[str, str]]:
    """What a reader needs to trust the numbers: the task's prompts, example generations at the last measured
    checkpoint, the run config, and the versions of the libraries that produced them."""
    from importlib.metadata import PackageNotFoundError, version

    ok = [r for r in records if r.get("status") == "ok"]
    tables = []
    if ok:
        last = ok[-1]
        prompts = [{"prompt": pid, "clean": p["clean"], "corrupted": p["corrupted"],
                    "correct": ", ".join(map(repr, p["correct"])) + (" ..." if p["n_correct"] > 5 else ""),
                    "wrong": ", ".join(map(repr, p["wrong"])) + (" ..." if p["n_wrong"] > 5 else "")}
                   for pid, p in list(last.get("prompts", {}).items())[:6]]  # fmt: skip
        n = len(last.get("prompts", {}))
        tables.append((f"The task's prompts ({min(n, 6)} of {n}; {task.source})", _table(prompts, ["prompt", "clean", "corrupted", "correct", "wrong"])))
        shown = {"baseline", "clean", task.headline.plus, task.headline.minus}
        first_ids = list(last.get("prompts", {}))[:3]
        examples = [{"condition": r["condition"], "prompt": r["prompt_id"], "success": "yes" if r["success"] else "no",
                     "generation": repr(r["response"]), "log-prob difference": f"{r['logprob_diff']:+.3f}"}
                    for r in last.get("responses", []) if r["condition"] in shown and r["prompt_id"] in first_ids]  # fmt: skip
        tables.append((f"Example generations at {last['revision']}", _table(examples, ["condition", "prompt", "success", "generation", "log-prob difference"])))
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


def evidence_figures(frame: pl.DataFrame, summary: dict) -> list[go.Figure]:
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
        fig.add_trace(_vertical(point["step"], min(icl + [0.0]), max(icl + [0.0]), f"patching emergence: {point['revision']}"), row=1, col=1)
        fig.add_trace(_vertical(point["step"], 0.0, 1.0, f"patching emergence: {point['revision']}", legend=False), row=1, col=2)
    fig.update_xaxes(type="log", title="training step (log; green: the patching emergence)")
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=2)
    fig.update_layout(title="Second line of evidence: in-context learning and attention patterns on repeated random tokens",
                      template="plotly_white", height=420, legend={"orientation": "h", "y": -0.25})  # fmt: skip
    heads = sorted(k.removeprefix("evidence/induction/") for k in ok.columns if k.startswith("evidence/induction/"))
    if not heads:
        return [fig]
    z = [_column(ok, f"evidence/induction/{h}") for h in heads]
    heat = go.Figure(go.Heatmap(
        z=z, x=ok["revision"].to_list(), y=[f"layer {int(h[1:3])} head {int(h[4:])}" for h in heads], colorscale="Viridis",
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
    frame: pl.DataFrame


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
    frame = timeline(records, final_step)
    final_step = final_step or _published_final_step(config) or (frame["step"].max() if len(frame) else None)
    if final_step is not None and len(frame):
        frame = frame.with_columns((pl.col("step") / final_step).alias("fraction"))
    methods = list(config.methods(task.align))
    summary = summarize(frame, task, final_step, methods)
    summary |= {"sweep": parent, "config": config.to_dict(), "experiment": experiment_name(config.model, task.name)}
    folder = Path(reports_dir) / _safe(summary["experiment"]) / parent
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / "results.parquet")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    kinds = condition_kinds(records)
    colors = colors_for([n for n, k in kinds.items() if k in SHOWN_KINDS])
    figures = [f for f in (headline_figure(frame, summary, task), rates_figure(frame, kinds, colors),
                           detail_figure(frame, summary, task, colors), heatmap_figure(frame, kinds)) if f]  # fmt: skip
    figures += evidence_figures(frame, summary)
    problems = [{"revision": f["revision"], "problem": f["error"]} for f in summary["quality"]["failed_revisions"]]
    problems += [{"revision": " = ".join(g), "problem": "identical weight files (excluded from emergence detection)"} for g in summary["quality"]["duplicate_revisions"]]
    key = summary["headline"]
    shown = [n for n, k in kinds.items() if k in SHOWN_KINDS and "/" not in n]
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
        recorder.log_summary(parent, metrics, summary["verdict"])
    return Report(folder, html_path.resolve(), summary, summary["verdict"], frame)


def _published_final_step(config: SweepConfig) -> int | None:
    from pythia_sweep.checkpoints import published_revisions

    try:
        published = published_revisions(config.model)
    except Exception:  # noqa: BLE001 - offline and uncached: fall back to the last swept step
        return None
    return published[-1].step if published else None


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
        frame = timeline(reader.load_records(parent)).filter(pl.col("status") == "ok")
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
