"""A Hub server on 127.0.0.1 for tests, and a way to run pythia_sweep online against it.

Why a child process: huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_CACHE once, when it is
imported (constants.py), and tests/conftest.py sets HF_HUB_OFFLINE=1 for the whole session before anything
imports it. Patching `huggingface_hub.constants` afterwards would have to reach every copy of those values
(the resolve-URL template built from the endpoint at import, `pythia_sweep.hub.revisions`' own import of
HF_HUB_CACHE, transformers' copies) and put them all back for the offline tests sharing the process; a
copy missed would send a request to huggingface.co. A child started with the environment a user would set
runs exactly the user's path with nothing patched. The server stays in the test process, so a test can
inject faults and count the bytes it served while the child runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.hub_server import HubServer

REPO = Path(__file__).resolve().parents[1]
MARK = "@@online-result@@"
RUNNER = f"""
import json, sys, time
namespace = {{}}
start = time.perf_counter()
try:
    exec(compile(sys.argv[1], "<online test>", "exec"), namespace)
    out = {{"result": namespace.get("result")}}
except Exception as error:
    out = {{"error_type": type(error).__name__, "error": str(error)}}
out["wall_s"] = time.perf_counter() - start
print({MARK!r} + json.dumps(out, default=str))
"""


def online_env(hub: HubServer, cache: str | Path) -> dict[str, str]:
    """The environment of a user online against `hub`, with `cache` as the Hugging Face cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(Path(cache).parent / "hf-home"),  # no stored token, no other cache
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    return env


def run_online(hub: HubServer, cache: str | Path, code: str, timeout: float = 180) -> dict:
    """Run `code` in a fresh Python online against `hub`, with `cache` as its Hugging Face cache.

    The code leaves what the test needs in a variable `result` (JSON-able). Returns {"result": ...} or, when
    the code raised, {"error_type": ..., "error": ...}; "wall_s" is how long the code took.
    """
    env = online_env(hub, cache)
    done = subprocess.run([sys.executable, "-c", RUNNER, code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise AssertionError(f"online child failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(MARK):])


@pytest.fixture
def hub(hub_cache):
    """The session's test fixtures (tests/conftest.py's cache) served as-is on a free 127.0.0.1 port."""
    with HubServer(hub_cache) as server:
        yield server
