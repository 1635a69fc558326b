"""Edge attribution (issue 34, step 1): each edge's score is the metric's derivative along that edge alone, checked by
finite differences that move one sender's contribution into one receiver's input only, on Pythia's parallel blocks,
on sequential GPT-NeoX blocks and on Llama; the graph's edges follow each block's wiring."""

import copy
import dataclasses
import tomllib
import types

import pytest
import torch

from pythia_sweep.measure.circuits.attribution import edge_attribution
from pythia_sweep.measure.circuits.graph import BLOCKS, Graph, graph_of, wired
from pythia_sweep.errors import ConfigError
from pythia_sweep.measure.batch import pad_id_of
from pythia_sweep.task.schema import task_from_dict

from test_headmap import NAMES_TASK

TASK = task_from_dict(tomllib.loads(NAMES_TASK), "names.toml")


def test_the_graph_follows_each_blocks_wiring():
    parallel, sequential = Graph(3, 2, parallel=True), Graph(3, 2, parallel=False)
    assert parallel.senders[:4] == ["emb", "a0.0", "a0.1", "m0"] and parallel.receivers[-3:] == ["a2", "m2", "logits"]
    assert not parallel.feeds("a0.1", "m0") and sequential.feeds("a0.1", "m0")  # a sequential MLP reads its own layer's heads
    assert not parallel.feeds("m0", "a0") and not sequential.feeds("m1", "m1") and parallel.feeds("m0", "a1")
    assert all(g.feeds("emb", v) and g.feeds("m2", "logits") for g in (parallel, sequential) for v in g.receivers)
    # parallel: emb feeds all 7 receivers; each layer's 3 senders feed the 2 receivers of every later layer and the logits
    assert int(parallel.mask().sum()) == 7 + 3 * (2 * 2 + 1) + 3 * (2 * 1 + 1) + 3 * 1
    assert int(sequential.mask().sum()) == int(parallel.mask().sum()) + 3 * 2  # plus each layer's 2 heads into its MLP


def _model(loaded, parallel: bool | None = None):
    model = copy.deepcopy(loaded.model).double()
    for norm in model.modules():  # Llama's RMSNorm computes in float32 whatever the model's dtype: here in float64, the same formula
        if type(norm).__name__ == "LlamaRMSNorm":
            norm.forward = types.MethodType(lambda self, x: self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)), norm)
    if parallel is not None:
        model.config.use_parallel_residual = parallel
        for block in model.gpt_neox.layers:
            block.use_parallel_residual = parallel
    pairs = [tp for tp in TASK.tokenize(loaded.tokenizer, {"suffix"}) if len(tp.ids["clean"]) == len(tp.ids["corrupted"])]
    assert pairs and all(len(tp.answers["corrupted"]) == 2 and tp.n_correct == 1 for tp in pairs)
    return model, pairs, pad_id_of(loaded.tokenizer)


def _metric_with(model, pairs, sender: str, receiver: str, t: float) -> float:
    """Mean over prompts of the corrupted run's log-prob difference (one correct answer, one wrong) with t times
    (sender's clean output - its corrupted output) added to `receiver`'s input alone, at every position."""
    graph, paths = graph_of(model), BLOCKS[model.config.model_type]
    layers = model.get_submodule(paths["layers"])
    norm = paths["final_norm"] if receiver == "logits" else f"{paths['layers']}.{receiver[1:]}.{paths['attn_norm' if receiver[0] == 'a' else 'mlp_norm']}"
    total = 0.0
    for tp in pairs:
        values = []
        for answer in tp.answers["corrupted"]:
            outputs = {}
            for side in ("clean", "corrupted"):
                with torch.no_grad(), wired(model, graph, live=False) as seen:
                    model(input_ids=torch.tensor([tp.ids[side] + answer]), use_cache=False)
                outputs[side] = seen["out"]
            if sender.startswith("a"):  # a head: its share of the output projection
                layer, head = (int(x) for x in sender[1:].split("."))
                weight = layers[layer].get_submodule(paths["out_proj"]).weight  # (D, H * dh)
                dh = weight.shape[1] // graph.n_heads
                cols = slice(head * dh, (head + 1) * dh)
                delta = (outputs["clean"][f"a{layer}"][..., cols] - outputs["corrupted"][f"a{layer}"][..., cols]) @ weight[:, cols].T
            else:
                delta = outputs["clean"][sender] - outputs["corrupted"][sender]  # (1, T, D)
            handle = model.get_submodule(norm).register_forward_pre_hook(lambda m, args: (args[0] + t * delta, *args[1:]))
            try:
                with torch.no_grad():
                    logp = torch.log_softmax(model(input_ids=torch.tensor([tp.ids["corrupted"] + answer]), use_cache=False).logits[0], -1)
            finally:
                handle.remove()
            n = len(tp.ids["corrupted"])
            values.append(sum(float(logp[n - 1 + j, a]) for j, a in enumerate(answer)))
        total += values[0] - values[1]
    return total / len(pairs)


