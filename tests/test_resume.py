"""Kill `adapt` with SIGKILL in a stage; the rerun ends where an uninterrupted run does."""

import os
import signal
import subprocess
import sys
import time

import mlx.core as mx

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx.artifacts import read_json, read_rows


def adapt_command(data, model, out, *extra):
    return [sys.executable, "-m", "slearn_mlx", "adapt", str(data), "--model", str(model), "--out", str(out),
            "--answer-batch-size", "2", "--epochs", "40", "--batch-size", "4", "--validation", "0", *extra]


def kill_when(command, ready, timeout=120):
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "SLEARN_QUIET_BLAS": "1"})
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_adapt_killed_in_four_places_ends_like_an_uninterrupted_run(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(40))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(adapt_command(data, tiny_model, whole), cwd=REPO, check=True, capture_output=True)

    command = adapt_command(data, tiny_model, killed)
    kill_when(command, lambda: lines(killed / "diagnosis.jsonl") >= 6)
    assert 6 <= lines(killed / "diagnosis.jsonl") < 40
    kill_when(command, lambda: (killed / "adapter" / "checkpoint.safetensors").exists())
    assert not (killed / "evaluation.jsonl").exists()
    # in the middle of the second epoch's check: the epoch is trained again, the answers it had are kept
    check = killed / "adapter" / "check-epoch2.jsonl"
    kill_when(command, lambda: lines(check) >= 4)
    training = sum(row["split"] == "train" for row in read_rows(killed / "records.jsonl"))
    assert 4 <= lines(check) < training
    answered_before_the_kill = read_rows(check)
    kill_when(command, lambda: lines(killed / "evaluation.jsonl") >= 6)
    assert 6 <= lines(killed / "evaluation.jsonl") < 40
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)

    assert read_rows(check)[:len(answered_before_the_kill)] == answered_before_the_kill  # kept, not asked again
    for name in ["diagnosis.jsonl", "selection.jsonl", "evaluation.jsonl", "adapter/check-epoch2.jsonl"]:
        by_id = lambda folder: sorted(read_rows(folder / name), key=lambda row: row["id"])
        assert by_id(killed) == by_id(whole), name
    a, b = (mx.load(str(folder / "adapter" / "adapters.safetensors")) for folder in (whole, killed))
    assert all(mx.allclose(a[k], b[k], atol=1e-6).item() for k in a)


def test_sampling_killed_keeps_what_it_sampled_and_samples_only_the_rest(tiny_model, tmp_path):
    """SliCK's answers are sampled, so a resumed sampling cannot equal an uninterrupted one: what it
    must do is keep the rows written before the kill and give every training record exactly one."""
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(24))
    run = tmp_path / "run"
    command = adapt_command(data, tiny_model, run, "--policy", "slick", "--slick-samples", "2", "--epochs", "1")
    kill_when(command, lambda: lines(run / "samples.jsonl") >= 4)
    before = read_rows(run / "samples.jsonl")
    assert 4 <= len(before) and "sample" not in read_json(run / "stages.json")
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    after = read_rows(run / "samples.jsonl")
    training = {row["id"] for row in read_rows(run / "records.jsonl") if row["split"] == "train"}
    assert after[:len(before)] == before and sorted(row["id"] for row in after) == sorted(training)
    assert all(len(row["samples_correct"]) == 2 for row in after)
    assert read_json(run / "stages.json")["sample"]["samples"] == 2 and (run / "evaluation.jsonl").exists()
