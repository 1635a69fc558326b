"""Which heads carry the answer over training, from the checkpoints' head maps (headmap.py): each head's
attribution over the usable checkpoints, when it first exceeds the weak and the strong level, its peak, and
whether it falls back; how well the map agreed with exact patching. Pure functions of the records."""

from __future__ import annotations

from pythia_sweep.stats import head_label, head_name, head_senders
from pythia_sweep.records import CheckpointRecord

HEAD_LEVELS_NATS = (1.0, 0.5)  # strong, weak, in nats of log-prob difference: where the headline is not in nats


def head_levels(task) -> tuple[tuple[float, float], str]:
    """(strong, weak) for a head's effect in nats, and where they come from (said in the report): the headline's own
    levels when it is a log-prob difference, else the map's (a success-rate level is not a number of nats)."""
    headline = task.headline
    if headline.metric == "logprob_diff":
        strong, weak = headline.levels[0], headline.levels[2]
        return (strong, weak), f"strong {strong:g} nats, weak {weak:g}: the headline's levels"
    strong, weak = HEAD_LEVELS_NATS
    return HEAD_LEVELS_NATS, f"strong {strong:g} nats, weak {weak:g}: the map's own (the headline, a {headline.metric.replace('_', ' ')}, is on another scale)"


def head_timelines(steps: list[int], revisions: list[str], maps: list[dict], strong: float, weak: float) -> list[dict]:
    """Per head that ever exceeds `weak` in size: first step above weak and above strong, its peak, its final value,
    and its course: `stays` (strong at the end), `rises and falls` (strong once, not at the end), `weak only`.
    Largest peak first."""
    n_layers, n_heads = len(maps[0]["attribution"]), len(maps[0]["attribution"][0])
    out = []
    for layer in range(n_layers):
        for head in range(n_heads):
            values = [m["attribution"][layer][head] for m in maps]
            above_weak = [i for i, v in enumerate(values) if abs(v) > weak]
            if not above_weak:
                continue
            above_strong = [i for i, v in enumerate(values) if abs(v) > strong]
            peak = max(range(len(values)), key=lambda i: abs(values[i]))
            course = ("stays" if abs(values[-1]) > strong else "rises and falls") if above_strong else "weak only"
            out.append({
                "layer": layer, "head": head, "values": values,
                "first_weak_step": steps[above_weak[0]], "first_weak_revision": revisions[above_weak[0]],
                "first_strong_step": steps[above_strong[0]] if above_strong else None,
                "first_strong_revision": revisions[above_strong[0]] if above_strong else None,
                "peak": values[peak], "peak_step": steps[peak], "peak_revision": revisions[peak], "final": values[-1], "course": course,
            })  # fmt: skip
    return sorted(out, key=lambda t: -abs(t["peak"]))


def head_map_summary(records: list[CheckpointRecord], usable: list[str], task, emergence_revision: str | None = None) -> dict | None:
    """The heads part of the summary: the levels used, each head's timeline, the agreement with exact patching over
    the usable checkpoints (its range, the checkpoints flagged), the layer x head maps at the emergence point and the
    final checkpoint, and a sentence saying only that. None without maps."""
    usable = set(usable)
    mapped = sorted((r for r in records if r.ok and r.head_map and r.revision in usable and r.step is not None), key=lambda r: r.step)
    if not mapped:
        return None
    (strong, weak), source = head_levels(task)
    steps, revisions, maps = [r.step for r in mapped], [r.revision for r in mapped], [r.head_map for r in mapped]
    timelines = head_timelines(steps, revisions, maps, strong, weak)
    rhos = [m["rank_correlation"] for m in maps if m["rank_correlation"] is not None]
    flagged = [r for r, m in zip(revisions, maps) if m["flagged"]]
    agreement = {"rank_correlation_min": min(rhos) if rhos else None, "rank_correlation_max": max(rhos) if rhos else None,
                 "flagged": flagged, "checkpoints": len(maps), "final_size_ratio": maps[-1].get("size_ratio")}  # fmt: skip
    at = {"final": revisions[-1]} | ({"emergence": emergence_revision} if emergence_revision in revisions else {})
    return {"levels": {"strong": strong, "weak": weak, "source": source}, "heads": timelines, "agreement": agreement,
            "revisions": revisions, "steps": steps, "maps": {name: maps[revisions.index(rev)]["attribution"] for name, rev in at.items()},
            "map_revisions": at, "method": estimated_by(maps[-1]), "statement": _statement(timelines, agreement, source, estimated_by(maps[-1])),
            "sizes": sizes_caveat(agreement)}  # fmt: skip


