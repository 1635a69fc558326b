"""The layer x head scan: every head of every layer patched alone at one checkpoint, to find which heads a task's
groups should name before sweeping (`python -m jobs.scan`). It runs the sweep's single-head conditions on the
same evaluation path, teacher-forced."""

from __future__ import annotations

from pythia_sweep.measure.conditions import Condition, single_head_conditions
from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.loading import LoadedModel, batch_size_for
from pythia_sweep.measure.evaluation import choose_executor, run_conditions
from pythia_sweep.measure.patching import attention_layout
from pythia_sweep.task.definition import Task


def scan_layers(config: SweepConfig, task: Task, loaded: LoadedModel, layers: list[int] | None = None) -> list[dict]:
    """Every head of every layer patched alone: rows of (layer, head, mean log-prob difference), teacher-forced
    as the sweep's single heads are (conditions.single_head_conditions: no generation is read).

    One batched evaluation per layer (its heads share the batches); the corrupted baseline is measured once,
    in the first layer's batch, and given as the one row with head -1.
    """
    layout = attention_layout(loaded.model)
    label, method = next(iter(config.methods(task.align).items()))
    pairs = task.tokenize(loaded.tokenizer, {method["align"]})
    batch_size = batch_size_for(config, loaded, pairs)  # once: the same prompts at every layer
    executor, _ = choose_executor(loaded.model, config.executor)
    rows = []
    for layer in layers if layers is not None else range(layout.n_layers):
        attention_layout(loaded.model, layer)  # refuses a layer out of range, by name
        conditions = single_head_conditions([layer], layout.n_heads, label)
        if not rows:
            conditions.insert(0, Condition("baseline", (), "corrupted", label, "baseline", decode=False))
        results = run_conditions(
            executor, loaded.model, loaded.tokenizer, layout, pairs, conditions, {label: method}, task.success,
            max_new_tokens=config.max_new_tokens, batch_size=batch_size,
        )  # fmt: skip
        for cond in conditions:
            got = [r["logprob_diff"] for r in results if r["condition"] == cond.name]
            rows.append({"layer": layer if cond.heads else -1, "head": cond.heads[0][1] if cond.heads else -1,
                         "logprob_diff": sum(got) / len(got)})  # fmt: skip
    return rows
