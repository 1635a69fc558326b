"""The report's figures of single heads (plotly): each head patched alone over training, the head maps by
attribution patching (the heads that ever exceed the weak level, and every head at the emergence point and the
final checkpoint), and the second line of evidence (the in-context-learning score, the strongest heads'
attention-pattern scores, each head's induction score)."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from pythia_sweep.report.plotting import PALETTE, StepAxis, line_style, vertical
from pythia_sweep.report.reduce import column
from pythia_sweep.stats import head_label


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
        fig.add_trace(vertical(at, min(icl + [0.0]), max(icl + [0.0]), name), row=1, col=1)
        fig.add_trace(vertical(at, 0.0, 1.0, name, legend=False), row=1, col=2)
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