def estimated_by(found: dict) -> str:
    """How a map's per-head numbers were estimated, in words (the record's `method` and `steps`)."""
    if found.get("method") == "ig-inputs":
        return f"integrated gradients over the inputs (EAP-IG-inputs, {found['steps']} steps)"
    return "attribution patching"


def _statement(timelines: list[dict], agreement: dict, source: str, method: str = "attribution patching") -> str:
    """Which heads pass the strong level and since when, then how the map was checked (one fact: the heads)."""
    checked = (f"by {method}, checked by exact patching of its top heads (rank correlation "
               + (f"{agreement['rank_correlation_min']:.2f}-{agreement['rank_correlation_max']:.2f}" if agreement["rank_correlation_min"] is not None else "undefined")
               + f" over {agreement['checkpoints']} checkpoints; "
               + (f"they disagree at {', '.join(agreement['flagged'])}" if agreement["flagged"] else "they disagree at none")
               + f"); levels: {source}")  # fmt: skip
    strong = [t for t in timelines if t["first_strong_step"] is not None]
    if not strong:
        return f"no head passes the strong level, {checked}"
    named = ", ".join(
        f"{head_label(t['layer'], t['head'])} from {t['first_strong_revision']} (peak {t['peak']:+.2f} nats at {t['peak_revision']}"
        + (f", {t['final']:+.2f} at the end: it rises and falls" if t["course"] == "rises and falls" else "") + ")"
        for t in strong[:6]
    )  # fmt: skip
    more = f" and {len(strong) - 6} more" if len(strong) > 6 else ""
    return f"{named}{more}, {checked}"


def sizes_caveat(agreement: dict) -> str | None:
    """Said only when attribution's sizes are off from exact patching's by more than a quarter at the end."""
    ratio = agreement.get("final_size_ratio")
    if ratio is None or 0.8 <= ratio <= 1.25:
        return None
    return (f"attribution gives {ratio:.2f}x the exact effect of the heads that matter at the final checkpoint (median over the checked "
            "heads; linear estimates are off where attention saturates, AtP*): read the map for the ranking, exact patching for sizes")


def discovery_summary(records: list[CheckpointRecord]) -> dict | None:
    """What a sweep's discovered groups are and how they were found, from the measured records' settings (the same
    at every checkpoint: a sweep saves its discovery and a resume reuses it; records measured with different heads
    are said, not merged). None for a task whose groups are all written."""
    measured = [r for r in records if r.ok and r.settings.get("discovered")]
    if not measured:
        return None
    chosen = {repr(r.settings["discovered"]) for r in measured}
    found, null = measured[-1].settings["discovery"], measured[-1].settings["null"]
    parts = []
    for name, group in found["groups"].items():
        heads = ", ".join(f"{head_label(layer, head)} ({group['exact'][head_name(layer, head)]:+.2f} nats patched alone)" for layer, head in group["heads"])
        parts.append(f"{name} = {heads}, the {group['size']} largest of {group['checked']} heads patched exactly")
    statement = (f"The {' and '.join(found['groups'])} group was found, not written: at {found['revision']}, on {len(found['prompts'])} "
                 f"prompts held out from the {measured[-1].settings['n_prompts']} measured, {'; '.join(parts)}; its null draws "
                 f"{null['size']}-head sets from {null['pool_description']}.")  # fmt: skip
    if len(chosen) > 1:
        statement += f" The checkpoints were measured with {len(chosen)} different discovered groups (read each record's settings)."
    return {"revision": found["revision"], "groups": {name: g["heads"] for name, g in found["groups"].items()},
            "prompts_found_on": len(found["prompts"]), "consistent": len(chosen) == 1, "statement": statement}  # fmt: skip


