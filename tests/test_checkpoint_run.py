"""One checkpoint end to end on the cached tiny revisions, and the checkpoint sources."""

from dataclasses import replace

import pytest
import torch

from pythia_sweep.hub.fetch import fetch
from pythia_sweep.hub.revisions import SEED_SCHEDULE, published_revisions, resolve_schedule
from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.checkpoint import run_checkpoint
from pythia_sweep.measure.conditions import Condition
from pythia_sweep.measure.evaluation import evaluate
from pythia_sweep.measure.patching import attention_layout
from pythia_sweep.task.schema import load_task

from conftest import NEOX_REPO

FAST = dict(model=NEOX_REPO, null_subsets=3, max_new_tokens=4, bootstrap_resamples=200)
ROBUST = load_task("tasks/decimal-robust.toml")
SEED = load_task("tasks/decimal-seed.toml")
EVEN = tuple((6, h) for h in (0, 2, 4, 6, 8, 10))


def tokenized(loaded, task=ROBUST, n=None, aligns=("shared-text", "prefix", "suffix")):
    return task.tokenize(loaded.tokenizer, aligns)[:n]


def conditions_even(layer=6):
    return [Condition("baseline", (), "corrupted", "m", "baseline"),
            Condition("even", tuple((layer, h) for h in (0, 2, 4, 6, 8, 10)), "corrupted", "m", "group")]  # fmt: skip


def test_published_revisions_come_from_the_cache_refs(hub_cache):
    revs = published_revisions(NEOX_REPO)
    assert [c.revision for c in revs] == ["step0", "step1", "step2", "step4", "step1000"]
    assert [c.step for c in revs] == [0, 1, 2, 4, 1000]


def test_schedules(hub_cache):
    published = published_revisions(NEOX_REPO)
    seed = resolve_schedule(NEOX_REPO, "seed", published)
    assert [c.revision for c in seed] == list(SEED_SCHEDULE)  # literally, unpublished ones included
    assert [c.revision for c in resolve_schedule(NEOX_REPO, "log", published)] == ["step1000"]
    assert len(resolve_schedule(NEOX_REPO, "all", published)) == 5
    explicit = resolve_schedule(NEOX_REPO, ("step4", "step0"), published)
    assert [c.revision for c in explicit] == ["step0", "step4"]


def test_pythia_log_schedule_on_the_real_branch_list():
    from pythia_sweep.hub.revisions import Checkpoint

    steps = [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))
    published = [Checkpoint(f"step{s}", s) for s in steps]
    assert len(published) == 154
    log = [c.revision for c in resolve_schedule("EleutherAI/pythia-160m", "log", published)]
    assert log == [f"step{1000 * 2**i}" for i in range(8)] + ["step143000"]


def test_fetch_records_commit_and_weight_hashes(hub_cache):
    a, b = fetch(NEOX_REPO, "step0"), fetch(NEOX_REPO, "step1")
    assert len(a.commit) == 40 and a.commit != b.commit
    assert list(a.weight_sha256) == ["model.safetensors"] and len(a.weight_sha256["model.safetensors"]) == 64
    assert a.weights_digest != b.weights_digest
    d2, d4 = fetch(NEOX_REPO + "-dup", "step2"), fetch(NEOX_REPO + "-dup", "step4")
    assert d2.weights_digest == d4.weights_digest and d2.commit != d4.commit


def test_missing_revision_names_it_and_the_published_range(hub_cache):
    record = run_checkpoint(SweepConfig(**FAST), "step256000")
    assert record.status == "failed"
    assert "'step256000' does not exist for tiny-test/neox" in record.error
    assert "step0" in record.error and "step1000" in record.error


def test_full_record_and_bit_identical_rerun(hub_cache):
    config = SweepConfig(**FAST, task="tasks/decimal-seed.toml")
    first = run_checkpoint(config, "step1000")
    assert first.status == "ok", first.error
    assert first.commit and first.weight_sha256
    assert set(first.timings) == {"fetch_s", "load_s", "compute_s"}
    even = first.conditions["even"]
    assert even.n_trials == 15 and even.n_prompts == 1  # 15 identical greedy trials, computed once
    assert {"baseline", "clean", "even", "odd", "all", "L06H00", "L06H11", "null00"} <= set(first.conditions)
    from test_scoring import check_bug_fixed  # the methodology's published check, on the generated texts

    text = {r["condition"]: r["response"] for r in first.responses}
    assert first.contrasts["strength"].success_rate.value == check_bug_fixed(text["even"]) - check_bug_fixed(text["odd"])
    assert first.conditions["baseline"].restoration.value is None  # one prompt: no interval on the clean-corrupted gap
    assert first.task["name"] == "decimal-seed"
    assert len(first.responses) == len(first.conditions)  # one distinct row per condition
    second = run_checkpoint(config, "step1000")
    assert replace(first, timings={}) == replace(second, timings={})  # every field but the timings, bit for bit


