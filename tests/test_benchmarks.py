"""The benchmark scripts keep working as the package changes (they are run by hand, not timed here),
and the numbers they compute are the ones they name."""

import subprocess
import sys

import pytest

from benchmarks import best_threshold, kappa
from benchmarks.answers import DATASETS
from benchmarks.blas import BASELINE, ratio
from conftest import REPO, qa_rows, rows_the_model_knows, write_jsonl
from slearn_mlx.artifacts import read_json


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of the markdown table rows a benchmark printed, header and rule left out."""
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in stdout.splitlines()
            if line.startswith("| ") and not set(line) <= set("|-") and not line.startswith("| ---")]


def test_kappa_is_agreement_beyond_chance_and_undefined_when_chance_explains_all():
    assert kappa([True, False, True, False], [True, False, True, False]) == 1.0
    assert kappa([True, False, True, False], [False, True, False, True]) == -1.0
    assert kappa([True, True, False, False], [True, False, True, False]) == 0.0  # agreement at chance
    assert kappa([True] * 4, [True] * 4) is None  # 0/0: one class throughout on both sides
    assert best_threshold([True, True, False, False], [0.9, 0.8, 0.3, 0.1]) == 0.8
    assert best_threshold([True, True], [0.9, 0.2]) == 0.9  # 0.2 would make kappa 0/0, which ranks last


def test_blas_ratios_are_taken_within_each_round_then_the_median():
    def outcome(rate):
        return {"training": {"per_second": rate}}

    rounds = [{BASELINE: outcome(10), "x": outcome(20)}, {BASELINE: outcome(5), "x": outcome(5)},
              {BASELINE: outcome(2), "x": outcome(3)}, {BASELINE: "failed: no library", "x": outcome(9)}]
    assert ratio(rounds, "x", "training") == 1.5  # median of 2.0, 1.0 and 1.5; the round without a baseline left out


@pytest.mark.skipif(not DATASETS.exists(), reason="needs ../shared/datasets")
def test_grading_benchmark_finds_the_rules_agreement_the_readme_reports():
    """Rules only (no judge), on the cached answers: the auto grader's kappa with the reference labels."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.grading", "--judge-on"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kappas = {(row[0], row[1]): row[5] for row in table_rows(proc.stdout)}
    assert kappas[("trivia_mixed", "auto")] == "0.870" and kappas[("vera_acronyms", "auto")] == "1.000"
    assert kappas[("foldoc_pairs:a", "auto")] == "0.900" and kappas[("foldoc_pairs:b", "auto")] == "0.799"
    assert subprocess.run(["git", "status", "--porcelain", "benchmarks/answers.jsonl"], cwd=REPO, capture_output=True,
                          text=True).stdout == ""  # the cached answers are graded, not made again


def test_server_benchmark_grades_the_same_served_and_in_process(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", rows_the_model_knows(tiny_model, qa_rows(6)))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.server", str(data), "--model", str(tiny_model),
                           "--concurrency", "1,3"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table_rows(proc.stdout)[1:]
    assert [row[0] for row in rows] == ["1", "3", "in-process, batches of 64"]
    correct = {row[3] for row in rows}
    assert len(correct) == 1 and correct != {"0"}, rows  # the same records right whichever way they were asked




def test_diagnosis_benchmark_counts_the_records_the_model_knows(tiny_model, tmp_path):
    rows = rows_the_model_knows(tiny_model, qa_rows(8))
    known = sum(row["answer"] != original["answer"] for row, original in zip(rows, qa_rows(8)))
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.diagnosis", str(data), "--model", str(tiny_model),
                           "--limit", "8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"8 records of {data}, model tiny-llama, answers known by generate-and-grade: {known}" in proc.stdout
    assert [row[0] for row in table_rows(proc.stdout)[1:]] == ["diagnosis: generate and grade", "diagnosis: probe",
                                                               "one LoRA epoch over the same records"]


def test_answering_benchmark_runs_every_variant_on_the_tiny_model(tiny_model, tmp_path):
    from benchmarks.answering import VARIANTS

    data = write_jsonl(tmp_path / "d.jsonl", qa_rows(4))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.answering", str(data), "--model", str(tiny_model),
                           "--limit", "4"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table_rows(proc.stdout)[1:]
    assert [row[0] for row in rows] == list(VARIANTS)
    ours = float(rows[0][2])
    for name, _, per_second, faster_by in rows[1:]:  # each variant's time over ours: our rate over its rate
        assert float(faster_by.rstrip("x")) == pytest.approx(ours / float(per_second), rel=0.02, abs=0.01), name


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
