"""The benchmark scripts keep working as the package changes (they are run by hand, not timed here)."""

import importlib
import subprocess
import sys

import pytest

from conftest import REPO, qa_rows, write_jsonl


@pytest.mark.parametrize("name", ["answers", "diagnosis", "grading", "server"])
def test_benchmark_modules_import(name):
    importlib.import_module(f"benchmarks.{name}")


def test_diagnosis_benchmark_runs_on_the_tiny_model(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(8))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.diagnosis", str(data), "--model", str(tiny_model),
                           "--limit", "8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| one LoRA epoch over the same records |" in proc.stdout and "kappa" in proc.stdout
