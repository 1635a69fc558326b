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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path("bench")
SEED_TASK, ROBUST_TASK = "tasks/decimal-seed.toml", "tasks/decimal-robust.toml"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_CACHE", str((BENCH_DIR / "hf").resolve()))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the bench's local Ray stays on 127.0.0.1

import torch  # noqa: E402

from pythia_sweep.measure.checkpoint import pick_dtype  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = pick_dtype("auto", DEVICE)  # as the project picks with dtype="auto"

PYTHIA_160M = dict(  # EleutherAI/pythia-160m's config.json
    vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
    layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
)  # fmt: skip
TINY = dict(PYTHIA_160M, vocab_size=512, hidden_size=96, num_hidden_layers=8, intermediate_size=256)
TARGETS = {  # name -> whether it is met
    "seed at least 10x faster per checkpoint than direct": lambda r: r["direct"] / r["seed"] >= 10,
    "seed within 1.5x of the floor per checkpoint (warm)": lambda r: r["seed_warm"] / r["floor"] <= 1.5,
    "robust+per-head+null within 3x of seed per checkpoint": lambda r: r["robust"] / r["seed"] <= 3,
}
BOUNDS = {  # name -> what bounds it on this machine, from the measured figures
    "seed at least 10x faster per checkpoint than direct": lambda r, n: (
        f"met from {n} checkpoints on (start-up paid once: {r['startup']:.1f} s)" if n else
        f"the warm cost alone ({r['seed_warm']:.2f} s) is over a tenth of direct"),
    "seed within 1.5x of the floor per checkpoint (warm)": lambda r, n: (
        f"generating 20 tokens costs at least {r['gen_floor']:.2f} s = {r['gen_floor'] / r['floor']:.1f}x the floor; "
        f"seed_warm is {r['seed_warm'] / r['gen_floor']:.2f}x that"),
    "robust+per-head+null within 3x of seed per checkpoint": lambda r, n: (
        f"one forward over robust's rows, no generation, costs {r['robust_floor']:.2f} s = "
        f"{r['robust_floor'] / r['seed']:.1f}x seed; robust is {r['robust'] / r['robust_floor']:.1f}x that"),
}  # fmt: skip


def break_even(direct: float, startup: float, warm: float, factor: float = 10) -> int | None:
    """The fewest checkpoints from which (startup + n * warm) / n <= direct / factor; None if never."""
    budget = direct / factor - warm
    return max(1, math.ceil(startup / budget)) if budget > 0 else None