@pytest.mark.parametrize("architecture", ["neox-parallel", "neox-sequential", "llama"])
def test_each_edge_score_is_the_derivative_along_that_edge_alone(architecture, neox, llama):
    loaded = llama if architecture == "llama" else neox
    model, pairs, pad_id = _model(loaded, None if architecture == "llama" else architecture == "neox-parallel")
    graph = graph_of(model)
    scores = edge_attribution(model, pairs, pad_id, batch_size=16)
    assert scores.shape == (len(graph.senders), len(graph.receivers))
    assert bool((scores[~graph.mask()] == 0).all()) and float(scores.detach().abs().max()) > 0
    last = graph.n_layers - 1
    edges = [("emb", "a1"), ("a0.3", "m2"), ("m1", f"a{last}"), (f"a{last}.2", "logits"), ("m0", "logits")]
    if not graph.parallel:
        edges.append(("a1.1", "m1"))  # within a sequential block
    eps, rel = 1e-4, 1e-5
    for u, v in edges:
        slope = (_metric_with(model, pairs, u, v, eps) - _metric_with(model, pairs, u, v, -eps)) / (2 * eps)
        score = float(scores[graph.senders.index(u), graph.receivers.index(v)])
        assert score == pytest.approx(slope, rel=rel, abs=1e-9), (architecture, u, v, score, slope)


def test_prompts_of_unequal_length_are_refused_by_name(neox):
    model = copy.deepcopy(neox.model)
    pairs = TASK.tokenize(neox.tokenizer, {"suffix"})
    uneven = next((tp for tp in pairs if len(tp.ids["clean"]) != len(tp.ids["corrupted"])), None)
    if uneven is None:  # make one: a clean prompt one token longer
        uneven = dataclasses.replace(pairs[0], ids={**pairs[0].ids, "clean": pairs[0].ids["clean"] + pairs[0].ids["clean"][-1:]})
    with pytest.raises(ConfigError, match=r"same_length=False .*as long in tokens"):
        edge_attribution(model, [uneven], pad_id_of(neox.tokenizer), batch_size=4)


