"""The circuit at chosen checkpoints: every edge scored by attribution, the fewest top edges whose circuit recovers a
target share of the clean-minus-corrupted answer log-prob difference, measured by patching; over training, how it
changes (its overlap with the final circuit and the previous one, when each component joins and leaves).

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.circuits jobs/configs/demo.toml --task tasks/induction-demo.toml \
        --revisions step192 step256 step320 step448
    python -m jobs.circuits jobs/configs/pythia160m-log.toml --task tasks/ioi.toml --revisions step4000 step32000 step143000
    python -m jobs.circuits --sweep <sweep_id> --against circuits-over-time/results/graphs/pythia-160m/ioi

Runs in this process, one checkpoint at a time, and writes reports/<model>__<task>/circuits.html and circuits.json.
The task's clean and corrupted prompts must be as long in tokens (`same_length = true`): edges are compared position
by position. Edges are scored on the whole graph (pythia_sweep/measure/circuits.py): the embeddings, every head and every MLP
into every later attention input, MLP input and the logits. --sweep reads the circuits a sweep recorded
(`circuits = true`) instead of finding them. --against sets each circuit beside the one Tigges et al. 2024 publish for
its step (a clone of curt-tigges/circuits-over-time, its Git LFS files pulled): the Jaccard overlap of edges and of
nodes, theirs taken to this graph's granularity (an edge into a head's q, k or v input is one into its layer's
attention input; pythia_sweep/measure/circuits.py read_published_graph). Their circuits come from EAP-IG with 30 steps on
their own prompts and a greedy selection from the logits, these from EAP on the task's: overlap, not identity, is
what to expect.
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
    parser.add_argument("config", nargs="?", help="run config (TOML): model and task; or --sweep")
    parser.add_argument("--revisions", nargs="+", help="checkpoints, in training order, e.g. step4000 step143000 (with a config)")
    parser.add_argument("--sweep", help="read the circuits a sweep recorded (circuits = true) instead: its parent run id, sweep_id or name")
    parser.add_argument("--tracking-uri", help="with --sweep: MLflow tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")
    parser.add_argument("--against", metavar="FOLDER", help="set each checkpoint's circuit beside a published one: FOLDER/<step>.json in the "
                        "format of Tigges et al. 2024 (curt-tigges/circuits-over-time results/graphs/<model>/<task>/)")  # fmt: skip
    parser.add_argument("--task", help="override: the task file whose prompts are used")
    parser.add_argument("--target", type=float, default=0.8, help="the share of the clean-minus-corrupted gap a circuit must recover (default 0.8)")
    parser.add_argument("--reports-dir", default="reports", help="where the page is written")
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error(f"--target={args.target}: a share of the gap, above 0 and at most 1")
    if (args.config is None) == (args.sweep is None) or (args.config is not None and not args.revisions):
        parser.error("name the circuits: a run config with --revisions (found now), or --sweep <sweep> (recorded by a sweep)")
    from pythia_sweep.errors import PythiaSweepError

    try:
        revisions, circuits, (model, task_name), shape = (_recorded(args) if args.sweep else _found(args))
        from pythia_sweep.measure.circuits.over_training import against_published
        from pythia_sweep.report.build import report_folder
        from pythia_sweep.report.circuits_page import circuits_page

        published = against_published(revisions, circuits, args.against, *shape) if args.against else None
        if args.against and not published:
            raise FileNotFoundError(f"--against {args.against}: no <step>.json there for any of {', '.join(revisions)}")
        folder = Path(args.reports_dir) / report_folder(model, task_name)
        path, summary = circuits_page(revisions, circuits, f"{model}, {task_name}", folder / "circuits", shape, published)
    except (PythiaSweepError, FileNotFoundError) as error:
        return refused(error)
    print(summary["answer"])
    for fact in summary["facts"]:
        print(f"{fact['label']}: {fact['fact']}")
    print(f"circuits: {path}")
    return 0


def _found(args) -> tuple[list[str], list[dict], tuple[str, str], tuple[int, int]]:
    """The circuits found now, one checkpoint after another in this process, each said as it is found."""
    from pythia_sweep.config import load_config
    from pythia_sweep.errors import RevisionNotPublished

    config = load_config(args.config, task=args.task)
    config.use_offline_cache()  # the demo config reads its own cache, offline (before huggingface_hub is imported)
    from pythia_sweep.measure.loading import batch_size_for, load_model, pick_device, pick_dtype, quiet_transformers_bars
    from pythia_sweep.hub.fetch import fetch
    from pythia_sweep.hub.revisions import not_published_message, published_revisions
    from pythia_sweep.measure.circuits.search import circuit_at
    from pythia_sweep.measure.batch import pad_id_of
    from pythia_sweep.task.schema import load_task

    quiet_transformers_bars()  # a line per checkpoint below says what was loaded; transformers' own bars are noise

    task = load_task(config.task)
    listed = published_revisions(config.model)
    published = {c.revision: c.step for c in listed}
    missing = [r for r in args.revisions if r not in published]
    if missing:
        raise RevisionNotPublished(not_published_message(config.model, missing[0], listed))
    revisions = sorted(args.revisions, key=lambda r: published[r])
    device = pick_device(config.device)
    _, method = config.primary_method(task.align)
    circuits = []
    for revision in revisions:
        loaded = load_model(fetch(config.model, revision).path, device, pick_dtype(config.dtype, device))
        pairs = task.tokenize(loaded.tokenizer, {method["align"]})
        circuit = circuit_at(loaded.model, pairs, pad_id_of(loaded.tokenizer), batch_size_for(config, loaded, pairs), args.target,
                             seed=config.seed)  # fmt: skip
        circuits.append(circuit | {"revision": revision})
        print(f"{revision}: {said(circuit)}", flush=True)
    shape = (loaded.model.config.num_hidden_layers, loaded.model.config.num_attention_heads)
    return revisions, circuits, (config.model, task.name), shape


def _recorded(args) -> tuple[list[str], list[dict], tuple[str, str], tuple[int, int]]:
    """The circuits a sweep recorded, in training order; refused by name when it recorded none."""
    from pythia_sweep.tracking.reader import SweepReader
    from pythia_sweep.tracking.store import TrackingStoreError

    reader = SweepReader(args.tracking_uri)
    parent = reader.find_sweep(args.sweep)
    config, task = reader.sweep_config(parent), reader.sweep_task(parent)
    records = sorted((r for r in reader.load_records(parent) if r.ok and r.circuit), key=lambda r: (r.step is None, r.step or 0))
    if not records:
        raise TrackingStoreError(f"sweep {parent} recorded no circuits: its config has circuits = false (set circuits = true and rerun it)")
    for r in records:
        print(f"{r.revision}: {said(r.circuit)}")
    shape = (records[0].settings["n_layers"], records[0].settings["n_heads"])
    return [r.revision for r in records], [r.circuit | {"revision": r.revision} for r in records], (config.model, task.name), shape


if __name__ == "__main__":
    sys.exit(main())
