"""Head patching on tiny random models: what changes, what does not, and that hooks never linger."""

import pytest
import torch

from pythia_sweep.errors import ConfigError, UnsupportedModel
from pythia_sweep.measure.patching import (
    attention_layout,
    captured,
    empty_plan,
    fill_plan,
    head_columns,
    patched,
    patched_logits,
)
from pythia_sweep.task.align import align_positions

CLEAN = "Which is bigger: 9.8 or 9.11?"
BUGGY = "Q: Which is bigger: 9.8 or 9.11?\nA:"
EVEN = [0, 2, 4, 6, 8, 10]


def ids(tok, text):
    return tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def site_activation(m, text, layer, site="head"):
    layout = attention_layout(m.model, layer)
    with captured(m.model, layout, site, [layer]) as seen:
        m.model(ids(m.tokenizer, text))
    return seen[layer][0][0]


@pytest.mark.parametrize("site", ["head", "post-projection"])
def test_null_patch_changes_nothing(neox, site):
    with torch.inference_mode():
        plain = neox.model(ids(neox.tokenizer, BUGGY)).logits[0, -1]
    got = patched_logits(neox.model, neox.tokenizer, BUGGY, BUGGY, 6, range(12), site=site)
    assert torch.equal(got, plain)


def test_patch_changes_only_chosen_heads_at_aligned_positions(neox):
    layout = attention_layout(neox.model, 6)
    clean_act = site_activation(neox, CLEAN, 6)  # (Tc, C)
    buggy_act = site_activation(neox, BUGGY, 6)  # (Tb, C)
    pairs = align_positions(neox.tokenizer, CLEAN, BUGGY, "shared-text")
    cols = head_columns(EVEN, layout.head_dim)
    plan = empty_plan(1, buggy_act.shape[0], buggy_act.shape[1], torch.float32, "cpu")
    fill_plan(plan, 0, clean_act, pairs, cols)
    with torch.inference_mode(), patched(neox.model, layout, "head", {6: plan}), captured(neox.model, layout, "head", [6]) as seen:
        neox.model(ids(neox.tokenizer, BUGGY))
    after = seen[6][0][0]
    changed = (after != buggy_act).nonzero()
    assert len(changed) > 0
    assert set(changed[:, 1].tolist()) <= set(cols.tolist())  # only the even heads' columns
    assert set(changed[:, 0].tolist()) <= {b for b, _ in pairs}  # only aligned positions
    for b, c in pairs:
        assert torch.equal(after[b, cols], clean_act[c, cols])
    odd_cols = head_columns([1, 3, 5, 7, 9, 11], layout.head_dim)
    assert torch.equal(after[:, odd_cols], buggy_act[:, odd_cols])


def test_all_heads_post_projection_equals_replacing_attention_output(neox):
    layout = attention_layout(neox.model, 6)
    clean_out = site_activation(neox, CLEAN, 6, site="post-projection")
    pairs = align_positions(neox.tokenizer, CLEAN, BUGGY, "prefix")
    module = neox.model.get_submodule(layout.module_path(6))

    def replace_whole(_m, _a, out):
        out = out.clone()
        for b, c in pairs:
            out[0, b] = clean_out[c]
        return out

    handle = module.register_forward_hook(replace_whole)
    try:
        with torch.inference_mode():
            expected = neox.model(ids(neox.tokenizer, BUGGY)).logits[0, -1]
    finally:
        handle.remove()
    got = patched_logits(neox.model, neox.tokenizer, CLEAN, BUGGY, 6, range(12), site="post-projection", align="prefix")
    assert torch.equal(got, expected)


def test_patch_moves_logits_and_differs_by_site(neox):
    plain = patched_logits(neox.model, neox.tokenizer, BUGGY, BUGGY, 6, EVEN)
    head = patched_logits(neox.model, neox.tokenizer, CLEAN, BUGGY, 6, EVEN, align="suffix")
    post = patched_logits(neox.model, neox.tokenizer, CLEAN, BUGGY, 6, EVEN, site="post-projection", align="suffix")
    assert head.shape == (neox.model.config.vocab_size,)
    assert not torch.allclose(head, plain)
    assert not torch.allclose(head, post)


