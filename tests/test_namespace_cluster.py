"""The cluster as users start it: docs/cluster.md's commands, read from the page and run as written, one Ray node
in each of two network namespaces this test makes (joined by a veth pair; their addresses exist only inside
them, so nothing leaves). The head runs `ray start --head` and `mlflow server`; the other node joins with
`ray start --address`; the demo sweep is submitted with `ray job submit --working-dir .`, lands on both nodes,
and the report is rebuilt from the tracking server alone. Then a second sweep loses the second node for real:
every process in its namespace killed (SIGKILL) mid-sweep. Needs root (`ip netns`), as CI runs."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import NEOX_REPO, _neox, _tokenizer
from support.servers import BIN

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root and iproute2"),
]
REPO = Path(__file__).resolve().parents[1]
HEAD, NODE = "10.231.0.1", "10.231.0.2"  # addresses of the test's own veth pair, inside its namespaces only
CONFIG = f"jobs/configs/demo.toml --model {NEOX_REPO} --task tasks/decimal-seed.toml --checkpoints step0,step1,step2,step4,step1000"
REVISIONS = ["step0", "step1", "step2", "step4", "step1000"]
LONG_REPO, LONG_STEPS = "tiny-test/neox-long", [2**i for i in range(12)]  # enough that the lost node held work


def documented_commands() -> dict[str, list[str]]:
    """docs/cluster.md's cluster commands by where they run (`head`, `node`, `project`), as written."""
    page = (REPO / "docs" / "cluster.md").read_text()
    block = page.split("<!-- cluster-commands -->\n```bash\n", 1)[1].split("```", 1)[0]
    roles, role = {"head": [], "node": [], "project": []}, None
    for line in block.splitlines():
        if line.startswith("# on the head node"):
            role = "head"
        elif line.startswith("# on every other node"):
            role = "node"
        elif line.startswith("# in the project folder"):
            role = "project"
        elif line.strip():
            roles[role].append(line)
    assert all(roles.values()), roles
    return roles


