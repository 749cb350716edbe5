"""A readable report of a run: what the model did not know, and what training changed."""

from .data import Record

GROUP_TITLES = {
    "known": "known (training split, right before)",
    "unknown": "unknown (training split, wrong before)",
    "trained": "trained on",
    "validation": "validation (never trained on; chooses the epoch)",
    "held_out": "held out (never trained on)",
    "whole_set": "whole set",
}
EXAMPLES = 5


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def examples(records, before, after, was: bool, now: bool) -> list[str]:
    lines = []
    for record in records:
        b, a = before[record.id], after.get(record.id)
        if a is not None and b["correct"] == was and a["correct"] == now:
            lines.append(f"- **{record.question}** (reference: {record.answer})  \n"
                         f"  before: {b.get('response', '(probed, not answered)')!r}  \n  after: {a['response']!r}")
        if len(lines) == EXAMPLES:
            break
    return lines or ["- none"]


def render_report(metrics: dict, config, records: list[Record], before: list[dict], after: list[dict]) -> str:
    before_by_id = {row["id"]: row for row in before}
    after_by_id = {row["id"]: row for row in after}
    lines = [
        f"# slearn-mlx run: {metrics['run']}",
        "",
        f"Model `{config.model}`, data `{config.data}` ({metrics['records']} records), "
        f"policy `{config.select.policy}`, {config.train.epochs} epochs, learning rate {config.train.learning_rate}.",
        "",
        "## Accuracy before and after training",
        "",
        "| records | count | before | after |",
        "|---|---|---|---|",
    ]
    for name, row in metrics["accuracy"].items():
        lines.append(f"| {GROUP_TITLES[name]} | {row['records']} | {percent(row['before'])} | {percent(row['after'])} |")
    lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in metrics["stage_seconds"].items()]
    lines += [f"| total | {metrics['total_seconds']:.1f} |", ""]
    lines += ["## Learned: wrong before, right after", "", *examples(records, before_by_id, after_by_id, False, True), ""]
    lines += ["## Forgotten: right before, wrong after", "", *examples(records, before_by_id, after_by_id, True, False), ""]
    return "\n".join(lines)
