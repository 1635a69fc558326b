"""Every edge's score at once: edge attribution patching over the whole model (EAP; Syed et al. 2023, arXiv
2310.10348), the first step toward circuits over training (issue 34).

The score of an edge u -> v (graph.py) is the first-order estimate of patching that edge alone from the clean run
into the corrupted one:

    score(u -> v) = sum over positions p of (u_clean[p] - u_corr[p]) . dM/d(in_v)[p]

with M the answer log-prob difference on the corrupted prompt (teacher-forced, as the head map's) and in_v *v's own*
copy of its input: a zero tensor added where v's norm reads the residual, so the gradient is v's alone (the two norms
of a parallel block read one residual; a gradient taken at the residual would give every edge into the block the sum
of both). One clean forward, one corrupted forward and one backward give every edge. Prompts are compared position
by position, so clean and corrupted prompts must be as long in tokens (`same_length = true` in the task); the rows
are each prompt followed by the corrupted prompt's answers, on both sides, and every position counts, as it does in
the circuit run that measures a circuit's faithfulness (faithfulness.circuit_metric): kept every edge it is the clean
run, kept none the corrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pythia_sweep.errors import ConfigError
from pythia_sweep.measure.batch import pad
from pythia_sweep.measure.circuits.graph import BLOCKS, Graph, graph_of, wired
from pythia_sweep.measure.headmap import answer_metric
from pythia_sweep.task.definition import TokenizedPair


def edge_attribution(model, pairs: Sequence[TokenizedPair], pad_id: int, batch_size: int) -> torch.Tensor:
    """(senders, receivers) of `graph_of(model)`: each edge's score, the mean over prompts, in nats of the answer
    log-prob difference; 0 where the edge does not exist. Rows are (prompt, answer) sequences, a prompt's answers in
    one batch (its metric joins them)."""
    uneven = next((tp for tp in pairs if len(tp.ids["clean"]) != len(tp.ids["corrupted"])), None)
    if uneven is not None:
        raise ConfigError("same_length", False, f"clean and corrupted prompts as long in tokens (edges are compared position by "
                          f"position); prompt {uneven.pair.id!r} has {len(uneven.ids['clean'])} and {len(uneven.ids['corrupted'])}")  # fmt: skip
    graph = graph_of(model)
    total = torch.zeros(len(graph.senders), len(graph.receivers), dtype=torch.float64)
    per_batch = max(1, batch_size // max(len(tp.answers["corrupted"]) for tp in pairs))
    for start in range(0, len(pairs), per_batch):
        total += _batch_edges(model, graph, pairs[start : start + per_batch], pad_id)
    return total / len(pairs) * graph.mask()


def _batch_edges(model, graph: Graph, chunk: Sequence[TokenizedPair], pad_id: int) -> torch.Tensor:
    device = next(model.parameters()).device
    rows = {side: [tp.ids[side] + answer for tp in chunk for answer in tp.answers["corrupted"]] for side in ("clean", "corrupted")}
    # token j of an answer is read at position n_prompt - 1 + j: the output layer runs only where some row reads one
    read = sorted({len(tp.ids["corrupted"]) - 1 + j for tp in chunk for answer in tp.answers["corrupted"] for j in range(len(answer))})
    column = {position: k for k, position in enumerate(read)}
    ids = {side: pad(rows[side], pad_id, left=False, device=device) for side in rows}  # (R, T) and its mask, right padding
    with torch.no_grad(), wired(model, graph, live=False) as clean:
        model(input_ids=ids["clean"][0], attention_mask=ids["clean"][1], use_cache=False, logits_to_keep=1)
    with torch.enable_grad(), wired(model, graph, live=True) as corr:
        logits = model(input_ids=ids["corrupted"][0], attention_mask=ids["corrupted"][1], use_cache=False,
                       logits_to_keep=torch.tensor(read, device=device)).logits  # (R, len(read), V)  # fmt: skip
        exact = torch.promote_types(logits.dtype, torch.float32)  # float32 at least; a float64 model's kept
        metric = answer_metric(torch.log_softmax(logits.to(exact), dim=-1), chunk, column, device)
        grads = dict(zip(graph.receivers, torch.autograd.grad(metric, [corr["delta"][v] for v in graph.receivers])))  # v -> (R, T, D)
    paths = BLOCKS[model.config.model_type]
    layers = model.get_submodule(paths["layers"])
    scores = torch.zeros(len(graph.senders), len(graph.receivers), dtype=torch.float64)
    heads = graph.head_of  # the heads' scores come per layer below, from the output projection's slices
    for j, v in enumerate(graph.receivers):
        g = grads[v].to(exact)  # (R, T, D): the gradient at v's input (zero where nothing read depends on it: padding)
        for i, u in enumerate(graph.senders):
            if u in heads or not graph.feeds(u, v):
                continue
            scores[i, j] = float(((clean["out"][u].to(exact) - corr["out"][u].detach().to(exact)) * g).sum())
        for layer in range(graph.n_layers):
            if not graph.feeds(f"a{layer}.0", v):
                continue
            weight = layers[layer].get_submodule(paths["out_proj"]).weight.detach().to(exact)  # (D, H * dh): head h's output is z_h W_h^T
            head_dim = weight.shape[1] // graph.n_heads
            delta = clean["out"][f"a{layer}"].to(exact) - corr["out"][f"a{layer}"].detach().to(exact)  # (R, T, H * dh)
            per_head = (delta * (g @ weight)).view(*delta.shape[:2], graph.n_heads, head_dim).sum(dim=(0, 1, 3))  # (H,)
            first = graph.senders.index(f"a{layer}.0")
            scores[first : first + graph.n_heads, j] = per_head.double().cpu()
    return scores