def test_a_planted_path_is_found_and_only_it_and_measured_by_patching(neox):
    """A model in which one path carries everything: every attention output projection zeroed but layer 2's head 5,
    every MLP's output zeroed. The clean and corrupted prompts differ in a name, not in the last token read, so the
    answer changes only through the embeddings -> layer 2's attention -> head 2.5 -> logits. Edge attribution scores
    those two edges alone; the circuit found is them; patching measures it whole (faithfulness 1), and either edge
    alone recovers nothing."""
    from pythia_sweep.measure.circuits.faithfulness import circuit_metric, faithfulness
    from pythia_sweep.measure.circuits.search import find_circuit

    model, pairs, pad_id = _model(neox)
    with torch.no_grad():
        for layer, block in enumerate(model.gpt_neox.layers):
            block.mlp.dense_4h_to_h.weight.zero_()
            block.mlp.dense_4h_to_h.bias.zero_()
            dh = block.attention.dense.weight.shape[1] // model.config.num_attention_heads
            keep = block.attention.dense.weight[:, 5 * dh : 6 * dh].clone() * 30.0  # an effect of some size
            block.attention.dense.weight.zero_()
            if layer == 2:
                block.attention.dense.weight[:, 5 * dh : 6 * dh] = keep
    graph = graph_of(model)
    scores = edge_attribution(model, pairs, pad_id, batch_size=16)
    nonzero = {(graph.senders[i], graph.receivers[j]) for i, j in (scores.abs() > 1e-12).nonzero().tolist()}
    assert nonzero == {("emb", "a2"), ("a2.5", "logits")}, nonzero

    def measure(kept):
        return faithfulness(circuit_metric(model, pairs, kept, pad_id))

    circuit = find_circuit(scores, graph.mask(), measure, target=0.8)
    assert set(circuit.edges(graph)) == {("emb", "a2"), ("a2.5", "logits")} and circuit.size == 2
    assert circuit.faithfulness == pytest.approx(1.0, abs=1e-9)
    everything, nothing = graph.mask(), torch.zeros_like(graph.mask())
    metrics = circuit_metric(model, pairs, everything, pad_id)
    assert torch.allclose(metrics["circuit"], metrics["clean"]) and not torch.allclose(metrics["clean"], metrics["corrupted"])
    assert torch.allclose(circuit_metric(model, pairs, nothing, pad_id)["circuit"], metrics["corrupted"])  # no edge kept: corrupted
    for alone in (("emb", "a2"), ("a2.5", "logits")):
        kept = torch.zeros_like(everything)
        kept[graph.senders.index(alone[0]), graph.receivers.index(alone[1])] = True
        assert measure(kept) == pytest.approx(0.0, abs=1e-9), alone
    # patched alone into the corrupted run (the patch attribution estimates), either edge carries the whole gap: what
    # lies downstream of it is computed from it, where a circuit keeping one edge gives it a corrupted sender
    from pythia_sweep.measure.circuits.faithfulness import edges_alone

    gap = float(metrics["clean"].mean() - metrics["corrupted"].mean())
    moved = edges_alone(model, pairs, [("emb", "a2"), ("a2.5", "logits"), ("emb", "a1")], pad_id)
    assert moved["emb->a2"] == pytest.approx(gap, rel=1e-6) and moved["a2.5->logits"] == pytest.approx(gap, rel=1e-6)
    assert moved["emb->a1"] == pytest.approx(0.0, abs=1e-9)  # layer 1's attention sends nothing anywhere


@pytest.mark.parametrize("architecture", ["neox-parallel", "neox-sequential", "llama"])
def test_the_circuit_run_is_the_clean_run_with_every_edge_and_the_corrupted_run_with_none(architecture, neox, llama):
    """The patched run rebuilds every receiver's input from its senders' outputs: kept whole it must be the clean run,
    kept empty the corrupted run, to float precision, whatever the blocks' wiring."""
    from pythia_sweep.measure.circuits.faithfulness import circuit_metric

    loaded = llama if architecture == "llama" else neox
    model, pairs, pad_id = _model(loaded, None if architecture == "llama" else architecture == "neox-parallel")
    mask = graph_of(model).mask()
    whole, empty = circuit_metric(model, pairs, mask, pad_id), circuit_metric(model, pairs, torch.zeros_like(mask), pad_id)
    assert not torch.allclose(whole["clean"], whole["corrupted"])
    assert torch.allclose(whole["circuit"], whole["clean"], rtol=0, atol=1e-9), whole
    assert torch.allclose(empty["circuit"], empty["corrupted"], rtol=0, atol=1e-9), empty


