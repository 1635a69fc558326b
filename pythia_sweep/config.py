"""What one sweep measures: a frozen, validated record of every choice that changes a number.

A sweep's identity (`SweepConfig.sweep_id`) is a hash of the fields that change results, so rerunning
the same config resumes the same sweep, and any change that would alter a number starts a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pythia_sweep.errors import ConfigError

SCHEDULES = ("seed", "log", "all")
PRESETS = ("seed", "robust")
SITES = ("head", "post-projection")
ALIGNMENTS = ("shared-text", "suffix", "prefix")
PATCH_DURING = ("prompt", "every-step")
METHODS = ("per-head", "upstream", "both")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")

# The upstream (methodology) way of measuring, kept runnable so the two can be compared.
UPSTREAM_METHOD = {"site": "post-projection", "align": "prefix", "patch_during": "every-step"}


@dataclass(frozen=True)
class SweepConfig:
    model: str = "EleutherAI/pythia-160m"  # Hub repo id whose step* branches are the checkpoints
    checkpoints: str | tuple[str, ...] = "log"  # a schedule name (seed/log/all) or explicit revisions
    layer: int = 6  # the layer whose attention heads are patched (0-based)
    even_heads: tuple[int, ...] = (0, 2, 4, 6, 8, 10)  # the head set the finding says repairs the bug
    odd_heads: tuple[int, ...] = (1, 3, 5, 7, 9, 11)  # the head set the finding says does not
    preset: str = "robust"  # prompt set: "seed" (one pair x 15 trials, as written) or "robust" (many pairs)
    trials: int = 15  # trials per condition in the seed preset (identical greedy trials, computed once)
    site: str = "head"  # "head": input of the output projection, per head; "post-projection": upstream slices
    align: str = "shared-text"  # how positions of clean and buggy prompts of different lengths correspond
    patch_during: str = "prompt"  # "prompt": patch at prefill only; "every-step": also each decoding step
    method: str = "per-head"  # "per-head" (site/align/patch_during above), "upstream", or "both" side by side
    single_heads: bool = True  # also patch each head of the layer alone (the report's heatmap)
    null_subsets: int = 20  # random head subsets of the even set's size per checkpoint (the null control)
    max_new_tokens: int = 20  # greedy generation length
    batch_size: int = 0  # rows per batch; 0 = sized to the device's free memory (engine.rows_per_batch)
    bootstrap_resamples: int = 2000  # resamples for bootstrap intervals
    seed: int = 0  # seeds the null subsets and the bootstrap: a rerun reproduces every number
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    dtype: str = "auto"  # "auto": float32 on CPU, float16 on GPU
    workers: int = 0  # Ray workers; 0 = one per GPU, or up to two CPU workers without GPUs
    name: str = ""  # a human label for the sweep (MLflow run name); defaults to model/layer/preset

    def __post_init__(self) -> None:
        _check_type("model", self.model, str)
        if self.model.count("/") != 1 or not all(self.model.split("/")):
            raise ConfigError("model", self.model, "a Hub repo id of the form 'org/name'")
        if isinstance(self.checkpoints, list):
            object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
        if isinstance(self.checkpoints, str):
            if self.checkpoints not in SCHEDULES:
                raise ConfigError("checkpoints", self.checkpoints, f"one of {SCHEDULES} or a list of revisions")
        elif isinstance(self.checkpoints, tuple):
            if not self.checkpoints or not all(isinstance(r, str) and r for r in self.checkpoints):
                raise ConfigError("checkpoints", self.checkpoints, "a non-empty list of revision names")
            if len(set(self.checkpoints)) != len(self.checkpoints):
                raise ConfigError("checkpoints", self.checkpoints, "revisions without repeats")
        else:
            raise ConfigError("checkpoints", self.checkpoints, f"one of {SCHEDULES} or a list of revisions")
        _check_int("layer", self.layer, minimum=0)
        for name in ("even_heads", "odd_heads"):
            heads = getattr(self, name)
            if isinstance(heads, list):
                heads = tuple(heads)
                object.__setattr__(self, name, heads)
            if not isinstance(heads, tuple) or not heads:
                raise ConfigError(name, heads, "a non-empty list of head indices")
            for h in heads:
                _check_int(name, h, minimum=0)
            if len(set(heads)) != len(heads):
                raise ConfigError(name, heads, "head indices without repeats")
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("site", self.site, SITES)
        _check_choice("align", self.align, ALIGNMENTS)
        _check_choice("patch_during", self.patch_during, PATCH_DURING)
        _check_choice("method", self.method, METHODS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_type("single_heads", self.single_heads, bool)
        _check_int("trials", self.trials, minimum=1)
        _check_int("null_subsets", self.null_subsets, minimum=0)
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=0)
        _check_int("bootstrap_resamples", self.bootstrap_resamples, minimum=100)
        _check_int("seed", self.seed, minimum=0)
        _check_int("workers", self.workers, minimum=0)
        _check_type("name", self.name, str)

    @property
    def methods(self) -> dict[str, dict[str, str]]:
        """The measuring methods this sweep runs, by label: site, alignment and generation-time patching."""
        per_head = {"site": self.site, "align": self.align, "patch_during": self.patch_during}
        if self.method == "per-head":
            return {"per-head": per_head}
        if self.method == "upstream":
            return {"upstream": dict(UPSTREAM_METHOD)}
        return {"per-head": per_head, "upstream": dict(UPSTREAM_METHOD)}

    @property
    def sweep_id(self) -> str:
        """A short hash of every field that changes a checkpoint's result. Not the schedule: sweeps of one
        setting share their records, so a denser schedule (or `refine`) reuses what is already measured."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("checkpoints", "workers", "batch_size", "name")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return self.name or f"{self.model.split('/')[-1]}-L{self.layer}-{self.preset}-{self.method}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes: Any) -> SweepConfig:
        return dataclasses.replace(self, **changes)


def _check_type(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(name, value, f"a {kind.__name__}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, value, f"one of {', '.join(allowed)}")


FIELDS = {f.name for f in dataclasses.fields(SweepConfig)}


def config_from_dict(values: dict[str, Any]) -> SweepConfig:
    """Build a config from plain data (a TOML table, CLI overrides): unknown keys are refused by name."""
    if not isinstance(values, dict):
        raise ConfigError("config", values, "a table of settings")
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ConfigError("setting", unknown[0], f"a known setting ({', '.join(sorted(FIELDS))})")
    try:
        return SweepConfig(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # e.g. an unhashable value that slipped past a check
        raise ConfigError("config", values, str(error)) from error


def load_config(path: str | Path, **overrides: Any) -> SweepConfig:
    """Read a TOML run config (see jobs/configs/) and apply overrides given as keyword arguments."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError("config file", str(path), "an existing TOML file (see jobs/configs/)") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config file", str(path), f"valid TOML ({error})") from error
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(values)
