"""A readable report of a run: what the model did not know, and what training changed."""

from .data import Record

GROUP_TITLES = {
    "known": "known (training split, right before)",
    "unknown": "unknown (training split, wrong before)",
    "trained": "trained on",
    "validation": "validation (never trained on; a guard, answered after each epoch)",
    "held_out": "held out (never trained on)",
    "whole_set": "whole set",
}
EXAMPLES = 5


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def count(value: int | None) -> str:
    return "-" if value is None else str(value)


def topic_split(records: list[Record], before: list[dict], after: list[dict] | None = None) -> dict[str, dict]:
    """Per topic, most records first: how many records, how many the base model knew, and how
    many the adapted model answers right (None before evaluation). Records without a topic are
    counted under "(no topic)"."""
    before_by_id = {row["id"]: row for row in before}
    after_by_id = {row["id"]: row for row in after} if after else {}
    split: dict[str, dict] = {}
    for record in records:
        row = split.setdefault(record.topic or "(no topic)", {"records": 0, "known": 0, "after": 0 if after_by_id else None})
        row["records"] += 1
        row["known"] += before_by_id[record.id]["correct"]
        if after_by_id:
            row["after"] += after_by_id[record.id]["correct"]
    return dict(sorted(split.items(), key=lambda item: -item[1]["records"]))


def topic_table(split: dict) -> list[str]:
    """Markdown rows of known/unknown per topic (topic_split), for report.md and `diagnose`."""
    lines = ["| topic | records | known before | unknown before | right after |", "|---|---|---|---|---|"]
    for topic, row in split.items():
        after = "-" if row["after"] is None else f"{row['after']} ({percent(row['after'] / row['records'])})"
        lines.append(f"| {topic} | {row['records']} | {row['known']} ({percent(row['known'] / row['records'])}) "
                     f"| {row['records'] - row['known']} | {after} |")
    return lines


EPOCH_HEADER = ["epoch", "records trained", "loss", "known kept", "unknown learned", "left", "returned",
                "validation", "kept"]
EPOCH_NOTE = ("After each epoch every training record is checked: right when the model says its expected answer "
              "word for word, or else answers it right when asked. Right records leave the next epoch; wrong ones, "
              "forgotten known records included, come back in. The validation records are never trained on.")


def fraction(pair: list[int] | None) -> str:
    return "-" if not pair else f"{pair[0]}/{pair[1]}"


def epoch_cells(row: dict) -> list[str]:
    """One epoch of training as table cells (metrics["epochs"]), for report.md and report.html."""
    counts = [str(row[k]) if k in row else "-" for k in ("left", "returned")]
    return [str(row["epoch"]), str(row["records"]), f"{row['loss']:.3f}", fraction(row.get("right_known")),
            fraction(row.get("right_unknown")), *counts, percent(row.get("validation_accuracy")),
            "yes" if row.get("kept") else ""]


def refused_lines(refused: list[str], shown: int = 20) -> list[str]:
    """The records of the data left out by --skip-invalid, named (the first `shown`); none: no lines."""
    if not refused:
        return []
    rest = [f"- and {len(refused) - shown} more, in refused.json"] if len(refused) > shown else []
    return [f"{len(refused)} records of the data were refused and left out (--skip-invalid):", "",
            *[f"- {problem}" for problem in refused[:shown]], *rest, ""]


def ranked_examples(records: list[Record], before: list[dict], after: list[dict], count: int = EXAMPLES):
    """(most improved, worst): (record, before row, after row) triples.

    Most improved: wrong before and right after first, then the largest gain in grade score.
    Worst: wrong after training, the ones it knew before (forgotten) first.
    """
    before_by_id = {row["id"]: row for row in before}
    after_by_id = {row["id"]: row for row in after}
    triples = [(r, before_by_id[r.id], after_by_id[r.id]) for r in records if r.id in after_by_id]

    def gain(triple):
        _, b, a = triple
        return (a["correct"] - b["correct"], a["score"] - b["score"])

    ranked = sorted(triples, key=gain, reverse=True)  # stable: ties keep the data's order
    improved = [t for t in ranked if gain(t) > (0, 0)][:count]
    worst = [t for t in sorted(triples, key=gain) if not t[2]["correct"]][:count]
    return improved, worst


def example_lines(triples) -> list[str]:
    return [f"- **{record.question}** (reference: {record.answer})  \n"
            f"  before: {b.get('response', '(probed, not answered)')!r}  \n  after: {a['response']!r}"
            for record, b, a in triples] or ["- none"]


def render_report(metrics: dict, config, records: list[Record], before: list[dict], after: list[dict]) -> str:
    lines = [
        f"# slearn-mlx run: {metrics['run']}",
        "",
        f"Model `{config.model}`, data `{config.data}` ({metrics['records']} records), "
        f"policy `{config.select.policy}`, {config.train.epochs} epochs, learning rate {config.train.learning_rate}.",
        "",
        *refused_lines(metrics.get("refused", [])),
        "## Accuracy before and after training",
        "",
        "Unsure answers (hedged, refused, \"I don't know\") count as wrong; how many there were is counted apart.",
        "",
        "| records | count | before | after | unsure before | unsure after |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in metrics["accuracy"].items():
        lines.append(f"| {GROUP_TITLES[name]} | {row['records']} | {percent(row['before'])} | {percent(row['after'])} "
                     f"| {count(row.get('unsure_before'))} | {count(row.get('unsure_after'))} |")
    lines += ["", "## Time and memory per stage", "", "| stage | seconds | peak MLX memory |", "|---|---|---|"]
    for stage, seconds in metrics["stage_seconds"].items():
        peak = metrics["stages"][stage].get("peak_memory_mb")  # absent in runs made before it was recorded
        lines.append(f"| {stage} | {seconds:.1f} | {'-' if peak is None else f'{peak:,.0f} MB'} |")
    lines += [f"| total | {metrics['total_seconds']:.1f} | |", ""]
    if metrics["epochs"]:
        lines += ["## Training, epoch by epoch", "", EPOCH_NOTE, "",
                  "| " + " | ".join(EPOCH_HEADER) + " |", "|" + "---|" * len(EPOCH_HEADER),
                  *["| " + " | ".join(epoch_cells(row)) + " |" for row in metrics["epochs"]], ""]
    lines += ["## Known and unknown per topic", "", *topic_table(topic_split(records, before, after)), ""]
    improved, worst = ranked_examples(records, before, after)
    lines += ["## Most improved", "", *example_lines(improved), ""]
    lines += ["## Worst after training (forgotten first)", "", *example_lines(worst), ""]
    return "\n".join(lines)