def test_over_training_says_overlaps_and_when_each_component_joins_and_leaves():
    from pythia_sweep.measure.circuits.over_training import jaccard, over_training

    def c(edges):
        return {"edges": [list(e) for e in edges], "nodes": sorted({u for u, _ in edges}), "size": len(edges), "faithfulness": 0.9,
                "reached": True, "none": None, "gap": 2.0}  # fmt: skip

    early, mid, final = c([("emb", "a1"), ("a0.1", "a1")]), c([("emb", "a1"), ("a1.2", "logits")]), c([("emb", "a1"), ("a1.2", "logits"), ("a1.3", "logits")])
    over = over_training(["step1", "step2", "step3"], [early, mid, final])
    first, second, last = over["checkpoints"]
    assert (first["edges_vs_final"], first["nodes_vs_final"], first["edges_vs_previous"]) == (1 / 4, 1 / 4, None)
    assert (second["edges_vs_previous"], second["edges_vs_final"], last["edges_vs_final"]) == (1 / 3, 2 / 3, 1.0)
    nodes = {n["node"]: n for n in over["nodes"]}
    assert (nodes["a0.1"]["joins"], nodes["a0.1"]["last_seen"], nodes["a0.1"]["at_final"]) == ("step1", "step1", False)
    assert (nodes["a1.2"]["joins"], nodes["a1.3"]["joins"], nodes["emb"]["present"]) == ("step2", "step3", ["step1", "step2", "step3"])
    assert jaccard([], []) is None
    nothing = c([]) | {"none": "no gap to explain: ...", "size": None, "faithfulness": None, "reached": False}
    before, after = over_training(["step0", "step3"], [nothing, final])["checkpoints"]
    assert (before["edges_vs_final"], before["nodes_vs_final"], after["edges_vs_previous"]) == (None, None, None)  # not 0: nothing to overlap


