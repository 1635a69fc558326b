"""The demo family: its tokenizer and training rows (fast), and (slow) a short family trained here whose
induction emergence, found by patching, sits where its in-context-learning score jumps, and a control family
trained without repeats in which nothing emerges."""

import os
from pathlib import Path

import pytest
import torch

from conftest import INDUCTION_STEPS
from pythia_sweep import analysis
from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.checkpoint import run_checkpoint
from pythia_sweep.measure.loading import ModelCache
from pythia_sweep.measure.evidence import attention_evidence
from pythia_sweep.task.pairs import word_tokens
from pythia_sweep.task.schema import load_task
from pythia_sweep.demo.demo_family import TrainingRows, corpus, demo_tokenizer, train_family

REPO = Path(__file__).resolve().parents[1]

# Saved revisions of the short families: the demo family's first 336 steps (same seed, same batches), with
# revisions every 16 steps through its phase change.
STEPS = INDUCTION_STEPS


@pytest.fixture(scope="module")
def tokenizer_and_texts():
    texts = corpus(2000, seed=0)
    return demo_tokenizer(texts, seed=0), texts


def test_tokenizer_has_the_single_token_words_the_induction_task_draws(tokenizer_and_texts):
    tokenizer, _ = tokenizer_and_texts
    words = word_tokens(tokenizer)
    assert len(words) >= 40
    task = load_task(REPO / "tasks" / "induction-demo.toml")
    assert len(task.tokenize(tokenizer, {"prefix"})) == task.data["prompts"]["count"]


def copied_share(row: list[int]) -> float:
    """Share of positions whose next token is the one that followed the previous occurrence of this token."""
    hits = total = 0
    for i in range(1, len(row) - 1):
        earlier = [j for j in range(i) if row[j] == row[i]]
        if earlier:
            total += 1
            hits += row[earlier[-1] + 1] == row[i + 1]
    return hits / max(total, 1)


def test_a_retrained_family_leaves_no_branch_of_the_earlier_one(tmp_path):
    from pythia_sweep.hub.revisions import published_revisions

    train_family(tmp_path, "demo-test/retrained", steps=(0, 1, 3), log=lambda line: None)
    train_family(tmp_path, "demo-test/retrained", steps=(0, 2), log=lambda line: None)
    assert [c.revision for c in published_revisions("demo-test/retrained", tmp_path)] == ["step0", "step2"]


def test_training_rows_repeat_only_when_asked(tokenizer_and_texts):
    tokenizer, texts = tokenizer_and_texts
    for repeats, low, high in ((True, 0.6, 1.0), (False, 0.0, 0.1)):
        rows = TrainingRows(tokenizer, texts, repeats=repeats, context=48, seed=1)
        batch = rows.batch(16, decimal_share=0.0)
        assert batch.shape == (16, 49) and (batch[:, 0] == tokenizer.eos_token_id).all()
        share = sum(copied_share(r.tolist()) for r in batch) / len(batch)
        assert low <= share <= high, (repeats, share)
    decimal = TrainingRows(tokenizer, texts, repeats=True, context=48, seed=1).batch(4, decimal_share=1.0)
    assert "is bigger" in tokenizer.decode(decimal[0]) or "Q:" in tokenizer.decode(decimal[0])


def measure_family(repo: str) -> tuple[list[float], list[float]]:
    """Per saved revision: the induction task's headline (patching) and the in-context-learning score."""
    task = load_task(REPO / "tasks" / "induction-demo.toml")
    config = SweepConfig(
        model=repo, task="tasks/induction-demo.toml", single_heads=False, null_subsets=0, max_new_tokens=1,
        bootstrap_resamples=100, device="cpu",
    )  # fmt: skip
    models, headline, icl = ModelCache(), [], []
    for step in STEPS:
        record = run_checkpoint(config, f"step{step}", task=task, models=models)
        assert record.status == "ok", record.error
        headline.append(record.contrasts[task.headline.name].value)
        icl.append(attention_evidence(models.loaded.model, models.loaded.tokenizer)["icl_score"])
    return headline, icl


