"""Which components feed which: edge attribution patching over the whole model (EAP; Syed et al. 2023, arXiv
2310.10348), the first step toward circuits over training (issue 34).

The graph's senders are the input embeddings, every head (its share of the attention output projection: the head's
output as it enters the residual stream) and every MLP (its output); its receivers are each layer's attention input
(the q/k/v of all its heads together), each layer's MLP input, and the logits (the final norm's input). An edge
u -> v exists where u's output is part of the residual v reads: in Pythia's parallel blocks the attention and the MLP
of a layer read the same residual, so a layer's heads feed the next layers only; in sequential blocks (Llama, GPT-NeoX
with `use_parallel_residual = False`) they feed their own layer's MLP too. The score of an edge is the first-order
estimate of patching that edge alone from the clean run into the corrupted one:

    score(u -> v) = sum over positions p of (u_clean[p] - u_corr[p]) . dM/d(in_v)[p]

with M the answer log-prob difference on the corrupted prompt (teacher-forced, as the head map's) and in_v *v's own*
copy of its input: a zero tensor added where v's norm reads the residual, so the gradient is v's alone (the two norms
of a parallel block read one residual; a gradient taken at the residual would give every edge into the block the sum
of both). One clean forward, one corrupted forward and one backward give every edge. Prompts are compared position
by position, so clean and corrupted prompts must be as long in tokens (`same_length = true` in the task); the rows
are each prompt followed by the corrupted prompt's answers, on both sides, and every position counts, as it does in
the circuit run that measures a circuit's faithfulness (`circuit_metric`): kept every edge it is the clean run, kept
none the corrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from pythia_sweep.errors import ConfigError
from pythia_sweep.measure.fastpath import pad
from pythia_sweep.measure.headmap import answer_metric
from pythia_sweep.task.definition import TokenizedPair

BLOCKS = {  # where each architecture keeps what the graph needs, by Hugging Face module path
    "gpt_neox": {"embed": "gpt_neox.embed_in", "layers": "gpt_neox.layers", "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
                 "out_proj": "attention.dense", "mlp": "mlp", "final_norm": "gpt_neox.final_layer_norm"},
    "llama": {"embed": "model.embed_tokens", "layers": "model.layers", "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
              "out_proj": "self_attn.o_proj", "mlp": "mlp", "final_norm": "model.norm"},
}  # fmt: skip


@dataclass(frozen=True)
class Graph:
    """The model's components as a graph. Senders and receivers are named as people read them: `emb`, `a3.5` (layer 3,
    head 5), `m3` (layer 3's MLP); receivers `a3` (layer 3's attention input), `m3` (its MLP input), `logits`."""

    n_layers: int
    n_heads: int
    parallel: bool  # the attention and the MLP of a block read the same residual

    @property
    def senders(self) -> list[str]:
        return ["emb"] + [name for layer in range(self.n_layers) for name in
                          [f"a{layer}.{h}" for h in range(self.n_heads)] + [f"m{layer}"]]  # fmt: skip

    @property
    def receivers(self) -> list[str]:
        return [name for layer in range(self.n_layers) for name in (f"a{layer}", f"m{layer}")] + ["logits"]

    def feeds(self, sender: str, receiver: str) -> bool:
        """Whether `sender`'s output is part of the residual `receiver` reads."""
        if receiver == "logits" or sender == "emb":
            return True
        layer = int(receiver[1:])
        sender_layer = int(sender[1:].split(".")[0])
        if sender_layer < layer:
            return True
        return sender_layer == layer and receiver[0] == "m" and sender[0] == "a" and not self.parallel

    def mask(self) -> torch.Tensor:
        """(senders, receivers): True where the edge exists."""
        return torch.tensor([[self.feeds(u, v) for v in self.receivers] for u in self.senders])


def graph_of(model) -> Graph:
    config = model.config
    if config.model_type not in BLOCKS:
        raise ConfigError("model", config.model_type, f"a model type whose blocks the circuit graph knows ({', '.join(sorted(BLOCKS))})")
    return Graph(config.num_hidden_layers, config.num_attention_heads, bool(getattr(config, "use_parallel_residual", False)))


