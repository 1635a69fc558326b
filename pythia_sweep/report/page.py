"""One self-contained HTML page: the verdict, the figures, and the tables a reader needs to trust the numbers."""

from __future__ import annotations

import html
import json

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from pythia_sweep.config import SweepConfig
from pythia_sweep.records import CheckpointRecord, shown_text
from pythia_sweep.task.definition import Task


def context_tables(records: list[CheckpointRecord], task: Task, config: SweepConfig) -> list[tuple[str, str]]:
    """What a reader needs to trust the numbers: the task's prompts, example generations at the last measured
    checkpoint, the run config, and the versions of the libraries that produced them."""
    from importlib.metadata import PackageNotFoundError, version

    ok = [r for r in records if r.ok]
    tables = []
    if ok:
        last = ok[-1]
        prompts = [{"prompt": pid, "clean": p["clean"], "corrupted": p["corrupted"],
                    "correct": ", ".join(map(repr, p["correct"])) + (" ..." if p["n_correct"] > 5 else ""),
                    "wrong": ", ".join(map(repr, p["wrong"])) + (" ..." if p["n_wrong"] > 5 else "")}
                   for pid, p in list(last.prompts.items())[:6]]  # fmt: skip
        n = len(last.prompts)
        tables.append((f"The task's prompts ({min(n, 6)} of {n}; {task.source})", html_table(prompts, ["prompt", "clean", "corrupted", "correct", "wrong"])))
        shown = {"baseline", "clean", task.headline.plus, task.headline.minus}
        first_ids = list(last.prompts)[:3]
        examples = [{"condition": r["condition"], "prompt": r["prompt_id"], "success": "yes" if r["success"] else "no",
                     "generation": shown_text(r), "log-prob difference": f"{r['logprob_diff']:+.3f}"}
                    for r in last.responses if r["condition"] in shown and r["prompt_id"] in first_ids]  # fmt: skip
        tables.append((f"Example generations at {last.revision}", html_table(examples, ["condition", "prompt", "success", "generation", "log-prob difference"])))
    settings = [{"setting": k, "value": json.dumps(v) if not isinstance(v, str) else v} for k, v in config.to_dict().items()]
    tables.append(("Run config", html_table(settings + [{"setting": "task digest", "value": task.digest}], ["setting", "value"])))
    versions = []
    for package in ("pythia_sweep", "torch", "transformers", "huggingface_hub", "ray", "mlflow", "polars", "plotly", "scipy"):
        try:
            versions.append({"package": package, "version": version(package)})
        except PackageNotFoundError:
            versions.append({"package": package, "version": "not installed"})
    tables.append(("Package versions (of this report's build)", html_table(versions, ["package", "version"])))
    return tables


def html_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(title: str, subtitle: str, verdict: dict, figures: list[go.Figure], tables: list[tuple[str, str]], links_html: str = "") -> str:
    """One self-contained page: the verdict (its answer, then its labelled facts: verdict.Verdict.to_dict()), plotly.js
    inlined once, then each figure."""
    answer = "<br>".join(html.escape(line) for line in verdict["answer"].split("\n"))
    facts = "".join(f"<dt>{html.escape(f['label'])}</dt><dd>{html.escape(f['fact'])}</dd>" for f in verdict["facts"])
    divs = "".join(f'<section>{f.to_html(full_html=False, include_plotlyjs=False)}</section>' for f in figures)
    tabs = "".join(f"<section><h2>{html.escape(t)}</h2>{body}</section>" for t, body in tables)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
.verdict {{ background: #f3f7fb; border-left: 4px solid #1f77b4; padding: 0.8em 1.2em; }}
.verdict .answer {{ font-size: 1.2em; font-weight: 600; margin: 0 0 0.6em; }}
.verdict dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; margin: 0; font-size: 0.95em; }}
.verdict dt {{ color: #555; font-weight: 600; }} .verdict dd {{ margin: 0; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
section {{ margin: 2em 0; }} .sub {{ color: #666; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>{f'<p class="sub">{links_html}</p>' if links_html else ""}
<div class="verdict"><p class="answer">{answer}</p>{f"<dl>{facts}</dl>" if facts else ""}</div>{divs}{tabs}</body></html>"""
