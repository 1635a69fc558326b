"""Loading a checkpoint's model, and sizing its work to the device: the device and dtype it runs in (`pick_device`,
`pick_dtype`), its tokenizer and causal LM from a fetched snapshot (`load_model`), one skeleton per worker whose
weights the next revision's are copied into in place (`ModelCache`), a run repeated with the model reloaded in a wider
dtype after a NaN or an infinity (`widening`), and how many rows one batch can hold in the device's free memory
(`batch_size_for`, from `rows_per_batch` and `free_memory`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from pythia_sweep.config import SweepConfig
from pythia_sweep.errors import ConfigError, NonFiniteNumbers
from pythia_sweep.task.definition import TokenizedPair


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", choice, "cpu or auto: this machine has no CUDA device")
    return torch.device(choice)


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    """"auto": float32 on CPU; on a GPU bfloat16 (float32's range: no overflow where float16 has one) where the device
    supports it, else float16."""
    if choice == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and choice != "float32":
        raise ConfigError("dtype", choice, "float32 or auto on CPU (half precision is for GPUs)")
    return getattr(torch, choice)


WIDER = {torch.float16: torch.float32, torch.bfloat16: torch.float32}  # every value of the narrower dtype, and more


def widening(loaded: LoadedModel, reload, work, what: str):
    """`work(loaded)`, run again with the model reloaded (`reload(dtype)`) in the next wider dtype for as long as it
    gives a NaN or an infinity (NonFiniteNumbers). Returns what `work` returned, the model it ran on, and each narrower
    dtype that failed with why. Each failure is said on stderr as it happens; one in float32 is raised, naming what."""
    failed = []
    while True:
        try:
            return work(loaded), loaded, failed
        except NonFiniteNumbers as error:
            narrow = dtype_name(loaded.dtype)
            failed.append({"dtype": narrow, "error": str(error)})
            wider = WIDER.get(loaded.dtype)
            if wider is None:
                raise NonFiniteNumbers(f"{what}: {error}; {narrow} is the widest dtype tried"
                                       + (f" (after {', '.join(f['dtype'] for f in failed[:-1])})" if failed[:-1] else "")) from error
            print(f"{what}: {error}: measured again in {dtype_name(wider)}", file=sys.stderr, flush=True)
            loaded = reload(wider)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


AUTO_BATCH_CAP = {"cuda": 2048, "cpu": 128}  # beyond these, bigger batches bought nothing where measured (README, Speed)
MEMORY_BUDGET = 0.5  # of the free memory; the rest is for the allocator and the model's temporaries


def rows_per_batch(model_config, dtype: torch.dtype, tokens_per_row: int, free_bytes: int, cap: int) -> int:
    """How many rows (condition x prompt) one batch can hold in half of `free_bytes`.

    A row's peak: its KV cache three times over (the prompt and its new tokens, plus the two answer
    branches copied from the prompt), its widest prefill activations, and the float32 logits and
    log-probabilities of its answer branches (2 branches x up to 4 tokens x vocab).
    """
    elt = torch.empty((), dtype=dtype).element_size()
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    heads = model_config.num_attention_heads
    kv_width = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or hidden // heads
    intermediate = getattr(model_config, "intermediate_size", None) or 4 * hidden
    kv_cache = 3 * 2 * layers * kv_width * head_dim * tokens_per_row * elt
    activations = tokens_per_row * (4 * hidden + 2 * intermediate) * elt
    logits = 2 * 2 * 4 * model_config.vocab_size * 4
    per_row = kv_cache + activations + logits
    return max(1, min(cap, int(free_bytes * MEMORY_BUDGET) // per_row))


def free_memory(device: torch.device) -> int:
    """Bytes free on the device now: the GPU's own count, or the host's available pages on CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no such count here (macOS): let the CPU cap decide
        return 1 << 40


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype


def quiet_transformers_bars() -> None:
    """Off transformers' own bars ("Loading weights" per checkpoint, drawn by every worker into the driver's
    terminal): the sweep's checkpoints bar, or a command's line per checkpoint, tells that story. huggingface_hub's
    download bars stay (run/progress.DownloadBar)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_tqdm_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))


def load_model(path: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Tokenizer and causal LM from a fetched snapshot folder, in eval mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return LoadedModel(model, tokenizer, device, dtype)


class ModelCache:
    """One model skeleton per worker: a revision whose config matches the loaded one gets its weights
    copied in place (safetensors straight into the existing tensors) instead of a fresh from_pretrained."""

    def __init__(self):
        self.loaded: LoadedModel | None = None
        self.key: tuple | None = None

    def load(self, path: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
        folder = Path(path)
        key = ((folder / "config.json").read_bytes(), _read_if_exists(folder / "tokenizer.json"), device, dtype)
        if self.loaded is not None and key == self.key and _load_weights_in_place(self.loaded.model, folder):
            return self.loaded
        self.loaded, self.key = None, None  # free the old model before loading the new one
        self.loaded, self.key = load_model(path, device, dtype), key
        return self.loaded


def _read_if_exists(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def _load_weights_in_place(model: torch.nn.Module, folder: Path) -> bool:
    """Copy a snapshot's safetensors into `model`; False (nothing changed) unless the keys match exactly."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return False
    target = model.state_dict()
    state = {}
    for f in files:
        for name, tensor in load_file(f).items():
            if name not in target and name == "embed_out.weight" and "lm_head.weight" in target:
                name = "lm_head.weight"  # Pythia's original name for the output head
            state[name] = tensor
    if set(state) != set(target) or any(state[k].shape != target[k].shape for k in state):
        return False
    with torch.no_grad():
        for name, tensor in state.items():
            target[name].copy_(tensor)
    return True


def batch_size_for(config: SweepConfig, loaded: LoadedModel, pairs: list[TokenizedPair]) -> int:
    """The configured batch size, or (0 = auto) as many rows as fit the device's free memory now."""
    if config.batch_size:
        return config.batch_size
    longest = max(len(ids) for tp in pairs for ids in tp.ids.values())
    answer = max(len(a) for tp in pairs for side in tp.answers.values() for a in side)
    tokens = longest + max(config.max_new_tokens, answer)
    cap = AUTO_BATCH_CAP.get(loaded.device.type, AUTO_BATCH_CAP["cpu"])
    return rows_per_batch(loaded.model.config, loaded.dtype, tokens, free_memory(loaded.device), cap)
