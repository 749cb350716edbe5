"""The BLAS choice: the user's setting wins, thread settings are only filled in, what was loaded is recorded,
and importing the package does none of it."""

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO
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
    settings, rule = blas.threads("openblas", {})
    assert settings == {"OPENBLAS_NUM_THREADS": expected}
    assert rule == f"one per free core: {load:.1f} of {cpus} busy at the start"
    assert blas.threads("mkl", {}) == ({}, "mkl's own default")


def test_a_users_omp_num_threads_is_what_openblas_reads_so_it_stands():
    assert blas.threads("openblas", {"OMP_NUM_THREADS": "2"}) == ({}, "the user's OMP_NUM_THREADS")


@pytest.mark.skipif(platform.system() != "Linux" or not blas.find("openblas"), reason="OpenBLAS loads on Linux only")
def test_versions_record_the_choice_its_settings_and_what_cblas_sgemm_resolves_to():
    env = {**os.environ, "SLEARN_MLX_BLAS": "openblas", "OPENBLAS_NUM_THREADS": "1"}
    code = ("import json; from slearn_mlx import blas; blas.setup(); from slearn_mlx.run import versions; "
            "print(json.dumps(versions()['blas']))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    recorded = json.loads(out)
    assert recorded["choice"] == "openblas" and recorded["library"] == blas.find("openblas")
    assert recorded["settings"]["OPENBLAS_NUM_THREADS"] == "1"
    assert "OPENBLAS_NUM_THREADS" not in recorded["set_by_slearn_mlx"]
    assert recorded["threads_rule"] == "the user's OPENBLAS_NUM_THREADS"
    assert os.path.realpath(recorded["cblas_sgemm"]) == os.path.realpath(recorded["library"])


def test_busy_cores_counts_the_cpu_time_spent_over_the_window(monkeypatch):
    """Busy ticks over all ticks of the window, times the cores: from /proc/stat read before and after."""
    readings = iter([(1000, 4000), (1150, 4200)])  # (busy, total) ticks: 150 of 200 busy, on 2 cores
    monkeypatch.setattr(blas, "cpu_times", lambda: next(readings))
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(blas.time, "sleep", lambda seconds: None)
    assert blas.busy_cores() == 1.5


# Run in a fresh process: what importing does, with sleep and library loading made to fail loudly.
IMPORT_PROBE = """
import ctypes, json, os, sys, time
def refuse(*args, **kwargs):
    raise SystemExit("imported with a side effect: " + repr(args))
time.sleep = refuse
ctypes.CDLL = refuse
before = dict(os.environ)
import slearn_mlx, slearn_mlx.grade, slearn_mlx.data, slearn_mlx.prompts, slearn_mlx.blas
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
print(json.dumps({"environ_changed": dict(os.environ) != before, "blas_loaded": slearn_mlx.blas.loaded,
                  "native": sorted({m.split(".")[0] for m in sys.modules} & {"mlx", "mlx_lm", "numpy"}),
                  "openblas_mapped": "openblas" in maps}))
"""


def test_importing_the_package_and_its_graders_changes_nothing():
    env = {k: v for k, v in os.environ.items() if not k.startswith(blas.THREAD_VARIABLES)}
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"environ_changed": False, "blas_loaded": None, "native": [],
                                       "openblas_mapped": False}


@pytest.mark.skipif(platform.system() != "Linux" or not blas.find("openblas"), reason="OpenBLAS loads on Linux only")
def test_the_command_sets_the_blas_up_before_mlx():
    """`python -m slearn_mlx` loads OpenBLAS where it starts, so that mlx resolves cblas_sgemm to it."""
    code = ("import runpy, sys; sys.argv = ['slearn_mlx', '--help']\n"
            "try:\n    runpy.run_module('slearn_mlx', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "from slearn_mlx import blas; import os; print(os.path.realpath(blas.loaded['cblas_sgemm']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == os.path.realpath(blas.find("openblas"))