@contextlib.contextmanager
def _hooked(model, graph: Graph, at_receiver=None, out: dict | None = None) -> Iterator[dict]:
    """Hooks for one forward: every sender's output (heads as the input of the output projection, (B, T, H * dh);
    `emb` and MLPs as (B, T, D)) kept in `out` (yielded), as this run computes it; with `at_receiver(name)`, each
    receiver's norm input `x` replaced by `at_receiver(name)(x)` (a perturbation for its gradient, or a rebuilt input)."""
    paths = BLOCKS[model.config.model_type]
    out = {} if out is None else out
    handles = []

    def keep(name, output_of=True):
        def hook(module, args, output=None):
            out[name] = output if output_of else args[0]
        return hook

    def receive(name):
        change = at_receiver(name)
        return lambda module, args: (change(args[0]), *args[1:])

    try:
        handles.append(model.get_submodule(paths["embed"]).register_forward_hook(keep("emb")))
        layers = model.get_submodule(paths["layers"])
        for layer in range(graph.n_layers):
            block = layers[layer]
            handles.append(block.get_submodule(paths["out_proj"]).register_forward_pre_hook(keep(f"a{layer}", output_of=False)))
            handles.append(block.get_submodule(paths["mlp"]).register_forward_hook(keep(f"m{layer}")))
            if at_receiver:
                handles.append(block.get_submodule(paths["attn_norm"]).register_forward_pre_hook(receive(f"a{layer}")))
                handles.append(block.get_submodule(paths["mlp_norm"]).register_forward_pre_hook(receive(f"m{layer}")))
        if at_receiver:
            handles.append(model.get_submodule(paths["final_norm"]).register_forward_pre_hook(receive("logits")))
        yield out
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _wired(model, graph: Graph, live: bool) -> Iterator[dict]:
    """Every sender's output kept in `seen["out"]`, and, with `live`, a zero tensor needing a gradient added to each
    receiver's norm input (`seen["delta"]`), so that dM/d(delta_v) is the gradient through v alone."""
    deltas: dict = {}

    def perturb(name):
        def change(x):
            deltas[name] = torch.zeros_like(x, requires_grad=True)
            return x + deltas[name]
        return change

    with _hooked(model, graph, perturb if live else None) as out:
        yield {"out": out, "delta": deltas}


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
    with torch.no_grad(), _wired(model, graph, live=False) as clean:
        model(input_ids=ids["clean"][0], attention_mask=ids["clean"][1], use_cache=False, logits_to_keep=1)
    with torch.enable_grad(), _wired(model, graph, live=True) as corr:
        logits = model(input_ids=ids["corrupted"][0], attention_mask=ids["corrupted"][1], use_cache=False,
                       logits_to_keep=torch.tensor(read, device=device)).logits  # (R, len(read), V)  # fmt: skip
        exact = torch.promote_types(logits.dtype, torch.float32)  # float32 at least; a float64 model's kept
        metric = answer_metric(torch.log_softmax(logits.to(exact), dim=-1), chunk, column, device)
        grads = dict(zip(graph.receivers, torch.autograd.grad(metric, [corr["delta"][v] for v in graph.receivers])))  # v -> (R, T, D)
    paths = BLOCKS[model.config.model_type]
    layers = model.get_submodule(paths["layers"])
    scores = torch.zeros(len(graph.senders), len(graph.receivers), dtype=torch.float64)
    for j, v in enumerate(graph.receivers):
        g = grads[v].to(exact)  # (R, T, D): the gradient at v's input (zero where nothing read depends on it: padding)
        for i, u in enumerate(graph.senders):
            if u.startswith("a") or not graph.feeds(u, v):
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
    sender's output in this run less its output in the corrupted run (`corrupted`: `_wired`'s outputs). Senders'
    outputs are this run's, so a kept edge carries what its sender computes from its own kept inputs."""
    cut = (~kept) & graph.mask()  # (senders, receivers)
    run: dict = {}  # this run's sender outputs, filled by _hooked as the forward proceeds

    def rebuild(v):
        j = graph.receivers.index(v)
        return lambda x: x - _entering(model, graph, cut[:, j], run, corrupted, x)

    with _hooked(model, graph, rebuild, out=run):
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

    with _hooked(model, graph, rebuild, out=run):
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
            with _wired(model, graph, live=False) as clean:
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
            with _wired(model, graph, live=False) as corrupted:
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


# --- over training ---------------------------------------------------------------------------------------------------


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
