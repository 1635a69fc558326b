"""One checkpoint end to end, no Ray: fetch, load, run every condition of a task, score, return a small record.

The record is a `records.CheckpointRecord`, JSON-able (no tensors): the sweep ships it from a worker to the
driver, the driver logs it to MLflow, the report reads it back. A checkpoint that cannot be fetched or loaded is a
record too, with status "failed" and the error text, so a sweep goes on past it.

No NaN or infinity enters a record: a batch that gives one fails (errors.NonFiniteNumbers, naming its rows), and the
checkpoint is measured again with the model in a wider dtype (`WIDER`: half precision overflows where float32 does not,
as on early Pythia checkpoints); the record's settings say which dtype its numbers come from and what failed before.
A checkpoint that still gives one in float32 fails, with the condition named.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pythia_sweep.hub.fetch import FetchedCheckpoint, fetch
from pythia_sweep.hub.revisions import Checkpoint, not_published_message, published_revisions, step_of
from pythia_sweep.config import SweepConfig
from pythia_sweep.errors import ConfigError, DiscoveryFailed, NonFiniteNumbers, RevisionNotPublished
from pythia_sweep.measure.conditions import Condition, make_conditions, null_plan
from pythia_sweep.measure.evaluation import choose_executor, run_conditions
from pythia_sweep.measure.patching import attention_layout
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.measure.scoring import summarize_record
from pythia_sweep.task.definition import Task, TokenizedPair
from pythia_sweep.task.schema import load_task


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


@dataclass(frozen=True)
class Plan:
    """What one checkpoint runs, known from the model's shape alone: the groups, methods, conditions and null."""

    groups: dict[str, tuple[tuple[int, int], ...]]
    methods: dict[str, dict[str, str]]
    conditions: list[Condition]
    null: dict  # evaluation.null_plan: the null sets' group, size, pool layers and how many are possible
    shape: tuple[int, int] = (0, 0)  # the model's (layers, heads per layer) it was planned for

    def describe(self, n_prompts: int) -> str:
        decoded = sum(c.decode for c in self.conditions)
        return (f"{n_prompts} prompt{'s' * (n_prompts != 1)} x {len(self.conditions)} conditions = {n_prompts * len(self.conditions):,} rows per checkpoint "
                f"({decoded * n_prompts:,} decoded, the rest teacher-forced)")  # fmt: skip


def plan_checkpoint(config: SweepConfig, task: Task, n_layers: int, n_heads: int) -> Plan:
    """The conditions of a checkpoint of this task on a model of this shape (the pre-flight and the worker agree)."""
    groups = task.resolve_groups(n_layers, n_heads, config.layer)
    methods = config.methods(task.align)
    null_layers = range(n_layers) if task.null_pool == "all-layers" else None
    found = [h for heads in task.discovered.values() for h in heads]  # never drawn into the null as "random" heads
    conditions = make_conditions(
        groups, list(methods), n_heads, single_heads=config.single_heads, null_count=config.null_subsets, seed=config.seed,
        null_layers=null_layers, null_group=task.headline.plus, null_exclude=found,
    )  # fmt: skip
    return Plan(groups, methods, conditions, null_plan(groups, n_heads, null_layers, task.headline.plus, found), (n_layers, n_heads))


def preflight(config: SweepConfig, task: Task, metadata_path: str) -> tuple[Plan, int]:
    """Check the task and the patching choices against a model's config and tokenizer (no weights loaded):
    the architecture is supported, every group's layers and heads exist, every answer tokenizes as the task
    says. Raises the error a sweep would otherwise meet on its first checkpoint, before Ray starts and
    before any run is created. Returns the checkpoint's plan and the number of prompts."""
    from transformers import AutoConfig, AutoTokenizer

    from pythia_sweep.measure.patching import check_model_type

    model_config = AutoConfig.from_pretrained(metadata_path)
    check_model_type(model_config.model_type)
    n_layers, n_heads = model_config.num_hidden_layers, model_config.num_attention_heads
    if config.layer is not None and not 0 <= config.layer < n_layers:
        raise ConfigError("layer", config.layer, f"a layer index in 0..{n_layers - 1} ({config.model} has {n_layers} layers)")
    checked = task.with_discovered(stand_in_heads(task, n_layers, n_heads)) if task.to_discover and not task.discovered else task
    plan = plan_checkpoint(config, checked, n_layers, n_heads)
    tokenizer = AutoTokenizer.from_pretrained(metadata_path)
    pairs = task.tokenize(tokenizer, {m["align"] for m in plan.methods.values()})
    if task.to_discover:
        task.tokenize(tokenizer, {m["align"] for m in plan.methods.values()}, part="discovery")
    return plan, len(pairs)


