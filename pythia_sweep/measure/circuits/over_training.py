"""Circuits over training: how a task's circuit changes from checkpoint to checkpoint (its overlap with the final
one's and the previous one's, and when each node joins and leaves), and how it compares with the circuits Tigges et
al. 2024 publish for the same steps (their graph files read in this package's names and granularity).
"""

from __future__ import annotations

from collections.abc import Sequence

from pythia_sweep.errors import ConfigError


def jaccard(a, b) -> float | None:
    """|a & b| / |a | b| of two collections of edges ([sender, receiver]) or nodes; None when both are empty."""
    a, b = {tuple(x) if isinstance(x, list) else x for x in a}, {tuple(x) if isinstance(x, list) else x for x in b}
    return len(a & b) / len(a | b) if a | b else None


def over_training(revisions: Sequence[str], circuits: Sequence[dict]) -> dict:
    """How the circuit changes over training: at each checkpoint its overlap (Jaccard, of edges and of nodes) with the
    final checkpoint's circuit and with the previous one's (None where either has no circuit: nothing to overlap); per
    node (a sender: `emb`, a head, an MLP), the checkpoints it is in, when it joins first and when it leaves last."""
    final = circuits[-1]

    def overlap(a: dict | None, b: dict | None, key: str) -> float | None:
        return jaccard(a[key], b[key]) if a and b and a["none"] is None and b["none"] is None else None

    steps = []
    for i, (revision, c) in enumerate(zip(revisions, circuits)):
        previous = circuits[i - 1] if i else None
        steps.append({"revision": revision, "size": c["size"], "faithfulness": c["faithfulness"], "reached": c["reached"], "none": c["none"],
                      "gap": c["gap"], "edges_vs_final": overlap(c, final, "edges"), "nodes_vs_final": overlap(c, final, "nodes"),
                      "edges_vs_previous": overlap(c, previous, "edges"), "nodes_vs_previous": overlap(c, previous, "nodes")})  # fmt: skip
    nodes = sorted({n for c in circuits for n in c["nodes"]})
    timelines = []
    for node in nodes:
        present = [revision for revision, c in zip(revisions, circuits) if node in c["nodes"]]
        timelines.append({"node": node, "present": present, "joins": present[0], "last_seen": present[-1],
                          "at_final": node in final["nodes"]})  # fmt: skip
    return {"checkpoints": steps, "nodes": timelines}


# --- the published circuits of Tigges et al. 2024 -------------------------------------------------------------------


def read_published_graph(path) -> dict:
    """A circuit as Tigges et al. 2024 publish theirs (curt-tigges/circuits-over-time, results/graphs/<model>/<task>/
    <step>.json, written by EAP-IG's Graph.to_json): {"cfg": {n_layers, n_heads, parallel_attn_mlp}, "nodes": {name:
    in_graph}, "edges": {"u->v": {"score", "in_graph"}}}, names `input`, `a3.h5`, `m3`, `logits`, an edge into a head
    suffixed <q>, <k> or <v>. Returned in this module's names and granularity: `input` is `emb`, head a3.h5 is `a3.5`, and
    an edge into any head's q, k or v input of layer 3 is an edge into `a3` (this graph's receiver is a layer's attention
    input): {"cfg", "edges" (the circuit's, [u, v], sorted), "nodes" (their senders), "edges_published" (in_graph, as
    written)}."""
    import json
    import re
    from pathlib import Path

    data = json.loads(Path(path).read_text())
    missing = [k for k in ("cfg", "nodes", "edges") if k not in data]
    if missing:
        raise ConfigError(f"{path}: {missing[0]}", None, "a graph file in EAP-IG's format (cfg, nodes, edges), as Tigges et al. publish")

    def ours(name: str) -> str:
        name = re.sub(r"<[qkv]>$", "", name)
        if name == "input":
            return "emb"
        head = re.fullmatch(r"a(\d+)\.h(\d+)", name)
        return f"a{head[1]}.{head[2]}" if head else name

    edges, published = set(), 0
    for key, edge in data["edges"].items():
        if not edge["in_graph"]:
            continue
        published += 1
        sender, receiver = key.split("->")
        head = re.fullmatch(r"a(\d+)\.h\d+<[qkv]>", receiver)
        edges.add((ours(sender), f"a{head[1]}" if head else ours(receiver)))
    edges_sorted = sorted([u, v] for u, v in edges)
    return {"cfg": data["cfg"], "edges": edges_sorted, "nodes": sorted({u for u, _ in edges}), "edges_published": published}


def against_published(revisions: Sequence[str], circuits: Sequence[dict], folder, n_layers: int, n_heads: int) -> list[dict]:
    """Each checkpoint's circuit beside the published one of its step (`folder`/<step>.json, where there is one): the
    Jaccard overlap of their edges and of their nodes, in this module's granularity (`read_published_graph`). A
    published graph of another model shape is refused by name."""
    from pathlib import Path

    rows = []
    for revision, circuit in zip(revisions, circuits):
        step = revision.removeprefix("step")
        path = Path(folder) / f"{step}.json"
        if not step.isdigit() or not path.is_file():
            continue
        theirs = read_published_graph(path)
        shape = (theirs["cfg"].get("n_layers"), theirs["cfg"].get("n_heads"))
        if shape != (n_layers, n_heads):
            raise ConfigError(f"{path}: cfg", theirs["cfg"], f"a graph of this model's shape ({n_layers} layers x {n_heads} heads)")
        rows.append({"revision": revision, "edges": jaccard(circuit["edges"], theirs["edges"]) if circuit["none"] is None else None,
                     "nodes": jaccard(circuit["nodes"], theirs["nodes"]) if circuit["none"] is None else None,
                     "ours": circuit["size"], "theirs": len(theirs["edges"]), "theirs_as_published": theirs["edges_published"]})  # fmt: skip
    return rows
