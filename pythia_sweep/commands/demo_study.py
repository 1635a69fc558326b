"""A study over seeds, offline: the demo family trained with three more seeds, swept as one study, reported side by
side (each run's emergence step with its interval, the spread, the heads in each run).

    make demo-study      (or: HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.demo_study)

Trains pythia-sweep-demo/tiny-neox-seed1..3 into .cache/hf/hub if absent (once, about 25 s each here), then runs
`python -m jobs.sweep jobs/configs/demo-study.toml`: one driver over every (seed, checkpoint) pair, each seed its own
MLflow parent run tagged study.demo-seeds, and the study's report in reports/study-demo-seeds/.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_CACHE", str(Path(".cache/hf/hub").resolve()))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the demo's local Ray stays on 127.0.0.1

CONFIG = "jobs/configs/demo-study.toml"


def main(argv=None) -> int:
    start = time.perf_counter()
    from pythia_sweep.commands.sweep import main as sweep
    from pythia_sweep.demo.demo_family import family_exists, train_family
    from pythia_sweep.run.study import load_study

    study = load_study(CONFIG)
    cache = os.environ["HF_HUB_CACHE"]
    for seed, model in enumerate(study.models, start=1):
        if not model.endswith(f"seed{seed}"):
            raise SystemExit(f"{CONFIG}: expected the demo family's seed{seed}, found {model}")
        if not family_exists(cache, model):
            print(f"Training {model} (seed {seed}) into {cache} (once) ...", flush=True)
            train_family(cache, model, seed=seed)
    code = sweep([CONFIG, *(argv or [])])
    print(f"\ndemo study finished in {time.perf_counter() - start:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