class Namespaces:
    """Two network namespaces joined by a veth pair, `head` at HEAD and `node` at NODE. Leaving kills every
    process still in them and deletes them (the veth pair goes with them), also when the test failed."""

    def __init__(self):
        tag = f"psw{os.getpid() % 100000}"
        self.names = {"head": f"{tag}h", "node": f"{tag}n"}

    def __enter__(self) -> "Namespaces":
        head, node = self.names["head"], self.names["node"]
        steps = [f"ip netns add {head}", f"ip netns add {node}", f"ip link add {head} type veth peer name {node}",
                 f"ip link set {head} netns {head}", f"ip link set {node} netns {node}",
                 f"ip -n {head} addr add {HEAD}/24 dev {head}", f"ip -n {node} addr add {NODE}/24 dev {node}"]  # fmt: skip
        steps += [f"ip -n {ns} link set {dev} up" for ns in (head, node) for dev in ("lo", ns)]
        try:
            for step in steps:
                subprocess.run(step.split(), check=True, capture_output=True, text=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def pids(self, where: str) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.names[where]], capture_output=True, text=True)
        return [int(p) for p in listed.stdout.split()]

    def kill(self, where: str, wait_s: float = 30) -> None:
        """SIGKILL to every process in the namespace, then until they are gone (reaped)."""
        for pid in self.pids(where):
            with _gone_already():
                os.kill(pid, signal.SIGKILL)
        deadline = time.time() + wait_s
        while self.pids(where) and time.time() < deadline:
            time.sleep(0.2)

    def wait_for_process(self, where: str, title: str, job: subprocess.Popen, timeout: float = 300) -> int | None:
        """The first process in the namespace whose command line (a Ray worker's process title) starts with `title`,
        while `job` runs."""
        deadline = time.time() + timeout
        while time.time() < deadline and job.poll() is None:
            for pid in self.pids(where):
                with _gone_already(), contextlib.suppress(FileNotFoundError):
                    if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                        return pid
            time.sleep(0.05)
        return None

    def popen(self, where: str, command: str, env: dict, cwd: Path, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.names[where], "bash", "-c", command], env=env, cwd=cwd, **kwargs)

    def run(self, where: str, command: str, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(["ip", "netns", "exec", self.names[where], "bash", "-c", command], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def __exit__(self, *exc) -> None:
        for where in self.names:
            self.kill(where)
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class _gone_already:
    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is ProcessLookupError


@pytest.fixture(scope="module")
def long_family(hub_cache, tmp_path_factory) -> str:
    """A tiny GPT-NeoX family of 12 revisions (the shared one has 5): a sweep long enough that a worker killed
    mid-sweep still holds checkpoints."""
    from pythia_sweep.demo.hub_cache import save_revision

    tok, work = _tokenizer(), tmp_path_factory.mktemp("long-family")
    for i, step in enumerate(LONG_STEPS):
        save_revision(_neox(len(tok), seed=i), tok, hub_cache, LONG_REPO, f"step{step}", work / str(step))
    return LONG_REPO


@pytest.fixture(scope="module")
def cluster(hub_cache, tmp_path_factory):
    """The documented head and node commands run in their namespaces; yields (namespaces, env, folder)."""
    folder = tmp_path_factory.mktemp("cluster")
    (folder / "mlruns").mkdir()
    # what each node's environment holds: the venv's tools, Hugging Face pointed at the test's cache, no Ray token
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           "HEAD": HEAD, "NODE": NODE, "CONFIG": CONFIG, "RAY_AUTH_MODE": "disabled",
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache}  # fmt: skip
    commands = documented_commands()
    with Namespaces() as spaces:
        for line in commands["head"]:
            if line.endswith("&"):  # a server: left running in its namespace
                spaces.popen("head", line.removesuffix("&"), env, folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                spaces.run("head", line, env, folder)
        for line in commands["node"]:
            spaces.run("node", line, env, folder)
        spaces.run("head", WAIT_FOR_CLUSTER, env, folder)  # both nodes alive in Ray's node table, the server answering
        yield spaces, env, folder


WAIT_FOR_CLUSTER = f"""python - <<'EOF'
import time, urllib.request
import ray
ray.init(address="{HEAD}:6379", logging_level="ERROR")
deadline = time.time() + 120
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
    time.sleep(1)
while time.time() < deadline:
    try:
        urllib.request.urlopen("http://{HEAD}:5000/health", timeout=2)
        break
    except OSError:
        time.sleep(1)
assert sum(n["Alive"] for n in ray.nodes()) == 2, ray.nodes()
urllib.request.urlopen("http://{HEAD}:5000/health", timeout=2)
EOF"""


def submit(spaces: Namespaces, env: dict, extra: str = "") -> subprocess.Popen:
    """The documented `ray job submit` line, run from the project folder on the head's network."""
    line = next(c for c in documented_commands()["project"] if c.startswith("ray job submit"))
    return spaces.popen("head", line, {**env, "CONFIG": f"{CONFIG} {extra}".strip()}, REPO,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def records_on_server(spaces: Namespaces, env: dict, folder: Path, sweep: str | None = None) -> dict:
    """Read back from the tracking server, on the head's network: the sweep's checkpoint runs and its records."""
    script = (
        "import json, sys\n"
        "from pythia_sweep.tracking.reader import SweepReader\n"
        f"reader = SweepReader('http://{HEAD}:5000')\n"
        f"parent = reader.find_sweep({sweep!r})\n"
        "runs = [(r.data.tags['revision'], r.info.status, r.data.tags['checkpoint_status']) for r in reader.checkpoint_runs(parent)]\n"
        "records = {r.revision: r.worker for r in reader.load_records(parent)}\n"
        "print(json.dumps({'parent': parent, 'runs': runs, 'workers': records}))\n"
    )
    done = spaces.run("head", f"python - <<'EOF'\n{script}EOF", env, folder)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_documented_cluster_runs_the_submitted_sweep_on_both_nodes(cluster):
    spaces, env, folder = cluster
    job = submit(spaces, env)
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "5 checkpoints recorded (0 failed)" in out, out[-4000:]
    assert {f"on {HEAD})" in out, f"on {NODE})" in out} == {True}, out[-4000:]  # the log says where each ran
    found = records_on_server(spaces, env, folder)
    assert Counter(r for r, _, _ in found["runs"]) == Counter(REVISIONS)
    assert {w["ip"] for w in found["workers"].values()} == {HEAD, NODE}  # workers on both nodes, by the records

    report = next(c for c in documented_commands()["project"] if c.startswith("pythia-sweep report"))
    spaces.run("head", report, env, folder)  # in a folder of its own: nothing read but the tracking server
    summary = json.loads(next((folder / "reports").rglob("summary.json")).read_text())
    assert summary["checkpoints"] == 5 and summary["parent_run_id"] == found["parent"]
    page = next((folder / "reports").rglob("report.html")).read_text()
    assert f"http://{HEAD}:5000/#/experiments/" in page  # the page links back to the run on the server


def test_the_second_node_killed_mid_sweep_leaves_its_checkpoints_to_the_head(cluster, long_family):
    spaces, env, folder = cluster
    revisions = [f"step{s}" for s in LONG_STEPS]
    job = submit(spaces, env, f"--model {long_family} --checkpoints {','.join(revisions)}")  # another sweep, same cluster
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)  # the job's log, as it streams
    reader.start()
    try:
        measuring = spaces.wait_for_process("node", "ray::CheckpointMeasurer.run", job)  # Ray's process title mid-task
        assert measuring, "".join(lines)[-4000:]
        spaces.kill("node")  # every process of the second node, mid-checkpoint: its raylet, object store, workers
        assert not spaces.pids("node")
        job.wait(timeout=600)
    finally:
        job.kill()
    reader.join(timeout=30)
    out = "".join(lines)
    assert job.returncode == 0 and "succeeded" in out, out[-4000:]
    said = re.search(rf"worker on node {re.escape(NODE)} lost while measuring (step\d+) \((ActorUnavailableError|ActorDiedError); "
                     rf"Ray (still )?lists its node (alive|dead)\): step\d+( and step\d+)? back in the queue \(attempt 2 of 3\); "
                     rf"a new worker on {re.escape(HEAD)}", out)  # fmt: skip
    assert said, out[-4000:]
    assert "attempt 3 of 3" not in out  # the replacement went to the head, not to the node that was going
    assert f"{len(revisions)} checkpoints recorded (0 failed)" in out, out[-4000:]
    found = records_on_server(spaces, env, folder, sweep=None)
    assert Counter(r for r, _, _ in found["runs"]) == Counter(revisions)  # exactly one record per checkpoint
    assert {(s, c) for _, s, c in found["runs"]} == {("FINISHED", "ok")}
    assert found["workers"][said.group(1)]["ip"] == HEAD  # the lost checkpoint was finished on the head
