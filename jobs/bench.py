"""Benchmark: the methodology written plainly vs the project vs the floor, on the same checkpoints.

    make bench                                   # 4 checkpoints shaped like Pythia-160M (random weights, fp16)
    python -m jobs.bench --checkpoints 2 --smoke # two tiny checkpoints: what CI runs so the command never rots

The checkpoints have Pythia-160M's config and size on disk (float16 safetensors, ~325 MB each) and are
published as step* revisions of a local Hugging Face cache under bench/ (git-ignored). Measured, per checkpoint:
  direct   per checkpoint from_pretrained, then each of 3 conditions x 15 trials its own generate call
           (20 new tokens) with an upstream-style hook: the methodology, written plainly
  seed     the project's full sweep (Ray, MLflow, report) with the seed preset, per-head method only
  robust   the same with the robust preset plus single-head and 20-subset null conditions
  floor    loading the weights plus one batched forward pass over the distinct conditions and prompts
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path("bench")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_CACHE", str((BENCH_DIR / "hf").resolve()))

import torch  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.float16 if DEVICE.type == "cuda" else torch.float32  # as the project picks with dtype="auto"

PYTHIA_160M = dict(  # EleutherAI/pythia-160m's config.json
    vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
    layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
)  # fmt: skip
TINY = dict(PYTHIA_160M, vocab_size=512, hidden_size=96, num_hidden_layers=8, intermediate_size=256)
TARGETS = {
    "seed at least 10x faster per checkpoint than direct": lambda r: r["direct"] / r["seed"] >= 10,
    "seed within 1.5x of the floor per checkpoint (warm)": lambda r: r["seed_warm"] / r["floor"] <= 1.5,
    "robust+per-head+null within 3x of seed per checkpoint": lambda r: r["robust"] / r["seed"] <= 3,
}


def make_checkpoints(repo: str, n: int, shape: dict) -> list[str]:
    """N revisions with the given config and random weights, saved in float16 in the Hub's layout."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from pythia_sweep.demo_family import build_tokenizer, corpus
    from pythia_sweep.hub_cache import repo_folder, save_revision

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

    from pythia_sweep.scoring import check_bug_fixed

    clean, buggy = "Which is bigger: 9.8 or 9.11?", "Q: Which is bigger: 9.8 or 9.11?\nA:"
    times = []
    for revision in revisions:
        start = time.perf_counter()
        path = snapshot_download(repo, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPE).to(DEVICE).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        dense = model.gpt_neox.layers[6].attention.dense
        saved = {}
        handle = dense.register_forward_hook(lambda m, a, out: saved.__setitem__("clean", out.detach()))
        with torch.no_grad():
            model(**tokenizer(clean, return_tensors="pt").to(DEVICE))
        handle.remove()
        head = model.config.hidden_size // model.config.num_attention_heads
        for heads in ([], [0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]):
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
                check_bug_fixed(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :]))
        times.append(time.perf_counter() - start)
        del model
    return times


def floor(repo: str, revisions: list[str]) -> list[float]:
    """Loading the weights plus one batched forward over the distinct conditions and prompts."""
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pythia_sweep.evaluation import _pad
    from pythia_sweep.prompts import make_prompts

    times = []
    for revision in revisions:
        start = time.perf_counter()
        path = snapshot_download(repo, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPE).to(DEVICE).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        (pair,) = make_prompts("seed")
        rows = [pair.buggy, pair.clean, pair.buggy, pair.buggy]  # baseline, clean, even, odd
        ids, mask = _pad([tokenizer(t)["input_ids"] for t in rows], 0, left=False, device=DEVICE)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del model
    return times


