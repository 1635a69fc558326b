"""A task compiled, once per model, into everything a checkpoint runs: nothing below this re-enters the task.

`compile_task` resolves the task's groups against the model's shape, takes the methods, builds the conditions and the
null's plan, tokenizes and aligns the measured prompt pairs, and keeps the success rule and the contrasts: a `Plan`.
`measure` (checkpoint.py) reads the plan alone. A worker keeps its plans (`CompiledTasks`) across checkpoints: the same
task on a model of the same shape with the same tokenizer is compiled once, not once per checkpoint. `plan_checkpoint`
is the part known from the model's shape alone (no tokenizer): what the pre-flight prints before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.conditions import Condition, make_conditions, null_plan
from pythia_sweep.measure.patching import attention_layout
from pythia_sweep.task.definition import Contrast, SuccessRule, Task, TokenizedPair


@dataclass(frozen=True)
class Plan:
    """What every checkpoint of one model runs: the groups, methods, conditions and null (from the model's shape), and,
    once compiled with the model's tokenizer, the prompt pairs, the success rule and the contrasts."""

    groups: dict[str, tuple[tuple[int, int], ...]]
    methods: dict[str, dict[str, str]]
    primary: str  # the primary method's label (config.primary_method): the head map's and the null's
    conditions: list[Condition]
    null: dict  # conditions.null_plan: the null sets' group, size, pool layers and how many are possible
    shape: tuple[int, int] = (0, 0)  # the model's (layers, heads per layer) it was planned for
    pairs: tuple[TokenizedPair, ...] = ()  # the measured prompts, tokenized and aligned for every method
    success: SuccessRule | None = None
    contrasts: tuple[Contrast, ...] = ()
    discovered: dict = field(default_factory=dict)  # the groups a discovery pass found (not written in the file)
    discovery: dict | None = None  # where and on which prompts they were found (checkpoint.discover_groups)

    def describe(self, n_prompts: int) -> str:
        decoded = sum(c.decode for c in self.conditions)
        return (f"{n_prompts} prompt{'s' * (n_prompts != 1)} x {len(self.conditions)} conditions = {n_prompts * len(self.conditions):,} rows per checkpoint "
                f"({decoded * n_prompts:,} decoded, the rest teacher-forced)")  # fmt: skip

    def null_settings(self) -> dict:
        """The null's plan as the record's settings keep it, with its pool in words (what the verdict says)."""
        layers, excluded = self.null["layers"], self.null["excluded"]
        words = ("the heads of layer " if len(layers) == 1 else "the heads of layers ") + ", ".join(map(str, layers))
        return {"group": self.null["group"], "size": self.null["size"], "pool_layers": layers, "excluded": excluded,
                "possible": self.null["possible"], "pool_description": words + (f" other than the {len(excluded)} discovered" if excluded else "")}  # fmt: skip


def plan_checkpoint(config: SweepConfig, task: Task, n_layers: int, n_heads: int) -> Plan:
    """The conditions of a checkpoint of this task on a model of this shape (the pre-flight and the worker agree)."""
    groups = task.resolve_groups(n_layers, n_heads, config.layer)
    methods = config.methods(task.align)
    null_layers = range(n_layers) if task.null_pool == "all-layers" else None
    found = [h for heads in task.discovered.values() for h in heads]  # never drawn into the null as "random" heads
    conditions = make_conditions(
        groups, list(methods), n_heads, single_heads=config.single_heads, null_count=config.null_subsets, seed=config.seed,
        null_layers=null_layers, null_group=task.headline.plus, null_exclude=found,
    )  # fmt: skip
    return Plan(groups, methods, config.primary_method(task.align)[0], conditions, null_plan(groups, n_heads, null_layers, task.headline.plus, found), (n_layers, n_heads))


def compile_task(config: SweepConfig, task: Task, tokenizer, n_layers: int, n_heads: int) -> Plan:
    """The task, compiled for a model of this shape and this tokenizer: the plan with its prompt pairs tokenized and
    aligned (each answer checked against the tokenizer), the success rule and the contrasts."""
    plan = plan_checkpoint(config, task, n_layers, n_heads)
    pairs = task.tokenize(tokenizer, {m["align"] for m in plan.methods.values()})
    return replace(plan, pairs=tuple(pairs), success=task.success, contrasts=tuple(task.contrasts), discovered=dict(task.discovered),
                   discovery=task.discovery or None)  # fmt: skip


def compile_for(config: SweepConfig, task: Task, loaded) -> Plan:
    """The task compiled for a loaded model (loading.LoadedModel): its shape read from its attention layout."""
    layout = attention_layout(loaded.model)
    return compile_task(config, task, loaded.tokenizer, layout.n_layers, layout.n_heads)


class CompiledTasks:
    """A worker's plans, kept across its checkpoints: one per (task, tokenizer, model shape). The tokenizer is the
    loaded object: loading.ModelCache keeps it across the revisions whose weights it copies in place, and a full reload
    (another shape or tokenizer, a wider dtype after a NaN) brings a new one, compiled for again. The task and the
    tokenizer are held with their plan, so their identities cannot be reused."""

    def __init__(self):
        self.plans: dict[tuple, tuple[Task, object, Plan]] = {}

    def plan(self, config: SweepConfig, task: Task, loaded) -> Plan:
        layout = attention_layout(loaded.model)
        key = (config.sweep_id(task.digest), id(task), id(loaded.tokenizer), layout.n_layers, layout.n_heads)
        if key not in self.plans:
            self.plans[key] = (task, loaded.tokenizer, compile_for(config, task, loaded))
        return self.plans[key][2]
