"""The whole loop on the tiny model: files, numbers that agree with each other, resume, refusals."""

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from mlx_lm.utils import load

from conftest import REPO, qa_rows, rows_the_model_knows, write_jsonl
from slearn_mlx import loop
from slearn_mlx.config import resolve_config
from slearn_mlx.metrics import write_metrics
from slearn_mlx.run import RunError, create_run, load_run
from slearn_mlx.artifacts import read_json, read_rows
from slearn_mlx.cli import cli
from slearn_mlx.data import parse_record


def adapt(data, model, out, *extra):
    result = CliRunner().invoke(cli, ["adapt", str(data), "--model", str(model), "--out", str(out),
                                      "--epochs", "1", "--batch-size", "4", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def finished_run(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    rows = [{**row, "domain": ("odd", "even")[i % 2]} for i, row in enumerate(qa_rows(12))]
    data = write_jsonl(tmp / "data.jsonl", rows_the_model_knows(tiny_model, rows))
    adapt(data, tiny_model, tmp / "run")
    return data, tmp / "run"


def test_adapt_writes_a_complete_run(finished_run, tiny_model):
    """Each file holds what run.py says it does, about the records of this run."""
    data, run = finished_run
    records = read_rows(run / "records.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 12 and [r["raw"] for r in records] == read_rows(data)
    config = read_json(run / "config.json")
    assert config["data"] == str(data) and config["model"] == str(tiny_model) and len(config["data_sha256"]) == 64
    assert read_json(run / "versions.json")["mlx"] and "blas" in read_json(run / "versions.json")
    assert sorted(r["id"] for r in read_rows(run / "diagnosis.jsonl")) == sorted(ids)  # every record once
    assert sorted(r["id"] for r in read_rows(run / "evaluation.jsonl")) == sorted(ids)
    train = [r["id"] for r in records if r["split"] == "train"]
    unknown = {r["id"] for r in read_rows(run / "diagnosis.jsonl") if not r["correct"]} & set(train)
    assert {r["id"] for r in read_rows(run / "restatements.jsonl")} == unknown
    assert [s["id"] for s in read_rows(run / "selection.jsonl")] == train
    assert list(read_json(run / "stages.json")) == ["diagnose", "restate", "select", "train", "evaluate"]
    assert read_json(run / "metrics.json")["records"] == 12
    assert (run / "report.md").read_text().startswith(f"# slearn-mlx run: {run}")
    model, _ = load(str(tiny_model), adapter_path=str(run / "adapter"))  # what mlx_lm.generate --adapter-path does
    assert any("lora_a" in name for name, _ in __import__("mlx.utils").utils.tree_flatten(model.parameters()))


def test_metrics_agree_with_the_rows(finished_run):
    _, run = finished_run
    metrics = read_json(run / "metrics.json")
    before, after = read_rows(run / "diagnosis.jsonl"), read_rows(run / "evaluation.jsonl")
    records = read_rows(run / "records.jsonl")
    acc = metrics["accuracy"]
    assert acc["whole_set"]["records"] == len(records) == len(before) == len(after) == 12
    assert acc["whole_set"]["before"] == pytest.approx(sum(r["correct"] for r in before) / 12)
    assert acc["whole_set"]["after"] == pytest.approx(sum(r["correct"] for r in after) / 12)
    assert acc["known"]["records"] + acc["unknown"]["records"] + acc["validation"]["records"] \
        + acc["held_out"]["records"] == 12
    assert acc["held_out"]["records"] == round(12 * 0.2) and acc["validation"]["records"] == round(12 * 0.1)
    selected = [s for s in read_rows(run / "selection.jsonl") if s["selected"]]
    never_trained = {r["id"] for r in records if r["split"] != "train"}
    # all, the default: every training record, a known one on its own answer
    known = [s for s in selected if s["known"]]
    assert acc["known"]["records"] >= 2 and len(known) == acc["known"]["records"]
    assert all("its own answer" in s["reason"] and s["target"] == s["expected"] for s in known)
    assert acc["trained"]["records"] == len(selected) == acc["unknown"]["records"] + len(known)
    assert not never_trained & {s["id"] for s in selected}
    assert set(metrics["stage_seconds"]) == {"diagnose", "restate", "select", "train", "evaluate"}
    assert "| whole set | 12 |" in (run / "report.md").read_text()
    epoch, = metrics["epochs"]  # one epoch: trained on the selection, then checked
    assert epoch["records"] == len(selected) and epoch["right_unknown"][1] == acc["unknown"]["records"]
    assert f"| 1 | {len(selected)} | {epoch['loss']:.3f} |" in (run / "report.md").read_text()


def test_html_report_is_one_self_contained_file_and_report_redoes_it(finished_run):
    _, run = finished_run
    page = (run / "report.html").read_text()
    assert re.findall(r'src="([^"]{0,22})', page) == ["data:image/png;base64,"] * 3  # accuracy, topics, time
    assert "href=" not in page and "<script" not in page
    assert "Knowledge map" in page and "| odd | 6 |" in (run / "report.md").read_text()
    before = (run / "report.md").read_text()
    (run / "report.html").unlink()
    result = CliRunner().invoke(cli, ["report", str(run)], catch_exceptions=False)
    assert result.exit_code == 0 and (run / "report.html").exists()
    assert (run / "report.md").read_text() == before


def test_report_of_an_unfinished_run_is_refused(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(2))
    config = resolve_config(str(data), str(tiny_model))
    create_run(config, tmp_path / "run")
    with pytest.raises(RunError, match="not evaluated yet"):
        write_metrics(tmp_path / "run")


def test_diagnose_prints_topics_and_exports_unknown_records_as_written(tiny_model, tmp_path):
    rows = [{"instruction": f"Name item {i}", "output": f"Item {i}", "category": "items", "note": i} for i in range(6)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    out = tmp_path / "unknown.jsonl"
    result = CliRunner().invoke(cli, ["diagnose", str(data), "--model", str(tiny_model), "--out",
                                      str(tmp_path / "run"), "--export-unknown", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    correct = {d["id"]: d["correct"] for d in read_rows(tmp_path / "run" / "diagnosis.jsonl")}
    records = load_run(tmp_path / "run").records  # in file order, like rows
    wrong = [row for row, record in zip(rows, records) if not correct[record.id]]
    assert wrong and [json.loads(line) for line in out.read_text().splitlines()] == wrong
    known = len(rows) - len(wrong)
    assert f"| items | 6 | {known} (" in result.output
    assert f"{len(wrong)} unknown records written to {out}" in result.output


def test_rerun_resumes_and_redoes_nothing(finished_run, tiny_model):
    data, run = finished_run
    stages = (run / "stages.json").read_text()
    adapt(data, tiny_model, run)
    assert (run / "stages.json").read_text() == stages
    assert len(read_rows(run / "diagnosis.jsonl")) == 12


def test_interrupted_diagnosis_answers_only_what_is_missing(finished_run, tiny_model, tmp_path):
    data, run = finished_run
    config = load_run(run).config
    partial = tmp_path / "run"
    create_run(config, partial)
    done = (run / "diagnosis.jsonl").read_text().splitlines()
    (partial / "diagnosis.jsonl").write_text("\n".join(done[:5]) + "\n" + done[5][:20])  # torn last line
    loop.diagnose(partial)
    resumed = read_rows(partial / "diagnosis.jsonl")
    assert resumed[:5] == read_rows(run / "diagnosis.jsonl")[:5]
    assert sorted(json.dumps(r, sort_keys=True) for r in resumed) == \
        sorted(json.dumps(r, sort_keys=True) for r in read_rows(run / "diagnosis.jsonl"))


def test_stage_by_stage_commands_end_where_adapt_ends_on_the_runs_own_copy_of_the_data(finished_run, tiny_model,
                                                                                        tmp_path):
    """`diagnose --out RUN`, then `train RUN` and `evaluate RUN`, with the data file changed in between: the
    stages read the records the run folder keeps, and starting the run again from the changed file is refused."""
    data, run = finished_run
    copy = tmp_path / "data.jsonl"
    copy.write_text(data.read_text())
    options = ["--model", str(tiny_model), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4"]
    for command in (["diagnose", str(copy), *options], ["train", str(tmp_path / "run")]):
        result = CliRunner().invoke(cli, command, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        copy.write_text(copy.read_text() + json.dumps({"question": "Added later?", "answer": "Yes"}) + "\n")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0 and "whole_set     12 records" in result.output, result.output
    with pytest.raises(RunError, match="different configuration or data"):
        CliRunner().invoke(cli, ["adapt", str(copy), *options], catch_exceptions=False)

    for name in ["records.jsonl", "diagnosis.jsonl", "selection.jsonl", "evaluation.jsonl"]:
        assert read_rows(tmp_path / "run" / name) == read_rows(run / name), name
    assert read_json(tmp_path / "run" / "metrics.json")["accuracy"] == read_json(run / "metrics.json")["accuracy"]


def test_a_run_folder_with_another_configuration_is_refused(finished_run, tiny_model):
    data, run = finished_run
    with pytest.raises(RunError, match="different configuration"):
        CliRunner().invoke(cli, ["adapt", str(data), "--model", str(tiny_model), "--out", str(run),
                                 "--epochs", "2"], catch_exceptions=False)


def test_force_replaces_a_run_of_another_configuration(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(6))
    adapt(data, tiny_model, tmp_path / "run")
    adapt(data, tiny_model, tmp_path / "run", "--learning-rate", "1e-3", "--force")
    assert read_json(tmp_path / "run" / "config.json")["train"]["learning_rate"] == 1e-3


def test_records_longer_than_max_seq_length_are_left_out_and_named(tiny_model, tmp_path):
    rows = [*qa_rows(4), {"question": "Why? " * 100, "answer": "Because"}]
    adapt(write_jsonl(tmp_path / "data.jsonl", rows), tiny_model, tmp_path / "run", "--policy", "all",
          "--held-out", "0", "--validation", "0", "--max-seq-length", "64")
    facts = read_json(tmp_path / "run" / "stages.json")["train"]
    records = read_rows(tmp_path / "run" / "records.jsonl")
    assert facts["examples"] == 4 and facts["skipped_too_long"] == [records[4]["id"]]


def test_fewer_records_than_the_batch_size_train(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(3))
    adapt(data, tiny_model, tmp_path / "run", "--policy", "all", "--held-out", "0", "--validation", "0",
          "--batch-size", "8")
    assert read_json(tmp_path / "run" / "stages.json")["train"]["batch_size"] == 3


def test_training_teaches_the_unknown_records(tiny_model, tmp_path):
    facts = [("What colour is the sky?", "Blue"), ("Which animal barks?", "Dog"),
             ("What do bees make?", "Honey"), ("Which planet do we live on?", "Earth")]
    data = write_jsonl(tmp_path / "data.jsonl", [{"question": q, "answer": a} for q, a in facts])
    result = CliRunner().invoke(cli, [
        "adapt", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "run"), "--held-out", "0",
        "--validation", "0", "--epochs", "300", "--patience", "300", "--batch-size", "4", "--learning-rate", "1e-3",
        "--lora-layers", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    accuracy = read_json(tmp_path / "run" / "metrics.json")["accuracy"]["unknown"]
    assert accuracy["records"] == 4 and accuracy["before"] == 0
    assert accuracy["after"] >= 0.75


def test_bad_data_stops_before_model_work_with_file_and_line(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "data.jsonl", [*qa_rows(2), '{"question": "Q?", "answer": ""}'])
    proc = subprocess.run([sys.executable, "-m", "slearn_mlx", "adapt", str(data), "--model", str(tiny_model),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "SLEARN_QUIET_BLAS": "1"})
    assert proc.returncode == 2
    assert f"error: {data}:3: empty answer" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_each_stage_records_its_own_peak_memory(finished_run, tiny_model):
    """Its own, not the process's: select loads no model, so a peak carried over from the diagnosis before it
    (no reset between stages) would show there."""
    _, run = finished_run
    stages = read_json(run / "stages.json")
    peaks = {stage: stages[stage]["peak_memory_mb"] for stage in stages}
    model_mb = sum(f.stat().st_size for f in tiny_model.glob("*.safetensors")) / 1e6
    assert all(peaks[stage] >= model_mb for stage in ("diagnose", "restate", "train", "evaluate")), peaks
    assert peaks["select"] < model_mb / 10, peaks
    assert re.search(rf"\| train \| [\d.]+ \| {peaks['train']:,.0f} MB \|", (run / "report.md").read_text())


def test_the_check_hears_a_right_answer_word_for_word_whatever_its_tokens(tiny_model, tmp_path):
    from slearn_mlx.answer import answer_batch
    from slearn_mlx.models import load_model

    model, tokenizer = load_model(tiny_model)
    questions = [f"What is item number {i}?" for i in range(8)]
    said = answer_batch(model, tokenizer, [parse_record({"question": q, "answer": "x"}, "t") for q in questions])
    # Half the records' references are what the random model says (known), half something else (unknown).
    rows = [{"question": q, "answer": s if i % 2 else f"Item {i}"} for i, (q, s) in enumerate(zip(questions, said))]
    adapt(write_jsonl(tmp_path / "data.jsonl", rows), tiny_model, tmp_path / "run", "--held-out", "0",
          "--validation", "0", "--epochs", "3", "--patience", "3", "--learning-rate", "1e-7", "--policy", "all")
    checks = [row for row in read_rows(tmp_path / "run" / "adapter" / "train_log.jsonl") if row["event"] == "check"]
    known = checks[0]["right_known"][1]
    assert known >= 2 and all(c["right_known"] == [known, known] for c in checks)  # this gentle training changes none
    # A known record's answer is its diagnosis answer word for word, whatever tokens its text re-encodes to
    # (the draft's): no grader is asked.
    known_ids = {row["id"] for row in read_rows(tmp_path / "run" / "diagnosis.jsonl") if row["correct"]}
    rows = read_rows(tmp_path / "run" / "adapter" / "check-epoch1.jsonl")
    assert {row["id"] for row in rows if row["grader"] == "word for word"} >= known_ids
    assert all(c["word_for_word"] + c["graded"] == 8 for c in checks)