def make_checkpoints(repo: str, n: int, shape: dict) -> list[str]:
    """N revisions with the given config and random weights, saved in float16 in the Hub's layout."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from pythia_sweep.demo.demo_family import build_tokenizer, corpus
    from pythia_sweep.demo.hub_cache import repo_folder, save_revision

    revisions = [f"step{1000 * (i + 1)}" for i in range(n)]
    cache = os.environ["HF_HUB_CACHE"]
    if all((repo_folder(cache, repo) / "refs" / r).exists() for r in revisions):
        return revisions
    tokenizer = build_tokenizer(corpus(2000, seed=3))
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**shape)).half().eval()
    with tempfile.TemporaryDirectory() as work:
        for i, revision in enumerate(revisions):
            with torch.no_grad():
                model.gpt_neox.embed_in.weight[0].fill_(float(i))  # distinct weights, hence distinct hashes
            save_revision(model, tokenizer, cache, repo, revision, work)
    return revisions


def direct_way(repo: str, revisions: list[str]) -> list[float]:
    """The methodology as written: one generate call per trial, a hook slicing the post-projection output."""
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pythia_sweep.task.schema import load_task

    task = load_task(SEED_TASK)  # the methodology's pair and its success check, from the task file
    (pair,) = task.pairs()
    clean, buggy = pair.clean, pair.corrupted
    times = []
    for revision in revisions:
        start = time.perf_counter()
        path = snapshot_download(repo, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPE).to(DEVICE).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        groups = task.resolve_groups(model.config.num_hidden_layers, model.config.num_attention_heads)
        dense = model.gpt_neox.layers[task.layer].attention.dense
        saved = {}
        handle = dense.register_forward_hook(lambda m, a, out: saved.__setitem__("clean", out.detach()))
        with torch.no_grad():
            model(**tokenizer(clean, return_tensors="pt").to(DEVICE))
        handle.remove()
        head = model.config.hidden_size // model.config.num_attention_heads
        for heads in ([], *([h for _, h in g] for g in groups.values())):
            for _ in range(15):

                def patch(m, a, out, heads=heads):
                    n = min(out.shape[1], saved["clean"].shape[1])
                    for h in heads:
                        out[:, :n, h * head : (h + 1) * head] = saved["clean"][:, :n, h * head : (h + 1) * head]
                    return out

                handle = dense.register_forward_hook(patch)
                inputs = tokenizer(buggy, return_tensors="pt").to(DEVICE)
                with torch.no_grad():
                    out = model.generate(**inputs, max_new_tokens=20, do_sample=False, pad_token_id=0)
                handle.remove()
                task.success(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :]), pair.correct, pair.wrong)
        times.append(time.perf_counter() - start)
        del model
    return times


def _rows(task_file: str, shape: dict, **settings) -> list[str]:
    """The prompt text of every distinct row (condition x prompt) the project runs for a task."""
    from pythia_sweep.measure.conditions import make_conditions
    from pythia_sweep.task.schema import load_task

    task = load_task(task_file)
    groups = task.resolve_groups(shape["num_hidden_layers"], shape["num_attention_heads"])
    conditions = make_conditions(groups, ["per-head"], shape["num_attention_heads"], seed=0, **settings)
    return [getattr(pair, c.prompt) for c in conditions for pair in task.pairs()]


def floor(repo: str, revisions: list[str], rows: list[str], new_tokens: int = 1, batch: int = 64) -> list[float]:
    """Loading the weights plus one batched forward over `rows`, and (new_tokens > 1) the further greedy
    steps over a KV cache that generating that many tokens takes; no hooks, no scoring, no bookkeeping."""
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    from pythia_sweep.measure.fastpath import pad

    times = []
    for revision in revisions:
        start = time.perf_counter()
        path = snapshot_download(repo, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPE).to(DEVICE).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        for i in range(0, len(rows), batch):
            ids, mask = pad([tokenizer(t)["input_ids"] for t in rows[i : i + batch]], 0, left=True, device=DEVICE)
            cache = DynamicCache(config=model.config)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache, logits_to_keep=1).logits
                for _ in range(new_tokens - 1):
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
                    token = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
                    logits = model(input_ids=token, attention_mask=mask, past_key_values=cache).logits
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del model
    return times


def project(repo: str, revisions: list[str], store: str, reports: Path, **settings) -> dict:
    """The full sweep (Ray, MLflow, report); wall time per checkpoint, warm throughput, stage breakdown."""
    import ray

    from pythia_sweep.config import SweepConfig
    from pythia_sweep.report.build import build_report
    from pythia_sweep.run.driver import run_sweep
    from pythia_sweep.tracking.reader import SweepReader

    config = SweepConfig(model=repo, checkpoints=tuple(revisions), method="per-head", **settings)
    start = time.perf_counter()
    result = run_sweep(config, tracking_uri=store, progress=False)
    report_start = time.perf_counter()
    build_report(result.parent_run_id, tracking_uri=store, reports_dir=reports)
    wall = time.perf_counter() - start
    parts = result.startup | {"report (build, write)": time.perf_counter() - report_start}
    ray.shutdown()
    tracker = SweepReader(store)
    runs = sorted(tracker.checkpoint_runs(result.parent_run_id), key=lambda r: r.info.start_time)
    arrivals = [r.info.start_time / 1000 for r in runs]
    records = tracker.load_records(result.parent_run_id)
    mean = lambda key: sum(r.timings.get(key, 0) for r in records) / len(records)  # noqa: E731
    loads = [r.timings.get("load_s", 0) for r in sorted(records, key=lambda r: r.timings.get("load_s", 0), reverse=True)]
    parts["first model skeleton (its load beyond a warm one)"] = loads[0] - sum(loads[1:]) / max(1, len(loads) - 1)
    workers = len({r.worker["pid"] for r in records})
    # Warm: the pace once every worker has delivered its first checkpoint (workers finish in step).
    first = min(workers, len(arrivals)) - 1
    warm = (arrivals[-1] - arrivals[first]) / (len(arrivals) - 1 - first) if len(arrivals) - 1 > first else wall
    return {
        "per_checkpoint": wall / len(revisions),
        "warm_per_checkpoint": warm,
        "startup": max(0.0, wall - warm * len(revisions)),
        "workers": workers,
        "stages": {"fetch": mean("fetch_s"), "load": mean("load_s"), "compute": mean("compute_s"),
                   "wait_for_weights": mean("wait_for_weights_s"), "log": result.log_s / len(revisions)},  # fmt: skip
        "peak_rss_mb": max(r.worker["peak_rss_mb"] for r in records),
        "threads": records[0].worker.get("torch_threads", torch.get_num_threads()),
        "batch_size": records[0].settings["batch_size"],
        "failed": result.failed,
        "startup_parts": parts,
    }


def whole_process(repo: str, revisions: list[str], workdir: Path) -> dict:
    """The methodology as a user runs it, each way a fresh process: `python -m jobs.sweep
    jobs/configs/methodology.toml` on these checkpoints (with its report), against the direct way; wall seconds."""
    import subprocess

    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    runs = {
        "project": [sys.executable, "-m", "pythia_sweep.commands.sweep", "methodology", "--model", repo, "--checkpoints",
                    ",".join(revisions), "--tracking-uri", f"sqlite:///{workdir / f'whole-{int(time.time())}.db'}",
                    "--reports-dir", str(workdir / "reports")],
        "direct": [sys.executable, "-c", f"from pythia_sweep.commands.bench import direct_way; direct_way({repo!r}, {revisions!r})"],
    }  # fmt: skip
    out = {}
    for name, cmd in runs.items():
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out[name] = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
    out["ratio"] = out["direct"] / out["project"]
    return out


def hardware_floor(repo: str, revision: str, task_file: str, threads: int, batch: int, max_new_tokens: int = 20, **settings) -> dict:
    """The work one checkpoint of a preset needs and the time it takes at this device's matmul throughput,
    measured on the model's shapes with `threads` threads (a worker's) at a decoding step's `batch` rows and
    a prefill's (every prompt token of those rows)."""
    from huggingface_hub import snapshot_download
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from pythia_sweep.measure.conditions import make_conditions
    from pythia_sweep.measure.floor import floor_seconds, matmul_throughput, needed_flops, shapes_of
    from pythia_sweep.task.schema import load_task

    path = snapshot_download(repo, revision=revision)
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):  # shapes only: no weights allocated
        shapes = shapes_of(AutoModelForCausalLM.from_config(config))
    task = load_task(task_file)
    pairs = task.tokenize(AutoTokenizer.from_pretrained(path), {task.align})
    groups = task.resolve_groups(config.num_hidden_layers, config.num_attention_heads)
    conditions = make_conditions(groups, ["per-head"], config.num_attention_heads, seed=0, **settings)
    work = needed_flops(shapes, pairs, conditions, max_new_tokens)
    prompt = round(sum(len(tp.ids["corrupted"]) for tp in pairs) / len(pairs))
    decoded = sum(c.decode for c in conditions) * len(pairs)
    rows = {"decode": max(1, min(batch, decoded)), "prefill": min(batch, len(conditions) * len(pairs)) * prompt}  # as batched
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        throughput = {shape: matmul_throughput(shapes, n, DTYPE, DEVICE) for shape, n in rows.items()}
    finally:
        torch.set_num_threads(before)
    return {
        "flops": sum(part["flops"] for part in work.values()), "parts": {k: v["flops"] for k, v in work.items()},
        "throughput": throughput, "rows": rows, "threads": threads,
        "floor_s": floor_seconds(work, throughput),
    }  # fmt: skip


