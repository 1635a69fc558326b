"""What the bench times (commands/bench.py), on checkpoints it makes: Pythia-160M's shape (or a tiny one) with random
weights, published as step* revisions of a local Hugging Face cache under bench/ (`make_checkpoints`). Per checkpoint:
the methodology written plainly (`direct_way`), the project's full sweep (`project`), the methodology as a user runs it,
each way a fresh process (`whole_process`), and the floors: loading plus one batched forward over a task's distinct
rows (`floor`, `task_rows`) and the hardware floor, the work a preset needs at this device's matmul throughput
(`hardware_floor`). Importing this module points the Hub at that local cache, offline, before torch is imported.
"""

from __future__ import annotations

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

from pythia_sweep.measure.loading import pick_dtype  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = pick_dtype("auto", DEVICE)  # as the project picks with dtype="auto"

PYTHIA_160M = dict(  # EleutherAI/pythia-160m's config.json
    vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
    layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
)  # fmt: skip
TINY = dict(PYTHIA_160M, vocab_size=512, hidden_size=96, num_hidden_layers=8, intermediate_size=256)


def machine() -> str:
    """The machine the numbers come from, as the results say it: architecture, cores, device."""
    device = DEVICE.type
    return f"{platform.machine()}, {os.cpu_count()} cores, {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")


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


def load_plainly(repo: str, revision: str):
    """A revision's model and tokenizer as a user's own script loads them (no skeleton kept, no hashes checked): the
    direct way's and the floor's load, which their times include."""
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = snapshot_download(repo, revision=revision)
    return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPE).to(DEVICE).eval(), AutoTokenizer.from_pretrained(path)


def direct_way(repo: str, revisions: list[str]) -> list[float]:
    """The methodology as written: one generate call per trial, a hook slicing the post-projection output."""
    from pythia_sweep.task.schema import load_task

    task = load_task(SEED_TASK)  # the methodology's pair and its success check, from the task file
    (pair,) = task.pairs()
    clean, buggy = pair.clean, pair.corrupted
    times = []
    for revision in revisions:
        start = time.perf_counter()
        model, tokenizer = load_plainly(repo, revision)
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


def task_rows(task_file: str, shape: dict, **settings) -> list[str]:
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
    from transformers import DynamicCache

    from pythia_sweep.measure.batch import pad

    times = []
    for revision in revisions:
        start = time.perf_counter()
        model, tokenizer = load_plainly(repo, revision)
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
        "direct": [sys.executable, "-c", f"from pythia_sweep.commands.bench_work import direct_way; direct_way({repo!r}, {revisions!r})"],
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
