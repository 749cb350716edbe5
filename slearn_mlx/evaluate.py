"""Answer and grade records (the diagnosis before training, the evaluation after), and count.

Rows are appended to the stage's JSONL as each batch finishes, so an interrupted run
resumes where it stopped instead of answering everything again.
"""

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from .answer import answer_batch, length_sorted_batches
from .artifacts import append_rows, read_rows
from .data import Record
from .grade import Grade, grade_by_rule

Judge = Callable[[list[tuple[Record, str]]], list[Grade]]


def grade_batch(records: list[Record], responses: list[str], judge: Judge | None) -> list[Grade]:
    grades = [grade_by_rule(r, resp) for r, resp in zip(records, responses)]
    needs_judge = [i for i, g in enumerate(grades) if g is None]
    if needs_judge:
        if judge is None:
            raise ValueError("records of kind 'long' need a judge model")
        for i, g in zip(needs_judge, judge([(records[i], responses[i]) for i in needs_judge])):
            grades[i] = g
    return grades


def score(model, tokenizer, records: list[Record], judge: Judge | None) -> list[dict]:
    """Rows {id, response, correct, grader, score} for one batch of records."""
    responses = answer_batch(model, tokenizer, records)
    return [
        {"id": r.id, "response": resp, "correct": g.correct, "grader": g.grader, "score": round(g.score, 4)}
        for r, resp, g in zip(records, responses, grade_batch(records, responses, judge))
    ]


def rows_for(records: list[Record], out_path: Path, batch_size: int, desc: str,
             scorer: Callable[[list[Record]], list[dict]]) -> list[dict]:
    """One row per record, in order: rows already in out_path are kept, the rest scored and appended."""
    done = {row["id"]: row for row in read_rows(out_path)}
    todo = [r for r in records if r.id not in done]
    with tqdm(total=len(records), initial=len(records) - len(todo), desc=desc, unit="q") as bar:
        for batch in length_sorted_batches(todo, batch_size):
            rows = scorer(batch)
            append_rows(out_path, rows)
            done.update((row["id"], row) for row in rows)
            bar.update(len(batch))
    return [done[r.id] for r in records]


def answer_and_grade(
    model, tokenizer, records: list[Record], out_path: Path, judge: Judge | None, batch_size: int, desc: str
) -> list[dict]:
    return rows_for(records, out_path, batch_size, desc, lambda batch: score(model, tokenizer, batch, judge))


def sample_and_grade(
    model, tokenizer, records: list[Record], out_path: Path, judge: Judge | None, batch_size: int,
    samples: int, temperature: float,
) -> list[dict]:
    """Rows {id, samples_correct: [bool] * samples} from answers sampled at a temperature."""

    def scorer(batch):
        repeated = [r for r in batch for _ in range(samples)]
        grades = grade_batch(repeated, answer_batch(model, tokenizer, repeated, temperature), judge)
        return [{"id": r.id, "samples_correct": [g.correct for g in grades[i * samples:(i + 1) * samples]]}
                for i, r in enumerate(batch)]

    return rows_for(records, out_path, max(1, batch_size // samples), "sample", scorer)


def accuracy(rows: dict[str, dict], ids: list[str]) -> float | None:
    return sum(rows[i]["correct"] for i in ids) / len(ids) if ids else None


def accuracy_table(before: list[dict], after: list[dict] | None, trained_ids: set[str], splits: dict[str, str]) -> dict:
    """Accuracy before and after, for the known, unknown, trained, validation, held-out records and the whole set.

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
