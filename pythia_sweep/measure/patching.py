"""How heads are patched: activation patching of chosen attention heads, from a clean run into a corrupted run.

Two runs of the same model: the *clean* prompt (whose answer is the one we want) and the *corrupted* prompt
(whose answer differs). We record the per-head attention outputs of the patched layers on the clean run
and, on the corrupted run, overwrite the chosen heads' outputs with them at aligned positions (see
task/align.py for the alignment). Everything else in the corrupted run is left alone. Heads may sit in several
layers at once: each layer's patch comes from the clean run of that layer.

Which activation is replaced (the `site`):
  head             the INPUT of the attention output projection (GPT-NeoX `attention.dense`, Llama
                   `self_attn.o_proj`): shape (B, T, H*D), head h in columns [h*D, (h+1)*D). These are
                   the true per-head outputs, before the projection mixes them. Default.
  post-projection  the same column slices of the projection's OUTPUT (B, T, d_model), where heads are
                   already mixed: what the upstream code did, kept to reproduce it.

When it is replaced (`patch_during`): at the prompt positions during prefill only, letting decoding run
free (`prompt`, default); or also at every decoding step, where with a KV cache each new token receives
the clean activation of the position aligned with the chunk's first position (`every-step`, upstream).

The metric's sign: log p(correct | prompt) - log p(wrong | prompt) > 0 means the model prefers the clean
prompt's answer; a patch that carries the mechanism moves it up from the unpatched corrupted baseline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from pythia_sweep.config import SITES
from pythia_sweep.errors import ConfigError, UnsupportedModel
from pythia_sweep.task.align import align_positions

# model_type -> the module whose input is the concatenation of per-head attention outputs.
OUTPUT_PROJECTION = {
    "gpt_neox": "gpt_neox.layers.{layer}.attention.dense",
    "llama": "model.layers.{layer}.self_attn.o_proj",
    "olmo": "model.layers.{layer}.self_attn.o_proj",
    "olmo2": "model.layers.{layer}.self_attn.o_proj",
    "mistral": "model.layers.{layer}.self_attn.o_proj",
    "qwen2": "model.layers.{layer}.self_attn.o_proj",
}


@dataclass(frozen=True)
class AttentionLayout:
    module_template: str  # Hugging Face path of the output projection, with {layer}
    n_layers: int
    n_heads: int
    head_dim: int

    def module_path(self, layer: int) -> str:
        return self.module_template.format(layer=layer)

    @property
    def width(self) -> int:
        return self.n_heads * self.head_dim


def check_model_type(model_type: str) -> None:
    """Refuse an architecture whose per-head outputs we do not know where to find."""
    if model_type not in OUTPUT_PROJECTION:
        raise UnsupportedModel(
            f"model type {model_type!r} has no known attention output projection "
            f"(supported: {', '.join(sorted(OUTPUT_PROJECTION))})"
        )


def attention_layout(model: torch.nn.Module, layer: int | None = None) -> AttentionLayout:
    """Where each layer's per-head outputs live in this model, or a clear refusal (also of a bad `layer`)."""
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    check_model_type(model_type)
    n_layers = config.num_hidden_layers
    if layer is not None and not 0 <= layer < n_layers:
        raise ConfigError("layer", layer, f"a layer index in 0..{n_layers - 1} ({model_type} has {n_layers} layers)")
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    layout = AttentionLayout(OUTPUT_PROJECTION[model_type], n_layers, n_heads, head_dim)
    path = layout.module_path(layer or 0)
    projection = model.get_submodule(path)
    if projection.in_features != layout.width:
        raise UnsupportedModel(f"{path} takes {projection.in_features} inputs, not n_heads*head_dim={layout.width}")
    return layout