HEAD_MAP_PROMPTS = 8  # decimal-robust's first prompts: exact patching of every head costs a forward per head and prompt


def head_map_work(repo: str, revision: str, task_file: str = ROBUST_TASK, n_prompts: int = HEAD_MAP_PROMPTS) -> dict:
    """The whole-model map of one checkpoint (headmap.attribution: two forwards and one backward) against exact
    patching of every head alone (the engine's way, teacher-forced), at the same rows: the floating-point work
    each does (torch's FlopCounterMode, the backward included) and its seconds (a second, uncounted run)."""
    from huggingface_hub import snapshot_download
    from torch.utils.flop_counter import FlopCounterMode

    from pythia_sweep.measure.checkpoint import load_model
    from pythia_sweep.config import SweepConfig
    from pythia_sweep.measure.fastpath import pad_id_of
    from pythia_sweep.measure.headmap import attribution, exact_effects
    from pythia_sweep.measure.patching import attention_layout
    from pythia_sweep.task.schema import load_task

    loaded = load_model(snapshot_download(repo, revision=revision), DEVICE, DTYPE)
    task = load_task(task_file)
    label, method = next(iter(SweepConfig(model=repo, task=task_file).methods(task.align).items()))
    pairs = task.tokenize(loaded.tokenizer, {method["align"]})[:n_prompts]
    layout = attention_layout(loaded.model)
    heads = [(layer, head) for layer in range(layout.n_layers) for head in range(layout.n_heads)]
    runs = {
        "attribution": lambda: attribution(loaded.model, layout, pairs, method["align"], pad_id_of(loaded.tokenizer), batch_size=64),
        "exact": lambda: exact_effects(loaded.model, loaded.tokenizer, layout, pairs, heads, label, method, task.success, batch_size=64),
    }  # fmt: skip
    out = {"heads": len(heads), "prompts": len(pairs), "task": task_file}
    for name, run in runs.items():
        with FlopCounterMode(display=False) as counter:
            run()
        start = time.perf_counter()
        run()
        out[name] = {"flops": counter.get_total_flops(), "s": time.perf_counter() - start}
    out["work_ratio"] = out["exact"]["flops"] / out["attribution"]["flops"]
    out["time_ratio"] = out["exact"]["s"] / out["attribution"]["s"]
    return out