def test_both_methods_side_by_side(hub_cache):
    record = run_checkpoint(SweepConfig(**FAST, task="tasks/decimal-seed.toml", method="both", single_heads=False), "step1")
    assert set(record.contrasts) == {"strength", "upstream/strength"}
    assert {"upstream/even", "upstream/odd"} <= set(record.conditions)


@pytest.mark.parametrize("site, patch_during", [("head", "prompt"), ("post-projection", "every-step")])
def test_batched_rows_match_one_prompt_at_a_time(neox, site, patch_during):
    """Padding is handled: each row's results do not depend on what else is in its batch."""
    layout = attention_layout(neox.model)
    prompts = tokenized(neox, n=6)
    conditions = conditions_even()
    methods = {"m": {"site": site, "align": "shared-text" if patch_during == "prompt" else "prefix", "patch_during": patch_during}}
    kw = dict(max_new_tokens=5)
    batched = evaluate(neox.model, neox.tokenizer, layout, prompts, conditions, methods, ROBUST.success, batch_size=64, **kw)
    single = evaluate(neox.model, neox.tokenizer, layout, prompts, conditions, methods, ROBUST.success, batch_size=1, **kw)
    for a, b in zip(batched, single):
        assert a["response"] == b["response"]
        assert a["logprob_diff"] == pytest.approx(b["logprob_diff"], abs=1e-3)


@pytest.mark.parametrize("family", ["neox", "llama"])
@pytest.mark.parametrize("site, patch_during", [("head", "prompt"), ("post-projection", "every-step")])
def test_shared_prefill_matches_the_plain_way(request, family, site, patch_during):
    """One prefill shared by scoring and a hand-rolled greedy loop gives what the package's plain way (one prompt at
    a time, separate teacher-forced forwards and `generate`, reference.evaluate_plainly) gives, row by row; a
    group spanning two layers included."""
    from pythia_sweep.measure.reference import evaluate_plainly

    loaded = request.getfixturevalue(family)
    layout = attention_layout(loaded.model)
    prompts = tokenized(loaded, n=4)
    conditions = conditions_even(layer=2) + [Condition("two_layers", ((1, 3), (2, 0), (2, 5)), "corrupted", "m", "group")]
    method = {"site": site, "align": "shared-text" if patch_during == "prompt" else "prefix", "patch_during": patch_during}
    args = (loaded.model, loaded.tokenizer, layout, prompts, conditions, {"m": method}, ROBUST.success)
    fast, plain = evaluate(*args, max_new_tokens=6, batch_size=64), evaluate_plainly(*args, max_new_tokens=6)
    assert [(r["condition"], r["prompt_id"]) for r in fast] == [(r["condition"], r["prompt_id"]) for r in plain]
    for a, b in zip(fast, plain):
        assert a["response"] == b["response"] and a["generation"] == b["generation"], (a["condition"], a["prompt_id"])
        assert a["logprob_diff"] == pytest.approx(b["logprob_diff"], abs=1e-4) and a["prob_diff"] == pytest.approx(b["prob_diff"], abs=1e-5)


def test_generation_config_beyond_plain_greedy_is_refused_by_name(neox):
    from pythia_sweep.errors import UnsupportedModel

    layout = attention_layout(neox.model)
    args = (neox.model, neox.tokenizer, layout, tokenized(neox, SEED), [Condition("baseline", (), "corrupted", "m", "baseline")],
            {"m": {"site": "head", "align": "shared-text", "patch_during": "prompt"}}, SEED.success)  # fmt: skip
    neox.model.generation_config.repetition_penalty = 1.3
    try:
        with pytest.raises(UnsupportedModel, match=r"generation_config.repetition_penalty=1.3: .* needs repetition_penalty=1.0"):
            evaluate(*args, max_new_tokens=2, batch_size=4)
    finally:
        neox.model.generation_config.repetition_penalty = 1.0
    assert len(evaluate(*args, max_new_tokens=2, batch_size=4)) == 1


