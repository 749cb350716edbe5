"""Rows of the diagnosis and evaluation, and their counts: an unsure answer is wrong, and counted apart;
the rows are shared over ranks, and resumed whatever the number of ranks."""

import threading
import time
from types import SimpleNamespace

import pytest

from slearn_mlx import distributed
from slearn_mlx.artifacts import append_rows, read_rows
from slearn_mlx.data import Record
from slearn_mlx.grade import auto_grade
from slearn_mlx.metrics import accuracy_table
from slearn_mlx.report import render_report
from slearn_mlx.resumable_rows import rank_file, rank_files, rows_for, score

RESPONSES = {"a": "Ankara", "b": "Perhaps Ankara? I really can't say.", "c": "Istanbul"}
RECORDS = [Record(id=i, question="What is the capital of Turkey?", answer="Ankara", kind="short") for i in RESPONSES]


def scripted(records, temperature):
    return [RESPONSES[r.id] for r in records]


def test_an_unsure_answer_is_recorded_as_wrong_and_unsure():
    rows = score(scripted, RECORDS, auto_grade)
    assert [(row["correct"], row["unsure"]) for row in rows] == [(True, False), (False, True), (False, False)]


def test_unsure_answers_are_unknown_and_counted_in_the_table_and_report():
    rows = score(scripted, RECORDS, auto_grade)
    table = accuracy_table(rows, rows, set(), {r.id: "train" for r in RECORDS})
    assert table["known"]["records"] == 1 and table["unknown"]["records"] == 2  # the unsure one is not known
    assert (table["unknown"]["unsure_before"], table["whole_set"]["unsure_after"], table["known"]["unsure_before"]) == (1, 1, 0)
    metrics = {"run": "r", "records": 3, "accuracy": table, "stage_seconds": {}, "stages": {}, "total_seconds": 0.0,
               "epochs": []}
    config = SimpleNamespace(model="m", data="d", select=SimpleNamespace(policy="unknown"),
                             train=SimpleNamespace(epochs=1, learning_rate=1e-4))
    assert "| whole set | 3 | 33.3% | 33.3% | 1 | 1 |" in render_report(metrics, config, RECORDS, rows, rows)


def test_rows_without_the_field_count_as_sure():
    rows = [{"id": r.id, "correct": False} for r in RECORDS]  # probed, or written before the field existed
    assert accuracy_table(rows, None, set(), {r.id: "train" for r in RECORDS})["whole_set"]["unsure_before"] == 0


def as_ranks(size: int, monkeypatch, work) -> dict:
    """work(rank) run by `size` threads standing for the ranks of mlx.launch; each one's result by rank."""
    local, meeting = threading.local(), threading.Barrier(size, timeout=30)
    monkeypatch.setattr(distributed, "rank", lambda: local.rank)
    monkeypatch.setattr(distributed, "size", lambda: size)
    monkeypatch.setattr(distributed, "barrier", lambda: meeting.wait())
    results = {}

    def run(rank):
        local.rank = rank
        results[rank] = work(rank)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def unknown_rows(batch: list[Record]) -> list[dict]:
    return [{"id": r.id, "correct": False} for r in batch]


RANKED = [Record(id=f"r{i:02}", question=f"Q{i}?", answer="A", kind="short") for i in range(12)]


def test_ranks_that_start_apart_still_share_every_record(tmp_path, monkeypatch):
    """Two ranks as threads: rank 1 starts late, after rank 0 could have written its first rows."""
    def work(rank):
        time.sleep(0.5 * rank)
        return rows_for(RANKED, tmp_path / "diagnosis.jsonl", 2, "test", unknown_rows)

    results = as_ranks(2, monkeypatch, work)
    assert [row["id"] for row in results[0]] == [r.id for r in RANKED] == [row["id"] for row in results[1]]


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_run_interrupted_under_two_ranks_resumes_under_another_number(tmp_path, monkeypatch, ranks):
    """What two ranks wrote before a kill (their own files, the last line torn) is kept by one rank or
    three, which answer only the rest, each record once, and merge every file into the run's own."""
    out = tmp_path / "diagnosis.jsonl"
    append_rows(out, unknown_rows(RANKED[:2]))  # merged before the interruption
    append_rows(rank_file(out, 0), unknown_rows(RANKED[2:5:2]))
    rank_file(out, 0).write_text(rank_file(out, 0).read_text() + '{"id": "r06", "corr')  # killed mid-line
    append_rows(rank_file(out, 1), unknown_rows(RANKED[3:6:2]))
    scored, lock = [], threading.Lock()

    def scorer(batch):
        with lock:
            scored.extend(r.id for r in batch)
        return unknown_rows(batch)

    results = as_ranks(ranks, monkeypatch, lambda rank: rows_for(RANKED, out, 2, "test", scorer))
    assert sorted(scored) == [r.id for r in RANKED[6:]]
    assert all([row["id"] for row in rows] == [r.id for r in RANKED] for rows in results.values())
    assert sorted(row["id"] for row in read_rows(out)) == [r.id for r in RANKED] and not rank_files(out)
