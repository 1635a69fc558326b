"""What every figure of the report shares: the colours (fixed for baseline, clean and all; a palette for the task's
groups), the dash and marker that tell coinciding lines apart, the training-step axis (log or linear by the
schedule), interval bands and vertical marks at a training step. One place, so a sweep's figures, the comparison
and the study's figures draw a line, a band and an axis alike."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

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


def band(fig, x, low, high, color, name, row=None, col=None, opacity=0.18, legend=False, group=None) -> bool:
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
                   fillcolor=rgba(color, opacity), hoverinfo="skip", showlegend=legend, legendgroup=group), **kw,
    )  # fmt: skip
    return True


def vertical(x: float, low: float, high: float, name: str, legend: bool = True, dash: str = "solid", color: str = "") -> go.Scatter:
    """A vertical line at a training step (already placed on its axis), as a trace in data coordinates (a layout shape on
    a log axis is placed in the axis's log units, which moved it when the axis type was set after the shape)."""
    return go.Scatter(x=[x, x], y=[low, high], mode="lines", name=name, showlegend=legend,
                      line={"color": color or FIXED_COLORS["clean"], "width": 2, "dash": dash}, hoverinfo="name")  # fmt: skip


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")
def line_style(i: int) -> tuple[str, str]:
    """The i-th line's dash and marker: distinct pairs for the first 36 lines, so lines that coincide stay
    told apart by their dash or marker (colour alone does not survive overlap)."""
    return DASHES[i % len(DASHES)], SYMBOLS[(i + i // len(DASHES)) % len(SYMBOLS)]