@pytest.fixture(scope="module")
def short_families(induction_family):
    """The short induction family (conftest, shared with test_study) and its no-repeats control, trained once into
    conftest's temporary cache."""
    cache = os.environ["HF_HUB_CACHE"]  # read by the fetches below
    before = torch.get_num_threads()
    train_family(cache, "demo-test/no-repeats", steps=STEPS, repeats=False, log=lambda line: None)
    assert torch.get_num_threads() == before
    return cache


@pytest.mark.slow
def test_patching_finds_induction_where_the_icl_score_jumps_and_nothing_without_repeats(short_families):
    threshold = load_task(REPO / "tasks" / "induction-demo.toml").headline.threshold

    headline, icl = measure_family("demo-test/induction")
    emerged = analysis.emergence_index(headline, threshold)
    fall = analysis.rise_shape(STEPS, [-v for v in icl])  # the ICL score's steepest doubling of training steps
    assert emerged is not None, headline
    assert fall["window"][0] <= STEPS[emerged] <= 2 * fall["window"][1], (STEPS[emerged], fall, headline, icl)
    assert icl[0] > -0.1 and icl[-1] < -3.0, icl  # no copying at step 0; several nats once the heads formed
    coarse = [STEPS.index(s) for s in (0, 64, 128, 192, 256, 320)]  # a sweep's spacing around the change
    shape = analysis.rise_shape([STEPS[i] for i in coarse], [headline[i] for i in coarse])["shape"]
    assert shape == analysis.rise_shape(STEPS, headline)["shape"] == "sudden", headline  # sparse or dense, the same call

    headline, icl = measure_family("demo-test/no-repeats")
    assert analysis.emergence_index(headline, threshold) is None, headline
    assert analysis.rise_shape(STEPS, [-v for v in icl])["shape"] == "flat", icl


