"""The bad-input corpus in tests/bad_inputs/: each file gives one clear error naming file, line and problem,
exits 2, and leaves no run folder behind that a rerun would trust."""

import json
import sys

import pytest

from conftest import REPO
from slearn_mlx.cli import main
from slearn_mlx.data import load_records

CORPUS = REPO / "tests" / "bad_inputs"
EXPECTED = {
    "truncated.jsonl": ":2: invalid JSON (Unterminated string",
    "mixed_shapes.jsonl": ":2: shape alpaca, but line 1 is question/answer; one file holds one shape",
    "latin1_bytes.jsonl": ":2: not UTF-8 text (invalid continuation byte",
    "empty_answer.jsonl": ":1: empty answer",
    "empty_question.jsonl": ":1: empty question",
    "zero_bytes.jsonl": ": no records (the file is empty)",
    "a_directory.jsonl": ": not a file",
    "wrong_type.jsonl": ":1: field 'answer' must be a string, got list",
    "broken_array.json": ":2: invalid JSON (Expecting ',' delimiter)",
    "does_not_exist.jsonl": ": no such file",
}


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["slearn_mlx", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_input_gives_one_clear_error(name, tiny_model, tmp_path, monkeypatch, capsys):
    path = CORPUS / name
    code, err = run_cli(["adapt", str(path), "--model", str(tiny_model), "--out", str(tmp_path / "run")],
                        monkeypatch, capsys)
    assert code == 2
    assert err.startswith(f"error: {path}{EXPECTED[name]}"), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_every_corpus_file_has_an_expectation():
    assert {p.name for p in CORPUS.iterdir()} | {"does_not_exist.jsonl"} == \
        set(EXPECTED) | {"bom_is_fine.jsonl", "duplicate_ids.jsonl"}


def test_a_reused_input_id_is_reported_not_refused(caplog):
    # Real datasets reuse an id for each meaning of a term; slearn-mlx tells records apart by content.
    assert len(load_records(CORPUS / "duplicate_ids.jsonl")) == 2
    assert "1 records reuse the 'id' of another record with other content (line 2 reuses 7 of line 1)" in caplog.text


def test_a_bom_and_a_very_long_line_are_read(tmp_path):
    assert load_records(CORPUS / "bom_is_fine.jsonl")[0].answer == "Random Access Memory"
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"question": "x" * 2_000_000, "answer": "y"}) + "\n")
    assert len(load_records(path)[0].question) == 2_000_000