def project(repo: str, revisions: list[str], store: str, reports: Path, **settings) -> dict:
    """The full sweep (Ray, MLflow, report); wall time per checkpoint, warm throughput, stage breakdown."""
    import ray

    from pythia_sweep.config import SweepConfig
    from pythia_sweep.report import build_report
    from pythia_sweep.sweep import run_sweep
    from pythia_sweep.tracking import Tracker

    config = SweepConfig(model=repo, checkpoints=tuple(revisions), method="per-head", **settings)
    start = time.perf_counter()
    result = run_sweep(config, tracking_uri=store, progress=False)
    build_report(result.parent_run_id, tracking_uri=store, reports_dir=reports)
    wall = time.perf_counter() - start
    ray.shutdown()
    tracker = Tracker(store)
    runs = sorted(tracker.checkpoint_runs(result.parent_run_id), key=lambda r: r.info.start_time)
    arrivals = [r.info.start_time / 1000 for r in runs]
    records = tracker.load_records(result.parent_run_id)
    mean = lambda key: sum(r["timings"].get(key, 0) for r in records) / len(records)  # noqa: E731
    return {
        "per_checkpoint": wall / len(revisions),
        "warm_per_checkpoint": (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) if len(arrivals) > 1 else wall,
        "stages": {"fetch": mean("fetch_s"), "load": mean("load_s"), "compute": mean("compute_s"),
                   "wait_for_weights": mean("wait_for_weights_s"), "log": result.log_s / len(revisions)},  # fmt: skip
        "peak_rss_mb": max(r["worker"]["peak_rss_mb"] for r in records),
        "failed": result.failed,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=4, help="number of checkpoints (default 4)")
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoints instead of Pythia-160M-shaped ones")
    parser.add_argument("--out", default=str(BENCH_DIR / "results.json"), help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.checkpoints < 2:
        parser.error("--checkpoints must be at least 2 (warm throughput needs two)")
    shape, repo = (TINY, "pythia-sweep-bench/tiny") if args.smoke else (PYTHIA_160M, "pythia-sweep-bench/pythia-160m-shaped")
    device = DEVICE.type
    print(f"making {args.checkpoints} checkpoints shaped like {'a tiny model' if args.smoke else 'Pythia-160M'} ...", flush=True)
    revisions = make_checkpoints(repo, args.checkpoints, shape)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.out).parent.resolve()  # a fresh store per run: a rerun must not resume the last one
    store, reports = f"sqlite:///{workdir / f'mlflow-{int(time.time())}.db'}", workdir / "reports"
    print("direct way ...", flush=True)
    direct = direct_way(repo, revisions)
    print("project, seed preset ...", flush=True)
    seed = project(repo, revisions, store, reports, preset="seed", single_heads=False, null_subsets=0)
    print("project, robust preset + per-head + null ...", flush=True)
    robust = project(repo, revisions, store, reports, preset="robust", single_heads=True, null_subsets=20)
    print("floor ...", flush=True)
    low = floor(repo, revisions)
    per = {
        "direct": sum(direct) / len(direct), "seed": seed["per_checkpoint"], "seed_warm": seed["warm_per_checkpoint"],
        "robust": robust["per_checkpoint"], "floor": sum(low) / len(low),
    }  # fmt: skip
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {device}"
        + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""),
        "checkpoints": len(revisions), "shape": "tiny" if args.smoke else "pythia-160m",
        "per_checkpoint_s": per, "seed": seed, "robust": robust,
        "targets": {name: bool(check(per)) for name, check in TARGETS.items()},
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"written to {args.out}")
    return 0


def table(r: dict) -> str:
    p = r["per_checkpoint_s"]
    lines = [
        f"machine: {r['machine']}; {r['checkpoints']} checkpoints ({r['shape']})",
        "| approach | s / checkpoint | vs direct | vs floor |",
        "|---|---|---|---|",
    ]
    for name in ("direct", "seed", "seed_warm", "robust", "floor"):
        lines.append(f"| {name} | {p[name]:.2f} | {p['direct'] / p[name]:.1f}x faster | {p[name] / p['floor']:.2f}x |")
    lines += ["", "| stage (mean s / checkpoint) | fetch | load | compute | waiting for weights | log | peak RSS / worker |", "|---|---|---|---|---|---|---|"]
    for name in ("seed", "robust"):
        s = r[name]["stages"]
        lines.append(f"| {name} | {s['fetch']:.2f} | {s['load']:.2f} | {s['compute']:.2f} | {s['wait_for_weights']:.2f} | {s['log']:.2f} | {r[name]['peak_rss_mb']:.0f} MB |")
    lines += ["", "targets:"] + [f"  [{'met' if ok else 'NOT MET'}] {name}" for name, ok in r["targets"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