def test_layer_by_head_scan(neox, tmp_path):
    import polars as pl

    from pythia_sweep.measure.scan import scan_layers
    from pythia_sweep.report.scan_page import scan_page

    scan = scan_layers(SweepConfig(**FAST, task="tasks/decimal-seed.toml"), SEED, neox, layers=[5, 6])
    rows = scan.heads
    assert len(rows) == 2 * 12
    assert {(r["layer"], r["head"]) for r in rows} == {(layer, h) for layer in (5, 6) for h in range(12)}
    from pythia_sweep.measure.reference import evaluate_plainly

    method = {"site": "head", "align": SEED.align, "patch_during": "prompt"}
    picked = [r for r in rows if r["head"] in (0, 5, 11)]  # each row is its own head, by the plain way
    conditions = [Condition("baseline", (), "corrupted", "m", "baseline", decode=False)]
    conditions += [Condition(f"h{i}", ((r["layer"], r["head"]),), "corrupted", "m", "head", decode=False) for i, r in enumerate(picked)]
    plain = evaluate_plainly(neox.model, neox.tokenizer, attention_layout(neox.model), SEED.tokenize(neox.tokenizer, [SEED.align]),
                             conditions, {"m": method}, SEED.success, max_new_tokens=4)  # fmt: skip
    assert scan.baseline == pytest.approx(plain[0]["logprob_diff"], abs=1e-4)  # the baseline, the plain way too
    for row, reference in zip(picked, plain[1:]):
        assert row["logprob_diff"] == pytest.approx(reference["logprob_diff"], abs=1e-4), row
        assert scan.effects()[(row["layer"], row["head"])] == pytest.approx(reference["logprob_diff"] - plain[0]["logprob_diff"], abs=1e-4)
    page = scan_page(scan, "tiny", tmp_path / "scan")
    assert f"corrupted baseline log-prob difference {scan.baseline:+.3f}" in page.read_text()
    table = pl.read_parquet(page.with_suffix(".parquet"))  # the page's rows: every head, its effect against the baseline
    assert table.height == 24 and table["delta"].to_list() == pytest.approx([r["logprob_diff"] - scan.baseline for r in rows])
    from pythia_sweep.report.scan_page import scan_figure

    fig = scan_figure(pl.DataFrame(rows).with_columns(pl.col("logprob_diff").alias("delta")), "tiny")
    assert fig.layout.height >= 420 and list(fig.layout.yaxis.tickvals) == ["layer 5", "layer 6"]  # both layers labelled
    assert len(fig.layout.xaxis.tickvals) == 12 and fig.data[0].colorbar.len == 1.0


def test_model_skeleton_is_reused_and_weights_loaded_in_place(hub_cache):
    from pythia_sweep.measure.loading import ModelCache, load_model

    cache = ModelCache()
    first = cache.load(fetch(NEOX_REPO, "step0").path, torch.device("cpu"), torch.float32)
    second = cache.load(fetch(NEOX_REPO, "step1").path, torch.device("cpu"), torch.float32)
    assert second.model is first.model  # the same skeleton ...
    fresh = load_model(fetch(NEOX_REPO, "step1").path, torch.device("cpu"), torch.float32)
    for (name, a), (_, b) in zip(second.model.state_dict().items(), fresh.model.state_dict().items()):
        assert torch.equal(a, b), name  # ... now holding exactly step1's weights
    config = SweepConfig(**FAST, task="tasks/decimal-seed.toml", single_heads=False)
    assert run_checkpoint(config, "step1", models=cache).conditions == run_checkpoint(config, "step1").conditions
    llama = cache.load(fetch("tiny-test/llama", "step0").path, torch.device("cpu"), torch.float32)
    assert llama.model is not first.model  # another config: a fresh load


