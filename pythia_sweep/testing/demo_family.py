"""An offline model family with training checkpoints, so the whole pipeline runs with no Hub access.

A tiny GPT-NeoX (same module layout as Pythia, 12 heads per layer, 8 layers) is trained from scratch on
this CPU on a synthetic corpus of decimal comparisons in both prompt formats. The corpus plants the bug
the experiment looks for: in the plain format the answer is always right, in the "Q: ... A:" format trap
pairs (X.Y vs X.ZW) are answered the lexicographic, wrong way most of the time. Its answers really change
over training, and it is saved at log-spaced steps as `step*` branches of a local Hugging Face cache in
the Hub's layout (testing/hub_cache.py), so a demo sweep runs exactly the code path a Pythia sweep runs.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path

import torch

from pythia_sweep.tasks import load_task
from pythia_sweep.testing.hub_cache import repo_folder, save_revision

TASKS = Path(__file__).resolve().parents[2] / "tasks"

DEMO_REPO = "pythia-sweep-demo/tiny-neox"
EOS = "<|endoftext|>"
# Pythia-like: doubling to 512, then regular; denser than the demo sweep visits (the demo config takes the
# doubling ones), so `refine` has published revisions to bisect over, as it has for Pythia.
DEMO_STEPS = tuple(sorted({0, *(2**i for i in range(10)), *range(128, 513, 32), 1000, 1500}))


def random_decimal_pair(rng: random.Random) -> tuple[str, str, bool]:
    """(bigger, smaller, is_trap): a trap pair X.Y vs X.ZW, or an ordinary pair of decimals."""
    whole = rng.randint(1, 9)
    if rng.random() < 0.6:  # trap: one fractional digit beats two (0.8 > 0.11 though 11 > 8)
        y = rng.randint(2, 9)
        zw = rng.randint(10, y * 10 - 1)
        return f"{whole}.{y}", f"{whole}.{zw}", True
    a, b = rng.sample(range(1, 10), 2)
    return f"{whole}.{max(a, b)}", f"{whole}.{min(a, b)}", False


def corpus(n: int, seed: int = 0, bug_rate: float = 0.85) -> list[str]:
    """Comparison texts in the clean and buggy formats of every template, both orders."""
    rng = random.Random(seed)
    templates = [(t["clean"], t["corrupted"]) for t in load_task(TASKS / "decimal-robust.toml").data["prompts"]["templates"]]
    lines = []
    for _ in range(n):
        big, small, trap = random_decimal_pair(rng)
        a, b = (big, small) if rng.random() < 0.5 else (small, big)
        clean_t, buggy_t = rng.choice(templates)
        if rng.random() < 0.5:
            lines.append(f"{clean_t.format(a=a, b=b)} {big} is bigger.{EOS}")
        else:
            answer = small if trap and rng.random() < bug_rate else big  # the planted lexicographic bug
            lines.append(f"{buggy_t.format(a=a, b=b)} {answer}{EOS}")
    return lines


def build_tokenizer(texts: list[str], vocab_size: int = 320, digit_pairs: bool = False):
    """A byte-level BPE tokenizer (like GPT-NeoX's), trained with `tokenizers`, as a transformers tokenizer.
    With `digit_pairs`, numbers split into two-digit pieces (" 1732" -> " 17" "32"), as Pythia's tokenizer
    splits many years."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if digit_pairs:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r" ?\d\d"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([t.replace(EOS, "") for t in texts], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS)


def tiny_neox_config(vocab_size: int, **overrides):
    from transformers import GPTNeoXConfig

    settings = dict(
        vocab_size=vocab_size, hidden_size=96, num_hidden_layers=8, num_attention_heads=12,
        intermediate_size=256, max_position_embeddings=128, rotary_pct=0.25, use_parallel_residual=True,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    settings.update(overrides)
    return GPTNeoXConfig(**settings)


def train_family(
    cache_dir: str | Path,
    repo_id: str = DEMO_REPO,
    steps: tuple[int, ...] = DEMO_STEPS,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    log=print,
) -> list[str]:
    """Train the tiny model and publish a revision at each of `steps`; returns the revision names."""
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    texts = corpus(20000, seed)
    tokenizer = build_tokenizer(texts)
    model = GPTNeoXForCausalLM(tiny_neox_config(len(tokenizer)))
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = max(steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    rng = random.Random(seed)
    revisions = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for step in range(total + 1):
            if step in steps:
                model.eval()
                save_revision(model, tokenizer, cache_dir, repo_id, f"step{step}", workdir)
                revisions.append(f"step{step}")
                log(f"  saved step{step:<5} ({time.perf_counter() - start:5.1f}s)")
                model.train()
            if step == total:
                break
            batch = rng.sample(encoded, batch_size)
            width = max(len(b) for b in batch)
            ids = torch.full((batch_size, width), tokenizer.pad_token_id)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            for r, b in enumerate(batch):
                ids[r, : len(b)], mask[r, : len(b)] = torch.tensor(b), 1
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
            if step % 250 == 0:
                log(f"  step {step:5d}  loss {loss.item():.3f}")
    return revisions


def family_exists(cache_dir: str | Path, repo_id: str = DEMO_REPO, steps: tuple[int, ...] = DEMO_STEPS) -> bool:
    refs = repo_folder(cache_dir, repo_id) / "refs"
    return all((refs / f"step{s}").exists() for s in steps)
