"""The report's figures (plotly): the headline over training with its intervals, levels and the emergence step's
interval; rates and log-prob differences with the null band; the checkpoints around the emergence; the
single-head and attention-evidence heatmaps. Lines that coincide are told apart by dash and marker; a legend
names only what is drawn."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from pythia_sweep.report import verdict as verdicts
from pythia_sweep.report.reduce import column
from pythia_sweep.stats import head_label
from pythia_sweep.task.definition import Task


PALETTE = ("#1f77b4", "#d62728", "#ff7f0e", "#17becf", "#bcbd22", "#e377c2", "#8c564b")
FIXED_COLORS = {"baseline": "#7f7f7f", "clean": "#2ca02c", "all": "#9467bd"}
def colors_for(names: list[str]) -> dict[str, str]:
    """A fixed colour for baseline, clean and all; the palette, in order, for the task's groups."""
    groups = [n for n in names if n not in FIXED_COLORS]
    return {**FIXED_COLORS, **{n: PALETTE[i % len(PALETTE)] for i, n in enumerate(groups)}}


LOG_FROM = 1000  # a schedule that runs this long doubles (Pythia: step 1 ... 143000): a log axis; a shorter one reads better linear


@dataclass(frozen=True)
class StepAxis:
    """The training-step axis, picked from the schedule: log where training runs long (the emergence of a 448-step
    family would be squeezed into the last tenth of a log axis), linear otherwise."""

    log: bool

    @classmethod
    def for_final_step(cls, final_step: int | None) -> StepAxis:
        return cls(bool(final_step) and final_step >= LOG_FROM)

    def x(self, steps) -> list[float]:
        return [max(s, 1) for s in steps] if self.log else list(steps)  # step 0 drawn at 1 on a log axis

    def layout(self, note: str = "") -> dict:
        if self.log:
            return {"type": "log", "dtick": "D2", "title": f"training step (log; step 0 drawn at 1{note})"}
        return {"type": "linear", "title": "training step" + (f" ({note.lstrip('; ')})" if note else "")}


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


