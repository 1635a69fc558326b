"""Prompt sets and the three alignments of clean and buggy positions."""

import pytest

from pythia_sweep.errors import ConfigError
from pythia_sweep.task.align import align_positions, encode_with_offsets

CLEAN = "Which is bigger: 9.8 or 9.11?"
BUGGY = "Q: Which is bigger: 9.8 or 9.11?\nA:"


@pytest.fixture(scope="module")
def tok():
    from pythia_sweep.demo.demo_family import build_tokenizer, corpus

    return build_tokenizer(corpus(1500, seed=1), vocab_size=200)


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


@pytest.mark.parametrize("corrupt", ["answer", "previous"])
def test_repeated_tokens_corruptions_change_what_they_say(corrupt):
    """"answer": the answer word replaced, everything else in place. "previous": the same words, the word before the
    answer and the second-to-last traded, so the repeated prefix is followed, in its first occurrence, by the last word
    (the corrupted answer) and the answer word stands where it stood."""
    from pythia_sweep.demo.demo_family import demo_tokenizer
    from pythia_sweep.task.pairs import make_pairs, word_tokens
    from pythia_sweep.task.prompts_schema import RepeatedTokensPrompts

    tok = demo_tokenizer([])  # each of its words one token
    spec = RepeatedTokensPrompts.model_validate({"kind": "repeated-tokens", "count": 6, "length": 8, "repeat": 3, "seed": 1, "corrupt": corrupt})
    words = {tok.decode([t]) for t in word_tokens(tok)}
    for pair in make_pairs("t.toml", spec, tok):
        clean, corrupted = _split(pair.clean, words), _split(pair.corrupted, words)
        assert len(clean) == len(corrupted) == 8 + 3 and clean[8:] == corrupted[8:] == clean[:3]  # the prefix, repeated
        (answer,), (other,) = pair.correct, pair.wrong
        assert clean[3] == answer and answer != other
        if corrupt == "answer":
            assert corrupted[:8] == clean[:3] + [other] + clean[4:8]
        else:
            assert sorted(corrupted[:8]) == sorted(clean[:8]) and corrupted[3] == answer  # the copied word in place
            assert corrupted[corrupted.index(clean[2]) + 1] == other == clean[7]  # what now follows the prefix's last word


def _split(text: str, words: set[str]) -> list[str]:
    """A prompt of single-token words back into its words (each starts with a space)."""
    parts = [" " + w for w in text.split(" ") if w]
    assert all(p in words for p in parts), parts
    return parts
