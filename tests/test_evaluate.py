"""Rows and counts of the diagnosis and evaluation: an unsure answer is wrong, and counted apart."""

from types import SimpleNamespace

from slearn_mlx.data import Record
from slearn_mlx.metrics import accuracy_table
from slearn_mlx.rows import score
from slearn_mlx.grade import auto_grade
from slearn_mlx.report import render_report

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


def test_ranks_that_start_apart_still_share_every_record(tmp_path, monkeypatch):
    """Two ranks as threads: rank 1 starts late, after rank 0 could have written its first rows."""
    import threading
    import time

    from slearn_mlx import distributed
    from slearn_mlx.rows import rows_for

    local, meeting = threading.local(), threading.Barrier(2, timeout=30)
    monkeypatch.setattr(distributed, "rank", lambda: local.rank)
    monkeypatch.setattr(distributed, "size", lambda: 2)
    monkeypatch.setattr(distributed, "barrier", lambda: meeting.wait())
    records = [Record(id=f"r{i:02}", question=f"Q{i}?", answer="A", kind="short") for i in range(12)]
    out, results = tmp_path / "diagnosis.jsonl", {}

    def run(rank):
        local.rank = rank
        time.sleep(0.5 * rank)
        results[rank] = rows_for(records, out, 2, "test", lambda batch: [{"id": r.id, "correct": False} for r in batch])

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [row["id"] for row in results[0]] == [r.id for r in records] == [row["id"] for row in results[1]]
