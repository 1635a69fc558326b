"""The circuit at chosen checkpoints: every edge scored by attribution, the fewest top edges whose circuit recovers a
target share of the clean-minus-corrupted answer log-prob difference, measured by patching; over training, how it
changes (its overlap with the final circuit and the previous one, when each component joins and leaves).

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.circuits jobs/configs/demo.toml --task tasks/induction-demo.toml \
        --revisions step192 step256 step320 step448
    python -m jobs.circuits jobs/configs/pythia160m-log.toml --task tasks/ioi.toml --revisions step4000 step32000 step143000

Runs in this process, one checkpoint at a time, and writes reports/<model>__<task>/circuits.html and circuits.json.
The task's clean and corrupted prompts must be as long in tokens (`same_length = true`): edges are compared position
by position. Edges are scored on the whole graph (pythia_sweep/circuits.py): the embeddings, every head and every MLP
into every later attention input, MLP input and the logits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pythia_sweep.commands.cli import parser_for, refused


def said(circuit: dict) -> str:
    """One checkpoint's circuit in a line: the gap it explains, its size and measured faithfulness, its nodes."""
    gap = f"clean - corrupted {circuit['gap']:+.2f} nats"
    if circuit["none"]:
        return f"no circuit: {circuit['none']}"
    low, high = circuit["faithfulness_ci"]
    interval = f", 95% [{low:.2f}, {high:.2f}]" if low is not None else ""
    short = "" if circuit["reached"] else f" (short of {circuit['target']:g} with every edge)"
    return (f"{gap}; {circuit['size']} of {circuit['edges_possible']} edges, faithfulness {circuit['faithfulness']:.2f}{interval}{short}; "
            f"nodes {', '.join(circuit['nodes'])}")


def main(argv=None) -> int:
    parser = parser_for("jobs.circuits", __doc__)
    parser.add_argument("config", help="run config (TOML): model and task")
    parser.add_argument("--revisions", nargs="+", required=True, help="checkpoints, in training order, e.g. step4000 step143000")
    parser.add_argument("--task", help="override: the task file whose prompts are used")
    parser.add_argument("--target", type=float, default=0.8, help="the share of the clean-minus-corrupted gap a circuit must recover (default 0.8)")
    parser.add_argument("--reports-dir", default="reports", help="where the page is written")
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error(f"--target={args.target}: a share of the gap, above 0 and at most 1")
    from pythia_sweep.config import load_config
    from pythia_sweep.errors import PythiaSweepError, RevisionNotPublished

    try:
        config = load_config(args.config, task=args.task)
        config.use_offline_cache()  # the demo config reads its own cache, offline (before huggingface_hub is imported)
        from pythia_sweep.checkpoint_run import batch_size_for, load_model, pick_device, pick_dtype
        from pythia_sweep.checkpoints import fetch, not_published_message, published_revisions
        from pythia_sweep.circuits import circuit_at
        from pythia_sweep.fastpath import pad_id_of
        from pythia_sweep.report.build import circuits_page, report_folder
        from pythia_sweep.task_schema import load_task

        task = load_task(config.task)
        published = {c.revision: c.step for c in published_revisions(config.model)}
        missing = [r for r in args.revisions if r not in published]
        if missing:
            raise RevisionNotPublished(not_published_message(config.model, missing[0], published_revisions(config.model)))
        revisions = sorted(args.revisions, key=lambda r: published[r])
        device = pick_device(config.device)
        circuits = []
        for revision in revisions:
            loaded = load_model(fetch(config.model, revision).path, device, pick_dtype(config.dtype, device))
            _, method = next(iter(config.methods(task.align).items()))
            pairs = task.tokenize(loaded.tokenizer, {method["align"]})
            circuit = circuit_at(loaded.model, pairs, pad_id_of(loaded.tokenizer), batch_size_for(config, loaded, pairs), args.target,
                                 seed=config.seed)  # fmt: skip
            circuits.append(circuit | {"revision": revision})
            print(f"{revision}: {said(circuit)}", flush=True)
        folder = Path(args.reports_dir) / report_folder(config.model, task.name)
        shape = (loaded.model.config.num_hidden_layers, loaded.model.config.num_attention_heads)
        path, summary = circuits_page(revisions, circuits, f"{config.model}, {task.name}", folder / "circuits", shape)
    except PythiaSweepError as error:
        return refused(error)
    print(summary["answer"])
    for fact in summary["facts"]:
        print(f"{fact['label']}: {fact['fact']}")
    print(f"circuits: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