def _vertical(x: float, low: float, high: float, name: str, legend: bool = True, dash: str = "solid", color: str = "") -> go.Scatter:
    """A vertical line at a training step (already placed on its axis), as a trace in data coordinates (a layout shape on
    a log axis is placed in the axis's log units, which moved it when the axis type was set after the shape)."""
    return go.Scatter(x=[x, x], y=[low, high], mode="lines", name=name, showlegend=legend,
                      line={"color": color or FIXED_COLORS["clean"], "width": 2, "dash": dash}, hoverinfo="name")  # fmt: skip


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
    """The headline contrast over training, one line per method, with its interval, its strong levels (moderate and
    weak drawn fainter, unlabelled: six labels pile up on a wide y-range) and, where the verdict calls it, the span
    its crossing lies in (the verdict's interval); a crossing the verdict does not call is marked as measured only."""
    ok = frame.filter(pl.col("status") == "ok")
    axis = StepAxis.for_final_step(summary["final_step"])
    x = axis.x(ok["step"].to_list())
    fig = go.Figure()
    same_units = [(key, res) for key, res in summary["results"].items() if res["metric"] == task.headline.metric]
    for i, (key, res) in enumerate(same_units):  # contrasts on the headline's metric: one axis, one unit
        color = PALETTE[i % len(PALETTE)]
        name = verdicts.describe_contrast(task, res) + ": " + res["claim"]["call"]
        _band(fig, x, column(ok, f"{key}_ci_low"), column(ok, f"{key}_ci_high"), color, f"{res['contrast']}: 95% bootstrap interval", opacity=0.18 if i == 0 else 0.1)
        fig.add_trace(go.Scatter(x=x, y=column(ok, key), mode="lines+markers", name=name + " (band: 95% interval)", text=ok["revision"].to_list(),
                                 line={"color": color, "width": 3 if i == 0 else 2, "dash": line_style(i)[0]}, marker={"symbol": line_style(i)[1]},
                                 hovertemplate="%{text}<br>%{y:.3f}<extra>" + res["contrast"] + "</extra>"))  # fmt: skip
    dup = ok.filter(~pl.col("analysed"))
    if len(dup):
        fig.add_trace(go.Scatter(x=axis.x(dup["step"].to_list()), y=column(dup, summary["headline"]), mode="markers",
                                 name="identical weights (left out)", marker={"symbol": "x", "size": 12, "color": "black"}))  # fmt: skip
    strong, moderate, weak = task.headline.levels
    for sign in (1, -1):
        fig.add_hline(y=sign * strong, line={"dash": "dash", "color": "#888", "width": 1}, annotation_text=f"strong {sign * strong:+g}",
                      annotation_position="right")  # fmt: skip
        for level in (moderate, weak):
            fig.add_hline(y=sign * level, line={"dash": "dot", "color": "#ddd", "width": 1})
    drawn = [v for key, _ in same_units for v in column(ok, key) + column(ok, f"{key}_ci_low") + column(ok, f"{key}_ci_high") if v is not None]
    span = max([abs(v) for v in drawn] + [strong])  # the marks span the drawn values and levels, in the headline's own unit
    interval, point = summary["emergence_interval"], summary["emergence_point"]
    if interval:  # the verdict's span (after, by]: shaded, with the measured crossing at its right
        low, high = axis.x([interval["after"]])[0], axis.x([interval["by"]])[0]
        what = "emerges" if interval["sign"] == 1 else "reversed"
        fig.add_trace(go.Scatter(x=[low, low, high, high, low], y=[-span, span, span, -span, -span], mode="lines", fill="toself",
                                 fillcolor=_rgba(FIXED_COLORS["clean"], 0.15), line={"width": 0}, hoverinfo="skip",
                                 name=f"{what}: after {interval['after_revision']}, by {interval['by_revision']} (the verdict's 95% interval: "
                                      "prompts and checkpoint grid)"))  # fmt: skip
    elif point:
        fig.add_trace(_vertical(axis.x([point["step"]])[0], -span, span, f"first past the strong level as measured, {point['revision']}: "
                                f"not called ({summary['claim']['call']})", dash="dot", color="#999"))  # fmt: skip
    metric = task.headline.metric.replace("_", " ")
    fig.update_layout(title=f"{task.headline.name} = {task.headline.plus} - {task.headline.minus} ({metric}) over training",
                      template="plotly_white", xaxis=axis.layout(), height=460, legend={"orientation": "h", "y": -0.2},
                      yaxis={"title": f"{task.headline.name} ({metric}); dotted: ±moderate, ±weak"}, margin={"r": 110})  # fmt: skip
    if task.headline.metric == "success_rate":
        fig.update_yaxes(range=[-1.05, 1.05])
    return fig


