"""The circuits-over-training page: the circuit at each checkpoint, how it changes, and (where given) how it stands
to the circuit Tigges et al. 2024 publish; its answer in one line with labelled facts, as a verdict is written,
and circuits.json beside it."""

from __future__ import annotations

import json
from pathlib import Path

from pythia_sweep.report.circuit_figures import circuit_figures, circuit_graph_figure, published_overlap_figure
from pythia_sweep.report.page import render_html


def _share(value: float | None) -> str:
    return "none here" if value is None else f"{value:.2f}"


def circuits_page(revisions: list[str], circuits: list[dict], title: str, stem: Path, shape: tuple[int, int],
                  published: list[dict] | None = None) -> tuple[Path, dict]:  # fmt: skip
    """The circuits over training as a page (and circuits.json): the figures of circuit_figures.circuit_figures, the first and
    final circuits drawn as layered graphs (`shape`: the model's layers and heads), and the answer in one line with
    labelled facts, as a verdict is written."""
    from pythia_sweep.measure.circuits.over_training import over_training

    over = over_training(revisions, circuits)
    target = circuits[-1]["target"]
    found = [c for c in circuits if c["none"] is None]
    short = [c["revision"] for c in found if not c["reached"]]
    final = circuits[-1]
    if final["none"]:
        answer = f"No circuit at {revisions[-1]}: {final['none']}; nothing to find a circuit for in this task at the final checkpoint."
    else:
        answer = (f"The circuit at {revisions[-1]}: {final['size']} of {final['edges_possible']} edges, faithfulness "
                  f"{final['faithfulness']:.2f} by patching (target {target:g}); first found at {found[0]['revision']}.")  # fmt: skip
    first = found[0]["revision"] if found else None
    joined = [n for n in over["nodes"] if n["joins"] != first]
    left = [n for n in over["nodes"] if not n["at_final"]]
    alone = sorted(final["alone"].items(), key=lambda kv: -abs(kv[1]["nats"]))[:3]
    facts = [
        {"label": "final", "fact": "nodes " + ", ".join(final["nodes"]) if final["nodes"] else final["none"]},
        {"label": "edges alone", "fact": "; ".join(f"{k} patched alone {a['nats']:+.2f} nats ({a['share']:.0%} of the gap; attribution "
                                                   f"{final['scores'][k]:+.2f})" for k, a in alone) or "none"},  # fmt: skip
        {"label": "no circuit", "fact": "; ".join(f"{c['revision']} ({c['none']})"
                                                  for c in circuits if c["none"]) or "none: every checkpoint has a gap to explain"},  # fmt: skip
        {"label": "overlap with the final", "fact": "; ".join(f"{c['revision']} edges {c['edges_vs_final']:.2f}, nodes {c['nodes_vs_final']:.2f}"
                                                              for c in over["checkpoints"] if c["edges_vs_final"] is not None) or "none"},  # fmt: skip
        {"label": "joined later", "fact": ", ".join(f"{n['node']} at {n['joins']}" for n in joined) or "none"},
        {"label": "left", "fact": ", ".join(f"{n['node']} after {n['last_seen']}" for n in left) or "none"},
        {"label": "short of target", "fact": ", ".join(short) or "none: every circuit found reaches it"},
    ]
    if published is not None:  # circuits.against_published: beside Tigges et al.'s circuit of the same step
        facts.append({"label": "published (Tigges et al.)", "fact": "; ".join(
            f"{p['revision']}: edges {_share(p['edges'])}, nodes {_share(p['nodes'])} ({p['ours']} edges here, {p['theirs']} theirs "
            f"at this granularity)" for p in published)})  # fmt: skip
    stem.parent.mkdir(parents=True, exist_ok=True)
    summary = {"revisions": revisions, "circuits": circuits, "over_training": over, "answer": answer, "facts": facts, "published": published}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))
    path = stem.with_suffix(".html")
    drawn = list({id(c): c for c in (found[:1] + found[-1:])}.values())  # the first circuit found and the final one, as graphs
    figures = circuit_figures(over, circuits, target) + ([circuit_graph_figure(drawn, *shape)] if drawn else [])
    if published:
        figures.append(published_overlap_figure(published))
    path.write_text(render_html(f"Circuits over training: {title}", f"{len(revisions)} checkpoints", {"answer": answer, "facts": facts},
                                figures, []))  # fmt: skip
    return path.resolve(), summary
