"""One row per record in a stage's JSONL file (the diagnosis, the evaluation, the check after each epoch,
SliCK's samples, the restatements), resumable and shared over the ranks.

Rows are appended to the stage's JSONL as each batch finishes, so an interrupted run
resumes where it stopped instead of answering everything again. Under mlx.launch each rank
answers every Nth record into a file of its own, and rank 0 merges them at the end.
"""

from collections.abc import Callable
from pathlib import Path

from . import distributed
from .answer import Answerer, by_length, length_sorted_batches
from .artifacts import append_rows, read_rows
from .data import Record
from .grade import Grader


def graded(records: list[Record], responses: list[str], grade: Grader) -> list[dict]:
    """Rows {id, response, correct, grader, score, unsure} of responses to records."""
    return [
        {"id": r.id, "response": resp, "correct": g.correct, "grader": g.grader, "score": round(g.score, 4),
         "unsure": g.unsure}
        for r, resp, g in zip(records, responses, grade(records, responses))
    ]


def score(answer: Answerer, records: list[Record], grade: Grader) -> list[dict]:
    """Rows {id, response, correct, grader, score, unsure} for one batch of records."""
    return graded(records, answer(records, 0.0), grade)


def rank_file(out_path: Path, rank: int) -> Path:
    return out_path.with_name(f"{out_path.name}.rank{rank}")


def rank_files(out_path: Path) -> list[Path]:
    # Any world size: a run interrupted under mlx.launch may resume with another number of ranks.
    return sorted(out_path.parent.glob(f"{out_path.name}.rank*"))


def merge_rank_files(out_path: Path) -> None:
    """Rows of the ranks' files that out_path lacks are appended to it, then the files removed;
    a merge cut short is finished by the next one, since rows are told apart by id."""
    have = {row["id"] for row in read_rows(out_path)}
    for path in rank_files(out_path):
        rows = [row for row in read_rows(path) if row["id"] not in have]
        append_rows(out_path, rows)
        have.update(row["id"] for row in rows)
        path.unlink()


def rows_for(records: list[Record], out_path: Path, batch_size: int, desc: str,
             scorer: Callable[[list[Record]], list[dict]]) -> list[dict]:
    """One row per record, in order: rows already in out_path are kept, the rest scored and appended.

    Under mlx.launch, rank r scores every Nth of the remaining records (by length, so that the
    ranks get as much work) into its own file; rank 0 merges them into out_path.
    """
    done = {row["id"]: row for path in [out_path, *rank_files(out_path)] for row in read_rows(path)}
    todo = [r for r in records if r.id not in done]
    mine = by_length(todo)[distributed.rank()::distributed.size()]
    own_path = out_path if distributed.size() == 1 else rank_file(out_path, distributed.rank())
    # No rank writes before every rank has read what is done: a rank that read later would count a
    # faster rank's first rows as done, shift its share, and leave records to nobody.
    distributed.barrier()
    finished = len(records) - len(todo)
    with distributed.progress(total=finished + len(mine), initial=finished, desc=desc, unit="q") as bar:
        for batch in length_sorted_batches(mine, batch_size):
            rows = scorer(batch)
            append_rows(own_path, rows)
            done.update((row["id"], row) for row in rows)
            bar.update(len(batch))
    distributed.barrier()  # every rank's file is complete
    distributed.on_main(merge_rank_files, out_path)
    done.update((row["id"], row) for row in read_rows(out_path))
    return [done[r.id] for r in records]


def answer_and_grade(answer: Answerer, records: list[Record], out_path: Path, grade: Grader,
                     batch_size: int, desc: str) -> list[dict]:
    return rows_for(records, out_path, batch_size, desc, lambda batch: score(answer, batch, grade))


def sample_and_grade(answer: Answerer, records: list[Record], out_path: Path, grade: Grader,
                     batch_size: int, samples: int, temperature: float) -> list[dict]:
    """Rows {id, samples_correct: [bool] * samples} from answers sampled at a temperature."""

    def scorer(batch):
        repeated = [r for r in batch for _ in range(samples)]
        grades = grade(repeated, answer(repeated, temperature))
        return [{"id": r.id, "samples_correct": [g.correct for g in grades[i * samples:(i + 1) * samples]]}
                for i, r in enumerate(batch)]

    return rows_for(records, out_path, max(1, batch_size // samples), "sample", scorer)
