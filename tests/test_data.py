import hashlib
import json

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
    ('{"question": "Q?", "answer": 42}\n', r":1: field 'answer' must be a string, got int"),
    ('{"question": "Q?", "answer": "A", "aliases": "x"}\n', r":1: 'aliases' must be a list of strings"),
    ('["Q?", "A"]\n', r":1: expected a JSON object, got list"),
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
