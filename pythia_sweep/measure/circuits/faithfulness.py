"""Edges patched exactly, the checks on attribution's estimates: a circuit's run, the clean prompt with every edge
outside the circuit given its corrupted value (`circuit_metric`), and how much of the clean-minus-corrupted gap it
recovers (`faithfulness`); and an edge patched alone from the clean run into the corrupted one (`edges_alone`), what
its attribution score estimates to first order. A receiver's input is rebuilt from the residual this run computes,
less (or plus) the chosen senders' outputs in this run against another's, each as it enters the residual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from pythia_sweep.measure.batch import pad
from pythia_sweep.measure.circuits.graph import BLOCKS, Graph, graph_of, hooked, wired
from pythia_sweep.measure.headmap import answer_metric
from pythia_sweep.task.definition import TokenizedPair


def _entering(model, graph: Graph, chosen: torch.Tensor, a: dict, b: dict, like: torch.Tensor) -> torch.Tensor:
    """Sum over the chosen senders (`chosen`: (senders,) bool) of (a[u] - b[u]), each as it enters the residual (a head
    through its share of the output projection): a difference of two runs' sender outputs, as one receiver reads it."""
    paths = BLOCKS[model.config.model_type]
    layers = model.get_submodule(paths["layers"])
    index = {u: i for i, u in enumerate(graph.senders)}
    total = torch.zeros_like(like)
    for u in ["emb"] + [f"m{layer}" for layer in range(graph.n_layers)]:
        if chosen[index[u]]:
            total = total + (a[u] - b[u])
    for layer in range(graph.n_layers):
        heads = chosen[index[f"a{layer}.0"] : index[f"a{layer}.0"] + graph.n_heads]  # (H,)
        if heads.any():
            weight = layers[layer].get_submodule(paths["out_proj"]).weight  # (D, H * dh)
            columns = heads.repeat_interleave(weight.shape[1] // graph.n_heads).to(like.device, like.dtype)  # (H * dh,)
            total = total + ((a[f"a{layer}"] - b[f"a{layer}"]) * columns) @ weight.T
    return total


@contextlib.contextmanager
def _edges_cut(model, graph: Graph, kept: torch.Tensor, corrupted: dict) -> Iterator[None]:
    """While the block runs (on the clean rows), every edge outside `kept` (senders, receivers) carries its corrupted
    value: each receiver's input is the residual of this run minus, for each sender whose edge into it is cut, that
    sender's output in this run less its output in the corrupted run (`corrupted`: `wired`'s outputs). Senders'
    outputs are this run's, so a kept edge carries what its sender computes from its own kept inputs."""
    cut = (~kept) & graph.mask()  # (senders, receivers)
    run: dict = {}  # this run's sender outputs, filled by hooked as the forward proceeds

    def rebuild(v):
        j = graph.receivers.index(v)
        return lambda x: x - _entering(model, graph, cut[:, j], run, corrupted, x)

    with hooked(model, graph, rebuild, out=run):
        yield


@contextlib.contextmanager
def _edges_patched(model, graph: Graph, patched: torch.Tensor, clean: dict) -> Iterator[None]:
    """While the block runs (on the corrupted rows), the `patched` edges (senders, receivers) alone carry the clean
    run's value: each receiver's input is this run's residual plus, for each patched edge into it, the sender's clean
    output less its output in this run. Everything else is the corrupted run: the exact patch an edge's attribution
    score estimates to first order."""
    run: dict = {}

    def rebuild(v):
        j = graph.receivers.index(v)
        return lambda x: x + _entering(model, graph, patched[:, j], clean, run, x)

    with hooked(model, graph, rebuild, out=run):
        yield


def _one_prompt(tp: TokenizedPair, pad_id: int, device):
    """One prompt's rows (the prompt followed by each of the corrupted prompt's answers, clean and corrupted side), the
    positions where an answer token is read, and the answer log-prob difference of a run's logits kept there."""
    rows = {side: [tp.ids[side] + answer for answer in tp.answers["corrupted"]] for side in ("clean", "corrupted")}
    ids = {side: pad(rows[side], pad_id, left=False, device=device) for side in rows}
    read = sorted({len(tp.ids["corrupted"]) - 1 + j for answer in tp.answers["corrupted"] for j in range(len(answer))})
    column = {position: k for k, position in enumerate(read)}

    def metric(logits: torch.Tensor) -> float:
        exact = torch.promote_types(logits.dtype, torch.float32)
        return float(answer_metric(torch.log_softmax(logits.to(exact), dim=-1), [tp], column, device))

    return ids, torch.tensor(read, device=device), metric


def edges_alone(model, pairs: Sequence[TokenizedPair], edges: Sequence[tuple[str, str]], pad_id: int) -> dict[str, float]:
    """Each edge patched alone from the clean run into the corrupted one (`_edges_patched`): how far it moves the answer
    log-prob difference, in nats, the mean over prompts; "u->v" -> nats."""
    graph = graph_of(model)
    device = next(model.parameters()).device
    moved = {f"{u}->{v}": 0.0 for u, v in edges}
    for tp in pairs:
        ids, keep_at, metric = _one_prompt(tp, pad_id, device)

        def corrupted_run() -> float:
            return metric(model(input_ids=ids["corrupted"][0], attention_mask=ids["corrupted"][1], use_cache=False, logits_to_keep=keep_at).logits)

        with torch.no_grad():
            with wired(model, graph, live=False) as clean:
                model(input_ids=ids["clean"][0], attention_mask=ids["clean"][1], use_cache=False, logits_to_keep=1)
            base = corrupted_run()
            for u, v in edges:
                only = torch.zeros_like(graph.mask())
                only[graph.senders.index(u), graph.receivers.index(v)] = True
                with _edges_patched(model, graph, only, clean["out"]):
                    moved[f"{u}->{v}"] += (corrupted_run() - base) / len(pairs)
    return moved


def circuit_metric(model, pairs: Sequence[TokenizedPair], kept: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Each prompt's answer log-prob difference (the corrupted prompt's answers) in three runs: `clean`, `corrupted`,
    and `circuit`, the clean prompt with every edge outside `kept` given its corrupted value (`_edges_cut`): (P,) each.
    The kept graph's faithfulness is (circuit - corrupted) / (clean - corrupted)."""
    graph = graph_of(model)
    device = next(model.parameters()).device
    out: dict[str, list[float]] = {"clean": [], "corrupted": [], "circuit": []}
    for tp in pairs:
        ids, keep_at, metric = _one_prompt(tp, pad_id, device)

        with torch.no_grad():
            with wired(model, graph, live=False) as corrupted:
                logits = model(input_ids=ids["corrupted"][0], attention_mask=ids["corrupted"][1], use_cache=False, logits_to_keep=keep_at).logits
            out["corrupted"].append(metric(logits))
            out["clean"].append(metric(model(input_ids=ids["clean"][0], attention_mask=ids["clean"][1], use_cache=False,
                                             logits_to_keep=keep_at).logits))  # fmt: skip
            with _edges_cut(model, graph, kept.to(torch.bool), corrupted["out"]):
                out["circuit"].append(metric(model(input_ids=ids["clean"][0], attention_mask=ids["clean"][1], use_cache=False,
                                                   logits_to_keep=keep_at).logits))  # fmt: skip
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in out.items()}


def faithfulness(metrics: dict[str, torch.Tensor]) -> float:
    """How much of the clean-minus-corrupted gap the circuit run recovers: 1 is all of it, 0 none, over the prompts'
    means (a prompt whose gap is near zero would blow up a per-prompt ratio)."""
    gap = float(metrics["clean"].mean() - metrics["corrupted"].mean())
    return float(metrics["circuit"].mean() - metrics["corrupted"].mean()) / gap if gap else float("nan")