def rates_figure(frame: pl.DataFrame, shown: list[str], colors: dict[str, str], axis: StepAxis = StepAxis(True)) -> go.Figure:
    """Success rate and log-prob difference of baseline, clean, each group and all heads, with intervals
    and the null band; lines that would hide each other are drawn with distinct dashes and markers."""
    ok = frame.filter(pl.col("status") == "ok")
    x = axis.x(ok["step"].to_list())
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "Success rate (the task's success rule), Wilson 95%", "Answer log-prob difference log Σp(correct) - log Σp(wrong), bootstrap 95%"))  # fmt: skip
    if "null/success_rate_q05" in ok.columns:
        null = {"color": "#444444", "name": "null: random head sets (5-95%)", "opacity": 0.12, "group": "null"}
        named = _band(fig, x, column(ok, "null/success_rate_q05"), column(ok, "null/success_rate_q95"), row=1, col=1, legend=True, **null)
        _band(fig, x, column(ok, "null/logprob_diff_q05"), column(ok, "null/logprob_diff_q95"), row=1, col=2, legend=not named, **null)
    for i, name in enumerate(shown):
        if f"{name}/success_rate" not in ok.columns:
            continue
        rate, low, high = column(ok, f"{name}/success_rate"), column(ok, f"{name}/success_rate_ci_low"), column(ok, f"{name}/success_rate_ci_high")
        dash, symbol = line_style(i)
        style, marker = {"color": colors.get(name, "#333"), "dash": dash}, {"symbol": symbol, "size": 7}
        fig.add_trace(go.Scatter(
            x=x, y=rate, mode="lines+markers", name=name, legendgroup=name, line=style, marker=marker,
            error_y={"type": "data", "symmetric": False, "array": [(h - r) if None not in (h, r) else 0 for h, r in zip(high, rate)],
                     "arrayminus": [(r - lo) if None not in (r, lo) else 0 for r, lo in zip(rate, low)], "thickness": 1},
        ), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=column(ok, f"{name}/logprob_diff"), mode="lines+markers", name=name, legendgroup=name,
                                 showlegend=False, line=style, marker=marker), row=1, col=2)  # fmt: skip
    fig.update_xaxes(**axis.layout())
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
    values = column(near, key)
    metric = task.headline.metric.replace("_", " ")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        f"{task.headline.name} ({metric}), 95% interval", "answer log-prob difference of its sides and the baseline (nats)"))  # fmt: skip
    fig.add_trace(go.Bar(x=near["revision"].to_list(), y=values, name=task.headline.name,
                         marker_color=[FIXED_COLORS["clean"] if r == point["revision"] else PALETTE[0] for r in near["revision"]],
                         error_y={"type": "data", "symmetric": False,
                                  "array": [(h if h is not None else v) - v for h, v in zip(column(near, f"{key}_ci_high"), values)],
                                  "arrayminus": [v - (lo if lo is not None else v) for lo, v in zip(column(near, f"{key}_ci_low"), values)]}),
                  row=1, col=1)  # fmt: skip
    for i, name in enumerate(dict.fromkeys((task.headline.plus, task.headline.minus, "baseline"))):
        dash, symbol = line_style(i)
        fig.add_trace(go.Scatter(x=near["revision"].to_list(), y=column(near, f"{name}/logprob_diff"), mode="lines+markers",
                                 name=f"{name}: log-prob difference", line={"color": colors.get(name, "#333"), "dash": dash},
                                 marker={"symbol": symbol}), row=1, col=2)  # fmt: skip
    fig.add_hline(y=task.headline.threshold, line={"dash": "dash", "color": "#999"}, annotation_text=f"strong ({task.headline.threshold:g})",
                  row=1, col=1)  # fmt: skip
    fig.update_layout(title=f"Around the first crossing as measured ({point['revision']}; the verdict: {summary['claim']['call']}): one unit per panel", template="plotly_white", height=420,
                      legend={"orientation": "h", "y": -0.2})  # fmt: skip
    fig.update_yaxes(title=f"{task.headline.name} ({metric})", row=1, col=1)
    fig.update_yaxes(title="log-prob difference (nats)", row=1, col=2)
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
    widths = [hi - lo for lo, hi in zip(column(ok, "null/logprob_diff_q05"), column(ok, "null/logprob_diff_q95")) if None not in (lo, hi)]
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


def head_map_figures(summary: dict) -> list[go.Figure]:
    """From the head maps: each head that ever exceeds the weak level, its attribution over training (a head x
    checkpoint heatmap), and every head's at the emergence point and the final checkpoint (layer x head maps). The
    colour scale runs to the larger of the maps' own largest |value| and the strong level, and says which: a map
    whose heads all stay far below the strong level is pale, not saturated."""
    heads = summary.get("heads")
    if not heads:
        return []
    strong = heads["levels"]["strong"]

    def scale(values: list[float]) -> tuple[float, str]:
        largest = max([abs(v) for v in values] + [0.0])
        if largest >= strong:
            return largest, f"colour scale ±{largest:.2f} nats, the largest |attribution|"
        return strong, f"colour scale ±{strong:g} nats, the strong level (no head reaches it; largest |attribution| {largest:.2f})"

    figures = []
    timelines = heads["heads"]
    if timelines:
        lim, said = scale([v for t in timelines for v in t["values"]])
        fig = go.Figure(go.Heatmap(
            z=[t["values"] for t in timelines], x=heads["revisions"], y=[f"head {head_label(t['layer'], t['head'])} ({t['course']})" for t in timelines],
            colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, colorbar={"title": "attribution<br>(nats)"},
            hovertemplate="%{y} at %{x}<br>attribution %{z:+.3f} nats<extra></extra>",
        ))  # fmt: skip
        fig.update_layout(title=f"Each head that ever exceeds the weak level, by attribution patching<br><sup>levels {heads['levels']['source']}; "
                                f"{said}</sup>",
                          template="plotly_white", height=max(300, 22 * len(timelines) + 160),
                          xaxis={"title": "checkpoint"}, yaxis={"autorange": "reversed"})  # fmt: skip
        figures.append(fig)
    maps = heads["maps"]
    names = [n for n in ("emergence", "final") if n in maps]
    lim, said = scale([v for n in names for row in maps[n] for v in row])
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"{n} ({heads['map_revisions'][n]})" for n in names])
    for i, name in enumerate(names, start=1):
        grid = maps[name]
        fig.add_trace(go.Heatmap(z=grid, x=list(range(len(grid[0]))), y=list(range(len(grid))), colorscale="RdBu", zmid=0,
                                 zmin=-lim, zmax=lim, showscale=i == len(names), colorbar={"title": "attribution<br>(nats)"},
                                 hovertemplate="head %{y}.%{x}: %{z:+.3f} nats<extra></extra>"), row=1, col=i)  # fmt: skip
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=i)
        fig.update_yaxes(title_text="layer", dtick=1, row=1, col=i)
    fig.update_layout(title=f"Every head by attribution patching, layer x head<br><sup>{said}</sup>", template="plotly_white",
                      height=max(320, 40 * len(maps[names[0]]) + 180))  # fmt: skip
    figures.append(fig)
    return figures


