"""A study over several training runs: tiny families whose emergence steps differ by construction (one run's training
lags another's by two saved steps), swept by one driver, each run its own parent run, and reported side by
side: each run's step and interval, the spread, the defects (a revision one run lacks, weights shared across runs),
axes in units."""

import json
import os

import pytest
import torch

from conftest import INDUCTION_STEPS
from pythia_sweep.errors import ConfigError
from pythia_sweep.run.study import expand_models, load_study

FAMILY = "tiny-test/study-seed"
SHIFT = {1: 0, 2: 2, 3: 0}  # seed -> how many saved steps its training lags the short induction family's
MISSING = {3: "step224"}  # seed 3 publishes no step224 (as pythia-410m-seed9 lacks step40000)


@pytest.fixture(scope="module")
def seed_families(induction_family, tmp_path_factory):
    """Three runs made from the short induction family (conftest): at saved step i, seed 1 and seed 3 hold its step i,
    seed 2 its step i - 2 (its heads form two saved steps later); each run's weights moved by its own noise of 1e-6
    (distinct files, the same behaviour). Seed 3 lacks step224, and its step0 is seed 1's step0, file for file
    (PolyPythias' data- and weight-seed repos share step1, EleutherAI/pythia #203)."""
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from pythia_sweep.hub.fetch import fetch
    from pythia_sweep.demo.hub_cache import save_revision, write_revision

    cache, work = os.environ["HF_HUB_CACHE"], tmp_path_factory.mktemp("seeds")
    base = {step: fetch(induction_family, f"step{step}").path for step in INDUCTION_STEPS}
    tokenizer = AutoTokenizer.from_pretrained(base[0])
    for seed, lag in SHIFT.items():
        torch.manual_seed(seed)
        for i, step in enumerate(INDUCTION_STEPS):
            if MISSING.get(seed) == f"step{step}":
                continue
            if (seed, step) == (3, 0):  # seed 1's step0 folder, published again as it is
                write_revision(cache, f"{FAMILY}{seed}", f"step{step}", work / "1-0" / "step0")
                continue
            model = GPTNeoXForCausalLM.from_pretrained(base[INDUCTION_STEPS[max(0, i - lag)]])
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 1e-6)
            save_revision(model, tokenizer, cache, f"{FAMILY}{seed}", f"step{step}", work / f"{seed}-{step}")
    return cache


