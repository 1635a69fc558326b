"""Issue 33, item 7: no non-finite number enters a record. A model whose float16 run overflows (one MLP's output scaled
past float16's largest value, 65504, as early Pythia checkpoints overflow) fails its batch, loudly, and the checkpoint
is measured again in float32; the record says which dtype its numbers come from. A model that gives an infinity in
float32 too fails the checkpoint, naming the condition. No GPU here: float16 is forced on CPU."""

import copy
import math

import pytest
import torch

from conftest import NEOX_REPO
from pythia_sweep.measure import checkpoint as checkpoint_run
from pythia_sweep.measure.plan import plan_checkpoint
from pythia_sweep.measure import loading
from pythia_sweep.hub.fetch import fetch
from pythia_sweep.config import SweepConfig
from pythia_sweep.errors import NonFiniteNumbers
from pythia_sweep.task.schema import load_task

FAST = dict(model=NEOX_REPO, task="tasks/decimal-seed.toml", null_subsets=2, max_new_tokens=4, bootstrap_resamples=200,
            single_heads=False, evidence=True, head_map=True, head_map_top_k=2, batch_size=8)  # fmt: skip
SCALE = 1e6  # float32 holds the scaled outputs (~1e5 and up); float16 turns them into inf


def overflowing(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with its first MLP's output scaled by SCALE, in place: finite in float32 (the layer norms that read the
    residual stream take any size), infinite in float16."""
    mlp = model.gpt_neox.layers[0].mlp.dense_4h_to_h
    with torch.no_grad():
        mlp.weight.mul_(SCALE)
        mlp.bias.mul_(SCALE)
    return model


def test_auto_picks_bfloat16_on_a_gpu_that_supports_it(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert loading.pick_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert loading.pick_dtype("auto", cuda) == torch.float16
    assert loading.pick_dtype("auto", torch.device("cpu")) == torch.float32


def test_a_float16_overflow_fails_its_batch_naming_its_rows(neox):
    """The fast path, the plain way and the head map each refuse the overflowing float16 model's numbers."""
    from pythia_sweep.measure.evaluation import run_conditions
    from pythia_sweep.measure.headmap import attribution
    from pythia_sweep.measure.batch import pad_id_of
    from pythia_sweep.measure.patching import attention_layout

    config = SweepConfig(**FAST)
    task = load_task(config.task)
    model = overflowing(copy.deepcopy(neox.model)).to(torch.float16)
    loaded = loading.LoadedModel(model, neox.tokenizer, neox.device, torch.float16)
    layout = attention_layout(model)
    plan = plan_checkpoint(config, task, layout.n_layers, layout.n_heads)
    pairs = task.tokenize(loaded.tokenizer, {m["align"] for m in plan.methods.values()})
    for executor in ("fast", "plain"):
        with pytest.raises(NonFiniteNumbers, match=r"non-finite .* in torch\.float16") as caught:
            run_conditions(executor, model, loaded.tokenizer, layout, pairs, plan.conditions, plan.methods, task.success,
                           max_new_tokens=4, batch_size=8)  # fmt: skip
        assert "condition 'baseline'" in str(caught.value) or "conditions baseline" in str(caught.value)
    label, method = next(iter(plan.methods.items()))
    with pytest.raises(NonFiniteNumbers, match=r"non-finite (head-map attribution|logits).* in torch\.float16"):
        attribution(model, layout, pairs, method["align"], pad_id_of(loaded.tokenizer), 8)
    assert math.isfinite(run_conditions("fast", overflowing(copy.deepcopy(neox.model)), loaded.tokenizer, layout, pairs,
                                        plan.conditions, plan.methods, task.success, max_new_tokens=4, batch_size=8)[0]["logprob_diff"])


@pytest.fixture
def float16_on_cpu(monkeypatch, hub_cache):
    """Checkpoints loaded overflowing (`overflowing`), in float16 where "auto" is asked for: a GPU's half precision, here."""
    load = loading.load_model

    def load_overflowing(path, device, dtype):
        loaded = load(path, device, torch.float32)  # scaled in float32, then cast: the scaled weights themselves are finite
        model = overflowing(loaded.model).to(dtype)
        return loading.LoadedModel(model, loaded.tokenizer, device, dtype)

    for module in (checkpoint_run, loading):  # where a checkpoint loads, and where the worker's ModelCache does
        monkeypatch.setattr(module, "load_model", load_overflowing)
    monkeypatch.setattr(checkpoint_run, "pick_dtype", lambda choice, device: torch.float16 if choice == "auto" else getattr(torch, choice))


def test_an_overflowing_checkpoint_is_measured_again_in_float32_and_says_so(float16_on_cpu, capfd):
    """Its numbers are float32's own: equal to the checkpoint measured in float32 from the start."""
    config = SweepConfig(**FAST)
    record = checkpoint_run.run_checkpoint(config, "step1000")
    assert record.ok, record.error
    assert record.settings["dtype"] == "float32"
    (failed,) = record.settings["non_finite"]
    assert failed["dtype"] == "float16" and "non-finite" in failed["error"]
    said = capfd.readouterr().err  # loudly, as it happens
    assert "step1000: non-finite" in said and ": measured again in float32" in said
    direct = checkpoint_run.run_checkpoint(config.replace(dtype="float32"), "step1000")
    assert direct.settings["dtype"] == "float32" and direct.settings["non_finite"] == []
    assert record.responses == direct.responses and record.head_map == direct.head_map and record.evidence == direct.evidence


def test_an_infinity_in_float32_too_fails_the_checkpoint_naming_the_condition(float16_on_cpu, neox):
    """A hook that writes inf into the final layer norm's output whatever the dtype: float16, then float32, then a failed record."""
    fetched = fetch(NEOX_REPO, "step1000")
    models = loading.ModelCache()

    class Poisoned(loading.ModelCache):
        def load(self, path, device, dtype):
            loaded = models.load(path, device, dtype)
            loaded.model.gpt_neox.final_layer_norm.register_forward_hook(lambda module, args, out: out * math.inf)
            return loaded

    record = checkpoint_run.run_checkpoint(SweepConfig(**{**FAST, "evidence": False, "head_map": False}), "step1000", fetched=fetched, models=Poisoned())
    assert record.status == "failed"
    assert record.error.startswith("NonFiniteNumbers: step1000: non-finite logits after the prompt in torch.float32")
    assert "conditions baseline" in record.error and "float32 is the widest dtype tried (after float16)" in record.error
