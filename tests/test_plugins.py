"""Plug-ins: a package installed beside slearn-mlx adds a grader, a selection policy and a backend by name,
and a run grades, selects and answers through them."""

import os
import subprocess
import sys
from importlib import import_module

import pytest
from click.testing import CliRunner

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx.answer import answer_batch
from slearn_mlx.artifacts import read_json, read_rows
from slearn_mlx.backends import BACKENDS
from slearn_mlx.cli import cli
from slearn_mlx.data import parse_record
from slearn_mlx.grade import GRADERS
from slearn_mlx.models import load_model
from slearn_mlx.selection import POLICIES

# A domain's grader, codes compared whatever their case, spaces and dots ("a01 1" is A01.1); a policy; and a
# backend whose answers are the references.
PACKAGE = '''
from slearn_mlx.backends import BackendKind, in_process_judge


def code(text):
    return "".join(c for c in text.upper() if c.isalnum())


def icd10(response, record):
    return bool(code(response)) and code(response) == code(record.answer)


def first_two(records, diagnosis, config, seed):
    return [(i < 2, "one of the first two") for i in range(len(records))]


def reference_answerer(backend, model, concurrency):
    return (lambda records, temperature=0.0: [r.answer for r in records]), None


reciter = BackendKind(reference_answerer, in_process_judge, remote=False)  # says every record's reference
'''
ENTRY_POINTS = """
[slearn_mlx.graders]
icd10 = my_domain:icd10

[slearn_mlx.policies]
first_two = my_domain:first_two

[slearn_mlx.backends]
reciter = my_domain:reciter
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The package as pip installs it: its module, and a dist-info folder whose entry points declare it."""
    site = tmp_path / "site"
    info = site / "my_domain-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "my_domain.py").write_text(PACKAGE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-domain\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    for registry in (GRADERS, POLICIES, BACKENDS):
        monkeypatch.setattr(registry, "loaded", {})  # the plug-ins are forgotten after the test
    return site


def diagnose(data, model, out, *extra):
    return CliRunner().invoke(cli, ["diagnose", str(data), "--model", str(model), "--out", str(out), *extra])


def test_a_grader_of_an_installed_package_grades_its_kind(installed, tiny_model, tmp_path):
    # References that are the model's own answers written as codes: run together and in capitals.
    model, tokenizer = load_model(tiny_model)
    rows = [{**row, "kind": "short"} for row in qa_rows(8)]
    said = answer_batch(model, tokenizer, [parse_record(row, "row") for row in rows])
    rows = [{**row, "answer": answer.replace(" ", "").upper() or "-"} for row, answer in zip(rows, said)]
    rows.append({"question": "Which is red?\nA) red\nB) blue", "answer": "A", "kind": "mcq"})
    data = write_jsonl(tmp_path / "data.jsonl", rows)

    result = diagnose(data, tiny_model, tmp_path / "rules")
    assert result.exit_code == 0, result.output
    result = diagnose(data, tiny_model, tmp_path / "plugin", "--grader", "short=icd10")
    assert result.exit_code == 0, result.output

    assert read_json(tmp_path / "plugin" / "config.json")["graders"] == ["short=icd10"]
    assert "graders" not in read_json(tmp_path / "rules" / "config.json")  # as config.json was before --grader
    by_rules = {row["id"]: row for row in read_rows(tmp_path / "rules" / "diagnosis.jsonl")}
    records = {r["id"]: r for r in read_rows(tmp_path / "plugin" / "records.jsonl")}
    plugin = read_rows(tmp_path / "plugin" / "diagnosis.jsonl")
    icd10 = import_module("my_domain").icd10
    for row in plugin:
        record = parse_record(records[row["id"]]["raw"], "row")
        assert row["response"] == by_rules[row["id"]]["response"]  # the same answers, graded otherwise
        if record.kind == "short":
            assert row["grader"] == "icd10"
            assert row["correct"] == (icd10(row["response"], record) and not row["unsure"])
        else:
            assert row["grader"] == by_rules[row["id"]]["grader"] == "option_letter"
    assert any(row["correct"] != by_rules[row["id"]]["correct"] for row in plugin)  # the plug-in decided


@pytest.mark.parametrize("grader, problem", [("short=nosuch", "unknown grader 'nosuch'; choose one of .*icd10"),
                                             ("brief=icd10", "give KIND=NAME, once per kind of short, mcq, long"),
                                             ("short", "give KIND=NAME")])
def test_a_grader_no_package_has_is_refused_before_any_work(installed, tiny_model, tmp_path, grader, problem):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(2))
    result = diagnose(data, tiny_model, tmp_path / "run", "--grader", grader)
    assert result.exit_code != 0 and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=problem):
        raise result.exception


def run_command(site, *args):
    """The command as a user runs it, started with the package installed: --policy and --backend offer its names."""
    return subprocess.run([sys.executable, "-m", "slearn_mlx", *map(str, args)], cwd=REPO, check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})


def test_a_policy_of_an_installed_package_chooses_what_the_first_epoch_trains(installed, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(12))
    run_command(installed, "adapt", data, "--model", tiny_model, "--out", tmp_path / "run", "--policy", "first_two",
                "--epochs", "1", "--batch-size", "4")
    selection = read_rows(tmp_path / "run" / "selection.jsonl")
    assert [row["selected"] for row in selection] == [True, True] + [False] * (len(selection) - 2)
    assert all("one of the first two" in row["reason"] for row in selection)
    assert "sample" not in read_json(tmp_path / "run" / "stages.json")  # it reads no sampled answers


def test_a_backend_of_an_installed_package_answers_the_diagnosis(installed, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(6))
    result = run_command(installed, "diagnose", data, "--model", tiny_model, "--out", tmp_path / "run", "--backend",
                         "reciter")
    assert "6 of 6 answered correctly" in result.stdout
    records = {row["id"]: row for row in read_rows(tmp_path / "run" / "records.jsonl")}
    assert all(row["response"] == records[row["id"]]["answer"] for row in read_rows(tmp_path / "run" / "diagnosis.jsonl"))
