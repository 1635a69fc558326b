"""A study: one task and one schedule over several training runs of a family (seeds, sizes), read from a run config
whose `model` names several repos: a list, or a pattern with a numeric range (PolyPythias, van der Wal et al. 2025):

    model = "EleutherAI/pythia-160m-seed{1..9}"          # seed1 ... seed9
    model = ["EleutherAI/pythia-160m", "EleutherAI/pythia-160m-seed{1..3}"]
    study = "pythia-160m-seeds"                          # the study's name (default: the config file's name)

Each model is swept as it would be alone (its own parent run and sweep_id, resumed on its own); the study is a tag on
those parent runs (tracking/links.study_tag), and run/driver.run_study schedules all their checkpoints over the same workers.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from pythia_sweep.config import SweepConfig, config_from_dict, read_toml
from pythia_sweep.errors import ConfigError
from pythia_sweep.validation import ShortName, validated

RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")  # {1..9}: both ends included, as a shell's brace expansion
# What a study's `model` may be: checked by this declared type, its description the refusal.
MODELS = Annotated[str | Annotated[list[str], Field(min_length=1)],
                   Field(description='a Hub repo id, a pattern such as "EleutherAI/pythia-160m-seed{1..9}", or a non-empty list of them')]  # fmt: skip


def expand_models(spec: Any, field: str = "model") -> list[str]:
    """Every repo id a `model` setting names, in order: a string or a list of strings, each with any number of
    `{a..b}` ranges (a <= b). Refuses an empty list, a range backwards, a brace left unexpanded and a repeat."""
    validated(MODELS, spec, field)
    names = [spec] if isinstance(spec, str) else spec
    out = []
    for name in names:
        ranges = RANGE.findall(name)
        for low, high in ranges:
            if int(low) > int(high):
                raise ConfigError(field, name, f"a range {{low..high}} with low <= high ({{{low}..{high}}} runs backwards)")
        parts = RANGE.split(name)  # text, low, high, text, low, high, ..., text
        texts, lows, highs = parts[0::3], parts[1::3], parts[2::3]
        for values in itertools.product(*(range(int(a), int(b) + 1) for a, b in zip(lows, highs))):
            expanded = texts[0] + "".join(str(v) + text for v, text in zip(values, texts[1:]))
            if "{" in expanded or "}" in expanded:
                raise ConfigError(field, name, "a pattern whose braces are ranges {low..high} of whole numbers")
            out.append(expanded)
    repeated = next((n for n in out if out.count(n) > 1), None)
    if repeated:
        raise ConfigError(field, spec, f"each repo once ({repeated} is named twice)")
    return out


@dataclass(frozen=True)
class Study:
    name: str  # the study's tag on each of its parent runs
    configs: tuple[SweepConfig, ...]  # one per model, equal but for the model
    named: bool  # the config file names a study (`study = ...`) or several models: report it as one

    @property
    def models(self) -> list[str]:
        return [c.model for c in self.configs]


def load_study(path: str | Path, **overrides: Any) -> Study:
    """Read a run config that may name several models (and a `study` name); overrides as `config.load_config`'s
    (an overriding `model` may be a pattern or a list too). A refusal of the file's own values names the file."""
    values = read_toml(path, "config file", "configs")
    name = values.pop("study", None)
    given = {k: v for k, v in overrides.items() if v is not None}
    spec = given.pop("model", values.get("model", SweepConfig.model))
    where = f"{path}: " if "model" not in overrides or overrides["model"] is None else ""
    models = expand_models(spec, f"{where}model")
    validated(ShortName | None, name, f"{path}: study")
    configs = []
    for model in models:
        try:
            config_from_dict({**values, "model": model})
        except ConfigError as error:
            raise ConfigError(f"{path}: {error.field}", error.value, error.allowed) from None
        configs.append(config_from_dict({**values, **given, "model": model}))
    return Study(name or Path(path).stem, tuple(configs), named=name is not None or len(models) > 1)