def head_map_table(h: dict) -> str:
    target = "met" if h["work_ratio"] >= 20 else "NOT MET"
    return "\n".join([
        f"whole-model head map: all {h['heads']} heads, the first {h['prompts']} prompts of {h['task']}, teacher-forced",
        "| way | work (GFLOP) | time (s) |", "|---|---|---|",
        f"| attribution (two forwards, one backward) | {h['attribution']['flops'] / 1e9:,.1f} | {h['attribution']['s']:.2f} |",
        f"| exact patching, each head alone | {h['exact']['flops'] / 1e9:,.1f} | {h['exact']['s']:.2f} |",
        f"  [{target}] at least 20x less work than exact patching of every head: {h['work_ratio']:.1f}x less work, {h['time_ratio']:.1f}x less time",
    ])  # fmt: skip


def circuit_work(repo: str, revision: str, task_file: str = ROBUST_TASK, n_prompts: int = HEAD_MAP_PROMPTS, top: int = 100) -> dict:
    """A checkpoint's circuit work against the node map's, at the same prompts: every edge by attribution (circuits.
    edge_attribution: two forwards and one backward, every receiver's gradient its own), the node map (headmap.
    attribution), one faithfulness check (circuits.circuit_metric: a clean, a corrupted and a patched run per prompt,
    the top `top` edges kept) and the whole search for a circuit (circuits.find_circuit: a check per size tried). Work by
    FlopCounterMode, seconds by a second, uncounted run. The prompts' clean and corrupted token ids are cut to their
    common length from the end (edges compare them position by position): the work's shape, not a meaningful circuit."""
    import dataclasses

    from huggingface_hub import snapshot_download
    from torch.utils.flop_counter import FlopCounterMode

    from pythia_sweep.measure.checkpoint import load_model
    from pythia_sweep.measure.circuits import circuit_metric, edge_attribution, faithfulness, find_circuit, graph_of
    from pythia_sweep.config import SweepConfig
    from pythia_sweep.measure.fastpath import pad_id_of
    from pythia_sweep.measure.headmap import attribution
    from pythia_sweep.measure.patching import attention_layout
    from pythia_sweep.task.schema import load_task

    loaded = load_model(snapshot_download(repo, revision=revision), DEVICE, DTYPE)
    task = load_task(task_file)
    _, method = next(iter(SweepConfig(model=repo, task=task_file).methods(task.align).items()))
    pairs = task.tokenize(loaded.tokenizer, {method["align"]})[:n_prompts]
    even = [dataclasses.replace(tp, ids={side: tp.ids[side][-min(map(len, tp.ids.values())):] for side in tp.ids}) for tp in pairs]
    pad_id, layout, graph = pad_id_of(loaded.tokenizer), attention_layout(loaded.model), graph_of(loaded.model)
    scores = edge_attribution(loaded.model, even, pad_id, batch_size=64)
    order = [int(i) for i in torch.argsort(scores.abs().flatten(), descending=True) if graph.mask().flatten()[i]][:top]
    kept = torch.zeros(graph.mask().numel(), dtype=torch.bool)
    kept[order] = True
    checks = []

    def search():
        checks.clear()
        return find_circuit(scores, graph.mask(), lambda k: checks.append(1) or faithfulness(circuit_metric(loaded.model, even, k, pad_id)))

    runs = {
        "edges": lambda: edge_attribution(loaded.model, even, pad_id, batch_size=64),
        "nodes": lambda: attribution(loaded.model, layout, even, method["align"], pad_id, batch_size=64),
        "check": lambda: circuit_metric(loaded.model, even, kept.view(graph.mask().shape), pad_id),
        "search": search,
    }
    out = {"edges_possible": int(graph.mask().sum()), "prompts": len(even), "tokens": len(even[0].ids["clean"]), "task": task_file, "top": top}
    for name, run in runs.items():
        with FlopCounterMode(display=False) as counter:
            run()
        start = time.perf_counter()
        run()
        out[name] = {"flops": counter.get_total_flops(), "s": time.perf_counter() - start}
    out["checks_in_search"] = len(checks)
    return out