def validate_heads(heads: Sequence[int], n_heads: int, field: str = "heads") -> tuple[int, ...]:
    heads = tuple(heads)
    if not heads:
        raise ConfigError(field, list(heads), "a non-empty list of head indices")
    bad = [h for h in heads if not isinstance(h, int) or isinstance(h, bool) or not 0 <= h < n_heads]
    if bad:
        raise ConfigError(field, list(heads), f"head indices in 0..{n_heads - 1}")
    if len(set(heads)) != len(heads):
        raise ConfigError(field, list(heads), "head indices without repeats")
    return heads


def head_columns(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Column indices of the given heads in a (..., H*D) activation, head-major."""
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


@dataclass
class PatchPlan:
    """What the hook writes. On the first call (the prefill): `values` where `mask`. On every later call
    (decoding steps, teacher-forced answer tokens), or on the first when there is no `mask`: `step_values`
    where `step_mask`, at every position of the call (nothing when there is no step patch)."""

    values: torch.Tensor | None  # (B, T, C) replacement activations
    mask: torch.Tensor | None  # (B, T, C) bool: which entries to replace
    step_values: torch.Tensor | None = None  # (B, C) for every-step patching, else None
    step_mask: torch.Tensor | None = None  # (B, C) bool

    def steps_only(self, rows: torch.Tensor) -> PatchPlan:
        """The step patch alone, for the given rows in order (rows that branch into continuations)."""
        pick = lambda t: None if t is None else t[rows.to(t.device)]  # noqa: E731
        return PatchPlan(None, None, pick(self.step_values), pick(self.step_mask))


class _PatchHook:
    """Replaces masked entries of the site activation; the first call is the prefill, later ones decode."""

    def __init__(self, plan: PatchPlan):
        self.plan, self.calls = plan, 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, C)
        plan, first = self.plan, self.calls == 0
        self.calls += 1
        if first and plan.mask is not None:
            if x.shape != plan.mask.shape:
                raise RuntimeError(f"patch plan shaped {tuple(plan.mask.shape)} met an activation {tuple(x.shape)}")
            return torch.where(plan.mask, plan.values.to(x.dtype), x)
        if plan.step_mask is None:
            return x
        if x.shape[0] != plan.step_mask.shape[0]:
            raise RuntimeError(f"step patch for {plan.step_mask.shape[0]} rows met an activation {tuple(x.shape)}")
        return torch.where(plan.step_mask[:, None, :], plan.step_values[:, None, :].to(x.dtype), x)  # (B, T, C)


def _hook(module: torch.nn.Module, site: str, fn) -> torch.utils.hooks.RemovableHandle:
    """`fn(x) -> x'` on the site activation: the projection's input (site head) or its output."""
    if site == "head":
        return module.register_forward_pre_hook(lambda _m, args: (fn(args[0]), *args[1:]))
    if site == "post-projection":
        return module.register_forward_hook(lambda _m, _args, out: fn(out))
    raise ConfigError("site", site, f"one of {', '.join(SITES)}")


@contextlib.contextmanager
def patched(model: torch.nn.Module, layout: AttentionLayout, site: str, plans: dict[int, PatchPlan]) -> Iterator[None]:
    """Patch each layer's site by its plan for the duration of the block; hooks are removed on exit, also on error."""
    handles = []
    try:
        for layer, plan in plans.items():
            handles.append(_hook(model.get_submodule(layout.module_path(layer)), site, _PatchHook(plan).apply))
        yield
    finally:
        for handle in handles:
            handle.remove()


class ForwardStopped(Exception):
    """Raised by a hook to end a forward pass whose later layers nobody needs (here and in fastpath.run_below)."""


@contextlib.contextmanager
def captured(model: torch.nn.Module, layout: AttentionLayout, site: str, layers, stop: bool = False,
             live: bool = False) -> Iterator[dict[int, list[torch.Tensor]]]:  # fmt: skip
    """Record the site activation of `layers` on every forward call in the block: layer -> list of (B, T, C).
    With `stop`, the forward pass ends once the deepest of them is reached (see `capture`). With `live`, the
    tensors are kept in the autograd graph (attribution takes gradients with respect to them), else detached."""
    layers = sorted(set(layers))
    seen: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def keeper(layer):
        def keep(x: torch.Tensor) -> torch.Tensor:
            seen[layer].append(x if live else x.detach())
            if stop and layer == layers[-1]:
                raise ForwardStopped
            return x

        return keep

    handles = []
    try:
        for layer in layers:
            handles.append(_hook(model.get_submodule(layout.module_path(layer)), site, keeper(layer)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def capture(model: torch.nn.Module, layout: AttentionLayout, site: str, layers, **inputs) -> dict[int, torch.Tensor]:
    """The site activations (B, T, C) of `layers` for `inputs`, running the model only as far as the deepest."""
    with captured(model, layout, site, layers, stop=True) as seen:
        try:
            model(**inputs, use_cache=False)
        except ForwardStopped:
            pass
    return {layer: acts[0] for layer, acts in seen.items()}


def fill_plan(
    plan: PatchPlan,
    row: int,
    source: torch.Tensor,
    positions: Sequence[tuple[int, int]],
    columns: torch.Tensor,
    offset: int = 0,
    every_step: bool = False,
) -> None:
    """Write one row of a plan: clean `source` (Tc, C) at aligned (corrupted, clean) positions, heads' columns.

    `offset` shifts corrupted positions (left padding). With `every_step`, the clean activation aligned with
    corrupted position 0 is also the step patch: written at each decoding step and each teacher-forced
    answer token.
    """
    if not len(positions) or not len(columns):
        return
    device = plan.mask.device
    columns = columns.to(device)
    target_pos = torch.tensor([b for b, _ in positions], device=device) + offset
    clean_pos = torch.tensor([c for _, c in positions], device=device)
    source = source.to(device)
    plan.mask[row, target_pos[:, None], columns[None, :]] = True
    plan.values[row, target_pos[:, None], columns[None, :]] = source[clean_pos[:, None], columns[None, :]].to(
        plan.values.dtype
    )
    if every_step:
        first = [c for b, c in positions if b == 0]
        if first:
            step = source[first[0], columns]  # (len(columns),)
            if plan.step_mask is not None:
                plan.step_mask[row, columns] = True
                plan.step_values[row, columns] = step.to(plan.step_values.dtype)


def empty_plan(batch: int, length: int, width: int, dtype: torch.dtype, device, every_step: bool = False) -> PatchPlan:
    plan = PatchPlan(
        values=torch.zeros(batch, length, width, dtype=dtype, device=device),
        mask=torch.zeros(batch, length, width, dtype=torch.bool, device=device),
    )
    if every_step:
        plan.step_values = torch.zeros(batch, width, dtype=dtype, device=device)
        plan.step_mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
    return plan


@torch.inference_mode()
def patched_logits(
    model,
    tokenizer,
    clean: str,
    corrupted: str,
    layer: int,
    heads: Sequence[int],
    site: str = "head",
    align: str = "shared-text",
) -> torch.Tensor:
    """Logits (vocab,) at the corrupted prompt's last position with `heads` of `layer` patched from `clean`."""
    layout = attention_layout(model, layer)
    heads = validate_heads(heads, layout.n_heads)
    device = next(model.parameters()).device
    clean_ids = tokenizer(clean, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)  # (1, Tc)
    corrupted_ids = tokenizer(corrupted, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)  # (1, Tb)
    source = capture(model, layout, site, [layer], input_ids=clean_ids)[layer][0]  # (Tc, C)
    plan = empty_plan(1, corrupted_ids.shape[1], source.shape[-1], source.dtype, device)
    fill_plan(plan, 0, source, align_positions(tokenizer, clean, corrupted, align), head_columns(heads, layout.head_dim))
    with patched(model, layout, site, {layer: plan}):
        return model(corrupted_ids).logits[0, -1].float()  # (V,)
