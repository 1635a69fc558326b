"""One checkpoint end to end, no Ray: fetch, load, run every condition of a task, score, return a small record.

In the order a sweep meets them: the task compiled for the model (plan.py), checked against its config and tokenizer
before any weights are loaded (`preflight`); the discovery pass that finds a task's `{ discover = N }` groups at the
final checkpoint (`discover_groups`); then each checkpoint fetched, loaded (loading.py) and measured (`run_checkpoint`,
`measure`, which reads the compiled plan, never the task). The record is a `records.CheckpointRecord`, JSON-able (no tensors): the sweep ships it from a worker to the
driver, the driver logs it to MLflow, the report reads it back. A checkpoint that cannot be fetched or loaded is a
record too, with status "failed" and the error text, so a sweep goes on past it.

No NaN or infinity enters a record: a batch that gives one fails (errors.NonFiniteNumbers, naming its rows), and the
checkpoint is measured again with the model in a wider dtype (loading.widening: half precision overflows where float32
does not, as on early Pythia checkpoints); the record's settings say which dtype its numbers come from and what failed
before. A checkpoint that still gives one in float32 fails, with the condition named.
"""

from __future__ import annotations

import math
from collections.abc import Callable
import time
from dataclasses import replace

import torch

from pythia_sweep.hub.fetch import FetchedCheckpoint, fetch
from pythia_sweep.hub.revisions import Checkpoint, not_published_message, published_revisions, step_of
from pythia_sweep.config import SweepConfig
from pythia_sweep.errors import ConfigError, DiscoveryFailed, NonFiniteNumbers, RevisionNotPublished
from pythia_sweep.measure.evaluation import choose_executor, run_conditions
from pythia_sweep.measure.loading import LoadedModel, ModelCache, batch_size_for, dtype_name, load_model, pick_device, pick_dtype, widening
from pythia_sweep.measure.patching import attention_layout
from pythia_sweep.measure.plan import CompiledTasks, Plan, compile_task
from pythia_sweep.numbers import EVIDENCE_SCORES
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.measure.scoring import summarize_record
from pythia_sweep.task.definition import Task
from pythia_sweep.task.schema import load_task


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
    tokenizer = AutoTokenizer.from_pretrained(metadata_path)
    plan = compile_task(config, checked, tokenizer, n_layers, n_heads)
    if task.to_discover:
        task.tokenize(tokenizer, {m["align"] for m in plan.methods.values()}, part="discovery")
    return plan, len(plan.pairs)