def circuit_table(c: dict) -> str:
    rows = (("every edge by attribution (two forwards, one backward)", "edges"), ("the node map: every head by attribution", "nodes"),
            (f"one faithfulness check (top {c['top']} edges kept; three runs per prompt)", "check"),
            (f"the search for a circuit ({c['checks_in_search']} checks)", "search"))  # fmt: skip
    return "\n".join([f"circuits: {c['edges_possible']} edges, the first {c['prompts']} prompts of {c['task']} ({c['tokens']} tokens each)",
                      "| work | GFLOP | time (s) |", "|---|---|---|",
                      *(f"| {label} | {c[key]['flops'] / 1e9:,.1f} | {c[key]['s']:.2f} |" for label, key in rows),
                      f"  edge attribution costs {c['edges']['flops'] / c['nodes']['flops']:.2f}x the node map's work"])  # fmt: skip


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
        results = {"machine": _machine(), key: work(repo, revisions[0])}
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
        results = {"machine": _machine(), "checkpoints": len(revisions), "whole_process": whole, "startup": startup}
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
    seed_rows = _rows(SEED_TASK, shape, single_heads=False, null_count=0)
    per = {
        "direct": mean(direct), "seed": seed["per_checkpoint"], "seed_warm": seed["warm_per_checkpoint"],
        "robust": robust["per_checkpoint"], "floor": mean(floor(repo, revisions, seed_rows)),
        "gen_floor": mean(floor(repo, revisions, seed_rows, new_tokens=20)),
        "robust_floor": mean(floor(repo, revisions, _rows(ROBUST_TASK, shape, single_heads=True, null_count=20))),
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
        "machine": _machine(), "whole_process": whole, "startup": startup,
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


def _machine() -> str:
    device = DEVICE.type
    return f"{platform.machine()}, {os.cpu_count()} cores, {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")