def test_batch_size_follows_free_memory_and_model_size():
    from transformers import GPTNeoXConfig

    from pythia_sweep.measure.loading import rows_per_batch

    pythia_160m = GPTNeoXConfig(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    pythia_1b = GPTNeoXConfig(vocab_size=50304, hidden_size=2048, num_hidden_layers=16, num_attention_heads=8, intermediate_size=8192)
    rows = lambda cfg, free, dtype=torch.float16, cap=10**9: rows_per_batch(cfg, dtype, 45, free, cap)  # noqa: E731
    one_gib = rows(pythia_160m, 1 << 30)
    assert 20 < one_gib < 500
    assert rows(pythia_160m, 8 << 30) in range(8 * one_gib - 8, 8 * one_gib + 9)  # linear in free memory
    assert rows(pythia_1b, 8 << 30) < rows(pythia_160m, 8 << 30)  # a bigger model fits fewer rows
    assert rows(pythia_160m, 8 << 30, torch.float32) < rows(pythia_160m, 8 << 30)  # so does a wider dtype
    assert rows(pythia_160m, 0) == 1 and rows(pythia_160m, 1 << 40, cap=64) == 64


def test_auto_batch_size_is_resolved_and_recorded(hub_cache):
    auto = run_checkpoint(SweepConfig(**FAST, task="tasks/decimal-seed.toml", single_heads=False), "step1")
    fixed = run_checkpoint(SweepConfig(**FAST, task="tasks/decimal-seed.toml", single_heads=False, batch_size=2), "step1")
    assert auto.settings["batch_size"] >= 1 and fixed.settings["batch_size"] == 2
    for name, stats in auto.conditions.items():  # batching never changes a result
        assert stats.success_rate == fixed.conditions[name].success_rate
        assert stats.logprob_diff.value == pytest.approx(fixed.conditions[name].logprob_diff.value, abs=1e-4)


@pytest.mark.parametrize("family", ["neox", "llama"])
@pytest.mark.parametrize("site, patch_during", [("head", "prompt"), ("post-projection", "every-step")])
def test_layers_below_the_patch_run_once_per_prompt_with_the_same_results(request, family, site, patch_during):
    """Sharing the layers below the lowest patched layer across a prompt's conditions changes no output:
    every condition kind (clean prompt, groups in two layers, single heads not decoded, null sets), tokens
    identical and log-probs within float tolerance of running every row through every layer."""
    from pythia_sweep.measure.conditions import make_conditions

    loaded = request.getfixturevalue(family)
    layout = attention_layout(loaded.model)
    prompts = tokenized(loaded, n=5)
    groups = {"even": ((2, 0), (2, 2), (3, 4)), "odd": ((2, 1), (2, 3), (3, 5))}
    conditions = make_conditions(groups, ["m"], layout.n_heads, single_heads=True, null_count=3, seed=0)
    method = {"site": site, "align": "shared-text" if patch_during == "prompt" else "prefix", "patch_during": patch_during}
    run = lambda share: evaluate(  # noqa: E731
        loaded.model, loaded.tokenizer, layout, prompts, conditions, {"m": method}, ROBUST.success,
        max_new_tokens=6, batch_size=16, share_below=share,
    )  # fmt: skip
    shared, plain = run(True), run(False)
    assert len(shared) == len(plain) == len(conditions) * len(prompts)
    for a, b in zip(shared, plain):
        assert (a["condition"], a["prompt_id"]) == (b["condition"], b["prompt_id"])
        assert a["response"] == b["response"] and a["success"] == b["success"]
        assert a["logprob_correct"] == pytest.approx(b["logprob_correct"], abs=1e-4)
        assert a["logprob_wrong"] == pytest.approx(b["logprob_wrong"], abs=1e-4)
    heads = [r for r in shared if r["condition"].startswith("L0")]
    assert heads and all(r["response"] is None and r["success"] is None for r in heads)  # not decoded
    assert all(r["response"] is not None for r in shared if not r["condition"].startswith("L0"))
    by_prompt: dict[str, set] = {}
    for r in shared:
        if r["response"] is not None and r["condition"] != "clean":
            by_prompt.setdefault(r["prompt_id"], set()).add(r["response"])
    assert any(len(v) > 1 for v in by_prompt.values())  # rows that part ways while decoding: shared groups split


def test_a_first_answer_rule_stops_decoding_a_row_once_its_outcome_is_fixed(neox):
    """Decoding stops where the rule has read all it reads: each short response is a prefix of the full
    generation and the success flags are the full generation's."""
    import tomllib
    from dataclasses import replace

    from test_tasks import OWN_TASK

    from pythia_sweep.task.schema import task_from_dict

    task = task_from_dict(tomllib.loads(OWN_TASK), "capitals.toml")
    layout = attention_layout(neox.model)
    prompts = task.tokenize(neox.tokenizer, {"suffix"})
    conditions = conditions_even(layer=2)
    methods = {"m": {"site": "head", "align": "suffix", "patch_during": "prompt"}}
    run = lambda rule: evaluate(neox.model, neox.tokenizer, layout, prompts, conditions, methods, rule, max_new_tokens=8, batch_size=64)  # noqa: E731
    early = run(task.success)
    whole = run(lambda text, correct, wrong: task.success(text, correct, wrong))  # a plain function reads everything
    for short, full in zip(early, whole):
        assert full["response"].startswith(short["response"]) and short["success"] == full["success"]
        assert task.success.decided(short["response"], *_answers(prompts, short["prompt_id"]))
    assert sum(len(r["response"]) for r in early) < sum(len(r["response"]) for r in whole)
    assert replace(task.success, rule="mentions").decided("anything", ["a"], ["b"]) is False  # reads it all


def _answers(prompts, pid):
    pair = next(tp.pair for tp in prompts if tp.pair.id == pid)
    return pair.correct, pair.wrong


def test_the_plain_executor_gives_the_fast_ones_record(neox):
    """measure/checkpoint.measure through the one interface (evaluation.run_conditions): executor "plain" (the
    reference, one prompt at a time with `generate`) and "auto" (the fast path, which this model supports)
    give the same responses and numbers; the record says which ran."""
    from pythia_sweep.measure.checkpoint import measure
    from pythia_sweep.measure.plan import compile_for

    config = SweepConfig(**FAST, task="tasks/decimal-seed.toml", evidence=False)
    fast = measure(config, compile_for(config, SEED, neox), neox)
    plain = measure(config.replace(executor="plain"), compile_for(config.replace(executor="plain"), SEED, neox), neox)
    assert (fast["settings"]["executor"], fast["settings"]["executor_reason"]) == ("fast", None)
    assert plain["settings"]["executor"] == "plain" and "asked for" in plain["settings"]["executor_reason"]
    assert [(r["condition"], r["prompt_id"], r["response"]) for r in fast["responses"]] == [
        (r["condition"], r["prompt_id"], r["response"]) for r in plain["responses"]]  # fmt: skip
    for a, b in zip(fast["responses"], plain["responses"]):
        assert a["logprob_diff"] == pytest.approx(b["logprob_diff"], abs=1e-4)
    for name, values in fast["conditions"].items():
        assert values.success_rate == plain["conditions"][name].success_rate, name


def test_a_model_the_fast_path_cannot_run_is_measured_the_plain_way(neox):
    """A sliding-window cache (Mistral with `sliding_window` set) is one the fast path does not copy: "auto"
    falls back to the plain way and says why, "fast" refuses by name, and the rows are those of the plain way."""
    from transformers import MistralConfig, MistralForCausalLM

    from pythia_sweep.measure.checkpoint import measure
    from pythia_sweep.measure.plan import compile_for
    from pythia_sweep.measure.loading import LoadedModel
    from pythia_sweep.errors import UnsupportedModel
    from pythia_sweep.measure.evaluation import choose_executor
    from pythia_sweep.measure.fastpath import unsupported_reason

    def mistral(window):
        torch.manual_seed(0)
        cfg = MistralConfig(vocab_size=len(neox.tokenizer), hidden_size=48, num_hidden_layers=8, num_attention_heads=12,
                            num_key_value_heads=4, intermediate_size=96, max_position_embeddings=128, sliding_window=window,
                            bos_token_id=0, eos_token_id=0)  # fmt: skip
        return MistralForCausalLM(cfg).eval()

    windowed, plain_cache = mistral(64), mistral(None)
    assert "DynamicSlidingWindowLayer" in unsupported_reason(windowed) and unsupported_reason(plain_cache) is None
    assert choose_executor(windowed, "auto") == ("plain", unsupported_reason(windowed))
    with pytest.raises(UnsupportedModel, match=r'executor = "fast" cannot run this model: its cache has DynamicSlidingWindowLayer'):
        choose_executor(windowed, "fast")
    config = SweepConfig(**FAST, task="tasks/decimal-seed.toml", evidence=False)
    loaded = LoadedModel(windowed, neox.tokenizer, torch.device("cpu"), torch.float32)
    record = measure(config, compile_for(config, SEED, loaded), loaded)
    assert record["settings"]["executor"] == "plain" and "sliding" in record["settings"]["executor_reason"].lower()
    same = measure(config.replace(executor="plain"), compile_for(config.replace(executor="plain"), SEED, loaded), loaded)
    assert [r["logprob_diff"] for r in record["responses"]] == [r["logprob_diff"] for r in same["responses"]]


def test_a_generation_of_special_tokens_is_kept_visible_beside_the_scored_response(neox):
    """Issue 23, item 4: the success rule reads the response decoded without special tokens (here ''), and the
    record also keeps the generation as a person reads it (here the end-of-text token itself), by either executor."""
    from conftest import ending_at_once

    from pythia_sweep.measure.checkpoint import measure
    from pythia_sweep.measure.plan import compile_for

    ends = ending_at_once(neox)
    eos = ends.tokenizer.decode([ends.model.generation_config.eos_token_id])
    assert eos == "<|endoftext|>"
    config = SweepConfig(**FAST | {"null_subsets": 0}, task="tasks/decimal-seed.toml", evidence=False)
    for executor in ("fast", "plain"):
        chosen = config.replace(executor=executor)
        rows = [r for r in measure(chosen, compile_for(chosen, SEED, ends), ends)["responses"] if r["response"] is not None]
        assert rows and all(r["response"] == "" and r["generation"] == eos for r in rows), (executor, rows[:2])


def test_a_batch_that_does_not_fit_is_run_again_with_half_its_rows(neox, monkeypatch):
    """Issue 24, item 4: torch.OutOfMemoryError (simulated on CPU: any call of more than 3 rows raises it) halves the
    rows per batch, down to one, instead of failing the checkpoint; the numbers are those of an unhindered run and
    the record says the rows per batch used. A checkpoint where even one row does not fit is a failed record."""
    import pythia_sweep.measure.evaluation as evaluation
    from pythia_sweep.measure.checkpoint import measure
    from pythia_sweep.measure.plan import compile_for

    config = SweepConfig(**FAST, task="tasks/decimal-robust.toml", evidence=False, batch_size=8)
    plain = measure(config, compile_for(config, ROBUST, neox), neox)
    real, calls = evaluation.score_and_generate, []

    def small_device(model, layout, site, plans, prompts, *args, **kwargs):
        calls.append(len(prompts))
        if len(prompts) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(model, layout, site, plans, prompts, *args, **kwargs)

    monkeypatch.setattr(evaluation, "score_and_generate", small_device)
    halved = measure(config, compile_for(config, ROBUST, neox), neox)
    assert plain["settings"]["out_of_memory_halvings"] == 0 and plain["settings"]["rows_per_batch"] == 16
    assert halved["settings"]["out_of_memory_halvings"] >= 2 and halved["settings"]["rows_per_batch"] <= 3
    assert calls[:3] == [16, 8, 4] and max(c for c in calls[3:]) <= 3  # 16 -> 8 -> 4 -> 2: then it fits, and stays small
    for a, b in zip(plain["responses"], halved["responses"]):
        assert (a["condition"], a["prompt_id"], a["response"]) == (b["condition"], b["prompt_id"], b["response"])
        assert a["logprob_diff"] == pytest.approx(b["logprob_diff"], abs=1e-4)

    def no_device(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(evaluation, "score_and_generate", no_device)
    from pythia_sweep.measure.loading import ModelCache

    cache = ModelCache()
    cache.loaded, cache.key = neox, None  # reuse the loaded fixture: the failure is in measuring, not loading
    monkeypatch.setattr(cache, "load", lambda *a, **k: neox)
    failed = run_checkpoint(config, "step1000", task=ROBUST, models=cache)
    assert failed.status == "failed" and failed.error.startswith("OutOfMemoryError: one row at a time does not fit on cpu")


def test_a_task_is_compiled_once_per_model_not_once_per_checkpoint(hub_cache, monkeypatch):
    """A worker keeps its compiled plans (plan.CompiledTasks): the task's prompts are tokenized once for a model's
    checkpoints (the same tokenizer, the same shape), again for a new cache, and measuring reads the plan alone."""
    from pythia_sweep.measure.loading import ModelCache
    from pythia_sweep.measure.plan import CompiledTasks
    from pythia_sweep.task.definition import Task

    tokenized = []
    tokenize = Task.tokenize
    monkeypatch.setattr(Task, "tokenize", lambda self, *args, **kw: tokenized.append(self.name) or tokenize(self, *args, **kw))
    config = SweepConfig(**FAST, task="tasks/decimal-seed.toml", single_heads=False, evidence=False)
    models, plans = ModelCache(), CompiledTasks()
    records = [run_checkpoint(config, revision, task=SEED, models=models, plans=plans) for revision in ("step0", "step1", "step2")]
    assert all(r.ok for r in records) and tokenized == ["decimal-seed"]  # three checkpoints, one compile
    again = run_checkpoint(config, "step2", task=SEED, models=models)  # no plans kept: compiled for this checkpoint
    assert tokenized == ["decimal-seed"] * 2 and again.conditions == records[2].conditions
    monkeypatch.setattr(Task, "tokenize", lambda *args, **kw: pytest.fail("measure re-entered the task"))
    assert run_checkpoint(config, "step4", task=SEED, models=models, plans=plans).ok
