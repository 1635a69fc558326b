"""The layer x head scan: every head of every layer patched alone at one checkpoint, to find which heads a task's
groups should name before sweeping (`python -m jobs.scan`). It runs the sweep's single-head conditions on the
same evaluation path, teacher-forced."""

from __future__ import annotations

from dataclasses import dataclass

from pythia_sweep.measure.conditions import Condition, single_head_conditions
from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.loading import LoadedModel, batch_size_for
from pythia_sweep.measure.evaluation import choose_executor, run_conditions
from pythia_sweep.measure.patching import attention_layout
from pythia_sweep.stats import Head
from pythia_sweep.task.definition import Task


@dataclass(frozen=True)
class Scan:
    """The layer x head scan at one checkpoint: the corrupted baseline and each head's mean log-prob difference
    patched alone."""

    baseline: float  # the corrupted prompt's mean log-prob difference, nothing patched
    heads: list[dict]  # one row per head: layer, head, logprob_diff

    def effects(self) -> dict[Head, float]:
        """Each head's exact effect: its patched log-prob difference minus the baseline's (nats)."""
        return {(r["layer"], r["head"]): r["logprob_diff"] - self.baseline for r in self.heads}


def scan_layers(config: SweepConfig, task: Task, loaded: LoadedModel, layers: list[int] | None = None) -> Scan:
    """Every head of every layer patched alone, teacher-forced as the sweep's single heads are
    (conditions.single_head_conditions: no generation is read).

    One batched evaluation per layer (its heads share the batches); the corrupted baseline is measured once,
    in the first layer's batch.
    """
    layout = attention_layout(loaded.model)
    label, method = config.primary_method(task.align)
    pairs = task.tokenize(loaded.tokenizer, {method["align"]})
    batch_size = batch_size_for(config, loaded, pairs)  # once: the same prompts at every layer
    executor, _ = choose_executor(loaded.model, config.executor)
    baseline, heads = None, []
    for layer in layers if layers is not None else range(layout.n_layers):
        attention_layout(loaded.model, layer)  # refuses a layer out of range, by name
        conditions = single_head_conditions([layer], layout.n_heads, label)
        if baseline is None:
            conditions.insert(0, Condition("baseline", (), "corrupted", label, "baseline", decode=False))
        results = run_conditions(
            executor, loaded.model, loaded.tokenizer, layout, pairs, conditions, {label: method}, task.success,
            max_new_tokens=config.max_new_tokens, batch_size=batch_size,
        )  # fmt: skip
        for cond in conditions:
            got = [r["logprob_diff"] for r in results if r["condition"] == cond.name]
            if cond.kind == "baseline":
                baseline = sum(got) / len(got)
            else:
                heads.append({"layer": layer, "head": cond.heads[0][1], "logprob_diff": sum(got) / len(got)})
    return Scan(baseline, heads)
