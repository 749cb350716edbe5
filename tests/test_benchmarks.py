"""The benchmark scripts keep working as the package changes (they are run by hand, not timed here)."""

import importlib
import subprocess
import sys

import pytest

from conftest import REPO, qa_rows, write_jsonl
from slearn_mlx.artifacts import read_json


@pytest.mark.parametrize("name", ["answering", "answers", "blas", "diagnosis", "grading", "peers", "server", "settings"])
def test_benchmark_modules_import(name):
    importlib.import_module(f"benchmarks.{name}")


def test_diagnosis_benchmark_runs_on_the_tiny_model(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(8))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.diagnosis", str(data), "--model", str(tiny_model),
                           "--limit", "8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| one LoRA epoch over the same records |" in proc.stdout and "kappa" in proc.stdout


def test_answering_benchmark_runs_every_variant_on_the_tiny_model(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(4))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.answering", str(data), "--model", str(tiny_model),
                           "--limit", "4"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == 5 and rows[0].endswith("| 1.00x |")


def test_settings_benchmark_shares_one_diagnosis_and_tables_each_change(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(12))
    out = tmp_path / "settings"
    command = [sys.executable, "-m", "benchmarks.settings", str(data), "--model", str(tiny_model), "--out", str(out),
               "--change", "epochs=1", "--change", "replay_fraction=1.0,check=false"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "setting" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| base model", "| default", "| epochs=1",
                                                       "| replay_fraction=1.0,check=false"]
    assert (out / "epochs-1" / "diagnosis.jsonl").read_text() == (out / "default" / "diagnosis.jsonl").read_text()
    assert " 1 (" in rows[2]  # one epoch run
    both = read_json(out / "replay_fraction-1.0+check-false" / "config.json")
    assert both["select"]["replay_fraction"] == 1.0 and both["train"]["check"] is False
    # a rerun resumes: every setting is finished, nothing is trained again
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    table = lambda stdout: stdout[stdout.index("| setting"):]  # noqa: E731
    assert again.returncode == 0 and table(again.stdout) == table(proc.stdout)


@pytest.mark.parametrize("change, problem", [("learning_speed=2", "no setting 'learning_speed'"),
                                             ("epochs=two", "epochs='two': invalid literal for int()"),
                                             ("check=maybe", "check='maybe': give true or false"),
                                             ("slick_keep=Unknown", "slick_keep is a tuple")])
def test_settings_benchmark_refuses_a_change_it_cannot_make(tiny_model, tmp_path, change, problem):
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(4))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.settings", str(data), "--model", str(tiny_model),
                           "--out", str(tmp_path / "s"), "--change", change],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and problem in proc.stderr and not (tmp_path / "s").exists()
