"""Issue 33, item 1: a revision the model does not publish is refused before anything runs, never recorded; a config
that asks for such revisions on purpose (`unpublished = "list"`) has them listed as asked for, not published; a
revision's records can be removed from a sweep (`--forget`)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import NEOX_REPO
from pythia_sweep.hub.revisions import Checkpoint, check_published, resolve_schedule, step_of
from pythia_sweep.config import SweepConfig, load_config
from pythia_sweep.errors import ConfigError, RevisionNotPublished

REPO = Path(__file__).resolve().parents[1]
TINY = ["step0", "step1", "step2", "step4", "step1000"]  # what conftest's tiny family publishes
FAST = ('model = "tiny-test/neox"\ntask = "tasks/decimal-seed.toml"\nnull_subsets = 2\nmax_new_tokens = 4\n'
        'bootstrap_resamples = 200\nsingle_heads = false\nevidence = false\nworkers = 0\n')  # fmt: skip


def published(names):
    return [Checkpoint(n, step_of(n)) for n in names]


def test_a_typo_is_refused_naming_the_nearest_published_revisions():
    listed = published(TINY)
    with pytest.raises(RevisionNotPublished) as typo:
        check_published(NEOX_REPO, resolve_schedule(NEOX_REPO, ("step0", "step-1"), listed), listed)
    message = str(typo.value)
    assert message.startswith(f"revision 'step-1' is not published by {NEOX_REPO} (closest published names: step1")
    assert 'unpublished = "list"' in message and "\n" not in message
    with pytest.raises(RevisionNotPublished, match=r"'step999' is not published .* \(nearest published: step4 before, step1000 after;"):
        check_published(NEOX_REPO, resolve_schedule(NEOX_REPO, ("step1", "step999"), listed), listed)
    kept, missing = check_published(NEOX_REPO, resolve_schedule(NEOX_REPO, ("step1", "step999"), listed), listed, "list")
    assert [c.revision for c in kept] == ["step1"] and [c.revision for c in missing] == ["step999"]
    with pytest.raises(RevisionNotPublished, match="ask for published revisions$"):  # nothing left to sweep, even when listing
        check_published(NEOX_REPO, resolve_schedule(NEOX_REPO, ("step999",), listed), listed, "list")


def test_the_methodology_config_says_it_asks_for_revisions_pythia_never_published():
    pythia = published([f"step{s}" for s in (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)] + [f"step{s}" for s in range(1000, 143001, 1000)])
    config = load_config(REPO / "jobs/configs/methodology.toml")
    kept, missing = check_published(config.model, resolve_schedule(config.model, config.checkpoints, pythia), pythia, config.unpublished)
    assert [c.revision for c in missing] == ["step256000", "step512000", "step1000000"]
    assert len(kept) == 8


def test_the_unpublished_setting_is_strict_and_leaves_the_sweep_id_alone():
    with pytest.raises(ConfigError, match=r"^unpublished='lsit' is not valid: one of refuse, list$"):
        SweepConfig(unpublished="lsit")
    from pythia_sweep.config import config_from_dict

    with pytest.raises(ConfigError, match="did you mean unpublished"):
        config_from_dict({"unpublishd": "list"})
    assert SweepConfig(unpublished="list").sweep_id("t") == SweepConfig().sweep_id("t")  # sweeps recorded before keep resuming


def test_the_command_line_refuses_a_typo_before_anything_runs(hub_cache, tmp_path):
    """`--checkpoints step1,step-1`: exit 2, one line naming the nearest published revisions, and no store made."""
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", NEOX_REPO, "--task",
                           "tasks/decimal-seed.toml", "--checkpoints", "step1,step-1", "--tracking-uri",
                           f"sqlite:///{tmp_path}/mlruns/mlflow.db"], cwd=REPO, env={**os.environ, "HF_HUB_CACHE": hub_cache},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: revision 'step-1' is not published by {NEOX_REPO} (closest published names: step1")
    assert not (tmp_path / "mlruns").exists()  # nothing ran, nothing was recorded


@pytest.fixture(scope="module")
def listed_sweep(hub_cache, tmp_path_factory):
    """A config asking for step256000 on purpose, swept in this process, and its report."""
    from pythia_sweep.report.build import build_report
    from pythia_sweep.run.study import load_study
    from pythia_sweep.run.driver import run_sweep

    folder = tmp_path_factory.mktemp("listed")
    config_file = folder / "methodology-like.toml"
    config_file.write_text(FAST + 'checkpoints = ["step0", "step1000", "step256000"]\nunpublished = "list"\n')
    config = load_study(config_file).configs[0]
    uri = f"sqlite:///{folder}/mlflow.db"
    result = run_sweep(config, tracking_uri=uri, progress=False)
    report = build_report(result.parent_run_id, tracking_uri=uri, reports_dir=folder / "reports", log_to_mlflow=False)
    return config_file, uri, result, report


def test_revisions_asked_for_on_purpose_are_listed_not_recorded_as_failed(listed_sweep):
    from pythia_sweep.tracking.reader import SweepReader

    _, uri, result, report = listed_sweep
    assert result.failed == [] and sorted(result.recorded) == ["step0", "step1000"]
    runs = SweepReader(uri).checkpoint_runs(result.parent_run_id)
    assert sorted(r.data.tags["revision"] for r in runs) == ["step0", "step1000"]  # no record of step256000 at all
    summary = json.loads((report.folder / "summary.json").read_text())
    assert summary["asked_for_not_published"] == [{"revision": "step256000", "nearest": "nearest published: step1000 before, none after"}]
    assert "step256000" not in report.verdict  # not a failure of the sweep
    assert "asked for, not published (nearest published: step1000 before, none after)" in report.html_path.read_text()


def test_forget_removes_a_revisions_records_from_the_sweep(listed_sweep, capsys):
    """A typo an older version recorded as failed: `--forget` removes it, and refuses a revision the sweep lacks."""
    from pythia_sweep.commands.sweep import main
    from pythia_sweep.measure.checkpoint import base_record
    from pythia_sweep.task.schema import load_task
    from pythia_sweep.tracking.reader import SweepReader
    from pythia_sweep.tracking.writer import SweepRecorder

    config_file, uri, result, _ = listed_sweep
    config = load_config(config_file)
    task = load_task(config.task)
    recorder = SweepRecorder(uri)
    typo = replace(base_record(config, task, "step-1"), error="RevisionNotPublished: recorded by an older version")
    recorder.record_checkpoint(result.parent_run_id, typo)
    assert "step-1" in {r.data.tags["revision"] for r in SweepReader(uri).checkpoint_runs(result.parent_run_id)}

    assert main([str(config_file), "--forget", "step-9", "--tracking-uri", uri]) == 2  # nothing of it there: refused, nothing removed
    assert "revision 'step-9' has no record in sweep" in capsys.readouterr().err
    assert main([str(config_file), "--forget", "step-1", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "forgot step-1 (1 failed record) from sweep" in out and result.parent_run_id in out
    left = SweepReader(uri).checkpoint_runs(result.parent_run_id)
    assert sorted(r.data.tags["revision"] for r in left) == ["step0", "step1000"]
    assert "--forget" in subprocess.run([sys.executable, "-m", "jobs.sweep", "--help"], cwd=REPO, capture_output=True, text=True).stdout


def test_help_examples_name_revisions_the_demo_family_publishes():
    """jobs.sweep's and jobs.scan's examples on the demo config ask only for revisions the demo family has."""
    import re

    from pythia_sweep.demo.demo_family import DEMO_STEPS

    for module in ("sweep", "scan"):
        text = (REPO / "jobs" / f"{module}.py").read_text().split('"""')[1]
        for line in text.splitlines():
            if "jobs/configs/demo.toml" in line and "--forget" not in line:
                for name in re.findall(r"\bstep(\d+)\b", line):
                    assert int(name) in DEMO_STEPS, (module, line)