def loader(path: str, device: torch.device, models: ModelCache | None) -> Callable[[torch.dtype], LoadedModel]:
    """Load a fetched checkpoint at a dtype (the first, and a wider one after a NaN): through the worker's model cache
    where it has one, so a revision of the same shape reuses its skeleton."""
    return lambda dtype: models.load(path, device, dtype) if models else load_model(path, device, dtype)


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
        reload = loader(fetched.path, device, models)
        loaded = reload(pick_dtype(config.dtype, device))
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - said in one line, the sweep cannot go on
        raise DiscoveryFailed(f"the heads of {', '.join(task.to_discover)} are found at {config.model}'s final checkpoint "
                              f"{revision}, which could not be used: {type(error).__name__}: {error}") from error  # fmt: skip
    layout = attention_layout(loaded.model)
    label, method = config.primary_method(task.align)
    pairs = task.tokenize(loaded.tokenizer, {method["align"]}, part="discovery")
    executor, _ = choose_executor(loaded.model, config.executor)

    def find(loaded: LoadedModel) -> dict:
        return {
            name: {"size": size, **discover(loaded.model, loaded.tokenizer, layout, pairs, label, method, task.success, size=size,
                                            batch_size=batch_size_for(config, loaded, pairs), top_k=config.head_map_top_k, executor=executor,
                                            steps=config.attribution_steps)}
            for name, size in task.to_discover.items()
        }  # fmt: skip

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
    plans: CompiledTasks | None = None,
) -> CheckpointRecord:
    """Measure one revision on the task (default: the config's task file); returns a full record, or a
    failure record naming what went wrong.

    `published` (the repo's revisions) is looked up when not given; `fetched` skips the download when a
    worker has prefetched it; `models` lets a worker reuse its model skeleton across revisions, `plans` its compiled
    task (plan.CompiledTasks: compiled once, not per checkpoint). Invalid
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
        reload = loader(fetched.path, device, models)
        loaded = reload(pick_dtype(config.dtype, device))
        t2 = time.perf_counter()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - a checkpoint's failure is data, the sweep goes on
        return replace(record, error=f"{type(error).__name__}: {error}", timings={"fetch_s": time.perf_counter() - t0})
    plan = (plans or CompiledTasks()).plan(config, task, loaded)  # the same files in a wider dtype: the same plan
    try:
        measured, loaded, narrower = widening(loaded, reload, lambda loaded: measure(config, plan, loaded), revision)
    except NonFiniteNumbers as error:  # float32 too: the checkpoint fails, its condition named
        return replace(record, error=f"NonFiniteNumbers: {error}",
                       timings={"fetch_s": t1 - t0, "load_s": t2 - t1, "compute_s": time.perf_counter() - t2})  # fmt: skip
    except torch.OutOfMemoryError as error:  # even one row at a time does not fit (evaluation halves down to one)
        return replace(record, error=f"OutOfMemoryError: one row at a time does not fit on {loaded.device}: {error}",
                       timings={"fetch_s": t1 - t0, "load_s": t2 - t1, "compute_s": time.perf_counter() - t2})  # fmt: skip
    measured["settings"]["non_finite"] = narrower  # each narrower dtype that gave a NaN or an infinity here, and where
    return replace(record, status="ok", **measured, timings={"fetch_s": t1 - t0, "load_s": t2 - t1, "compute_s": time.perf_counter() - t2})


def measure(config: SweepConfig, plan: Plan, loaded: LoadedModel) -> dict:
    """Run every condition of the compiled task (plan.Plan) on a loaded model; the measured fields of a CheckpointRecord
    (status "ok"). The task itself is not read here: what a checkpoint needs of it is in the plan."""
    layout = attention_layout(loaded.model)
    if plan.shape != (layout.n_layers, layout.n_heads):
        raise ValueError(f"plan.shape={plan.shape} is not valid: the loaded model's {(layout.n_layers, layout.n_heads)} (compile the task for it)")
    groups, methods, conditions, pairs = plan.groups, plan.methods, plan.conditions, list(plan.pairs)
    batch_size = batch_size_for(config, loaded, pairs)
    executor, why_plain = choose_executor(loaded.model, config.executor)
    batches: dict = {}  # rows per batch used, and halvings after running out of memory (evaluation.evaluate)
    rows = run_conditions(
        executor, loaded.model, loaded.tokenizer, layout, pairs, conditions, methods, plan.success,
        max_new_tokens=config.max_new_tokens, batch_size=batch_size, batching=batches,
    )  # fmt: skip
    summary = summarize_record(conditions, plan.contrasts, rows, config.bootstrap_resamples, config.seed)
    evidence = None
    if config.evidence:  # the second line of evidence: one forward over repeated random tokens
        from pythia_sweep.measure.evidence import attention_evidence

        positions = getattr(loaded.model.config, "max_position_embeddings", 2048)
        evidence = attention_evidence(loaded.model, loaded.tokenizer, n_sequences=8, length=min(16, (positions - 1) // 2), seed=config.seed)
        scores = [evidence["icl_score"]] + [v for score in EVIDENCE_SCORES for row in evidence[score] for v in row]
        if not all(math.isfinite(v) for v in scores):
            raise NonFiniteNumbers(f"non-finite attention evidence (ICL score {evidence['icl_score']:.4g}) in {loaded.dtype}")
    found = None
    if config.head_map:  # every head of every layer: attribution, its top heads and the named ones patched exactly
        from pythia_sweep.measure.headmap import head_map

        label, method = plan.primary, methods[plan.primary]
        named = sorted({tuple(h) for heads in groups.values() for h in heads})
        found = head_map(loaded.model, loaded.tokenizer, layout, pairs, label, method, plan.success, batch_size=batch_size,
                         top_k=config.head_map_top_k, named=named, executor=executor, steps=config.attribution_steps)  # fmt: skip
    circuit = None
    if config.circuits:  # which components feed which: every edge by attribution, the circuit verified by patching
        from pythia_sweep.measure.batch import pad_id_of
        from pythia_sweep.measure.circuits.search import circuit_at

        circuit = circuit_at(loaded.model, pairs, pad_id_of(loaded.tokenizer), batch_size, config.circuit_target,
                             resamples=config.bootstrap_resamples, seed=config.seed)  # fmt: skip
    return {
        "settings": {
            "groups": {name: [list(h) for h in heads] for name, heads in groups.items()},
            "n_layers": layout.n_layers,
            "n_heads": layout.n_heads,
            "module": layout.module_template,
            "n_prompts": len(pairs),
            "null": plan.null_settings(),
            "discovered": {name: [list(h) for h in heads] for name, heads in plan.discovered.items()},  # found, not written
            "discovery": plan.discovery,  # where and on which prompts (discover_groups)
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
