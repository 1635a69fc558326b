"""How one sweep measures: a frozen, validated record of every choice that changes a number.

What is asked (prompts, answers, head groups, contrasts) is the task file the config names (task/definition.py);
how it is measured (model, checkpoints, patching method, controls) is here. Each field's declared type is checked,
strictly, on construction (pythia_sweep/validation.py): the refusal names the field, the value and what is allowed.
A sweep's identity (`sweep_id`) hashes the fields that change results together with the task's content, so
rerunning the same config resumes the same sweep, and any change that would alter a number, the task file's
included, starts a new one.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import Field, create_model

from pythia_sweep.digest import content_digest
from pythia_sweep.errors import ConfigError, did_you_mean
from pythia_sweep.validation import STRICT, at_least, one_of, validated

SCHEDULES = ("seed", "log", "all")
SITES = ("head", "post-projection")
ALIGNMENTS = ("shared-text", "suffix", "prefix")
PATCH_DURING = ("prompt", "every-step")
METHODS = ("per-head", "upstream", "both")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
EXECUTORS = ("auto", "fast", "plain")  # measure/evaluation.choose_executor
UNPUBLISHED = ("refuse", "list")  # what a scheduled revision the model does not publish does (hub/revisions.check_published)
HEAD_MAP_METHODS = ("attribution", "ig-inputs")  # measure/headmap.attribution: the gradient at the corrupted run, or averaged along the inputs' path

# The upstream (methodology) way of measuring, kept runnable so the two can be compared.
UPSTREAM_METHOD = {"site": "post-projection", "align": "prefix", "patch_during": "every-step"}


# Settings added after sweeps were recorded: they join the sweep's identity only when set, so the sweeps recorded
# before them keep their sweep_id (and resume) while they are left at their defaults.
ADDED_LATER = ("head_map", "head_map_top_k", "head_map_method", "head_map_steps", "circuits", "circuit_target")

# The declared types a field's value is checked by (pythia_sweep/validation.py: strict, so 1 is not a bool and "6"
# not a layer); each type's description is its refusal.
Str = Annotated[str, Field(description="a str")]
Flag = Annotated[bool, Field(description="a bool")]
Checkpoints = Annotated[Literal[SCHEDULES] | tuple[str, ...], Field(description=f"one of {SCHEDULES} or a list of revisions")]
Share = Annotated[float, Field(gt=0, le=1, description="a share of the gap, above 0 and at most 1 (e.g. 0.8)")]


@dataclass(frozen=True)
class SweepConfig:
    model: Str = "EleutherAI/pythia-160m"  # Hub repo id whose step* branches are the checkpoints
    checkpoints: Checkpoints = "log"  # a schedule name (seed/log/all) or explicit revisions
    task: Str = "tasks/decimal-robust.toml"  # the task file: prompts, answers, success rule, head groups, contrasts
    layer: at_least(0) | None = None  # moves the task's groups written without a layer (None: the task's own `layer`)
    site: one_of(SITES) = "head"  # "head": input of the output projection, per head; "post-projection": upstream slices
    align: one_of(ALIGNMENTS) | None = None  # clean/corrupted position alignment (None: the task's own `align`)
    patch_during: one_of(PATCH_DURING) = "prompt"  # "prompt": patch at prefill only; "every-step": also each decoding step
    method: one_of(METHODS) = "per-head"  # "per-head" (site/align/patch_during above), "upstream", or "both" side by side
    single_heads: Flag = True  # also patch each head of the layer alone (the report's heatmap)
    null_subsets: at_least(0) = 20  # random head sets of the first group's size per checkpoint (the null control)
    evidence: Flag = True  # also score attention patterns (ICL, previous-token, induction) on repeated random tokens
    max_new_tokens: at_least(1) = 20  # greedy generation length
    batch_size: at_least(0) = 0  # rows per batch; 0 = sized to the device's free memory (measure/checkpoint.rows_per_batch)
    bootstrap_resamples: at_least(100) = 2000  # resamples for bootstrap intervals
    seed: at_least(0) = 0  # seeds the null subsets and the bootstrap: a rerun reproduces every number
    device: one_of(DEVICES) = "auto"  # "auto" picks cuda when present, else cpu
    dtype: one_of(DTYPES) = "auto"  # "auto": float32 on CPU, bfloat16 on a GPU that supports it (else float16); a NaN or inf reruns wider
    workers: at_least(0) | Literal["auto"] = "auto"  # "auto": Ray, one worker per GPU (up to two CPU ones without); N: N Ray workers; 0: no Ray, in this process
    name: Str = ""  # a human label for the sweep (MLflow run name); defaults to model-task-method
    offline_cache: Str = ""  # read checkpoints offline from this Hugging Face cache (the demo family's); "" = the Hub
    executor: one_of(EXECUTORS) = "auto"  # "auto": the fast path where the model supports it, else the plain way; "fast"; "plain"
    head_map: Flag = False  # also every head of every layer by attribution patching, its top heads checked exactly (measure/headmap.py)
    head_map_top_k: at_least(1) = 8  # heads the map patches exactly (with the task's named heads) to check the attribution
    head_map_method: one_of(HEAD_MAP_METHODS) = "attribution"  # "ig-inputs": integrated gradients over the input embeddings (EAP-IG-inputs), same-length prompts
    head_map_steps: at_least(1) = 5  # ig-inputs: points on the path from the corrupted inputs to the clean ones (m)
    circuits: Flag = False  # also each checkpoint's circuit: every edge by attribution, the fewest top edges whose patched run recovers circuit_target (measure/circuits.py)
    circuit_target: Share = 0.8  # the share of the clean-minus-corrupted gap a circuit must recover, measured by patching
    unpublished: one_of(UNPUBLISHED) = "refuse"  # a revision asked for that the model does not publish: "refuse" stops the command; "list": not measured, listed as asked for

    def __post_init__(self) -> None:
        if isinstance(self.model, list) or (isinstance(self.model, str) and "{" in self.model):
            raise ConfigError("model", self.model, "one Hub repo id here: a study's config (several models, a pattern) is run by "
                              "python -m jobs.sweep, which sweeps each of them (pythia_sweep/run/study.py)")  # fmt: skip
        if isinstance(self.checkpoints, list):
            object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
        validated(DECLARED, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})  # every field by its type
        if self.model.count("/") != 1 or not all(self.model.split("/")):
            raise ConfigError("model", self.model, "a Hub repo id of the form 'org/name'")
        if isinstance(self.checkpoints, tuple):
            if not self.checkpoints or not all(self.checkpoints):
                raise ConfigError("checkpoints", self.checkpoints, "a non-empty list of revision names")
            if len(set(self.checkpoints)) != len(self.checkpoints):
                raise ConfigError("checkpoints", self.checkpoints, "revisions without repeats")
        if not self.task.endswith(".toml") and not (SHIPPED / "tasks" / f"{self.task}.toml").is_file():
            raise ConfigError("task", self.task, f"a task file (.toml), or a shipped task's name ({shipped_names('tasks')})")

    @property
    def attribution_steps(self) -> int:
        """measure/headmap.attribution's `steps`: 0 for attribution patching, m for EAP-IG-inputs."""
        return self.head_map_steps if self.head_map_method == "ig-inputs" else 0

    def methods(self, task_align: str = "shared-text") -> dict[str, dict[str, str]]:
        """The measuring methods this sweep runs, by label: site, alignment and generation-time patching.
        The first is the primary method; the alignment defaults to the task's."""
        per_head = {"site": self.site, "align": self.align or task_align, "patch_during": self.patch_during}
        if self.method == "per-head":
            return {"per-head": per_head}
        if self.method == "upstream":
            return {"upstream": dict(UPSTREAM_METHOD)}
        return {"per-head": per_head, "upstream": dict(UPSTREAM_METHOD)}

    def primary_method(self, task_align: str = "shared-text") -> tuple[str, dict[str, str]]:
        """The primary method's (label, settings): the one the baseline, the null, the head map and discovery use."""
        return next(iter(self.methods(task_align).items()))

    def sweep_id(self, task_digest: str) -> str:
        """A short hash of every field that changes a checkpoint's result, and of the task's content. Not the
        schedule: sweeps of one setting share their records, so a denser schedule (or `refine`) reuses what is
        already measured. Not the task file's path: the same task moved is the same sweep. Not the executor:
        both compute the same rows (tests/test_checkpoint_run.py checks it row by row). Not `unpublished`: it says what
        the schedule may hold, not how a checkpoint is measured."""
        ignored = ("checkpoints", "workers", "batch_size", "name", "task", "offline_cache", "executor", "unpublished")
        defaults = SweepConfig.__dataclass_fields__
        fields = {k: v for k, v in self.to_dict().items() if k not in ignored
                  and not (k in ADDED_LATER and v == defaults[k].default)} | {"task_digest": task_digest}  # fmt: skip
        return content_digest(fields)

    def label(self, task_name: str) -> str:
        layer = "" if self.layer is None else f"-L{self.layer}"
        return self.name or f"{self.model.split('/')[-1]}-{task_name}{layer}-{self.method}"

    def use_offline_cache(self) -> None:
        """Point Hugging Face at `offline_cache`, offline, unless the environment already says where (the
        environment wins, as MLFLOW_TRACKING_URI does). Call before huggingface_hub is imported: it reads these
        variables once, at import."""
        if not self.offline_cache:
            return
        import sys

        if "huggingface_hub" in sys.modules and not os.environ.get("HF_HUB_CACHE"):
            raise ConfigError("offline_cache", self.offline_cache, "set before huggingface_hub is imported (a job's first step)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_CACHE", str(Path(self.offline_cache).resolve()))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes: Any) -> SweepConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name for f in dataclasses.fields(SweepConfig)}
