"""The BLAS choice: the user's setting wins, thread settings are only filled in, and what was loaded is recorded."""

import json
import os
import platform
import subprocess
import sys
import time

import pytest

from slearn_mlx import blas


def test_the_users_choice_wins_over_the_preference(monkeypatch):
    monkeypatch.setattr(blas, "find", lambda choice: f"/lib/{choice}.so")
    assert blas.chosen({"SLEARN_MLX_BLAS": "blis"}) == ("blis", "/lib/blis.so")
    assert blas.chosen({"SLEARN_MLX_BLAS": "reference"}) == ("reference", None)
    assert blas.chosen({}) == (blas.PREFERENCE[0], f"/lib/{blas.PREFERENCE[0]}.so")
    with pytest.raises(ValueError, match="SLEARN_MLX_BLAS=atlas"):
        blas.chosen({"SLEARN_MLX_BLAS": "atlas"})


def test_auto_takes_the_first_preference_installed(monkeypatch):
    installed = blas.PREFERENCE[-1]
    monkeypatch.setattr(blas, "find", lambda choice: "/lib/x.so" if choice == installed else None)
    assert blas.chosen({}) == (installed, "/lib/x.so")
    monkeypatch.setattr(blas, "find", lambda choice: None)
    assert blas.chosen({}) == (blas.PREFERENCE[0], None)


def test_thread_settings_fill_in_what_the_user_left_unset():
    environ = {"OPENBLAS_NUM_THREADS": "2"}
    assert blas.apply_threads({"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_THREAD_TIMEOUT": "4"}, environ) == ["OPENBLAS_THREAD_TIMEOUT"]
    assert environ == {"OPENBLAS_NUM_THREADS": "2", "OPENBLAS_THREAD_TIMEOUT": "4"}


@pytest.mark.parametrize("cpus, load, expected", [(2, 0.2, "2"), (2, 0.7, "1"), (2, 6.0, "1"), (8, 2.4, "6"), (1, 0.0, "1")])
def test_openblas_gets_one_thread_per_core_other_work_leaves_free(monkeypatch, cpus, load, expected):
    monkeypatch.setattr(blas.os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(blas, "busy_cores", lambda: load)
    assert blas.threads("openblas", {}) == {"OPENBLAS_NUM_THREADS": expected}
    assert blas.threads("mkl", {}) == {}


def test_a_users_omp_num_threads_is_what_openblas_reads_so_it_stands():
    assert blas.threads("openblas", {"OMP_NUM_THREADS": "2"}) == {}


@pytest.mark.skipif(platform.system() != "Linux" or not blas.find("openblas"), reason="OpenBLAS preloads on Linux only")
def test_versions_record_the_choice_its_settings_and_what_cblas_sgemm_resolves_to():
    env = {**os.environ, "SLEARN_MLX_BLAS": "openblas", "OPENBLAS_NUM_THREADS": "1"}
    code = "import json, slearn_mlx; from slearn_mlx.run import versions; print(json.dumps(versions()['blas']))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    recorded = json.loads(out)
    assert recorded["choice"] == "openblas" and recorded["library"] == blas.find("openblas")
    assert recorded["settings"]["OPENBLAS_NUM_THREADS"] == "1"
    assert "OPENBLAS_NUM_THREADS" not in recorded["set_by_slearn_mlx"]
    assert os.path.realpath(recorded["cblas_sgemm"]) == os.path.realpath(recorded["library"])


def test_busy_cores_counts_other_work_now_not_the_last_minute():
    """A process spinning on one core for the window is one busy core; once it stops, none is, whatever
    the load average still remembers."""
    if blas.cpu_times() is None:
        pytest.skip("no /proc/stat")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        during = blas.busy_cores(window=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    after = blas.busy_cores(window=0.5)
    assert during > 0.6 and during > after + 0.5
