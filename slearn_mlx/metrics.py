"""The numbers of a run: accuracy before and after training per group of records, what each epoch of
training did, and the time and memory of each stage; metrics.json, and the reports made from them.
"""

from pathlib import Path

from . import distributed
from .artifacts import read_json, read_rows, write_atomic, write_json
from .html_report import render_html
from .report import render_report
from .run import REFUSED, STAGES, RunError, finished_stages, load_run


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


def refused_records(run_dir: Path) -> list[str]:
    """The records of the data that --skip-invalid left out, each as FILE:LINE: problem."""
    path = run_dir / REFUSED
    return read_json(path) if path.exists() else []


def write_metrics(run_dir: Path) -> dict:
    """metrics.json, report.md and report.html of a finished run (`slearn_mlx report RUN` redoes them)."""
    run = load_run(run_dir)
    if "evaluate" not in finished_stages(run_dir):
        raise RunError(f"{run_dir}: the run is not evaluated yet; finish it with `adapt` or `evaluate`")
    before = read_rows(run_dir / "diagnosis.jsonl")
    after = read_rows(run_dir / "evaluation.jsonl")
    trained = trained_ids(run_dir)
    stages = finished_stages(run_dir)
    metrics = {
        "run": str(run_dir),
        "policy": run.config.select.policy,
        "records": len(run.records),
        "refused": refused_records(run_dir),
        "accuracy": accuracy_table(before, after, trained, run.splits),
        "epochs": epoch_summary(run_dir),
        "stage_seconds": {s: stages[s]["seconds"] for s in STAGES if s in stages},
        "stages": stages,
    }
    metrics["total_seconds"] = round(sum(metrics["stage_seconds"].values()), 2)
    write_json(run_dir / "metrics.json", metrics)
    write_atomic(run_dir / "report.md", render_report(metrics, run.config, run.records, before, after))
    write_atomic(run_dir / "report.html", render_html(metrics, run.config, run.records, before, after))
    return metrics


def finish_metrics(run_dir: Path) -> dict:
    """write_metrics on rank 0; every rank returns what it wrote."""
    distributed.on_main(write_metrics, run_dir)
    return read_json(run_dir / "metrics.json")