def evidence_figures(frame: pl.DataFrame, long: pl.DataFrame, summary: dict) -> list[go.Figure]:
    """The second line of evidence over training: the in-context-learning score and the strongest heads'
    induction and previous-token scores as curves, and each head's induction score as a heatmap."""
    ok = frame.filter(pl.col("status") == "ok")
    if "evidence/icl_score" not in ok.columns or ok["evidence/icl_score"].is_null().all():
        return []
    axis = StepAxis.for_final_step(summary["final_step"])
    x = axis.x(ok["step"].to_list())
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "In-context-learning score: loss on the repeat - loss on the first pass (nats)",
        "Strongest head's attention-pattern score (share of attention on the pattern)"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=column(ok, "evidence/icl_score"), mode="lines+markers", name="ICL score", text=ok["revision"].to_list(),
                             line={"color": PALETTE[0]}), row=1, col=1)  # fmt: skip
    for i, (key, name, color) in enumerate((("evidence/induction_max", "induction (prefix-matching)", PALETTE[1]), ("evidence/previous_token_max", "previous-token", PALETTE[2]))):
        dash, symbol = line_style(i)  # the two scores often sit together (both near 0 before training)
        fig.add_trace(go.Scatter(x=x, y=column(ok, key), mode="lines+markers", name=name, line={"color": color, "dash": dash},
                                 marker={"symbol": symbol}), row=1, col=2)  # fmt: skip
    point = summary["emergence_point"]
    if point:
        icl = [v for v in column(ok, "evidence/icl_score") if v is not None]
        name = f"patching headline first past its strong level: {point['revision']} ({summary['claim']['call']})"
        at = axis.x([point["step"]])[0]
        fig.add_trace(_vertical(at, min(icl + [0.0]), max(icl + [0.0]), name), row=1, col=1)
        fig.add_trace(_vertical(at, 0.0, 1.0, name, legend=False), row=1, col=2)
    fig.update_xaxes(**axis.layout("; green: the patching headline's first crossing"))
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


# The unit of a contrast (a difference of one metric between two conditions), as an axis says it.
CONTRAST_UNITS = {
    "success_rate": "difference of success rates (-1 to 1)",
    "prob_diff": "difference of answer probability differences (-2 to 2)",
    "logprob_diff": "difference of answer log-prob differences (nats)",
}


