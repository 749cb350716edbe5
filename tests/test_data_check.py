"""`data check`: every problem with file and line, repeats, and token lengths from the tokenizer alone."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx.data_check import check_dataset
from slearn_mlx.cli import cli
from slearn_mlx.data import DataError, load_records


BAD = [*qa_rows(2), qa_rows(1)[0], "not json", {"question": "Q?"}, {"question": "P?", "answer": "C", "domain": "x"}]


def test_check_collects_every_problem_where_load_stops_at_the_first(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", BAD)
    check = check_dataset(path)
    assert check.problems == [f"{path}:4: invalid JSON (Expecting value at column 1)", f"{path}:5: missing field 'answer'"]
    assert check.repeats == [(3, 1)]
    assert [r.line for r in check.records] == [1, 2, 6]
    assert check.records[2].topic == "x"
    with pytest.raises(DataError) as refused:
        load_records(path)
    assert str(refused.value) == check.problems[0] + (" (2 of 6 records refused; `data check` lists them, "
                                                      "--skip-invalid leaves them out)")


def test_token_lengths_come_from_the_model_tokenizer(tmp_path, tiny_model):
    from mlx_lm.utils import load_tokenizer

    path = write_jsonl(tmp_path / "d.jsonl", qa_rows(3))
    check = check_dataset(path, tiny_model)
    tokenizer = load_tokenizer(tiny_model)
    assert check.tokens["answer"] == [len(tokenizer.encode(f"Item {i}", add_special_tokens=False)) for i in range(3)]
    assert all(e > q + a for q, a, e in zip(*check.tokens.values()))  # the example adds the chat template
    assert check.too_long == []


def test_cli_exits_1_on_problems_and_names_them(tmp_path, tiny_model):
    path = write_jsonl(tmp_path / "d.jsonl", BAD)
    result = CliRunner().invoke(cli, ["data", "check", str(path), "--model", str(tiny_model)])
    assert result.exit_code == 1
    assert "problems: 2" in result.output and f"{path}:5: missing field 'answer'" in result.output
    assert "3 records (1 more repeat an earlier one" in result.output
    good = write_jsonl(tmp_path / "good.jsonl", qa_rows(3))
    result = CliRunner().invoke(cli, ["data", "check", str(good), "--model", str(tiny_model)])
    assert result.exit_code == 0 and "problems: 0" in result.output and "kinds: short 3" in result.output


def test_over_long_examples_are_named_at_the_users_limit_and_left_out_not_cut(tmp_path, tiny_model):
    path = write_jsonl(tmp_path / "d.jsonl", [*qa_rows(2), {"question": "What is item " * 20, "answer": "Item"}])
    lengths = check_dataset(path, tiny_model).tokens["training example"]
    limit = max(lengths) - 1
    check = check_dataset(path, tiny_model, max_seq_length=limit)
    assert check.too_long == [(3, max(lengths))]
    result = CliRunner().invoke(cli, ["data", "check", str(path), "--model", str(tiny_model),
                                      "--max-seq-length", str(limit)])
    assert f"warning: {path}:3: {max(lengths)} tokens, over --max-seq-length {limit}; training leaves it out" \
        in result.output
    assert "cut" not in result.output


def test_check_does_not_import_the_trainer():
    probe = "import sys, slearn_mlx.data_check; print('slearn_mlx.train' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True).stdout.strip() == "False"
