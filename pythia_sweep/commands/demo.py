"""The whole pipeline offline, as a story: a tiny model family that learns induction during training, swept
for when that happens (patching + a second line of evidence), the step bracketed by bisection, and the
decimal question asked of the same family for comparison.

    make demo          (or: HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.demo)

Steps: train the demo family into .cache/hf/hub if absent (once); sweep tasks/induction-demo.toml over the
demo config's checkpoints; print the heads that move the answer most (from the single-head map); bisect between
neighbouring saved revisions (`refine`); print the verdict of the report it leaves (rebuilt with the probes);
sweep tasks/decimal-robust.toml and print its verdict; sweep tasks/induction-discover.toml, whose group is found
at the final checkpoint rather than written, and print its verdict; find the circuit of tasks/induction-kcomp.toml at six
checkpoints (`jobs.circuits`) and print how it changes. The reports' paths are printed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

# Hugging Face reads these at import time: the demo always runs from the project-local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_CACHE", str(Path(".cache/hf/hub").resolve()))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the demo's local Ray stays on 127.0.0.1

CONFIG = "jobs/configs/demo.toml"
INDUCTION, DECIMAL, DISCOVER = "tasks/induction-demo.toml", "tasks/decimal-robust.toml", "tasks/induction-discover.toml"
KCOMP = "tasks/induction-kcomp.toml"
CIRCUIT_STEPS = ("step0", "step192", "step256", "step288", "step320", "step448")


def carrying_heads(report, k: int = 3) -> list[tuple[int, int, float]]:
    """The single heads whose patching moves the answer's log-prob difference most over the baseline, at the last
    analysed checkpoint: (layer, head, gain in nats), read from the long table's layer and head columns."""
    import polars as pl

    last = report.frame.filter(pl.col("analysed"))["revision"][-1]
    at = report.long.filter((pl.col("revision") == last) & (pl.col("metric") == "logprob_diff"))
    base = at.filter(pl.col("kind") == "baseline")["value"].item()
    heads = at.filter(pl.col("kind") == "head").sort("value", descending=True).head(k)
    return [(row["layer"], row["head"], row["value"] - base) for row in heads.iter_rows(named=True)]


class Indented:
    """A text stream that writes to `out` with every line indented: a command's own lines, shown under a demo step as
    they come (not held back until it ends)."""

    def __init__(self, out, indent: str = "   "):
        self.out, self.indent, self.at_line_start = out, indent, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            self.out.write((self.indent if self.at_line_start and piece.strip() else "") + piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def said(report) -> None:
    """The report's verdict as it states it (its first line the answer, then one labelled fact a line), and where to look."""
    print("   verdict (as the report states it):\n" + "\n".join(f"     {line}" for line in report.verdict.splitlines()))
    print(f"   {report.mlflow_link}")
    print(f"   report: {report.html_path}", flush=True)


def main(argv=None) -> int:
    from pythia_sweep.commands.cli import parser_for

    parser_for("jobs.demo", __doc__).parse_args(argv)  # --help; the demo takes no options
    start = time.perf_counter()
    from pythia_sweep.hub.revisions import published_revisions
    from pythia_sweep.config import load_config
    from pythia_sweep.run.refine import refine_sweep
    from pythia_sweep.report.build import build_report
    from pythia_sweep.run.driver import run_sweep
    from pythia_sweep.task.schema import load_task
    from pythia_sweep.demo.demo_family import family_exists, train_family
    from pythia_sweep.stats import head_label

    cache = os.environ["HF_HUB_CACHE"]
    if not family_exists(cache):
        print(f"Training the demo family into {cache} (once) ...", flush=True)
        train_family(cache)
        print(f"  trained in {time.perf_counter() - start:.0f}s", flush=True)

    config = load_config(CONFIG, task=INDUCTION)
    task = load_task(INDUCTION)
    published = published_revisions(config.model)
    print(f"\n1. {task.question}  ({config.model}, {INDUCTION})\n"
          "   expected: the family's induction heads form in a phase change near step 300, so the headline leaps there, in\n"
          "   the middle half of its 448 steps; layer 1 stands out among 40 random 8-head sets of both layers", flush=True)  # fmt: skip
    result = run_sweep(config, task, published=published)
    report = build_report(result.parent_run_id, tracking_uri=result.tracking_uri)
    summary = report.summary
    heads = ", ".join(f"{head_label(layer, head)} ({gain:+.2f} nats)" for layer, head, gain in carrying_heads(report))
    print(f"   heads that move the answer most (layer.head, patched alone at the last checkpoint): {heads}")

    point = summary["emergence_point"]
    if point and point.get("previous_revision"):
        bracket = refine_sweep(config, task, published, list(report.records), task.headline.name, task.headline.threshold,
                               tracking_uri=result.tracking_uri)  # fmt: skip
        done = (f"measured {len(bracket.fetched)} more ({', '.join(bracket.fetched)}), down to neighbouring saved revisions"
                if bracket.fetched else "they are neighbouring saved revisions already: nothing more to measure")  # fmt: skip
        print(f"\n2. refine: the mean first crosses between {point['previous_revision']} and {point['revision']}; {done}.\n"
              "   The verdict's `when` below is over prompt resamples and the checkpoint grid, so it may open earlier", flush=True)  # fmt: skip
        report = build_report(result.parent_run_id, tracking_uri=result.tracking_uri)  # the probes are in the sweep now
    said(report)

    decimal = load_task(DECIMAL)
    print(f"\n3. {decimal.question}  ({DECIMAL}, same family)\n"
          "   expected on this family: it learns the bug (Q: ... A: prompts answered the wrong way) and nothing trained to\n"
          "   repair it, so no emergence; the verdict can say so only where the model answers the plain question", flush=True)  # fmt: skip
    result = run_sweep(load_config(CONFIG, task=DECIMAL), decimal, published=published)
    report = build_report(result.parent_run_id, tracking_uri=result.tracking_uri)
    said(report)

    found = load_task(DISCOVER)
    print(f"\n4. {found.question}  ({DISCOVER}, same family: no head written in the task)\n"
          "   expected: two layer-1 heads found at step448 on half of the prompts, measured on the other half; they emerge\n"
          "   where step 1's layer does, and stand out among 40 of the 91 pairs of the other 14 heads", flush=True)  # fmt: skip
    result = run_sweep(load_config(CONFIG, task=DISCOVER), found, published=published)
    report = build_report(result.parent_run_id, tracking_uri=result.tracking_uri)
    said(report)
    from pythia_sweep.commands.circuits import main as circuits

    print(f"\n5. The circuit at {', '.join(CIRCUIT_STEPS)}  ({KCOMP}: the word before the answer moved, so what changes is\n"
          "   where the induction head attends, its key)\n"
          "   expected: no circuit at step0 (nothing to explain); once induction forms, the previous-token head's edge into\n"
          "   layer 1 (a0.H->a1) in the circuit, and patched alone it recovers most of the gap", flush=True)  # fmt: skip
    with contextlib.redirect_stdout(Indented(sys.stdout)):  # its lines under step 5, as the other steps' are
        circuits([CONFIG, "--task", KCOMP, "--revisions", *CIRCUIT_STEPS])
    print(f"\ndemo finished in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