@pytest.mark.slow
def test_jobs_circuits_finds_the_induction_circuit_over_training(induction_family, tmp_path, capsys):
    """On the short induction family: a circuit per checkpoint reaching the target by patching, the final one on layer
    1's heads (the induction heads read the answer token's value: the corrupted prompt changes that token, not the
    previous-token pattern), and the page and JSON written."""
    import json

    from pythia_sweep.commands.circuits import main

    config = tmp_path / "c.toml"
    config.write_text(f'model = "{induction_family}"\ntask = "tasks/induction-demo.toml"\n')
    assert main([str(config), "--revisions", "step336", "step256", "--reports-dir", str(tmp_path), "--target", "0.8"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("step256: clean - corrupted ") and lines[1].startswith("step336: ")  # in training order
    summary = json.loads(next(tmp_path.rglob("circuits.json")).read_text())
    final = summary["circuits"][-1]
    assert final["reached"] and final["faithfulness"] >= 0.8 and final["size"] < final["edges_possible"]
    low, high = final["faithfulness_ci"]
    assert low <= final["faithfulness"] <= high
    assert any(n.startswith("a1.") for n in final["nodes"]) and summary["over_training"]["checkpoints"][-1]["edges_vs_final"] == 1.0
    assert summary["answer"] in out and f"circuits: {next(tmp_path.rglob('circuits.html'))}" in out
    from support.browser import chromium, figures_of

    with chromium() as browser:  # the page as a browser draws it: the curves, the node timeline, the two circuits as graphs
        titles = [f["title"] for f in figures_of(browser, next(tmp_path.rglob("circuits.html")))]
    assert [t.split(":")[0] for t in titles] == ["The circuit at each checkpoint", "Each component in the circuit over training (a sender",
                                                 "The circuit as a layered graph"], titles  # fmt: skip
    with pytest.raises(SystemExit):
        main([str(config), "--revisions", "step336", "--target", "0"])


def test_no_circuit_is_sought_where_the_corrupted_prompt_answers_as_the_clean_one(neox):
    """A gap whose interval reaches zero has no share to recover: no circuit, and the reason names the gap."""
    from pythia_sweep.measure.circuits.search import circuit_at

    model, pairs, pad_id = _model(neox)
    same = [dataclasses.replace(tp, ids={**tp.ids, "clean": tp.ids["corrupted"]}) for tp in pairs]  # clean = corrupted
    found = circuit_at(model, same, pad_id, batch_size=16, resamples=200)
    assert found["none"].startswith("no gap to explain: clean - corrupted +0.00 nats, 95% [")
    assert (found["size"], found["faithfulness"], found["edges"], found["gap"]) == (None, None, [], 0.0)
    flipped = [dataclasses.replace(tp, ids={**tp.ids, "clean": tp.ids["corrupted"], "corrupted": tp.ids["clean"]}) for tp in pairs]
    gaps = [circuit_at(model, p, pad_id, batch_size=16, resamples=200)["gap"] for p in (pairs, flipped)]
    assert gaps[0] * gaps[1] < 0  # this random model: one way round the gap is negative, and said so when it is sure
    negative = circuit_at(model, pairs if gaps[0] < 0 else flipped, pad_id, batch_size=16, resamples=200)
    assert negative["none"].startswith(("a reversed gap: clean - corrupted -", "no gap to explain: clean - corrupted -")), negative["none"]


@pytest.mark.slow
def test_the_induction_circuit_runs_through_the_previous_token_head_once_trained(induction_family, tmp_path, capsys):
    """tasks/induction-kcomp.toml moves the word before the answer: the copied words stand where they stood, so the
    difference reaches the answer through where the induction head attends, which the previous-token head writes. At
    step0 there is nothing to explain (no circuit); trained, the circuit holds an edge layer-0 head -> layer 1, and
    that edge patched alone recovers most of the gap."""
    import json

    from pythia_sweep.commands.circuits import main

    config = tmp_path / "c.toml"
    config.write_text(f'model = "{induction_family}"\ntask = "induction-kcomp"\n')
    assert main([str(config), "--revisions", "step0", "step336", "--reports-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("step0: no circuit: no gap to explain: clean - corrupted ")
    first, final = json.loads(next(tmp_path.rglob("circuits.json")).read_text())["circuits"]
    assert first["none"] and first["edges"] == [] and final["none"] is None and final["reached"]
    previous_token = [k for k in final["alone"] if k.startswith("a0.") and k.endswith("->a1")]
    assert previous_token, final["edges"]
    assert max(final["alone"][k]["share"] for k in previous_token) > 0.5, final["alone"]


@pytest.mark.slow
def test_a_sweep_with_circuits_records_charts_and_reports_them(induction_family, tmp_path, capsys):
    """`circuits = true`: each checkpoint's record holds its circuit; the long table every edge's score (kind "edge")
    and the circuit's numbers (kind "circuit"); MLflow charts size, faithfulness and the gap against step on the
    parent run, and the overlaps once the report has read the sweep whole; the verdict has a circuit line; the page
    draws the circuits."""
    import polars as pl

    from pythia_sweep.config import SweepConfig
    from pythia_sweep.report.build import build_report
    from pythia_sweep.run.driver import run_sweep
    from pythia_sweep.tracking.reader import SweepReader
    from support.browser import chromium, figures_of

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = SweepConfig(model=induction_family, task="induction-kcomp", checkpoints=("step0", "step256", "step336"), workers=0,
                         null_subsets=4, bootstrap_resamples=200, circuits=True)  # fmt: skip
    result = run_sweep(config, tracking_uri=uri, progress=False)
    report = build_report(result.parent_run_id, tracking_uri=uri, reports_dir=tmp_path / "reports")
    step0, _, final = SweepReader(uri).load_records(result.parent_run_id)
    assert step0.circuit["none"].startswith("no gap to explain") and final.circuit["none"] is None
    edges = report.long.filter(pl.col("kind") == "edge", pl.col("revision") == "step336")
    assert edges.filter(pl.col("metric") == "attribution").height == final.circuit["edges_possible"]
    kept = edges.filter(pl.col("metric") == "in_circuit", pl.col("value") == 1.0)["condition"].sort().to_list()
    assert kept == sorted(f"{u}->{v}" for u, v in final.circuit["edges"])
    client = SweepReader(uri).client
    history = {k: {m.step: m.value for m in client.get_metric_history(result.parent_run_id, f"circuit/{k}")}
               for k in ("faithfulness", "gap", "edges_vs_final")}  # fmt: skip
    assert history["faithfulness"][336] == pytest.approx(final.circuit["faithfulness"]) and 0 not in history["faithfulness"]
    assert set(history["gap"]) == {0, 256, 336} and history["edges_vs_final"][336] == 1.0
    line = next(line for line in report.verdict.splitlines() if line.startswith("circuit: "))
    assert f"at step336, {final.circuit['size']} of {final.circuit['edges_possible']} edges, faithfulness" in line
    with chromium() as browser:
        titles = [f["title"] for f in figures_of(browser, report.html_path)]
    assert any(t.startswith("The circuit at each checkpoint") for t in titles) and any(t.startswith("The circuit as a layered graph") for t in titles)

    # the recorded circuits read back by the command and set beside a published graph of step336 in Tigges et al.'s
    # format: this circuit's edges (each into a layer's attention input written as one into a head's key) and one more
    import json
    import re

    from pythia_sweep.commands.circuits import main

    def theirs(name: str) -> str:
        return "input" if name == "emb" else re.sub(r"^a(\d+)\.(\d+)$", r"a\1.h\2", name)

    kept = [tuple(e) for e in final.circuit["edges"]]
    extra = next(tuple(k.split("->")) for k in final.circuit["every_edge"] if tuple(k.split("->")) not in kept)
    written = {f"{theirs(u)}->{v}.h0<k>" if v.startswith("a") else f"{theirs(u)}->{v}": True for u, v in kept + [extra]}
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "336.json").write_text(json.dumps(_published(written)))
    assert main(["--sweep", result.parent_run_id, "--tracking-uri", uri, "--against", str(tmp_path / "graphs"), "--reports-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"published (Tigges et al.): step336: edges {len(kept) / (len(kept) + 1):.2f}, nodes " in out, out
    assert main(["--sweep", result.parent_run_id, "--tracking-uri", uri, "--against", str(tmp_path)]) == 2  # no <step>.json there


def _published(edges_in: dict[str, bool], n_layers=2, n_heads=8) -> dict:
    """A graph file as Tigges et al. publish theirs (EAP-IG's Graph.to_json, read from hannamw/EAP-IG's
    circuits-over-time branch, graph.py): cfg, nodes as name -> in_graph, edges as name -> {score, in_graph}."""
    names = {n for e in edges_in for n in e.replace("<q>", "").replace("<k>", "").replace("<v>", "").split("->")}
    return {"cfg": {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": True}, "nodes": {n: True for n in sorted(names)},
            "edges": {e: {"score": 0.5, "in_graph": kept} for e, kept in edges_in.items()}}  # fmt: skip


def test_a_published_graph_is_read_in_this_graphs_names_and_granularity(tmp_path):
    import json

    from pythia_sweep.measure.circuits.over_training import against_published, read_published_graph

    path = tmp_path / "256.json"
    path.write_text(json.dumps(_published({"input->a0.h7<q>": True, "input->a0.h7<k>": True, "a0.h7->a1.h3<k>": True,
                                           "a0.h7->a1.h4<v>": True, "a1.h3->logits": True, "m0->logits": False, "input->m0": True})))  # fmt: skip
    read = read_published_graph(path)
    assert read["edges"] == [["a0.7", "a1"], ["a1.3", "logits"], ["emb", "a0"], ["emb", "m0"]] and read["edges_published"] == 6
    assert read["nodes"] == ["a0.7", "a1.3", "emb"]
    ours = {"edges": [["emb", "a0"], ["a0.7", "a1"], ["a1.3", "logits"], ["a1.5", "logits"]], "nodes": ["a0.7", "a1.3", "a1.5", "emb"], "none": None, "size": 4}
    (row,) = against_published(["step0", "step256"], [ours | {"none": "no gap"}, ours], tmp_path, 2, 8)  # no 0.json: step0 left out
    assert (row["revision"], row["edges"], row["nodes"], row["theirs"], row["theirs_as_published"]) == ("step256", 3 / 5, 3 / 4, 4, 6)
    with pytest.raises(ConfigError, match=r"256.json: cfg=.* a graph of this model's shape \(12 layers x 12 heads\)"):
        against_published(["step256"], [ours], tmp_path, 12, 12)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "256.json").write_text(json.dumps({"nodes": {}, "edges": {}}))
    with pytest.raises(ConfigError, match=r"256.json: cfg=None is not valid: a graph file in EAP-IG's format"):
        against_published(["step256"], [ours], tmp_path / "bad", 2, 8)


def test_where_the_effect_is_linear_an_edge_score_is_its_exact_patch(neox):
    """With the final norm an identity and single-token answers, the metric is a difference of two logits, linear in
    the residual the logits read: an edge into the logits patched alone (the exact patch, `edges_alone`) moves it by
    exactly its attribution score, to float precision. Edges into a layer's input are not linear and are not asked to."""
    from pythia_sweep.measure.circuits.faithfulness import edges_alone

    model, pairs, pad_id = _model(neox)
    single = [tp for tp in pairs if all(len(a) == 1 for a in tp.answers["corrupted"])]
    assert single, "the names task's answers are one token each with this tokenizer"
    model.gpt_neox.final_layer_norm = torch.nn.Identity()
    graph = graph_of(model)
    scores = edge_attribution(model, single, pad_id, batch_size=16)
    into_logits = [(u, "logits") for u in graph.senders]
    moved = edges_alone(model, single, into_logits, pad_id)
    j = graph.receivers.index("logits")
    expected = {f"{u}->logits": float(scores[graph.senders.index(u), j]) for u in graph.senders}
    assert max(abs(s) for s in expected.values()) > 1e-5  # something to compare (a random model: small, in float64)
    for edge, value in moved.items():
        assert value == pytest.approx(expected[edge], rel=1e-9, abs=1e-12), edge


def test_circuit_roles_say_whether_a_role_stays_while_its_heads_change():
    """Heads of the circuit counted as previous-token or induction heads where more than half their attention lies on
    the pattern (the record's evidence): the previous-token role kept by one head, the induction role handed on."""
    from types import SimpleNamespace

    from pythia_sweep.report.heads import circuit_roles

    def record(revision, nodes, previous, induction):
        scores = lambda marked: [[marked.get((layer, head), 0.1) for head in range(4)] for layer in range(2)]  # noqa: E731
        return SimpleNamespace(revision=revision, circuit={"nodes": nodes}, evidence={"previous_token": scores(previous), "induction": scores(induction)},
                               settings={"n_layers": 2, "n_heads": 4})  # fmt: skip

    records = [record("step1", ["a0.1", "a1.2", "emb"], {(0, 1): 0.9}, {(1, 2): 0.8}),
               record("step2", ["a0.1", "a1.3", "emb"], {(0, 1): 0.9}, {(1, 2): 0.8, (1, 3): 0.7}),  # a1.2 still an induction head, not in the circuit
               record("step3", ["a0.1", "a1.3", "m0"], {(0, 1): 0.6}, {(1, 3): 0.5})]  # a1.3 at exactly half: not more than half  # fmt: skip
    roles = circuit_roles(records)
    assert roles["statement"].startswith("previous-token a0.1 step1 to step3 (the same heads throughout); induction a1.2 step1; "
                                         "a1.3 step2; none step3 (the role comes and goes)")  # fmt: skip
    assert circuit_roles(records[:2])["runs"]["induction"] == [{"heads": ["a1.2"], "from": "step1", "to": "step1"},
                                                               {"heads": ["a1.3"], "from": "step2", "to": "step2"}]  # fmt: skip
    assert "the role stays, its heads change" in circuit_roles(records[:2])["statement"]
    assert circuit_roles([SimpleNamespace(revision="step1", circuit={"nodes": ["a0.1"]}, evidence=None)]) is None
