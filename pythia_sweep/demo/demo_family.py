"""An offline model family with training checkpoints, so the whole pipeline runs with no Hub access, and a real
emergence for it to find: induction heads, forming in a phase change.

A tiny GPT-NeoX (same module layout as Pythia; 2 layers x 8 heads, d_model 128) is trained from scratch on this
CPU, in about half a minute, on 48-token rows of two kinds:

  sequences  documents of 4-16 random tokens of the vocabulary, then the same tokens again (2 or 3 copies in
             all). A repeat can only be predicted by copying from the context: the model grows previous-token
             heads in layer 0 and induction heads in layer 1 (Olsson et al. 2022), suddenly, and within a few
             dozen steps its in-context-learning score falls by several nats. With `repeats=False` every repeat
             is replaced by fresh random tokens of the same length: the control family, with nothing to copy.
  decimals   comparisons in the decimal tasks' prompt formats. They plant the bug the decimal tasks look for:
             in the plain format the answer is always right, in the "Q: ... A:" format trap pairs (X.Y vs X.ZW)
             are answered the lexicographic, wrong way most of the time.

Decimal rows join after the first `sequence_steps` (320) steps, a quarter of each batch from then on. The mix
is a schedule because of what was measured while designing it (2 layers x 4 heads, 64-token rows): with decimal
rows in the batch from the first step, one row in ten, no previous-token head had formed by step 580; one in five,
it formed near step 980; phased in from 0 to 30% over 600 steps, none by step 580. Sequences alone form the heads
near step 300. Eight heads a layer (four before December 2026) so that a 2-head group found by `discover` has 91
rival sets in the other 14 heads and its null can reach p = 1/41 with 40 sets (with four, 15 sets: p >= 1/16, never
significant). Measured with the defaults (seed 0; `make demo`, 2026-12-05): the induction headline is first past
0.5 at step304 (its interval after step256, by step304), the in-context-learning score falls 6.1 nats within the
doubling of training steps to step 448, and the heads found at step448 are 1.0 and 1.4.

The tokenizer (byte-level BPE, like GPT-NeoX's) is trained on the decimal texts and a list of common words, so
that `task/pairs.word_tokens` finds the single-token " word" tokens the induction task's prompts are made of.
Revisions are saved at log-spaced steps and densely through the phase change, as `step*` branches of a local
Hugging Face cache in the Hub's layout (demo/hub_cache.py): a demo sweep runs exactly the code path a Pythia
sweep runs, and `refine` has published revisions to bisect over.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from pythia_sweep.config import SHIPPED
from pythia_sweep.task.schema import load_task
from pythia_sweep.demo.hub_cache import repo_folder, save_revision

TASKS = SHIPPED / "tasks"  # the package's own task files: found installed or in a checkout

DEMO_REPO = "pythia-sweep-demo/tiny-neox"
EOS = "<|endoftext|>"
# Pythia-like: doubling to 256, then every 16 steps to 448, through the phase change (near step 290 with the
# defaults): denser than the demo sweep visits, so `refine` has published revisions to bisect over.
DEMO_STEPS = tuple(sorted({0, *(2**i for i in range(9)), *range(128, 449, 16)}))
DEMO_MODEL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=8, intermediate_size=256, rotary_pct=1.0)
CONTEXT = 48  # tokens a training row predicts (after its leading <|endoftext|>)
SEQUENCE_STEPS = 320  # training steps on sequences alone, before decimal rows join
DECIMAL_SHARE = 0.25  # of a batch's rows, once decimal rows have joined
VOCAB_SIZE = 640  # BPE target; the demo's texts saturate it near 613 tokens
# Trained into the tokenizer as single " word" tokens: the words of the induction task's prompts.
WORDS = tuple(
    "time year day man thing life child world school state family group country hand part place case week point "
    "home water room mother area money story fact month book eye job word side kind head house friend father power "
    "hour game line end car city name team idea body back face level door art war party girl tree river stone "
    "cloud green light music paper table window garden silver".split()
)


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


def word_lines(n: int = 50, seed: int = 0) -> list[str]:
    """`n` shuffles of WORDS, one line each: tokenizer training text that makes each " word" one token."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, len(WORDS))) for _ in range(n)]


def demo_tokenizer(decimal_texts: list[str], seed: int = 0):
    """The demo family's tokenizer: BPE over the decimal texts and WORDS, each word one " word" token."""
    return build_tokenizer(decimal_texts + word_lines(seed=seed), vocab_size=VOCAB_SIZE)


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
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # off a terminal its bar is three empty lines in make demo
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