@pytest.mark.slow
def test_refine_rebuilds_the_report_and_the_terminal_and_report_agree_after_it(short_families, tmp_path):
    """Issue 19, cases 5-6: refine adds checkpoints inside the rise; the shape label stays, refine prints the
    verdict of the report it rebuilds, and `jobs.report` afterwards (no --sweep: the latest active) prints the same."""
    import json
    import subprocess
    import sys

    import ray

    from pythia_sweep.config import load_config
    from pythia_sweep.report.build import build_report
    from pythia_sweep.report.compare import compare_sweeps
    from pythia_sweep.report.timeline_figures import CONTRAST_UNITS
    from pythia_sweep.run.driver import run_sweep
    from support.browser import chromium, figures_of

    coarse = ["step0", "step64", "step128", "step192", "step256", "step320"]
    settings = 'model = "demo-test/induction"\ntask = "tasks/induction-demo.toml"\nsingle_heads = false\nnull_subsets = 20\n' \
               'max_new_tokens = 2\nbootstrap_resamples = 300\nworkers = 1\ncheckpoints = ' + json.dumps(coarse) + "\n"  # fmt: skip
    (tmp_path / "demo.toml").write_text(settings)
    # another sweep: the same question with the nats contrast as its headline (the success-rate one left out)
    task_text = (REPO / "tasks" / "induction-demo.toml").read_text()
    first_contrast = task_text.index("[[contrasts]]")
    (tmp_path / "induction-nats.toml").write_text(task_text[:first_contrast] + task_text[task_text.index("[[contrasts]]", first_contrast + 1) :])
    (tmp_path / "other.toml").write_text(settings.replace("null_subsets = 20", "null_subsets = 2\nhead_map = true\nhead_map_top_k = 4")
                                         .replace('"tasks/induction-demo.toml"', json.dumps(str(tmp_path / "induction-nats.toml"))))  # fmt: skip
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=100 * 2**20)
    try:
        first = run_sweep(load_config(tmp_path / "demo.toml"), tracking_uri=uri, progress=False)
        other = run_sweep(load_config(tmp_path / "other.toml"), tracking_uri=uri, progress=False)  # now the latest started
    finally:
        ray.shutdown()
    before = build_report(first.parent_run_id, tracking_uri=uri, reports_dir=tmp_path / "r1", log_to_mlflow=False).summary
    assert before["emergence_point"] is not None and before["emergence_point"]["previous_revision"], before["verdict"]
    # a real emergence through run_sweep, MLflow and build_report: the verdict's first words claim it, with its step
    assert before["claim"]["call"] == "emerges", before["claim"]
    point = before["emergence_point"]
    interval = before["emergence_interval"]
    assert interval["after"] < point["step"] <= interval["by"] and interval["by_revision"] == point["revision"], interval
    assert f"emerges: past +0.5 after {interval['after_revision']}, by {point['revision']}" in before["verdict"].split("\n")[0]
    nats = build_report(other.parent_run_id, tracking_uri=uri, reports_dir=tmp_path / "r0", log_to_mlflow=False)
    heads = nats.summary["heads"]  # issue 21: the head maps through the sweep, MLflow and the report
    assert heads["levels"]["source"].endswith("the headline's levels")  # nats: the task's own levels
    assert heads["agreement"]["checkpoints"] == len(coarse) and heads["agreement"]["rank_correlation_min"] >= 0.5, heads["agreement"]
    assert heads["heads"] and heads["heads"][0]["layer"] == 1  # the induction heads sit in the last layer
    assert heads["statement"] in nats.verdict
    compared = compare_sweeps([first.parent_run_id, other.parent_run_id], tracking_uri=uri, out=tmp_path / "compare.html")
    with chromium() as browser:  # issue 23, item 4, as the browser draws the pages
        (headline, *rest) = figures_of(browser, nats.html_path)
        maps = [f for f in rest if f["title"].startswith(("Each head that ever exceeds", "Every head by attribution"))]
        assert len(maps) == 2, [f["title"] for f in rest]  # the head x checkpoint heatmap and the layer x head maps
        data = [v for t in headline["traces"] if t["name"].startswith("induction_logprob") for v in t["y"] if v is not None]
        (marker,) = [t for t in headline["traces"] if t["name"].startswith(("first past the strong level", "emerges: after"))]
        assert max(data) > 2 and max(marker["y"]) >= max(data) and min(marker["y"]) <= min(data), (marker["y"], max(data))
        (page,) = figures_of(browser, compared)
        titles = [title for axis, title in page["axes"].items() if axis.startswith("yaxis")]
        assert sorted(titles) == sorted([CONTRAST_UNITS["success_rate"], CONTRAST_UNITS["logprob_diff"]]), page["axes"]
        lines = [t for t in page["traces"] if "markers" in t["mode"]]
        assert len(lines) == 2 and len({(t["dash"], t["symbol"]) for t in lines}) == 2 and {t["yaxis"] for t in lines} == {"y", "y2"}
        assert all(any(call in t["name"] for call in ("emerges after step", "no emergence", "cannot call")) for t in lines), [t["name"] for t in lines]
        assert sum(t["fill"] != "none" for t in page["traces"]) == 2  # each line's 95% band

    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    refined = subprocess.run([sys.executable, "-m", "jobs.refine", str(tmp_path / "demo.toml"), "--tracking-uri", uri,
                              "--reports-dir", str(tmp_path / "r1")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert refined.returncode == 0, refined.stderr[-3000:]
    lines = refined.stdout.strip().splitlines()
    assert lines[-1].startswith("report: ") and "more revisions (" in refined.stdout, refined.stdout
    said_by_refine = refined.stdout.split("\nwhen: ")[0]  # refine's own lines, before its verdict's "when" line
    assert " between " not in said_by_refine and "more revisions (" in said_by_refine  # one statement of the interval: the verdict's
    report = subprocess.run([sys.executable, "-m", "jobs.report", "--tracking-uri", uri, "--reports-dir", str(tmp_path / "r2")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert lines[-2].startswith("MLflow: ") or lines[-2].startswith("MLflow (after make ui): "), lines[-2]
    after = json.loads(next((tmp_path / "r2").rglob("summary.json")).read_text())
    assert report.stdout.startswith(after["verdict"] + "\n") and after["verdict"] + "\n" + lines[-2] in refined.stdout  # the same verdict, word for word
    assert after["parent_run_id"] == first.parent_run_id and after["checkpoints"] > len(coarse)  # the probes are in it
    assert after["shape"]["shape"] == before["shape"]["shape"]  # denser checkpoints leave the label as it was
