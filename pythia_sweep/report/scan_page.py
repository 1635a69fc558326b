"""The layer x head scan's page: each head patched alone at one checkpoint, its effect over the corrupted baseline as
a heatmap sized to the model (and a parquet of the rows)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from pythia_sweep.report.page import render_html


def scan_page(scan, title: str, stem: Path) -> Path:
    """The layer x head scan (measure/scan.Scan) as a heatmap page of each head's effect (and a parquet of its rows)."""
    baseline, effects = scan.baseline, scan.effects()
    heads = pl.DataFrame([row | {"delta": effects[(row["layer"], row["head"])]} for row in scan.heads])
    fig = scan_figure(heads, title)
    stem.parent.mkdir(parents=True, exist_ok=True)
    heads.write_parquet(stem.with_suffix(".parquet"))
    path = stem.with_suffix(".html")
    path.write_text(render_html(f"Layer x head scan: {title}", f"corrupted baseline log-prob difference {baseline:+.3f}",
                                {"answer": "Blue: the head moves the answer toward the clean prompt's; red: away from it.", "facts": []},
                                [fig], []))  # fmt: skip
    return path.resolve()


def scan_figure(heads: pl.DataFrame, title: str) -> go.Figure:
    """Layers down, heads across, sized to the model: a row of at least 28 px per layer, every layer and head
    labelled, and a colour bar as tall as the map (a 2-layer scan is no longer a 200 px strip)."""
    layers = sorted(heads["layer"].unique().to_list())
    n_heads = heads["head"].max() + 1
    delta = {(layer, head): d for layer, head, d in heads.select("layer", "head", "delta").iter_rows()}
    z = [[delta[(layer, h)] for h in range(n_heads)] for layer in layers]
    lim = max(abs(v) for row in z for v in row) or 1.0
    y = [f"layer {layer}" for layer in layers]
    fig = go.Figure(go.Heatmap(z=z, x=[f"head {h}" for h in range(n_heads)], y=y, colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                               colorbar={"title": "Δ log-prob<br>vs baseline<br>(nats)", "len": 1.0, "thickness": 18},
                               hovertemplate="%{y}, %{x}<br>Δ log-prob %{z:.3f} nats<extra></extra>"))  # fmt: skip
    fig.update_layout(title=f"Each head patched alone: {title}", template="plotly_white",
                      height=max(420, 180 + 28 * len(layers)), width=max(640, 260 + 44 * n_heads),
                      yaxis={"tickmode": "array", "tickvals": y, "autorange": "reversed", "title": "layer"},
                      xaxis={"tickmode": "array", "tickvals": [f"head {h}" for h in range(n_heads)], "title": "head", "tickangle": -45})  # fmt: skip
    return fig