def compare_figure(series: list[dict], log_steps: bool = True) -> go.Figure:
    """Several sweeps' headlines over training, one panel per unit (a success rate and a nats contrast never share
    an axis): each a line with markers and its 95% band, named with its verdict's call; sweeps told apart by dash
    and marker, so a line drawn over an identical one stays visible. Each of `series`: label, metric, steps,
    revisions, values, low, high, call, and optionally color (one per run, the same in every panel). `log_steps`:
    training steps on a log axis (Pythia's schedules double), else a linear one (a family saved every few steps)."""
    units = list(dict.fromkeys(s["metric"] for s in series))
    fig = make_subplots(rows=len(units), cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=[CONTRAST_UNITS.get(u, u) for u in units])  # fmt: skip
    by_panel = sorted(enumerate(series), key=lambda pair: units.index(pair[1]["metric"]))  # the legend reads panel by panel
    for i, one in by_panel:
        row = units.index(one["metric"]) + 1
        color, (dash, symbol) = one.get("color", PALETTE[i % len(PALETTE)]), line_style(i)
        x = StepAxis(log_steps).x(one["steps"])
        name = f"{one['label']}: {one['call']}"
        _band(fig, x, one["low"], one["high"], color, f"{one['label']}: 95% interval", row=row, col=1, opacity=0.12)
        fig.add_trace(go.Scatter(x=x, y=one["values"], mode="lines+markers", name=name, text=one["revisions"],
                                 line={"color": color, "dash": dash, "width": 2}, marker={"symbol": symbol, "size": 8},
                                 hovertemplate="%{text}<br>%{y:.3f}<extra>" + one["label"] + "</extra>"), row=row, col=1)  # fmt: skip
    for row, unit in enumerate(units, start=1):
        fig.update_yaxes(title=CONTRAST_UNITS.get(unit, unit), row=row, col=1)
        if unit == "success_rate":
            fig.update_yaxes(range=[-1.05, 1.05], row=row, col=1)
        fig.update_xaxes(**StepAxis(log_steps).layout(), row=row, col=1)
    fig.update_layout(title="Headline contrasts over training, sweeps compared (bands: 95% bootstrap intervals)",
                      template="plotly_white", height=260 + 320 * len(units), legend={"orientation": "h", "y": -0.15})  # fmt: skip
    return fig


def circuit_figures(over: dict, circuits: list[dict], target: float) -> list[go.Figure]:
    """A circuit per checkpoint, over training: its faithfulness (measured by patching, with its 95% interval over
    prompts) and size, its overlap with the final circuit and with the previous one (edges and nodes), and which
    nodes it holds at each checkpoint."""
    steps = over["checkpoints"]
    revisions = [s["revision"] for s in steps]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        f"faithfulness (target {target:g}), 95% interval over prompts", "edges kept", "overlap (Jaccard)"))  # fmt: skip
    _band(fig, revisions, [c["faithfulness_ci"][0] for c in circuits], [c["faithfulness_ci"][1] for c in circuits], PALETTE[0],
          "faithfulness: 95% interval", row=1, col=1)  # fmt: skip
    fig.add_trace(go.Scatter(x=revisions, y=[s["faithfulness"] for s in steps], mode="lines+markers", name="faithfulness",
                             line={"color": PALETTE[0]}), row=1, col=1)  # fmt: skip
    fig.add_hline(y=target, line={"dash": "dash", "color": "#999"}, row=1, col=1)
    fig.add_trace(go.Bar(x=revisions, y=[s["size"] for s in steps], name="edges kept", marker_color=PALETTE[2]), row=1, col=2)
    for i, (key, name) in enumerate((("edges_vs_final", "edges, vs the final circuit"), ("nodes_vs_final", "nodes, vs the final circuit"),
                                     ("edges_vs_previous", "edges, vs the previous checkpoint's"), ("nodes_vs_previous", "nodes, vs the previous checkpoint's"))):  # fmt: skip
        dash, symbol = line_style(i)
        fig.add_trace(go.Scatter(x=revisions, y=[s[key] for s in steps], mode="lines+markers", name=name,
                                 line={"color": PALETTE[(i + 3) % len(PALETTE)], "dash": dash}, marker={"symbol": symbol}), row=1, col=3)  # fmt: skip
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=3)
    fig.update_xaxes(categoryorder="array", categoryarray=revisions)  # training order, also where a checkpoint has no circuit
    fig.update_layout(title="The circuit at each checkpoint: the top edges by attribution until patching recovers the target share",
                      template="plotly_white", height=440, legend={"orientation": "h", "y": -0.25})  # fmt: skip
    nodes = over["nodes"]
    heat = go.Figure(go.Heatmap(z=[[1 if r in n["present"] else 0 for r in revisions] for n in nodes], x=revisions,
                                y=[n["node"] for n in nodes], colorscale=[[0, "#f4f4f4"], [1, PALETTE[0]]], showscale=False,
                                hovertemplate="%{y} at %{x}: %{z}<extra>1 = in the circuit</extra>"))  # fmt: skip
    heat.update_layout(title="Each component in the circuit over training (a sender: emb, a head layer.head as aL.H, an MLP as mL)",
                       template="plotly_white", height=max(300, 20 * len(nodes) + 160), yaxis={"autorange": "reversed"},
                       xaxis={"title": "checkpoint"})  # fmt: skip
    return [fig, heat]


