"""The report's figures of numbers over training (plotly): the headline with its intervals, levels and the emergence
step's interval; rates and log-prob differences with the null band; the checkpoints around the emergence; several
sweeps' headlines compared. Lines that coincide are told apart by dash and marker; a legend names only what is
drawn."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from pythia_sweep.report import verdict as verdicts
from pythia_sweep.report.plotting import FIXED_COLORS, PALETTE, StepAxis, band, line_style, rgba, vertical
from pythia_sweep.report.reduce import column
from pythia_sweep.task.definition import Task


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
        band(fig, x, column(ok, f"{key}_ci_low"), column(ok, f"{key}_ci_high"), color, f"{res['contrast']}: 95% bootstrap interval", opacity=0.18 if i == 0 else 0.1)
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
                                 fillcolor=rgba(FIXED_COLORS["clean"], 0.15), line={"width": 0}, hoverinfo="skip",
                                 name=f"{what}: after {interval['after_revision']}, by {interval['by_revision']} (the verdict's 95% interval: "
                                      "prompts and checkpoint grid)"))  # fmt: skip
    elif point:
        fig.add_trace(vertical(axis.x([point["step"]])[0], -span, span, f"first past the strong level as measured, {point['revision']}: "
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
        named = band(fig, x, column(ok, "null/success_rate_q05"), column(ok, "null/success_rate_q95"), row=1, col=1, legend=True, **null)
        band(fig, x, column(ok, "null/logprob_diff_q05"), column(ok, "null/logprob_diff_q95"), row=1, col=2, legend=not named, **null)
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
        band(fig, x, one["low"], one["high"], color, f"{one['label']}: 95% interval", row=row, col=1, opacity=0.12)
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