@pytest.mark.slow
def test_a_study_reports_each_runs_emergence_its_interval_the_spread_and_the_defects(seed_families, tmp_path, capsys):
    import ray

    from pythia_sweep.commands.sweep import main
    from pythia_sweep.tracking.reader import SweepReader
    from pythia_sweep.tracking.links import study_tag

    config = tmp_path / "study.toml"
    schedule = ", ".join(f'"step{s}"' for s in INDUCTION_STEPS)
    config.write_text(f'model = "{FAMILY}{{1..3}}"\nstudy = "tiny-seeds"\ntask = "tasks/induction-demo.toml"\ncheckpoints = [{schedule}]\n'
                      'null_subsets = 20\nmax_new_tokens = 2\nbootstrap_resamples = 400\nevidence = false\nsingle_heads = false\n'
                      'head_map = true\nhead_map_top_k = 3\nworkers = 2\nunpublished = "list"\n')  # fmt: skip
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [str(config), "--tracking-uri", uri, "--reports-dir", str(tmp_path / "reports")]
    try:
        assert main(args) == 0
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    n = len(INDUCTION_STEPS)
    for seed in (1, 2):
        assert f"{FAMILY}{seed}: MLflow parent run " in out
    assert out.count(f"{n} checkpoints recorded (0 failed)") == 2 and f"{n - 1} checkpoints recorded (0 failed)" in out
    assert f"step224: asked for, not published by {FAMILY}3" in out  # seed 3 lacks it: listed, never a failed record

    reader = SweepReader(uri)
    parents = reader.study_sweeps("tiny-seeds")
    assert len(parents) == 3 and all(reader.client.get_run(p).data.tags[study_tag("tiny-seeds")] == "1" for p in parents)
    pids = {}
    for r in (r for p in parents for r in reader.load_records(p) if r.ok):
        pids.setdefault(r.worker["pid"], set()).add(r.model)
    assert len(pids) <= 2 and any(len(models) > 1 for models in pids.values())  # the same workers went across runs

    summary = json.loads((tmp_path / "reports" / "study-tiny-seeds" / "summary.json").read_text())
    runs = {r["label"]: r for r in summary["runs"]}
    assert list(runs) == ["seed1", "seed2", "seed3"]
    first = runs["seed1"]["emergence_step"]
    assert runs["seed1"]["call"] == "emerges" and first in INDUCTION_STEPS[1:-2], runs["seed1"]
    later = INDUCTION_STEPS[INDUCTION_STEPS.index(first) + 2]  # seed 2 lags two saved steps
    assert [runs[s]["emergence_step"] for s in ("seed1", "seed2", "seed3")] == [first, later, first], summary["statement"]
    for run in runs.values():
        assert run["by"] is not None and run["after"] < run["emergence_step"] <= run["by"], run
        assert run["top_heads"]["final"] and all(h.startswith("1.") for h in run["top_heads"]["final"])  # layer 1 carries it
    assert runs["seed3"]["failed_revisions"] == []
    seed3 = json.loads(next((tmp_path / "reports").rglob(f"*{FAMILY.split('/')[-1]}3__*/*/summary.json")).read_text())
    assert [u["revision"] for u in seed3["asked_for_not_published"]] == ["step224"] and runs["seed3"]["unpublished"] == ["step224"]
    assert "seed3 lacks step224 (asked for, not published)." in summary["statement"]
    called = [runs[s]["emergence_step"] for s in runs if runs[s]["call"] == "emerges"]
    assert summary["spread"]["runs_called"] == len(called) and summary["spread"]["median_step"] == sorted(called)[len(called) // 2]
    assert (summary["spread"]["min_step"], summary["spread"]["max_step"]) == (min(called), max(called))
    twins = summary["identical_across_runs"]
    assert [[(m["run"], m["revision"]) for m in t["members"]] for t in twins] == [[("seed1", "step0"), ("seed3", "step0")]]
    said = summary["statement"]
    assert said.startswith(f"{len(called)} of 3 runs emerge: seed1 at step{first} (95%: after step")
    assert f"range {min(called):,} to {max(called):,}" in said
    assert "Identical weights across runs: seed1 step0 = seed3 step0" in said
    assert "on top of every run" in said or "On top of each run" in said
    assert f"study report: {tmp_path / 'reports' / 'study-tiny-seeds' / 'study.html'}" in out
    page = (tmp_path / "reports" / "study-tiny-seeds" / "study.html").read_text()
    for run in runs.values():  # each run's own report linked, relative to the study's folder, and written
        link = os.path.relpath(run["report"], tmp_path / "reports" / "study-tiny-seeds")
        assert f'href="{link}">{run["label"]}</a>' in page and os.path.exists(run["report"])

    from pythia_sweep.report.study import build_study_report

    study = build_study_report("tiny-seeds", tracking_uri=uri, reports_dir=str(tmp_path / "again"))
    dots, overlay = study.figures
    assert dots.layout.xaxis.title.text == "training step" and dots.layout.yaxis.title.text == "training run"
    units = {overlay.layout[f"yaxis{i if i > 1 else ''}"].title.text for i in (1, 2)}
    assert units == {"difference of success rates (-1 to 1)", "difference of answer log-prob differences (nats)"}  # a panel per unit
    assert "training step" in overlay.layout.xaxis.title.text

    capsys.readouterr()
    try:
        assert main(args) == 0  # resumed: every model's sweep has its records
    finally:
        ray.shutdown()
    again = capsys.readouterr().out
    assert again.count(f"0 checkpoints recorded (0 failed), {n} already done") == 2 and f"0 checkpoints recorded (0 failed), {n - 1} already done" in again  # its missing one: listed again, never tried


def test_a_study_config_names_its_models_or_is_refused_by_name(tmp_path):
    assert expand_models("EleutherAI/pythia-160m-seed{1..3}") == [f"EleutherAI/pythia-160m-seed{i}" for i in (1, 2, 3)]
    assert expand_models(["a/b", "a/c{1..2}-x{0..1}"]) == ["a/b", "a/c1-x0", "a/c1-x1", "a/c2-x0", "a/c2-x1"]
    for bad, why in ((["a/b", "a/b"], "a/b is named twice"), ("a/b{3..1}", "runs backwards"), ([], "a non-empty list"),
                     ("a/{b}", "ranges {low..high} of whole numbers")):  # fmt: skip
        with pytest.raises(ConfigError, match=why.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
            expand_models(bad)
    config = tmp_path / "seeds.toml"
    config.write_text('model = "EleutherAI/pythia-160m-seed{1..2}"\nlayr = 6\n')
    with pytest.raises(ConfigError, match=r"seeds.toml: setting='layr' .*did you mean layer"):
        load_study(config)
    config.write_text('model = "EleutherAI/pythia-160m-seed{1..2}"\nstudy = "two seeds"\n')
    with pytest.raises(ConfigError, match=r"seeds.toml: study='two seeds'"):
        load_study(config)
    config.write_text('model = "EleutherAI/pythia-160m-seed{1..2}"\nlayer = 6\n')
    study = load_study(config, layer=4)
    assert study.name == "seeds" and study.named and [c.layer for c in study.configs] == [4, 4]
    assert study.models == ["EleutherAI/pythia-160m-seed1", "EleutherAI/pythia-160m-seed2"]
    assert not load_study(config, model="EleutherAI/pythia-160m").named
    from pythia_sweep.config import SweepConfig, load_config

    with pytest.raises(ConfigError, match="one Hub repo id here: a study's config"):
        SweepConfig(model="EleutherAI/pythia-160m-seed{1..2}")
    with pytest.raises(ConfigError, match=r"seeds.toml: model=.*one Hub repo id here"):  # refine, scan: one model's config
        load_config(config)
    config.write_text('model = "EleutherAI/pythia-160m"\nstudy = "one"\n')
    with pytest.raises(ConfigError, match=r"seeds.toml: study='one' .*python -m jobs.sweep runs a study's config"):
        load_config(config)
    assert load_study(config).named and load_study(config).models == ["EleutherAI/pythia-160m"]


def test_runs_are_told_apart_only_where_their_spans_widened_by_the_grid_do_not_meet():
    """A run's first crossing lies after the saved step before its interval and at most at the interval's end: (288,
    304] and (304, 352] are apart; (256, 288] and (272, 304] are not; a run whose resamples do not all cross is never."""
    from pythia_sweep.report.study import spread

    def run(label, step, by, after):
        return {"label": label, "call": "emerges", "emergence_step": step, "after": after, "by": by}

    runs = [run("a", 304, 304, 288), run("b", 320, 352, 304), run("c", 288, 304, 272), run("d", 288, None, 272)]
    out = spread(runs)
    assert out["apart"] == [("a", "b"), ("b", "c")]  # c's (272, 304] meets a's (288, 304]; d has no upper end
    assert (out["median_step"], out["min_step"], out["max_step"], out["runs_called"]) == (296, 288, 320, 4)
