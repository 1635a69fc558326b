"""The whole pipeline offline: build the demo family if absent, sweep it, write the report.

    make demo          (or: HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.demo)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# Hugging Face reads these at import time: the demo always runs from the project-local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_CACHE", str(Path(".cache/hf/hub").resolve()))

from jobs import sweep  # noqa: E402
from pythia_sweep.testing.demo_family import family_exists, train_family  # noqa: E402


def main(argv=None) -> int:
    start = time.perf_counter()
    cache = os.environ["HF_HUB_CACHE"]
    if not family_exists(cache):
        print(f"Training the demo family into {cache} (a few minutes, once) ...")
        train_family(cache)
    code = sweep.main(["jobs/configs/demo.toml", *(argv if argv is not None else sys.argv[1:])])
    print(f"demo finished in {time.perf_counter() - start:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