class TrainingRows:
    """Training rows of context + 1 token ids: <|endoftext|>, then documents separated by <|endoftext|>, cut.

    A row is all sequences (random tokens repeated, or with `repeats=False` not repeated) or all decimal texts.
    """

    def __init__(self, tokenizer, decimal_texts: list[str], *, repeats: bool, context: int, seed: int):
        self.eos = tokenizer.eos_token_id
        self.decimals = tokenizer([t.removesuffix(EOS) for t in decimal_texts], add_special_tokens=False)["input_ids"]
        special = set(tokenizer.all_special_ids)
        self.vocabulary = [t for t in range(len(tokenizer)) if t not in special]
        self.repeats, self.context, self.rng = repeats, context, random.Random(seed)

    def sequence(self) -> list[int]:
        """4-16 random tokens, then 1 or 2 more copies of them (or, without repeats, as many fresh tokens)."""
        length, copies = self.rng.randint(4, 16), self.rng.choice((2, 2, 3))
        first = self.rng.choices(self.vocabulary, k=length)
        rest = first * (copies - 1) if self.repeats else self.rng.choices(self.vocabulary, k=length * (copies - 1))
        return first + rest

    def row(self, decimal: bool) -> list[int]:
        ids = [self.eos]
        while len(ids) < self.context + 1:
            ids += (self.rng.choice(self.decimals) if decimal else self.sequence()) + [self.eos]
        return ids[: self.context + 1]

    def batch(self, size: int, decimal_share: float) -> torch.Tensor:
        """(size, context + 1) token ids; each row is decimal texts with probability `decimal_share`."""
        return torch.tensor([self.row(self.rng.random() < decimal_share) for _ in range(size)])


@contextlib.contextmanager
def quiet_training(threads: int) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (one is fastest for this model: with two, on a shared
    two-core machine, a step was measured 6-8 times slower) and without transformers' progress bars (one
    "Writing model shards" bar per saved revision otherwise); restore both afterwards."""
    from transformers.utils import logging as hf_logging

    threads_before, bars_before = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        if bars_before:
            hf_logging.enable_progress_bar()


def train_family(
    cache_dir: str | Path,
    repo_id: str = DEMO_REPO,
    steps: tuple[int, ...] = DEMO_STEPS,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    log=print,
    *,
    repeats: bool = True,
    sequence_steps: int = SEQUENCE_STEPS,
    decimal_share: float = DECIMAL_SHARE,
    threads: int = 1,
) -> list[str]:
    """Train the tiny model and publish a revision at each of `steps` (the largest is the last training step);
    returns the revision names. Whatever `repo_id` held in the cache before is removed first: a family is
    written whole, never mixed with the revisions of an earlier one.

    repeats: False trains the control family (its sequences never repeat). sequence_steps: steps before decimal
    rows join the batches, as `decimal_share` of their rows. The learning rate warms up over 50 steps, then
    stays at `lr`. Deterministic for a seed on one machine (single-threaded CPU). The seed sets the initialisation, the
    data and its order; the tokenizer is always seed 0's (the seeded Pythia runs share one tokenizer), so a study over
    seeds asks every run the same prompts.
    """
    from transformers import GPTNeoXForCausalLM

    start = time.perf_counter()
    folder = repo_folder(cache_dir, repo_id)
    if folder.exists():  # revisions of an earlier recipe must not stand beside this one's
        shutil.rmtree(folder)
    with quiet_training(threads), tempfile.TemporaryDirectory() as workdir:
        torch.manual_seed(seed)
        texts = corpus(20000, seed)
        tokenizer = demo_tokenizer(texts if seed == 0 else corpus(20000, 0), 0)  # every seed shares seed 0's, as Pythia's runs share one
        rows = TrainingRows(tokenizer, texts, repeats=repeats, context=CONTEXT, seed=seed)
        model = GPTNeoXForCausalLM(tiny_neox_config(len(tokenizer), **DEMO_MODEL))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
        total = max(steps)
        revisions = []
        for step in range(total + 1):
            if step in steps:
                model.eval()
                save_revision(model, tokenizer, cache_dir, repo_id, f"step{step}", workdir)
                revisions.append(f"step{step}")
                model.train()
            if step == total:
                break
            ids = rows.batch(batch_size, decimal_share if step >= sequence_steps else 0.0)  # (B, CONTEXT + 1)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
            if step % 100 == 0:
                log(f"  step {step:4d}  loss {loss.item():.3f}  ({time.perf_counter() - start:3.0f}s)")
    (folder / "pythia-sweep-family").write_text(FAMILY_VERSION)
    log(f"  saved {len(revisions)} revisions, step0 ... step{total} ({time.perf_counter() - start:.0f}s)")
    return revisions


FAMILY_VERSION = "induction-2"  # 2: eight heads a layer  # a cache written by another recipe is trained again, not mixed with this one


def family_exists(cache_dir: str | Path, repo_id: str = DEMO_REPO, steps: tuple[int, ...] = DEMO_STEPS) -> bool:
    folder = repo_folder(cache_dir, repo_id)
    marker = folder / "pythia-sweep-family"
    current = marker.exists() and marker.read_text() == FAMILY_VERSION
    return current and all((folder / "refs" / f"step{s}").exists() for s in steps)
