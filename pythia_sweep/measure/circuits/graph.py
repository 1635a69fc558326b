"""The model's components as a graph, and the hooks that read and rewrite them along it.

The graph's senders are the input embeddings, every head (its share of the attention output projection: the head's
output as it enters the residual stream) and every MLP (its output); its receivers are each layer's attention input
(the q/k/v of all its heads together), each layer's MLP input, and the logits (the final norm's input). An edge
u -> v exists where u's output is part of the residual v reads: in Pythia's parallel blocks the attention and the MLP
of a layer read the same residual, so a layer's heads feed the next layers only; in sequential blocks (Llama, GPT-NeoX
with `use_parallel_residual = False`) they feed their own layer's MLP too.

`hooked` keeps every sender's output of a forward and can rewrite each receiver's input (where its norm reads the
residual); `wired` builds on it the zero perturbations whose gradients edge attribution reads (attribution.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from pythia_sweep.errors import ConfigError
from pythia_sweep.stats import head_sender, head_senders

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
                          [head_sender(layer, h) for h in range(self.n_heads)] + [f"m{layer}"]]  # fmt: skip

    @property
    def head_of(self) -> dict[str, tuple[int, int]]:
        """Each head sender's (layer, head), by the name the graph gave it (stats.head_senders)."""
        return head_senders(self.n_layers, self.n_heads)

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
def hooked(model, graph: Graph, at_receiver=None, out: dict | None = None) -> Iterator[dict]:
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
def wired(model, graph: Graph, live: bool) -> Iterator[dict]:
    """Every sender's output kept in `seen["out"]`, and, with `live`, a zero tensor needing a gradient added to each
    receiver's norm input (`seen["delta"]`), so that dM/d(delta_v) is the gradient through v alone."""
    deltas: dict = {}

    def perturb(name):
        def change(x):
            deltas[name] = torch.zeros_like(x, requires_grad=True)
            return x + deltas[name]
        return change

    with hooked(model, graph, perturb if live else None) as out:
        yield {"out": out, "delta": deltas}