def stand_in_heads(task: Task, n_layers: int, n_heads: int) -> dict[str, list[tuple[int, int]]]:
    """Heads to check a task with groups to discover against a model's shape before they are found (the pre-flight):
    the first N heads. Refuses a group asking for more heads than the model has, or for every one of them."""
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    for name, size in task.to_discover.items():
        if size >= len(every):
            raise ConfigError(f"{task.source}: groups.{name}.discover", size,
                              f"fewer than the model's {len(every)} heads ({n_layers} layers x {n_heads}): the rest draw its null")  # fmt: skip
    return {name: every[:size] for name, size in task.to_discover.items()}


def discover_groups(config: SweepConfig, task: Task, revision: str, *, fetched: FetchedCheckpoint | None = None,
                    models: ModelCache | None = None) -> dict:  # fmt: skip
    """The first pass of a task with a group to discover: at `revision` (the model's final checkpoint), on the
    discovery half of the prompts, each `{ discover = N }` group's heads (headmap.discover), with where they were
    found. A checkpoint that cannot be fetched or loaded stops the sweep: nothing can be measured without them."""
    from pythia_sweep.measure.headmap import discover

    try:
        fetched = fetched or fetch(config.model, revision)
        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        loaded = models.load(fetched.path, device, dtype) if models else load_model(fetched.path, device, dtype)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - said in one line, the sweep cannot go on
        raise DiscoveryFailed(f"the heads of {', '.join(task.to_discover)} are found at {config.model}'s final checkpoint "
                              f"{revision}, which could not be used: {type(error).__name__}: {error}") from error  # fmt: skip
    layout = attention_layout(loaded.model)
    label, method = next(iter(config.methods(task.align).items()))
    pairs = task.tokenize(loaded.tokenizer, {method["align"]}, part="discovery")
    executor, _ = choose_executor(loaded.model, config.executor)

    def find(loaded: LoadedModel) -> dict:
        return {
            name: {"size": size, **discover(loaded.model, loaded.tokenizer, layout, pairs, label, method, task.success, size=size,
                                            batch_size=batch_size_for(config, loaded, pairs), top_k=config.head_map_top_k, executor=executor,
                                            steps=config.attribution_steps)}
            for name, size in task.to_discover.items()
        }  # fmt: skip

    reload = lambda dtype: models.load(fetched.path, device, dtype) if models else load_model(fetched.path, device, dtype)  # noqa: E731
    try:
        groups, _, _ = widening(loaded, reload, find, f"the discovery pass at {revision}")
    except NonFiniteNumbers as error:
        raise DiscoveryFailed(f"the heads of {', '.join(task.to_discover)} could not be found at {config.model}'s final checkpoint: {error}") from error
    return {"revision": revision, "step": step_of(revision), "commit": fetched.commit, "weights_digest": fetched.weights_digest,
            "prompts": [tp.pair.id for tp in pairs], "groups": groups}  # fmt: skip


def base_record(config: SweepConfig, task: Task, revision: str) -> CheckpointRecord:
    """A checkpoint's record before anything is known of it: status failed, nothing measured."""
    return CheckpointRecord(model=config.model, revision=revision, step=step_of(revision), sweep_id=config.sweep_id(task.digest),
                            task=task.describe())  # fmt: skip


