"""The numbers of a run: accuracy before and after training per group of records and per topic, and
what each epoch of training did."""

from pathlib import Path

from .artifacts import read_rows
from .data import Record


def accuracy(rows: dict[str, dict], ids: list[str]) -> float | None:
    return sum(rows[i]["correct"] for i in ids) / len(ids) if ids else None


def unsure_count(rows: dict[str, dict], ids: list[str]) -> int:
    """Answers graded unsure (hedged, refused): wrong, and counted apart. Probed and older rows have none."""
    return sum(bool(rows[i].get("unsure")) for i in ids)


def accuracy_table(before: list[dict], after: list[dict] | None, trained_ids: set[str], splits: dict[str, str]) -> dict:
    """Accuracy before and after, for the known, unknown, trained, validation, held-out records and the whole
    set, and how many answers of each were unsure.

    Known and unknown are the training split's records the model answered right or wrong in
    the diagnosis; validation and held-out records are never trained on.
    """
    before_by_id = {row["id"]: row for row in before}
    after_by_id = {row["id"]: row for row in after} if after else None
    ids = [row["id"] for row in before]
    train_split = [i for i in ids if splits[i] == "train"]
    groups = {
        "known": [i for i in train_split if before_by_id[i]["correct"]],
        "unknown": [i for i in train_split if not before_by_id[i]["correct"]],
        "trained": [i for i in ids if i in trained_ids],
        "validation": [i for i in ids if splits[i] == "validation"],
        "held_out": [i for i in ids if splits[i] == "held_out"],
        "whole_set": ids,
    }
    return {
        name: {
            "records": len(group),
            "before": accuracy(before_by_id, group),
            "after": accuracy(after_by_id, group) if after_by_id else None,
            "unsure_before": unsure_count(before_by_id, group),
            "unsure_after": unsure_count(after_by_id, group) if after_by_id else None,
        }
        for name, group in groups.items()
    }


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


def trained_ids(run_dir: Path) -> set[str]:
    """The records some epoch trained on."""
    log = read_rows(run_dir / "adapter" / "train_log.jsonl")
    return {i for row in log if row["event"] == "epoch" for i in row["trained"]}


def epoch_summary(run_dir: Path) -> list[dict]:
    """Per epoch: records trained and loss; after the check, the right known and unknown records, how many
    left and returned, and the validation guard."""
    epochs: dict[int, dict] = {}
    for row in read_rows(run_dir / "adapter" / "train_log.jsonl"):  # a resumed epoch's later rows win
        summary = epochs.setdefault(row["epoch"], {"epoch": row["epoch"]})
        if row["event"] == "epoch":
            summary.update(records=row["records"], loss=round(row["loss"], 4), seconds=row["seconds"])
        elif row["event"] == "check":
            summary.update({k: v for k, v in row.items() if k not in ("event", "left", "returned", "seconds")},
                           left=len(row["left"]), returned=len(row["returned"]), check_seconds=row["seconds"])
    return [e for _, e in sorted(epochs.items()) if "records" in e]
