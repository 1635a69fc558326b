"""A checkpoint's circuit: every edge scored by attribution (attribution.py), the fewest top edges whose circuit run
recovers a target share of the clean-minus-corrupted gap (`find_circuit`, each size tried measured by patching:
faithfulness.py), and that circuit's faithfulness with a 95% interval over prompt resamples (`circuit_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pythia_sweep.measure.circuits.attribution import edge_attribution
from pythia_sweep.measure.circuits.faithfulness import circuit_metric, edges_alone, faithfulness
from pythia_sweep.measure.circuits.graph import Graph, graph_of
from pythia_sweep.task.definition import TokenizedPair


@dataclass(frozen=True)
class Circuit:
    """The edges kept (senders, receivers), how many, and the faithfulness measured for them by patching."""

    kept: torch.Tensor
    size: int
    faithfulness: float
    target: float

    def edges(self, graph: Graph) -> list[tuple[str, str]]:
        return [(graph.senders[i], graph.receivers[j]) for i, j in self.kept.nonzero().tolist()]


def find_circuit(scores: torch.Tensor, mask: torch.Tensor, measure, target: float = 0.8) -> Circuit:
    """The fewest top edges by |score| whose circuit run recovers at least `target` of the clean-minus-corrupted gap,
    as `measure(kept) -> faithfulness` says (a run per size tried): sizes doubling from 1 until one reaches it, then
    halving the last step back (faithfulness need not grow with every edge added, so the size found is the smallest
    that reached it among those tried, said with its own measured faithfulness). All edges when none does."""
    order = [int(i) for i in torch.argsort(scores.abs().flatten(), descending=True) if mask.flatten()[i]]

    def kept_top(k: int) -> torch.Tensor:
        kept = torch.zeros(mask.numel(), dtype=torch.bool)
        kept[order[:k]] = True
        return kept.view(mask.shape)

    tried: dict[int, float] = {}

    def faith(k: int) -> float:
        if k not in tried:
            tried[k] = measure(kept_top(k))
        return tried[k]

    k = 1
    while k < len(order) and faith(k) < target:
        k *= 2
    k = min(k, len(order))
    if faith(k) < target:
        return Circuit(kept_top(k), k, faith(k), target)
    low, high = k // 2, k  # faith(low) < target <= faith(high), or low = 0
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if faith(mid) >= target else (mid, high)
    return Circuit(kept_top(high), high, faith(high), target)


def _interval(samples: tuple, statistic, resamples: int, seed: int) -> list[float] | list[None]:
    """A 95% percentile interval of `statistic` over prompt resamples (paired: a prompt's runs stay together)."""
    from scipy.stats import bootstrap

    if len(samples[0]) < 2:
        return [None, None]
    found = bootstrap(tuple(x.numpy() for x in samples), statistic, paired=True, vectorized=False, n_resamples=resamples,
                      method="percentile", random_state=seed)  # fmt: skip
    return [float(found.confidence_interval.low), float(found.confidence_interval.high)]


def circuit_at(model, pairs: Sequence[TokenizedPair], pad_id: int, batch_size: int, target: float = 0.8,
               resamples: int = 1000, seed: int = 0, alone: int = 10) -> dict:  # fmt: skip
    """One checkpoint's circuit: every edge scored, the fewest top edges reaching `target`, and its faithfulness
    measured by patching with a 95% interval over prompt resamples (the ratio of means recomputed on each); the top
    `alone` edges of the circuit each patched alone too (what that one edge recovers, against its attribution score).

    No circuit where there is nothing to explain: when the 95% interval of the clean-minus-corrupted gap does not lie
    above zero (the corrupted prompt answered as the clean one, as early in training), a share of that gap has no
    meaning, and `none` says why with the gap and its interval."""
    graph = graph_of(model)
    base = circuit_metric(model, pairs, torch.zeros_like(graph.mask()), pad_id)  # its `circuit` run is the corrupted one
    gap = float(base["clean"].mean() - base["corrupted"].mean())
    gap_ci = _interval((base["clean"], base["corrupted"]), lambda clean, corr: clean.mean() - corr.mean(), resamples, seed)
    found = {"target": target, "edges_possible": int(graph.mask().sum()), "clean": float(base["clean"].mean()),
             "corrupted": float(base["corrupted"].mean()), "gap": gap, "gap_ci": gap_ci}  # fmt: skip
    if gap_ci[0] is None or gap_ci[0] <= 0:
        said = f"clean - corrupted {gap:+.2f} nats, 95% " + (f"[{gap_ci[0]:+.2f}, {gap_ci[1]:+.2f}]" if gap_ci[0] is not None else "(one prompt: no interval)")
        why = (f"a reversed gap: {said} (the corrupted prompt's answer is likelier on the clean prompt than on its own)"
               if gap_ci[1] is not None and gap_ci[1] < 0 else f"no gap to explain: {said}")  # fmt: skip
        return found | {"edges": [], "nodes": [], "size": None, "faithfulness": None, "faithfulness_ci": [None, None], "reached": False,
                        "scores": {}, "alone": {}, "none": why, "every_edge": {}}  # fmt: skip
    scores = edge_attribution(model, pairs, pad_id, batch_size)
    circuit = find_circuit(scores, graph.mask(), lambda kept: faithfulness(circuit_metric(model, pairs, kept, pad_id)), target)
    metrics = circuit_metric(model, pairs, circuit.kept, pad_id)
    ratio = lambda clean, corr, circ: (circ.mean() - corr.mean()) / (clean.mean() - corr.mean())  # noqa: E731
    edges = circuit.edges(graph)
    score_of = {f"{u}->{v}": float(scores[graph.senders.index(u), graph.receivers.index(v)]) for u, v in edges}
    strongest = [tuple(k.split("->")) for k in sorted(score_of, key=lambda k: -abs(score_of[k]))[:alone]]
    patched_alone = {k: {"nats": nats, "share": nats / gap} for k, nats in edges_alone(model, pairs, strongest, pad_id).items()}
    return found | {"edges": [list(e) for e in edges], "nodes": sorted({u for u, _ in edges}), "size": circuit.size,
                    "faithfulness": circuit.faithfulness, "faithfulness_ci": _interval((metrics["clean"], metrics["corrupted"], metrics["circuit"]), ratio, resamples, seed),
                    "reached": circuit.faithfulness >= target, "scores": score_of, "alone": patched_alone, "none": None,
                    "every_edge": {f"{u}->{v}": float(scores[i, j]) for i, u in enumerate(graph.senders)
                                   for j, v in enumerate(graph.receivers) if graph.feeds(u, v)}}  # fmt: skip
