"""Benchmark: the methodology written plainly vs the project vs the floor, on the same checkpoints.

    make bench                                   # 4 checkpoints shaped like Pythia-160M (random weights, fp16)
    python -m jobs.bench --head-map-only         # only the whole-model head map against exact patching of all 144 heads
    python -m jobs.bench --checkpoints 2 --smoke # two tiny checkpoints: what CI runs so the command never rots

The checkpoints have Pythia-160M's config and size on disk (float16 safetensors, ~325 MB each) and are
published as step* revisions of a local Hugging Face cache under bench/ (git-ignored). Measured, per checkpoint:
  direct   per checkpoint from_pretrained, then each of 3 conditions x 15 trials its own generate call
           (20 new tokens) with an upstream-style hook: the methodology, written plainly
  seed     the project's full sweep (Ray, MLflow, report) with the decimal-seed task, per-head method only
  robust   the same with the decimal-robust task plus single-head and 20-subset null conditions
  floor    loading the weights plus one batched forward pass over the distinct conditions and prompts
and two lower bounds that say how far each target can be reached at all on this machine:
  gen_floor     the floor plus the 19 further greedy steps (KV cache, no patch, a bare loop) that any
                way of producing 20 new tokens must run: what seed_warm can at best approach
  robust_floor  loading plus one forward over the decimal-robust task's distinct rows, no generation at all:
                what the robust sweep can at best approach
and the hardware floor, what the machine itself allows: the floating-point work each preset's conditions need
(pythia_sweep/measure/floor.py: prefill below and above the lowest patched layer, decoding steps, answer tokens, the
output layer where logits are read) at the matmul throughput this device sustains on the model's own shapes,
in its dtype and with a worker's thread count. The share of that floor a sweep achieves is the number to move.
The project's wall time splits into a start-up paid once per sweep (Ray, worker processes, the first
model load, the MLflow store, the report) and a warm cost per checkpoint; the table gives both, and the
number of checkpoints from which the seed sweep is 10x faster than the direct way.

This module is the command; what it measures is in bench_work.py (the checkpoints, the direct way, the sweeps, the
floors) and bench_attribution.py (the head map's and the circuits' work), the tables it prints in bench_tables.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pythia_sweep.commands.bench_attribution import circuit_work, head_map_work
from pythia_sweep.commands.bench_tables import BOUNDS, TARGETS, break_even, circuit_table, head_map_table, startup_table, table
from pythia_sweep.commands.bench_work import (  # importing it points the Hub at the bench's local cache, offline
    BENCH_DIR,
    PYTHIA_160M,
    ROBUST_TASK,
    SEED_TASK,
    TINY,
    direct_way,
    floor,
    hardware_floor,
    machine,
    make_checkpoints,
    project,
    task_rows,
    whole_process,
)


def main(argv=None) -> int:
    from pythia_sweep.commands.cli import parser_for

    parser = parser_for("jobs.bench", __doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=4, help="number of checkpoints")
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoints instead of Pythia-160M-shaped ones")
    parser.add_argument("--out", default=str(BENCH_DIR / "results.json"), help="where the JSON goes")
    parser.add_argument("--startup-only", action="store_true", help="only the start-up parts and the whole-process ratio")
    parser.add_argument("--head-map-only", action="store_true", help="only the head map's work against exact patching of every head")
    parser.add_argument("--circuits-only", action="store_true", help="only the circuits' work (edge attribution, a faithfulness check, the search) against the node map")
    args = parser.parse_args(argv)
    if args.checkpoints < 2:
        parser.error("--checkpoints must be at least 2 (warm throughput needs two)")
    shape, repo = (TINY, "pythia-sweep-bench/tiny") if args.smoke else (PYTHIA_160M, "pythia-sweep-bench/pythia-160m-shaped")
    print(f"making {args.checkpoints} checkpoints shaped like {'a tiny model' if args.smoke else 'Pythia-160M'} ...", flush=True)
    revisions = make_checkpoints(repo, args.checkpoints, shape)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    alone = {"circuits": ("the circuits' work against the node map's", circuit_work, circuit_table),
             "head_map": ("the whole-model head map against exact patching of every head", head_map_work, head_map_table)}
    key = "circuits" if args.circuits_only else "head_map" if args.head_map_only else None
    if key:  # one part alone
        said, work, render = alone[key]
        print(f"{said} ...", flush=True)
        results = {"machine": machine(), key: work(repo, revisions[0])}
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(render(results[key]))
        print(f"written to {args.out}")
        return 0
    workdir = Path(args.out).parent.resolve()  # a fresh store per run: a rerun must not resume the last one
    store, reports = f"sqlite:///{workdir / f'mlflow-{int(time.time())}.db'}", workdir / "reports"
    print("the methodology as a whole process, the project's way and the direct way ...", flush=True)
    whole = whole_process(repo, revisions, workdir)
    print("project, seed preset: start-up parts, with Ray (workers auto) and in this process (workers 0) ...", flush=True)
    startup = {  # each in a fresh store of its own: the second would otherwise resume the first (same sweep id)
        name: project(repo, revisions, store.replace(".db", f"-startup-{name}.db"), reports, task=SEED_TASK, single_heads=False,
                      null_subsets=0, workers=w)
        for name, w in (("ray", "auto"), ("in-process", 0))
    }  # fmt: skip
    if args.startup_only:
        results = {"machine": machine(), "checkpoints": len(revisions), "whole_process": whole, "startup": startup}
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(startup_table(results))
        print(f"written to {args.out}")
        return 0
    print("direct way ...", flush=True)
    direct = direct_way(repo, revisions)
    print("project, seed preset ...", flush=True)
    seed = project(repo, revisions, store, reports, task=SEED_TASK, single_heads=False, null_subsets=0)
    print("project, robust preset + per-head + null ...", flush=True)
    robust = project(repo, revisions, store, reports, task=ROBUST_TASK, single_heads=True, null_subsets=20)
    print("floors ...", flush=True)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    seed_rows = task_rows(SEED_TASK, shape, single_heads=False, null_count=0)
    per = {
        "direct": mean(direct), "seed": seed["per_checkpoint"], "seed_warm": seed["warm_per_checkpoint"],
        "robust": robust["per_checkpoint"], "floor": mean(floor(repo, revisions, seed_rows)),
        "gen_floor": mean(floor(repo, revisions, seed_rows, new_tokens=20)),
        "robust_floor": mean(floor(repo, revisions, task_rows(ROBUST_TASK, shape, single_heads=True, null_count=20))),
    }  # fmt: skip
    print("hardware floor ...", flush=True)
    floors = {
        name: hardware_floor(repo, revisions[0], task, run["threads"], run["batch_size"], **settings)
        for name, run, task, settings in (
            ("seed", seed, SEED_TASK, dict(single_heads=False, null_count=0)),
            ("robust", robust, ROBUST_TASK, dict(single_heads=True, null_count=20)),
        )
    }  # fmt: skip
    for name, run in (("seed", seed), ("robust", robust)):
        floors[name]["achieved"] = floors[name]["floor_s"] / run["stages"]["compute"]
    print("the whole-model head map against exact patching of every head ...", flush=True)
    head_map = head_map_work(repo, revisions[0])
    print("the circuits' work against the node map's ...", flush=True)
    circuits = circuit_work(repo, revisions[0])
    n = break_even(per["direct"], seed["startup"], per["seed_warm"])
    results = {
        "machine": machine(), "whole_process": whole, "startup": startup,
        "checkpoints": len(revisions), "shape": "tiny" if args.smoke else "pythia-160m",
        "per_checkpoint_s": per, "seed": seed, "robust": robust,
        "targets": {name: bool(check(per)) for name, check in TARGETS.items()},
        "bounds": {name: bound({**per, "startup": seed["startup"]}, n) for name, bound in BOUNDS.items()},
        "seed_10x_from_checkpoints": n,
        "hardware_floor": floors, "head_map": head_map, "circuits": circuits,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))
    print(startup_table(results))
    print(head_map_table(head_map))
    print(circuit_table(circuits))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