def run_checkpoint(
    config: SweepConfig,
    revision: str,
    *,
    task: Task | None = None,
    published: list[Checkpoint] | None = None,
    cache_dir: str | None = None,
    fetched: FetchedCheckpoint | None = None,
    models: ModelCache | None = None,
) -> CheckpointRecord:
    """Measure one revision on the task (default: the config's task file); returns a full record, or a
    failure record naming what went wrong.

    `published` (the repo's revisions) is looked up when not given; `fetched` skips the download when a
    worker has prefetched it; `models` lets a worker reuse its model skeleton across revisions. Invalid
    settings (a group's layer or head out of range, a task the tokenizer cannot take) raise instead: they
    are the sweep's error, not this checkpoint's.
    """
    task = task or load_task(config.task)
    record = base_record(config, task, revision)
    t0 = time.perf_counter()
    try:
        if fetched is None:
            if published is None:
                published = published_revisions(config.model, cache_dir)
            if revision not in {c.revision for c in published}:
                raise RevisionNotPublished(not_published_message(config.model, revision, published))
            fetched = fetch(config.model, revision, cache_dir)
        record = replace(record, commit=fetched.commit, weight_sha256=fetched.weight_sha256, weights_digest=fetched.weights_digest)
        t1 = time.perf_counter()
        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        loaded = models.load(fetched.path, device, dtype) if models else load_model(fetched.path, device, dtype)
        t2 = time.perf_counter()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - a checkpoint's failure is data, the sweep goes on
        return replace(record, error=f"{type(error).__name__}: {error}", timings={"fetch_s": time.perf_counter() - t0})
    reload = lambda dtype: models.load(fetched.path, device, dtype) if models else load_model(fetched.path, device, dtype)  # noqa: E731
    try:
        measured, loaded, narrower = widening(loaded, reload, lambda loaded: measure(config, task, loaded), revision)
    except NonFiniteNumbers as error:  # float32 too: the checkpoint fails, its condition named
        return replace(record, error=f"NonFiniteNumbers: {error}",
                       timings={"fetch_s": t1 - t0, "load_s": t2 - t1, "compute_s": time.perf_counter() - t2})  # fmt: skip
    except torch.OutOfMemoryError as error:  # even one row at a time does not fit (evaluation halves down to one)
        return replace(record, error=f"OutOfMemoryError: one row at a time does not fit on {loaded.device}: {error}",
                       timings={"fetch_s": t1 - t0, "load_s": t2 - t1, "compute_s": time.perf_counter() - t2})  # fmt: skip
    measured["settings"]["non_finite"] = narrower  # each narrower dtype that gave a NaN or an infinity here, and where
    return replace(record, status="ok", **measured, timings={"fetch_s": t1 - t0, "load_s": t2 - t1, "compute_s": time.perf_counter() - t2})


