import pytest
from click.testing import CliRunner

from conftest import qa_rows, write_jsonl
from slearn_mlx.answer import answer_batch
from slearn_mlx.artifacts import read_rows
from slearn_mlx.cli import cli
from slearn_mlx.data import Record
from slearn_mlx.models import load_model
from slearn_mlx.probe import probe_batch


def test_probe_knows_what_greedy_decoding_would_say(tiny_model):
    model, tokenizer = load_model(tiny_model)
    question = Record(id="q", question="What is the capital of France?", answer="x", kind="short")
    said = answer_batch(model, tokenizer, [question])[0]
    assert said  # the random model says something; its first words become the reference
    first_words = " ".join(said.split()[:2])
    agrees = Record(id="a", question=question.question, answer=first_words, kind="short")
    differs = Record(id="b", question=question.question, answer="Paris Paris Paris", kind="short")
    rows = probe_batch(model, tokenizer, [agrees, differs], threshold=-1.0)
    assert [r["greedy_reproduces"] for r in rows] == [True, False]
    assert rows[0]["mean_logprob"] > rows[1]["mean_logprob"]
    assert rows[1]["mean_logprob"] < 0


def test_probe_batched_equals_one_at_a_time(tiny_model):
    model, tokenizer = load_model(tiny_model)
    records = [Record(id=str(i), question=q["question"], answer=q["answer"] * (i + 1), kind="short")
               for i, q in enumerate(qa_rows(3))]
    together = probe_batch(model, tokenizer, records, -1.0)
    alone = [probe_batch(model, tokenizer, [r], -1.0)[0] for r in records]
    for a, b in zip(together, alone):
        assert a["mean_logprob"] == pytest.approx(b["mean_logprob"], abs=1e-3)
        assert a["greedy_reproduces"] == b["greedy_reproduces"]


def test_adapt_can_diagnose_by_probing(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(8))
    result = CliRunner().invoke(cli, ["adapt", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                                      "--diagnosis", "probe", "--epochs", "1", "--policy", "replay",
                                      "--probe-threshold", "-100"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "run" / "diagnosis.jsonl")
    assert len(rows) == 8 and all(r["grader"] == "probe" and r["correct"] for r in rows)  # threshold -100
    replayed = [s for s in read_rows(tmp_path / "run" / "selection.jsonl") if s["selected"]]
    assert replayed and all(s["reason"].endswith("target: the reference (its restatement was not asked for)")
                            for s in replayed)  # a probe gives no own answer to replay
