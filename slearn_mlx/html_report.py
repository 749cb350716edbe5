"""report.html: the run's report as one self-contained page with plots, to read at a glance and share.

Plots are drawn with matplotlib's Figure directly (no pyplot, so no GUI backend and no global
state) and inlined as base64 PNG, so the file opens anywhere without its run folder.
"""

import base64
import io
from html import escape

from matplotlib.figure import Figure

from .data import Record
from .report import EPOCH_HEADER, EPOCH_NOTE, GROUP_TITLES, epoch_cells, percent, ranked_examples, topic_split

BEFORE, AFTER, KNOWN, UNKNOWN = "#9aa5b1", "#2f6fdf", "#3c9a5f", "#e0833a"
TOPICS_SHOWN = 15
EXAMPLES = 8

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; }
.meta { color: #57606a; font-size: 0.9em; word-break: break-all; }
.headline { font-size: 1.1em; background: #f6f8fa; padding: 0.8em 1em; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; white-space: nowrap; }
.right { color: #1a7f37; } .wrong { color: #cf222e; }
img { max-width: 100%; }
.examples td { white-space: pre-line; }  /* multiple-choice options are on lines of their own */
.examples td:nth-child(1) { width: 42%; } .examples td:nth-child(2) { width: 10%; }
.examples td:nth-child(3), .examples td:nth-child(4) { width: 24%; }
"""


def png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def accuracy_plot(accuracy: dict) -> Figure:
    names = list(accuracy)
    figure = Figure(figsize=(10, 3.4))
    ax = figure.subplots()
    width = 0.38
    for offset, key, color, label in ((-width / 2, "before", BEFORE, "before"), (width / 2, "after", AFTER, "after")):
        values = [100 * (accuracy[n][key] or 0) for n in names]
        bars = ax.bar([i + offset for i in range(len(names))], values, width, color=color, label=label)
        ax.bar_label(bars, labels=[percent(accuracy[n][key]) for n in names], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), [f"{n.replace('_', ' ')}\n{accuracy[n]['records']} records" for n in names])
    ax.set_ylim(0, 110)
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figure


def time_plot(stage_seconds: dict) -> Figure:
    stages = list(stage_seconds)[::-1]
    figure = Figure(figsize=(10, 0.5 + 0.45 * len(stages)))
    ax = figure.subplots()
    bars = ax.barh(stages, [stage_seconds[s] for s in stages], color=AFTER)
    ax.bar_label(bars, labels=[f"{stage_seconds[s]:.1f} s" for s in stages], fontsize=8, padding=3)
    ax.set_xlabel("wall time (s)")
    ax.margins(x=0.12)
    ax.spines[["top", "right"]].set_visible(False)
    return figure


def knowledge_plot(split: dict) -> Figure:
    topics = list(split)[:TOPICS_SHOWN][::-1]
    figure = Figure(figsize=(10, 0.8 + 0.38 * len(topics)))
    ax = figure.subplots()
    known = [split[t]["known"] for t in topics]
    unknown = [split[t]["records"] - split[t]["known"] for t in topics]
    ax.barh(topics, known, color=KNOWN, label="known before training")
    ax.barh(topics, unknown, left=known, color=UNKNOWN, label="unknown before training")
    for i, t in enumerate(topics):
        row = split[t]
        after = "" if row["after"] is None else f", after {row['after']}/{row['records']}"
        ax.text(row["records"], i, f"  {row['known']}/{row['records']} known{after}", va="center", fontsize=8)
    ax.set_xlabel("records")
    ax.margins(x=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figure


def example_table(triples) -> str:
    if not triples:
        return "<p>none</p>"

    def answer(row):
        mark = "right" if row["correct"] else "wrong"
        said = escape(row["response"]) or "<i>(empty)</i>" if "response" in row else "<i>(probed, not answered)</i>"
        return f'<td class="{mark}">{said}<br><small>{mark}</small></td>'

    rows = "".join(f"<tr><td>{escape(r.question)}</td><td>{escape(r.answer)}</td>{answer(b)}{answer(a)}</tr>"
                   for r, b, a in triples)
    return f"<table class=\"examples\"><tr><th>question</th><th>reference</th><th>before</th><th>after</th></tr>{rows}</table>"


def epochs_section(epochs: list[dict]) -> str:
    if not epochs:
        return ""
    head = "".join(f"<th>{h}</th>" for h in EPOCH_HEADER)
    rows = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' for c in epoch_cells(row)) + "</tr>" for row in epochs)
    return f"<h2>Training, epoch by epoch</h2><p>{EPOCH_NOTE}</p><table><tr>{head}</tr>{rows}</table>"


def render_html(metrics: dict, config, records: list[Record], before: list[dict], after: list[dict]) -> str:
    accuracy = metrics["accuracy"]
    whole, unknown, known = accuracy["whole_set"], accuracy["unknown"], accuracy["known"]
    split = topic_split(records, before, after)
    improved, worst = ranked_examples(records, before, after, EXAMPLES)
    table = "".join(f'<tr><td>{GROUP_TITLES[n]}</td><td class="num">{row["records"]}</td>'
                    f'<td class="num">{percent(row["before"])}</td><td class="num">{percent(row["after"])}</td></tr>'
                    for n, row in accuracy.items())
    if len(split) > 1 or "(no topic)" not in split:
        knowledge = png(knowledge_plot(split))
        if len(split) > TOPICS_SHOWN:
            knowledge += f"<p>The {TOPICS_SHOWN} largest of {len(split)} topics.</p>"
    else:
        knowledge = "<p>No record of this run carries a topic (a <code>topic</code>, <code>domain</code>, <code>category</code>, " \
                    "<code>subject</code> or <code>source</code> field), so there is no map per topic.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>slearn-mlx report: {escape(metrics['run'])}</title>
<style>{STYLE}</style></head><body>
<h1>What the model did not know, and what training changed</h1>
<p class="meta">run <code>{escape(metrics['run'])}</code><br>model <code>{escape(config.model)}</code><br>
data <code>{escape(config.data)}</code> ({metrics['records']} records)<br>
policy <code>{config.select.policy}</code>, {config.train.epochs} epochs, learning rate {config.train.learning_rate},
LoRA rank {config.train.lora_rank} on {config.train.lora_layers} layers</p>
<p class="headline">Before training the model answered {percent(whole['before'])} of all records right; after, {percent(whole['after'])}.
It learned {percent(unknown['after'])} of the {unknown['records']} records it did not know,
and kept {percent(known['after'])} of the {known['records']} it knew.</p>
<h2>Accuracy before and after, per group of records</h2>
{png(accuracy_plot(accuracy))}
<table><tr><th>records</th><th>count</th><th>before</th><th>after</th></tr>{table}</table>
{epochs_section(metrics["epochs"])}
<h2>Knowledge map: known and unknown per topic</h2>
{knowledge}
<h2>Most improved</h2>
{example_table(improved)}
<h2>Worst after training (forgotten first)</h2>
{example_table(worst)}
<h2>Where the time went</h2>
{png(time_plot(metrics['stage_seconds']))}
<p>Total {metrics['total_seconds']:.0f} s.</p>
</body></html>
"""