def measure(config: SweepConfig, task: Task, loaded: LoadedModel) -> dict:
    """Run every condition of the task on a loaded model; the measured fields of a CheckpointRecord (status "ok")."""
    layout = attention_layout(loaded.model)
    plan = plan_checkpoint(config, task, layout.n_layers, layout.n_heads)
    groups, methods, conditions = plan.groups, plan.methods, plan.conditions
    pairs = task.tokenize(loaded.tokenizer, {m["align"] for m in methods.values()})
    batch_size = batch_size_for(config, loaded, pairs)
    executor, why_plain = choose_executor(loaded.model, config.executor)
    batches: dict = {}  # rows per batch used, and halvings after running out of memory (evaluation.evaluate)
    rows = run_conditions(
        executor, loaded.model, loaded.tokenizer, layout, pairs, conditions, methods, task.success,
        max_new_tokens=config.max_new_tokens, batch_size=batch_size, batching=batches,
    )  # fmt: skip
    summary = summarize_record(conditions, task.contrasts, rows, config.bootstrap_resamples, config.seed)
    evidence = None
    if config.evidence:  # the second line of evidence: one forward over repeated random tokens
        from pythia_sweep.measure.evidence import attention_evidence

        positions = getattr(loaded.model.config, "max_position_embeddings", 2048)
        evidence = attention_evidence(loaded.model, loaded.tokenizer, n_sequences=8, length=min(16, (positions - 1) // 2), seed=config.seed)
        scores = [evidence["icl_score"]] + [v for score in ("induction", "previous_token") for row in evidence[score] for v in row]
        if not all(math.isfinite(v) for v in scores):
            raise NonFiniteNumbers(f"non-finite attention evidence (ICL score {evidence['icl_score']:.4g}) in {loaded.dtype}")
    found = None
    if config.head_map:  # every head of every layer: attribution, its top heads and the named ones patched exactly
        from pythia_sweep.measure.headmap import head_map

        label, method = next(iter(methods.items()))
        named = sorted({tuple(h) for heads in groups.values() for h in heads})
        found = head_map(loaded.model, loaded.tokenizer, layout, pairs, label, method, task.success, batch_size=batch_size,
                         top_k=config.head_map_top_k, named=named, executor=executor, steps=config.attribution_steps)  # fmt: skip
    circuit = None
    if config.circuits:  # which components feed which: every edge by attribution, the circuit verified by patching
        from pythia_sweep.measure.circuits import circuit_at
        from pythia_sweep.measure.fastpath import pad_id_of

        circuit = circuit_at(loaded.model, pairs, pad_id_of(loaded.tokenizer), batch_size, config.circuit_target,
                             resamples=config.bootstrap_resamples, seed=config.seed)  # fmt: skip
    return {
        "settings": {
            "groups": {name: [list(h) for h in heads] for name, heads in groups.items()},
            "n_layers": layout.n_layers,
            "n_heads": layout.n_heads,
            "module": layout.module_template,
            "n_prompts": len(pairs),
            "null": {"group": plan.null["group"], "size": plan.null["size"], "pool_layers": plan.null["layers"],
                     "excluded": plan.null["excluded"], "possible": plan.null["possible"],
                     "pool_description": _pool_words(plan.null["layers"], len(plan.null["excluded"]))},
            "discovered": {name: [list(h) for h in heads] for name, heads in task.discovered.items()},  # found, not written
            "discovery": task.discovery or None,  # where and on which prompts (checkpoint_run.discover_groups)
            "methods": methods,
            "max_new_tokens": config.max_new_tokens,
            "decoded": [c.name for c in conditions if c.decode],  # the others are teacher-forced only
            "batch_size": batch_size,
            "rows_per_batch": batches.get("rows_per_batch"),  # the rows run together (decoded and scored-only)
            "out_of_memory_halvings": batches.get("halvings", 0),  # each: a batch that did not fit, rerun at half
            "executor": executor,  # evaluation.choose_executor: "fast", or "plain" with the reason
            "executor_reason": why_plain,
            "device": str(loaded.device),
            "dtype": dtype_name(loaded.dtype),  # the dtype every number of the record comes from (`non_finite`: narrower ones that failed)
        },
        **summary,
        "evidence": evidence,
        "head_map": found,
        "circuit": circuit,
        "prompts": {
            tp.pair.id: {"clean": tp.pair.clean, "corrupted": tp.pair.corrupted, "correct": list(tp.pair.correct[:5]),
                         "wrong": list(tp.pair.wrong[:5]), "n_correct": len(tp.pair.correct), "n_wrong": len(tp.pair.wrong)}
            for tp in pairs
        },  # fmt: skip
        "responses": rows,
    }


def _pool_words(layers: list[int], excluded: int = 0) -> str:
    words = ("the heads of layer " if len(layers) == 1 else "the heads of layers ") + ", ".join(map(str, layers))
    return words + (f" other than the {excluded} discovered" if excluded else "")


def batch_size_for(config: SweepConfig, loaded: LoadedModel, pairs: list[TokenizedPair]) -> int:
    """The configured batch size, or (0 = auto) as many rows as fit the device's free memory now."""
    if config.batch_size:
        return config.batch_size
    longest = max(len(ids) for tp in pairs for ids in tp.ids.values())
    answer = max(len(a) for tp in pairs for side in tp.answers.values() for a in side)
    tokens = longest + max(config.max_new_tokens, answer)
    cap = AUTO_BATCH_CAP.get(loaded.device.type, AUTO_BATCH_CAP["cpu"])
    return rows_per_batch(loaded.model.config, loaded.dtype, tokens, free_memory(loaded.device), cap)
