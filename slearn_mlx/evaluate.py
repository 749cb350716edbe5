"""Answer and grade records (the diagnosis before training, the evaluation after), and count.

Rows are appended to the stage's JSONL as each batch finishes, so an interrupted run
resumes where it stopped instead of answering everything again.
"""

from pathlib import Path

from tqdm import tqdm

from .answer import answer_batch, length_sorted_batches
from .artifacts import append_rows, read_rows
from .data import Record
from .grade import JUDGED_KINDS, Judge, auto_grade


def answer_and_grade(
    model, tokenizer, records: list[Record], out_path: Path, judge: Judge | None, batch_size: int, desc: str,
    judged_kinds: frozenset[str] = JUDGED_KINDS,
) -> list[dict]:
    """One row per record: {id, response, correct, grader, score}; finished rows in out_path are kept."""
    done = {row["id"]: row for row in read_rows(out_path)}
    todo = [r for r in records if r.id not in done]
    with tqdm(total=len(records), initial=len(records) - len(todo), desc=desc, unit="q") as bar:
        for batch in length_sorted_batches(todo, batch_size):
            responses = answer_batch(model, tokenizer, batch)
            rows = [
                {"id": r.id, "response": resp, "correct": g.correct, "grader": g.grader, "score": round(g.score, 4)}
                for r, resp, g in zip(batch, responses, auto_grade(batch, responses, judge, judged_kinds))
            ]
            append_rows(out_path, rows)
            done.update((row["id"], row) for row in rows)
            bar.update(len(batch))
    return [done[r.id] for r in records]


def accuracy(rows: dict[str, dict], ids: list[str]) -> float | None:
    return sum(rows[i]["correct"] for i in ids) / len(ids) if ids else None


def accuracy_table(before: list[dict], after: list[dict] | None, trained_ids: set[str], held_out: set[str]) -> dict:
    """Accuracy before and after, for the known, unknown, trained, held-out records and the whole set.

    Known and unknown are the training split's records the model answered right or wrong in
    the diagnosis; held-out records are never trained on.
    """
    before_by_id = {row["id"]: row for row in before}
    after_by_id = {row["id"]: row for row in after} if after else None
    ids = [row["id"] for row in before]
    train_split = [i for i in ids if i not in held_out]
    groups = {
        "known": [i for i in train_split if before_by_id[i]["correct"]],
        "unknown": [i for i in train_split if not before_by_id[i]["correct"]],
        "trained": [i for i in ids if i in trained_ids],
        "held_out": [i for i in ids if i in held_out],
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
