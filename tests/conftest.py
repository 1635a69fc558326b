"""Offline fixtures: tiny random-weight GPT-NeoX and Llama models published as step* revisions in a
temporary Hugging Face cache in the Hub's own layout, so the real snapshot_download/from_pretrained run."""

import os
import tempfile

# Hugging Face reads these at import time: set them before anything imports huggingface_hub.
_CACHE_ROOT = tempfile.mkdtemp(prefix="pythia-sweep-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = os.path.join(_CACHE_ROOT, "hub")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["MLFLOW_TRACKING_URI"] = ""  # tests pass their own stores explicitly
# Ray: no token auth for the local test clusters, and resolve "this node" to loopback, never another address.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402

NEOX_REPO = "tiny-test/neox"
LLAMA_REPO = "tiny-test/llama"
STEPS = (0, 1, 2, 4, 1000)


def task_corpus() -> list[str]:
    """Text from the shipped tasks (names, places, years, words), so the tiny tokenizer has their tokens."""
    names = "Mary John Tom James Kate Alice Dan Sarah".split()
    lines = [f"Then, {a} and {b} went to the {p}. {b} gave a {o} to {a}" for a in names for b in names if a != b
             for p in ("store", "garden", "school", "office") for o in ("ring", "book", "drink", "ball")]
    lines += [f"The war lasted from the year 17{y:02d} to the year 18{y:02d}" for y in range(100)] * 3
    lines += [" ".join(f"{y:02d}" for y in range(100))] * 20
    words = "apple river stone cloud green house light music paper table water window garden silver".split()
    lines += [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 10
    return lines


def _tokenizer():
    from pythia_sweep.demo.demo_family import build_tokenizer, corpus

    return build_tokenizer(corpus(1500, seed=1) + task_corpus(), vocab_size=700, digit_pairs=True)


def _neox(vocab, seed):
    from transformers import GPTNeoXForCausalLM

    from pythia_sweep.demo.demo_family import tiny_neox_config

    torch.manual_seed(seed)
    cfg = tiny_neox_config(vocab, hidden_size=48, num_hidden_layers=8, intermediate_size=96)
    return GPTNeoXForCausalLM(cfg).eval()


def _llama(vocab, seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=48, num_hidden_layers=4, num_attention_heads=12, num_key_value_heads=4,
        intermediate_size=96, max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def hub_cache():
    """Publish the tiny families once per session; returns the cache folder."""
    from pythia_sweep.demo.hub_cache import save_revision

    cache = os.environ["HF_HUB_CACHE"]
    tok = _tokenizer()
    with tempfile.TemporaryDirectory() as work:
        for i, step in enumerate(STEPS):
            save_revision(_neox(len(tok), seed=i), tok, cache, NEOX_REPO, f"step{step}", os.path.join(work, "n"))
        # step4 republished with step2's weights: a duplicate, as some public Pythia branches are
        save_revision(_neox(len(tok), seed=2), tok, cache, NEOX_REPO + "-dup", "step2", os.path.join(work, "d"))
        save_revision(_neox(len(tok), seed=2), tok, cache, NEOX_REPO + "-dup", "step4", os.path.join(work, "d2"))
        for i, step in enumerate(STEPS[:2]):
            save_revision(_llama(len(tok), seed=i), tok, cache, LLAMA_REPO, f"step{step}", os.path.join(work, "l"))
    return cache


# The short induction family (pythia_sweep/demo/demo_family.py): trained to step 336, its induction heads form in a
# phase change within it; saved at these steps.
INDUCTION_REPO = "demo-test/induction"
INDUCTION_STEPS = (0, 64, 128, 192, 224, 240, 256, 272, 288, 304, 320, 336)


@pytest.fixture(scope="session")
def induction_family():
    """The short induction family, trained once per session into the temporary cache (test_demo_family, test_study)."""
    from pythia_sweep.demo.demo_family import train_family

    before = torch.get_num_threads()
    train_family(os.environ["HF_HUB_CACHE"], INDUCTION_REPO, steps=INDUCTION_STEPS, log=lambda line: None)
    assert torch.get_num_threads() == before
    return INDUCTION_REPO


@pytest.fixture(scope="session")
def neox(hub_cache):
    from pythia_sweep.hub.fetch import fetch
    from pythia_sweep.measure.loading import load_model

    return load_model(fetch(NEOX_REPO, "step1000").path, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def llama(hub_cache):
    from pythia_sweep.hub.fetch import fetch
    from pythia_sweep.measure.loading import load_model

    return load_model(fetch(LLAMA_REPO, "step1").path, torch.device("cpu"), torch.float32)


def ending_at_once(loaded):
    """A copy of a loaded tiny GPT-NeoX whose every next token is its end-of-text: the final layer norm outputs
    ones (weight 0, bias 1) and only the EOS row of the unembedding reads them. Its generations are only a special
    token, which the scored response (decoded without special tokens) shows as an empty string."""
    import copy

    from pythia_sweep.measure.loading import LoadedModel

    model = copy.deepcopy(loaded.model)
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        model.gpt_neox.final_layer_norm.weight.zero_()
        model.gpt_neox.final_layer_norm.bias.fill_(1.0)
        model.get_output_embeddings().weight.zero_()
        model.get_output_embeddings().weight[eos] = 1.0
    return LoadedModel(model, loaded.tokenizer, loaded.device, loaded.dtype)
