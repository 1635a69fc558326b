"""The report's figures of circuits (plotly): a circuit per checkpoint over training (faithfulness, size, overlaps,
which components it holds), circuits drawn as layered graphs, and the overlap with the circuit Tigges et al. 2024
publish for the same step."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pythia_sweep.report.plotting import PALETTE, band, line_style
from pythia_sweep.stats import head_senders


def circuit_figures(over: dict, circuits: list[dict], target: float) -> list[go.Figure]:
    """A circuit per checkpoint, over training: its faithfulness (measured by patching, with its 95% interval over
    prompts) and size, its overlap with the final circuit and with the previous one (edges and nodes), and which
    nodes it holds at each checkpoint."""
    steps = over["checkpoints"]
    revisions = [s["revision"] for s in steps]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        f"faithfulness (target {target:g}), 95% interval over prompts", "edges kept", "overlap (Jaccard)"))  # fmt: skip
    band(fig, revisions, [c["faithfulness_ci"][0] for c in circuits], [c["faithfulness_ci"][1] for c in circuits], PALETTE[0],
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
    head_of = head_senders(n_layers, n_heads)

    def place(name: str) -> tuple[float, float]:
        """Where a component sits: a head by its layer and index, a layer's attention input just before its heads,
        its MLP (sending and receiving alike) just after them, the embeddings and the logits at either end."""
        if name == "emb":
            return 0.0, mid
        if name == "logits":
            return 2.0 * n_layers + 1, mid
        if name in head_of:  # a head, as a sender
            layer, head = head_of[name]
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
