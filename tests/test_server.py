"""The diagnosis through a real mlx_lm.server on 127.0.0.1: same rows as in-process, clear errors, resume after a crash."""

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx.artifacts import read_rows
from slearn_mlx.cli import cli
from slearn_mlx.data import Record
from slearn_mlx.server import Backend, ServerError, check_server, complete, judge_openai, verdict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlx_lm_server(model, port, log_path, timeout=90):
    """mlx_lm.server on 127.0.0.1:port until the block ends; always stopped, killed if it will not stop."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlx_lm", "server", "--model", str(model),
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"mlx_lm.server exited; see {log_path}"
            assert time.monotonic() < deadline, f"mlx_lm.server did not answer within {timeout} s; see {log_path}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def diagnose_args(data, model, out, *extra):
    return ["diagnose", str(data), "--model", str(model), "--out", str(out), "--answer-batch-size", "4", *extra]


def by_id(rows):
    return {row["id"]: row for row in rows}


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    with mlx_lm_server(tiny_model, port, tmp_path_factory.mktemp("server") / "server.log"):
        yield f"http://127.0.0.1:{port}/v1"


def test_diagnosis_through_the_server_equals_in_process(server, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(12) + [
        {"question": "Which is a colour?", "choices": {"A": "red", "B": "Paris"}, "answer": "A", "kind": "mcq"}])
    for out, extra in [("local", []), ("served", ["--backend", "openai", "--base-url", server])]:
        result = CliRunner().invoke(cli, diagnose_args(data, tiny_model, tmp_path / out, *extra), catch_exceptions=False)
        assert result.exit_code == 0, result.output
    local, served = (read_rows(tmp_path / name / "diagnosis.jsonl") for name in ("local", "served"))
    # The server applies the same chat template to the same messages and decodes greedily with the
    # same token budget: the answers, and so the grades, are the same.
    assert len(served) == 13 and by_id(served) == by_id(local)


def test_judge_over_the_server_grades_every_answer(server):
    items = [(Record(id=str(i), question="What is the capital of France?", answer="Paris", kind="long"), said)
             for i, said in enumerate(["Paris", "Lyon", "yes"])]
    grades = judge_openai(Backend("openai", server), items, concurrency=2)
    # The random tiny model rarely puts yes or no among its top tokens, so either way may be used.
    assert len(grades) == 3 and {g.grader for g in grades} <= {"judge-logprobs", "judge-word"}


def test_verdict_uses_logprobs_when_given_and_the_first_word_otherwise():
    top = [{"token": "Ġyes", "logprob": -0.1}, {"token": "No", "logprob": -2.5}, {"token": "x", "logprob": -4.0}]
    graded = verdict({"message": {"content": "yes"}, "logprobs": {"content": [{"top_logprobs": top}]}})
    assert graded.grader == "judge-logprobs" and graded.correct and graded.score == pytest.approx(0.9168, abs=1e-4)
    only_no = verdict({"message": {"content": "no"}, "logprobs": {"content": [{"top_logprobs": top[1:]}]}})
    assert only_no.grader == "judge-logprobs" and not only_no.correct  # yes bounded by the least likely token
    assert verdict({"message": {"content": "Yes."}}).grader == "judge-word"
    assert verdict({"message": {"content": "Yes."}}).correct and not verdict({"message": {"content": "maybe"}}).correct


def test_a_server_that_is_not_up_is_named(tmp_path, tiny_model):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError, match=f"no server answers at {url}"):
        check_server(Backend("openai", url))
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(2))
    result = subprocess.run([sys.executable, "-m", "slearn_mlx", *diagnose_args(data, tiny_model, tmp_path / "run",
                             "--backend", "openai", "--base-url", url)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(f"error: no server answers at {url}")


def test_a_request_the_server_refuses_fails_at_once(server):
    start = time.monotonic()
    with pytest.raises(ServerError, match=f"{server}/chat/completions refused the request: HTTP 400"):
        complete(Backend("openai", server), [{"role": "user", "content": "hi"}], max_tokens=0, temperature=0.0)
    assert time.monotonic() - start < 2  # not retried


def test_server_killed_mid_run_fails_clearly_and_the_rerun_resumes(tiny_model, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(60))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "slearn_mlx", "diagnose", str(data), "--model", str(tiny_model), "--out", str(run),
               "--answer-batch-size", "2", "--concurrency", "1", "--backend", "openai", "--base-url", url]
    with mlx_lm_server(tiny_model, port, tmp_path / "server.log") as server_proc:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(read_rows(run / "diagnosis.jsonl")) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        server_proc.kill()
        server_proc.wait()
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"error: no answer from {url}/chat/completions after 5 attempts")
    before = (run / "diagnosis.jsonl").read_text()
    finished = len(read_rows(run / "diagnosis.jsonl"))
    assert 6 <= finished < 60

    with mlx_lm_server(tiny_model, port, tmp_path / "server.log"):
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    rows = read_rows(run / "diagnosis.jsonl")
    assert (run / "diagnosis.jsonl").read_text().startswith(before)  # finished rows kept as they were
    assert len(rows) == len(by_id(rows)) == 60  # none lost, none answered twice
    local = CliRunner().invoke(cli, diagnose_args(data, tiny_model, tmp_path / "local"), catch_exceptions=False)
    assert local.exit_code == 0 and by_id(rows) == by_id(read_rows(tmp_path / "local" / "diagnosis.jsonl"))