def circuit_graph_figure(circuits: list[dict], n_layers: int, n_heads: int) -> go.Figure:
    """Circuits as layered graphs side by side (one panel each): the embeddings on the left, each layer's heads in a
    column (head 0 at the top) with its MLP beside them, the logits on the right; each attention input and MLP input a
    small marker where its edges arrive; an edge's width is its |score| against the largest drawn, blue where patching
    it toward clean raises the answer, red where it lowers it."""
    fig = make_subplots(rows=1, cols=len(circuits), subplot_titles=[f"{c['revision']}: {c['size']} edges, faithfulness {c['faithfulness']:.2f}"
                                                                   for c in circuits], horizontal_spacing=0.04)  # fmt: skip
    mid = (n_heads - 1) / 2

    def place(name: str) -> tuple[float, float]:
        """Where a component sits: a head by its layer and index, a layer's attention input just before its heads,
        its MLP (sending and receiving alike) just after them, the embeddings and the logits at either end."""
        if name == "emb":
            return 0.0, mid
        if name == "logits":
            return 2.0 * n_layers + 1, mid
        if "." in name:  # a head, as a sender
            layer, head = (int(x) for x in name[1:].split("."))
            return 2.0 * layer + 1, float(head)
        layer = int(name[1:])
        return (2.0 * layer + 1.8, mid + 0.5) if name[0] == "m" else (2.0 * layer + 0.5, mid)

    largest = max([abs(s) for c in circuits for s in c["scores"].values()] + [1e-12])
    for col, circuit in enumerate(circuits, start=1):
        for key, score in sorted(circuit["scores"].items(), key=lambda kv: abs(kv[1])):
            u, v = key.split("->")
            (x0, y0), (x1, y1) = place(u), place(v)
            fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text", text=f"{key}: {score:+.3f} nats",
                                     line={"width": 0.5 + 6 * abs(score) / largest, "color": PALETTE[0] if score >= 0 else PALETTE[1]},
                                     opacity=0.7), row=1, col=col)  # fmt: skip
        names = sorted({n for key in circuit["scores"] for n in key.split("->")})
        points = [(place(n), n) for n in names]
        fig.add_trace(go.Scatter(x=[p[0] for p, _ in points], y=[p[1] for p, _ in points], mode="markers+text", text=[n for _, n in points],
                                 textposition="top center", marker={"size": 9, "color": "#444"}, showlegend=False, hoverinfo="text"),
                      row=1, col=col)  # fmt: skip
        fig.update_xaxes(tickvals=[0] + [2 * layer + 1 for layer in range(n_layers)] + [2 * n_layers + 1],
                         ticktext=["emb"] + [f"layer {layer}" for layer in range(n_layers)] + ["logits"], row=1, col=col)  # fmt: skip
        fig.update_yaxes(range=[n_heads - 0.3, -0.7], title_text="head" if col == 1 else None, row=1, col=col)
    fig.update_layout(title="The circuit as a layered graph: edge width |score| (attribution, nats), blue raises the answer, red lowers it",
                      template="plotly_white", height=max(420, 40 * n_heads + 200))  # fmt: skip
    return fig


def published_overlap_figure(rows: list[dict]) -> go.Figure:
    """Each checkpoint's circuit beside the one Tigges et al. 2024 publish for its step: the Jaccard overlap of edges and
    of nodes (theirs at this graph's granularity), over training."""
    revisions = [r["revision"] for r in rows]
    fig = go.Figure()
    for i, (key, name) in enumerate((("edges", "edges"), ("nodes", "nodes"))):
        dash, symbol = line_style(i)
        fig.add_trace(go.Scatter(x=revisions, y=[r[key] for r in rows], mode="lines+markers", name=name,
                                 line={"color": PALETTE[i], "dash": dash}, marker={"symbol": symbol}))  # fmt: skip
    fig.update_yaxes(range=[-0.05, 1.05], title="Jaccard overlap")
    fig.update_xaxes(categoryorder="array", categoryarray=revisions, title="checkpoint")
    fig.update_layout(title="This circuit against the one Tigges et al. 2024 publish for the same step (their edges into a head's q/k/v taken to its layer)",
                      template="plotly_white", height=380, legend={"orientation": "h", "y": -0.25})  # fmt: skip
    return fig
