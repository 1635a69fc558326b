"""One checkpoint end to end, no Ray: fetch, load, run every condition, score, return a small record.

The record is plain JSON-able data (no tensors): the sweep ships it from a worker to the driver, the
driver logs it to MLflow, the report reads it back. A checkpoint that cannot be fetched or loaded is a
record too, with status "failed" and the error text, so a sweep goes on past it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pythia_sweep.checkpoints import (
    Checkpoint,
    FetchedCheckpoint,
    fetch,
    not_published_message,
    published_revisions,
    step_of,
)
from pythia_sweep.config import SweepConfig
from pythia_sweep.errors import ConfigError, RevisionNotPublished
from pythia_sweep.evaluation import Condition, evaluate, make_conditions
from pythia_sweep.patching import attention_layout, validate_heads
from pythia_sweep.prompts import make_prompts
from pythia_sweep.scoring import null_position, paired_difference_interval, summarize_condition


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", choice, "cpu or auto: this machine has no CUDA device")
    return torch.device(choice)


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and choice != "float32":
        raise ConfigError("dtype", choice, "float32 or auto on CPU (half precision is for GPUs)")
    return getattr(torch, choice)


AUTO_BATCH_CAP = {"cuda": 2048, "cpu": 64}  # beyond these, bigger batches bought nothing where measured
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


def base_record(config: SweepConfig, revision: str) -> dict:
    return {
        "model": config.model,
        "revision": revision,
        "step": step_of(revision),
        "sweep_id": config.sweep_id,
        "status": "failed",
        "error": None,
        "commit": None,
        "weight_sha256": {},
        "weights_digest": None,
        "timings": {},
    }


def run_checkpoint(
    config: SweepConfig,
    revision: str,
    *,
    published: list[Checkpoint] | None = None,
    cache_dir: str | None = None,
    fetched: FetchedCheckpoint | None = None,
    models: ModelCache | None = None,
) -> dict:
    """Measure one revision; returns a full record, or a failure record naming what went wrong.

    `published` (the repo's revisions) is looked up when not given; `fetched` skips the download when a
    worker has prefetched it; `models` lets a worker reuse its model skeleton across revisions. Invalid settings (layer or heads out of range) raise instead: they are the
    sweep's error, not this checkpoint's.
    """
    record = base_record(config, revision)
    t0 = time.perf_counter()
    try:
        if fetched is None:
            if published is None:
                published = published_revisions(config.model, cache_dir)
            if revision not in {c.revision for c in published}:
                raise RevisionNotPublished(not_published_message(config.model, revision, published))
            fetched = fetch(config.model, revision, cache_dir)
        record.update(commit=fetched.commit, weight_sha256=fetched.weight_sha256, weights_digest=fetched.weights_digest)
        t1 = time.perf_counter()
        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        loaded = models.load(fetched.path, device, dtype) if models else load_model(fetched.path, device, dtype)
        t2 = time.perf_counter()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - a checkpoint's failure is data, the sweep goes on
        record["error"] = f"{type(error).__name__}: {error}"
        record["timings"] = {"fetch_s": time.perf_counter() - t0}
        return record
    record["timings"] = {"fetch_s": t1 - t0, "load_s": t2 - t1}
    record.update(measure(config, loaded))
    record["timings"]["compute_s"] = time.perf_counter() - t2
    return record


def measure(config: SweepConfig, loaded: LoadedModel) -> dict:
    """Run every condition on a loaded model; the measured part of a record (status "ok")."""
    layout = attention_layout(loaded.model, config.layer)
    validate_heads(config.even_heads, layout.n_heads, "even_heads")
    validate_heads(config.odd_heads, layout.n_heads, "odd_heads")
    prompts = make_prompts(config.preset, config.trials)
    conditions = make_conditions(config, layout.n_heads)
    batch_size = batch_size_for(config, loaded, prompts)
    rows = evaluate(
        loaded.model, loaded.tokenizer, layout, prompts, conditions, config.methods,
        max_new_tokens=config.max_new_tokens, batch_size=batch_size,
    )  # fmt: skip
    summary = summarize(config, conditions, rows)
    return {
        "status": "ok",
        "settings": {
            "layer": config.layer,
            "n_heads": layout.n_heads,
            "module": layout.module_path,
            "preset": config.preset,
            "n_prompts": len(prompts),
            "methods": config.methods,
            "max_new_tokens": config.max_new_tokens,
            "batch_size": batch_size,
            "device": str(loaded.device),
            "dtype": str(loaded.dtype).removeprefix("torch."),
        },
        **summary,
        "responses": rows,
    }


def batch_size_for(config: SweepConfig, loaded: LoadedModel, prompts) -> int:
    """The configured batch size, or (0 = auto) as many rows as fit the device's free memory now."""
    if config.batch_size:
        return config.batch_size
    longest = max(len(loaded.tokenizer(text)["input_ids"]) for p in prompts for text in (p.clean, p.buggy))
    tokens = longest + max(config.max_new_tokens, 4)  # 4: the longest answer continuation allowed for
    cap = AUTO_BATCH_CAP.get(loaded.device.type, AUTO_BATCH_CAP["cpu"])
    return rows_per_batch(loaded.model.config, loaded.dtype, tokens, free_memory(loaded.device), cap)


def scan_layers(config: SweepConfig, loaded: LoadedModel, layers: list[int] | None = None) -> list[dict]:
    """Every head of every layer patched alone: rows of (layer, head, success rate, mean log-prob diff).

    One batched evaluation per layer (its 12 single-head conditions share the batches); the buggy
    baseline is measured once, in the first layer's batch, and repeated as head -1 of each layer.
    """
    prompts = make_prompts(config.preset, config.trials)
    method = {"scan": next(iter(config.methods.values()))}
    n_layers = loaded.model.config.num_hidden_layers
    batch_size = batch_size_for(config, loaded, prompts)  # once: the same prompts at every layer
    rows = []
    for layer in layers if layers is not None else range(n_layers):
        layout = attention_layout(loaded.model, layer)
        conditions = [Condition(f"head{h:02d}", (h,), "buggy", "scan") for h in range(layout.n_heads)]
        if not rows:
            conditions.insert(0, Condition("baseline", (), "buggy", "scan"))
        results = evaluate(
            loaded.model, loaded.tokenizer, layout, prompts, conditions, method,
            max_new_tokens=config.max_new_tokens, batch_size=batch_size,
        )  # fmt: skip
        for cond in conditions:
            got = [r for r in results if r["condition"] == cond.name]
            rows.append({
                "layer": layer, "head": cond.heads[0] if cond.heads else -1,
                "success_rate": float(np.mean([r["success"] for r in got])),
                "logprob_diff": float(np.mean([r["logprob_diff"] for r in got])),
            })  # fmt: skip
    return rows


def summarize(config: SweepConfig, conditions: list[Condition], rows: list[dict]) -> dict:
    """Per-condition statistics, specialization strength per method, and the null control."""
    by_condition: dict[str, list[dict]] = {}
    for row in rows:
        by_condition.setdefault(row["condition"], []).append(row)
    stats = {}
    for i, cond in enumerate(conditions):
        got = by_condition[cond.name]
        stats[cond.name] = {
            "heads": list(cond.heads),
            "prompt": cond.prompt,
            "method": cond.method,
            **summarize_condition(
                [r["success"] for r in got], [r["logprob_diff"] for r in got], [r["weight"] for r in got],
                config.bootstrap_resamples, config.seed + i,
            ),
        }  # fmt: skip
    strength = {}
    primary = next(iter(config.methods))
    for label in config.methods:
        prefix = "" if label == primary else f"{label}/"
        even, odd = by_condition[prefix + "even"], by_condition[prefix + "odd"]
        success_ci = paired_difference_interval(
            [r["success"] for r in even], [r["success"] for r in odd], config.bootstrap_resamples, config.seed
        )
        logprob_ci = paired_difference_interval(
            [r["logprob_diff"] for r in even], [r["logprob_diff"] for r in odd], config.bootstrap_resamples, config.seed
        )
        strength[label] = {
            "strength": stats[prefix + "even"]["success_rate"] - stats[prefix + "odd"]["success_rate"],
            "strength_ci": list(success_ci) if success_ci else None,
            "logprob_strength": stats[prefix + "even"]["logprob_diff"] - stats[prefix + "odd"]["logprob_diff"],
            "logprob_strength_ci": list(logprob_ci) if logprob_ci else None,
        }
    null_names = [c.name for c in conditions if c.name.startswith("null")]
    null = {}
    if null_names:
        rates = [stats[n]["success_rate"] for n in null_names]
        diffs = [stats[n]["logprob_diff"] for n in null_names]
        null = {
            "k": len(null_names),
            "success_rates": rates,
            "logprob_diffs": diffs,
            "success_q05": float(np.quantile(rates, 0.05)),
            "success_q95": float(np.quantile(rates, 0.95)),
            "logprob_q05": float(np.quantile(diffs, 0.05)),
            "logprob_q95": float(np.quantile(diffs, 0.95)),
            **{
                f"{group}_{metric}": null_position(stats[group][key], values)
                for group in ("even", "odd")
                for metric, key, values in (("success", "success_rate", rates), ("logprob", "logprob_diff", diffs))
            },
        }
    return {"conditions": stats, "strength": strength, "null": null}


def flat_metrics(record: dict) -> dict[str, float]:
    """Every number of an ok record as MLflow-style metrics: 'even/success_rate', 'strength', ..."""
    metrics: dict[str, float] = {}
    primary = next(iter(record["strength"]))
    for label, s in record["strength"].items():
        prefix = "" if label == primary else f"{label}/"
        metrics[prefix + "strength"] = s["strength"]
        metrics[prefix + "logprob_strength"] = s["logprob_strength"]
        for key in ("strength_ci", "logprob_strength_ci"):
            if s[key]:
                metrics[f"{prefix}{key}_low"], metrics[f"{prefix}{key}_high"] = s[key]
    for name, c in record["conditions"].items():
        metrics[f"{name}/success_rate"] = c["success_rate"]
        metrics[f"{name}/success_ci_low"], metrics[f"{name}/success_ci_high"] = c["success_ci"]
        metrics[f"{name}/logprob_diff"] = c["logprob_diff"]
        if c["logprob_diff_ci"]:
            metrics[f"{name}/logprob_diff_ci_low"], metrics[f"{name}/logprob_diff_ci_high"] = c["logprob_diff_ci"]
    for key, value in record.get("null", {}).items():
        if isinstance(value, float):
            metrics[f"null/{key}"] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                if v is not None:
                    metrics[f"null/{key}_{k}"] = v
    for key, value in record.get("timings", {}).items():
        metrics[f"time/{key}"] = value
    return {k: float(v) for k, v in metrics.items()}
