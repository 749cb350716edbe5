"""The benchmark scripts keep working as the package changes (they are run by hand, not timed here)."""

import importlib
import subprocess
import sys

import pytest

from conftest import REPO, qa_rows, write_jsonl


@pytest.mark.parametrize("name", ["answering", "answers", "diagnosis", "grading", "server"])
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