def hook_count(model, path):
    m = model.get_submodule(path(6))
    return len(m._forward_pre_hooks) + len(m._forward_hooks)


def test_hooks_removed_after_call_and_after_error(neox):
    layout = attention_layout(neox.model, 6)
    patched_logits(neox.model, neox.tokenizer, CLEAN, BUGGY, 6, EVEN)
    assert hook_count(neox.model, layout.module_path) == 0
    plan = empty_plan(1, 3, 48, torch.float32, "cpu")  # wrong length: the hook raises inside the forward
    with pytest.raises(RuntimeError, match="patch plan"):
        with torch.inference_mode(), patched(neox.model, layout, "head", {6: plan}):
            neox.model(ids(neox.tokenizer, BUGGY))
    assert hook_count(neox.model, layout.module_path) == 0
    with pytest.raises(ConfigError, match="heads"):
        patched_logits(neox.model, neox.tokenizer, CLEAN, BUGGY, 6, [12])
    assert hook_count(neox.model, layout.module_path) == 0


def test_llama_family_patches_o_proj(llama):
    layout = attention_layout(llama.model, 2)
    assert layout.module_path(2) == "model.layers.2.self_attn.o_proj"
    plain = patched_logits(llama.model, llama.tokenizer, BUGGY, BUGGY, 2, EVEN)
    moved = patched_logits(llama.model, llama.tokenizer, CLEAN, BUGGY, 2, EVEN, align="suffix")
    with torch.inference_mode():
        assert torch.equal(plain, llama.model(ids(llama.tokenizer, BUGGY)).logits[0, -1])
    assert not torch.allclose(plain, moved)


def test_bad_layer_and_heads_are_refused_by_name(neox):
    with pytest.raises(ConfigError, match=r"layer=8 .*0\.\.7"):
        attention_layout(neox.model, 8)
    for heads, why in (([], "non-empty"), ([0, 0], "repeats"), ([-1], "0..11")):
        with pytest.raises(ConfigError, match=why):
            patched_logits(neox.model, neox.tokenizer, CLEAN, BUGGY, 6, heads)


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10))
    with pytest.raises(UnsupportedModel, match="gpt2.*supported: gpt_neox"):
        attention_layout(model, 0)


def test_heads_in_two_layers_are_patched_together_each_from_its_own_clean_layer(neox):
    """A group spanning layers: both layers' chosen columns take the clean run's values of that layer."""
    layout = attention_layout(neox.model)
    clean = {layer: site_activation(neox, CLEAN, layer) for layer in (2, 5)}
    corrupted_len = ids(neox.tokenizer, BUGGY).shape[1]
    pairs = align_positions(neox.tokenizer, CLEAN, BUGGY, "shared-text")
    plans = {}
    for layer, heads in ((2, [1]), (5, [3, 4])):
        plans[layer] = empty_plan(1, corrupted_len, layout.width, torch.float32, "cpu")
        fill_plan(plans[layer], 0, clean[layer], pairs, head_columns(heads, layout.head_dim))
    with torch.inference_mode(), patched(neox.model, layout, "head", plans), captured(neox.model, layout, "head", [2, 5]) as seen:
        neox.model(ids(neox.tokenizer, BUGGY))
    for layer, heads in ((2, [1]), (5, [3, 4])):
        cols = head_columns(heads, layout.head_dim)
        for b, c in pairs:
            assert torch.equal(seen[layer][0][0][b, cols], clean[layer][c, cols])
    assert hook_count(neox.model, lambda _: layout.module_path(2)) == 0 and hook_count(neox.model, lambda _: layout.module_path(5)) == 0
