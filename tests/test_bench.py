"""`make bench` in miniature (two tiny checkpoints), so the command never rots. Not a timed test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_smoke_prints_the_table_with_the_three_targets(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "bench" / "results.json"
    done = subprocess.run([sys.executable, "-m", "jobs.bench", "--smoke", "--checkpoints", "2", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    per = results["per_checkpoint_s"]
    assert set(per) == {"direct", "seed", "seed_warm", "robust", "floor", "gen_floor", "robust_floor"}
    assert all(v > 0 for v in per.values())
    assert per["gen_floor"] > per["floor"]  # 19 more forward steps than the floor's one
    assert len(results["targets"]) == 3 and set(results["bounds"]) == set(results["targets"])
    assert "targets:" in done.stdout and "| direct |" in done.stdout and "start-up (once)" in done.stdout
    assert results["seed"]["startup"] >= 0 and results["seed"]["workers"] >= 1
    assert results["seed"]["failed"] == [] and results["robust"]["failed"] == []
    floor = results["hardware_floor"]
    assert floor["robust"]["flops"] > floor["seed"]["flops"] > 0  # 37 conditions x 48 prompts vs 5 x 1
    assert all(0 < floor[p]["achieved"] and floor[p]["floor_s"] > 0 for p in ("seed", "robust"))
    assert "hardware floor: the work each preset needs" in done.stdout and "share of the floor achieved" in done.stdout
    # issue 25: start-up split into its parts, with Ray and in this process, and the whole-process ratio
    with_ray, here = (results["startup"][k]["startup_parts"] for k in ("ray", "in-process"))
    assert {"ray start", "worker processes (start, imports)", "tracking store (open, parent run)", "report (build, write)"} <= set(with_ray)
    assert "ray start" not in here and {"pre-flight (config, tokenizer, task)", "report (build, write)"} <= set(here)
    assert all(v >= 0 for v in with_ray.values()) and results["startup"]["in-process"]["workers"] == 1
    head_map = results["head_map"]  # issue 21: the map's work against exact patching of every head, at the same rows
    assert head_map["heads"] == 8 * 12 and head_map["attribution"]["flops"] > 0 and head_map["exact"]["flops"] > head_map["attribution"]["flops"]
    assert f"{head_map['work_ratio']:.1f}x less work" in done.stdout  # the table says the JSON's ratio
    assert "whole-model head map: all 96 heads" in done.stdout and "less work than exact patching of every head" in done.stdout
    circuits = results["circuits"]  # issue 34: edge attribution, a faithfulness check and the search, against the node map
    # 8 parallel layers x 12 heads: emb feeds 17 receivers; layer L's 12 heads and MLP each feed the 2 (7 - L) later ones and the logits
    assert circuits["edges_possible"] == 17 + 13 * sum(2 * (7 - layer) + 1 for layer in range(8)) == 849
    assert 0 < circuits["edges"]["flops"] < 4 * circuits["nodes"]["flops"]
    assert circuits["search"]["flops"] == pytest.approx(circuits["checks_in_search"] * circuits["check"]["flops"], rel=0.01)  # each check, one run set
    assert "every edge by attribution (two forwards, one backward)" in done.stdout and "x the node map's work" in done.stdout
    whole = results["whole_process"]
    assert whole["direct"] > 0 and whole["project"] > 0 and f"{whole['project']:.1f} s: {whole['ratio']:.1f}x" in done.stdout
    assert "| start-up part (s) | with Ray (workers auto) | in this process (workers 0) |" in done.stdout


def test_break_even_counts_checkpoints_until_start_up_is_paid_for():
    from pythia_sweep.commands.bench_tables import break_even

    assert break_even(direct=20.0, startup=10.0, warm=1.0) == 10  # (10 + 10 * 1) / 10 = 2.0 = 20 / 10
    assert break_even(direct=20.0, startup=0.0, warm=1.0) == 1
    assert break_even(direct=20.0, startup=10.0, warm=2.5) is None  # never: the warm cost alone is too high


def test_the_bench_tables_say_a_fixed_input_as_computed_by_hand():
    """The tables `make bench` prints, on numbers fixed here: ratios and units worked out by hand, not by the code."""
    from pythia_sweep.commands.bench_tables import circuit_table, head_map_table

    head_map = {"heads": 144, "prompts": 8, "task": "tasks/decimal-robust.toml", "attribution": {"flops": 150e9, "s": 0.75},
                "exact": {"flops": 4500e9, "s": 15.0}, "work_ratio": 30.0, "time_ratio": 20.0}  # fmt: skip
    assert head_map_table(head_map).splitlines() == [
        "whole-model head map: all 144 heads, the first 8 prompts of tasks/decimal-robust.toml, teacher-forced",
        "| way | work (GFLOP) | time (s) |", "|---|---|---|",
        "| attribution (two forwards, one backward) | 150.0 | 0.75 |",
        "| exact patching, each head alone | 4,500.0 | 15.00 |",
        "  [met] at least 20x less work than exact patching of every head: 30.0x less work, 20.0x less time",
    ]  # fmt: skip
    assert "[NOT MET]" in head_map_table(head_map | {"work_ratio": 19.9})
    circuits = {"edges_possible": 1897, "prompts": 8, "tokens": 12, "task": "t.toml", "top": 100, "checks_in_search": 22,
                "edges": {"flops": 200e9, "s": 1.5}, "nodes": {"flops": 125e9, "s": 0.8}, "check": {"flops": 180e9, "s": 2.5},
                "search": {"flops": 3960e9, "s": 55.0}}  # fmt: skip
    assert circuit_table(circuits).splitlines() == [
        "circuits: 1897 edges, the first 8 prompts of t.toml (12 tokens each)",
        "| work | GFLOP | time (s) |", "|---|---|---|",
        "| every edge by attribution (two forwards, one backward) | 200.0 | 1.50 |",
        "| the node map: every head by attribution | 125.0 | 0.80 |",
        "| one faithfulness check (top 100 edges kept; three runs per prompt) | 180.0 | 2.50 |",
        "| the search for a circuit (22 checks) | 3,960.0 | 55.00 |",
        "  edge attribution costs 1.60x the node map's work",
    ]  # fmt: skip
