"""Prompt sets and the three alignments of clean and buggy positions."""

import pytest

from pythia_sweep.errors import ConfigError
from pythia_sweep.prompts import PromptPair, align_positions, encode_with_offsets, is_trap, make_prompts, validate_pair

CLEAN = "Which is bigger: 9.8 or 9.11?"
BUGGY = "Q: Which is bigger: 9.8 or 9.11?\nA:"


@pytest.fixture(scope="module")
def tok():
    from pythia_sweep.demo_family import build_tokenizer, corpus

    return build_tokenizer(corpus(1500, seed=1), vocab_size=200)


def test_seed_preset_is_the_methodology_pair_counted_15_times():
    (pair,) = make_prompts("seed", 15)
    assert (pair.clean, pair.buggy, pair.correct, pair.wrong, pair.weight) == (CLEAN, BUGGY, "9.8", "9.11", 15)


def test_robust_preset_varies_pair_order_and_template():
    pairs = make_prompts("robust")
    assert len(pairs) == len({p.id for p in pairs}) == 48
    assert {p.correct for p in pairs} >= {"9.8", "3.9", "5.7", "8.6"}
    assert all(p.weight == 1 and is_trap(p.correct, p.wrong) for p in pairs)
    assert any(p.buggy.startswith("Q: Which is bigger: 9.11 or 9.8?") for p in pairs)  # both orders


def test_prompt_without_its_answer_is_refused():
    with pytest.raises(ConfigError, match="mentions the answer '9.11'"):
        validate_pair(PromptPair("x", "Which is bigger: 9.8 or 9.12?", "Q: 9.8 or 9.12\nA:", "9.8", "9.11"))
    with pytest.raises(ConfigError, match="trap"):
        validate_pair(PromptPair("x", "1.2 or 1.3?", "Q: 1.2 or 1.3?\nA:", "1.3", "1.2"))


def test_prefix_and_suffix_maps(tok):
    nc, nb = len(encode_with_offsets(tok, CLEAN)[0]), len(encode_with_offsets(tok, BUGGY)[0])
    assert nb > nc
    assert align_positions(tok, CLEAN, BUGGY, "prefix") == [(i, i) for i in range(nc)]
    assert align_positions(tok, CLEAN, BUGGY, "suffix") == [(nb - nc + i, i) for i in range(nc)]


def test_shared_text_maps_the_same_tokens_of_the_shared_text(tok):
    clean_ids, clean_off = encode_with_offsets(tok, CLEAN)
    buggy_ids, buggy_off = encode_with_offsets(tok, BUGGY)
    pairs = align_positions(tok, CLEAN, BUGGY, "shared-text")
    assert pairs
    for b, c in pairs:
        assert buggy_ids[b] == clean_ids[c]
        assert BUGGY[slice(*buggy_off[b])] == CLEAN[slice(*clean_off[c])]
    # The clean prompt sits at character 3 of the buggy one: every mapped token is shifted by exactly that.
    assert all(buggy_off[b][0] == clean_off[c][0] + 3 for b, c in pairs)
    # The numbers, where the comparison lives, are all mapped; "Q:" and "A:" are not.
    mapped_text = "".join(CLEAN[slice(*clean_off[c])] for _, c in pairs)
    assert "9.8 or 9.11?" in mapped_text
    assert all(buggy_off[b][0] >= 3 and buggy_off[b][1] <= len(BUGGY) - 3 for b, _ in pairs)


def test_unknown_alignment_is_refused(tok):
    with pytest.raises(ConfigError, match="align='middle'"):
        align_positions(tok, CLEAN, BUGGY, "middle")