# The fields' declared types as a strict pydantic model: what SweepConfig.__post_init__ checks each value against.
DECLARED = create_model("SweepConfigTypes", __config__=STRICT,
                        **{name: (hint, ...) for name, hint in get_type_hints(SweepConfig, include_extras=True).items()})  # fmt: skip
MOVED_TO_TASK = {  # settings that moved into task files: say where they went
    "preset": 'task = "tasks/decimal-robust.toml" (or decimal-seed.toml): prompt sets are task files now',
    "trials": "weight = N on a prompt pair of the task file",
}
MOVED_HEADS = "a [groups] table in the task file (name = { heads = [0, 2, 4] }): head groups are task data now"


def config_from_dict(values: dict[str, Any]) -> SweepConfig:
    """Build a config from plain data (a TOML table, CLI overrides): unknown keys are refused by name,
    with the closest known one suggested."""
    if not isinstance(values, dict):
        raise ConfigError("config", values, "a table of settings")
    unknown = sorted(set(values) - FIELDS, key=str)
    if unknown:
        key = unknown[0]
        moved = MOVED_TO_TASK.get(key) or (MOVED_HEADS if str(key).endswith("_heads") else None)
        if moved:
            raise ConfigError("setting", key, f"no longer a run setting; use {moved}")
        raise ConfigError("setting", key, f"{did_you_mean(key, sorted(FIELDS))}a known setting ({', '.join(sorted(FIELDS))})")
    try:
        return SweepConfig(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # e.g. an unhashable value that slipped past a check
        raise ConfigError("config", values, str(error)) from error


SHIPPED = Path(__file__).parent / "shipped"  # the task files and run configs that come with the package
SHIPPED_AS = {"tasks": ("task", "tasks"), "configs": ("run config", "jobs/configs")}  # kind -> (what, its folder in a checkout)


def locate(path: str | Path, field: str, kind: str) -> Path:
    """The file a user named: the path as given where it exists, else the shipped task or config of that name
    (`induction`, `induction.toml`, or the checkout's `tasks/induction.toml` from any folder, installed or not)."""
    given = Path(path)
    if given.is_file():
        return given
    what, folder = SHIPPED_AS[kind]
    shipped = SHIPPED / kind / (given.name if given.suffix == ".toml" else f"{given.name}.toml")
    if shipped.is_file() and given.parent.as_posix() in (".", folder):
        return shipped
    raise ConfigError(field, str(path), f"an existing TOML file, or a shipped {what}'s name ({shipped_names(kind)})")


def shipped_names(kind: str) -> str:
    return ", ".join(sorted(p.stem for p in (SHIPPED / kind).glob("*.toml")))


def read_toml(path: str | Path, field: str, kind: str) -> dict[str, Any]:
    """A TOML file's table (a path, or a shipped file's name: `locate`), or a one-line refusal naming the file
    (missing, or not valid TOML)."""
    try:
        return tomllib.loads(locate(path, field, kind).read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(field, str(path), f"valid TOML ({error})") from error


def load_config(path: str | Path, **overrides: Any) -> SweepConfig:
    """Read a TOML run config (see jobs/configs/) and apply overrides given as keyword arguments. A refusal of
    the file's own values names the file; one of an override names only the setting."""
    values = read_toml(path, "config file", "configs")
    if "study" in values:  # pythia_sweep/run/study.py reads these; a one-model command must not drop the key silently
        raise ConfigError(f"{path}: study", values["study"], "a study's setting: python -m jobs.sweep runs a study's config; "
                          "this command takes one model's config (without `study`)")  # fmt: skip
    try:
        config_from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error.field}", error.value, error.allowed) from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(values)