def circuit_summary(records: list[CheckpointRecord], usable: list[str], emergence: str | None) -> dict | None:
    """The circuits a sweep found (config `circuits`), over its usable checkpoints in training order: how they change
    (circuits.over_training), which two to draw (the emergence checkpoint's, or the first found, and the final one),
    and one statement for the verdict: the final circuit, when one was first found, since when its components are
    the same, and which left or joined on the way."""
    from pythia_sweep.measure.circuits.over_training import over_training

    by_revision = {r.revision: r for r in records if r.ok and r.circuit}
    revisions = [rev for rev in usable if rev in by_revision]
    if not revisions:
        return None
    circuits = [{k: v for k, v in by_revision[rev].circuit.items() if k != "every_edge"} | {"revision": rev} for rev in revisions]  # every edge: long table
    over = over_training(revisions, circuits)
    found = [c for c in circuits if c["none"] is None]
    final = circuits[-1]
    if final["none"]:
        statement = f"none at {final['revision']}: {final['none']}"
    else:
        low, high = final["faithfulness_ci"]
        interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
        since = final["revision"]  # the start of the last unbroken run of circuits with the final's components
        for c in reversed(circuits):
            if c["none"] is not None or set(c["nodes"]) != set(final["nodes"]):
                break
            since = c["revision"]
        statement = (f"at {final['revision']}, {final['size']} of {final['edges_possible']} edges, faithfulness {final['faithfulness']:.2f}"
                     f"{interval} by patching (target {final['target']:g}); first found at {found[0]['revision']}; these "
                     f"components since {since}")  # fmt: skip
        left = [n for n in over["nodes"] if not n["at_final"]]
        joined = [n for n in over["nodes"] if n["at_final"] and n["joins"] != found[0]["revision"]]
        if left or joined:
            statement += "; " + "; ".join(part for part in (
                "left " + ", ".join(f"{n['node']} (after {n['last_seen']})" for n in left) if left else "",
                "joined " + ", ".join(f"{n['node']} (at {n['joins']})" for n in joined) if joined else "") if part)  # fmt: skip
    roles = circuit_roles([by_revision[c["revision"]] for c in found])
    drawn = [c for c in found if c["revision"] == emergence][:1] or found[:1]
    drawn += [final] if final["none"] is None and final is not drawn[0] else []
    return {"over_training": over, "circuits": circuits, "drawn": drawn, "target": final["target"], "statement": statement,
            "roles": roles}


ROLE_SHARE = 0.5  # a head plays a role where more than half its attention is on the role's pattern (evidence.py's scores)
ROLES = {"previous-token": "previous_token", "induction": "induction"}  # role -> its evidence score


def circuit_roles(records: list[CheckpointRecord]) -> dict | None:
    """Which of the circuit's heads play an algorithm-level role at each checkpoint with a circuit (in training order),
    read from the attention evidence of the same record: previous-token and induction heads, a head counted where more
    than half its attention lies on the role's pattern (ROLE_SHARE). Per role, the runs of checkpoints with the same
    carrying heads, and whether the role stays while its heads change; a statement for the verdict. None without
    evidence (config `evidence = false`) or where no circuit head plays a role."""
    if not records or any(r.evidence is None for r in records):
        return None
    runs: dict[str, list[dict]] = {}
    for r in records:
        head_of = head_senders(r.settings["n_layers"], r.settings["n_heads"])  # the circuit's names to (layer, head)
        heads = {n: head_of[n] for n in r.circuit["nodes"] if n in head_of}
        for role, score in ROLES.items():
            carriers = sorted(n for n, (layer, head) in heads.items() if r.evidence[score][layer][head] > ROLE_SHARE)
            if runs.get(role) and runs[role][-1]["heads"] == carriers:
                runs[role][-1]["to"] = r.revision
            elif carriers or runs.get(role):
                runs.setdefault(role, []).append({"heads": carriers, "from": r.revision, "to": r.revision})
    runs = {role: spans for role, spans in runs.items() if any(span["heads"] for span in spans)}
    if not runs:
        return None
    said = []
    for role, spans in runs.items():
        course = "; ".join(f"{', '.join(s['heads']) or 'none'} {s['from'] if s['from'] == s['to'] else s['from'] + ' to ' + s['to']}" for s in spans)
        kept = all(span["heads"] for span in spans[[bool(s["heads"]) for s in spans].index(True):])
        how = ("the same heads throughout" if len(spans) == 1 else "the role stays, its heads change" if kept else "the role comes and goes")
        said.append(f"{role} {course} ({how})")
    return {"share": ROLE_SHARE, "runs": runs, "statement": "; ".join(said) + f" (a role: more than {ROLE_SHARE:.0%} of a head's attention on its pattern)"}
