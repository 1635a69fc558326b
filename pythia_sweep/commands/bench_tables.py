"""The bench's tables (commands/bench.py), each from the results it writes to JSON: per checkpoint against the direct
way and the floors, with the stages, the hardware floor and the targets (`table`); where a short sweep's start-up goes
(`startup_table`); the head map's and the circuits' work (`head_map_table`, `circuit_table`). The targets say whether
each is met (`TARGETS`) and what bounds it on this machine (`BOUNDS`, `break_even`).
"""

from __future__ import annotations

import math

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


def head_map_table(h: dict) -> str:
    target = "met" if h["work_ratio"] >= 20 else "NOT MET"
    return "\n".join([
        f"whole-model head map: all {h['heads']} heads, the first {h['prompts']} prompts of {h['task']}, teacher-forced",
        "| way | work (GFLOP) | time (s) |", "|---|---|---|",
        f"| attribution (two forwards, one backward) | {h['attribution']['flops'] / 1e9:,.1f} | {h['attribution']['s']:.2f} |",
        f"| exact patching, each head alone | {h['exact']['flops'] / 1e9:,.1f} | {h['exact']['s']:.2f} |",
        f"  [{target}] at least 20x less work than exact patching of every head: {h['work_ratio']:.1f}x less work, {h['time_ratio']:.1f}x less time",
    ])  # fmt: skip


def circuit_table(c: dict) -> str:
    rows = (("every edge by attribution (two forwards, one backward)", "edges"), ("the node map: every head by attribution", "nodes"),
            (f"one faithfulness check (top {c['top']} edges kept; three runs per prompt)", "check"),
            (f"the search for a circuit ({c['checks_in_search']} checks)", "search"))  # fmt: skip
    return "\n".join([f"circuits: {c['edges_possible']} edges, the first {c['prompts']} prompts of {c['task']} ({c['tokens']} tokens each)",
                      "| work | GFLOP | time (s) |", "|---|---|---|",
                      *(f"| {label} | {c[key]['flops'] / 1e9:,.1f} | {c[key]['s']:.2f} |" for label, key in rows),
                      f"  edge attribution costs {c['edges']['flops'] / c['nodes']['flops']:.2f}x the node map's work"])  # fmt: skip
