"""The hardware floor of a checkpoint: the floating-point work its conditions need, at the speed this device
multiplies matrices. A sweep's compute time over this floor says how much of the machine it uses.

Work counted (multiply-adds x 2, matmuls only: norms, softmax and bookkeeping are left out, so the floor
is a true lower bound), per checkpoint:
  clean         each clean prompt once up to the deepest patched layer (the activations patched in), and
                the clean condition's own run of it through every layer
  below         the layers below the lowest patched layer: once per distinct corrupted prompt
  above         the layers from the lowest patched one up, for every (condition, prompt) row
  logits        the output layer at each row's last prompt position (the first answer token's log-probs)
  decode        each decoded row's further greedy steps (max_new_tokens - 1 of them) through the layers
                from the lowest patched one up and the output layer (greedy needs the whole vocabulary's
                argmax); below it once per prompt and step, as if every condition generated the same tokens
                (the least work possible: rows with the same tokens so far share those layers)
  answers       every answer token after the first: below once per distinct (prompt, answer), above and
                the output layer per row; an answer whose tokens but the last begin another's is free
Attention's own products (scores and weighted values, 4 x context x width per token and layer) are counted
where they occur. The throughput is measured with torch on the model's own linear shapes, in its dtype and
thread count, at two row counts: a decoding step's (one token per row) and a prefill's (every prompt token).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pythia_sweep.task.definition import TokenizedPair


@dataclass(frozen=True)
class Shapes:
    """The matmul shapes of a decoder-only model: each layer's linear maps and the output layer."""

    layer_linears: tuple[tuple[int, int], ...]  # (in_features, out_features) of one layer's linear maps
    width: int  # attention width: heads x head_dim (the context products' inner size)
    vocab: int
    hidden: int
    n_layers: int

    @property
    def layer_flops(self) -> int:
        """FLOPs per token through one layer's linear maps."""
        return sum(2 * i * o for i, o in self.layer_linears)

    def attention_flops(self, context: int) -> int:
        """FLOPs per token of attention's scores and weighted sum over `context` positions, one layer."""
        return 4 * context * self.width

    @property
    def output_flops(self) -> int:
        return 2 * self.hidden * self.vocab


def shapes_of(model: torch.nn.Module) -> Shapes:
    """Read the shapes off a model (a real one or one built on the meta device): any architecture whose
    decoder layers are `base_model.layers` and whose output layer is the output embedding."""
    first = model.base_model.layers[0]
    linears = tuple((m.in_features, m.out_features) for m in first.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    output = model.get_output_embeddings()
    return Shapes(linears, config.num_attention_heads * head_dim, output.out_features, output.in_features, config.num_hidden_layers)


def needed_flops(
    shapes: Shapes, pairs: Sequence[TokenizedPair], conditions, max_new_tokens: int
) -> dict[str, dict[str, float]]:
    """The work a checkpoint needs, per part: {"flops": ..., "rows": tokens per matmul call (the shape the
    throughput is taken at: "prefill" or "decode")}. `conditions` as conditions.make_conditions makes them."""
    patched = [layer for c in conditions for layer, _ in c.heads]
    lowest, deepest = min(patched, default=0), max(patched, default=0)
    per_layer = shapes.layer_flops

    def through(tokens: Sequence[int], layers: range, context_before: int = 0) -> float:
        """FLOPs of running `tokens` positions (their count per sequence) through `layers`."""
        flops = 0.0
        for n in tokens:
            attention = sum(shapes.attention_flops(context_before + i + 1) for i in range(n))
            flops += len(layers) * (n * per_layer + attention)
        return flops

    every, below, above = range(shapes.n_layers), range(lowest), range(lowest, shapes.n_layers)
    rows = [(c, tp) for c in conditions for tp in pairs]
    unshared = lambda c: every if c.prompt == "clean" else above  # noqa: E731 - the clean condition shares nothing
    work = {
        "clean": through([len(tp.ids["clean"]) for tp in pairs], range(deepest)),
        "below": through([len(tp.ids["corrupted"]) for tp in pairs], below),
        "above": sum(through([len(tp.ids[c.prompt])], unshared(c)) for c, tp in rows),
        "logits": len(rows) * shapes.output_flops,
        "decode": 0.0,
        "answers": 0.0,
    }
    steps = max_new_tokens - 1
    for c, tp in rows:
        length = len(tp.ids[c.prompt])
        if c.decode:
            work["decode"] += sum(through([1], unshared(c), length + i) + shapes.output_flops for i in range(steps))
        for tokens in branch_inputs(tp.answers[c.prompt]):
            work["answers"] += through([len(tokens)], unshared(c), length) + len(tokens) * shapes.output_flops
    if any(c.decode and c.prompt == "corrupted" for c in conditions):  # below: at best once per prompt and step
        for tp in pairs:
            work["decode"] += sum(through([1], below, len(tp.ids["corrupted"]) + i) for i in range(steps))
    for tp in pairs:
        work["answers"] += sum(through([len(tokens)], below, len(tp.ids["corrupted"])) for tokens in branch_inputs(tp.answers["corrupted"]))
    return {part: {"flops": flops, "rows": "decode" if part == "decode" else "prefill"} for part, flops in work.items() if flops}


def branch_inputs(answers: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """The token sequences a prompt's answers must be run on after their first token (each answer but its
    last token), leaving out one that begins another: that one's forward holds its logits too."""
    inputs = {tuple(a[:-1]) for a in answers if len(a) > 1}
    return sorted(t for t in inputs if not any(len(u) > len(t) and u[: len(t)] == t for u in inputs))


def matmul_throughput(shapes: Shapes, rows: int, dtype: torch.dtype, device: torch.device, seconds: float = 2.0) -> float:
    """Sustained FLOP/s of this device on one layer's linear maps and the output layer, `rows` tokens at a
    time, as the model runs them (torch's linear, the model's dtype, the current thread count)."""
    maps = [*shapes.layer_linears, (shapes.hidden, shapes.vocab)]
    weights = [torch.randn(o, i, dtype=dtype, device=device) / i**0.5 for i, o in maps]
    inputs = {i: torch.randn(rows, i, dtype=dtype, device=device) for i, _ in maps}
    flops_per_round = sum(2 * rows * i * o for i, o in maps)

    def one_round():
        for (i, _), w in zip(maps, weights):
            torch.nn.functional.linear(inputs[i], w)
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        one_round()  # warm-up: kernels chosen, memory touched
        rounds, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or rounds < 3:
            one_round()
            rounds += 1
    return rounds * flops_per_round / elapsed


def floor_seconds(work: dict[str, dict[str, float]], throughput: dict[str, float]) -> float:
    """The time the work would take at the measured throughput of its shape."""
    return sum(part["flops"] / throughput[part["rows"]] for part in work.values())
