"""What one checkpoint runs: its conditions, each a set of heads patched on one prompt by one method.

Per checkpoint and prompt pair: baseline (corrupted prompt, no patch), clean (clean prompt, no patch), each
of the task's head groups, all heads of every layer the groups touch, each single head of those layers, and
K random head sets (the null control) the size of one group, from a pool of heads (`null_plan`). The order is
fixed: it seeds each condition's bootstrap, and the null sets are the same at every checkpoint.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pythia_sweep.stats import Head, MethodSet, head_name



@dataclass(frozen=True)
class Condition:
    name: str  # a group's name, "baseline", "clean", "all", "L06H03", "null07"; "upstream/<name>" for a 2nd method
    heads: tuple[Head, ...]  # patched (layer, head) pairs; () = no patch
    prompt: str  # which prompt is run: "corrupted" or "clean"
    method: str  # label of the measuring method (site/align/patch_during), see SweepConfig.methods
    kind: str  # "baseline", "clean", "group", "all", "head" or "null": what the condition is for
    decode: bool = True  # greedy decoding for the success rule; False: teacher-forced metrics only

    def by_layer(self) -> dict[int, tuple[int, ...]]:
        layers: dict[int, list[int]] = defaultdict(list)
        for layer, head in self.heads:
            layers[layer].append(head)
        return {layer: tuple(heads) for layer, heads in sorted(layers.items())}


def null_subsets(candidates: Sequence[Head], size: int, count: int, seed: int, exclude: Sequence[Sequence[Head]] = ()) -> list[tuple[Head, ...]]:
    """`count` distinct random sets of `size` heads from `candidates`, none equal to an excluded set
    (seeded: the same sets at every checkpoint)."""
    rng = random.Random(seed)
    index = {h: i for i, h in enumerate(candidates)}
    seen = {tuple(sorted(index[h] for h in s)) for s in exclude if all(h in index for h in s)}
    subsets: list[tuple[Head, ...]] = []
    attempts = 0
    while len(subsets) < count and attempts < 100 * count and size <= len(candidates):
        attempts += 1
        chosen = tuple(sorted(rng.sample(range(len(candidates)), size)))
        if chosen not in seen:
            seen.add(chosen)
            subsets.append(tuple(candidates[i] for i in chosen))
    return subsets


def make_conditions(
    groups: dict[str, tuple[Head, ...]], methods: Sequence[str], n_heads: int, *, single_heads: bool, null_count: int, seed: int,
    null_layers: Sequence[int] | None = None, null_group: str | None = None, null_exclude: Sequence[Head] = (),
) -> list[Condition]:
    """Every condition of a checkpoint, in a fixed order (which also seeds each one's bootstrap).

    The null's random head sets take the size of `null_group` (default: the first group) and are drawn from
    `null_layers` (default: the layers the groups touch), less `null_exclude` (a discovered group's heads); a set
    equal to a named group is never drawn, so a group that is every head of those layers has no null (`null_plan`
    counts the sets possible)."""
    method_set = MethodSet(tuple(methods))
    primary = method_set.primary
    layers = sorted({layer for heads in groups.values() for layer, _ in heads})
    every_head = tuple((layer, h) for layer in layers for h in range(n_heads))
    conditions = [Condition("baseline", (), "corrupted", primary, "baseline"), Condition("clean", (), "clean", primary, "clean")]
    for label in method_set.labels:
        conditions += [Condition(method_set.named(label, name), heads, "corrupted", label, "group") for name, heads in groups.items()]
        conditions.append(Condition(method_set.named(label, "all"), every_head, "corrupted", label, "all"))
    if single_heads:
        conditions += single_head_conditions(layers, n_heads, primary)
    plan = null_plan(groups, n_heads, null_layers, null_group, null_exclude)
    for i, subset in enumerate(null_subsets(plan["pool"], plan["size"], null_count, seed, list(groups.values()))):
        conditions.append(Condition(f"null{i:02d}", subset, "corrupted", primary, "null"))
    return conditions


def null_plan(groups: dict[str, tuple[Head, ...]], n_heads: int, null_layers: Sequence[int] | None = None,
              null_group: str | None = None, exclude: Sequence[Head] = ()) -> dict:
    """Where the null's random head sets come from: the group they are the size of, the pool of heads (the layers'
    heads less `exclude`: the heads a discovery chose are not drawn as "random"), and how many distinct sets of that
    size the pool holds that are not a named group (0: no null is possible)."""
    group = null_group if null_group in groups else next(iter(groups))
    layers = sorted({layer for heads in groups.values() for layer, _ in heads}) if null_layers is None else sorted(null_layers)
    pool = tuple((layer, h) for layer in layers for h in range(n_heads) if (layer, h) not in set(exclude))
    size = len(groups[group])
    named = {frozenset(heads) for heads in groups.values() if len(heads) == size and set(heads) <= set(pool)}
    return {"group": group, "size": size, "pool": pool, "layers": layers, "excluded": [list(h) for h in exclude],
            "possible": math.comb(len(pool), size) - len(named)}  # fmt: skip


def single_head_conditions(layers: Sequence[int], n_heads: int, method: str) -> list[Condition]:
    """Each head of `layers` patched alone. They feed the per-head map of log-prob differences: teacher-forced,
    nothing to decode (the sweep's and the scan's alike)."""
    return [Condition(head_name(layer, h), ((layer, h),), "corrupted", method, "head", decode=False) for layer in layers for h in range(n_heads)]