def startup_table(r: dict) -> str:
    """Where a short sweep's start-up goes, part by part, with Ray and without; and the whole-process ratio."""
    w = r["whole_process"]
    ray_parts, here_parts = r["startup"]["ray"]["startup_parts"], r["startup"]["in-process"]["startup_parts"]
    lines = [
        f"the methodology as a whole process ({r['checkpoints']} checkpoints): direct {w['direct']:.1f} s, "
        f"`python -m jobs.sweep jobs/configs/methodology.toml` {w['project']:.1f} s: {w['ratio']:.1f}x",
        "", "| start-up part (s) | with Ray (workers auto) | in this process (workers 0) |", "|---|---|---|",
    ]
    for part in dict.fromkeys([*ray_parts, *here_parts]):
        shown = [f"{x[part]:.2f}" if part in x else "-" for x in (ray_parts, here_parts)]
        lines.append(f"| {part} | {shown[0]} | {shown[1]} |")
    totals = [r["startup"][k]["startup"] for k in ("ray", "in-process")]
    lines.append(f"| start-up, whole (wall - checkpoints x warm cost) | {totals[0]:.2f} | {totals[1]:.2f} |")
    return "\n".join(lines)


def table(r: dict) -> str:
    p = r["per_checkpoint_s"]
    lines = [
        f"machine: {r['machine']}; {r['checkpoints']} checkpoints ({r['shape']})",
        "| approach | s / checkpoint | speed-up vs direct | vs floor |",
        "|---|---|---|---|",
    ]
    for name in ("direct", "seed", "seed_warm", "robust", "floor", "gen_floor", "robust_floor"):
        lines.append(f"| {name} | {p[name]:.2f} | {p['direct'] / p[name]:.2f}x | {p[name] / p['floor']:.2f}x |")
    lines += ["", "| stage (mean s / checkpoint) | start-up (once) | fetch | load | compute | waiting for weights | log | workers | peak RSS / worker |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("seed", "robust"):
        s, x = r[name]["stages"], r[name]
        lines.append(f"| {name} | {x['startup']:.1f} | {s['fetch']:.2f} | {s['load']:.2f} | {s['compute']:.2f} | {s['wait_for_weights']:.2f} | {s['log']:.2f} | {x['workers']} | {x['peak_rss_mb']:.0f} MB |")
    f = r["hardware_floor"]
    t = f["robust"]
    lines += ["", f"hardware floor: the work each preset needs at the matmul throughput this device sustains on the model's shapes, "
              f"{t['threads']} thread(s) as a worker runs",
              "| preset | work needed (GFLOP / checkpoint) | GFLOP/s at a decoding step (rows) | GFLOP/s at a prefill (rows) | floor (s) | compute (s / checkpoint) | share of the floor achieved |",
              "|---|---|---|---|---|---|---|"]
    for name in ("seed", "robust"):
        x = f[name]
        lines.append(f"| {name} | {x['flops'] / 1e9:,.0f} | {x['throughput']['decode'] / 1e9:.1f} ({x['rows']['decode']}) | "
                     f"{x['throughput']['prefill'] / 1e9:.1f} ({x['rows']['prefill']}) | {x['floor_s']:.2f} | {r[name]['stages']['compute']:.2f} | {x['achieved']:.0%} |")
    lines += ["", "targets:"]
    for name, ok in r["targets"].items():
        lines.append(f"  [{'met' if ok else 'NOT MET'}] {name}: {r['bounds'][name]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
