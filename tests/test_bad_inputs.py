"""The bad-input corpus in tests/bad_inputs/: each file gives one clear error naming file, line and problem,
exits 2, and leaves no run folder behind that a rerun would trust."""

import gzip
import json
import re
import sys

import pytest

from conftest import REPO
from slearn_mlx.artifacts import read_json, read_rows
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
    "wrong_type.jsonl": ":1: field 'answer' must be a string, got an array",
    "broken_array.json": ":2: invalid JSON (Expecting ',' delimiter)",
    "does_not_exist.jsonl": ": no such file",
}


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    code, _, err = run_main(args, monkeypatch, capsys)
    return code, err


def run_main(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """The command as a user runs it, through main()'s own handling of errors: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["slearn_mlx", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


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


MEDMCQA = "Which change is seen in the muscles of a paralysed limb?\na) Hypertrophy\nb) Hyperplasia\nc) Atrophy\nd) Metaplasia"
FUNGUS = ("Which fungus is found in bird droppings?\nH. capsulatum grows in soil rich in them.\na) Candida\n"
          "b) Histoplasma\nc) Aspergillus")


def line(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def truncated_gzip() -> bytes:
    packed = gzip.compress(line({"question": "Capital of France?", "answer": "Paris"}) * 200)
    return packed[:len(packed) // 2]


# name: (the file's bytes, or None for a directory; then what is read: every record's answer, or the problem as
# a pattern after FILE).
INPUTS = {
    "bom.jsonl": (b"\xef\xbb\xbf" + line({"question": "Capital of France?", "answer": "Paris"}), ["Paris"]),
    "crlf.jsonl": (b'{"question": "Capital of France?", "answer": "Paris"}\r\n'
                   b'{"question": "Capital of Italy?", "answer": "Rome"}\r\n', ["Paris", "Rome"]),
    "crlf.csv": (b"question,answer\r\nCapital of France?,Paris\r\nCapital of Italy?,Rome\r\n", ["Paris", "Rome"]),
    "answer_number.jsonl": (line({"question": "How many legs has a spider?", "answer": 8}), ["8"]),
    "letter_with_its_option.jsonl": (line({"question": MEDMCQA, "answer": "c) Atrophy"}), ["C"]),
    "abbreviation_is_no_option.jsonl": (line({"question": FUNGUS, "answer": "b) Histoplasma"}), ["B"]),
    "nul_bytes.jsonl": (line({"question": "Capital of France?", "answer": "Paris"})
                        + b'{"question": "Capital of \x00Italy?", "answer": "Rome"}\n', r":2: a NUL byte at column 26"),
    "answer_list.jsonl": (line({"question": "Q?", "answer": ["Paris", "Rome"]}),
                          r":1: field 'answer' must be a string, got an array"),
    "answer_null.jsonl": (line({"question": "Q?", "answer": None}), r":1: field 'answer' is null"),
    "answer_whitespace.jsonl": (line({"question": "Q?", "answer": " \t "}), r":1: empty answer"),
    "nested_object.jsonl": (line({"question": "Q?", "answer": {"text": "Paris"}}),
                            r":1: field 'answer' must be a string, got an object"),
    "array_line.jsonl": (line({"question": "Q?", "answer": "Paris"}) + line(["Q?", "Paris"]),
                         r":2: expected a JSON object, got an array"),
    "no_assistant_turn.jsonl": (line({"messages": [{"role": "user", "content": "Q?"}, {"role": "user", "content": "Q?"}]}),
                                r":1: 'messages' must end with a user turn followed by an assistant turn"),
    "unknown_role.jsonl": (line({"messages": [{"role": "narrator", "content": "x"}, {"role": "user", "content": "Q?"},
                                              {"role": "assistant", "content": "Paris"}]}),
                           r":1: messages\[0\] has role 'narrator'; the roles are system, user, assistant"),
    "aliases_not_a_list.jsonl": (line({"question": "Q?", "answer": "Paris", "aliases": "Paree"}),
                                 r":1: 'aliases' must be a list of strings, got a string"),
    "single_option.jsonl": (line({"question": "Pick one", "answer": "A", "choices": {"A": "Paris"}}),
                            r":1: a multiple-choice question needs two options or more; it has only A"),
    "letter_with_other_text.jsonl": (line({"question": MEDMCQA, "answer": "c) Hypertrophy", "kind": "mcq"}),
                                     r":1: multiple-choice answer 'c\) Hypertrophy' gives letter C with other text "
                                     r"than option C's \('Atrophy'\)"),
    "unknown_kind.jsonl": (line({"question": "Q?", "answer": "Paris", "kind": "essay"}),
                           r":1: 'kind' must be one of short, mcq, long, got 'essay'"),
    "truncated.jsonl.gz": (truncated_gzip(), r":\d+: a broken gzip file"),
    "no_answer_column.csv": (b"question,note\nCapital of France?,x\n", r":1: the header has no 'answer' column"),
    "ragged.csv": (b"question,answer\nCapital of France?,Paris\nCapital of Italy?,Rome,extra\n",
                   r":3: 3 cells, but the header has 2"),
    "latin1.csv": (b"question,answer\nCapital of France?,Paris\nCaf\xe9?,x\n", r":3: not UTF-8 text \(byte 0xe9\)"),
    "latin1.jsonl": (line({"question": "Capital of France?", "answer": "Paris"}) + b'{"question": "Caf\xe9?", "answer": "x"}\n',
                     r":2: not UTF-8 text"),
    "a_directory": (None, r": not a file"),
}


def write_input(folder, name):
    content, _ = INPUTS[name]
    path = folder / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_data_check_reads_each_input_or_names_its_problem(name, tiny_model, tmp_path, monkeypatch, capsys):
    path = write_input(tmp_path, name)
    code, out, err = run_main(["data", "check", str(path), "--model", str(tiny_model)], monkeypatch, capsys)
    expected = INPUTS[name][1]
    assert "Traceback" not in out + err
    if isinstance(expected, list):
        assert code == 0 and out.startswith(f"{path}: {len(expected)} records") and "problems: 0" in out, out + err
    else:
        assert code == 1 and re.search(re.escape(f"  {path}") + expected, out), out + err


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_diagnose_reads_each_input_or_refuses_it_before_any_model_work(name, tiny_model, tmp_path, monkeypatch, capsys):
    path = write_input(tmp_path, name)
    run = tmp_path / "run"
    code, out, err = run_main(["diagnose", str(path), "--model", str(tiny_model), "--out", str(run)], monkeypatch, capsys)
    expected = INPUTS[name][1]
    assert "Traceback" not in out + err
    if isinstance(expected, list):
        assert code == 0, out + err
        assert [row["answer"] for row in read_rows(run / "records.jsonl")] == expected
        assert len(read_rows(run / "diagnosis.jsonl")) == len(expected)
    else:
        assert code == 2 and re.match(re.escape(f"error: {path}") + expected, err), err
        assert not run.exists()


MIXED = [{"question": "Capital of France?", "answer": "Paris"}, {"question": "Q?", "answer": None},
         {"question": "Capital of Italy?", "answer": "Rome"}, "not json", {"question": "Capital of Spain?", "answer": "Madrid"}]


def test_skip_invalid_leaves_the_refused_records_out_names_each_and_counts_them(tiny_model, tmp_path, monkeypatch,
                                                                                capsys, caplog):
    from conftest import write_jsonl

    data = write_jsonl(tmp_path / "mixed.jsonl", MIXED)
    problems = [f"{data}:2: field 'answer' is null", f"{data}:4: invalid JSON (Expecting value at column 1)"]
    code, out, err = run_main(["data", "check", str(data), "--model", str(tiny_model), "--skip-invalid"],
                              monkeypatch, capsys)
    assert code == 0 and "--skip-invalid leaves the 2 records with a problem out" in out
    code, out, err = run_main(["diagnose", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "refused")],
                              monkeypatch, capsys)
    assert code == 2 and err.startswith(f"error: {problems[0]} (2 of 5 records refused;")

    run = tmp_path / "run"
    code, out, err = run_main(["adapt", str(data), "--model", str(tiny_model), "--out", str(run), "--skip-invalid",
                               "--epochs", "1", "--held-out", "0", "--validation", "0"], monkeypatch, capsys)
    assert code == 0, out + err
    assert [row["answer"] for row in read_rows(run / "records.jsonl")] == ["Paris", "Rome", "Madrid"]
    for problem in problems:
        assert f"{problem}; left out (--skip-invalid)" in caplog.text
    assert read_json(run / "refused.json") == problems
    assert read_json(run / "metrics.json")["refused"] == problems
    assert f"2 records of the data were refused and left out (--skip-invalid):\n\n- {problems[0]}\n- {problems[1]}\n" \
        in (run / "report.md").read_text()
    assert f"refused: 2 records of the data left out ({run}/refused.json)" in out
    # the run resumes on its own records: the same command again redoes nothing
    stages = (run / "stages.json").read_text()
    code, _, err = run_main(["adapt", str(data), "--model", str(tiny_model), "--out", str(run), "--skip-invalid",
                             "--epochs", "1", "--held-out", "0", "--validation", "0"], monkeypatch, capsys)
    assert code == 0 and (run / "stages.json").read_text() == stages, err
