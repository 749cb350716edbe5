"""Progress where no terminal shows bars (a log file, nohup, CI): plain lines at each stage's start and end,
during long work at least every INTERVAL seconds, each epoch's loss and check; --quiet and --verbose."""

import logging
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx import progress
from slearn_mlx.cli import main

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what a redrawn bar writes: \r, escape sequences


def test_long_work_says_how_far_it_is_while_it_lasts(monkeypatch, caplog):
    monkeypatch.setattr(progress, "INTERVAL", 0.02)
    caplog.set_level(logging.INFO, logger="slearn_mlx")
    bar = progress.Progress(range(3), desc="diagnose", unit="q")
    for i in bar:
        seen = len(caplog.records)
        deadline = time.monotonic() + 10
        while len(caplog.records) == seen and time.monotonic() < deadline:  # a line comes while this one lasts
            time.sleep(0.01)
        bar.set_postfix(loss=1.5 - i / 10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 4, lines
    assert re.fullmatch(r"diagnose: 0 of 3 records, 0\.00/s", lines[0]), lines
    assert any(re.fullmatch(r"diagnose: [12] of 3 records, [\d.]+/s, \d+s left, loss 1\.[45]00", line) for line in lines)
    assert re.fullmatch(r"diagnose: 3 of 3 records in \d+s, [\d.]+/s, loss 1\.300", lines[-1]), lines
    time.sleep(0.1)
    assert [r.getMessage() for r in caplog.records] == lines  # nothing more once the work is done


def test_an_epoch_and_its_check_as_lines():
    assert progress.epoch_line({"event": "epoch", "epoch": 2, "records": 34, "loss": 1.23456, "seconds": 75.2}) == \
        "train epoch 2: 34 records, loss 1.235, 1m15s"
    check = {"event": "check", "epoch": 2, "right_known": [79, 86], "right_unknown": [171, 194], "left": ["a"] * 51,
             "returned": ["b"] * 13, "validation_accuracy": 0.725, "kept": True}
    assert progress.epoch_line(check) == ("check epoch 2: known 79/86 right, unknown 171/194 right, 51 left, "
                                          "13 returned, validation 72.5%, kept")


def test_adapt_into_a_log_file_writes_lines_without_control_characters(tiny_model, tmp_path):
    """As `adapt > run.log 2>&1` under nohup or cron: stderr and stdout into one file, no terminal."""
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(10))
    run = tmp_path / "run"
    with open(tmp_path / "run.log", "w") as out:
        proc = subprocess.run([sys.executable, "-m", "slearn_mlx", "adapt", str(data), "--model", str(tiny_model),
                               "--out", str(run), "--epochs", "1", "--batch-size", "4"], cwd=REPO,
                              stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "SLEARN_QUIET_BLAS": "1"})
    text = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, text
    assert not CONTROL.search(text), repr(text)
    for stage in ("diagnose", "restate", "select", "train", "evaluate"):
        assert re.search(rf"\d\d:\d\d:\d\d slearn-mlx: {stage}: started\n", text), text
        assert re.search(rf"slearn-mlx: {stage}: finished in \d+s, peak memory [\d,]+ MB\n", text), text
    assert re.search(r"slearn-mlx: diagnose: 7 of 7 records in \d+s, [\d.]+/s\n", text), text  # the training split
    assert re.search(r"slearn-mlx: diagnose the rest: 10 of 10 records in \d+s", text), text
    assert re.search(r"slearn-mlx: train epoch 1: \d+ records, loss \d+\.\d{3}, \d+s\n", text), text
    assert re.search(r"slearn-mlx: check epoch 1: known \d+/\d+ right, unknown \d+/\d+ right, \d+ left, \d+ returned", text)
    assert "  whole_set     10 records  before" in text  # the final table, on stdout
    logged = (run / "log.txt").read_text()
    assert "diagnose: started" in logged and "evaluate: finished in" in logged and not CONTROL.search(logged)
    assert f"  log: {run}/log.txt" in text


def run_main(args, monkeypatch, capsys) -> tuple[str, str]:
    monkeypatch.setattr(sys, "argv", ["slearn_mlx", *args])
    main()
    return capsys.readouterr()


@pytest.mark.parametrize("flag", ["--quiet", "-q"])
def test_quiet_says_only_errors_and_the_result(flag, tiny_model, tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(4))
    out, err = run_main(["diagnose", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "run"), flag],
                        monkeypatch, capsys)
    assert err == "" and out.startswith("| topic | records |"), out + err
    assert "diagnose: finished in" in (tmp_path / "run" / "log.txt").read_text()  # the log keeps every line


def test_verbose_says_each_batch(tiny_model, tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", qa_rows(4))
    out, err = run_main(["diagnose", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                         "--answer-batch-size", "1", "--verbose"], monkeypatch, capsys)
    per_batch = re.findall(r"slearn-mlx: diagnose: (\d) of 3 records, [\d.]+/s", err)  # 3 of 4 in training
    assert per_batch == ["1", "2", "3"], err
    out, err = run_main(["diagnose", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "again"),
                         "--answer-batch-size", "1"], monkeypatch, capsys)
    assert "diagnose: started" in err and not re.search(r"diagnose: \d of 3 records, [\d.]+/s", err), err
