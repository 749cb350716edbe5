"""The diagnosis through a real mlx_lm.server on 127.0.0.1: same rows as in-process, clear errors, resume after a crash;
and through a scripted fake server on 127.0.0.1 for what a real one does rarely (overload, Retry-After, long answers)."""

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import math

import pytest
from click.testing import CliRunner

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx.distributed import free_port
from slearn_mlx.prompts import first_answer
from slearn_mlx.artifacts import read_rows
from slearn_mlx.cli import cli
from slearn_mlx.data import Record
from slearn_mlx.models import resolve_model
from slearn_mlx.backends import Backend, answer_on_server
from slearn_mlx.judge import judge_on_server, verdict
from slearn_mlx.openai_api import ATTEMPTS, ServerError, check_server, complete



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
    grades = judge_on_server(Backend("openai", server), items, concurrency=2)
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


class Scripted(BaseHTTPRequestHandler):
    """Answers each POST with the next scripted (status, headers, body), then with `reply(request body)`;
    records every request with the client's address, so a test sees retries and connections."""
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def do_GET(self):
        self.send(200, {}, {"data": []})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.client_address, time.monotonic()))
        status, headers, payload = self.server.script.pop(0) if self.server.script else (200, {}, self.server.reply(body))
        self.send(status, headers, payload)

    def send(self, status, headers, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def said(content, top_logprobs=None):
    choice = {"message": {"content": content}}
    if top_logprobs:
        choice["logprobs"] = {"content": [{"top_logprobs": top_logprobs}]}
    return {"choices": [choice]}


@contextmanager
def fake_server(script=(), reply=lambda body: said("B")):
    """A scripted OpenAI-compatible server on 127.0.0.1 until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    httpd.script, httpd.reply, httpd.seen = list(script), reply, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Backend("openai", f"http://127.0.0.1:{httpd.server_address[1]}/v1"), httpd.seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_an_overloaded_server_is_retried_after_its_retry_after(status):
    with fake_server([(status, {"Retry-After": "1"}, {"error": "busy"})]) as (backend, seen):
        assert complete(backend, HI, max_tokens=1, temperature=0.0)["message"]["content"] == "B"
    assert len(seen) == 2 and 1.0 <= seen[1][1] - seen[0][1] < 3.0


def test_a_retry_after_date_is_understood_and_a_wait_without_one_has_jitter():
    script = [(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}), (503, {}, {}), (503, {}, {})]
    with fake_server(script) as (backend, seen):
        complete(backend, HI, max_tokens=1, temperature=0.0)
    waits = [later[1] - earlier[1] for earlier, later in zip(seen, seen[1:])]
    assert waits[0] < 0.4  # a date in the past: at once
    assert 0.5 <= waits[1] < 1.6 and 1.0 <= waits[2] < 2.6  # backoff 0.5 then 1 s, plus up to 0.5 s of jitter


def test_a_server_that_stays_overloaded_stops_the_run_after_bounded_attempts():
    with fake_server([(429, {"Retry-After": "0"}, {})] * (ATTEMPTS + 3)) as (backend, seen):
        with pytest.raises(ServerError, match=f"no answer from .*/chat/completions after {ATTEMPTS} attempts \\(HTTP 429\\)"):
            complete(backend, HI, max_tokens=1, temperature=0.0)
    assert len(seen) == ATTEMPTS


def test_other_4xx_fail_at_once():
    with fake_server([(404, {}, {"error": "no such model"})]) as (backend, seen):
        with pytest.raises(ServerError, match="refused the request: HTTP 404"):
            complete(backend, HI, max_tokens=1, temperature=0.0)
    assert len(seen) == 1


def test_requests_to_one_server_share_kept_alive_connections():
    with fake_server() as (backend, seen):
        for _ in range(6):
            complete(backend, HI, max_tokens=1, temperature=0.0)
    assert len({address for address, _ in seen}) == 1


def test_served_answers_get_the_in_process_post_processing():
    records = [Record(id="s", question="Capital of France?", answer="Paris", kind="short"),
               Record(id="l", question="Explain RAM", answer="Memory", kind="long"),
               Record(id="m", question="Which?", answer="B", kind="mcq", choices={"A": "x", "B": "y"})]
    text = "  Paris is the capital. It is in France.\nIt is big. "
    with fake_server(reply=lambda body: said(text)) as (backend, _):
        answers = answer_on_server(backend, records, concurrency=2)
    # A short answer is cut after its first sentence, as in-process generation stops there.
    assert answers == [first_answer(text, True), first_answer(text, False), first_answer(text, False)]
    assert answers[0] == "Paris is the capital." and answers[1] == text.strip()


def test_the_judge_over_a_server_honours_the_threshold():
    top = [{"token": "yes", "logprob": math.log(0.6)}, {"token": "no", "logprob": math.log(0.4)}]
    items = [(Record(id="x", question="Capital of France?", answer="Paris", kind="long"), "Paris")]
    with fake_server(reply=lambda body: said("yes", top)) as (backend, _):
        assert judge_on_server(backend, items)[0].correct  # 0.6 against the default 0.5
        strict = judge_on_server(backend, items, threshold=0.7)[0]
    assert not strict.correct and strict.score == pytest.approx(0.6)


def test_a_runs_judge_threshold_reaches_the_judge_on_a_server(tiny_model, tmp_path):
    from slearn_mlx.backends import grader
    from slearn_mlx.config import resolve_config

    top = [{"token": "yes", "logprob": math.log(0.6)}, {"token": "no", "logprob": math.log(0.4)}]
    record = Record(id="x", question="What is RAM?", answer="Random access memory of a computer", kind="long")
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(1))
    with fake_server(reply=lambda body: said("yes", top)) as (backend, _):
        config = resolve_config(str(data), str(tiny_model), judge_backend=backend, judge_kinds=["long"],
                                     judge_threshold=0.7)
        grade, = grader(config)([record], ["It is the random access memory"])
    assert grade.grader == "judge-logprobs" and grade.score == pytest.approx(0.6) and not grade.correct


@pytest.fixture(scope="module")
def real_model_f32(tmp_path_factory):
    """The default model dequantized to float32: mlx_lm.server runs weights as stored, and 4-bit is slow on a CPU."""
    folder = tmp_path_factory.mktemp("real") / "smollm2-f32"
    subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(resolve_model(None)),
                    "--mlx-path", str(folder), "-d", "--dtype", "float32"], check=True, capture_output=True)
    return folder


@pytest.mark.integration
def test_a_real_models_sentence_ending_answers_through_the_server_equal_in_process(real_model_f32, tmp_path):
    questions = ["What is the capital of France?", "Who wrote Hamlet?", "What is the largest planet?",
                 "What colour is the sky?"]
    data = write_jsonl(tmp_path / "data.jsonl", [{"question": q, "answer": "x"} for q in questions])
    port = free_port()
    with mlx_lm_server(real_model_f32, port, tmp_path / "server.log"):
        for out, extra in [("local", []), ("served", ["--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1"])]:
            result = CliRunner().invoke(cli, diagnose_args(data, real_model_f32, tmp_path / out, *extra),
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.output
    local, served = (read_rows(tmp_path / name / "diagnosis.jsonl") for name in ("local", "served"))
    # SmolLM2 answers in sentences and goes on after the first one when its budget allows; in-process
    # generation stops there, so the served answers are equal only when cut the same way.
    assert sum(row["response"].endswith((".", "!", "?")) for row in local) >= 2
    assert by_id(served) == by_id(local)
