"""The judge in this process: its probabilities, and a run's judge settings reaching it."""

import mlx.core as mx
import pytest
from click.testing import CliRunner

from conftest import build_tiny_model, qa_rows, rows_the_model_knows, write_jsonl
from slearn_mlx import judge as judge_module
from slearn_mlx.artifacts import read_rows
from slearn_mlx.backends import grader
from slearn_mlx.cli import cli
from slearn_mlx.config import resolve_config
from slearn_mlx.data import Record
from slearn_mlx.judge import judge, judge_prompt, verdict_token_ids
from slearn_mlx.models import load_model
from slearn_mlx.run import load_run

LONG = Record(id="x", question="In computing, what is \"RAM\"?", kind="long",
              answer="Random access memory: the working memory a processor reads and writes in any order.")


def forward_pass_verdict(model, tokenizer, record: Record, response: str) -> float:
    """P(yes) against P(no) from the whole model run on the judge prompt alone."""
    yes_ids, no_ids = verdict_token_ids(tokenizer)
    logits = model(mx.array([judge_prompt(tokenizer, record, response)]))[0, -1]
    logprobs = logits - mx.logsumexp(logits)
    return mx.sigmoid(mx.logsumexp(logprobs[yes_ids]) - mx.logsumexp(logprobs[no_ids])).item()


def test_judge_batched_equals_one_at_a_time(tiny_model):
    model, tokenizer = load_model(tiny_model)
    record = Record(id="x", question="Explain RAM", answer="Random Access Memory, the working memory", kind="long")
    items = [(record, "Random Access Memory"), (record, "a much longer answer " * 5), (record, "")]
    together = judge(model, tokenizer, items)
    alone = [judge(model, tokenizer, [item])[0] for item in items]
    for a, b in zip(together, alone):
        assert 0.0 <= a.score <= 1.0 and a.grader == "judge"
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_judge_reads_what_a_plain_forward_pass_of_each_prompt_reads(tiny_model, monkeypatch):
    """The shared prefix, the sorting and the padded batches change no probability: batches of 2
    over prompts of five lengths, against the whole model run on each prompt alone."""
    monkeypatch.setattr(judge_module, "JUDGE_BATCH", 2)
    model, tokenizer = load_model(tiny_model)
    items = [(LONG, "RAM " * n) for n in (9, 1, 5, 3, 7)]
    for (record, response), got in zip(items, judge(model, tokenizer, items)):
        assert got.score == pytest.approx(forward_pass_verdict(model, tokenizer, record, response), abs=1e-5)


def test_a_runs_judge_threshold_decides_in_this_process(tiny_model, tmp_path):
    """--judge-threshold reaches the judge of a run that judges in this process, on either side of the
    probability its model gives."""
    model, tokenizer = load_model(tiny_model)
    response = "Random access memory"
    p = forward_pass_verdict(model, tokenizer, LONG, response)
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(1))
    for threshold, correct in [(p - 1e-3, True), (p + 1e-3, False)]:
        config = resolve_config(str(data), str(tiny_model), judge_kinds=["long"], judge_threshold=threshold)
        grade, = grader(config)([LONG], [response])
        assert grade.grader == "judge" and grade.score == pytest.approx(p, abs=1e-5)
        assert grade.correct == correct, (threshold, p)


def test_a_run_sends_its_judged_kinds_to_its_judge_model(tiny_model, tmp_path):
    """`diagnose --judge-kind long --judge-model OTHER`: the long records the gate lets through are judged,
    with the other model's probabilities, not the adapted model's."""
    other = build_tiny_model(tmp_path / "judge-llama", seed=1)
    rows = rows_the_model_knows(tiny_model, [{**row, "kind": "long"} for row in qa_rows(6)])
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = CliRunner().invoke(cli, ["diagnose", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                                      "--judge-kind", "long", "--judge-model", str(other)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    by_id = {r.id: r for r in load_run(tmp_path / "run").records}
    judged = [row for row in read_rows(tmp_path / "run" / "diagnosis.jsonl") if row["grader"] == "judge"]
    assert judged and {row["grader"] for row in read_rows(tmp_path / "run" / "diagnosis.jsonl")} <= {"judge", "judge_gate"}
    for loaded, same in [(load_model(other), True), (load_model(tiny_model), False)]:
        for row in judged:
            p = forward_pass_verdict(*loaded, by_id[row["id"]], row["response"])
            assert (row["score"] == pytest.approx(p, abs=1e-4)) == same
