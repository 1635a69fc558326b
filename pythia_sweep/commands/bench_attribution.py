"""The bench's attribution part (commands/bench.py): the floating-point work and the seconds of one checkpoint's
whole-model head map against exact patching of every head alone (`head_map_work`), and of its circuits, edge
attribution, one faithfulness check and the search for a circuit, against the node map (`circuit_work`). Work by
torch's FlopCounterMode (the backward included), seconds by a second, uncounted run.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pythia_sweep.commands.bench_work import DEVICE, DTYPE, ROBUST_TASK

HEAD_MAP_PROMPTS = 8  # decimal-robust's first prompts: exact patching of every head costs a forward per head and prompt


def work_and_time(runs: dict) -> dict[str, dict[str, float]]:
    """Each run's floating-point work (a first call under FlopCounterMode, which also warms it) and its time (a second call)."""
    out = {}
    for name, run in runs.items():
        with FlopCounterMode(display=False) as counter:
            run()
        start = time.perf_counter()
        run()
        out[name] = {"flops": counter.get_total_flops(), "s": time.perf_counter() - start}
    return out


def first_prompts(repo: str, revision: str, task_file: str, n_prompts: int):
    """The checkpoint loaded as a sweep loads it, the task, its primary method (label, settings) and the task's first
    `n_prompts` pairs tokenized for that method: the node map's and the circuit's work is measured on the same prompts."""
    from huggingface_hub import snapshot_download

    from pythia_sweep.config import SweepConfig
    from pythia_sweep.measure.loading import load_model
    from pythia_sweep.task.schema import load_task

    loaded = load_model(snapshot_download(repo, revision=revision), DEVICE, DTYPE)
    task = load_task(task_file)
    label, method = SweepConfig(model=repo, task=task_file).primary_method(task.align)
    return loaded, task, (label, method), task.tokenize(loaded.tokenizer, {method["align"]})[:n_prompts]


def head_map_work(repo: str, revision: str, task_file: str = ROBUST_TASK, n_prompts: int = HEAD_MAP_PROMPTS) -> dict:
    """The whole-model map of one checkpoint (headmap.attribution: two forwards and one backward) against exact
    patching of every head alone (the engine's way, teacher-forced), at the same rows: the floating-point work
    each does (torch's FlopCounterMode, the backward included) and its seconds (a second, uncounted run)."""
    from pythia_sweep.measure.batch import pad_id_of
    from pythia_sweep.measure.headmap import attribution, exact_effects
    from pythia_sweep.measure.patching import attention_layout

    loaded, task, (label, method), pairs = first_prompts(repo, revision, task_file, n_prompts)
    layout = attention_layout(loaded.model)
    heads = [(layer, head) for layer in range(layout.n_layers) for head in range(layout.n_heads)]
    runs = {
        "attribution": lambda: attribution(loaded.model, layout, pairs, method["align"], pad_id_of(loaded.tokenizer), batch_size=64),
        "exact": lambda: exact_effects(loaded.model, loaded.tokenizer, layout, pairs, heads, label, method, task.success, batch_size=64),
    }  # fmt: skip
    out = {"heads": len(heads), "prompts": len(pairs), "task": task_file}
    out |= work_and_time(runs)
    out["work_ratio"] = out["exact"]["flops"] / out["attribution"]["flops"]
    out["time_ratio"] = out["exact"]["s"] / out["attribution"]["s"]
    return out


def circuit_work(repo: str, revision: str, task_file: str = ROBUST_TASK, n_prompts: int = HEAD_MAP_PROMPTS, top: int = 100) -> dict:
    """A checkpoint's circuit work against the node map's, at the same prompts: every edge by attribution
    (circuits.attribution.edge_attribution: two forwards and one backward, every receiver's gradient its own), the node
    map (headmap.attribution), one faithfulness check (circuits.faithfulness.circuit_metric: a clean, a corrupted and a
    patched run per prompt, the top `top` edges kept) and the whole search for a circuit (circuits.search.find_circuit:
    a check per size tried). Work by FlopCounterMode, seconds by a second, uncounted run. The prompts' clean and
    corrupted token ids are cut to their common length from the end (edges compare them position by position): the
    work's shape, not a meaningful circuit."""
    import dataclasses

    from pythia_sweep.measure.batch import pad_id_of
    from pythia_sweep.measure.circuits.attribution import edge_attribution
    from pythia_sweep.measure.circuits.faithfulness import circuit_metric, faithfulness
    from pythia_sweep.measure.circuits.graph import graph_of
    from pythia_sweep.measure.circuits.search import find_circuit
    from pythia_sweep.measure.headmap import attribution
    from pythia_sweep.measure.patching import attention_layout

    loaded, _, (_, method), pairs = first_prompts(repo, revision, task_file, n_prompts)
    even = [dataclasses.replace(tp, ids={side: tp.ids[side][-min(map(len, tp.ids.values())):] for side in tp.ids}) for tp in pairs]
    pad_id, layout, mask = pad_id_of(loaded.tokenizer), attention_layout(loaded.model), graph_of(loaded.model).mask()
    scores = edge_attribution(loaded.model, even, pad_id, batch_size=64)
    order = [int(i) for i in torch.argsort(scores.abs().flatten(), descending=True) if mask.flatten()[i]][:top]
    kept = torch.zeros(mask.numel(), dtype=torch.bool)
    kept[order] = True
    checks = []

    def search():
        checks.clear()
        return find_circuit(scores, mask, lambda k: checks.append(1) or faithfulness(circuit_metric(loaded.model, even, k, pad_id)))

    runs = {
        "edges": lambda: edge_attribution(loaded.model, even, pad_id, batch_size=64),
        "nodes": lambda: attribution(loaded.model, layout, even, method["align"], pad_id, batch_size=64),
        "check": lambda: circuit_metric(loaded.model, even, kept.view(mask.shape), pad_id),
        "search": search,
    }
    out = {"edges_possible": int(mask.sum()), "prompts": len(even), "tokens": len(even[0].ids["clean"]), "task": task_file, "top": top}
    out |= work_and_time(runs)
    out["checks_in_search"] = len(checks)
    return out
