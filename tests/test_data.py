import gzip
import hashlib
import json
import re

import pytest

from conftest import write_jsonl
from slearn_mlx.data import DataError, assign_splits, load_records


@pytest.mark.parametrize("row, question, answer, context", [
    ({"question": "Q1?", "answer": "A1", "aliases": ["one"]}, "Q1?", "A1", []),
    ({"instruction": "Q2?", "input": "context", "output": "A2"}, "Q2?\n\ncontext", "A2", []),
    ({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q3?"},
                   {"role": "assistant", "content": "A3"}]}, "Q3?", "A3", [{"role": "system", "content": "be brief"}]),
    ({"prompt": "Q4?", "completion": "A4"}, "Q4?", "A4", []),
    ({"question": "Q5?", "answer": "B", "system": "Answer with a letter."}, "Q5?", "B",
     [{"role": "system", "content": "Answer with a letter."}]),
])
def test_every_shape_reads_to_the_same_fields(tmp_path, row, question, answer, context):
    record, = load_records(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert (record.question, record.answer, record.context, record.line) == (question, answer, context, 1)


def test_kinds_are_given_or_guessed(tmp_path):
    rows = [{"question": "Q1?", "answer": "A1"}, {"question": "Pick one", "answer": "B", "choices": {"A": "x", "B": "y"}},
            {"question": "Explain", "answer": " ".join(["word"] * 20)}, {"question": "Q?", "answer": "x", "kind": "long"}]
    assert [r.kind for r in load_records(write_jsonl(tmp_path / "d.jsonl", rows))] == ["short", "mcq", "long", "long"]


def test_ids_depend_on_content_not_position(tmp_path):
    rows = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    a = load_records(write_jsonl(tmp_path / "a.jsonl", rows))
    b = load_records(write_jsonl(tmp_path / "b.jsonl", rows[::-1]))
    assert {r.question: r.id for r in a} == {r.question: r.id for r in b}
    assert a[0].id != a[1].id


def test_json_array_with_bom_and_line_numbers(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('\ufeff[\n  {"question": "Q?", "answer": "A"},\n  {"question": "Q2?"}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json:3: missing field 'answer'"):
        load_records(path)


@pytest.mark.parametrize("content, problem", [
    ('{"question": "Q?", "answer": "A"}\n{"question": "Q?", "answer": \n', r":2: invalid JSON"),
    ('{"question": "Q?"}\n', r":1: missing field 'answer'"),
    ('{"question": "Q?", "answer": "  "}\n', r":1: empty answer"),
    ('{"question": "", "answer": "A"}\n', r":1: empty question"),
    ('{"question": "Q?", "answer": true}\n', r":1: field 'answer' must be a string, got true or false"),
    ('{"question": "Q?", "answer": "A", "aliases": "x"}\n', r":1: 'aliases' must be a list of strings"),
    ('["Q?", "A"]\n', r":1: expected a JSON object, got an array"),
    ('{"text": "just text"}\n', r":1: no known shape"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', r":1: 'messages' must be a list"),
    ('{"question": "Q?", "answer": "A", "kind": "essay"}\n', r":1: 'kind' must be one of"),
    ("", r": no records"),
])
def test_bad_input_names_file_line_and_problem(tmp_path, content, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=r"bad\.jsonl" + problem):
        load_records(path)


def test_non_utf8_missing_file_and_directory(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"question": "Q?", "answer": "A"}\n{"question": "caf\xe9", "answer": "A"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not UTF-8"):
        load_records(path)
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="not a file"):
        load_records(tmp_path)


def test_input_file_is_never_written(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "Q?", "answer": "A"}, '{"broken'])
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataError):
        load_records(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_splits_are_seeded_sized_and_order_free(tmp_path):
    rows = [json.dumps({"question": f"Q{i}", "answer": "A"}) for i in range(50)]
    records = load_records(write_jsonl(tmp_path / "d.jsonl", rows))
    splits = assign_splits(records, 0.2, 0.1, 0)
    assert splits == assign_splits(records[::-1], 0.2, 0.1, 0)
    assert sorted(splits.values()).count("held_out") == 10 and list(splits.values()).count("validation") == 5
    assert splits != assign_splits(records, 0.2, 0.1, 1)


def test_a_repeated_pair_counts_once_and_is_reported(tmp_path, caplog):
    rows = [{"question": "Q?", "answer": "A"}, {"question": "Q2?", "answer": "B"}, {"question": "Q?", "answer": "A"}]
    records = load_records(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [r.line for r in records] == [1, 2]
    assert "1 records repeat an earlier one and are counted once (line 3 repeats line 1)" in caplog.text


def test_multiple_choice_with_other_options_is_another_record(tmp_path):
    rows = [{"question": "Q?", "answer": "B", "choices": {"A": "x", "B": "y"}},
            {"question": "Q?", "answer": "B", "choices": {"A": "x", "B": "z"}}]
    assert len(load_records(write_jsonl(tmp_path / "d.jsonl", rows))) == 2


@pytest.mark.parametrize("row, problem", [
    ({"question": "Q?", "answer": "E", "choices": {"A": "x", "B": "y"}},
     ":1: multiple-choice answer 'E' is not a letter of its choices (A, B); it could never be graded right"),
    ({"question": "Q?\nA. x\nB. y", "answer": "C", "kind": "mcq"}, ":1: multiple-choice answer 'C' is not a letter "
     "of the options in its question (A, B)"),
    ({"question": "Q?", "answer": "F", "kind": "mcq"}, ":1: multiple-choice answer 'F' is not a letter of A-E (it has no choices)"),
    ({"question": "Q?", "answer": "yellow", "choices": {"A": "red", "B": "yellow"}}, ":1: multiple-choice answer 'yellow'"),
])
def test_a_multiple_choice_answer_no_option_has_is_an_error(tmp_path, row, problem):
    with pytest.raises(DataError, match=re.escape(problem)):
        load_records(write_jsonl(tmp_path / "bad.jsonl", [row]))


def test_multiple_choice_letters_the_record_has_are_fine(tmp_path):
    rows = [{"question": "Q?\nA. x\nB. y\nC. z\nD. w\nE. v\nF. u", "answer": "F", "kind": "mcq"},
            {"question": "Q2?", "answer": "b", "choices": {"a": "x", "b": "y"}}, {"question": "Q3?", "answer": "E"}]
    assert [r.kind for r in load_records(write_jsonl(tmp_path / "d.jsonl", rows))] == ["mcq"] * 3


def gzipped(path, text):
    path.write_bytes(gzip.compress(text.encode()))
    return path


def test_gzip_files_are_read_with_their_line_numbers(tmp_path):
    lines = '{"question": "Q?", "answer": "A"}\n{"question": "Q2?", "answer": "B"}\n'
    assert [r.answer for r in load_records(gzipped(tmp_path / "d.jsonl.gz", lines))] == ["A", "B"]
    array = '[{"question": "Q?", "answer": "A"},\n {"question": "Q2?"}]'
    with pytest.raises(DataError, match=r"d\.json\.gz:2: missing field 'answer'"):
        load_records(gzipped(tmp_path / "d.json.gz", array))
    with pytest.raises(DataError, match=r"e\.jsonl\.gz:2: invalid JSON"):
        load_records(gzipped(tmp_path / "e.jsonl.gz", lines.replace('"B"}', '"B"')))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(lines.encode() * 50)[:60])
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz:\d+: a broken gzip file"):
        load_records(cut)


def test_csv_rows_are_records_with_line_numbered_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer,aliases\n"What is\nthe capital?",Paris,"[""City of Light""]"\n'
                    "Who wrote Hamlet?,Shakespeare,\n", encoding="utf-8")
    first, second = load_records(path)
    assert (first.question, first.aliases, first.line) == ("What is\nthe capital?", ["City of Light"], 2)
    assert (second.answer, second.aliases, second.line) == ("Shakespeare", [], 4)
    path.write_text('question,answer\n"Q\nspanning",A\nQ2?,\nQ3?,A,extra\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.csv:4: missing field 'answer'"):
        load_records(path)
    from slearn_mlx.data_check import check_dataset
    assert check_dataset(path).problems == [f"{path}:4: missing field 'answer'",
                                            f"{path}:5: 3 cells, but the header has 2"]


def test_parquet_rows_are_records_with_row_numbered_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"question": ["Q?", "Q2?"], "answer": ["A", "B"], "aliases": [["a"], None],
                             "choices": [None, None]}), path)
    assert [(r.answer, r.aliases, r.line) for r in load_records(path)] == [("A", ["a"], 1), ("B", [], 2)]
    pq.write_table(pa.table({"question": ["Q?", "Q2?"], "answer": ["A", None]}), path)
    with pytest.raises(DataError, match=r"d\.parquet:2: missing field 'answer'"):
        load_records(path)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"d\.parquet: not a readable Parquet file"):
        load_records(path)
