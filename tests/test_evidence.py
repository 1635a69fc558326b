"""The second line of evidence: attention-pattern scores and the in-context-learning score, checked against
answers known without the code's own formulas (uniform attention, hand-set attention, Hugging Face's own loss,
hand-written detection patterns), on tiny GPT-NeoX and Llama models built here."""

import json

import pytest
import torch

from pythia_sweep.errors import ConfigError
from pythia_sweep.measure.evidence import (
    attention_evidence,
    detection_patterns,
    eager_attention,
    random_token_ids,
    repeated_tokens,
    start_token,
)

L = 6  # tokens in the first occurrence: sequences are BOS + 6 + 6 = 13 tokens


@pytest.fixture(scope="module")
def tokenizer():
    from pythia_sweep.demo.demo_family import build_tokenizer, corpus

    return build_tokenizer(corpus(300, seed=2), vocab_size=300)


def tiny_neox(vocab: int, seed: int = 0):
    from transformers import GPTNeoXForCausalLM

    from pythia_sweep.demo.demo_family import tiny_neox_config

    torch.manual_seed(seed)
    config = tiny_neox_config(vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, rotary_pct=1.0)
    return GPTNeoXForCausalLM(config).eval()


def tiny_llama(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def blind_queries_and_keys(model) -> None:
    """Zero every query and key: each head then attends uniformly to all positions up to its own."""
    with torch.no_grad():
        if model.config.model_type == "gpt_neox":
            head_dim = model.config.hidden_size // model.config.num_attention_heads
            for layer in model.gpt_neox.layers:
                qkv = layer.attention.query_key_value  # rows per head: [query | key | value], head_dim each
                for h in range(model.config.num_attention_heads):
                    rows = slice(3 * h * head_dim, (3 * h + 2) * head_dim)
                    qkv.weight[rows] = 0
                    qkv.bias[rows] = 0
        else:
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.zero_()
                layer.self_attn.k_proj.weight.zero_()


@pytest.mark.parametrize("build", [tiny_neox, tiny_llama], ids=["gpt_neox", "llama"])
def test_uniform_attention_gives_the_hand_computed_scores(tokenizer, build):
    # Uniform causal attention puts 1/(i+1) on each key of query row i. Previous-token rows are 1..2L, induction
    # rows the second repeat L+1..2L, each with one target (the tokens of a sequence are distinct).
    model = build(len(tokenizer))
    blind_queries_and_keys(model)
    result = attention_evidence(model, tokenizer, n_sequences=3, length=L)
    previous = sum(1 / (i + 1) for i in range(1, 2 * L + 1)) / (2 * L)
    induction = sum(1 / (i + 1) for i in range(L + 1, 2 * L + 1)) / L
    assert len(result["previous_token"]) == len(result["induction"]) == 2
    for layer in range(2):
        assert result["previous_token"][layer] == pytest.approx([previous] * 4, abs=1e-5)
        assert result["induction"][layer] == pytest.approx([induction] * 4, abs=1e-5)


def test_hand_set_attention_scores_one_where_the_head_follows_the_pattern(tokenizer, monkeypatch):
    # Replace GPT-NeoX's eager attention by fixed patterns: head 0 attends to the previous token, head 1 from
    # the second repeat to the token after the earlier occurrence (and elsewhere to BOS), heads 2-3 to themselves.
    from transformers.models.gpt_neox import modeling_gpt_neox

    def fixed(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        n, heads, t, _ = query.shape
        weights = torch.zeros(n, heads, t, t, dtype=query.dtype)
        i = torch.arange(t)
        weights[:, 0, 0, 0] = 1
        weights[:, 0, i[1:], i[:-1]] = 1
        weights[:, 1, :, 0] = 1
        second = i[L + 1 :]  # 1 + L + k holds the token at 1 + k; the one after it is at 2 + k = position - L + 1
        weights[:, 1, second, 0] = 0
        weights[:, 1, second, second - L + 1] = 1
        weights[:, 2:, i, i] = 1
        return (weights @ value).transpose(1, 2).contiguous(), weights

    monkeypatch.setattr(modeling_gpt_neox, "eager_attention_forward", fixed)
    model = tiny_neox(len(tokenizer))
    assert model.config._attn_implementation != "eager"  # the function must switch to eager to see these
    result = attention_evidence(model, tokenizer, n_sequences=2, length=L)
    for layer in range(2):
        assert result["previous_token"][layer] == pytest.approx([1.0, 1 / (2 * L), 0.0, 0.0])  # head 1: row 1 -> BOS
        assert result["induction"][layer] == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_icl_score_is_hugging_faces_loss_on_the_second_repeat_minus_the_first(tokenizer):
    model = tiny_neox(len(tokenizer), seed=3)
    result = attention_evidence(model, tokenizer, n_sequences=4, length=L, seed=5)
    tokens = repeated_tokens(random_token_ids(tokenizer, model.config.vocab_size), 4, L, seed=5, start=start_token(tokenizer))
    assert tokens.shape == (4, 2 * L + 1) and (tokens[:, 1 : L + 1] == tokens[:, L + 1 :]).all()

    def loss_on(positions: slice) -> float:  # Hugging Face's own shifted cross-entropy, over the labelled tokens
        labels = torch.full_like(tokens, -100)
        labels[:, positions] = tokens[:, positions]
        with torch.no_grad():
            return model(input_ids=tokens, labels=labels).loss.item()

    first, second = loss_on(slice(1, L + 1)), loss_on(slice(L + 1, 2 * L + 1))
    assert result["loss_first_repeat"] == pytest.approx(first, abs=1e-5)
    assert result["loss_second_repeat"] == pytest.approx(second, abs=1e-5)
    assert result["icl_score"] == pytest.approx(second - first, abs=1e-5)


def test_detection_patterns_match_transformer_lens_on_a_sequence_with_duplicates():
    # tokens 5 7 5 9 7: token 5 repeats at 2 (earlier at 0, followed by position 1); 7 repeats at 4 (earlier
    # at 1, followed by position 2). TransformerLens: duplicate-token pattern shifted one key to the right.
    patterns = detection_patterns(torch.tensor([[5, 7, 5, 9, 7]]))
    induction = torch.zeros(5, 5, dtype=torch.bool)
    induction[2, 1] = induction[4, 2] = True
    previous = torch.zeros(5, 5, dtype=torch.bool)
    previous[1, 0] = previous[2, 1] = previous[3, 2] = previous[4, 3] = True
    assert torch.equal(patterns["induction"][0], induction)
    assert torch.equal(patterns["previous_token"][0], previous)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_implementation_and_mode_are_left_as_found(tokenizer, implementation):
    model = tiny_neox(len(tokenizer))
    model.set_attn_implementation(implementation)
    model.train()
    attention_evidence(model, tokenizer, n_sequences=1, length=L)
    assert model.config._attn_implementation == implementation
    assert model.training


def test_attention_implementation_is_restored_when_the_forward_fails(tokenizer):
    model = tiny_neox(len(tokenizer))

    def fail(module, args, output):
        assert model.config._attn_implementation == "eager"
        raise RuntimeError("boom")

    handle = model.gpt_neox.layers[1].register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        attention_evidence(model, tokenizer, n_sequences=1, length=L)
    handle.remove()
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError), eager_attention(model):
        raise ValueError
    assert model.config._attn_implementation == "sdpa"


def test_result_is_plain_json_and_shaped_layers_by_heads(tokenizer):
    model = tiny_llama(len(tokenizer))
    result = attention_evidence(model, tokenizer, n_sequences=2, length=L)
    assert json.loads(json.dumps(result)) == result
    assert (result["n_sequences"], result["length"], result["seed"]) == (2, L, 0)
    # the scores by hand, element by element, from the same forward's attention weights (N, H, T, T)
    tokens = repeated_tokens(random_token_ids(tokenizer, model.config.vocab_size), 2, L, seed=0, start=start_token(tokenizer))
    model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = model(input_ids=tokens, output_attentions=True).attentions
    model.set_attn_implementation("sdpa")
    n, t = tokens.shape
    for layer, weights in enumerate(attentions):
        assert len(result["previous_token"][layer]) == len(result["induction"][layer]) == weights.shape[1] == 4
        for head in range(weights.shape[1]):
            previous = [weights[s, head, i, i - 1].item() for s in range(n) for i in range(1, t)]
            induction = [sum(weights[s, head, i, j + 1].item() for j in range(i) if tokens[s, j] == tokens[s, i])
                         for s in range(n) for i in range(t) if any(tokens[s, j] == tokens[s, i] for j in range(i))]  # fmt: skip
            assert len(induction) == n * L  # each token of the second repeat has exactly one earlier occurrence
            assert result["previous_token"][layer][head] == pytest.approx(sum(previous) / len(previous), abs=1e-6)
            assert result["induction"][layer][head] == pytest.approx(sum(induction) / len(induction), abs=1e-6)


def test_sequences_longer_than_the_model_takes_are_refused_by_name(tokenizer):
    model = tiny_llama(len(tokenizer))  # 64 positions: BOS + 2 x 31 fits, BOS + 2 x 32 does not
    attention_evidence(model, tokenizer, n_sequences=1, length=31)
    with pytest.raises(ConfigError, match="length.*at most 31"):
        attention_evidence(model, tokenizer, n_sequences=1, length=32)


def test_random_tokens_leave_out_special_and_reserved_tokens():
    from tokenizers import AddedToken

    from pythia_sweep.demo.demo_family import build_tokenizer, corpus

    tokenizer = build_tokenizer(corpus(300, seed=2), vocab_size=300)  # its own copy: tokens are added below
    tokenizer.add_tokens([AddedToken("<|reserved_0|>", special=True), AddedToken("  ", special=False)])
    reserved, spaces = tokenizer.convert_tokens_to_ids(["<|reserved_0|>", "  "])
    ids = random_token_ids(tokenizer, vocab_size=len(tokenizer))
    assert tokenizer.eos_token_id not in ids and reserved not in ids
    assert spaces in ids and len(ids) == len(tokenizer) - 2
    assert random_token_ids(tokenizer, vocab_size=100) == [i for i in range(100) if i != tokenizer.eos_token_id]
